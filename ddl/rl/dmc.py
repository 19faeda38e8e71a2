"""DeepMind Control Suite tasks on MJX, from state: MuJoCo Playground's `dm_control_suite` (its
CheetahRun, WalkerRun, HopperHop, ReacherHard, ...) and ddl's ports of tasks it lacks (`PORTED`:
QuadrupedRun, `ddl.rl.quadruped`), for the actor-critic track of Ma et al. 2024
(`ddl.experiments.drqv2`).

The tasks run on MJX's JAX implementation (`impl='jax'`: one XLA program on any platform; Playground
defaults to Warp, which leaves the program for every step on a CPU). `physics`: 'dm_control' (the
default) restores what Playground changed in dm_control's model files for speed, MuJoCo's solver
iterations (100, line search 50), Euler's implicit damping and the physics timestep of Finger, Fish,
Pendulum and Reacher (`DM_CONTROL_TIMESTEP`: Playground halves or quarters it), and observes the
state after the step (Playground's reward and observation read the quantities MJX's step computed
before integrating: a step late for sensors, positions of bodies), so that a step is dm_control's own
(tests/test_dmc.py: within 2e-4 of dm_control over 300 steps in float32); 'playground' keeps its
settings (4 and 8 iterations, no implicit damping: CheetahRun's joints move by ~1 after one step from
the same state; ~1.5-2x faster on a CPU). An agent step repeats its action `action_repeat` times and
sums the rewards (DrQ-v2's ActionRepeatWrapper). Episodes last the task's
`episode_length` control steps (1 000: dm_control's 10 s at 0.01 s), a time limit that bootstraps;
an episode also ends (terminal) if the physics turns NaN.

From pixels (`pixels=True`, DrQ-v2's setting): the observation is the last `frame_stack` frames of
camera `camera` (DrQ-v2's: 0, the quadruped's 2), `image_size` square, uint8, stacked on the channels
(NHWC: (84, 84, 9)); an episode starts with its first frame repeated (DrQ-v2's FrameStackWrapper). The
frames are rendered inside the program by MuJoCo Warp's ray tracer (`ddl.rl.render`) after each agent
step; a run's start states are rendered once, when it starts.

A dm_control reset stabilises the model with 200 physics steps. Inside a vmapped program a reset at
an episode end would run in every step (a select, not a branch), so a run's reset states are drawn
at its start, one per episode its `steps` agent steps hold (a time limit ends every episode at the
same step; an episode ended early by NaN physics takes the next, and past the last they repeat).
"""
import functools
import importlib.util
from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

from ddl.rl import mjx_patches
from ddl.rl import render


PHYSICS = ('dm_control', 'playground')
# dm_control's physics timesteps (its suite's model files, dm_control 1.0.50) where Playground's differ
# (sim_dt; the control step, ctrl_dt, is the same): physics='dm_control' steps at dm_control's
DM_CONTROL_TIMESTEP = {'Finger': 0.01, 'Fish': 0.004, 'Pendulum': 0.02, 'Reacher': 0.02}
EULERDAMP = 1 << 15    # mjtDisableBit.mjDSBL_EULERDAMP


def installed() -> bool:
  return importlib.util.find_spec('mujoco_playground') is not None


# dm_control tasks that Playground lacks, ported in ddl: name -> module with default_config() and load(config)
PORTED = {'QuadrupedRun': 'ddl.rl.quadruped'}


def _domain(name: str) -> str:
  """A task's dm_control domain as Playground names it: 'Reacher' of 'ReacherHard'."""
  return next((d for d in DM_CONTROL_TIMESTEP if name.startswith(d)), name)


def _default_config(name: str):
  if name in PORTED:
    return importlib.import_module(PORTED[name]).default_config()
  from mujoco_playground import registry  # pylint: disable=g-import-not-at-top
  return registry.get_default_config(name)


def _load(name: str, config=None):
  """The task's MjxEnv: Playground's, or ddl's port (`PORTED`)."""
  if name in PORTED:
    return importlib.import_module(PORTED[name]).load(config)
  from mujoco_playground import registry  # pylint: disable=g-import-not-at-top
  _fix_playground_reacher()
  return registry.load(name, config=config)


def _fix_playground_reacher() -> None:
  """Playground 0.2.0 builds Reacher's model with `MjSpec.find_body` unless `mujoco.__version__ >= "3.3.0"`,
  compared as strings: "3.17.0" is smaller, and MuJoCo 3.17 has no find_body, so ReacherEasy / ReacherHard
  do not load. Its builder as Playground means it (`spec.body`). Drop it once Playground compares versions
  as numbers (tests/test_dmc.py loads ReacherHard)."""
  from mujoco_playground._src.dm_control_suite import reacher  # pylint: disable=g-import-not-at-top

  def make_model(xml_path, target_size: float, assets) -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_string(xml_path.read_text(), assets)
    spec.body('target').first_geom().size[0] = target_size
    return spec.compile()
  reacher._make_model = make_model   # pylint: disable=protected-access


