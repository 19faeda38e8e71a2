"""Robustness of the run loop for every experiment: NaN isolation, preemption (SIGTERM and SIGKILL),
--fresh, device OOM, runs sharded over 8 host devices and over two processes."""
import csv
import dataclasses
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CHEAP_DIAGNOSTICS, ROOT, cheap_diagnostics, load_config, poisoned_scr

PoisonedSeed = poisoned_scr()
from ddl import config as config_lib
from ddl import experiments
from ddl import programs
from ddl import run as run_lib
from ddl import writers
from ddl.experiments.slowly_changing_regression import SlowlyChangingRegression

SCR = 'slowly_changing_regression'
MAIN = os.path.join(ROOT, 'launch', 'main.py')
SMOKE = f'--config={os.path.join(ROOT, "configs", SCR + ".py")}:smoke,'


def _scr(variants):
  """The SCR smoke config with these variants, as `_launch` runs it (cheap diagnostics)."""
  return cheap_diagnostics(load_config(SCR, f'smoke,{variants}'))


def _launch(args, variants='bp,cbp', host_devices=None, **kwargs):
  """launch/main.py on the SCR smoke config (cheap diagnostics, as `_scr`) in a subprocess, sharing
  the tests' compilation cache and XLA flags; `host_devices`: that many CPU devices."""
  env = {'PYTHONPATH': ROOT, 'JAX_COMPILATION_CACHE_DIR': jax.config.jax_compilation_cache_dir,
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.5'}
  if host_devices:
    env['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={host_devices}"
  return subprocess.Popen([sys.executable, MAIN, SMOKE + variants, *CHEAP_DIAGNOSTICS, *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}, **kwargs)


def _read(path):
  with open(path) as f:
    return f.read()




def test_nan_in_one_seed_stops_only_that_run_and_survives_resume(tmp_path, monkeypatch, caplog):
  monkeypatch.setitem(experiments.EXPERIMENTS, SCR, PoisonedSeed)
  config = _scr('cbp')
  workdir = str(tmp_path / 'w')
  first = run_lib.run(config, workdir, stop_after_chunks=3, figures=False)   # checkpoint after chunk 3
  assert first['nonfinite_runs'] == 1
  assert any('variant cbp seed 1: non-finite' in r.getMessage() and 'chunk 3' in r.getMessage()
             for r in caplog.records)
  assert run_lib.run(config, workdir, figures=False)['nonfinite_runs'] == 1   # resumed: still frozen
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  marks = [(r['variant'], r['seed'], r['step']) for r in rows if r['metric'] == 'nonfinite']
  assert marks == [('cbp', '1', '1500')]
  steps = lambda s: sorted({int(r['step']) for r in rows if r['seed'] == s and r['metric'] == 'error'})
  assert steps('1') == [500, 1000] and steps('0') == steps('2') == [500, 1000, 1500, 2000]
  values = [float(r['value']) for r in rows]
  assert np.all(np.isfinite(values))


def test_sigterm_checkpoints_and_sigkill_at_random_points_resumes_identically(tmp_path):
  """Kills a real launch (SCR smoke, a checkpoint per chunk) at a random moment, then lets it finish:
  metrics.csv equals an uninterrupted run's byte for byte."""
  config = _scr('bp,cbp')
  config.checkpoint_every, config.num_examples = 1, 3000
  run_lib.run(config, str(tmp_path / 'whole'), figures=False)
  killed = tmp_path / 'killed'
  args = [f'--workdir={killed}', '--config.checkpoint_every=1', '--config.num_examples=3000']
  # SIGTERM, SIGINT: the launch finishes its chunk, checkpoints and exits 128+signal saying how to resume.
  for sig, chunk in ((signal.SIGTERM, 1), (signal.SIGINT, 3)):
    proc = _launch(args)
    for line in proc.stderr:
      if f'chunk {chunk}/6' in line:
        proc.send_signal(sig)
        break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert re.search(f'signal {int(sig)} after chunk [{chunk}{chunk + 1}]/6 \\(checkpointed\\)', err), err[-2000:]
    assert 'Relaunch the same command' in err
  proc = _launch(args)   # SIGKILL at a random moment: start-up, compilation, a chunk or a checkpoint write
  time.sleep(random.Random(0).uniform(1.0, 8.0))
  proc.kill()
  proc.communicate()
  proc = _launch(args)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert _read(killed / 'metrics.csv') == _read(tmp_path / 'whole' / 'metrics.csv')


class _RecordingWandb:
  logged = []

  def __init__(self, config, workdir, lead=True):
    del config, workdir, lead

  def log(self, step, values):
    self.logged.append((step, values))

  def finish(self, exit_code=0):
    del exit_code


def test_fresh_starts_over_a_workdir_of_another_config_and_wandb_gets_progress(tmp_path, monkeypatch):
  monkeypatch.setattr(writers, 'Wandb', _RecordingWandb)
  config = _scr('bp')
  workdir = str(tmp_path / 'w')
  run_lib.run(config, workdir, stop_after_chunks=1, figures=False)
  step, values = _RecordingWandb.logged[-1]
  assert step == 500 and values['progress/chunk'] == 1 and values['progress/eta_sec'] >= 0
  assert values['progress/examples_per_sec'] > 0 and 'bp/error' in values and 'bp/error_se' in values
  config.num_seeds = 2
  with pytest.raises(config_lib.ConfigError, match='keys that differ: num_seeds.*--fresh'):
    run_lib.run(config, workdir, figures=False)
  summary = run_lib.run(config, workdir, figures=False, fresh=True)
  assert summary['chunks_done'] == 4
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    assert {r['seed'] for r in csv.DictReader(f)} == {'0', '1'}


def test_device_out_of_memory_says_how_many_runs_fit(tmp_path, monkeypatch):
  config = _scr('bp')
  real_programs = programs.fitted

  def oom_programs(*args):
    def oom(*unused):
      raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.0GiB.')
    fitted, memory_line = real_programs(*args)
    return [dataclasses.replace(p, run_chunk=oom) for p in fitted], memory_line

  monkeypatch.setattr(programs, 'fitted', oom_programs)
  with pytest.raises(config_lib.ConfigError, match=r'out of memory with 3 runs per call \(3 per device on 1 '
                     r'device\(s\)\); at most 1 runs per device would fit: set --config.runs_per_call=1'):
    run_lib.run(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')     # nothing half-written


def _sorted_rows(path):
  with open(path) as f:
    return sorted(tuple(r.values()) for r in csv.DictReader(f))


def _assert_same_rows(path, reference):
  """The same rows; the training metrics (SCR: error, replacements) bit-identical, the evaluator's
  probe-batch diagnostics to float rounding (XLA may order a batch's sums differently when the
  runs per device differ)."""
  rows, want = _sorted_rows(path), _sorted_rows(reference)
  assert [r[:4] for r in rows] == [r[:4] for r in want]
  for row, expected in zip(rows, want):
    if row[3] in ('error', 'replacements'):
      assert row == expected
    else:
      np.testing.assert_allclose(float(row[4]), float(expected[4]), rtol=1e-4, atol=1e-6, err_msg=str(row))


@pytest.mark.slow   # test_split_cpu_... resumes a 1-device run on 2 devices with padding: the same code
def test_runs_sharded_over_eight_devices_match_one_device(tmp_path):
  """A run started on 1 device (2 runs per call) resumes on 8 host devices, each call padded from 2
  to 8 runs: the same rows and values as an unsplit single-device run."""
  config = _scr('bp,cbp')
  run_lib.run(config, str(tmp_path / 'one'), figures=False)
  config.runs_per_call = 2
  run_lib.run(config, str(tmp_path / 'eight'), stop_after_chunks=2, figures=False)
  proc = _launch([f'--workdir={tmp_path / "eight"}', '--config.runs_per_call=2'],
                 host_devices=8)
  _, err = proc.communicate(timeout=400)
  assert proc.returncode == 0, err[-2000:]
  assert 'in 4 call(s) per chunk, over 8 device(s) (26 padding runs)' in err and 'Resumed' in err
  _assert_same_rows(tmp_path / 'eight' / 'metrics.csv', tmp_path / 'one' / 'metrics.csv')


def test_split_cpu_runs_one_run_per_device_and_refuses_a_resume_with_other_calls(tmp_path, caplog):
  """A run started on 1 device with calls of 2 runs resumes in a fresh process on 2 host devices, the
  odd call padded: the same rows as an unsplit single-device run (the 8-device test, marked slow,
  does the same with two groups on 8). cpu_devices=2 in this process (JAX already started with 1
  device) warns and keeps 1 device, making calls of one run; a fresh process with cpu_devices=2 has
  2 CPU devices, makes calls of 2 and refuses that checkpoint with one clear error."""
  config = _scr('bp')
  run_lib.run(config, str(tmp_path / 'one'), figures=False)
  config.runs_per_call = 2
  run_lib.run(config, str(tmp_path / 'split'), stop_after_chunks=2, figures=False)
  proc = _launch([f'--workdir={tmp_path / "split"}', '--config.runs_per_call=2'], variants='bp',
                 host_devices=2)
  _, err = proc.communicate(timeout=400)
  assert proc.returncode == 0, err[-2000:]
  assert '3 runs in 2 call(s) per chunk, over 2 device(s) (1 padding runs)' in err and 'Resumed' in err
  _assert_same_rows(tmp_path / 'split' / 'metrics.csv', tmp_path / 'one' / 'metrics.csv')
  config.runs_per_call, config.cpu_devices = None, 2
  run_lib.run(config, str(tmp_path / 'here'), stop_after_chunks=2, figures=False)
  assert 'cpu_devices=2: JAX started with 1 CPU device(s)' in caplog.text
  proc = _launch([f'--workdir={tmp_path / "here"}', '--config.cpu_devices=2'], variants='bp')
  _, err = proc.communicate(timeout=400)
  assert proc.returncode == 2 and 'Traceback' not in err, err[-2000:]
  assert ('its checkpoint holds calls of [1, 1, 1] runs, this launch makes calls of [2, 1] '
          '(2 cpu device(s), cpu_devices=2)') in err


def test_two_processes_through_jax_distributed_match_one_process(tmp_path):
  """Two localhost processes (one CPU device each, gloo collectives) via jax.distributed.initialize:
  process 0 writes the same metrics.csv as one process, byte for byte."""
  config = _scr('bp')
  run_lib.run(config, str(tmp_path / 'one'), figures=False)
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  procs = [_launch([f'--workdir={tmp_path / "two"}', '--config.distributed.initialize=True',
                    f'--config.distributed.coordinator_address=localhost:{port}',
                    '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'], variants='bp')
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-2000:]
    assert 'over 2 device(s)' in err
  assert _read(tmp_path / 'two' / 'metrics.csv') == _read(tmp_path / 'one' / 'metrics.csv')
