"""The slowly-changing regression stream (lop_reference.md §5.4), generated on the device.

Inputs are `num_flipping` slowly-changing bits followed by `num_inputs - num_flipping` bits drawn
afresh for every example; every `flip_period` examples the slow bits change: all are redrawn
('redraw', the original code's default) or one random bit is inverted ('flip_one', the paper's
description). Targets come from a fixed LTU network per seed. Everything is a pure function of
(keys, example index), so a chunk can be regenerated exactly after a resume.
"""
import math

import chex
import jax
import jax.numpy as jnp
from flax import struct

GENERATORS = ('redraw', 'flip_one')


@struct.dataclass
class StreamState:
  flip_key: chex.PRNGKey     # randomness of the slow bits, one fold per block
  noise_key: chex.PRNGKey    # randomness of the fast bits, one fold per example
  bits: jax.Array            # slow bits of the block holding the next example, (num_flipping,)


def init_stream(key: chex.PRNGKey, num_flipping: int) -> StreamState:
  flip_key, noise_key = jax.random.split(key)
  bits = jax.random.bernoulli(jax.random.fold_in(flip_key, 0), 0.5, (num_flipping,))
  return StreamState(flip_key=flip_key, noise_key=noise_key, bits=bits.astype(jnp.float32))


def _next_bits(generator: str, flip_key: chex.PRNGKey, bits: jax.Array, block: jax.Array) -> jax.Array:
  key = jax.random.fold_in(flip_key, block)
  if generator == 'redraw':
    return jax.random.bernoulli(key, 0.5, bits.shape).astype(bits.dtype)
  flip = jax.nn.one_hot(jax.random.randint(key, (), 0, bits.shape[0]), bits.shape[0], dtype=bits.dtype)
  return jnp.abs(bits - flip)


def inputs(state: StreamState, start: jax.Array, count: int, *, num_inputs: int, flip_period: int,
           generator: str):
  """The `count` inputs from example index `start` on: returns (stream state after them,
  float32 inputs (count, num_inputs))."""
  if generator not in GENERATORS:
    raise ValueError(f'data.generator={generator!r} is not known; use one of {GENERATORS}.')
  first_block = start // flip_period
  num_blocks = math.ceil(count / flip_period) + 1     # blocks touched by the chunk, plus the next

  def advance(bits, offset):
    new = _next_bits(generator, state.flip_key, bits, first_block + offset)
    return new, new

  _, later = jax.lax.scan(advance, state.bits, jnp.arange(1, num_blocks))
  table = jnp.concatenate([state.bits[None], later])                   # (num_blocks, flipping)
  index = jnp.arange(count) + start
  slow = table[index // flip_period - first_block]
  fast = jax.random.bernoulli(jax.random.fold_in(state.noise_key, start), 0.5,
                              (count, num_inputs - state.bits.shape[0])).astype(jnp.float32)
  next_bits = table[(start + count) // flip_period - first_block]
  return state.replace(bits=next_bits), jnp.concatenate([slow, fast], axis=1)
