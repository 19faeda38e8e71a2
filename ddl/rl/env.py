"""Ant (Brax) whose ground friction is part of the environment state (lop_reference.md §5.5).

The sliding friction of every geom (contacts use the larger of the two geoms') is written into
the system inside the jitted step from the state, so one compiled program serves every friction
and a friction change is just a new value in the state. Each environment auto-resets on
termination or at the time limit; at the first episode end after `change_every` global steps
since the last change it moves to the next friction of its schedule (the original's SlipperyAnt
rule). A stationary Ant is the same environment with a constant schedule.

Initial states (Brax's reset noise) are drawn `starts` at a time by `refill` (PPO calls it once per
rollout) and used in turn at episode ends: drawing one in every step, as a select needs under
`vmap`, cost 3x the physics. With more episode ends than `starts` between refills they repeat.

The observation is Brax's 27-d Ant observation (no contact forces, which are zero in the
original's MuJoCo 2 setup), the reward forward velocity + 1 - 0.5 |a|^2 on the raw action.
"""
import copy
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

BACKENDS = ('spring', 'positional', 'generalized', 'mjx')


@struct.dataclass
class EnvState:
  brax_state: object           # brax.envs.State of the current episode
  friction_index: jax.Array    # index into the seed's friction schedule, int32
  last_change: jax.Array       # global step of the last friction change, int32
  episode_step: jax.Array      # steps of the current episode, int32
  episode_return: jax.Array    # return of the current episode so far
  starts: object               # (starts,) brax states: initial states for the next episodes
  start_count: jax.Array       # starts used since the last refill, int32


class Step(NamedTuple):
  reward: jax.Array
  done: jax.Array              # episode ended: termination or time limit (no bootstrap, as the original)
  terminated: jax.Array
  finished_return: jax.Array   # return of the episode that ended at this step (0 where none did)


class FrictionAnt:
  """Pure functions over EnvState; the brax environment object holds only static structure."""

  def __init__(self, backend: str = 'spring', episode_length: int = 1000, change_every: int = 2_000_000,
               starts: int = 8):
    if backend not in BACKENDS:
      raise ValueError(f'env.backend={backend!r} is not known; use one of {BACKENDS}.')
    from brax import envs  # pylint: disable=g-import-not-at-top
    self.env = envs.get_environment('ant', backend=backend)
    self.episode_length = episode_length
    self.change_every = change_every
    self.starts = starts
    self.observation_size = 27
    self.action_size = self.env.action_size

  def _env(self, friction: jax.Array):
    """The brax env with `friction` as every geom's sliding friction: a shallow copy that lives only
    while tracing this step (nothing is written to self, so no tracer leaks)."""
    env = copy.copy(self.env)
    sys = self.env.sys
    env.sys = sys.replace(geom_friction=sys.geom_friction.at[:, 0].set(friction))
    return env

  def reset(self, key: chex.PRNGKey, schedule: jax.Array) -> EnvState:
    first_key, starts_key = jax.random.split(key)
    env = self._env(schedule[0])
    zero = jnp.zeros((), jnp.int32)
    return EnvState(brax_state=env.reset(first_key), friction_index=zero, last_change=zero, episode_step=zero,
                    episode_return=jnp.zeros(()), starts=jax.vmap(env.reset)(jax.random.split(starts_key, self.starts)),
                    start_count=zero)

  def refill(self, state: EnvState, key: chex.PRNGKey, schedule: jax.Array) -> EnvState:
    """Fresh initial states for the coming episodes."""
    env = self._env(self.friction(state, schedule))
    return state.replace(starts=jax.vmap(env.reset)(jax.random.split(key, self.starts)),
                         start_count=jnp.zeros((), jnp.int32))

  def friction(self, state: EnvState, schedule: jax.Array) -> jax.Array:
    return schedule[state.friction_index]

  def step(self, state: EnvState, action: jax.Array, key: chex.PRNGKey, global_step: jax.Array,
           schedule: jax.Array):
    """One step; `global_step` counts the seed's steps including this one; `key` is unused (initial
    states come from `starts`). Returns (state, Step)."""
    del key
    brax_state = self._env(self.friction(state, schedule)).step(state.brax_state, action)
    episode_step = state.episode_step + 1
    episode_return = state.episode_return + brax_state.reward
    terminated = brax_state.done > 0
    done = terminated | (episode_step >= self.episode_length)
    change = done & (global_step - state.last_change > self.change_every)
    friction_index = jnp.minimum(state.friction_index + change, schedule.shape[0] - 1)
    last_change = jnp.where(change, global_step, state.last_change)
    start = jax.tree.map(lambda x: x[state.start_count % self.starts], state.starts)
    zero = jnp.zeros((), jnp.int32)
    reward = brax_state.reward
    state = state.replace(
        brax_state=jax.tree.map(lambda a, b: jnp.where(done, a, b), start, brax_state), friction_index=friction_index, last_change=last_change,
        episode_step=jnp.where(done, zero, episode_step), episode_return=jnp.where(done, 0.0, episode_return),
        start_count=state.start_count + done)
    return state, Step(reward, done, terminated, jnp.where(done, episode_return, 0.0))

  def observation(self, state: EnvState) -> jax.Array:
    return state.brax_state.obs


def friction_schedule(key: chex.PRNGKey, length: int, low: float, high: float) -> jax.Array:
  """`length` frictions log-uniform in [low, high] (the original's cfg/frictions rows)."""
  return jnp.exp(jax.random.uniform(key, (length,), minval=jnp.log(low), maxval=jnp.log(high)))
