"""env.backend=mujoco: the paper's Ant on MuJoCo's C simulator, stepped on host threads from inside the
compiled step (ddl.rl.mujoco_host). It is gymnasium's Ant-v4 on the same simulator, so the float64
physics state must equal gymnasium's bit for bit over whole episodes, resets included, at any
friction and any thread count."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

gymnasium = pytest.importorskip('gymnasium')
mujoco = pytest.importorskip('mujoco')

from ddl.rl import env as env_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl.rl import mujoco_host  # pylint: disable=g-import-not-at-top,wrong-import-position

STEPS = 1000


def _physics(state):
  """qpos, qvel (float64) of a FrictionAnt state on the mujoco backend."""
  s = mujoco_host.from_bits(np.asarray(state.brax_state.pipeline_state))
  layout = mujoco_host.Layout(15, 14)
  return s[layout.qpos], s[layout.qvel], s


def _run(threads: int, friction: float, runs: int = 1, steps: int = STEPS):
  """FrictionAnt(mujoco) for `steps` uniform actions, `runs` copies vmapped (the same actions, other
  reset keys): per step (qpos, qvel, reward, done, terminated) of run 0, and the final states."""
  ant = env_lib.FrictionAnt('mujoco', episode_length=1000, change_every=10**9, model='gymnasium', threads=threads)
  schedule = jnp.array([friction], jnp.float32)
  actions = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (steps, ant.action_size)), jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(0), runs)

  @jax.jit
  def rollout(keys):
    def one(key):
      state = ant.reset(key, schedule)
      def body(state, t):
        state, out = ant.step(state, actions[t], jax.random.fold_in(key, t), t + 1, schedule)
        return state, (state.brax_state.pipeline_state, out.reward, out.done, out.terminated)
      return (state.brax_state.pipeline_state,) + jax.lax.scan(body, state, jnp.arange(steps))[1]
    return jax.vmap(one)(keys)

  return ant, np.asarray(actions), jax.tree.map(np.asarray, rollout(keys))


@pytest.mark.parametrize('friction', [1.0, 0.02, 2.0])
def test_equals_gymnasium_ant_v4_bit_for_bit(friction):
  """1 000 steps from our start: after every step our float64 qpos and qvel are gymnasium's exactly,
  rewards agree to float32, terminations agree, and at each termination gymnasium resets to the same
  noisy start (mj_resetData, set_state) and goes on from there."""
  _, actions, (start, bits, reward, done, terminated) = _run(1, friction)
  layout = mujoco_host.Layout(15, 14)
  states = mujoco_host.from_bits(bits[0])
  first = mujoco_host.from_bits(start[0])
  gym = gymnasium.make('Ant-v4', use_contact_forces=False)
  gym.reset(seed=0)
  sim = gym.unwrapped
  sim.model.geom_friction[:, 0] = float(np.float32(friction))     # the run's friction is a float32

  def restart(state):
    mujoco.mj_resetData(sim.model, sim.data)
    sim.set_state(state[layout.qpos], state[layout.qvel])
    np.testing.assert_array_equal(sim.data.qacc_warmstart, state[layout.warmstart])
    np.testing.assert_array_equal(sim.data.xpos[1], state[layout.xpos])

  restart(first)
  episodes = 0
  for t in range(STEPS):
    _, r, term, _, _ = sim.step(actions[t])    # unwrapped: our env's time limit restarts it below
    assert bool(terminated[0, t]) == term, t
    assert abs(float(reward[0, t]) - r) <= 1e-6 * max(1.0, abs(r)), t
    if done[0, t]:    # our state is the next episode's start
      episodes += 1
      restart(states[t])
    else:
      np.testing.assert_array_equal(sim.data.qpos, states[t][layout.qpos], err_msg=f'step {t}')
      np.testing.assert_array_equal(sim.data.qvel, states[t][layout.qvel], err_msg=f'step {t}')
  assert episodes >= 1 or friction < 0.1


def test_the_thread_count_changes_nothing():
  """4 runs on 1 and on 3 threads (uneven shares), 200 steps: the same bits. (Exact resume on this
  backend: the ant smokes run on it, tests/test_rl.py and tests/test_stream_ac.py.)"""
  one = _run(1, 1.0, runs=4, steps=200)[2]
  three = _run(3, 1.0, runs=4, steps=200)[2]
  for a, b in zip(one, three):
    np.testing.assert_array_equal(a, b)


def test_bad_settings_name_the_fix():
  with pytest.raises(ValueError, match=r"env.backend='mujoco' .* steps the paper's Ant only; set env.model=gymnasium"):
    env_lib.FrictionAnt('mujoco', model='brax')
  with pytest.raises(ValueError, match=r'env.threads=0 must be > 0'):
    env_lib.FrictionAnt('mujoco', model='gymnasium', threads=0)
