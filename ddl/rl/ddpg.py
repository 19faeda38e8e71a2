"""DrQ-v2's actor-critic pieces (Yarats et al. 2022; Ma et al. 2024's code, drqv2.py and utils.py):
pure functions of arrays, tested against numpy (tests/test_ddpg.py).

DrQ-v2 is DDPG with clipped double Q and n-step returns: the actor's action is its tanh mean plus
Gaussian noise of a scheduled standard deviation, clipped (`sample_action`); the critic regresses
both Q heads on r + γ^n min(Q1', Q2')(s', a'), a' sampled from the actor with clipped noise under
the target critic; the actor maximises min(Q1, Q2)(s, a) over a sampled action.
"""
import chex
import jax
import jax.numpy as jnp

EDGE = 1e-6   # utils.TruncatedNormal keeps samples in [-1 + EDGE, 1 - EDGE]


def exploration_std(step: chex.Numeric, start: float, end: float, duration: float) -> jax.Array:
  """DrQ-v2's 'linear(start, end, duration)' schedule of the actor's noise over agent steps."""
  mix = jnp.clip(jnp.asarray(step, jnp.float32) / duration, 0.0, 1.0)
  return (1.0 - mix) * start + mix * end


def sample_action(key: chex.PRNGKey, mean: jax.Array, std: chex.Numeric, clip: float = 0.0) -> jax.Array:
  """utils.TruncatedNormal.sample: mean + std·ε (ε ~ N(0, 1), clipped to ±clip when clip > 0),
  then clamped to [-1 + EDGE, 1 - EDGE] with a straight-through gradient (the clamp passes the
  gradient of the unclamped sample to the mean, as the original's x - x.detach() + clamp(x).detach())."""
  noise = std * jax.random.normal(key, mean.shape, mean.dtype)
  if clip > 0:
    noise = jnp.clip(noise, -clip, clip)
  x = mean + noise
  return x + jax.lax.stop_gradient(jnp.clip(x, -1.0 + EDGE, 1.0 - EDGE) - x)


def critic_targets(returns: jax.Array, discount: jax.Array, next_q: jax.Array) -> jax.Array:
  """r + discount · min over the two heads of the target critic's Q(s', a'); next_q is (batch, 2)."""
  return returns + discount * jnp.min(next_q, axis=-1)


def critic_loss(q: jax.Array, target: jax.Array) -> jax.Array:
  """F.mse_loss(Q1, y) + F.mse_loss(Q2, y): each head's mean squared error, summed; q is (batch, 2)."""
  return jnp.sum(jnp.mean(jnp.square(q - target[:, None]), axis=0))


def actor_loss(q: jax.Array) -> jax.Array:
  """-mean over the batch of min(Q1, Q2)(s, a); q is (batch, 2)."""
  return -jnp.mean(jnp.min(q, axis=-1))

