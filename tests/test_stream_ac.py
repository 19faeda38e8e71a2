"""Stream AC(lambda) with ObGD: ObGD against a numpy loop of the official equations (episode end, a
step with M > 1, per-network kappa), vmapped over seeds; the sparse init's exact zero count per unit;
the wrappers' statistics against numpy loops of upstream's code; learning on a toy continuous task;
and the slippery stream-Ant smoke (stream, cbp and tidbd in one program) run through ddl.run.run with
exact resume."""
import csv
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from conftest import assert_resume_is_identical, load_config
from ddl import config as config_lib
from ddl import nets
from ddl.learners import Learner
from ddl.learners import obgd as obgd_lib
from ddl.learners import optimizers
from ddl.rl import env as env_lib
from ddl.rl import stream_ac


def _numpy_obgd(params, grads, deltas, dones, alpha, gamma, lam, kappas):
  """Upstream's ObGD.step per network (a dict entry), in float64: trace, ONE L1 norm per network,
  step alpha / M when M > 1, update with the trace, then the reset. Returns (params, step sizes)."""
  params = {k: {n: np.array(v, np.float64) for n, v in net.items()} for k, net in params.items()}
  traces = {k: {n: np.zeros_like(v) for n, v in net.items()} for k, net in params.items()}
  sizes = []
  for g, delta, done in zip(grads, deltas, dones):
    step = {}
    for k in params:
      z_sum = 0.0
      for n in params[k]:
        traces[k][n] = gamma * lam * traces[k][n] + g[k][n]
        z_sum += np.abs(traces[k][n]).sum()
      dot = max(abs(delta), 1.0) * z_sum * alpha * kappas[k]
      step[k] = alpha / dot if dot > 1 else alpha
      for n in params[k]:
        params[k][n] -= step[k] * delta * traces[k][n]
        if done:
          traces[k][n][:] = 0.0
    sizes.append(step)
  return params, sizes


def _problem(seed=0, steps=6):
  rng = np.random.default_rng(seed)
  params = {'policy': {'w': rng.normal(size=(3, 2)), 'b': rng.normal(size=2)}, 'value': {'w': rng.normal(size=4)}}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape) * 0.05, params) for _ in range(steps)]
  grads[3] = jax.tree.map(lambda g: g * 40, grads[3])      # a large gradient: M > 1 there
  deltas = [0.3, -0.7, 2.5, 0.1, -1.5, 0.4][:steps]
  dones = [False, True, False, False, True, False][:steps]
  return params, grads, deltas, dones


def _run_obgd(opt, params, grads, deltas, dones):
  params = jax.tree.map(jnp.asarray, params)
  state = opt.init(params)
  for g, delta, done in zip(grads, deltas, dones):
    updates, state = opt.update(jax.tree.map(jnp.asarray, g), state, params, td_error=delta, done=done,
                                key=jax.random.PRNGKey(0), loss=0.0)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  return params, state


def test_obgd_matches_the_official_equations():
  params, grads, deltas, dones = _problem()
  kappas = {'policy': 3.0, 'value': 2.0}
  want, sizes = _numpy_obgd(params, grads, deltas, dones, 1.0, 0.99, 0.8, kappas)
  assert any(s['policy'] < 1.0 for s in sizes) and any(s['value'] == 1.0 for s in sizes)   # bound on and off
  opt = obgd_lib.obgd(1.0, 0.99, 0.8, kappa=2.0, kappa_policy=3.0, per_network=True)
  got, state = _run_obgd(opt, params, grads, deltas, dones)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
  # step 4 ended an episode: the trace after step 5 is step 5's gradient alone; without that end,
  # z <- gamma lambda z + g from the end at step 1 on
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), state.trace, grads[5])
  _, state = _run_obgd(opt, params, grads, deltas, dones[:4] + [False, False])
  z = jax.tree.map(lambda *g: sum(0.792 ** (3 - i) * np.asarray(x) for i, x in enumerate(g)), *grads[2:])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), state.trace, z)
  # one network (no per_network): one norm over every parameter with kappa
  want, _ = _numpy_obgd({'all': {f'{k}/{n}': v for k, net in params.items() for n, v in net.items()}},
                        [{'all': {f'{k}/{n}': v for k, net in g.items() for n, v in net.items()}} for g in grads],
                        deltas, dones, 0.5, 0.9, 0.5, {'all': 2.0})
  got, _ = _run_obgd(obgd_lib.obgd(0.5, 0.9, 0.5, kappa=2.0), params, grads, deltas, dones)
  for k, net in got.items():
    for n, v in net.items():
      np.testing.assert_allclose(v, want['all'][f'{k}/{n}'], rtol=1e-5, atol=1e-6)