@functools.lru_cache(maxsize=None)
def observation_size(name: str) -> int:
  """The length of a task's state observation (its model loaded once per process)."""
  return int(_load(name).observation_size)


@functools.lru_cache(maxsize=None)
def camera_count(name: str) -> int:
  """The cameras of a task's model (its model loaded once per process)."""
  return int(_load(name).mj_model.ncam)


def task_names() -> Tuple[str, ...]:
  from mujoco_playground import registry  # pylint: disable=g-import-not-at-top
  return tuple(registry.dm_control_suite.ALL_ENVS) + tuple(PORTED)


@struct.dataclass
class EnvState:
  task: chex.ArrayTree        # the Playground State of the running episode
  starts: chex.ArrayTree      # (starts, ...) Playground States drawn at the start for the next episodes
  used: jax.Array             # starts used so far, int32
  t: jax.Array                # agent steps into the episode, int32
  stack: Optional[jax.Array] = None          # from pixels: (size, size, 3 frame_stack) uint8, the observation
  start_frames: Optional[jax.Array] = None   # from pixels: (starts, size, size, 3) uint8, the starts' first frames


class Control:
  """A dm_control task on MJX with action repeat and auto-reset: reset, step; pure. `steps`: the
  agent steps a run takes (sizes its reset states drawn ahead). `pixels`: observe `frame_stack` frames of
  `camera` (None: DrQ-v2's choice for the task) at `image_size`, not the state."""

  def __init__(self, name: str, action_repeat: int = 2, steps: int = 1, physics: str = 'dm_control',
               pixels: bool = False, image_size: int = 84, frame_stack: int = 3, camera: Optional[int] = None):
    mjx_patches.install()   # MJX steps as MuJoCo C (the plane-capsule frame, the line search)
    config = _default_config(name)
    config.impl = 'jax'
    if physics == 'dm_control':
      config.sim_dt = DM_CONTROL_TIMESTEP.get(_domain(name), config.sim_dt)
    self.env = _load(name, config)
    self.physics = physics
    # Playground's walkers observe the torso's uprightness (xmat zz) as its height; dm_control's the z of its position
    self.walker_height = 2 * (self.env.mj_model.nbody - 1) if name.startswith('Walker') else None
    self.stale_sensors = acceleration_sensors(self.env.mj_model)
    if physics == 'dm_control':
      restore_dm_control_physics(self.env)
    elif physics != 'playground':
      raise ValueError(f'physics={physics!r} is not known; use one of {PHYSICS}')
    self.action_repeat = action_repeat
    self.episode_steps = -(-int(config.episode_length) // action_repeat)
    self.starts = max(1, steps // self.episode_steps)
    self.obs_size = int(self.env.observation_size)
    self.action_size = int(self.env.action_size)
    self.renderer, self.frame_stack = None, frame_stack
    self.obs_shape = (self.obs_size,)
    if pixels:
      camera = default_camera(name) if camera is None else camera
      self.renderer = render.Renderer(self.env.mj_model, camera, image_size)
      self.obs_shape = (image_size, image_size, 3 * frame_stack)

  def _reset(self, key: chex.PRNGKey) -> chex.ArrayTree:
    """A Playground reset with every leaf strongly typed (its `time` is a weak Python float, which
    the step makes strong: a program fed its own output would compile twice)."""
    task = jax.tree.map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), self.env.reset(key))
    return self._observed(task) if self.physics == 'dm_control' else task

  def _observed(self, task):
    """The task observed after its last step, as dm_control (a forward pass: positions, sensors; the
    acceleration-stage sensors kept from the step) with dm_control's observation and reward of it."""
    data = mjx.forward(self.env.mjx_model, task.data)
    if self.stale_sensors.any():
      data = data.replace(sensordata=jnp.where(self.stale_sensors, task.data.sensordata, data.sensordata))
    obs = self.env._get_obs(data, task.info)   # pylint: disable=protected-access
    if self.walker_height is not None:
      obs = obs.at[self.walker_height].set(data.xpos[self.env._torso_id, 2])   # pylint: disable=protected-access
    reward = self.env._get_reward(data, jnp.asarray(data.ctrl), task.info, task.metrics)  # pylint: disable=protected-access
    return task.replace(data=data, obs=obs, reward=reward)

  def _frame(self, data) -> jax.Array:
    """The camera's frame of the state after a step (positions and cameras as a forward pass leaves them;
    Playground's physics keeps the step's own, from before its integration)."""
    if self.physics != 'dm_control':
      data = mjx.camlight(self.env.mjx_model, mjx.com_pos(self.env.mjx_model, mjx.kinematics(self.env.mjx_model, data)))
    return self.renderer.frames(data)

  def reset(self, key: chex.PRNGKey) -> Tuple[EnvState, jax.Array]:
    # the first episode's start and the next ones' in one vmapped draw
    drawn = jax.vmap(self._reset)(jax.random.split(key, self.starts + 1))
    task = jax.tree.map(lambda x: x[0], drawn)
    zero = jnp.zeros((), jnp.int32)
    state = EnvState(task=task, starts=jax.tree.map(lambda x: x[1:], drawn), used=zero, t=zero)
    if self.renderer is None:
      return state, task.obs
    frames = jax.lax.map(lambda t: self._frame(t.data), drawn)    # one start per step: one vmap level at a time
    stack = jnp.tile(frames[0], (1, 1, self.frame_stack))
    return state.replace(stack=stack, start_frames=frames[1:]), stack

  def step(self, state: EnvState, action: jax.Array):
    """-> (state, observation, reward summed over the repeats, terminated, truncated, the last
    observation of the step's episode: the next observation to store, the true one at an end)."""
    def physics(task, _):
      task = self.env.step(task, action)
      if self.physics == 'dm_control':    # observe after the step, as dm_control (mj_step1 on the new state)
        task = self._observed(task)
      return task, task.reward

    task, rewards = jax.lax.scan(physics, state.task, None, length=self.action_repeat)
    reward = jnp.sum(rewards)
    t = state.t + 1
    terminated = task.done > 0
    truncated = jnp.logical_and(t >= self.episode_steps, jnp.logical_not(terminated))
    ended = jnp.logical_or(terminated, truncated)
    fresh = jax.tree.map(lambda s: s[state.used % self.starts], state.starts)
    final_obs = jnp.nan_to_num(task.obs)
    stack = None
    if self.renderer is not None:
      final_obs = jnp.concatenate([state.stack[..., 3:], self._frame(task.data)], axis=-1)
      stack = jnp.where(ended, jnp.tile(state.start_frames[state.used % self.starts], (1, 1, self.frame_stack)),
                        final_obs)
    task = jax.tree.map(lambda new, old: jnp.where(ended, new, old), fresh, task)
    state = EnvState(task=task, starts=state.starts, used=state.used + ended.astype(jnp.int32),
                     t=jnp.where(ended, 0, t), stack=stack, start_frames=state.start_frames)
    return state, task.obs if stack is None else stack, reward, terminated, truncated, final_obs


