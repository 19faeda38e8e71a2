"""CReLU (ddl.learners.crelu) against a numpy loop of its equation, [relu(x), relu(-x)], on every
network family, and CBP's unit replacement through it."""
import jax
import jax.numpy as jnp
import numpy as np

from ddl import config as config_lib
from ddl import experiments
from ddl import nets
from ddl.learners import crelu
from ddl.learners import learner as learner_lib
from ddl.learners import topology


def numpy_crelu(x):
  return np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=-1)


def test_crelu_matches_its_equation():
  x = np.random.default_rng(0).normal(size=(3, 2, 5)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(crelu.crelu(jnp.asarray(x))), numpy_crelu(x))
  assert nets.activation('crelu') is crelu.crelu and nets.gain('crelu') == nets.gain('relu')


def test_mlp_with_crelu_matches_a_numpy_forward_pass():
  net = nets.MLP(hidden=(4, 3), outputs=2, activation='crelu')
  x = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
  params = net.init(jax.random.key(0), jnp.asarray(x))['params']
  assert params['hidden_1']['kernel'].shape == (8, 3) and params['output']['kernel'].shape == (6, 2)
  out, features = net.apply({'params': params}, jnp.asarray(x))
  h = x
  for name in ('hidden_0', 'hidden_1'):
    h = numpy_crelu(h @ np.asarray(params[name]['kernel']) + np.asarray(params[name]['bias']))
    np.testing.assert_allclose(np.asarray(features[name]), h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out), h @ np.asarray(params['output']['kernel']) + np.asarray(
      params['output']['bias']), rtol=1e-5, atol=1e-6)


def test_every_network_family_takes_crelu():
  conv = nets.ConvNet(outputs=2, conv='lax', activation='crelu', widths=(2, 3, 4), dense=(5, 6))
  shapes = jax.eval_shape(lambda: conv.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))['params']
  assert shapes['conv_1']['kernel'].shape == (3, 3, 4, 3) and shapes['dense_1']['kernel'].shape == (10, 6)
  resnet = nets.ResNet18(outputs=3, width=2, conv='lax', blocks_per_stage=1, activation='crelu')
  shapes = jax.eval_shape(lambda: resnet.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))['params']
  assert shapes['block0_conv2']['kernel'].shape == (3, 3, 4, 2)   # conv1's 2 channels, doubled
  ac = nets.ActorCritic((4,), 2, activation='crelu')
  shapes = jax.eval_shape(lambda: ac.init(jax.random.key(0), jnp.zeros((1, 3))))['params']
  assert shapes['value']['output']['kernel'].shape == (8, 1)


def test_cbp_replaces_a_crelu_unit_in_both_halves():
  """A replaced unit's outgoing weights are rows k and n + k of the next kernel: both zeroed."""
  net = nets.MLP(hidden=(4,), outputs=2, activation='crelu')
  config = config_lib.base_config()
  learner = learner_lib.Learner.of(net, 'mse', ('sgd', 'cbp'), config=config, replacement_rate=0.5)
  hparams = dict(learning_rate=0.0, replacement_rate=0.5, maturity_threshold=0.0, decay_rate=0.9)
  state = learner.init(jax.random.key(0), jnp.zeros((1, 3)), hparams)
  x, y = jax.random.normal(jax.random.key(1), (8, 3)), jnp.zeros((8, 2))
  before = state.params['output']['kernel']
  state, out = jax.jit(learner.step)(state, x, y, jax.random.key(2))
  assert int(out.num_replaced) >= 1
  after = np.asarray(state.params['output']['kernel'])
  replaced = np.asarray(state.methods['cbp'].layers['hidden_0'].ages == 0)
  assert replaced.sum() == int(out.num_replaced)
  for k in np.flatnonzero(replaced):
    np.testing.assert_array_equal(after[[k, k + 4]], 0.0)
  for k in np.flatnonzero(~replaced):
    np.testing.assert_array_equal(after[[k, k + 4]], np.asarray(before)[[k, k + 4]])
  assert len(topology.unit_layers(net)) == 1


def test_config_takes_crelu_and_refuses_it_for_growth():
  config = config_lib.config_module('slowly_changing_regression').get_config('smoke')
  config.network.activation = 'crelu'
  config_lib.validate(config, experiments.get(config.experiment))
  config.variants = dict(grow=dict(network=dict(hidden=4), growth=dict(initial_units=2)))
  try:
    config_lib.validate(config, experiments.get(config.experiment))
  except config_lib.ConfigError as e:
    assert 'keeps the layer width' in str(e)
  else:
    raise AssertionError('growth with CReLU was accepted')
