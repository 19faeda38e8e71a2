"""ddl.rl.replay: n-step gathering against a plain Python loop of the definition (wrap-around,
terminal and truncated ends), sampling only samplable windows under jit with a traced γ, add_many
as successive adds, vmap over runs, dtypes and bad sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddl.rl import replay as replay_lib

# (reward, terminal, last) of one stream: episodes ending terminal (t 2), truncated (t 5), terminal
# (t 7), then one running on; rewards are powers of two, so every sum says which steps it took
STREAM = [(1, 0, 0), (2, 0, 0), (4, 1, 1), (8, 0, 0), (16, 0, 0), (32, 0, 1), (64, 0, 0), (128, 1, 1),
          (256, 0, 0), (512, 0, 0), (1024, 0, 0), (2048, 0, 0), (4096, 0, 0)]
OBS = (2, 3)


def _obs(t):
  """The observation at time t of a stream: t everywhere, uint8 (as pixels are stored)."""
  return np.full(OBS, t, np.uint8)


def _empty(capacity):
  return replay_lib.init(capacity, jnp.zeros(OBS, jnp.uint8), jnp.zeros((), jnp.int32))


_add = jax.jit(replay_lib.add)    # one compile per capacity, not an eager dispatch per operation
_gather = jax.jit(replay_lib.gather, static_argnums=2)


def _filled(capacity, stream=STREAM, offset=0):
  """A buffer after one `add` per transition; time t's transition is (obs t, action t % 3, next obs t + 1)."""
  r = _empty(capacity)
  for t, (reward, terminal, last) in enumerate(stream, offset):
    r = _add(r, _obs(t), t % 3, reward, _obs(t + 1), bool(terminal), bool(last))
  return r


def _numpy_nstep(stream, t, n, gamma):
  """The published n-step transition from time t, a loop over the list: (returns, discount, the
  time whose next observation is the bootstrap state)."""
  g = 0.0
  for k in range(n):
    reward, terminal, last = stream[t + k]
    g += gamma ** k * reward
    if last or k == n - 1:
      return g, (0.0 if terminal else gamma ** (k + 1)), t + k


def _check_against_numpy(batch, times, n_step, gamma, stream=STREAM):
  """Every row of `batch` is the numpy n-step transition from its time in `times`."""
  for i, t in enumerate(times):
    g, discount, end = _numpy_nstep(stream, t, n_step, gamma)
    np.testing.assert_array_equal(batch.obs[i], _obs(t))
    assert int(batch.action[i]) == t % 3
    np.testing.assert_allclose(batch.returns[i], g, rtol=1e-6)
    np.testing.assert_allclose(batch.discount[i], discount, rtol=1e-6)
    np.testing.assert_array_equal(batch.next_obs[i], _obs(end + 1))


@pytest.mark.parametrize('capacity', [9, 16])      # 9: 13 transitions wrap around, the oldest 4 overwritten
@pytest.mark.parametrize('n_step', [1, 3, 5])
def test_gather_matches_the_numpy_definition(capacity, n_step):
  gamma = 0.9
  r = _filled(capacity)
  size = min(len(STREAM), capacity)
  count = int(replay_lib.num_samplable(r, n_step))
  assert count == size - (n_step - 1)
  batch = jax.jit(replay_lib.gather, static_argnums=2)(r, jnp.arange(count), n_step, jnp.float32(gamma))
  _check_against_numpy(batch, range(len(STREAM) - size, len(STREAM) - size + count), n_step, gamma)
  assert batch.returns.dtype == batch.discount.dtype == jnp.float32


def test_sample_draws_only_samplable_windows_under_jit_with_a_traced_gamma():
  n, gamma = 3, 0.8
  draw = jax.jit(replay_lib.sample, static_argnums=(2, 3))
  for stored in (STREAM, STREAM[:6]):              # full and wrapped (written 13 > 9); partly filled (6 < 9)
    r = _filled(9, stored)
    size = min(len(stored), 9)
    batch = draw(r, jax.random.PRNGKey(0), 512, n, jnp.float32(gamma))
    times = np.asarray(batch.obs[:, 0, 0]).tolist()
    # every samplable start drawn, none whose window runs past the newest slot or into unwritten ones
    assert set(times) == set(range(len(stored) - size, len(stored) - (n - 1)))
    _check_against_numpy(batch, times, n, gamma)
    other = draw(r, jax.random.PRNGKey(1), 512, n, jnp.float32(gamma))
    assert not np.array_equal(other.obs, batch.obs)


