"""Robustness of the run loop for every experiment: NaN isolation, preemption (SIGTERM and SIGKILL),
--fresh, device OOM and platform errors, runs sharded over 8 host devices and over two processes."""
import csv
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, load_config
from ddl import config as config_lib
from ddl import experiments
from ddl import run as run_lib
from ddl.experiments.slowly_changing_regression import SlowlyChangingRegression

SCR = 'slowly_changing_regression'
MAIN = os.path.join(ROOT, 'launch', 'main.py')
SMOKE = f'--config={os.path.join(ROOT, "configs", SCR + ".py")}:smoke'


def _launch(args, env=None, **kwargs):
  return subprocess.Popen([sys.executable, MAIN, SMOKE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, 'PYTHONPATH': ROOT, **(env or {})}, **kwargs)


def _read(path):
  with open(path) as f:
    return f.read()


class PoisonedSeed(SlowlyChangingRegression):
  """SCR whose seed 1 gets NaN parameters from its third chunk on (examples >= 1000)."""

  def init(self, key, hparams, seed):
    return super().init(key, hparams, seed), seed

  def run_chunk(self, state, data=None):
    inner, seed = state
    inner, values = super().run_chunk(inner, data)
    poison = (seed == 1) & (inner.examples > 1000)
    params = jax.tree.map(lambda p: jnp.where(poison, jnp.nan, p), inner.learner.params)
    return (inner.replace(learner=inner.learner.replace(params=params)), seed), values


def test_nan_in_one_seed_stops_only_that_run_and_survives_resume(tmp_path, monkeypatch, caplog):
  monkeypatch.setitem(experiments.EXPERIMENTS, SCR, PoisonedSeed)
  config = load_config(SCR, 'smoke,bp,cbp')
  workdir = str(tmp_path / 'w')
  first = run_lib.run(config, workdir, stop_after_chunks=3, figures=False)   # checkpoint after chunk 3
  assert first['nonfinite_runs'] == 2
  assert any('variant bp seed 1: non-finite' in r.getMessage() and 'chunk 3' in r.getMessage()
             for r in caplog.records)
  assert run_lib.run(config, workdir, figures=False)['nonfinite_runs'] == 2   # resumed: still frozen
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  marks = [(r['variant'], r['seed'], r['step']) for r in rows if r['metric'] == 'nonfinite']
  assert marks == [('bp', '1', '1500'), ('cbp', '1', '1500')]
  for variant in ('bp', 'cbp'):
    steps = lambda s: sorted({int(r['step']) for r in rows if r['variant'] == variant and r['seed'] == s
                              and r['metric'] == 'error'})
    assert steps('1') == [500, 1000] and steps('0') == steps('2') == [500, 1000, 1500, 2000]
  values = [float(r['value']) for r in rows]
  assert np.all(np.isfinite(values))


def test_sigterm_checkpoints_and_sigkill_at_random_points_resumes_identically(tmp_path):
  """Kills a real launch (SCR smoke, a checkpoint per chunk) at random moments, then lets it finish:
  metrics.csv equals an uninterrupted run's byte for byte."""
  whole, killed = tmp_path / 'whole', tmp_path / 'killed'
  args = ['--config.checkpoint_every=1', '--config.num_examples=3000']
  proc = _launch([f'--workdir={whole}', *args])
  assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
  # SIGTERM: the launch finishes its chunk, checkpoints and exits 143 saying how to resume.
  proc = _launch([f'--workdir={killed}', *args])
  for line in proc.stderr:
    if 'chunk 1/6' in line:
      proc.send_signal(signal.SIGTERM)
      break
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  assert 'Relaunch the same command' in err and 'checkpointed' in err
  rng = random.Random(0)
  for _ in range(3):   # SIGKILL at random moments: during start-up, compilation, chunks or checkpoints
    proc = _launch([f'--workdir={killed}', *args])
    time.sleep(rng.uniform(2.0, 9.0))
    proc.kill()
    proc.communicate()
  proc = _launch([f'--workdir={killed}', *args])
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  assert _read(killed / 'metrics.csv') == _read(whole / 'metrics.csv')


def test_fresh_starts_over_a_workdir_of_another_config(tmp_path):
  config = load_config(SCR, 'smoke,bp')
  workdir = str(tmp_path / 'w')
  run_lib.run(config, workdir, stop_after_chunks=1, figures=False)
  config.num_seeds = 2
  with pytest.raises(config_lib.ConfigError, match='keys that differ: num_seeds.*--fresh'):
    run_lib.run(config, workdir, figures=False)
  summary = run_lib.run(config, workdir, figures=False, fresh=True)
  assert summary['chunks_done'] == 4
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    assert {r['seed'] for r in csv.DictReader(f)} == {'0', '1'}


def test_device_out_of_memory_says_how_many_runs_fit(tmp_path, monkeypatch):
  config = load_config(SCR, 'smoke,bp')
  real_programs = run_lib._programs

  def oom_programs(*args):
    programs = real_programs(*args)
    def oom(*unused):
      raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.0GiB.')
    for p in programs:
      p.run_chunk = oom
    return programs

  monkeypatch.setattr(run_lib, '_programs', oom_programs)
  with pytest.raises(config_lib.ConfigError, match=r'out of memory with 3 runs per call \(3 per device on 1 '
                     r'device\(s\)\); at most 1 runs per device would fit: set --config.runs_per_call=1'):
    run_lib.run(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')     # nothing half-written


def test_config_asking_for_a_missing_gpu_is_refused(tmp_path):
  config = load_config(SCR, 'smoke,bp')
  config.platform = 'gpu'
  with pytest.raises(config_lib.ConfigError, match="platform: the config asks for 'gpu' but JAX sees only 'cpu'"):
    run_lib.run(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


def _sorted_rows(path):
  with open(path) as f:
    return sorted(tuple(r.values()) for r in csv.DictReader(f))


def test_runs_sharded_over_eight_devices_match_one_device(tmp_path):
  """5 variants x 3 seeds over 8 host devices (padded to 8 per program), and with runs_per_call=2."""
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
  procs = [_launch([f'--workdir={tmp_path / "one"}', '--config.num_devices=1'], env=env),
           _launch([f'--workdir={tmp_path / "eight"}'], env=env)]
  for p in procs:
    assert p.wait(timeout=400) == 0, p.stderr.read()[-2000:]
  one, eight = _sorted_rows(tmp_path / 'one' / 'metrics.csv'), _sorted_rows(tmp_path / 'eight' / 'metrics.csv')
  assert [r[:4] for r in one] == [r[:4] for r in eight]
  np.testing.assert_allclose([float(r[4]) for r in one], [float(r[4]) for r in eight], rtol=1e-5, atol=1e-6)
