"""PPO on Ant with a friction schedule (lop_reference.md §5.5): stationary Ant and slippery Ant; the
paper's Ant (gymnasium's ant.xml, `env.model=gymnasium`, the default) or Brax's (`env.model=brax`).

One run = one seed's agent and its environments. One chunk = `updates_per_chunk` PPO updates
(rollout of `ppo.rollout_steps` steps, then epochs x minibatches learner steps) in one `lax.scan`.
Metrics are reduced on the device per chunk: the mean return of the episodes that ended in the
chunk (the figures' bins), weight change per update, current friction. The evaluator (every
`diagnostics.every` chunks) measures the policy's dormant fraction and stable rank over the last
`probe_steps` observations of the last rollout, and mean |W| per layer.
"""
import functools
import importlib.util
import pickle
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl import metrics
from ddl import nets
from ddl.learners import Learner, LearnerState
from ddl.rl import env as env_lib
from ddl.rl import ppo

FRICTIONS = ('constant', 'log_uniform', 'file')


@struct.dataclass
class State:
  learner: LearnerState
  env: env_lib.EnvState     # (E,) environments of this seed
  obs: jax.Array            # (E, obs)
  schedule: jax.Array       # (frictions,) this seed's friction schedule
  key: chex.PRNGKey         # rollout and minibatch randomness, folded by update
  updates: jax.Array        # PPO updates done, int32
  seed: jax.Array           # seed index (row of a friction file)
  probe: jax.Array          # (probe_steps, obs): the last rollout's last observations, for `evaluate`


def env_checks(config):
  """The (condition, message) checks of the Ant env and friction settings (PPO, stream AC)."""
  env = config.env
  return [
      *env_lib.setting_checks(env.backend, env.model, env.get('threads', 1), env.get('model_file', '')),
      (env.model != 'gymnasium' or importlib.util.find_spec('gymnasium') is not None,
       "env.model='gymnasium' reads gymnasium's ant.xml, but gymnasium is not installed: pip install gymnasium "
       '(or set env.model=brax)'),
      (env.friction.kind in FRICTIONS, f'env.friction.kind must be one of {FRICTIONS}'),
      (env.friction.kind != 'file' or bool(env.friction.file), 'env.friction.file is needed with kind=file'),
      (0 < env.friction.low <= env.friction.high, 'env.friction.low, high must satisfy 0 < low <= high'),
      (env.friction.value > 0 and env.friction.num > 0, 'env.friction.value and num must be > 0'),
      (env.starts > 0, 'env.starts must be > 0'),
      (config.get('figure_band', 'se') in ('se', 'bootstrap95'), "figure_band must be 'se' or 'bootstrap95'"),
  ]


def friction_schedule(config, key) -> jax.Array:
  """A seed's frictions; a file's row replaces them in every chunk (init sees no data)."""
  friction = config.env.friction
  if friction.kind == 'constant':
    return jnp.full((1,), friction.value, jnp.float32)
  return env_lib.friction_schedule(key, friction.num, friction.low, friction.high)


def policy_diagnostics(network, params, probe: jax.Array) -> Dict[str, jax.Array]:
  """The paper's diagnostics of an actor-critic's policy network on probe observations: dormant
  units (active in at most 1 % of them), stable rank (also as % of the width, the paper's figure),
  weight magnitude (all parameters, and per kernel of each network), and the fraction of active units."""
  _, features = network.apply({'params': params}, probe)
  policy = [h for name, h in features.items() if name.startswith('policy/')]
  stable_rank = metrics.stable_rank(policy[-1]).astype(jnp.float32)
  values = {
      'dormant_fraction': metrics.dormant_fraction_all(policy, threshold=0.01, strict=False),
      'active_fraction': metrics.active_fraction(policy),
      'stable_rank': stable_rank,
      'stable_rank_percent': 100.0 * stable_rank / policy[-1].shape[-1],   # the paper's % of 256
      'weight_magnitude': metrics.weight_magnitude(params),
  }
  for net in ('policy', 'value'):
    layers = [layer for layer in sorted(params[net]) if 'kernel' in params[net][layer]]
    for i, layer in enumerate(layers):
      values[f'weight_magnitude_{net}_{i}'] = jnp.abs(params[net][layer]['kernel']).mean()
  return values