def test_obgd_from_config_vmaps_over_seeds_and_needs_its_arguments():
  """Through optimizers.build_chain (the learner's composition: coupled L2, then ObGD), the seeds
  vmapped: each its own step."""
  hparams = dict(learning_rate=1.0, weight_decay=0.0, discount=0.99, trace_lambda=0.8,
                 kappa=2.0, kappa_policy=3.0)
  problems = [_problem(seed) for seed in range(3)]
  stack = lambda trees: jax.tree.map(lambda *x: jnp.stack([jnp.asarray(a) for a in x]), *trees)

  def run(params, grads, deltas, dones):
    opt = optimizers.build_chain(('l2', 'obgd'), hparams, options=dict(per_network=True))
    state = opt.init(params)
    for t in range(len(deltas)):
      updates, state = opt.update(jax.tree.map(lambda g: g[t], grads), state, params, td_error=deltas[t],
                                  done=dones[t], key=jax.random.PRNGKey(0), loss=0.0)
      params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params

  got = jax.jit(jax.vmap(run))(stack([p for p, _, _, _ in problems]),
                               stack([stack(g) for _, g, _, _ in problems]),
                               jnp.asarray([d for _, _, d, _ in problems], jnp.float32),
                               jnp.asarray([d for _, _, _, d in problems]))
  for i, (params, grads, deltas, dones) in enumerate(problems):
    want, _ = _numpy_obgd(params, grads, deltas, dones, 1.0, 0.99, 0.8, {'policy': 3.0, 'value': 2.0})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), got, want)
  with pytest.raises(ValueError, match='td_error and done'):
    obgd_lib.obgd().update({'w': jnp.ones(2)}, obgd_lib.obgd().init({'w': jnp.ones(2)}))


@pytest.mark.parametrize('shape', [(28, 128), (128, 16), (10, 7), (3, 3, 4, 5)])
def test_sparse_init_zeroes_exactly_ceil_of_90_percent_per_unit(shape):
  w = nets.sparse_uniform(0.9)(jax.random.PRNGKey(1), shape)
  fan_in = math.prod(shape[:-1])
  zeros = (np.asarray(w).reshape(fan_in, shape[-1]) == 0).sum(axis=0)
  np.testing.assert_array_equal(zeros, math.ceil(0.9 * fan_in))
  assert np.abs(w).max() <= 1 / math.sqrt(fan_in)
  nonzero = np.asarray(w)[np.asarray(w) != 0]
  assert nonzero.std() > 0.3 / math.sqrt(fan_in)          # uniform on +-1/sqrt(fan_in): std 0.577/sqrt(fan_in)
  # every layer of the network, biases zero; different units get different zero patterns
  net = nets.StreamActorCritic((32, 32), 3)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 10)))['params']
  for name, layer in [(f'{n}/{l}', p) for n, layers in params.items() for l, p in layers.items()]:
    k = np.asarray(layer['kernel'])
    np.testing.assert_array_equal((k == 0).sum(axis=0), math.ceil(0.9 * k.shape[0]), err_msg=name)
    np.testing.assert_array_equal(layer['bias'], 0)
  k = np.asarray(params['value']['hidden_1']['kernel'])
  assert len({tuple(np.flatnonzero(k[:, j] == 0)) for j in range(k.shape[1])}) > 1


class _SampleMeanStd:
  """Upstream's normalization_wrappers.SampleMeanStd, verbatim in numpy float64."""

  def __init__(self, shape=()):
    self.mean, self.var, self.p, self.count = np.zeros(shape), np.ones(shape), np.ones(shape), 0

  def update(self, x):
    if self.count == 0:
      self.mean = x
      self.p = np.zeros_like(x)
    new_count = self.count + 1
    new_mean = self.mean + (x - self.mean) / new_count
    self.p = self.p + (x - self.mean) * (x - new_mean)
    self.var = 1 if new_count < 2 else self.p / (new_count - 1)
    self.mean, self.count = new_mean, new_count


