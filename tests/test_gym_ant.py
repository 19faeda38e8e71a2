"""The paper's Ant (env.model=gymnasium: gymnasium's ant.xml through Brax's MJX pipeline) against
MuJoCo's own C simulator under gymnasium's Ant-v4, its per-episode reset noise, its friction in
the state (one program for every friction), and the experiments' wiring.

One jitted `FrictionAnt.step` serves every test here (compiled once, float64). The cross-check runs
the shipped settings, ant.xml's pyramidal friction cones, on MJX as ddl patches it
(`ddl.rl.mjx_patches`: MuJoCo C's plane-capsule contact frame and the line search as a while loop;
MJX 3.17 as shipped is off by up to ~1 in an observation at frictions 1 and 2, 2e-2 at 0.02, over
the same steps). gymnasium restarts from our state before every step (contacts make the motion
chaotic: differences of 1e-14 grow to O(1) within ~100 steps whatever the implementation), so each
step is compared from the same state. float64, because in float32 (what the experiments run)
rounding alone moves a step by far more (docs/rl.md)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

gymnasium = pytest.importorskip('gymnasium')
mujoco = pytest.importorskip('mujoco')

from conftest import load_config, trace_programs  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl.rl import env as env_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

STEPS = 300
# Measured maxima of one step from the same state over the 300 steps (3 and 6 episode ends at
# frictions 1 and 2): observations 1.4e-14 and 3.5e-14, rewards 9e-15. At friction 0.02: 2.9e-7 and
# 2.0e-7: the pyramid's edges n +- 0.02 t are nearly parallel, an ill-conditioned solve in which the
# two implementations' float64 roundings part further (not investigated beyond that). The
# tolerances leave a factor ~30 for other CPUs' rounding; unpatched MJX misses them by 10^4 or more.
TOLERANCES = {1.0: (1e-12, 1e-12), 2.0: (1e-12, 1e-12), 0.02: (1e-5, 1e-5)}   # (observation, reward)


@pytest.fixture(scope='module')
def sim():
  """(FrictionAnt built in float64, its step jitted once, and a blank state at an
  episode's last step, from which that step starts fresh episodes: one program for starts and steps,
  as a jitted reset would be another minute of compilation and an eager one op by op longer still)."""
  with jax.enable_x64(True):
    ant = env_lib.FrictionAnt('mjx', episode_length=1000, change_every=10**9, model='gymnasium')
    shapes = jax.eval_shape(ant.reset, jax.random.PRNGKey(0), jnp.ones(1))
    blank = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    blank = jax.device_put(blank.replace(episode_step=jnp.int32(ant.episode_length - 1)), jax.devices()[0])
  # LLVM's usual optimisation for this one program (the tests' flags lower it, conftest): these tests
  # run it ~900 times, and at level 0 that took twice as long while compiling no faster
  return ant, jax.jit(ant.step, compiler_options={'xla_backend_optimization_level': 2}), blank


def _start(sim, key, schedule, **replace):
  """The state `FrictionAnt.reset(key, schedule)` gives (the step's fresh episode draws its start
  from `key` as the reset does), with `replace`d fields."""
  ant, step, blank = sim
  state, out = step(blank, np.zeros(ant.action_size), key, jnp.int32(1), schedule)
  assert bool(out.done)
  state = state.replace(start_count=jnp.zeros_like(state.start_count), **replace)
  return jax.device_put(state, jax.devices()[0])   # committed, as the step's outputs are: one cache entry


def _qpos_qvel(state):
  """qpos, qvel as gymnasium holds them: x, y and the observation (an episode's first keeps the
  unnormalised quaternion, as MuJoCo C does)."""
  obs = np.asarray(state.brax_state.obs, np.float64)
  return np.concatenate([np.asarray(state.brax_state.pipeline_state.qpos[:2], np.float64), obs[:13]]), obs[13:]


def _sync(gym, state):
  """gymnasium's Ant at our state: qpos, qvel, and the torso position its next reward starts from
  (MuJoCo's xpos after a step is from the forward pass that began its last step) and the solver's
  warm start."""
  gym.unwrapped.set_state(*_qpos_qvel(state))
  physics = state.brax_state.pipeline_state
  gym.unwrapped.data.xpos[:] = np.asarray(physics.xpos)
  gym.unwrapped.data.qacc_warmstart[:] = np.asarray(physics.qacc_warmstart)


@pytest.mark.parametrize('friction', sorted(TOLERANCES))
def test_matches_mujoco_c_under_gymnasium_ant_v4(sim, friction):
  """The same start and 300 uniform actions, each step from the same state (gymnasium restarts at ours,
  and at our env's fresh start after each end): observations, rewards and terminations agree."""
  ant, step, _ = sim
  actions = np.random.default_rng(0).uniform(-1, 1, (STEPS, ant.action_size))
  gym = gymnasium.make('Ant-v4', use_contact_forces=False)
  gym.reset(seed=0)
  gym.unwrapped.model.geom_friction[:, 0] = friction
  assert gym.unwrapped.model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
  with jax.enable_x64(True):
    schedule = jnp.array([friction])
    state = _start(sim, jax.random.PRNGKey(0), schedule)
    obs_dev, reward_dev, episodes = 0.0, 0.0, 0
    for t, action in enumerate(actions):
      _sync(gym, state)
      state, out = step(state, action, jax.random.PRNGKey(t), jnp.int32(t + 1), schedule)
      obs, reward, terminated, truncated, _ = gym.step(action)
      assert bool(out.terminated) == terminated and bool(out.done) == terminated and not truncated, t
      reward_dev = max(reward_dev, abs(float(out.reward) - reward))
      if terminated:   # our env is at the next episode's start: gymnasium restarts there
        episodes += 1
      else:
        obs_dev = max(obs_dev, float(np.abs(np.asarray(ant.observation(state)) - obs).max()))
  print(f'friction {friction}: max |obs| deviation {obs_dev:.1e}, |reward| {reward_dev:.1e}, {episodes} episodes ended')
  assert episodes >= 2 or friction < 0.1   # terminations and restarts were compared (0.02: the Ant slides)
  obs_tol, reward_tol = TOLERANCES[friction]
  assert obs_dev < obs_tol and reward_dev < reward_tol


def test_reset_noise_is_fresh_per_episode_and_as_gymnasium(sim):
  """Ending episodes with 300 keys: starts differ, qpos = qpos0 + U(-0.1, 0.1), qvel = 0.1 N(0, 1)."""
  ant, step, _ = sim
  n = 300
  with jax.enable_x64(True):
    schedule = jnp.array([1.0])
    last = _start(sim, jax.random.PRNGKey(0), schedule, episode_step=jnp.int32(ant.episode_length - 1))
    qpos, qvel = [], []
    for i in range(n):
      state, out = step(last, np.zeros(ant.action_size), jax.random.PRNGKey(i), jnp.int32(1), schedule)
      assert bool(out.done) and int(state.episode_step) == 0
      q, v = _qpos_qvel(state)
      qpos.append(q)
      qvel.append(v)
    again, _ = step(last, np.zeros(ant.action_size), jax.random.PRNGKey(0), jnp.int32(1), schedule)
  np.testing.assert_array_equal(_qpos_qvel(again)[0], qpos[0])   # a key decides the start
  noise = np.array(qpos) - ant.env.init_qpos
  qvel = np.array(qvel)
  assert np.unique(noise[:, 0]).size == n and np.abs(noise).max() <= 0.1
  assert np.allclose(ant.env.init_qpos, [0, 0, 0.75, 1, 0, 0, 0] + [0] * 8)   # the model's qpos0, not the xml's init_qpos
  # uniform(-0.1, 0.1): mean 0 (s.e. 0.0033 over 300), std 0.0577; normal: mean 0 (s.e. 0.0058), std 0.1
  assert np.abs(noise.mean(0)).max() < 0.02 and np.allclose(noise.std(0), 0.2 / np.sqrt(12), rtol=0.2)
  assert np.abs(qvel.mean(0)).max() < 0.035 and np.allclose(qvel.std(0), 0.1, rtol=0.2)


def test_friction_changes_the_physics_without_recompiling(sim):
  """The same start and actions at friction 0.3 and 2.0 (once on the floor) part, through one program."""
  ant, step, _ = sim
  actions = np.random.default_rng(1).uniform(-1, 1, (12, ant.action_size))
  ends = []
  with jax.enable_x64(True):
    for friction in (0.3, 2.0):
      schedule = jnp.array([friction])
      state = _start(sim, jax.random.PRNGKey(3), schedule)
      for t, action in enumerate(actions):
        state, out = step(state, action, jax.random.PRNGKey(t), jnp.int32(t + 1), schedule)
        assert not bool(out.done)
      ends.append(_qpos_qvel(state)[0])
  assert np.abs(ends[0] - ends[1]).max() > 1e-2
  assert step._cache_size() == 1  # pylint: disable=protected-access


def test_model_and_backend_are_checked():
  with pytest.raises(ValueError, match=r"env.model='mujoco' is not known"):
    env_lib.FrictionAnt('mjx', model='mujoco')
  with pytest.raises(ValueError, match=r"runs on MJX or MuJoCo C only, not env.backend='spring'; set env.backend=mjx or mujoco"):
    env_lib.FrictionAnt('spring', model='gymnasium')


@pytest.mark.parametrize('name,arg', [('ant', 'smoke,std'), ('stream_ant', 'smoke')])
def test_experiments_trace_a_chunk_with_the_gymnasium_model(name, arg):
  """PPO and stream AC (tiny smoke configs, model gymnasium): init and one chunk trace (not compiled)."""
  config = load_config(name, arg)
  assert load_config(name).env.model == 'gymnasium'
  config.env.model, config.env.backend = 'gymnasium', 'mjx'
  experiment, state, values = trace_programs(config)
  assert experiment.env.model == 'gymnasium'
  assert state.env.starts is None
  assert values['episode_return'].shape == () and values['friction'].dtype == jnp.float32