def from_config(config) -> Control:
  """The task of an experiment's config: its `env` section (name, action_repeat, physics, pixels and their
  image_size, frame_stack, camera (-1: DrQ-v2's for the task)) and a run's length (`total_steps`)."""
  e = config.env
  camera = e.get('camera', -1)
  return Control(e.name, e.action_repeat, config.total_steps, e.physics, pixels=e.get('pixels', False),
                 image_size=e.get('image_size', 84), frame_stack=e.get('frame_stack', 3),
                 camera=None if camera < 0 else camera)


def default_camera(name: str) -> int:
  """DrQ-v2's camera for a task (its dmc.py: `dict(quadruped=2).get(domain, 0)`)."""
  return 2 if name.startswith('Quadruped') else 0


def acceleration_sensors(model) -> np.ndarray:
  """(nsensordata,) bool: the sensordata of acceleration-stage sensors (accelerometer, force, torque).
  dm_control's step ends with mj_step1, which does not update them, so it observes them as its last
  substep's forward pass left them."""
  return np.concatenate([np.full(model.sensor_dim[i], model.sensor_needstage[i] == mujoco.mjtStage.mjSTAGE_ACC)
                         for i in range(model.nsensor)] or [np.zeros(0, bool)])


def restore_dm_control_physics(env) -> None:
  """MuJoCo's solver iterations and Euler damping in a Playground task's model (dm_control's suite
  files keep MuJoCo's defaults; Playground's copies lower the iterations and disable the damping)."""
  model = env.mj_model
  model.opt.iterations, model.opt.ls_iterations = 100, 50
  model.opt.disableflags &= ~EULERDAMP
  env._mjx_model = mjx.put_model(model, impl='jax')   # pylint: disable=protected-access
