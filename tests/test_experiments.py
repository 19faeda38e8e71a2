"""Continual ImageNet and permuted inputs: smoke runs through launch/main.py, resume between tasks,
per-seed task streams and the conv net (a missing data set: tests/test_bad_inputs.py)."""
import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_resume_is_identical, ROOT, load_config
from ddl import config as config_lib
from ddl import platform_defaults
from ddl import nets
from ddl.experiments import ContinualImageNet, PermutedInputs


def _main(config_arg, workdir, *flags):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'launch', 'main.py'), f'--config={os.path.join(ROOT, "configs", config_arg)}',
       f'--workdir={workdir}', *flags], capture_output=True, text=True, timeout=900)


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow   # the resume test runs the experiment (with CBP and S&P); SCR's test the launch
def test_imagenet_smoke_through_main(tmp_path):
  proc = _main('imagenet.py:smoke', tmp_path / 'w')
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = _metrics(tmp_path / 'w')
  tasks = lambda v, m: sorted({int(r['step']) for r in rows if r['variant'] == v and r['metric'] == m})
  assert tasks('cbp', 'test_accuracy') == [0, 1, 2, 3]
  assert tasks('bp', 'test_accuracy') == [0, 1, 2]           # bp variants stop after their 3 tasks
  assert tasks('cbp', 'dormant_fraction') == [0, 2, 3]       # diagnostics every 2 tasks and after the last
  assert tasks('cbp', 'gradient_norm') == [0, 2, 3]
  assert {r['metric'] for r in rows if r['variant'] == 'linear'} == {
      'test_accuracy', 'train_accuracy', 'weight_magnitude', 'gradient_norm'}
  replaced = [float(r['value']) for r in rows if r['variant'] == 'cbp' and r['metric'] == 'replacements']
  assert sum(replaced) > 0
  assert os.path.exists(tmp_path / 'w' / 'figures' / 'test_accuracy.png')


@pytest.mark.slow   # the notebook and intervention tests run permuted digits; SCR's test the launch
def test_permuted_mnist_and_digits_smoke_through_main(tmp_path):
  for arg, variants in (('permuted_mnist.py:smoke,bp,adam,cbp', {'bp', 'adam', 'cbp'}),
                        ('permuted_digits.py:smoke,bp,cbp', {'bp', 'cbp'})):
    workdir = tmp_path / arg.split('.')[0]
    proc = _main(arg, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _metrics(workdir)
    assert {r['variant'] for r in rows} == variants
    accuracy = [float(r['value']) for r in rows if r['metric'] == 'accuracy']
    assert len(accuracy) == 3 * 2 * len(variants) and all(0 <= a <= 1 for a in accuracy)
    assert {r['metric'] for r in rows} >= {'accuracy', 'dead_fraction', 'effective_rank', 'weight_magnitude'}


def test_digits_are_learned_within_a_task():
  config = load_config('permuted_digits', 'smoke,bp')
  config.examples_per_task = 1797
  group = config_lib.groups(config)[0]
  experiment = PermutedInputs(group.config, group)
  data = jax.device_put(PermutedInputs.load_data(config))
  state = jax.jit(experiment.init)(jax.random.PRNGKey(0), group.hparams[0], 0)
  _, values = jax.jit(experiment.run_chunk)(state, data)
  assert float(values['accuracy']) > 0.6     # online accuracy over the first pass, chance is 0.1


def test_imagenet_resume_between_tasks_is_identical(tmp_path):
  config = load_config('imagenet', 'smoke,snp,cbp')
  assert_resume_is_identical(config, str(tmp_path / 'whole'), str(tmp_path / 'split'), stop_after_chunks=1, run_whole=True)
  rows = _metrics(tmp_path / 'whole')
  tasks = lambda v, m: sorted({int(r['step']) for r in rows if r['variant'] == v and r['metric'] == m})
  assert tasks('cbp', 'test_accuracy') == [0, 1, 2, 3]
  assert tasks('cbp', 'dormant_fraction') == [0, 2, 3]       # diagnostics every 2 tasks and after the last
  assert sum(float(r['value']) for r in rows if r['variant'] == 'cbp' and r['metric'] == 'replacements') > 0


def test_imagenet_class_orders_per_seed_and_from_a_file(tmp_path):
  config = platform_defaults.resolve(load_config('imagenet', 'smoke,bp'))
  group = config_lib.groups(config)[0]
  experiment = ContinualImageNet(group.config, group)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(0), jnp.arange(3))
  init = jax.jit(jax.vmap(experiment.init, (0, None, 0)))   # jitted: compiles faster than op by op
  order = jax.jit(jax.vmap(experiment._order, (0, None)))   # pylint: disable=protected-access
  states = init(keys, group.hparams[0], jnp.arange(3))
  orders = np.asarray(order(states, {}))
  assert all(sorted(o) == list(range(6)) for o in orders)
  assert len({o.tobytes() for o in orders}) == 3
  again = np.asarray(order(init(keys, group.hparams[0], jnp.arange(3)), {}))
  np.testing.assert_array_equal(orders, again)
  file_orders = np.stack([np.roll(np.arange(6), i) for i in range(3)]).astype(np.int32)
  np.testing.assert_array_equal(
      np.asarray(order(states, {'orders': jnp.asarray(file_orders)})), file_orders)


