"""Ant whose ground friction is part of the environment state (lop_reference.md §5.5).

Two models (`model`):
* 'gymnasium' (the paper's Ant): gymnasium's ant.xml (the model file of gym's Ant-v3 and
  gymnasium's Ant-v4, loaded from the installed gymnasium package) simulated by MJX through Brax's
  'mjx' pipeline with the model's own contacts, solver options and RK4 integrator (timestep 0.01,
  frame skip 5: dt 0.05). Reward and termination are gymnasium's Ant-v4 with
  use_contact_forces=False: forward velocity (the torso's x over dt, read from MuJoCo's xpos as
  gymnasium does) + 1 - 0.5 |a|^2 on the raw action (controls are clamped to the ctrlrange [-1, 1]
  by the simulator); no contact cost, as in Ant-v3 on MuJoCo >= 2, whose cfrc_ext is never filled
  (openai/gym #1541), so that its contact cost and last 84 observations were zero. Terminated when
  qpos or qvel is not finite or the torso's z leaves [0.2, 1]. Observation qpos[2:], qvel (27-d).
  Episodes start at the model's qpos0 + U(-0.1, 0.1) and qvel 0.1 N(0, 1), drawn fresh at every
  episode end inside the step (one MJX forward pass, ~5 % of a step's 5 RK4 steps = 20 forward
  passes), so `refill` is a no-op. Collisions in ant.xml: the floor has contype = conaffinity = 1,
  every body geom (torso sphere, 12 leg capsules) contype 1 and conaffinity 0, so each body geom
  touches the floor and nothing else; MuJoCo takes a pair's friction as the larger of the two
  geoms', and the sliding friction is set on all of them (as the original's SlipperyAnt rewrote the
  default geom class, which the floor inherits), so it is the contact friction.
* 'brax' (any backend): Brax's own Ant (its ant.xml: only the feet collide with the floor, Brax's
  solver settings, its own initial pose), Brax's reward and termination (the same terms); its reset
  noise is drawn `starts` at a time by `refill` (PPO calls it once per rollout) and used in turn at
  episode ends: drawing one in every step, as a select needs under `vmap`, cost 3x the physics with
  Brax's cheap settings. With more episode ends than `starts` between refills they repeat.

The sliding friction of every geom is written into the system inside the jitted step from the
state, so one compiled program serves every friction and a friction change is just a new value in
the state. Each environment auto-resets on termination or at the time limit; at the first episode
end after `change_every` global steps since the last change it moves to the next friction of its
schedule (the original's SlipperyAnt rule). A stationary Ant is the same environment with a
constant schedule.
"""
import copy
import os
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl.rl import mjx_patches

BACKENDS = ('spring', 'positional', 'generalized', 'mjx', 'mujoco')   # mujoco: MuJoCo C on host threads
MODELS = ('gymnasium', 'brax')


def gymnasium_ant_xml() -> str:
  """The path of gymnasium's ant.xml (the model of gym's Ant-v3, gymnasium's Ant-v4/v5)."""
  try:
    import gymnasium.envs.mujoco  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("env.model='gymnasium' loads gymnasium's ant.xml, but gymnasium is not installed: "
                      'pip install gymnasium (or set env.model=brax).') from None
  return os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), 'assets', 'ant.xml')


def model_xml(model_file: str = '') -> str:
  """The Ant's MuJoCo model file (env.model=gymnasium): `model_file`, or gymnasium's ant.xml when ''."""
  return model_file or gymnasium_ant_xml()


