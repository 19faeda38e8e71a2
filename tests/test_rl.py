"""PPO on Brax Ant: GAE and loss against hand values, ReDo, the friction in the env state (one
program for every friction, changes at the first episode end after the threshold), learning on a
trivial environment, and the slippery-Ant smoke run through launch/main.py with exact resume."""
import csv
import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_resume_is_identical, load_config
from ddl import config as config_lib
from ddl import nets
from ddl import run as run_lib
from ddl.learners import topology
from ddl.learners import Learner
from ddl.learners import redo as redo_lib
from ddl.rl import env as env_lib
from ddl.rl import ppo


def test_gae_matches_a_hand_computed_example():
  rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
  values = jnp.array([0.5, 1.0, 1.5, 2.0, 2.5])    # V(s_0..s_4)
  dones = jnp.array([0.0, 1.0, 0.0, 0.0])
  g, l = 0.9, 0.5
  # by hand, backwards: step 3 and 2 bootstrap, step 1 ends an episode (no bootstrap, no propagation)
  d3 = 4 + g * 2.5 - 2.0
  d2 = 3 + g * 2.0 - 1.5
  d1 = 2 - 1.0
  d0 = 1 + g * 1.0 - 0.5
  a3 = d3
  a2 = d2 + g * l * a3
  a1 = d1
  a0 = d0 + g * l * a1
  advantages, returns = ppo.gae(rewards, values, dones, g, l)
  np.testing.assert_allclose(advantages, [a0, a1, a2, a3], rtol=1e-6)
  np.testing.assert_allclose(returns, np.array([a0, a1, a2, a3]) + values[:-1], rtol=1e-6)
  normalised = ppo.normalise(advantages)
  np.testing.assert_allclose([normalised.mean(), normalised.std(ddof=1)], [0, 1], atol=1e-6)
  np.testing.assert_array_equal(ppo.normalise(jnp.ones(4)), jnp.zeros(4))   # zero std: only centred


def test_ppo_loss_clips_the_ratio_and_adds_the_value_error():
  log_std = jnp.zeros(1)
  actions = jnp.full((3, 1), 0.5)
  mean = jnp.zeros((3, 1))
  logp = ppo.gaussian_log_prob(mean, log_std, actions)
  np.testing.assert_allclose(logp, (-0.125 - 0.5 * np.log(2 * np.pi)) * np.ones(3), rtol=1e-6)
  # ratios 1.5 (A>0: clipped to 1.2), 0.5 (A<0: clipped to 0.8), 1.1 (inside: unclipped)
  old = logp - jnp.log(jnp.array([1.5, 0.5, 1.1]))
  batch = ppo.Batch(actions, old, jnp.array([2.0, -1.0, 3.0]), jnp.array([1.0, 0.0, -1.0]))
  value = jnp.array([0.0, 0.0, 1.0])
  loss = ppo.ppo_loss((mean, log_std, value), batch, clip=0.2, value_coef=1.0)
  surrogate = np.mean([-1.2 * 2.0, 0.8 * 1.0, -1.1 * 3.0])
  np.testing.assert_allclose(loss, surrogate + np.mean([1.0, 0.0, 4.0]), rtol=1e-5)
  # the clipped samples pass no gradient to the policy; the unclipped one does
  grad = jax.grad(lambda m: ppo.ppo_loss((m, log_std, value), batch))(mean)
  assert float(grad[0, 0]) == 0.0 and float(grad[1, 0]) == 0.0 and float(grad[2, 0]) != 0.0


def test_redo_resets_low_score_units_every_period_calls():
  net = nets.MLP(hidden=(6,), outputs=2, weight_init='lecun')
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
  params = net.init(jax.random.PRNGKey(1), x)['params']
  params['hidden_0']['bias'] = params['hidden_0']['bias'].at[:].set(0.1)
  h = jnp.ones((8, 6)).at[:, 2].set(0.0).at[:, 4].set(0.05)    # scores / mean: unit 2: 0, unit 4: ~0.06
  transform = redo_lib.redo(topology.unit_layers(net), threshold=0.1, period=3)
  state = transform.init(params)
  replaced = []
  for _ in range(6):
    new, _, state, info = transform.update(params, None, state, {'hidden_0': h}, jax.random.PRNGKey(2))
    replaced.append(np.asarray(info.replaced['hidden_0']))
  assert [r.any() for r in replaced] == [False, False, True, False, False, True]
  np.testing.assert_array_equal(np.flatnonzero(replaced[2]), [2, 4])
  assert float(jnp.abs(new['output']['kernel'][jnp.array([2, 4])]).max()) == 0.0
  np.testing.assert_array_equal(new['hidden_0']['bias'][jnp.array([2, 4])], 0.0)
  assert not np.allclose(new['hidden_0']['kernel'][:, 2], params['hidden_0']['kernel'][:, 2])
  np.testing.assert_array_equal(new['hidden_0']['kernel'][:, 0], params['hidden_0']['kernel'][:, 0])


