"""A replay buffer on the device, inside each run's state: a circular store of one environment
stream's transitions with static shapes (vmappable over runs, checkpointed like any pytree) and
n-step sampling (Ma et al. 2024's DQN and DrQ-v2 replay-ratio experiments).

A buffer holds ONE stream in time order (slot i + 1 follows slot i), so an n-step window is n
consecutive slots; interleaving E parallel environments into one buffer would mix them in a
window, so an experiment with E environments keeps E buffers (vmapped) or steps one. A slot's next
observation is the next slot's, except where the episode was truncated by its time limit (`last`
without `terminal`): those slots' true last observations are kept apart, in a store of
capacity // episode_steps + 1 (time limits come at most once per `episode_steps` slots), so a truncation
bootstraps from the true last state at 1/episode_steps of a second copy's memory; the newest slot's
next observation is kept too. After a terminal state the next observation is not read (its discount is
0): `gather` gives the next slot's there.

Stacked frames (`frame_stack` k > 1: observations (..., k C), the last C channels the newest frame, as
DrQ-v2's pixels) are stored one frame per slot: the observation's newest frame (the next observation's is
the next slot's), 1/(2k) of two whole stacks' memory (127 KB -> 21 KB per transition at 84x84x9). `gather`
rebuilds a stack from the slots before, back to its episode's first slot, whose frame repeats in the
stack's older places (what a frame stack holds at a reset). Once the buffer has wrapped, the k - 1 oldest
slots are not sampled (their stacks would reach into overwritten slots): samples equal the stream's own
transitions (tests/test_replay.py).
"""
import numbers
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Replay:
  obs: jax.Array        # (capacity, *obs_shape) in the example's dtype (uint8 for pixels); frame_stack > 1: its newest frame
  action: jax.Array     # (capacity, *action_shape)
  reward: jax.Array     # (capacity,) float32
  terminal: jax.Array   # (capacity,) bool: the episode ended in a terminal state (no bootstrap)
  last: jax.Array       # (capacity,) bool: the episode ended here (terminal or truncated)
  final_obs: jax.Array  # (finals, *obs_shape): truncated slots' next observations (frames), a circular store
  final_index: jax.Array  # (capacity,) int32: a truncated slot's place in final_obs
  finals: jax.Array     # int32: truncations written (the next place in final_obs, modulo its length)
  newest_next: jax.Array  # (*obs_shape): the newest slot's next observation (frame)
  index: jax.Array      # int32: the next slot to write
  size: jax.Array       # int32: slots written, at most capacity
  frame_stack: int = struct.field(pytree_node=False, default=1)   # frames per observation, one stored per slot
  stack_start: str = struct.field(pytree_node=False, default='repeat')   # before an episode's first frame


class Batch(NamedTuple):
  obs: jax.Array        # s_i
  action: jax.Array     # a_i
  returns: jax.Array    # Σ_{k<=k*} γ^k r_{i+k}, k* the window's end (its first episode end, else n - 1)
  discount: jax.Array   # γ^(k*+1), 0 after a terminal state
  next_obs: jax.Array   # the bootstrap state: next_obs of slot i + k*


