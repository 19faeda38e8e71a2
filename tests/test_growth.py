"""Level 3: a growing last hidden layer (ddl.learners.growth). Adding a unit leaves every output
unchanged; fringe units have zero gradient from the loss and zero effect on the output, and their
own loss reaches nothing else; the backbone stays within its bounds; the tester's utilities follow
their equations (numpy); the cost per step grows linearly with the maximum width; bad settings
stop the launch with one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config

from ddl import config as config_lib
from ddl import experiments
from ddl import nets
from ddl.learners import growth as growth_lib
from ddl.learners import learner as learner_lib

N_IN = 6


def growing_learner(hidden=(8,), initial=3, loss='half_mse', outputs=1, **options):
  config = config_lib.base_config()
  config.growth.initial_units = initial
  config.growth.update(options)
  net = nets.MLP(hidden=hidden, outputs=outputs, activation='relu')
  return learner_lib.Learner.of(net, loss, ('l2', 'sgd', 'growth'), config=config)


def batch(seed=0, n=16, outputs=1):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, N_IN)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(n,) if outputs == 1 else (n, outputs)), jnp.float32)
  return x, y


def trained_state(learner, hparams=None, steps=30):
  """A state whose weights (incl. shadow weights) are all non-zero after some training."""
  x, y = batch()
  state = learner.init(jax.random.key(0), x[:1], dict(learning_rate=0.05, growth_maturity=1e9, **(hparams or {})))
  step = jax.jit(learner.step)
  for i in range(steps):
    state = step(state, x[i % 16][None], y[i % 16][None], jax.random.key(i))[0]
  return state


def test_promotion_leaves_outputs_unchanged():
  learner = growing_learner()
  state = trained_state(learner)
  x, _ = batch(1)
  assert np.abs(np.asarray(state.params['fringe_output']['kernel'][3:])).min() > 0   # candidates learned
  hparams = {**state.hparams, 'growth_maturity': jnp.asarray(0.0), 'promote_threshold': jnp.asarray(-1e9),
             'demote_threshold': jnp.asarray(-1e9)}
  signals = learner.objective(state.params, state, x, jnp.zeros(16))[1][4]['growth']
  params, _, grown, info = growth_lib.update(learner.network, state.params, state.opt_state, state.methods['growth'],
                                             signals, hparams, jax.random.key(1), learner.options['growth'])
  assert int(info.promoted.sum()) == 1 and not bool(info.demoted.any())
  assert int(grown.active.sum()) == 4
  before = learner.predict(state, x)[0]
  after = learner.predict(state.replace(params=params, methods={**state.methods, 'growth': grown}), x)[0]
  np.testing.assert_allclose(np.asarray(after), np.asarray(before), rtol=1e-6, atol=1e-6)
  unit = int(np.argmax(np.asarray(info.promoted)))
  assert float(jnp.abs(params['output']['kernel'][unit]).sum()) == 0.0      # joins with zero outgoing weight
  assert float(jnp.abs(params['fringe_output']['kernel'][unit]).sum()) == 0.0


def test_fringe_has_zero_gradient_and_zero_effect_and_its_loss_reaches_nothing_else():
  learner = growing_learner(hidden=(5, 8))
  state = trained_state(learner)
  x, y = batch(2)
  fringe = ~np.asarray(state.methods['growth'].active)
  loss = lambda p: learner.objective(p, state, x, y)[1][0]
  total = lambda p: learner.objective(p, state, x, y)[0]
  grads = jax.grad(loss)(state.params)
  assert np.abs(np.asarray(grads['hidden_1']['kernel'])[:, fringe]).max() == 0.0
  assert np.abs(np.asarray(grads['hidden_1']['bias'])[fringe]).max() == 0.0
  assert np.abs(np.asarray(grads['output']['kernel'])[fringe]).max() == 0.0
  assert np.abs(np.asarray(grads['hidden_1']['kernel'])[:, ~fringe]).max() > 0   # the backbone does learn
  # the fringe loss's gradient: only the candidates' own incoming and shadow weights
  extra = jax.tree.map(lambda a, b: a - b, jax.grad(total)(state.params), grads)
  assert np.abs(np.asarray(extra['hidden_0']['kernel'])).max() == 0.0
  assert np.abs(np.asarray(extra['output']['kernel'])).max() == 0.0
  assert np.abs(np.asarray(extra['hidden_1']['kernel'])[:, ~fringe]).max() == 0.0
  assert np.abs(np.asarray(extra['hidden_1']['kernel'])[:, fringe]).max() > 0
  # zero effect: changing every fringe weight does not change the output
  noisy = jax.tree.map(lambda p: p, state.params)
  noisy['hidden_1'] = {'kernel': noisy['hidden_1']['kernel'] + 5.0 * fringe, 'bias': noisy['hidden_1']['bias'] + 5.0 * fringe}
  noisy['output'] = {**noisy['output'], 'kernel': noisy['output']['kernel'] + 5.0 * fringe[:, None]}
  np.testing.assert_array_equal(np.asarray(learner.predict(state.replace(params=noisy), x)[0]),
                                np.asarray(learner.predict(state, x)[0]))
  features = learner.predict(state, x)[1]['hidden_1']
  assert np.abs(np.asarray(features)[:, fringe]).max() == 0.0


def test_utilities_follow_their_equations():
  learner = growing_learner(outputs=2, loss='mse')
  state = trained_state(learner, steps=0)
  state = state.replace(params=jax.tree.map(lambda p: p + 0.1, state.params))
  x, y = batch(3, outputs=2)
  _, (_, output, features, _, aux, _) = learner.objective(state.params, state, x, y)
  signals = aux['growth']
  growth = state.methods['growth'].replace(candidate_utility=jnp.full(8, 0.3), backbone_utility=jnp.full(8, 0.2), error=jnp.asarray(0.5))
  hp = {**state.hparams, 'growth_decay': jnp.asarray(0.9), 'growth_maturity': jnp.asarray(1e9)}
  _, _, new, _ = growth_lib.update(learner.network, state.params, state.opt_state, growth, signals, hp,
                                   jax.random.key(0), learner.options['growth'])
  # numpy: residual y - ŷ, candidates h_i s_i, contributions h_i w_i
  p = jax.tree.map(np.asarray, state.params)
  h = np.maximum(np.asarray(x) @ p['hidden_0']['kernel'] + p['hidden_0']['bias'], 0)
  active = np.asarray(state.methods['growth'].active)
  e = np.asarray(y) - ((h * active) @ p['output']['kernel'] + p['output']['bias'])
  np.testing.assert_allclose(np.asarray(signals.residual), e, rtol=1e-5, atol=1e-6)
  c = (h * ~active)[:, :, None] * p['fringe_output']['kernel'][None]
  a = (h * active)[:, :, None] * p['output']['kernel'][None]
  e2 = (e ** 2).sum(-1)[:, None]
  cand = 0.9 * 0.3 + 0.1 * (e2 - ((e[:, None] - c) ** 2).sum(-1)).mean(0)
  back = 0.9 * 0.2 + 0.1 * (((e[:, None] + a) ** 2).sum(-1) - e2).mean(0)
  np.testing.assert_allclose(np.asarray(new.candidate_utility), np.where(active, 0, cand), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(new.backbone_utility), np.where(active, back, 0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(new.error), 0.9 * 0.5 + 0.1 * e2.mean(), rtol=1e-5)
  # and the fringe loss is the candidates' mean squared residual fit
  want = 0.5 * (((e[:, None] - c) ** 2).sum((1, 2))).mean()
  np.testing.assert_allclose(float(growth_lib.fringe_loss(signals)), want, rtol=1e-5)


def test_backbone_stays_within_bounds_and_changes_both_ways():
  learner = growing_learner(hidden=(10,), initial=4, min_units=2, max_units=7)
  x, y = batch(4, n=64)
  hparams = dict(learning_rate=0.05, growth_maturity=2.0, promote_threshold=0.0, demote_threshold=0.05)

  def run(key):
    state = learner.init(key, x[:1], hparams)
    body = lambda s, i: (lambda s2: (s2, s2.methods['growth'].active.sum()))(learner.step(s, x[i % 64][None], y[i % 64][None],
                                                                              jax.random.fold_in(key, i))[0])
    return jax.lax.scan(body, state, jnp.arange(300))

  keys = jax.random.split(jax.random.key(0), 3)
  finals, counts = jax.jit(jax.vmap(run))(keys)
  counts = np.asarray(counts)
  assert counts.min() >= 2 and counts.max() <= 7
  assert (np.diff(counts, axis=1) > 0).any() and (np.diff(counts, axis=1) < 0).any()
  single, single_counts = jax.jit(run)(keys[1])                           # vmap over seeds = one by one
  np.testing.assert_array_equal(np.asarray(single_counts), counts[1])
  np.testing.assert_allclose(np.asarray(single.params['hidden_0']['kernel']),
                             np.asarray(finals.params['hidden_0']['kernel'][1]), rtol=1e-5, atol=1e-6)


def test_step_cost_is_linear_in_the_maximum_width():
  def flops(width):
    learner = growing_learner(hidden=(width,), initial=2, outputs=3, loss='cross_entropy')
    x = jnp.zeros((1, 200))
    state = learner.init(jax.random.key(0), x, {})
    cost = jax.jit(learner.step).lower(state, x, jnp.zeros((1,), jnp.int32), jax.random.key(0)).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)['flops']
  small, large = flops(64), flops(256)
  assert 3.0 < large / small < 4.5   # 4x the width: about 4x the flops, not 16x


def scr_config(arg='smoke'):
  return load_config('slowly_changing_regression', arg)


@pytest.mark.parametrize('change,match', [
    (dict(growth=dict(initial_units=12)), 'growth needs min_units <= initial_units <= max_units'),
    (dict(growth=dict(initial_units=3, max_units=30)), 'growth.max_units=30 is wider than the layer'),
    (dict(network=dict(layers=0), growth=dict(initial_units=1)), 'growth needs an MLP with a hidden layer'),
    (dict(growth=dict(initial_units=3), network=dict(layer_norm='plain')), 'layer_norm'),
    (dict(growth=dict(initial_units=3), schedule=dict(reset_first=2)), 'does not combine with resets'),
    (dict(growth=dict(initial_units=3), growth_decay=1.5), 'hparams.growth_decay'),
])
def test_bad_growth_settings_name_the_problem(change, match):
  config = scr_config()
  change = {**change, 'network': {'hidden': 10, **change.get('network', {})}}
  config.variants = {'g': change}
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    config_lib.validate(config, experiments.get(config.experiment))
  assert '\n' not in str(e.value)