def test_friction_lives_in_the_state_one_program_for_all():
  """Same actions, friction 0.02 vs 2.0: different trajectories from one compiled program; a
  change happens exactly at the first episode end after the threshold."""
  env = env_lib.FrictionAnt('spring', episode_length=5, change_every=7)
  actions = jax.random.uniform(jax.random.PRNGKey(0), (22, env.action_size), minval=-1, maxval=1)

  @jax.jit
  def run(schedule):
    state = env.reset(jax.random.PRNGKey(1), schedule)

    def body(state, x):
      t, action = x
      state, out = env.step(state, action, jax.random.PRNGKey(2), t + 1, schedule)
      return state, (env.observation(state), state.friction_index, out.done)

    return jax.lax.scan(body, state, (jnp.arange(22), actions))[1]

  obs_slippery, index, done = run(jnp.array([0.02, 0.5, 1.0, 1.5]))
  obs_rough, _, _ = run(jnp.array([2.0, 0.5, 1.0, 1.5]))
  assert run._cache_size() == 1   # pylint: disable=protected-access
  assert float(jnp.abs(obs_slippery[:4] - obs_rough[:4]).max()) > 1e-3
  steps = np.arange(1, 23)
  assert list(steps[np.asarray(done)]) == [5, 10, 15, 20]      # time limit only (no fall in 22 steps)
  # changes at 10 (10 - 0 > 7) and 20 (20 - 10 > 7), not at 5 or 15
  np.testing.assert_array_equal(np.asarray(index), np.repeat([0, 1, 2], [9, 10, 3]))


class _Target(NamedTuple):
  x: jax.Array
  t: jax.Array
  episode_return: jax.Array


class TrivialEnv:
  """A contextual bandit with episodes of 10 steps: observe x ~ U(-1, 1), reward -(a - x)^2."""
  observation_size, action_size = 2, 1

  def reset(self, key, schedule=None):
    del schedule
    return _Target(jax.random.uniform(key, (), minval=-1, maxval=1), jnp.zeros((), jnp.int32), jnp.zeros(()))

  def observation(self, state):
    return jnp.stack([state.x, 1.0])

  def step(self, state, action, key, global_step, schedule):
    del global_step
    reward = -(action[0] - state.x) ** 2
    t, ret = state.t + 1, state.episode_return + reward
    done = t >= 10
    fresh = self.reset(key)._replace(t=jnp.where(done, 0, t), episode_return=jnp.where(done, 0.0, ret))
    return fresh, env_lib.Step(reward, done, jnp.zeros((), bool), jnp.where(done, ret, 0.0))


def test_ppo_learns_a_trivial_task():
  env = TrivialEnv()
  network = nets.ActorCritic((16, 16), 1)
  config = config_lib.base_config()
  config.optimizer.update(name='adam', momentum=0.0, eps=1e-8)
  learner = Learner.of(network, functools.partial(ppo.ppo_loss, clip=0.2), ('l2', 'adam'), config=config)
  hparams = dict(learning_rate=3e-3, weight_decay=0.0, b1=0.9, b2=0.999)
  schedule = jnp.ones(1)

  def seed_run(key):
    state = learner.init(key, jnp.zeros((1, 2)), hparams)
    env_state = jax.vmap(env.reset)(jax.random.split(key, 4))
    obs = jax.vmap(env.observation)(env_state)

    def one(carry, u):
      state, env_state, obs = carry
      key_u = jax.random.fold_in(key, u)
      env_state, last, trajectory, (total, count) = ppo.rollout(env, network, state.params, env_state, obs,
                                                                key_u, u * 256, schedule, 64)
      observations, batch = ppo.batch_from(network, state.params, trajectory, last, 0.99, 0.95)
      state, _, _ = ppo.update(learner, state, observations, batch, key_u, 4, 4)
      return (state, env_state, last), total / count

    return jax.lax.scan(one, (state, env_state, obs), jnp.arange(40))[1]

  returns = np.asarray(jax.jit(jax.vmap(seed_run))(jax.random.split(jax.random.PRNGKey(0), 2)))
  first, last = returns[:, :5].mean(), returns[:, -5:].mean()
  assert first < -8 and last > first + 5, (first, last)   # random policy: about -13 per episode