def test_add_many_equals_successive_adds_across_the_wrap_around():
  t = np.arange(len(STREAM))
  reward, terminal, last = (np.asarray([s[i] for s in STREAM]) for i in range(3))
  obs = np.stack([_obs(s) for s in t])
  steps = lambda a, b: (obs[a:b], t[a:b] % 3, reward[a:b], obs[a:b] + 1, terminal[a:b] > 0, last[a:b] > 0)
  many = jax.jit(replay_lib.add_many)
  capacity = 5
  # 3, then 10 more (twice round 5 slots), then all 13 at once into an empty buffer
  three = many(_empty(capacity), *steps(0, 3))
  jax.tree.map(np.testing.assert_array_equal, three, _filled(capacity, STREAM[:3]))
  jax.tree.map(np.testing.assert_array_equal, many(three, *steps(3, 13)), _filled(capacity))
  jax.tree.map(np.testing.assert_array_equal, many(_empty(capacity), *steps(0, 13)), _filled(capacity))


def test_a_terminal_state_ends_its_episode():
  r = replay_lib.add(_empty(2), _obs(0), 0, 1.0, _obs(1), True, False)
  assert bool(r.terminal[0]) and bool(r.last[0])


def test_vmapped_over_runs_equals_each_run_alone():
  # different contents and sizes per run: 4 of 9 slots written, all 9 just written, wrapped
  runs = [_filled(9, STREAM[:4]), _filled(9, STREAM[3:12], offset=3), _filled(9, STREAM[1:], offset=1)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *runs)
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  gammas = jnp.asarray([0.5, 0.9, 0.99])
  draw = lambda r, k, g: replay_lib.sample(r, k, 16, 3, g)
  together = jax.jit(jax.vmap(draw))(stacked, keys, gammas)
  for i, r in enumerate(runs):
    alone = jax.jit(draw)(r, keys[i], gammas[i])
    jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a[i], b), together, alone)
  # adding to all runs at once, vmapped, is each run's own add
  added = jax.jit(jax.vmap(replay_lib.add))(stacked, jnp.stack([_obs(50)] * 3), jnp.arange(3), jnp.ones(3),
                                            jnp.stack([_obs(51)] * 3), jnp.zeros(3, bool), jnp.ones(3, bool))
  for i, r in enumerate(runs):
    alone = _add(r, _obs(50), i, 1.0, _obs(51), False, True)
    jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a[i], b), added, alone)


def test_replay_is_a_pytree_that_survives_jit():
  r = _filled(9)
  assert len(jax.tree.leaves(r)) == 11
  through = jax.jit(lambda x: x)(r)
  assert isinstance(through, replay_lib.Replay)
  jax.tree.map(np.testing.assert_array_equal, through, r)
  doubled = jax.tree.map(lambda x: x * 2, r)
  assert isinstance(doubled, replay_lib.Replay) and int(doubled.size) == 18


def test_uint8_observations_stay_uint8():
  r = _filled(9)
  assert r.obs.dtype == r.final_obs.dtype == r.newest_next.dtype == jnp.uint8 and r.obs.shape == (9,) + OBS
  assert r.reward.dtype == jnp.float32 and r.terminal.dtype == r.last.dtype == jnp.bool_
  assert r.index.dtype == r.size.dtype == jnp.int32
  batch = jax.jit(replay_lib.sample, static_argnums=(2, 3))(r, jax.random.PRNGKey(0), 4, 2, 0.9)
  assert batch.obs.dtype == batch.next_obs.dtype == jnp.uint8


@pytest.mark.parametrize('name, call', [
    ('capacity', lambda: replay_lib.init(0, jnp.zeros(2), jnp.zeros(()))),
    ('capacity', lambda: replay_lib.init(2.5, jnp.zeros(2), jnp.zeros(()))),
    ('batch_size', lambda: replay_lib.sample(_filled(5), jax.random.PRNGKey(0), 0, 1, 0.9)),
    ('n_step', lambda: replay_lib.sample(_filled(5), jax.random.PRNGKey(0), 4, 0, 0.9)),
    ('n_step', lambda: replay_lib.gather(_filled(5), jnp.arange(2), -1, 0.9)),
    ('n_step', lambda: replay_lib.num_samplable(_filled(5), 0)),
])
def test_bad_sizes_raise_naming_the_argument(name, call):
  with pytest.raises(ValueError, match=name):
    call()


def _frame_stream(steps, k, seed, stack_start='repeat', limit=None):
  """A stream of stacked-frame observations as DrQ-v2's FrameStackWrapper makes them: each step's frame is a
  distinct value; an episode starts with its first frame repeated k times (or, stack_start='zeros', as
  Dopamine's Atari agents: k - 1 zero frames and the first). Episodes end at random, half of them terminal,
  or with a time `limit`: terminal at random, else truncated after `limit` steps. -> (obs, next_obs,
  terminal, last, reward) per step, obs (steps, 2, 2, 3 k) uint8, rewards powers of two."""
  rng = np.random.default_rng(seed)
  frame = lambda v: np.full((2, 2, 3), v % 251, np.uint8)
  value, stack, length, rows = 0, None, 0, []
  for t in range(steps):
    if stack is None:
      value += 1
      stack = [frame(value)] * k if stack_start == 'repeat' else [np.zeros((2, 2, 3), np.uint8)] * (k - 1) + [frame(value)]
      length = 0
    value += 1
    length += 1
    after = stack[1:] + [frame(value)]
    if limit is None:
      end = rng.random() < 0.2
      terminal = end and rng.random() < 0.5
    else:
      terminal = rng.random() < 0.1
      end = terminal or length == limit
    rows.append((np.concatenate(stack, -1), np.concatenate(after, -1), terminal, end, float(2 ** (t % 12))))
    stack = None if end else after
  return rows


