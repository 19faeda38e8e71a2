"""Value-based off-policy RL: the pieces of a DQN learner (Mnih et al. 2015; n-step, double Q-learning
and a Polyak-averaged target network as in DrQ(ε), Agarwal et al. 2021), as pure functions.

The learner's objective (`q_loss`) is a `Learner` loss over the Q-network's output (batch, actions)
and a target (actions taken, their regression targets); the targets are computed outside the
gradient (`td_targets`) from the target network's and, for double Q-learning, the online network's
values of the bootstrap states.
"""
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import optax


def td_targets(returns: jax.Array, discount: jax.Array, next_q_target: jax.Array, next_q_online: jax.Array,
               double: bool = True) -> jax.Array:
  """n-step targets y = G + γ^k Q_target(s', a'), a' = argmax Q_online(s') (double Q-learning) or
  argmax Q_target(s'); `discount` is 0 after a terminal state (ddl.rl.replay.Batch)."""
  chooser = next_q_online if double else next_q_target
  best = jnp.argmax(chooser, axis=-1)
  bootstrap = jnp.take_along_axis(next_q_target, best[..., None], axis=-1)[..., 0]
  return returns + discount * jax.lax.stop_gradient(bootstrap)


def q_loss(q_values: jax.Array, target: Tuple[jax.Array, jax.Array], huber: float = 1.0) -> jax.Array:
  """Mean Huber loss (δ = `huber`; 0: squared error / 2) between Q(s, a) and its target y;
  target = (actions (batch,), y (batch,))."""
  actions, y = target
  chosen = jnp.take_along_axis(q_values, actions[:, None].astype(jnp.int32), axis=-1)[:, 0]
  error = chosen - jax.lax.stop_gradient(y)
  if huber > 0:
    return optax.huber_loss(error, delta=huber).mean()
  return 0.5 * jnp.mean(error ** 2)


def epsilon(step: jax.Array, start: float, end: float, decay_steps: int, warmup: int = 0) -> jax.Array:
  """ε of ε-greedy at environment step `step`: `start` during the warm-up, then linear to `end` over
  `decay_steps` steps, `end` after."""
  progress = jnp.clip((step - warmup) / max(decay_steps, 1), 0.0, 1.0)
  return start + (end - start) * progress


def epsilon_greedy(key: jax.Array, q_values: jax.Array, eps: jax.Array) -> jax.Array:
  """An action per row of `q_values` (..., actions): uniform with probability `eps`, else greedy."""
  explore_key, action_key = jax.random.split(key)
  greedy = jnp.argmax(q_values, axis=-1)
  random = jax.random.randint(action_key, greedy.shape, 0, q_values.shape[-1])
  return jnp.where(jax.random.uniform(explore_key, greedy.shape) < eps, random, greedy).astype(jnp.int32)


def polyak(target: Any, online: Any, tau: jax.Array) -> Any:
  """target <- tau online + (1 - tau) target (tau = 1: a copy); optax's incremental update."""
  return optax.incremental_update(online, target, tau)


def follow_rewrites(target: Any, before: Any, after: Any) -> Any:
  """The target network after a boundary transform (a reset, plasticity injection) took the online one from
  `before` to `after`: each weight array it rewrote is copied into the target, the others keep their average.
  Nikishin et al.'s resets re-create the target with the online network, and an injected head enters both."""
  return jax.tree.map(lambda t, b, a: jnp.where(jnp.array_equal(b, a), t, a), target, before, after)
