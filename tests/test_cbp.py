"""Properties of the CBP reset transform (ddl.learners.cbp) on small dense and conv networks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddl import nets
from ddl.learners import cbp as cbp_lib
from ddl.learners import topology

MLP = nets.MLP(hidden=(8, 6), outputs=3)


def _mlp_setup(seed=0, batch=16):
  key = jax.random.PRNGKey(seed)
  x = jax.random.normal(key, (batch, 5))
  params = MLP.init(key, x)['params']
  _, features = MLP.apply({'params': params}, x)
  return params, x, features


def _aged(state, ages):
  """CBP state with every unit at the given age (as if it had run that many steps)."""
  return cbp_lib.CBPState(layers={
      name: layer.replace(ages=jnp.full_like(layer.ages, ages)) for name, layer in state.layers.items()})


def test_reset_preserves_function_when_outgoing_weights_are_zeroed():
  """Right after a reset the net computes what it computed before with the replaced units'
  outgoing weights set to zero: a new unit contributes nothing until it learns."""
  params, x, features = _mlp_setup()
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=0.3, maturity_threshold=0,
                                   count_mode='accumulate')
  new_params, _, _, info = jax.jit(cbp.update)(params, None, cbp.init(params), features, jax.random.PRNGKey(1))
  assert int(info.num_replaced) > 0
  expected = jax.tree.map(lambda a: a, params)
  expected = {k: dict(v) for k, v in expected.items()}
  for (name, after) in (('hidden_0', 'hidden_1'), ('hidden_1', 'output')):
    mask = info.replaced[name]
    expected[after]['kernel'] = jnp.where(mask[:, None], 0.0, expected[after]['kernel'])
  out_new, _ = MLP.apply({'params': new_params}, x)
  # Zeroing hidden_0's outgoing weights changes hidden_1's input; compare layer by layer instead:
  # hidden_1 outputs of replaced hidden_1 units do not reach the output.
  out_expected, _ = MLP.apply({'params': {**expected, 'hidden_0': new_params['hidden_0'],
                                          'hidden_1': new_params['hidden_1']}}, x)
  np.testing.assert_allclose(out_new, out_expected, rtol=1e-6, atol=1e-6)
  # And with only one layer of units, the function is exactly unchanged.
  single = nets.MLP(hidden=(8,), outputs=3)
  p1 = single.init(jax.random.PRNGKey(2), x)['params']
  out_before, f1 = single.apply({'params': p1}, x)
  cbp1 = cbp_lib.continual_backprop(topology.unit_layers(single), replacement_rate=0.3, maturity_threshold=0,
                                    count_mode='accumulate')
  p1_new, _, _, info1 = jax.jit(cbp1.update)(p1, None, cbp1.init(p1), f1, jax.random.PRNGKey(3))
  assert int(info1.num_replaced) == 2
  out_after, _ = single.apply({'params': p1_new}, x)
  masked = {**p1, 'output': {**p1['output'], 'kernel': jnp.where(info1.replaced['hidden_0'][:, None], 0.0,
                                                                 p1['output']['kernel'])}}
  np.testing.assert_allclose(out_after, single.apply({'params': masked}, x)[0], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out_after, out_before)   # the replaced units did contribute before


def test_replaced_units_get_fresh_inputs_zero_bias_zero_outgoing_and_reset_state():
  params, _, features = _mlp_setup()
  params = jax.tree.map(lambda p: p + 0.5, params)     # non-zero biases everywhere
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=0.3, maturity_threshold=0,
                                   count_mode='accumulate')
  state = cbp.init(params)
  new_params, _, new_state, info = jax.jit(cbp.update)(params, None, state, features, jax.random.PRNGKey(1))
  bound = np.sqrt(2.0) * np.sqrt(3.0 / 5)                # kaiming-uniform relu, fan_in 5
  m = np.asarray(info.replaced['hidden_0'])
  assert m.sum() == 2   # floor(0.3 * 8) = 2
  k = np.asarray(new_params['hidden_0']['kernel'])
  assert np.all(np.abs(k[:, m]) <= bound) and not np.allclose(k[:, m], np.asarray(params['hidden_0']['kernel'])[:, m])
  np.testing.assert_array_equal(k[:, ~m], np.asarray(params['hidden_0']['kernel'])[:, ~m])
  assert np.all(np.asarray(new_params['hidden_0']['bias'])[m] == 0)
  # Outgoing weights are zero, except into units of the next layer that were themselves replaced
  # in this step: their fresh input rows are drawn after (layer order of the original).
  m1 = np.asarray(info.replaced['hidden_1'])
  assert np.all(np.asarray(new_params['hidden_1']['kernel'])[m][:, ~m1] == 0)
  assert np.all(np.asarray(new_params['hidden_1']['kernel'])[m][:, m1] != 0)
  layer = new_state.layers['hidden_0']
  assert np.all(np.asarray(layer.ages)[m] == 0) and np.all(np.asarray(layer.ages)[~m] == 1)
  assert np.all(np.asarray(layer.utility)[m] == 0) and np.all(np.asarray(layer.mean_activation)[m] == 0)


def test_exactly_the_lowest_utility_eligible_units_are_chosen():
  params, _, features = _mlp_setup()
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP)[:1], replacement_rate=0.25, maturity_threshold=5,
                                   count_mode='accumulate', util_type='contribution', decay_rate=0.0)
  state = cbp.init(params)
  ages = jnp.array([10, 10, 2, 10, 10, 3, 10, 10], jnp.int32)   # units 2 and 5 immature
  state = cbp_lib.CBPState(layers={'hidden_0': state.layers['hidden_0'].replace(ages=ages)})
  _, _, new_state, info = jax.jit(cbp.update)(params, None, state, features, jax.random.PRNGKey(0))
  # decay 0: utility = instantaneous contribution, computed here independently.
  h = np.asarray(features['hidden_0'])
  out_mag = np.abs(np.asarray(params['hidden_1']['kernel'])).mean(axis=1)
  util = out_mag * np.abs(h).mean(axis=0)
  eligible = np.asarray(ages) + 1 > 5
  r = 0.25 * eligible.sum()   # 1.5 -> one unit now, 0.5 carried
  order = [i for i in np.argsort(util, kind='stable') if eligible[i]]
  expected = np.zeros(8, bool)
  expected[order[:int(r)]] = True
  np.testing.assert_array_equal(np.asarray(info.replaced['hidden_0']), expected)
  np.testing.assert_allclose(float(new_state.layers['hidden_0'].accumulated), 0.5, rtol=1e-6)


def test_immature_units_are_never_replaced():
  params, _, features = _mlp_setup()
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=1.0, maturity_threshold=50,
                                   count_mode='accumulate')
  update = jax.jit(cbp.update)
  state = cbp.init(params)
  for t in range(50):   # ages reach 50, never > 50
    params, _, state, info = update(params, None, state, features, jax.random.PRNGKey(t))
    assert int(info.num_replaced) == 0
  params, _, state, info = update(params, None, state, features, jax.random.PRNGKey(99))
  assert int(info.num_replaced) == 8 + 6     # rate 1: every (now mature) unit


@pytest.mark.parametrize('count_mode,count_base', [('accumulate', 'eligible'), ('bernoulli', 'eligible'),
                                                   ('accumulate', 'width')])
def test_replacement_count_matches_rate_times_eligible_times_steps(count_mode, count_base):
  params, _, features = _mlp_setup()
  rate, steps = 0.01, 2000
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=rate, maturity_threshold=1e9,
                                   count_mode=count_mode, count_base=count_base)
  state = _aged(cbp.init(params), 10)
  # maturity is huge, so no unit is eligible: pin eligibility by making the threshold traced-low.
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=rate, maturity_threshold=0,
                                   count_mode=count_mode, count_base=count_base)

  def body(carry, key):
    p, s = carry
    p, _, s, info = jax.jit(cbp.update)(p, None, s, features, key)
    return (p, s), info.num_replaced

  _, counts = jax.jit(lambda k: jax.lax.scan(body, (params, state), jax.random.split(k, steps)))(
      jax.random.PRNGKey(0))
  expected = rate * (8 + 6) * steps   # 280; every unit is eligible (age > 0) at every step
  total = int(counts.sum())
  if count_mode == 'accumulate':
    assert abs(total - expected) <= 2
  else:   # Bernoulli: binomial noise, sd ~ sqrt(280)
    assert abs(total - expected) < 4 * np.sqrt(expected)


def test_rate_zero_replaces_nothing_and_utilities_still_track():
  params, _, features = _mlp_setup()
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=0.0, maturity_threshold=0)
  new_params, _, state, info = jax.jit(cbp.update)(params, None, cbp.init(params), features, jax.random.PRNGKey(0))
  assert int(info.num_replaced) == 0
  jax.tree.map(np.testing.assert_array_equal, new_params, params)
  assert float(state.layers['hidden_0'].utility.sum()) > 0


def test_vmap_over_seeds_and_traced_rates_gives_per_seed_choices():
  params, x, _ = _mlp_setup()
  seeds = 6
  keys = jax.random.split(jax.random.PRNGKey(0), seeds)
  rates = jnp.array([0.0, 0.3, 0.3, 0.3, 0.6, 0.6])
  xs = jax.random.normal(jax.random.PRNGKey(5), (seeds,) + x.shape)

  def one(key, rate, xb):
    p = MLP.init(key, xb)['params']
    _, f = MLP.apply({'params': p}, xb)
    cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=rate, maturity_threshold=0,
                                     count_mode='accumulate', max_replacement_rate=0.6)
    _, _, _, info = jax.jit(cbp.update)(p, None, cbp.init(p), f, key)
    return info.replaced['hidden_0'], info.num_replaced

  masks, nums = jax.jit(jax.vmap(one))(keys, rates, xs)
  np.testing.assert_array_equal(np.asarray(nums), [0, 2 + 1, 3, 3, 4 + 3, 7])
  masks = np.asarray(masks)
  assert len({m.tobytes() for m in masks[1:4]}) > 1        # different seeds choose different units
  for i in range(seeds):   # each batch element equals the unbatched computation
    m, n = one(keys[i], float(rates[i]), xs[i])
    np.testing.assert_array_equal(np.asarray(m), masks[i])


def test_optimizer_state_reset_is_optional():
  params, _, features = _mlp_setup()
  opt = optax.sgd(0.1, momentum=0.9)
  opt_state = opt.init(params)
  opt_state = jax.tree.map(lambda a: a + 1.0, opt_state)    # non-zero momentum everywhere
  for reset, expect_zero in ((False, False), (True, True)):
    cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=0.3, maturity_threshold=0,
                                     count_mode='accumulate', reset_optimizer_state=reset)
    _, new_opt, _, info = jax.jit(cbp.update)(params, opt_state, cbp.init(params), features, jax.random.PRNGKey(1))
    m = np.asarray(info.replaced['hidden_0'])
    trace = new_opt[0].trace
    zeroed = np.all(np.asarray(trace['hidden_0']['kernel'])[:, m] == 0) and \
        np.all(np.asarray(trace['hidden_1']['kernel'])[m] == 0)
    assert zeroed == expect_zero
    assert np.all(np.asarray(trace['hidden_0']['kernel'])[:, ~m] == 1.0)


def test_next_bias_correction_is_off_by_default_and_shifts_the_consumer_bias_when_on():
  params, x, features = _mlp_setup()
  single = nets.MLP(hidden=(8,), outputs=3)
  p = single.init(jax.random.PRNGKey(2), x)['params']
  _, f = single.apply({'params': p}, x)
  kwargs = dict(replacement_rate=0.3, maturity_threshold=0, count_mode='accumulate', decay_rate=0.5)
  off = cbp_lib.continual_backprop(topology.unit_layers(single), **kwargs)
  p_off, _, _, _ = jax.jit(off.update)(p, None, off.init(p), f, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(p_off['output']['bias'], p['output']['bias'])
  on = cbp_lib.continual_backprop(topology.unit_layers(single), next_bias_correction=True, **kwargs)
  p_on, _, _, info = jax.jit(on.update)(p, None, on.init(p), f, jax.random.PRNGKey(1))
  m = np.asarray(info.replaced['hidden_0'])
  # after one step with decay 0.5 and age 1, the bias-corrected mean activation is the batch mean
  mean = np.asarray(f['hidden_0']).mean(axis=0)
  shift = (np.asarray(p['output']['kernel'])[m] * mean[m, None]).sum(axis=0)
  np.testing.assert_allclose(p_on['output']['bias'], np.asarray(p['output']['bias']) + shift, rtol=1e-5)
  # the correction keeps the mean output: new output with zeroed units ~ old output on average
  out_old = single.apply({'params': p}, x)[0].mean(axis=0)
  out_new = single.apply({'params': p_on}, x)[0].mean(axis=0)
  np.testing.assert_allclose(out_new, out_old, rtol=1e-4, atol=1e-5)


class _ConvNet(nn.Module):
  """conv -> pool -> conv -> pool -> flatten -> dense -> out, NHWC, like the ImageNet net."""

  @nn.compact
  def __call__(self, x):
    init = nets.initializer('default')
    h1 = nn.max_pool(nn.relu(nn.Conv(4, (3, 3), padding='VALID', kernel_init=init, name='conv_0')(x)), (2, 2), (2, 2))
    h2 = nn.max_pool(nn.relu(nn.Conv(6, (3, 3), padding='VALID', kernel_init=init, name='conv_1')(h1)), (2, 2), (2, 2))
    out = nn.Dense(2, kernel_init=init, name='output')(h2.reshape(h2.shape[0], -1))
    return out, {'conv_0': h1, 'conv_1': h2}

  @staticmethod
  def unit_layers():
    init = nets.initializer('default')
    return (cbp_lib.UnitLayer('conv_0', ('conv_0', 'kernel'), (('conv_1', 'kernel'),), init, bias=('conv_0', 'bias')),
            cbp_lib.UnitLayer('conv_1', ('conv_1', 'kernel'), (('output', 'kernel'),), init, bias=('conv_1', 'bias')))


def test_conv_channels_as_units_and_conv_to_dense_flatten():
  net = _ConvNet()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 14, 14, 3))
  params = net.init(jax.random.PRNGKey(1), x)['params']
  out, features = net.apply({'params': params}, x)
  assert features['conv_1'].shape == (4, 2, 2, 6)
  cbp = cbp_lib.continual_backprop(net.unit_layers(), replacement_rate=0.34, maturity_threshold=0,
                                   count_mode='accumulate', count_base='width', util_type='contribution',
                                   decay_rate=0.0)
  new, _, _, info = jax.jit(cbp.update)(params, None, cbp.init(params), features, jax.random.PRNGKey(2))
  m0, m1 = np.asarray(info.replaced['conv_0']), np.asarray(info.replaced['conv_1'])
  assert m0.sum() == 1 and m1.sum() == 2          # floor(0.34 * 4), floor(0.34 * 6)
  # conv -> conv: the consumer's input-channel slices are zero (but in its own fresh channels)
  assert np.all(np.asarray(new['conv_1']['kernel'])[:, :, m0, :][..., ~m1] == 0)
  # conv -> dense: every flattened (position, channel) row of a replaced channel is zero
  rows = np.asarray(new['output']['kernel']).reshape(4, 6, 2)
  assert np.all(rows[:, m1, :] == 0) and np.all(rows[:, ~m1, :] == np.asarray(params['output']['kernel']).reshape(4, 6, 2)[:, ~m1, :])
  # the chosen conv_1 channels are those of lowest contribution mean_p(out_mag[p,c] * mean_B|h[p,c]|)
  h = np.asarray(features['conv_1']).reshape(4, 4, 6)
  out_mag = np.abs(np.asarray(params['output']['kernel']).reshape(4, 6, 2)).mean(axis=2)
  util = (out_mag * np.abs(h).mean(axis=0)).mean(axis=0)
  np.testing.assert_array_equal(np.sort(np.argsort(util, kind='stable')[:2]), np.flatnonzero(m1))
  # the chosen conv_0 channel: lowest out_mag (mean |w| over conv_1's taps and outputs) * mean_BHW |h|
  h0 = np.abs(np.asarray(features['conv_0'])).mean(axis=(0, 1, 2))
  out_mag0 = np.abs(np.asarray(params['conv_1']['kernel'])).mean(axis=(0, 1, 3))
  assert np.flatnonzero(m0).tolist() == [int(np.argmin(out_mag0 * h0))]
  # the network after the reset (numpy): its output is the non-replaced channels' flattened
  # (position, channel) features times their rows, plus the bias; replaced channels add nothing
  out_new, features_new = net.apply({'params': new}, x)
  h2 = np.asarray(features_new['conv_1']).reshape(4, 4, 6)
  want = np.einsum('bpc,pco->bo', h2[:, :, ~m1], rows[:, ~m1, :]) + np.asarray(new['output']['bias'])
  np.testing.assert_allclose(np.asarray(out_new), want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(out_new), np.asarray(out))    # conv_0's reset changed the output


def test_norm_layer_parameters_of_replaced_units_are_restored():
  params, _, features = _mlp_setup()
  params = {**params, 'norm_0': {'scale': jnp.full(8, 3.0), 'bias': jnp.full(8, 2.0)}}
  layers = topology.unit_layers(MLP)
  layer = cbp_lib.UnitLayer(**{**layers[0].__dict__, 'norm_ones': (('norm_0', 'scale'),),
                               'norm_zeros': (('norm_0', 'bias'),)})
  cbp = cbp_lib.continual_backprop((layer,), replacement_rate=0.3, maturity_threshold=0, count_mode='accumulate')
  new, _, _, info = jax.jit(cbp.update)(params, None, cbp.init(params), features, jax.random.PRNGKey(0))
  m = np.asarray(info.replaced['hidden_0'])
  np.testing.assert_array_equal(np.asarray(new['norm_0']['scale']), np.where(m, 1.0, 3.0))
  np.testing.assert_array_equal(np.asarray(new['norm_0']['bias']), np.where(m, 0.0, 2.0))


def test_bad_settings_raise_clear_errors():
  with pytest.raises(ValueError, match='util_type'):
    cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=0.1, maturity_threshold=1, util_type='nope')
  with pytest.raises(ValueError, match='max_replacement_rate'):
    cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=jnp.array(0.1), maturity_threshold=1)
  params, _, features = _mlp_setup()
  cbp = cbp_lib.continual_backprop(topology.unit_layers(MLP), replacement_rate=0.1, maturity_threshold=1)
  with pytest.raises(KeyError, match='hidden_1'):
    jax.jit(cbp.update)(params, None, cbp.init(params), {'hidden_0': features['hidden_0']}, jax.random.PRNGKey(0))


def test_a_layer_read_by_two_consumers():
  """A hidden layer feeding two heads: a replaced unit's outgoing weights are zeroed in both, and its
  outgoing magnitude (utility_type 'weight') is the mean of the two heads' mean |w| (numpy)."""
  rng = np.random.default_rng(0)
  params = {'hidden': {'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), 'bias': jnp.zeros(4)},
            'head_a': {'kernel': jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)},
            'head_b': {'kernel': jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)}}
  layer = cbp_lib.UnitLayer('hidden', ('hidden', 'kernel'), (('head_a', 'kernel'), ('head_b', 'kernel')),
                            nets.initializer('default'), bias=('hidden', 'bias'))
  features = {'hidden': jnp.ones((6, 4))}
  cbp = cbp_lib.continual_backprop((layer,), replacement_rate=0.25, maturity_threshold=0, util_type='weight',
                                   count_mode='accumulate', count_base='width', decay_rate=0.0)
  new, _, state, info = cbp.update(params, None, cbp.init(params), features, jax.random.PRNGKey(0))
  a, b = np.abs(np.asarray(params['head_a']['kernel'])), np.abs(np.asarray(params['head_b']['kernel']))
  want = (a.mean(axis=1) + b.mean(axis=1)) / 2
  replaced = np.asarray(info.replaced['hidden'])
  assert replaced.sum() == 1 and replaced[np.argmin(want)]
  for head in ('head_a', 'head_b'):
    kernel = np.asarray(new[head]['kernel'])
    np.testing.assert_array_equal(kernel[replaced], 0.0)
    np.testing.assert_array_equal(kernel[~replaced], np.asarray(params[head]['kernel'])[~replaced])
  assert np.all(np.asarray(new['hidden']['kernel'])[:, replaced] != np.asarray(params['hidden']['kernel'])[:, replaced])
