"""The run loop: output contract, resume, bad input, the evaluator; SCR smoke end to end through
launch/main.py."""
import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, cheap_diagnostics, load_config, poisoned_scr
from ddl import config as config_lib
from ddl import experiments
from ddl import platform_defaults
from ddl import programs as programs_lib
from ddl import run as run_lib
from ddl import writers
from ddl.experiments.slowly_changing_regression import SlowlyChangingRegression

SCR = 'slowly_changing_regression'


def _rows(path):
  with open(path) as f:
    return f.read()


def test_scr_smoke_end_to_end_through_main(tmp_path):
  workdir = tmp_path / 'scr'
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'launch', 'main.py'),
       f'--config={os.path.join(ROOT, "configs", SCR + ".py")}:smoke', f'--workdir={workdir}'],
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'done: 4/4 chunks' in proc.stdout
  with open(workdir / 'metrics.csv') as f:
    assert f.readline() == 'variant,seed,step,metric,value\n'
  with open(workdir / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  variants = {r['variant'] for r in rows}
  assert variants == {'bp', 'l2', 'snp', 'cbp', 'linear'}
  assert {r['seed'] for r in rows} == {'0', '1', '2'}
  assert sorted({int(r['step']) for r in rows}) == [500, 1000, 1500, 2000]
  errors = [float(r['value']) for r in rows if r['metric'] == 'error']
  assert len(errors) == 5 * 3 * 4 and all(0 <= e < 100 for e in errors)
  assert {r['metric'] for r in rows if r['variant'] == 'linear'} == {
      'error', 'weight_magnitude', 'gradient_norm', 'plasticity', 'hessian_top_eigenvalue'}
  assert json.load(open(workdir / 'config.json'))['experiment'] == SCR
  for metric in ('error', 'dormant_fraction', 'effective_rank', 'stable_rank', 'weight_magnitude', 'replacements'):
    assert os.path.getsize(workdir / 'figures' / f'{metric}.png') > 1000


def test_launches_share_built_programs_by_config(tmp_path, monkeypatch):
  """run(..., built=): a relaunch and a resume of the same config compile nothing again (a resume's
  saved call sizes make the same slices as a fresh launch); another config compiles its own programs."""
  from ddl import memory  # pylint: disable=g-import-not-at-top
  compiles = []
  compile_programs = memory.compile_programs
  monkeypatch.setattr(memory, 'compile_programs', lambda *args: compiles.append(1) or compile_programs(*args))
  config, built = load_config(SCR, 'smoke,bp'), {}
  run_lib.run(config, str(tmp_path / 'a'), stop_after_chunks=1, figures=False, built=built)
  run_lib.run(config, str(tmp_path / 'a'), figures=False, built=built)        # a resume: saved calls [2]
  run_lib.run(config, str(tmp_path / 'b'), figures=False, built=built)
  assert len(compiles) == 1 and len(built) == 1
  config.num_seeds -= 1
  run_lib.run(config, str(tmp_path / 'c'), figures=False, built=built)
  assert len(compiles) == 2 and len(built) == 2


def test_resume_after_interruption_gives_identical_metrics(tmp_path):
  config = cheap_diagnostics(load_config(SCR, 'smoke,snp,cbp'))
  run_lib.run(config, str(tmp_path / 'whole'), figures=False)
  interrupted = str(tmp_path / 'interrupted')
  first = run_lib.run(config, interrupted, stop_after_chunks=1, figures=False)
  assert first['chunks_done'] == 1
  # A crash after chunk 2's rows were written but before its checkpoint: the rows are dropped.
  with open(os.path.join(interrupted, 'metrics.csv'), 'a') as f:
    f.write('bp,0,1000,error,123.0\nbp,1,1000,err')
  # ... and a kill while orbax wrote the next checkpoint left its temporary folder: it is ignored.
  os.makedirs(os.path.join(interrupted, 'checkpoints', '2.orbax-checkpoint-tmp-1', 'state'))
  second = run_lib.run(config, interrupted, stop_after_chunks=2, figures=False)
  assert second['chunks_done'] == 3
  run_lib.run(config, interrupted, figures=False)
  assert _rows(os.path.join(interrupted, 'metrics.csv')) == _rows(str(tmp_path / 'whole' / 'metrics.csv'))


def test_variants_share_seeds_and_group_by_structure():
  config = platform_defaults.resolve(load_config(SCR, 'smoke'), 'cpu')
  groups = config_lib.groups(config)
  assert [g.variants for g in groups] == [['bp', 'l2'], ['cbp'], ['linear'], ['snp']]
  methods = [[m.name for m in g.methods] for g in groups]   # a gated method only in the programs that use it
  assert [m for m in methods] == [['l2', 'sgd'], ['l2', 'sgd', 'cbp'], ['l2', 'sgd'], ['l2', 'sgd', 'snp']]
  assert groups[2].config.network.layers == 0 and config.network.layers == 1
  config.fuse_variants = True
  assert [g.variants for g in config_lib.groups(config)] == [['bp', 'cbp', 'l2', 'snp'], ['linear']]


@pytest.mark.parametrize('override,message', [
    (lambda c: setattr(c, 'num_seeds', 0), 'num_seeds'),
    (lambda c: setattr(c.variants.cbp, 'replacement_rate', -0.1), 'replacement_rate'),
    (lambda c: setattr(c.hparams, 'learning_rate', 0.0), 'learning_rate'),
    (lambda c: setattr(c.optimizer, 'name', 'adamw'), 'optimizer.name'),
    (lambda c: setattr(c.cbp, 'util_type', 'contrib'), 'cbp.util_type'),
    (lambda c: setattr(c, 'chunk_size', 3), 'multiple of chunk_size'),
    (lambda c: setattr(c.data, 'generator', 'flip_two'), 'data.generator'),
])
def test_impossible_values_fail_before_anything_is_written(tmp_path, override, message):
  config = load_config(SCR, 'smoke')
  override(config)
  with pytest.raises(config_lib.ConfigError, match=message):
    run_lib.run(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


def test_unknown_variant_key_names_the_closest():
  config = load_config(SCR, 'smoke')
  with config.unlocked():
    config.variants.l2.weight_decy = 0.1
  with pytest.raises(config_lib.ConfigError, match="weight_decy.*did you mean 'weight_decay'"):
    config_lib.validate(config, run_lib.experiments.get(SCR))


def test_unwritable_workdir_and_foreign_workdir_are_refused(tmp_path):
  config = load_config(SCR, 'smoke,bp')
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(config_lib.ConfigError, match='not writable'):
    run_lib.run(config, str(blocker / 'sub'))
  workdir = str(tmp_path / 'w')
  run_lib.run(config, workdir, stop_after_chunks=1, figures=False)
  config.hparams.learning_rate = 0.02
  with pytest.raises(config_lib.ConfigError, match='hparams.learning_rate'):
    run_lib.run(config, workdir)


def test_unknown_config_argument_suggests_preset():
  with pytest.raises(config_lib.ConfigError, match="did you mean 'smoke'"):
    load_config(SCR, 'smok')


def test_runs_split_over_calls_give_the_same_metrics(tmp_path):
  config = cheap_diagnostics(load_config(SCR, 'smoke,bp,cbp'))
  run_lib.run(config, str(tmp_path / 'one'), figures=False)
  config.runs_per_call = 2     # 6 runs -> 3 calls per chunk, the last group slice shares compilation
  run_lib.run(config, str(tmp_path / 'split'), figures=False)
  read = lambda p: sorted(tuple(r.values()) for r in csv.DictReader(open(p / 'metrics.csv')))
  one, split = read(tmp_path / 'one'), read(tmp_path / 'split')
  assert [r[:4] for r in one] == [r[:4] for r in split]
  np.testing.assert_allclose([float(r[4]) for r in one], [float(r[4]) for r in split], rtol=1e-5, atol=1e-6)


def test_figures_bin_logged_steps():
  from ddl import plotting  # pylint: disable=g-import-not-at-top
  steps = np.arange(6)
  values = np.array([[0., 2., 4., 6., 8., np.nan], [1., 1., 1., 1., 1., 1.]])
  x, v = plotting.binned(steps, values, 2)
  np.testing.assert_array_equal(x, [0, 2, 4])
  np.testing.assert_array_equal(v, [[1., 5., 8.], [1., 1., 1.]])


class Evaluated(poisoned_scr()):
  """SCR with an evaluator every 3 chunks (and after the last one) that records its tracing; seed 1's
  parameters turn NaN in chunk 3 (examples > 1500)."""
  poison_after = 1500
  traced = []

  def __init__(self, config, group):
    super().__init__(config, group)
    self.name = group.name
    self.diagnostics_every = 3

  def evaluate(self, state, data=None):
    del data
    Evaluated.traced.append(self.name)   # a Python side effect: runs once per tracing
    inner, _ = state
    return {'examples_seen': inner.examples.astype(jnp.float32),
            'kernel_sum': sum(jnp.sum(p) for p in jax.tree.leaves(inner.learner.params))}


class _RecordingWandb:

  def __init__(self, config, workdir, lead=True):
    del config, workdir, lead
    self.logged = []
    _RecordingWandb.last = self

  def log(self, step, values):
    self.logged.append((step, values))

  def finish(self, exit_code=0):
    del exit_code


def _evaluated_config(monkeypatch):
  monkeypatch.setitem(experiments.EXPERIMENTS, SCR, Evaluated)
  config = load_config(SCR, 'smoke,bp,cbp')
  config.num_examples = 3000      # 6 chunks of 500: evaluated after chunks 0 and 3 (every 3) and 5 (the last)
  return config


def test_evaluator_rows_every_k_chunks_and_the_last_none_for_dead_runs_compiled_once_per_group(
    tmp_path, monkeypatch):
  config = _evaluated_config(monkeypatch)
  monkeypatch.setattr(writers, 'Wandb', _RecordingWandb)
  Evaluated.traced.clear()
  summary = run_lib.run(config, str(tmp_path / 'w'), figures=False)
  assert sorted(Evaluated.traced) == ['bp', 'cbp']      # one evaluator program per group, not per chunk
  assert 0 < summary['evaluate_seconds'] < summary['seconds'] and summary['nonfinite_runs'] == 2
  with open(tmp_path / 'w' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  for variant in ('bp', 'cbp'):
    evaluated = lambda seed: [(int(r['step']), float(r['value'])) for r in rows if r['variant'] == variant
                              and r['seed'] == seed and r['metric'] == 'examples_seen']
    assert evaluated('0') == evaluated('2') == [(500, 500.0), (2000, 2000.0), (3000, 3000.0)]
    assert evaluated('1') == [(500, 500.0)]             # seed 1 turned NaN in chunk 3 (step 2000)
    assert [r['step'] for r in rows if r['variant'] == variant and r['metric'] == 'nonfinite'] == ['2000']
    kernel = [r for r in rows if r['variant'] == variant and r['metric'] == 'kernel_sum']
    assert len(kernel) == 7 and all(np.isfinite(float(r['value'])) for r in kernel)
  logged = dict(_RecordingWandb.last.logged)
  assert 'bp/examples_seen' in logged[500] and 'cbp/kernel_sum_se' in logged[3000]
  assert 'bp/examples_seen' not in logged[1000] and 'bp/error' in logged[1000]
  assert 0 < logged[3000]['progress/evaluate_share'] < 1       # the evaluator's share of the elapsed time


def test_resume_with_an_evaluator_gives_identical_metrics(tmp_path, monkeypatch):
  config = _evaluated_config(monkeypatch)
  run_lib.run(config, str(tmp_path / 'whole'), figures=False)
  split = str(tmp_path / 'split')
  run_lib.run(config, split, stop_after_chunks=1, figures=False)   # checkpoint after chunk 0 (evaluated)
  with open(os.path.join(split, 'metrics.csv'), 'a') as f:          # a crash after rows of chunk 1 ...
    f.write('bp,0,1000,error,123.0\nbp,1,1000,err')
  run_lib.run(config, split, stop_after_chunks=3, figures=False)   # ... checkpoint after chunk 3 (evaluated)
  run_lib.run(config, split, figures=False)
  assert _rows(os.path.join(split, 'metrics.csv')) == _rows(str(tmp_path / 'whole' / 'metrics.csv'))


@pytest.mark.parametrize('at_once', [1, 3])
def test_evaluator_mapped_a_few_runs_at_a_time_equals_vmapped(at_once):
  """`evaluate_runs_at_once`: the same values as the vmapped evaluator (4 runs: 3 at once leaves a
  remainder), one run's memory at a time."""
  evaluate = lambda state, data: {'score': jnp.sum(state['w'] * data) + state['b'], 'norm': jnp.sum(state['w'] ** 2)}
  states = {'w': jnp.arange(12.0).reshape(4, 3), 'b': jnp.asarray([1.0, -2.0, 0.5, 3.0])}
  data = jnp.asarray([0.5, -1.0, 2.0])
  vmapped = jax.jit(programs_lib.over_runs(evaluate))(states, data)
  mapped = jax.jit(programs_lib.over_runs(evaluate, at_once))(states, data)
  for name in vmapped:
    np.testing.assert_array_equal(mapped[name], vmapped[name])
