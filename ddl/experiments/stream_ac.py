"""Stream AC(lambda) with ObGD (Elsayed, Vasan & Mahmood 2024) on Brax Ant with a friction schedule:
the same stationary and slippery Ant as the PPO experiment (`ddl.experiments.ppo`, `ddl.rl.env`).

One run = one seed's agent and its ONE environment; one learner step per environment step
(`ddl.rl.stream_ac.step`). A chunk is `steps_per_chunk` steps: an outer `lax.scan` over blocks of
`env.refill_every` steps (each block draws the env's `starts` fresh initial states, as PPO does
per rollout) around an inner `lax.scan` over the block's steps. Variants: stream AC, stream AC
+ CBP (the learner's reset transform on both networks after every ObGD step, with that step's
activations, exactly as for PPO's minibatch steps), and stream AC with the critic's per-weight step
sizes meta-learned by TIDBD inside ObGD's bound (obgd.step_sizes='tidbd', `ddl.learners.obgd`).

Metrics per chunk, reduced on the device: the mean raw return of the episodes that ended in the
chunk (the figures' bins), episodes, mean |TD error| (on scaled rewards), weight change of the
policy's kernels per step (sum |dW|), the current friction, CBP replacements. The evaluator (every
`diagnostics.every` chunks) is PPO's: the policy's dormant fraction, stable rank and weight
magnitudes, on the last `probe_steps` observations the agent acted on; with per-weight step sizes
(obgd.step_sizes='tidbd', the variant tidbd) also the mean and spread of the critic's.
"""
import functools
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from ddl import nets
from ddl.experiments import evaluation
from ddl.experiments import ppo as ppo_experiment
from ddl.learners import Learner, LearnerState
from ddl.rl import env as env_lib
from ddl.rl import stream_ac


@struct.dataclass
class State:
  learner: LearnerState
  env: env_lib.EnvState          # this seed's one environment
  agent: stream_ac.AgentState    # current observation, the wrappers' statistics
  schedule: jax.Array            # (frictions,) this seed's friction schedule
  key: chex.PRNGKey              # acting, CBP and refill randomness, folded by step
  steps: jax.Array               # environment steps done, int32
  seed: jax.Array                # seed index (row of a friction file)
  probe: jax.Array               # (probe_steps, obs + 1): the last observations acted on (a ring), for `evaluate`


