"""PPO as the original's `lop/rl` agent (lop_reference.md §5.5), as pure functions.

`rollout` acts for `steps` steps in each of a seed's environments (one, as the original, by
default) inside a `lax.scan`; `advantages` computes values, old log-probabilities and GAE for the
whole batch at once with the pre-update networks; `update` runs `epochs` x `minibatches` learner
steps (`ddl.learners.Learner.step` with `ppo_loss` as its objective: optimizer, then the reset
transform of the variant on both networks with that minibatch's activations).
"""
import functools
from typing import NamedTuple, Tuple

import chex
import jax
import jax.numpy as jnp

from ddl.learners import Learner, LearnerState


class Batch(NamedTuple):
  """What the PPO loss needs besides the observations (the learner's 'target')."""
  actions: jax.Array
  log_probs: jax.Array     # log pi_old(a|s)
  advantages: jax.Array
  returns: jax.Array       # value targets A + V_old (before advantage normalisation)


class Trajectory(NamedTuple):
  observations: jax.Array  # (T, E, obs)
  actions: jax.Array       # (T, E, act)
  rewards: jax.Array       # (T, E)
  dones: jax.Array         # (T, E) termination or time limit


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
  """log N(action; mean, exp(log_std)^2), summed over action dimensions."""
  z = (action - mean) * jnp.exp(-log_std)
  return jnp.sum(-0.5 * z ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, gamma: float, lam: float
        ) -> Tuple[jax.Array, jax.Array]:
  """Generalised advantage estimation over the leading (time) axis.

  rewards, dones: (T, ...); values: (T + 1, ...), V(s_0) .. V(s_T). A done step neither
  bootstraps nor propagates: delta_t = r_t + gamma (1 - d_t) V(s_{t+1}) - V(s_t),
  A_t = delta_t + gamma lam (1 - d_t) A_{t+1}. Returns (advantages, value targets A + V)."""
  not_done = 1.0 - dones.astype(values.dtype)
  deltas = rewards + gamma * not_done * values[1:] - values[:-1]

  def body(next_advantage, x):
    delta, nd = x
    advantage = delta + gamma * lam * nd * next_advantage
    return advantage, advantage

  _, advantages = jax.lax.scan(body, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True)
  return advantages, advantages + values[:-1]


def normalise(advantages: jax.Array) -> jax.Array:
  """(A - mean) / unbiased std, or A - mean when the std is 0 (the original's scaling)."""
  centred = advantages - advantages.mean()
  std = jnp.std(advantages, ddof=1)
  return jnp.where(std > 0, centred / jnp.where(std > 0, std, 1.0), centred)


def ppo_loss(output, batch: Batch, clip: float = 0.2, value_coef: float = 1.0) -> jax.Array:
  """Clipped surrogate + value_coef x squared value error; no entropy bonus, no value clipping.
  output: (action mean, log_std, value) of the ActorCritic network."""
  mean, log_std, value = output
  ratio = jnp.exp(gaussian_log_prob(mean, log_std, batch.actions) - batch.log_probs)
  surrogate = jnp.maximum(-ratio * batch.advantages, -jnp.clip(ratio, 1 - clip, 1 + clip) * batch.advantages)
  return surrogate.mean() + value_coef * jnp.mean((batch.returns - value) ** 2)


def rollout(env, network, params, env_state, obs: jax.Array, key: chex.PRNGKey, first_step: jax.Array,
            schedule: jax.Array, steps: int):
  """Acts `steps` times in each of the E environments (leading axis of env_state and obs).
  Global step of env i at time t: first_step + t * E + i + 1. Returns (env_state, last obs,
  Trajectory, (sum of returns of episodes that ended, number of episodes that ended))."""
  num_envs = obs.shape[0]
  log_std = params['log_std']
  step_fn = jax.vmap(env.step, in_axes=(0, 0, 0, 0, None))
  if hasattr(env, 'refill'):   # fresh initial states for this rollout's episodes
    env_state = jax.vmap(env.refill, (0, 0, None))(env_state, jax.random.split(key, num_envs), schedule)

  def body(carry, t):
    env_state, obs, return_sum, episodes = carry
    act_key, reset_key = jax.random.split(jax.random.fold_in(key, t + 1))
    mean = network.policy_mean(params, obs)
    action = mean + jnp.exp(log_std) * jax.random.normal(act_key, mean.shape)
    global_steps = first_step + t * num_envs + jnp.arange(num_envs) + 1
    env_state, out = step_fn(env_state, action, jax.random.split(reset_key, num_envs), global_steps, schedule)
    next_obs = jax.vmap(env.observation)(env_state)
    carry = (env_state, next_obs, return_sum + out.finished_return.sum(), episodes + out.done.sum())
    return carry, Trajectory(obs, action, out.reward, out.done)

  zero = (jnp.zeros(()), jnp.zeros((), jnp.int32))
  (env_state, obs, return_sum, episodes), trajectory = jax.lax.scan(
      body, (env_state, obs) + zero, jnp.arange(steps))
  return env_state, obs, trajectory, (return_sum, episodes)


def batch_from(network, params, trajectory: Trajectory, last_obs: jax.Array, gamma: float, lam: float,
               normalise_advantages: bool = True) -> Tuple[jax.Array, Batch]:
  """Values, old log-probabilities and GAE of a trajectory with the pre-update networks, flattened to
  (T * E) samples. Returns (observations, Batch)."""
  steps, num_envs = trajectory.rewards.shape
  observations = jnp.concatenate([trajectory.observations, last_obs[None]])      # (T + 1, E, obs)
  (mean, log_std, values), _ = network.apply({'params': params}, observations.reshape(-1, observations.shape[-1]))
  values = values.reshape(steps + 1, num_envs)
  log_probs = gaussian_log_prob(mean.reshape(steps + 1, num_envs, -1)[:-1], log_std, trajectory.actions)
  advantages, returns = gae(trajectory.rewards, values, trajectory.dones, gamma, lam)
  flat = lambda x: x.reshape((steps * num_envs,) + x.shape[2:])
  advantages = flat(advantages)
  if normalise_advantages:
    advantages = normalise(advantages)
  batch = Batch(flat(trajectory.actions), flat(log_probs), advantages, flat(returns))
  return flat(trajectory.observations), batch


def update(learner: Learner, state: LearnerState, observations: jax.Array, batch: Batch, key: chex.PRNGKey,
           epochs: int, minibatches: int, unroll: int = 1):
  """epochs x minibatches learner steps over a fresh permutation each epoch. Returns (state,
  mean loss, units reset)."""
  size = observations.shape[0] // minibatches

  def epoch(carry, e):
    state, loss, replaced = carry
    order = jax.random.permutation(jax.random.fold_in(key, e), observations.shape[0])

    def minibatch(carry, i):
      state, loss, replaced = carry
      index = jax.lax.dynamic_slice_in_dim(order, i * size, size)
      step_key = jax.random.fold_in(jax.random.fold_in(key, e), minibatches + i)
      state, out = learner.step(state, observations[index], jax.tree.map(lambda x: x[index], batch), step_key)
      return (state, loss + out.loss, replaced + out.num_replaced), None

    carry, _ = jax.lax.scan(minibatch, (state, loss, replaced), jnp.arange(minibatches), unroll=unroll)
    return carry, None

  zero = (jnp.zeros(()), jnp.zeros((), jnp.int32))
  (state, loss, replaced), _ = jax.lax.scan(epoch, (state,) + zero, jnp.arange(epochs))
  return state, loss / (epochs * minibatches), replaced