class PPO:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""
  objective = 'actor_critic'   # a policy and a value trained together: no single prediction (methods check it)

  def __init__(self, config, group):
    self.config = config
    self.env = env_lib.from_config(config.env)
    self.network = self.make_network(config, self.env.action_size)
    objective = functools.partial(ppo.ppo_loss, clip=config.ppo.clip, value_coef=config.ppo.value_coef)
    self.steps_per_update = config.ppo.rollout_steps
    self.examples_per_chunk = config.updates_per_chunk * self.steps_per_update
    self.num_chunks = -(-config.total_steps // self.examples_per_chunk)
    self.learner = Learner.from_config(self.network, objective, config, group, self.num_chunks)
    self.diagnostics_every = config.diagnostics.every

  @staticmethod
  def make_network(config, actions: int = 8):   # Ant: 8 joints
    return nets.build(nets.ActorCritic, config.network, hidden=tuple(config.network.hidden), actions=actions)

  @staticmethod
  def checks(config):
    p, env = config.ppo, config.env
    return [
        *env_checks(config),
        (env.num_envs > 0 and p.rollout_steps % env.num_envs == 0, 'env.num_envs must divide ppo.rollout_steps'),
        (p.minibatches > 0 and p.rollout_steps % p.minibatches == 0, 'ppo.minibatches must divide ppo.rollout_steps'),
        (p.epochs > 0 and config.updates_per_chunk > 0 and config.total_steps > 0,
         'ppo.epochs, updates_per_chunk and total_steps must be > 0'),
        (0 < config.probe_steps <= p.rollout_steps, 'probe_steps must be in [1, ppo.rollout_steps]'),
    ]

  @staticmethod
  def load_data(config):
    """None, or {'frictions': (num_seeds, frictions)} rows config.seed.. of a schedule file (.npy, or the
    original's pickled array)."""
    friction = config.env.friction
    if friction.kind != 'file':
      return None
    path = friction.file
    try:
      if path.endswith('.npy'):
        table = np.load(path)
      else:
        with open(path, 'rb') as f:
          table = np.asarray(pickle.load(f))
    except OSError as e:
      raise FileNotFoundError(f'env.friction.file={path}: cannot read it ({e.strerror}).') from None
    rows = table[config.seed:config.seed + config.num_seeds]
    if table.ndim != 2 or rows.shape[0] < config.num_seeds or table.shape[1] != friction.num:
      raise ValueError(f'env.friction.file={path}: needs a (seeds, env.friction.num={friction.num}) table with rows '
                       f'for seeds {config.seed}..{config.seed + config.num_seeds - 1}; it has shape {table.shape}.')
    return {'frictions': rows.astype(np.float32)}

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: environment steps per seed at its start."""
    return chunk * self.examples_per_chunk

  def _schedule(self, key) -> jax.Array:
    return friction_schedule(self.config, key)

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    learner_key, env_key, schedule_key, run_key = jax.random.split(key, 4)
    num_envs = self.config.env.num_envs
    learner = self.learner.init(learner_key, jnp.zeros((1, self.env.observation_size)), hparams)
    schedule = self._schedule(schedule_key)
    env_state = jax.vmap(self.env.reset, (0, None))(jax.random.split(env_key, num_envs), schedule)
    return State(learner=learner, env=env_state, obs=jax.vmap(self.env.observation)(env_state),
                 schedule=schedule, key=run_key, updates=jnp.zeros((), jnp.int32),
                 seed=jnp.asarray(seed, jnp.int32),
                 probe=jnp.zeros((self.config.probe_steps, self.env.observation_size)))

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    config, p = self.config, self.config.ppo
    num_envs = config.env.num_envs
    steps = p.rollout_steps // num_envs
    if data is not None and 'frictions' in data:
      state = state.replace(schedule=data['frictions'][state.seed])
    network = self.network
    chunk = state.updates // config.updates_per_chunk
    state = state.replace(learner=self.learner.boundary(
        state.learner, chunk, jax.random.fold_in(state.key, -1 - chunk), state.obs[:1]))

    def one_update(carry, _):
      state, sums = carry
      key = jax.random.fold_in(state.key, state.updates)
      rollout_key, update_key = jax.random.split(key)
      params = state.learner.params
      acting = self.learner.network_params(state.learner)
      env_state, obs, trajectory, (return_sum, episodes) = ppo.rollout(
          self.env, network, acting, state.env, state.obs, rollout_key, state.updates * p.rollout_steps,
          state.schedule, steps)
      observations, batch = ppo.batch_from(network, acting, trajectory, obs, p.gamma, p.lam,
                                           p.normalise_advantages)
      learner, loss, replaced = ppo.update(self.learner, state.learner, observations, batch, update_key,
                                           p.epochs, p.minibatches, config.scan_unroll)
      change = sum(jnp.abs(learner.params['policy'][layer]['kernel'] - params['policy'][layer]['kernel']).sum()
                   for layer in params['policy'] if 'kernel' in params['policy'][layer])
      probe = trajectory.observations.reshape(-1, obs.shape[-1])[-config.probe_steps:]
      sums = dict(return_sum=sums['return_sum'] + return_sum, episodes=sums['episodes'] + episodes,
                  loss=sums['loss'] + loss, replaced=sums['replaced'] + replaced,
                  weight_change=sums['weight_change'] + change, probe=probe)
      state = state.replace(learner=learner, env=env_state, obs=obs, updates=state.updates + 1)
      return (state, sums), None

    zeros = dict(return_sum=jnp.zeros(()), episodes=jnp.zeros((), jnp.int32), loss=jnp.zeros(()),
                 replaced=jnp.zeros((), jnp.int32), weight_change=jnp.zeros(()),
                 probe=jnp.zeros((config.probe_steps, self.env.observation_size)))
    (state, sums), _ = jax.lax.scan(one_update, (state, zeros), None, length=config.updates_per_chunk)
    count = sums['episodes']
    values = {
        'episode_return': jnp.where(count > 0, sums['return_sum'] / jnp.maximum(count, 1), jnp.nan),
        'episodes': count.astype(jnp.float32),
        'ppo_loss': sums['loss'] / config.updates_per_chunk,
        'weight_change': sums['weight_change'] / config.updates_per_chunk,
        'friction': self.env.friction(jax.tree.map(lambda x: x[0], state.env), state.schedule),
    }
    if self.learner.replaces_units:
      values['replacements'] = sums['replaced'].astype(jnp.float32)
    return state.replace(probe=sums['probe']), values

  def evaluate(self, state: State, data=None) -> Dict[str, jax.Array]:
    """The paper's diagnostics of the policy network on the last rollout's last `probe_steps`
    observations: dormant units (active in at most 1 % of steps), stable rank (also as % of the
    width, the paper's figure), weight magnitude per layer, and the fraction of active units; and
    what the program's methods report (`Learner.diagnostics`)."""
    del data
    values = policy_diagnostics(self.network, self.learner.network_params(state.learner), state.probe)
    return {**values, **self.learner.diagnostics(state.learner)}