def test_conv_net_has_the_paper_size_and_both_convolutions_agree():
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3))
  params = jax.jit(nets.ConvNet(conv='patches').init)(jax.random.PRNGKey(1), x)['params']   # jitted: compiles faster
  assert sum(p.size for p in jax.tree.leaves(params)) == 177_218                            # than op by op
  out_p, feats = jax.jit(nets.ConvNet(conv='patches').apply)({'params': params}, x)
  out_l, _ = jax.jit(nets.ConvNet(conv='lax').apply)({'params': params}, x)
  np.testing.assert_allclose(out_p, out_l, rtol=1e-5, atol=1e-5)
  grad = lambda conv: jax.jit(jax.grad(lambda p: nets.ConvNet(conv=conv).apply({'params': p}, x)[0].sum()))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grad('patches'), grad('lax'))
  assert feats['conv_2'].shape == (3, 2, 2, 128)
  bound = 1 / np.sqrt(3 * 5 * 5)                   # PyTorch default init of conv_0
  assert float(jnp.abs(params['conv_0']['kernel']).max()) <= bound
  assert float(jnp.abs(params['conv_0']['bias']).max()) <= bound


@pytest.mark.parametrize('size,strides,padding', [(5, 1, 'VALID'), (3, 2, 'SAME'), (1, 2, 'SAME')])
def test_lax_conv_gradients_are_channels_last_convolutions_inside_loops(size, strides, padding):
  """On CPU the 'lax' Conv's gradients match jax.grad of the plain convolution, and inside a scan
  every convolution XLA runs is in the canonical NHWC x HWIO form (jax-ml/jax#12868)."""
  conv = nets.Conv(6, (size, size), 'lax', strides=strides, padding=padding)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 9, 9, 3))
  params = conv.init(jax.random.PRNGKey(1), x)['params']
  pad = (size - 1) // 2 if padding == 'SAME' else 0
  plain = lambda p, x: jax.lax.conv_general_dilated(x, p['kernel'], (strides, strides), ((pad, pad), (pad, pad)),
                                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + p['bias']
  loss = lambda apply: lambda p, x: (jnp.sin(apply(p, x)) ** 2).sum()
  ours, theirs = (jax.grad(loss(f), argnums=(0, 1))(params, x) for f in (lambda p, x: conv.apply({'params': p}, x), plain))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), ours, theirs)
  if jax.default_backend() != 'cpu':   # elsewhere 'lax' is the plain convolution
    return

  def steps(p, x):
    def step(carry, _):
      p, x = carry
      dp, dx = jax.grad(loss(lambda p, x: conv.apply({'params': p}, x)), argnums=(0, 1))(p, x)
      return (jax.tree.map(lambda a, b: a - 1e-3 * b, p, dp), x - 1e-3 * dx), None
    return jax.lax.scan(step, (p, x), None, length=2)[0]
  hlo = jax.jit(steps).lower(params, x).compile().as_text()
  labels = [line.split('dim_labels=')[1].split(',')[0] for line in hlo.splitlines() if ' convolution(' in line]
  assert len(labels) == 3 and set(labels) == {'b01f_01io->b01f'}, labels


def test_reshape_max_pool_matches_flax_max_pool():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 12, 5))
  np.testing.assert_array_equal(nets.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))