def test_slippery_ant_smoke_through_run_and_exact_resume(tmp_path):
  """The smoke launch (figures included), then a launch stopped after a chunk and resumed, on the
  same built programs (launch/main.py's own path: test_run's SCR launch through main)."""
  config = load_config('slippery_ant', 'smoke,std,cbp')
  built = {}
  run_lib.run(config, str(tmp_path / 'whole'), built=built)
  with open(tmp_path / 'whole' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['variant'] for r in rows} == {'std', 'cbp'}
  value = lambda v, s, m: [float(r['value']) for r in rows if (r['variant'], r['seed'], r['metric']) == (v, s, m)]
  for seed in ('0', '1'):
    frictions = value('std', seed, 'friction')
    assert len(frictions) == 3 and len(set(frictions)) >= 2 and all(0.02 <= f <= 2.0 for f in frictions)
    assert value('cbp', seed, 'friction') == frictions                      # same seed, same schedule
  assert value('std', '0', 'friction') != value('std', '1', 'friction')       # per-seed schedules
  assert sum(value('cbp', '0', 'replacements')) > 0
  assert all(np.isfinite(value('std', '0', 'episode_return')))
  assert os.path.exists(tmp_path / 'whole' / 'figures' / 'episode_return.png')
  width = config.network.hidden[-1]
  np.testing.assert_allclose(value('std', '0', 'stable_rank_percent'),
                             [100 * r / width for r in value('std', '0', 'stable_rank')], rtol=1e-6)
  assert all(0 < p <= 100 for p in value('std', '0', 'stable_rank_percent'))
  assert_resume_is_identical(config, str(tmp_path / 'whole'), str(tmp_path / 'split'), stop_after_chunks=1, built=built)


def test_adam_betas_are_traced_hyperparameters():
  """std (0.9, 0.999) and proper Adam (0.99, 0.99) as points of one vmapped program."""
  from ddl.learners import optimizers  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config()
  cfg.optimizer.update(name='adam', momentum=0.0, eps=1e-8)
  learner = Learner.of(None, 'mse', ('l2', 'adam'), config=cfg)   # the learner's optimizer step
  params = {'w': jnp.array([1.0, -2.0])}
  grads = [{'w': jnp.array([0.5, 1.0])}, {'w': jnp.array([-1.0, 0.2])}, {'w': jnp.array([0.3, 0.3])}]

  def run(b1, b2):
    hparams = dict(learning_rate=0.1, weight_decay=0.0, b1=b1, b2=b2)
    opt = learner.make_optimizer(hparams)
    p, s = params, opt.init(params)
    for g in grads:
      u, s = opt.update(g, s, p)
      p = jax.tree.map(lambda a, b: a + b, p, u)
    return p['w']

  got = jax.jit(jax.vmap(run))(jnp.array([0.9, 0.99]), jnp.array([0.999, 0.99]))
  for i, (b1, b2) in enumerate(((0.9, 0.999), (0.99, 0.99))):
    opt = optimizers.build_chain(('l2', 'adam'), dict(learning_rate=0.1, b1=b1, b2=b2), options=dict(eps=1e-8))
    p, s = params, opt.init(params)
    for g in grads:
      u, s = opt.update(g, s, p)
      p = jax.tree.map(lambda a, b: a + b, p, u)
    np.testing.assert_allclose(got[i], p['w'], rtol=1e-5)
  assert not np.allclose(got[0], got[1])


def test_friction_file_rows_and_bad_settings_are_clear_errors(tmp_path):
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import PPO  # pylint: disable=g-import-not-at-top
  table = np.exp(np.random.default_rng(0).uniform(np.log(0.02), np.log(2), (5, 50)))
  np.save(tmp_path / 'frictions.npy', table)
  config = load_config('slippery_ant', 'smoke,std')
  config.env.friction.kind = 'file'
  config.env.friction.file = str(tmp_path / 'frictions.npy')
  config.seed, config.num_seeds = 1, 3
  np.testing.assert_allclose(PPO.load_data(config)['frictions'], table[1:4], rtol=1e-6)
  config.num_seeds = 5
  with pytest.raises(ValueError, match='rows for seeds 1..5'):
    PPO.load_data(config)
  config = load_config('slippery_ant', 'smoke,std')
  config.env.backend = 'bullet'
  with pytest.raises(config_lib.ConfigError, match="env.backend='bullet' is not known; use one of"):
    config_lib.validate(config, PPO)