def model_file_problem(model_file: str) -> str:
  """'' when `model_file` ('' : gymnasium's ant.xml, not checked) loads in MuJoCo as an Ant with gymnasium's
  layout (the observation, reward and termination read it: a 'torso' body, nq 15, nv 14, 8 actuators),
  else what is wrong with it."""
  if not model_file:
    return ''
  import mujoco  # pylint: disable=g-import-not-at-top
  try:
    model = mujoco.MjModel.from_xml_path(model_file)
  except Exception as e:  # pylint: disable=broad-except   (MuJoCo raises ValueError, or others, with its message)
    reason = ' '.join(str(e).split())[:200] or type(e).__name__   # MuJoCo's message on one line
    return (f"env.model_file={model_file!r} cannot be loaded by MuJoCo ({reason}); give a MuJoCo XML of the Ant, or "
            "leave it '' for gymnasium's ant.xml")
  has_torso = any(model.body(i).name == 'torso' for i in range(model.nbody))
  if not has_torso or (model.nq, model.nv, model.nu) != (15, 14, 8):
    return (f"env.model_file={model_file!r} is not an Ant with gymnasium's layout (a 'torso' body, nq 15, nv 14, "
            f"8 actuators; it has nq {model.nq}, nv {model.nv}, {model.nu} actuators"
            f"{'' if has_torso else ', no torso'}); give a MuJoCo XML of the Ant, or leave it '' for gymnasium's ant.xml")
  return ''


def _gymnasium_ant(xml_path: str):
  """gymnasium's Ant-v4 (use_contact_forces=False) on the model file `xml_path` as a Brax PipelineEnv on
  the 'mjx' pipeline."""
  import mujoco  # pylint: disable=g-import-not-at-top
  from brax.envs import base  # pylint: disable=g-import-not-at-top
  from brax.io import mjcf  # pylint: disable=g-import-not-at-top

  class GymnasiumAnt(base.PipelineEnv):
    """reset(key) and step(state, action) as gymnasium's AntEnv (see the module docstring)."""

    def __init__(self):
      mjx_patches.install()   # MJX steps as MuJoCo C (the plane-capsule frame, the line search)
      mj_model = mujoco.MjModel.from_xml_path(xml_path)
      # gymnasium's init_qpos is the model's qpos0 (torso at z 0.75, joints at 0), not the xml's
      # custom init_qpos (which Brax's System.init_q takes); numpy, so that it takes jax's dtype.
      self.init_qpos = mj_model.qpos0.copy()
      self.init_qvel = np.zeros(mj_model.nv)
      self.torso = mj_model.body('torso').id
      super().__init__(mjcf.load_model(mj_model), backend='mjx', n_frames=5)

    def reset(self, rng: chex.PRNGKey):
      qpos_key, qvel_key = jax.random.split(rng)
      qpos = jnp.asarray(self.init_qpos) + jax.random.uniform(qpos_key, self.init_qpos.shape, minval=-0.1, maxval=0.1)
      qvel = jnp.asarray(self.init_qvel) + 0.1 * jax.random.normal(qvel_key, self.init_qvel.shape)
      pipeline_state = self.pipeline_init(qpos, qvel)   # MJX normalises the torso's quaternion in qpos
      zero = jnp.zeros((), qpos.dtype)
      # MuJoCo C leaves qpos as set, so gymnasium's first observation has the noisy, unnormalised
      # quaternion (the physics is the same: both normalise it in kinematics and integration)
      return base.State(pipeline_state, jnp.concatenate([qpos[2:], qvel]), zero, zero)

    def step(self, state, action: jax.Array):
      before = state.pipeline_state
      after = self.pipeline_step(before, action)
      # xpos is from the forward pass that begins MuJoCo's last step (as after gymnasium's mj_step)
      x_velocity = (after.xpos[self.torso, 0] - before.xpos[self.torso, 0]) / self.dt
      reward = x_velocity + 1.0 - 0.5 * jnp.sum(jnp.square(action))
      z = after.qpos[2]
      healthy = jnp.isfinite(after.qpos).all() & jnp.isfinite(after.qvel).all() & (z >= 0.2) & (z <= 1.0)
      return state.replace(pipeline_state=after, obs=jnp.concatenate([after.qpos[2:], after.qvel]), reward=reward,
                           done=1.0 - healthy.astype(reward.dtype))

  return GymnasiumAnt()


