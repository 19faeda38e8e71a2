"""The DeepMind Control tasks on MJX (ddl.rl.dmc) against dm_control's own: from the same state and
under the same actions, the physics, observation and reward agree (to float32's rounding) for
several hundred control steps (CheetahRun), a hundred (ReacherHard: dm_control's timestep, 4x
Playground's) or a few dozen (WalkerRun, HopperHop) with the settings the experiments train with
(physics='dm_control')."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('mujoco_playground')
suite = pytest.importorskip('dm_control.suite')

from ddl.rl import dmc  # pylint: disable=g-import-not-at-top
from mujoco_playground._src import mjx_env  # pylint: disable=g-import-not-at-top

# (Playground task or ddl's port, dm_control domain and task, dm_control's observation keys in the
# task's order, steps): the walker's contacts amplify float32's rounding (1e-5 after 1 step, 2e-3
# after 25, 0.3 after 50), the cheetah's do not (5.6e-5 after 300 with ddl.rl.mjx_patches, 1.4e-4
# without); the quadruped's state and reward agree to 1e-4 and 1e-7 over 15 steps and its observation
# to ~3e-4 in every step but one, in which a toe's contact force sensor differs by 2e-2 (arcsinh of
# ~1 N; likely a toe contact starting a substep apart in the two simulators): its observation's tolerance
# is 3e-2. The quadruped's cross-check compiles for ~50 s: it runs with `-m slow`; the default run
# traces its step and checks its reset (test_quadruped_reset_raises_the_torso_as_dm_control).
TASKS = [('CheetahRun', 'cheetah', 'run', ('position', 'velocity'), 300, 5e-3),
         ('WalkerRun', 'walker', 'run', ('orientations', 'height', 'velocity'), 25, 5e-3),
         # touch sensors, acceleration-stage: observed as dm_control leaves them (dmc.acceleration_sensors;
         # re-read after the step, they were off by up to 7.7 in log1p of the force)
         ('HopperHop', 'hopper', 'hop', ('position', 'velocity', 'touch'), 25, 5e-3),
         # ReacherHard loads through ddl's fix of Playground 0.2.0's version test (dmc._fix_playground_reacher)
         # and steps at dm_control's timestep (the default run checks both without compiling its step)
         pytest.param('ReacherHard', 'reacher', 'hard', ('position', 'to_target', 'velocity'), 100, 5e-3,
                      marks=pytest.mark.slow),
         pytest.param('QuadrupedRun', 'quadruped', 'run', ('egocentric_state', 'torso_velocity', 'torso_upright',
                                                           'imu', 'force_torque'), 15, 3e-2, marks=pytest.mark.slow)]


def _mocap_targets(model, physics) -> np.ndarray:
  """(nmocap, 3): Playground's mocap bodies (Reacher's target) placed where dm_control's episode put the
  geom of the same name (its target is a world geom that dm_control moves per episode)."""
  import mujoco  # pylint: disable=g-import-not-at-top
  targets = np.zeros((model.nmocap, 3))
  for body in np.flatnonzero(model.body_mocapid >= 0):
    geom = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, model.body_geomadr[body])
    targets[model.body_mocapid[body]] = physics.named.data.geom_xpos[geom]
  return targets


def _follow(control, env_ref, steps, seed=0):
  """Runs `control` (action repeat 1) from dm_control's state under dm_control's actions (one
  compiled scan); the worst differences of the state, the observation and the reward."""
  from mujoco import mjx  # pylint: disable=g-import-not-at-top
  physics = env_ref.physics
  start = jnp.asarray(np.concatenate([physics.data.qpos, physics.data.qvel]), jnp.float32)
  mocap = jnp.asarray(_mocap_targets(control.env.mj_model, physics), jnp.float32)
  warmstart = jnp.asarray(physics.data.qacc_warmstart, jnp.float32)
  rng = np.random.default_rng(seed)
  actions = rng.uniform(-1, 1, (steps, control.action_size)).astype(np.float32)
  refs = dict(state=[], obs=[], reward=[])
  for action in actions:
    time_step = env_ref.step(action)
    refs['state'].append(np.concatenate([physics.data.qpos, physics.data.qvel]))
    refs['obs'].append(np.concatenate([np.ravel(time_step.observation[k]) for k in env_ref.keys]))
    refs['reward'].append(time_step.reward)

  @jax.jit
  def run(start, warmstart, actions, mocap):
    # the task's state at dm_control's (a Playground reset stabilises for 200 steps: not needed here)
    model = control.env.mjx_model
    data = mjx.make_data(model).replace(qpos=start[:model.nq], qvel=start[model.nq:], qacc_warmstart=warmstart,
                                        mocap_pos=mocap)
    data = mjx.forward(model, data)
    shapes = jax.eval_shape(control.env.reset, jax.random.PRNGKey(0))
    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
    task = mjx_env.State(data, control.env._get_obs(data, {}), jnp.zeros(()), jnp.zeros(()),  # pylint: disable=protected-access
                         zeros(shapes.metrics), zeros(shapes.info))
    zero = jnp.zeros((), jnp.int32)
    state = dmc.EnvState(task=task, starts=jax.tree.map(lambda x: x[None], task), used=zero, t=zero)

    def one(state, action):
      state, _, reward, _, _, final_obs = control.step(state, action)
      d = state.task.data
      return state, dict(state=jnp.concatenate([d.qpos, d.qvel]), obs=final_obs, reward=reward)
    return jax.lax.scan(one, state, actions)[1]

  got = run(start, warmstart, jnp.asarray(actions), mocap)
  return {k: float(np.max(np.abs(np.asarray(got[k]) - np.asarray(refs[k])))) for k in refs}


@pytest.mark.parametrize('name,domain,task,keys,steps,obs_tolerance', TASKS)
def test_mjx_task_follows_dm_control(name, domain, task, keys, steps, obs_tolerance):
  env_ref = suite.load(domain, task, task_kwargs={'random': 0})
  env_ref.reset()
  env_ref.keys = keys
  worst = _follow(dmc.Control(name, action_repeat=1), env_ref, steps)
  # float32 against dm_control's float64 (velocities up to ~20); Playground's own settings are off by ~1
  # after the first step
  assert worst['state'] < 5e-3 and worst['obs'] < obs_tolerance and worst['reward'] < 1e-4, worst


def test_quadruped_reset_raises_the_torso_as_dm_control():
  """ddl's Quadruped Run reset (a while loop over MJX's collision) finds dm_control's non-contacting
  height (`quadruped._find_non_contacting_height`) for the same orientations; its agent step traces
  to the observation dm_control's task has (their values: the slow cross-check above, which
  runs them in `dmc.Control`; compiling and tracing that here took a minute of the suite)."""
  from dm_control.suite import quadruped as dm_quadruped  # pylint: disable=g-import-not-at-top
  from ddl.rl import quadruped  # pylint: disable=g-import-not-at-top
  env = quadruped.load()
  from mujoco import mjx  # pylint: disable=g-import-not-at-top
  blank = mjx_env.State(mjx.make_data(env.mjx_model), jnp.zeros(78), jnp.zeros(()), jnp.zeros(()), {},
                        {'rng': jax.random.PRNGKey(0)})
  stepped = jax.eval_shape(env.step, blank, jnp.zeros(12))   # (the reset: its height search below, then this
                                                               # observation of a forward pass)
  assert stepped.obs.shape == (78,) and stepped.reward.shape == stepped.done.shape == ()
  assert dmc.acceleration_sensors(env.mj_model).sum() == 3 + 24    # accelerometer, the toes' force and torque
  assert env.n_substeps == 4 and -(-env._config.episode_length // 2) == 500   # pylint: disable=protected-access
  orientations = np.random.default_rng(3).standard_normal((4, 4))
  orientations /= np.linalg.norm(orientations, axis=1, keepdims=True)
  heights = jax.jit(jax.vmap(env.non_contacting_height))(jnp.asarray(orientations, jnp.float32))
  physics = suite.load('quadruped', 'run', task_kwargs={'random': 0}).physics
  for orientation, height in zip(orientations, np.asarray(heights)):
    dm_quadruped._find_non_contacting_height(physics, orientation)   # pylint: disable=protected-access
    assert abs(height - float(physics.named.data.qpos['root'][2])) < 1e-5, (orientation, height)


def test_physics_dm_control_keeps_dm_controls_timestep_where_playground_changed_it():
  """Playground steps Finger, Fish, Pendulum and Reacher at a finer timestep than dm_control; physics=
  'dm_control' steps at dm_control's (its control step unchanged), and ReacherHard loads at all on MuJoCo
  3.17 (`-m slow` follows its step against dm_control's for 100 steps)."""
  for name in ('ReacherHard', 'PendulumSwingup', 'FingerSpin'):
    reference = suite.load(*{'ReacherHard': ('reacher', 'hard'), 'PendulumSwingup': ('pendulum', 'swingup'),
                             'FingerSpin': ('finger', 'spin')}[name])
    ours = dmc.Control(name, action_repeat=1, physics='dm_control').env
    assert ours.mj_model.opt.timestep == reference.physics.timestep(), name
    assert ours.dt == reference.control_timestep(), name
    assert dmc.Control(name, action_repeat=1, physics='playground').env.mj_model.opt.timestep < ours.mj_model.opt.timestep