def _positive(name: str, value) -> None:
  """Static sizes must be Python (or numpy) integers >= 1: shapes depend on them."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f'replay: {name} must be a static integer >= 1, got {value!r}')


STACK_STARTS = ('repeat', 'zeros')


def init(capacity: int, obs: jax.Array, action: jax.Array, frame_stack: int = 1, stack_start: str = 'repeat',
         episode_steps: Optional[int] = None) -> Replay:
  """An empty buffer for `capacity` transitions shaped like ONE example `obs` and `action` (their
  shapes and dtypes; zeros everywhere, index = size = 0). `frame_stack` k > 1: `obs` stacks k frames on
  its last axis, and a slot keeps the newest one; `stack_start`: what fills a stack's places before its
  episode's first frame, that frame ('repeat') or zeros. `episode_steps`: the environment's time limit,
  which truncates an episode only once it has run that many steps (None: no such bound, a truncated
  observation kept for every slot)."""
  _positive('capacity', capacity)
  _positive('frame_stack', frame_stack)
  if episode_steps is not None:
    _positive('episode_steps', episode_steps)
  if stack_start not in STACK_STARTS:
    raise ValueError(f'replay: stack_start={stack_start!r} is not known; use one of {STACK_STARTS}')
  obs, action = jnp.asarray(obs), jnp.asarray(action)
  if obs.shape[-1:] and obs.shape[-1] % frame_stack:
    raise ValueError(f'replay: frame_stack={frame_stack} does not divide the observation\'s last axis {obs.shape}')
  frame = obs[..., obs.shape[-1] - obs.shape[-1] // frame_stack:] if frame_stack > 1 else obs
  slots = lambda x: jnp.zeros((capacity,) + x.shape, x.dtype)
  flags = jnp.zeros((capacity,), bool)
  zero = jnp.zeros((), jnp.int32)
  finals = capacity if episode_steps is None else min(capacity, capacity // episode_steps + 1)
  return Replay(obs=slots(frame), action=slots(action), reward=jnp.zeros((capacity,), jnp.float32),
                terminal=flags, last=flags, final_obs=jnp.zeros((finals,) + frame.shape, frame.dtype),
                final_index=jnp.zeros((capacity,), jnp.int32), finals=zero, newest_next=jnp.zeros_like(frame),
                index=zero, size=zero, frame_stack=frame_stack, stack_start=stack_start)


def _newest(replay: Replay, obs: jax.Array) -> jax.Array:
  """What a slot keeps of an observation: the whole, or its newest frame (its last channels)."""
  return obs if replay.frame_stack == 1 else obs[..., obs.shape[-1] - replay.obs.shape[-1]:]


def add(replay: Replay, obs, action, reward, next_obs, terminal, last) -> Replay:
  """One transition into slot `index` (over the oldest once full), cast to the stored dtypes. A
  terminal state ends its episode, so `last` is stored as `last | terminal`; a truncated one (`last`
  alone) keeps `next_obs` in the store of final observations."""
  i, capacity = replay.index, replay.reward.shape[0]
  put = lambda store, x: store.at[i].set(jnp.asarray(x).astype(store.dtype))
  terminal = jnp.asarray(terminal).astype(bool)
  last = jnp.asarray(last).astype(bool) | terminal
  truncated = last & ~terminal
  next_frame = jnp.asarray(_newest(replay, next_obs)).astype(replay.obs.dtype)
  place = replay.finals % replay.final_obs.shape[0]
  final_obs = replay.final_obs.at[place].set(jnp.where(truncated, next_frame, replay.final_obs[place]))
  return replay.replace(obs=put(replay.obs, _newest(replay, obs)), action=put(replay.action, action),
                        reward=put(replay.reward, reward), terminal=put(replay.terminal, terminal),
                        last=put(replay.last, last), final_obs=final_obs, final_index=put(replay.final_index, place),
                        finals=replay.finals + truncated.astype(jnp.int32), newest_next=next_frame,
                        index=(i + 1) % capacity, size=jnp.minimum(replay.size + 1, capacity))


def add_many(replay: Replay, obs, action, reward, next_obs, terminal, last) -> Replay:
  """E transitions of ONE stream in time order (leading axis E): the same as E calls of `add`
  (a scan, so that E > capacity overwrites as successive adds would)."""
  def one(r, transition):
    return add(r, *transition), None
  replay, _ = jax.lax.scan(one, replay, (obs, action, reward, next_obs, terminal, last))
  return replay


def _skipped(replay: Replay) -> jax.Array:
  """Oldest slots not sampled: with stacked frames once the buffer has wrapped, the frame_stack - 1 whose
  stacks would reach back into overwritten slots."""
  return jnp.where(replay.size == replay.reward.shape[0], replay.frame_stack - 1, 0).astype(jnp.int32)


def num_samplable(replay: Replay, n_step: int) -> jax.Array:
  """int32: start slots followed by n_step written transitions in time order, max(size - (n_step - 1), 0)
  (less the oldest frame_stack - 1 once a buffer of stacked frames has wrapped)."""
  _positive('n_step', n_step)
  return jnp.maximum(replay.size - (n_step - 1) - _skipped(replay), 0).astype(jnp.int32)


def _stack(replay: Replay, slots: jax.Array, frames: jax.Array) -> jax.Array:
  """The observations of `slots` with their older frames: the newest frames of the frame_stack - 1 slots
  before each, back to its episode's first slot (after a `last` one, or the oldest written), whose frame
  (or zeros: `stack_start`) fills the older places. `frames`: the per-slot store to read (`replay.obs`)."""
  capacity, k = replay.reward.shape[0], replay.frame_stack
  oldest = (replay.index - replay.size) % capacity
  since_oldest = (slots - oldest) % capacity
  back = jnp.arange(1, k)                                               # 1 .. k-1 slots back
  earlier = (slots[..., None] - back) % capacity
  same_episode = jnp.cumprod(jnp.logical_not(replay.last[earlier]) & (back <= since_oldest[..., None]), axis=-1)
  reach = jnp.sum(same_episode, axis=-1)                                # slots back within the episode, <= k-1
  places = jnp.arange(k - 1, -1, -1)                                     # slots back, oldest place first
  offsets = jnp.minimum(places, reach[..., None])
  stack = [frames[(slots - offsets[..., i]) % capacity] for i in range(k)]
  if replay.stack_start == 'zeros':
    before_start = places > reach[..., None]
    stack = [jnp.where(_expand(before_start[..., i], replay.obs.ndim), jnp.zeros((), f.dtype), f)
             for i, f in enumerate(stack)]
  return jnp.concatenate(stack, axis=-1)


def _next_frame(replay: Replay, slots: jax.Array) -> jax.Array:
  """The next observation's newest frame of `slots`: kept apart for a truncated slot and the newest one,
  else the next slot's (after a terminal state the next episode's first, never read)."""
  capacity = replay.reward.shape[0]
  truncated = (replay.last & ~replay.terminal)[slots]
  newest = slots == (replay.index - 1) % capacity
  frame = jnp.where(_expand(truncated, replay.obs.ndim), replay.final_obs[replay.final_index[slots]],
                    replay.obs[(slots + 1) % capacity])
  return jnp.where(_expand(newest, replay.obs.ndim), replay.newest_next, frame)


def _expand(flags: jax.Array, store_ndim: int) -> jax.Array:
  """Per-slot flags broadcast over the axes of the frames a store of `store_ndim` axes (slots first) holds."""
  return flags.reshape(flags.shape + (1,) * (store_ndim - 1))


def gather(replay: Replay, starts: jax.Array, n_step: int, gamma) -> Batch:
  """The n-step transitions whose start slots are `starts` (ints in [0, num_samplable)) slots after
  the oldest one: rewards summed up to the window's first episode end (or n_step - 1) and the
  bootstrap from that step's next observation, discounted by γ^(k*+1), 0 after a terminal state.
  `sample` calls it after drawing `starts`; fixed `starts` make it testable."""
  _positive('n_step', n_step)
  capacity = replay.reward.shape[0]
  oldest = (replay.index - replay.size) % capacity
  first = (oldest + _skipped(replay) + jnp.asarray(starts, jnp.int32)) % capacity
  window = (first[..., None] + jnp.arange(n_step)) % capacity         # (..., n)
  last = replay.last[window]
  # inside the window: every step up to and including its first episode end (all n without one)
  inside = jnp.cumsum(last, axis=-1) - last == 0
  end = jnp.sum(inside, axis=-1) - 1                                  # k*
  gamma = jnp.asarray(gamma, jnp.float32)
  powers = gamma ** jnp.arange(n_step + 1, dtype=jnp.float32)         # γ^0 .. γ^n
  returns = jnp.sum(jnp.where(inside, replay.reward[window] * powers[:n_step], 0.0), axis=-1)
  end_slot = jnp.take_along_axis(window, end[..., None], axis=-1)[..., 0]
  discount = jnp.where(replay.terminal[end_slot], 0.0, powers[end + 1])
  next_frame = _next_frame(replay, end_slot)
  if replay.frame_stack == 1:
    obs, next_obs = replay.obs[first], next_frame
  else:   # the next observation: the end slot's stack moved on by its next frame
    obs = _stack(replay, first, replay.obs)
    channels = replay.obs.shape[-1]
    next_obs = jnp.concatenate([_stack(replay, end_slot, replay.obs)[..., channels:], next_frame], -1)
  return Batch(obs=obs, action=replay.action[first], returns=returns, discount=discount, next_obs=next_obs)


def sample(replay: Replay, key: chex.PRNGKey, batch_size: int, n_step: int, gamma) -> Batch:
  """`batch_size` n-step transitions (`gather`) from start slots drawn uniformly, with replacement,
  among the `num_samplable` oldest, whose windows never cross the write pointer. `gamma` may be
  traced; `batch_size` and `n_step` are static.

  Precondition: num_samplable(replay, n_step) >= 1 (the caller waits for a warm-up of at least
  n_step steps); with none samplable it returns the oldest slot's unwritten window, not an error
  (no host check inside a traced program)."""
  _positive('batch_size', batch_size)
  count = num_samplable(replay, n_step)
  starts = jax.random.randint(key, (batch_size,), 0, jnp.maximum(count, 1))
  return gather(replay, starts, n_step, gamma)


def config_checks(config, steps: str = 'environment steps'):
  """The (condition, message) checks of an off-policy experiment's replay section and its run
  length (`steps`: what its steps count), for its `checks`."""
  r = config.replay
  return [
      (r.batch_size > 0 and r.n_step > 0, 'replay.batch_size and replay.n_step must be > 0'),
      (r.capacity >= r.batch_size + r.n_step,
       f'replay.capacity={r.capacity} is smaller than a batch: it must be >= replay.batch_size + replay.n_step'),
      (r.warmup >= r.batch_size + r.n_step and r.warmup <= r.capacity,
       f'replay.warmup ({steps} before the first update) must be in [replay.batch_size + replay.n_step, '
       'replay.capacity]'),
      (config.steps_per_chunk > 0 and config.total_steps > 0, 'steps_per_chunk and total_steps must be > 0'),
      (0 < config.probe_size <= r.warmup, 'probe_size must be in [1, replay.warmup]'),
  ]