def _check_rows(batch, rows, times, n_step, gamma):
  """Every row of `batch` is the numpy n-step transition from its step in `times`; the bootstrap
  observation is checked where it is read (a discount above 0)."""
  stream = [(reward, terminal, last) for _, _, terminal, last, reward in rows]
  for i, t in enumerate(times):
    g, discount, end = _numpy_nstep(stream, t, n_step, gamma)
    obs, next_obs = rows[t][0], rows[end][1]
    np.testing.assert_array_equal(batch.obs[i], obs, err_msg=f'obs of step {t}')
    assert int(batch.action[i]) == t % 3
    np.testing.assert_allclose(batch.returns[i], g, rtol=1e-6)
    np.testing.assert_allclose(batch.discount[i], discount, rtol=1e-6)
    if discount > 0:
      np.testing.assert_array_equal(batch.next_obs[i], next_obs, err_msg=f'next_obs of step {t}')


def _fill_rows(replay, rows):
  for t, (obs, next_obs, terminal, last, reward) in enumerate(rows):
    replay = _add(replay, obs, t % 3, reward, next_obs, terminal, last)
  return replay


@pytest.mark.parametrize('capacity', [7, 40])      # 7: the 25 transitions wrap around
@pytest.mark.parametrize('k', [2, 3])      # k = 1: the truncation test below and the numpy-definition tests
@pytest.mark.parametrize('stack_start', replay_lib.STACK_STARTS)
def test_stacked_frames_stored_one_per_slot_sample_as_the_stream_gave_them(capacity, k, stack_start):
  """A buffer of one frame per slot (`frame_stack` k) gives every samplable n-step transition as the stream
  gave it (episode starts inside a stack, a window's end at a terminal or a truncation, whose true last
  frame is not the next slot's, wrap-around), for stacks that start with their first frame repeated or with
  zeros; once full it skips its k - 1 oldest slots, whose stacks reach into overwritten ones."""
  rows = _frame_stream(25, k, seed=k, stack_start=stack_start)
  example = jnp.zeros(rows[0][0].shape, jnp.uint8)
  frames = _fill_rows(replay_lib.init(capacity, example, jnp.zeros((), jnp.int32), frame_stack=k,
                                      stack_start=stack_start), rows)
  assert frames.obs.shape == (capacity, 2, 2, 3)
  n_step, gamma = 3, 0.9
  count = int(replay_lib.num_samplable(frames, n_step))
  size, skipped = min(capacity, len(rows)), (k - 1 if capacity < len(rows) else 0)
  assert count == size - (n_step - 1) - skipped
  _check_rows(_gather(frames, jnp.arange(count), n_step, gamma), rows,
              range(len(rows) - size + skipped, len(rows) - size + skipped + count), n_step, gamma)
  batch = jax.jit(replay_lib.sample, static_argnums=(2, 3))(frames, jax.random.key(0), 64, n_step, gamma)
  assert batch.obs.shape == (64, 2, 2, 3 * k)


@pytest.mark.parametrize('k', [1, 3])
def test_truncations_at_a_time_limit_keep_their_last_frames_in_a_store_of_capacity_over_the_limit(k):
  """Episodes of a time limit T (each truncated after T steps, some ended earlier by a terminal state): the
  store of truncated frames holds capacity // T + 1, wraps around many times, and every samplable
  transition still bootstraps from its episode's true last observation; the newest slot's too."""
  steps, capacity, limit = 60, 17, 5
  rows = _frame_stream(steps, k, seed=k, limit=limit)
  assert sum(1 for r in rows if r[3] and not r[2]) > 2 * (capacity // limit + 1)   # the store wraps
  example = jnp.zeros(rows[0][0].shape, jnp.uint8)
  replay = _fill_rows(replay_lib.init(capacity, example, jnp.zeros((), jnp.int32), frame_stack=k, episode_steps=limit),
                      rows)
  assert replay.final_obs.shape == (capacity // limit + 1, 2, 2, 3)
  n_step, gamma = 3, 0.9
  count = int(replay_lib.num_samplable(replay, n_step))
  first = steps - capacity + k - 1
  _check_rows(_gather(replay, jnp.arange(count), n_step, gamma), rows, range(first, first + count), n_step,
              gamma)
  one_step = _gather(replay, jnp.asarray([count + n_step - 2]), 1, gamma)    # the newest slot
  np.testing.assert_array_equal(one_step.next_obs[0], rows[-1][1])