@struct.dataclass
class EnvState:
  brax_state: object           # brax.envs.State of the current episode
  friction_index: jax.Array    # index into the seed's friction schedule, int32
  last_change: jax.Array       # global step of the last friction change, int32
  episode_step: jax.Array      # steps of the current episode, int32
  episode_return: jax.Array    # return of the current episode so far
  starts: object               # model 'brax': (starts,) brax states, initial states for the next episodes; else None
  start_count: jax.Array       # starts used since the last refill, int32


class Step(NamedTuple):
  reward: jax.Array
  done: jax.Array              # episode ended: termination or time limit (no bootstrap, as the original)
  terminated: jax.Array
  finished_return: jax.Array   # return of the episode that ended at this step (0 where none did)


class FrictionAnt:
  """Pure functions over EnvState; the brax environment object holds only static structure."""

  def __init__(self, backend: str = 'spring', episode_length: int = 1000, change_every: int = 2_000_000,
               starts: int = 8, model: str = 'brax', threads: int = 1, model_file: str = ''):
    for ok, message in setting_checks(backend, model, threads, model_file):
      if not ok:
        raise ValueError(message)
    if backend == 'mujoco':
      from ddl.rl import mujoco_host  # pylint: disable=g-import-not-at-top
      self.env = mujoco_host.HostAnt(model_xml(model_file), threads)
    elif model == 'gymnasium':
      self.env = _gymnasium_ant(model_xml(model_file))
    else:
      from brax import envs  # pylint: disable=g-import-not-at-top
      self.env = envs.get_environment('ant', backend=backend)
    self.model = model
    self.backend = backend
    self.episode_length = episode_length
    self.change_every = change_every
    self.starts = starts
    self.observation_size = 27
    self.action_size = self.env.action_size

  def _env(self, friction: jax.Array):
    """The brax env with `friction` as every geom's sliding friction: a shallow copy that lives only
    while tracing this step (nothing is written to self, so no tracer leaks)."""
    if self.backend == 'mujoco':
      return self.env.at(friction)
    env = copy.copy(self.env)
    sys = self.env.sys
    env.sys = sys.replace(geom_friction=sys.geom_friction.at[:, 0].set(friction))
    return env

  def reset(self, key: chex.PRNGKey, schedule: jax.Array) -> EnvState:
    """The first episode's state (model 'brax': and `starts` more, drawn in one vmapped reset: one
    copy of the reset in the program, which compiles in half the time of two)."""
    env = self._env(schedule[0])
    zero = jnp.zeros((), jnp.int32)
    if self.model == 'gymnasium':
      first, starts = env.reset(key), None
    else:
      drawn = jax.vmap(env.reset)(jax.random.split(key, self.starts + 1))
      first, starts = jax.tree.map(lambda x: x[0], drawn), jax.tree.map(lambda x: x[1:], drawn)
    return EnvState(brax_state=first, friction_index=zero, last_change=zero, episode_step=zero,
                    episode_return=jnp.zeros(()), starts=starts, start_count=zero)

  def refill(self, state: EnvState, key: chex.PRNGKey, schedule: jax.Array) -> EnvState:
    """Fresh initial states for the coming episodes (model 'brax'; 'gymnasium' draws them in `step`)."""
    if self.model == 'gymnasium':
      return state
    env = self._env(self.friction(state, schedule))
    return state.replace(starts=jax.vmap(env.reset)(jax.random.split(key, self.starts)),
                         start_count=jnp.zeros((), jnp.int32))

  def friction(self, state: EnvState, schedule: jax.Array) -> jax.Array:
    return schedule[state.friction_index]

  def step(self, state: EnvState, action: jax.Array, key: chex.PRNGKey, global_step: jax.Array,
           schedule: jax.Array):
    """One step; `global_step` counts the seed's steps including this one; `key` draws the next
    episode's initial state (model 'gymnasium'; 'brax' takes it from `starts`). Returns (state, Step)."""
    env = self._env(self.friction(state, schedule))
    episode_step = state.episode_step + 1
    if self.backend == 'mujoco':   # the step and the next start in one host call
      brax_state, start = env.step_and_start(state.brax_state, action, key, episode_step >= self.episode_length)
    else:
      brax_state = env.step(state.brax_state, action)
      start = env.reset(key) if self.model == 'gymnasium' else jax.tree.map(
          lambda x: x[state.start_count % self.starts], state.starts)
    episode_return = state.episode_return + brax_state.reward
    terminated = brax_state.done > 0
    done = terminated | (episode_step >= self.episode_length)
    change = done & (global_step - state.last_change > self.change_every)
    friction_index = jnp.minimum(state.friction_index + change, schedule.shape[0] - 1)
    last_change = jnp.where(change, global_step, state.last_change)
    zero = jnp.zeros((), jnp.int32)
    reward = brax_state.reward
    state = state.replace(
        brax_state=jax.tree.map(lambda a, b: jnp.where(done, a, b), start, brax_state), friction_index=friction_index, last_change=last_change,
        episode_step=jnp.where(done, zero, episode_step), episode_return=jnp.where(done, 0.0, episode_return),
        start_count=state.start_count + done)
    return state, Step(reward, done, terminated, jnp.where(done, episode_return, 0.0))

  def observation(self, state: EnvState) -> jax.Array:
    return state.brax_state.obs


