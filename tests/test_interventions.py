"""The interventions of the plasticity toolkit: layer norm, plasticity injection, resets, their
composition with CBP / L2 Init / S&P / UPGD on every experiment's network, and the one-line error
where one does not apply."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import cheap_diagnostics, load_config, trace_programs
from ddl import config as config_lib
from ddl import nets
from ddl import run as run_lib
from ddl.learners import Learner
from ddl.learners import cbp as cbp_lib
from ddl.learners import idbd
from ddl.learners import registry
from ddl.learners import schedules
from ddl.learners import topology


def _learner(network, optimizer='adam', schedule=None, num_chunks=10):
  """The learner of a config with `optimizer` and `schedule`: the methods its program holds."""
  config = config_lib.base_config()
  config.optimizer.name = optimizer
  if schedule:
    config.schedule.update(schedule)
  names = [m.name for m in registry.active(config, [config.hparams.to_dict()])]
  return Learner.of(network, 'cross_entropy', names, config=config, num_chunks=num_chunks), config


def _batch(key, n=16, inputs=8, classes=3):
  x = jax.random.normal(key, (n, inputs))
  return x, jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, classes)


@pytest.mark.parametrize('layers', [1, 2, 3])
def test_injection_leaves_the_output_unchanged_and_freezes_the_old_head(layers):
  network = nets.MLP(hidden=(6, 5), outputs=3)
  learner, config = _learner(network, schedule=dict(injection_first=2, injection_layers=layers))
  assert learner.hooks['injection'].injections() == 1
  x, y = _batch(jax.random.key(0))
  state = learner.init(jax.random.key(1), x[:1], config.hparams)
  for i in range(3):
    state, _ = learner.step(state, x, y, jax.random.key(10 + i))
  before, _ = learner.predict(state, x)
  not_yet = learner.boundary(state, jnp.asarray(1), jax.random.key(5), x[:1])
  jax.tree.map(np.testing.assert_array_equal, not_yet.params, state.params)
  injected = learner.boundary(state, jnp.asarray(2), jax.random.key(5), x[:1])
  after, _ = learner.predict(injected, x)
  np.testing.assert_allclose(after, before, atol=1e-5)
  head = schedules.head_names(network, x[:1], learner.hooks['injection'].start)
  assert len(head) == layers
  for name in head:   # a fresh trainable head, and the old one in slot 0 with its fresh copy in slot 1
    assert not np.allclose(injected.params[name]['kernel'], state.params[name]['kernel'])
    np.testing.assert_array_equal(injected.methods['injection'].heads[name]['kernel'][0], state.params[name]['kernel'])
    np.testing.assert_array_equal(injected.methods['injection'].heads[name]['kernel'][1],
                                  injected.params[name]['kernel'])
  np.testing.assert_array_equal(injected.methods['injection'].signs, [1.0, -1.0])
  stepped = injected
  for i in range(3):
    stepped, _ = learner.step(stepped, x, y, jax.random.key(20 + i))
  jax.tree.map(np.testing.assert_array_equal, stepped.methods['injection'].heads,
               injected.methods['injection'].heads)   # frozen
  assert not np.allclose(stepped.params[head[0]]['kernel'], injected.params[head[0]]['kernel'])     # theta' learns
  trunk = [n for n in state.params if n not in head]
  for name in trunk:
    assert not np.allclose(stepped.params[name]['kernel'], injected.params[name]['kernel'])         # so does the trunk


def test_injection_of_a_conv_net_head_and_vmapped_seeds():
  network = nets.ConvNet(outputs=2)
  learner, config = _learner(network, schedule=dict(injection_first=1, injection_every=1, injection_layers=2),
                             num_chunks=3)
  assert learner.hooks['injection'].injections() == 2
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
  init = jax.jit(jax.vmap(lambda k: learner.init(k, x[:1], config.hparams)))   # jitted: compiles faster
  states = init(jax.random.split(jax.random.key(1), 2))                         # than op by op
  predict = jax.jit(jax.vmap(lambda s: learner.predict(s, x)[0]))
  before = predict(states)
  boundary = jax.jit(jax.vmap(lambda s, k, i: learner.boundary(s, i, k, x[:1]), in_axes=(0, 0, None)))
  keys = jax.random.split(jax.random.key(2), 2)
  states = boundary(boundary(states, keys, 1), keys, 2)
  after = predict(states)
  np.testing.assert_allclose(after, before, atol=1e-4)
  np.testing.assert_array_equal(states.methods['injection'].done, [2, 2])


def test_reset_reinitialises_the_head_and_zeroes_its_optimizer_state():
  network = nets.MLP(hidden=(6,), outputs=3)
  learner, config = _learner(network, schedule=dict(reset_first=2, reset_every=2, reset_layers=1))
  x, y = _batch(jax.random.key(0))
  state = learner.init(jax.random.key(1), x[:1], config.hparams)
  for i in range(2):
    state, _ = learner.step(state, x, y, jax.random.key(10 + i))
  kept = learner.boundary(state, jnp.asarray(3), jax.random.key(3), x[:1])
  jax.tree.map(np.testing.assert_array_equal, kept.params, state.params)
  reset = learner.boundary(state, jnp.asarray(4), jax.random.key(3), x[:1])
  np.testing.assert_array_equal(reset.params['hidden_0']['kernel'], state.params['hidden_0']['kernel'])
  assert not np.allclose(reset.params['output']['kernel'], state.params['output']['kernel'])
  np.testing.assert_array_equal(reset.params['output']['bias'], 0.0)            # the layer's own init
  adam = idbd.find_state(reset.opt_state, optax.ScaleByAdamState)
  np.testing.assert_array_equal(adam.mu['output']['kernel'], 0.0)
  assert np.any(np.asarray(adam.mu['hidden_0']['kernel']) != 0)
  assert schedules.count(2, 2, 10) == 4 and schedules.count(3, 0, 10) == 1 and schedules.count(0, 1, 10) == 0


def test_encoder_reset_reinitialises_the_first_layers_only_and_zeroes_their_optimizer_state():
  """reset_layers=-1 on a conv net: its conv layer (the encoder) from the fresh init of the boundary's key,
  the dense layers and their Adam moments untouched; more layers than the network has is refused."""
  network = nets.ConvNet(widths=(4,), kernels=(3,), pool=False, dense=(8,), outputs=3)
  learner, config = _learner(network, schedule=dict(reset_first=1, reset_layers=-1))
  x = jax.random.normal(jax.random.key(0), (16, 6, 6, 2))
  y = jax.random.randint(jax.random.key(1), (16,), 0, 3)
  state, _ = learner.step(learner.init(jax.random.key(1), x[:1], config.hparams), x, y, jax.random.key(2))
  reset = learner.boundary(state, jnp.asarray(1), jax.random.key(3), x[:1])
  fresh = network.init(jax.random.split(jax.random.key(3))[0], x[:1])['params']
  first = network.layer_names()[0]
  jax.tree.map(np.testing.assert_array_equal, reset.params[first], fresh[first])
  for name in network.layer_names()[1:]:
    jax.tree.map(np.testing.assert_array_equal, reset.params[name], state.params[name])
  adam = idbd.find_state(reset.opt_state, optax.ScaleByAdamState)
  jax.tree.map(lambda m: np.testing.assert_array_equal(m, 0.0), adam.mu[first])
  assert np.any(np.asarray(adam.mu['output']['kernel']) != 0)
  whole = config_lib.base_config()
  whole.schedule.update(reset_first=1, reset_layers=-len(network.layer_names()))
  where = type('Where', (), {'config': whole, 'network': lambda self: network})()
  assert 'reset the whole network' in schedules.RESET.check(where)


def test_whole_network_reset_equals_a_fresh_init_of_the_same_key():
  network = nets.MLP(hidden=(6,), outputs=3)
  learner, config = _learner(network, optimizer='sgd', schedule=dict(reset_first=1, reset_layers=0))
  x, y = _batch(jax.random.key(0))
  state, _ = learner.step(learner.init(jax.random.key(1), x[:1], config.hparams), x, y, jax.random.key(2))
  reset = learner.boundary(state, jnp.asarray(1), jax.random.key(3), x[:1])
  fresh = network.init(jax.random.split(jax.random.key(3))[0], x[:1])['params']
  jax.tree.map(np.testing.assert_array_equal, reset.params, fresh)


@pytest.mark.parametrize('kind', ['affine', 'plain'])
def test_layer_norm_normalises_before_the_activation_and_cbp_restores_it(kind):
  network = nets.MLP(hidden=(7,), outputs=2, layer_norm=kind, activation='linear')
  x = jax.random.normal(jax.random.key(0), (5, 4)) * 3 + 1
  params = network.init(jax.random.key(1), x)['params']
  _, features = network.apply({'params': params}, x)
  h = np.asarray(features['hidden_0'])
  np.testing.assert_allclose(h.mean(axis=1), 0, atol=1e-5)
  np.testing.assert_allclose(h.std(axis=1), 1, atol=1e-2)
  layers = topology.unit_layers(network)
  assert layers[0].norm_ones == (('norm_0', 'scale'),) and layers[0].norm_zeros == (('norm_0', 'bias'),)
  if kind == 'affine':
    params = {**params, 'norm_0': {'scale': params['norm_0']['scale'] * 3, 'bias': params['norm_0']['bias'] + 2}}
    replaced = jnp.arange(7) == 2
    pick = cbp_lib.Pick(replaced, jnp.asarray([2]), jnp.asarray([True]), jnp.zeros(7), jax.random.key(2))
    new = cbp_lib.reset_units(layers, params, [pick], fresh=True)
    np.testing.assert_array_equal(new['norm_0']['scale'], np.where(replaced, 1.0, 3.0))
    np.testing.assert_array_equal(new['norm_0']['bias'], np.where(replaced, 0.0, 2.0))
  else:
    assert 'norm_0' not in params


def test_layer_norm_in_the_resnet_and_the_actor_critic():
  """ResNet-18 with layer norm in place of batch norm: no running statistics, the same unit topology
  (CBP restores a replaced channel's scale and offset); the actor-critic's MLPs get norm layers."""
  resnet = nets.ResNet18(outputs=3, width=2, layer_norm='affine', blocks_per_stage=1)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  variables = jax.jit(resnet.init)(jax.random.key(1), x)   # jitted: compiles faster than op by op
  assert 'batch_stats' not in variables and 'scale' in variables['params']['stem_bn']
  layers = topology.unit_layers(resnet)
  params = variables['params']
  params = {**params, 'stem_bn': {'scale': params['stem_bn']['scale'] * 2, 'bias': params['stem_bn']['bias'] + 1}}
  replaced = jnp.arange(2) == 1
  picks = [cbp_lib.Pick(replaced if i == 0 else jnp.zeros(layer_units, bool), jnp.asarray([1]),
                        jnp.asarray([i == 0]), jnp.zeros(layer_units), jax.random.key(2))
           for i, layer_units in enumerate(params[l.kernel[0]]['kernel'].shape[-1] for l in layers)]
  new = jax.jit(lambda p, picks: cbp_lib.reset_units(layers, p, picks, fresh=True))(params, picks)
  np.testing.assert_array_equal(new['stem_bn']['scale'], [2.0, 1.0])
  np.testing.assert_array_equal(new['stem_bn']['bias'], [1.0, 0.0])
  actor_critic = nets.ActorCritic(hidden=(4,), actions=2, layer_norm='affine')
  ac_params = actor_critic.init(jax.random.key(3), jnp.zeros((1, 5)))['params']
  assert 'norm_0' in ac_params['policy'] and 'norm_0' in ac_params['value']
  assert topology.unit_layers(actor_critic)[0].norm_ones == (('policy', 'norm_0', 'scale'),)


def test_injection_on_a_network_without_a_head_stops_the_launch_with_one_line(tmp_path):
  config = load_config('cifar100', 'smoke,cbp')
  config.schedule.injection_first = 1
  with pytest.raises(config_lib.ConfigError) as info:
    run_lib.run(config, str(tmp_path / 'w'))
  message = str(info.value)
  assert '\n' not in message and 'injection' in message and 'class_incremental' in message and 'ResNet18' in message
  assert not (tmp_path / 'w').exists()


def test_cbp_on_the_linear_learner_stops_the_launch(tmp_path):
  config = load_config('slowly_changing_regression', 'smoke,linear')
  config.variants.linear.replacement_rate = 1e-3
  with pytest.raises(config_lib.ConfigError, match='cbp .* does not apply to experiment slowly_changing_regression: '
                                                    'its network .MLP. has no hidden units'):
    run_lib.run(config, str(tmp_path / 'w'))


# Every experiment's network with the interventions composed: two programs per experiment (CBP with
# UPGD, L2 Init, S&P, layer norm and injection, or for the networks without a head a whole-network
# reset; ReDo with a head or whole-network reset). They run through the launch on one MLP experiment
# and the conv net; on the others (the same learner code, each experiment's own loop and its one
# call of `Learner.boundary`) they are traced through init, a chunk and the evaluator, and run with
# -m slow (the ResNet's and PPO's programs compile for minutes; layer norm in the ResNet and the
# actor-critic has the unit test above).
COMPOSED = {
    'permuted_digits': 'smoke,cbp', 'slowly_changing_regression': 'smoke,cbp', 'imagenet': 'smoke,cbp',
    'cifar100': 'smoke,cbp', 'ant': 'smoke,cbp', 'random_label_digits': 'smoke,adam',
}
RUN_BY_DEFAULT = ('permuted_digits', 'imagenet')
NO_HEAD = ('class_incremental', 'ppo')


def _compose(config, with_cbp: bool):
  variant = config.variants[list(config.variants)[0]]
  with config.unlocked():
    if with_cbp:
      config.optimizer.name = 'upgd'
      variant.l2_init = 1e-3
      variant.noise_scale = 1e-4
      variant.weight_decay = 1e-4
      variant.replacement_rate = 1e-2
      config.network.layer_norm = 'affine'
      if config.experiment in NO_HEAD:
        config.schedule.reset_first = 1
      else:
        config.schedule.injection_first = 1
    else:
      for h in cbp_lib.METHOD.traced:   # CBP is off: a variant may not set its hyperparameters
        if h.name in variant:
          del variant[h.name]
      variant.replacement_rate = 0.0
      config.cbp.method = 'redo'
      config.cbp.redo_period = 2
      config.schedule.reset_first = 1
      config.schedule.reset_every = 1
      config.schedule.reset_layers = 0 if config.experiment in NO_HEAD else 1


def _cases(names):
  for name in names:
    slow = [] if name in RUN_BY_DEFAULT else [pytest.mark.slow]
    yield pytest.param(name, True, id=f'{name}-cbp_upgd_l2init_snp_ln_injection_or_reset', marks=slow)
    yield pytest.param(name, False, id=f'{name}-redo_reset', marks=slow)


def _composed_config(name, with_cbp):
  config = load_config(name, COMPOSED[name])
  _compose(config, with_cbp)
  return cheap_diagnostics(config)


@pytest.mark.parametrize('name,with_cbp', list(_cases(sorted(COMPOSED))))
def test_composed_interventions_run_on_every_experiment(name, with_cbp, tmp_path):
  summary = run_lib.run(_composed_config(name, with_cbp), str(tmp_path / 'w'), stop_after_chunks=2, figures=False)
  assert summary['nonfinite_runs'] == 0
  assert summary['chunks_done'] == 2


@pytest.mark.parametrize('name,with_cbp', [pytest.param(*p.values, id=p.id)
                                           for p in _cases(sorted(set(COMPOSED) - set(RUN_BY_DEFAULT)))])
def test_composed_interventions_trace_on_every_other_experiment(name, with_cbp):
  """The launch's validation and every program's tracing (nothing compiled) on the experiments that
  the test above runs only with -m slow."""
  _, state, values = trace_programs(_composed_config(name, with_cbp))
  assert values and jax.tree.leaves(state)
