"""Random-label digits (ddl.experiments.random_labels, configs/random_label_digits.py)."""
import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
from conftest import cheap_diagnostics, load_config

from ddl import config as config_lib
from ddl import run as run_lib
from ddl.experiments import EXPERIMENTS
from ddl.experiments.random_labels import RandomLabels


def _experiment(arg):
  config = load_config('random_label_digits', arg)
  group = config_lib.groups(config)[0]
  return config, group, RandomLabels(group.config, group)


def test_smoke_preset_runs_through_run(tmp_path):
  assert EXPERIMENTS['random_labels'] is RandomLabels
  config = load_config('random_label_digits', 'smoke,adam,layer_norm')
  run_lib.run(cheap_diagnostics(config), str(tmp_path), figures=False)   # the evaluator: the test below
  with open(os.path.join(tmp_path, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  assert {r['variant'] for r in rows} == {'adam', 'layer_norm'}
  accuracy = [float(r['value']) for r in rows if r['metric'] == 'train_accuracy']
  assert len(accuracy) == 2 * 2 * 3 and all(0 <= a <= 1 for a in accuracy)
  assert all(np.isfinite(float(r['value'])) for r in rows if r['metric'] == 'loss')


def test_labels_differ_between_tasks_and_seeds():
  config, group, experiment = _experiment('smoke,adam')
  count = config.data.num_images
  init = lambda seed: experiment.init(jax.random.fold_in(jax.random.PRNGKey(0), seed), group.hparams[0], seed)
  a, b = init(0), init(1)
  first, second = experiment.labels(a, 0, count), experiment.labels(a, 1, count)
  other_seed = experiment.labels(b, 0, count)
  assert first.shape == (count,) and first.dtype == jnp.int32
  assert int(first.min()) >= 0 and int(first.max()) <= 9
  assert float((first == second).mean()) < 0.3       # chance agreement is 0.1
  assert float((first == other_seed).mean()) < 0.3
  np.testing.assert_array_equal(first, experiment.labels(a, 0, count))   # a task's labels are fixed


def test_one_task_memorises_above_chance():
  _, group, _ = _experiment('smoke,adam')
  group.config.epochs_per_task = 20
  group.config.data.num_images = 64
  group.config.probe_size = 64
  group.config.diagnostics.hessian_iterations = 5
  experiment = RandomLabels(group.config, group)
  data = jax.device_put(RandomLabels.load_data(group.config))
  assert data['images'].shape == (64, 64)
  state = jax.jit(experiment.init)(jax.random.PRNGKey(0), group.hparams[0], 0)
  state, values = jax.jit(experiment.run_chunk)(state, data)
  assert int(state.task) == 1
  assert float(values['train_accuracy']) > 0.5      # chance is 0.1
  diagnostics = jax.jit(experiment.evaluate)(state, data)
  assert {'hessian_top_eigenvalue', 'dead_fraction', 'effective_rank', 'stable_rank',
          'weight_magnitude'} <= set(diagnostics)
  assert all(np.isfinite(float(v)) for v in diagnostics.values())