class StreamAC:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""

  objective = 'actor_critic'   # a policy and a value trained together: no single prediction (methods check it)
  step_args = ('td_error', 'done')   # what it gives its optimizer in every step (ddl.config checks it takes them)

  def __init__(self, config, group):
    self.config = config
    self.env = env_lib.from_config(config.env)
    self.network = self.make_network(config, self.env.action_size)
    objective = functools.partial(stream_ac.objective, entropy_coef=config.stream.entropy_coef)
    self.examples_per_chunk = config.steps_per_chunk
    self.num_chunks = -(-config.total_steps // self.examples_per_chunk)
    self.learner = Learner.from_config(self.network, objective, config, group, self.num_chunks)
    self.diagnostics_every = config.diagnostics.every
    self.observation_size = self.env.observation_size + 1   # the time feature

  @staticmethod
  def make_network(config, actions: int = 8):   # Ant: 8 joints
    n = config.network
    return nets.build(nets.StreamActorCritic, n, hidden=tuple(n.hidden), actions=actions)

  @staticmethod
  def checks(config):
    env = config.env
    return [
        *ppo_experiment.env_checks(config),
        (env.refill_every > 0 and config.steps_per_chunk % env.refill_every == 0,
         'env.refill_every must divide steps_per_chunk'),
        (config.steps_per_chunk > 0 and config.total_steps > 0, 'steps_per_chunk and total_steps must be > 0'),
        (0 < config.probe_steps <= config.steps_per_chunk, 'probe_steps must be in [1, steps_per_chunk]'),
        (config.stream.entropy_coef >= 0, 'stream.entropy_coef must be >= 0'),
    ]

  load_data = staticmethod(ppo_experiment.PPO.load_data)

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: environment steps per seed at its start."""
    return chunk * self.examples_per_chunk

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    learner_key, env_key, schedule_key, run_key = jax.random.split(key, 4)
    learner = self.learner.init(learner_key, jnp.zeros((1, self.observation_size)), hparams)
    schedule = ppo_experiment.friction_schedule(self.config, schedule_key)
    env_state = self.env.reset(env_key, schedule)
    return State(learner=learner, env=env_state, agent=stream_ac.reset(self.env, env_state, self.config.env.episode_length),
                 schedule=schedule, key=run_key, steps=jnp.zeros((), jnp.int32), seed=jnp.asarray(seed, jnp.int32),
                 probe=jnp.zeros((self.config.probe_steps, self.observation_size)))

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    config = self.config
    if data is not None and 'frictions' in data:
      state = state.replace(schedule=data['frictions'][state.seed])
    chunk = state.steps // config.steps_per_chunk
    state = state.replace(learner=self.learner.boundary(
        state.learner, chunk, jax.random.fold_in(state.key, -1 - chunk), state.agent.obs[None]))
    probe_steps = config.probe_steps

    def one_step(carry, _):
      state, sums = carry
      key = jax.random.fold_in(state.key, state.steps)
      before = state.learner.params['policy']
      learner, agent, env_state, info = stream_ac.step(
          self.learner, state.learner, state.agent, self.env, state.env, key, state.steps + 1, state.schedule,
          config.env.episode_length)
      change = sum(jnp.abs(learner.params['policy'][layer]['kernel'] - before[layer]['kernel']).sum()
                   for layer in before if 'kernel' in before[layer])
      probe = jax.lax.dynamic_update_slice_in_dim(state.probe, state.agent.obs[None], state.steps % probe_steps, 0)
      sums = dict(return_sum=sums['return_sum'] + info.finished_return, episodes=sums['episodes'] + info.done,
                  td_error=sums['td_error'] + jnp.abs(info.td_error), weight_change=sums['weight_change'] + change,
                  replaced=sums['replaced'] + info.num_replaced)
      state = state.replace(learner=learner, agent=agent, env=env_state, steps=state.steps + 1, probe=probe)
      return (state, sums), None

    def block(carry, _):
      state, sums = carry
      refill_key = jax.random.fold_in(jax.random.fold_in(state.key, state.steps), 1)
      state = state.replace(env=self.env.refill(state.env, refill_key, state.schedule))
      carry, _ = jax.lax.scan(one_step, (state, sums), None, length=config.env.refill_every,
                              unroll=config.scan_unroll)
      return carry, None

    zeros = dict(return_sum=jnp.zeros(()), episodes=jnp.zeros((), jnp.int32), td_error=jnp.zeros(()),
                 weight_change=jnp.zeros(()), replaced=jnp.zeros((), jnp.int32))
    (state, sums), _ = jax.lax.scan(block, (state, zeros), None, length=config.steps_per_chunk // config.env.refill_every)
    count, steps = sums['episodes'], config.steps_per_chunk
    values = {
        'episode_return': jnp.where(count > 0, sums['return_sum'] / jnp.maximum(count, 1), jnp.nan),
        'episodes': count.astype(jnp.float32),
        'td_error': sums['td_error'] / steps,
        'weight_change': sums['weight_change'] / steps,
        'friction': self.env.friction(state.env, state.schedule),
    }
    if self.learner.replaces_units:
      values['replacements'] = sums['replaced'].astype(jnp.float32)
    return state, values

  def evaluate(self, state: State, data=None) -> Dict[str, jax.Array]:
    """PPO's diagnostics of the policy network (`ddl.experiments.ppo.policy_diagnostics`) on the last
    `probe_steps` observations acted on; with obgd.step_sizes='tidbd' also the critic's learned step
    sizes (mean and spread over its weights, `evaluation.step_size_values`), and what the program's
    methods report (`Learner.diagnostics`)."""
    del data
    values = ppo_experiment.policy_diagnostics(self.network, self.learner.network_params(state.learner), state.probe)
    values.update(evaluation.step_size_values(self.learner, state.learner))
    values.update(self.learner.diagnostics(state.learner))
    return values
