"""The inner loop shared by the supervised experiments: a `lax.scan` of learner steps over
batches built on the device, with the running sums the chunk metrics need."""
from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from ddl.learners import Learner, LearnerState


class StreamSums(NamedTuple):
  loss: jax.Array       # sum over steps of the pre-update batch loss
  correct: jax.Array    # sum over steps of pre-update correct predictions (classification)
  examples: jax.Array   # examples seen
  replaced: jax.Array   # units re-initialised by the reset transform


def learn(learner: Learner, state: LearnerState, batch: Callable[[jax.Array], Tuple[jax.Array, jax.Array]],
          steps, key: jax.Array, first_step: jax.Array, unroll: int = 1, lr_factor=1.0,
          output_mask=None) -> Tuple[LearnerState, StreamSums]:
  """Runs `steps` learner steps; `batch(i)` gives step i's (x, y), gathered inside the step so no
  chunk-sized input is materialised. Step i's randomness is `fold_in(key, first_step + i)`, so a
  resumed stream draws the same numbers. `steps` may be traced (a loop of dynamic length: `unroll`
  is then unused); lr_factor and output_mask go to `Learner.step`."""

  def body(carry, i):
    state, sums = carry
    x, y = batch(i)
    state, out = learner.step(state, x, y, jax.random.fold_in(key, first_step + i), lr_factor, output_mask)
    correct = (jnp.argmax(out.output, -1) == y).sum() if learner.loss == 'cross_entropy' else 0
    sums = StreamSums(sums.loss + out.loss, sums.correct + correct, sums.examples + y.shape[0],
                      sums.replaced + out.num_replaced)
    return (state, sums), None

  zero = StreamSums(jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
  if not isinstance(steps, int):
    return jax.lax.fori_loop(0, steps, lambda i, carry: body(carry, i)[0], (state, zero))
  (state, sums), _ = jax.lax.scan(body, (state, zero), jnp.arange(steps), unroll=unroll)
  return state, sums
