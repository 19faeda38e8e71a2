"""Slowly-changing regression: the input stream, the LTU target and one chunk of learning."""
import jax
import jax.numpy as jnp
import numpy as np

from conftest import load_config
from ddl import config as config_lib
from ddl import nets
from ddl.data import slowly_changing_regression as stream
from ddl.experiments import SlowlyChangingRegression


def _inputs(generator, start, count, period=10, state=None):
  state = state or stream.init_stream(jax.random.PRNGKey(0), 15)
  return stream.inputs(state, jnp.asarray(start), count, num_inputs=20, flip_period=period, generator=generator)


def test_slow_bits_change_only_at_block_boundaries():
  for generator in stream.GENERATORS:
    _, x = _inputs(generator, 0, 100)
    slow = np.asarray(x[:, :15])
    for t in range(1, 100):
      changed = np.abs(slow[t] - slow[t - 1]).sum()
      if t % 10:
        assert changed == 0
      elif generator == 'flip_one':
        assert changed == 1
    if generator == 'redraw':   # ~7.5 of 15 bits change per redraw
      assert 3 < np.mean([np.abs(slow[t] - slow[t - 10]).sum() for t in range(10, 100, 10)]) < 12
    fast = np.asarray(x[:, 15:])
    assert set(np.unique(fast)) == {0.0, 1.0} and 0.3 < fast.mean() < 0.7


def test_stream_does_not_depend_on_how_it_is_chunked():
  for generator in stream.GENERATORS:
    state = stream.init_stream(jax.random.PRNGKey(3), 15)
    s1, a = _inputs(generator, 0, 40, state=state)
    s2, b = _inputs(generator, 40, 40, state=s1)
    _, whole = _inputs(generator, 0, 80, state=state)
    np.testing.assert_array_equal(np.concatenate([a, b])[:, :15], np.asarray(whole)[:, :15])


def test_ltu_target_uses_the_original_threshold_formula():
  net = nets.LTUNet(hidden=100, beta=0.7)
  x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, (64, 20)).astype(jnp.float32)
  params = net.init(jax.random.PRNGKey(2), x)['params']
  w, b, v, c = (np.asarray(params[k]) for k in ('w', 'b', 'v', 'c'))
  assert set(np.unique(w)) == {-1.0, 1.0} and set(np.unique(v)) == {-1.0, 1.0}
  threshold = 0.7 * 21 - (20 - w.sum(axis=0) + b) / 2
  expected = ((np.asarray(x) @ w + b) > threshold).astype(np.float32) @ v[:, 0] + c[0]
  np.testing.assert_allclose(np.asarray(net.apply({'params': params}, x)), expected)


def test_a_chunk_learns_and_reports_its_metrics():
  config = load_config('slowly_changing_regression', 'smoke,bp,cbp')
  config.chunk_size = config.num_examples = 2000
  group = config_lib.groups(config)[1]   # cbp
  experiment = SlowlyChangingRegression(group.config, group)
  hparams = {**group.hparams[0], 'replacement_rate': 0.01}   # many replacements in 2000 steps
  state = jax.jit(experiment.init)(jax.random.PRNGKey(0), hparams, 0)
  before = jax.tree.map(np.asarray, state.learner.params)
  state, values = jax.jit(experiment.run_chunk)(state, None)
  assert int(state.examples) == 2000
  assert set(values) == {'error', 'replacements'}
  diagnostics = jax.jit(experiment.evaluate)(state, None)
  assert set(diagnostics) == {'weight_magnitude', 'dormant_fraction', 'effective_rank', 'stable_rank',
                              'active_fraction', 'redo_dormant_fraction', 'feature_norm', 'gradient_norm',
                              'plasticity', 'hessian_top_eigenvalue'}
  assert 0 < float(values['replacements']) < 100
  assert 0 < float(diagnostics['effective_rank']) <= 5 and 1 <= float(diagnostics['stable_rank']) <= 5
  assert not np.allclose(before['hidden_0']['kernel'], state.learner.params['hidden_0']['kernel'])