def test_observation_and_reward_statistics_match_upstream():
  rng = np.random.default_rng(0)
  obs = rng.normal(3.0, 2.0, size=(300, 5)) * np.array([1, 10, 0.1, 1, 1])
  reference, stats = _SampleMeanStd((5,)), stream_ac.RunningStats.zeros((5,))
  for t, x in enumerate(obs):
    reference.update(x)
    stats, normalised = stream_ac.normalise_observation(stats, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(normalised, (x - reference.mean) / np.sqrt(reference.var + 1e-8), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats.var, obs.var(axis=0, ddof=1), rtol=1e-4)
  np.testing.assert_allclose(stats.mean, obs.mean(axis=0), rtol=1e-5)
  assert float(normalise_first(obs[0])) == 0.0
  # ScaleReward: the discounted return trace, reset by an episode end, its running std
  rewards, dones = rng.normal(1.0, 3.0, 300), rng.uniform(size=300) < 0.05
  reference, stats, trace, numpy_trace = _SampleMeanStd(), stream_ac.RunningStats.zeros(), jnp.zeros(()), 0.0
  for r, d in zip(rewards, dones):
    numpy_trace = numpy_trace * 0.99 * (1 - d) + r
    reference.update(numpy_trace)
    stats, trace, scaled = stream_ac.scale_reward(stats, trace, jnp.float32(r), jnp.asarray(d), 0.99)
    np.testing.assert_allclose(scaled, r / np.sqrt(reference.var + 1e-8), rtol=1e-4)
  # the time feature: -0.5 at a reset and after the first step, then +1/T per step
  np.testing.assert_allclose(stream_ac.time_feature(jnp.arange(4), 1000), [-0.5, -0.5, -0.499, -0.498], rtol=1e-6)


def normalise_first(x):
  return stream_ac.normalise_observation(stream_ac.RunningStats.zeros(x.shape), jnp.asarray(x, jnp.float32))[1].max()


@struct.dataclass
class _PointState:
  x: jax.Array
  episode_step: jax.Array
  episode_return: jax.Array
  key: jax.Array


class _Target1D:
  """A toy continuous task in JAX with the Ant env's interface (`ddl.rl.env.FrictionAnt`): a point on
  a line, action = velocity (clipped to [-1, 1], x moves by a / 4), reward -|x - 1| per step, 20-step
  episodes from x ~ U(-1, 1). The initial policy gets about -33 per episode, moving to x = 1 and
  staying there about -4 (what 6000 steps reach: -4.3 over 2 seeds)."""
  observation_size = 1
  action_size = 1
  episode_length = 20

  def reset(self, key):
    zero = jnp.zeros((), jnp.int32)
    return _PointState(jax.random.uniform(key, (), minval=-1, maxval=1), zero, jnp.zeros(()), key)

  def step(self, state, action, key, global_step, schedule):
    del key, global_step, schedule
    x = state.x + 0.25 * action[0]
    reward = -jnp.abs(x - 1.0)
    episode_step = state.episode_step + 1
    episode_return = state.episode_return + reward
    done = episode_step >= self.episode_length
    key = jax.random.fold_in(state.key, 1)
    state = _PointState(jnp.where(done, jax.random.uniform(key, (), minval=-1, maxval=1), x),
                        jnp.where(done, 0, episode_step), jnp.where(done, 0.0, episode_return), key)
    return state, env_lib.Step(reward, done, jnp.zeros((), bool), jnp.where(done, episode_return, 0.0))

  def observation(self, state):
    return state.x[None]


def test_stream_ac_learns_a_toy_continuous_task():
  """Ant is too slow to show learning in a unit test: the same agent (network, ObGD, wrappers,
  `stream_ac.step`) on a 1-D reaching task; the return rises well above a random policy's."""
  env = _Target1D()
  network = nets.StreamActorCritic((32, 32), 1)
  config = config_lib.base_config()
  config.optimizer.name = 'obgd'
  config.obgd.per_network = True
  learner = Learner.of(network, functools.partial(stream_ac.objective, entropy_coef=0.01), ('l2', 'obgd'),
                       config=config)
  hparams = dict(learning_rate=1.0, discount=0.99, trace_lambda=0.8, kappa=2.0, kappa_policy=3.0)

  def seed_run(key):
    state = learner.init(key, jnp.zeros((1, 2)), hparams)
    env_state = env.reset(key)
    agent = stream_ac.reset(env, env_state, env.episode_length)

    def one(carry, t):
      state, agent, env_state = carry
      state, agent, env_state, info = stream_ac.step(learner, state, agent, env, env_state, jax.random.fold_in(key, t),
                                                     t + 1, jnp.ones(1), env.episode_length)
      return (state, agent, env_state), info.finished_return

    _, finished = jax.lax.scan(one, (state, agent, env_state), jnp.arange(6000))
    return finished.reshape(-1, env.episode_length)[:, -1]    # one episode per 20 steps

  returns = np.asarray(jax.jit(jax.vmap(seed_run))(jax.random.split(jax.random.PRNGKey(0), 2)))
  first, last = returns[:, :20].mean(), returns[:, -50:].mean()
  assert first < -12 and last > -8, (first, last)


def test_slippery_stream_ant_smoke_through_run_and_exact_resume(tmp_path):
  config = load_config('slippery_stream_ant', 'smoke')
  # the smoke at half its chunks (500 steps, the friction changing as often): this test runs 6 chunks,
  # one env step at a time, and the tests' XLA flags (conftest) make execution dominate it
  config.total_steps, config.steps_per_chunk, config.env.friction.change_every = 1500, 500, 500
  assert_resume_is_identical(config, str(tmp_path / 'whole'), str(tmp_path / 'split'), stop_after_chunks=1, run_whole=True)
  with open(tmp_path / 'whole' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['variant'] for r in rows} == {'stream', 'cbp', 'tidbd'}
  value = lambda v, s, m: [float(r['value']) for r in rows if (r['variant'], r['seed'], r['metric']) == (v, s, m)]
  # one program (the smoke's `one_program`): stream and cbp at meta step size 0 keep alpha = 1 for
  # every critic weight; tidbd's step sizes move apart
  assert value('stream', '0', 'step_size_value') == [1.0] * 3
  assert value('cbp', '1', 'step_size_spread_value') == [0.0] * 3
  assert all(s > 0 for seed in ('0', '1') for s in value('tidbd', seed, 'step_size_spread_value'))
  assert all(np.isfinite(value('tidbd', '0', 'episode_return')))
  for seed in ('0', '1'):
    frictions = value('stream', seed, 'friction')
    assert len(frictions) == 3 and len(set(frictions)) >= 2
    assert value('cbp', seed, 'friction') == frictions
    assert all(np.isfinite(value('stream', seed, 'episode_return')))
    assert all(0 <= d <= 1 for d in value('stream', seed, 'dormant_fraction'))
  assert sum(value('cbp', '0', 'replacements')) > 0
  assert value('stream', '0', 'episode_return') != value('cbp', '0', 'episode_return')


def test_obgd_is_validated_and_refused_where_it_cannot_run():
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import PPO, StreamAC  # pylint: disable=g-import-not-at-top
  config = load_config('stream_ant', 'smoke')
  config_lib.validate(config, StreamAC)
  config.hparams.trace_lambda = 1.5
  with pytest.raises(config_lib.ConfigError, match='hparams.trace_lambda: must be >= 0 and <= 1'):
    config_lib.validate(config, StreamAC)
  config = load_config('stream_ant', 'smoke')
  with config.obgd.unlocked():
    del config.obgd['per_network']
    config.obgd.per_network = 'yes'
  with pytest.raises(config_lib.ConfigError, match='obgd.per_network'):
    config_lib.validate(config, StreamAC)
  config = load_config('stream_ant', 'stream')   # (the smoke's obgd.step_sizes='tidbd' refuses adam first)
  config.optimizer.name = 'adam'
  with pytest.raises(config_lib.ConfigError, match=r"variant\(s\) stream: optimizer.name=adam: experiment stream_ac "
                                                   r"steps its optimizer with td_error, done, which adam does not "
                                                   r"take; use one of \('obgd',\)"):
    config_lib.validate(config, StreamAC)
  config = load_config('ant', 'smoke')
  config.optimizer.name = 'obgd'
  with pytest.raises(config_lib.ConfigError, match='obgd .* does not apply to experiment ppo: its update needs '
                                                   'td_error, done in every step, which this experiment does not give'):
    config_lib.validate(config, PPO)