def setting_checks(backend: str, model: str, threads: int = 1, model_file: str = ''):
  """(condition, message) checks of the Ant's physics settings: FrictionAnt raises the first that fails,
  the experiments' `checks` report them before anything is built."""
  problem = model_file_problem(model_file) if model == 'gymnasium' else ''
  return [
      (backend is None or backend in BACKENDS, f'env.backend={backend!r} is not known; use one of {BACKENDS}.'),
      (model in MODELS, f'env.model={model!r} is not known; use one of {MODELS}.'),
      (backend != 'mujoco' or model == 'gymnasium',
       "env.backend='mujoco' (MuJoCo C on host threads) steps the paper's Ant only; set env.model=gymnasium "
       "(or env.backend=mjx for Brax's Ant)"),
      (model != 'gymnasium' or backend in (None, 'mjx', 'mujoco'),   # None: AUTO, a platform's choice
       f"env.model='gymnasium' runs on MJX or MuJoCo C only, not env.backend={backend!r}; set env.backend=mjx or "
       'mujoco (or env.model=brax)'),
      (backend != 'mujoco' or threads is None or threads > 0,
       f'env.threads={threads} must be > 0 (host threads stepping MuJoCo C; left unset: one per core)'),
      (not model_file or model == 'gymnasium',
       f"env.model_file={model_file!r} is the paper's Ant's model file (env.model=gymnasium); Brax's Ant has its own: "
       "leave env.model_file ''"),
      (not problem, problem),
  ]


def from_config(env) -> FrictionAnt:
  """The Ant of a config's `env` section (the PPO and stream AC experiments, the benchmark)."""
  # settings left AUTO (a config built without a launch, e.g. in a test): this platform's choices
  from ddl import platform_defaults  # pylint: disable=g-import-not-at-top
  choices = platform_defaults.choices(jax.default_backend())
  backend = env.backend if env.backend is not None else choices['env.backend']
  threads = env.get('threads') if env.get('threads') is not None else choices['env.threads']
  return FrictionAnt(backend, env.episode_length, env.friction.change_every, env.starts, env.model, threads,
                     env.get('model_file', ''))


def friction_schedule(key: chex.PRNGKey, length: int, low: float, high: float) -> jax.Array:
  """`length` frictions log-uniform in [low, high] (the original's cfg/frictions rows)."""
  return jnp.exp(jax.random.uniform(key, (length,), minval=jnp.log(low), maxval=jnp.log(high)))
