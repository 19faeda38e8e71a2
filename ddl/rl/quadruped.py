"""dm_control's Quadruped Run on MJX, from dm_control's own model file: the one task of Ma et al.
2024's Table 1 that MuJoCo Playground's `dm_control_suite` lacks. A Playground `MjxEnv`, so
`ddl.rl.dmc.Control` runs it as it runs Playground's tasks (`env.name=QuadrupedRun`; needs
dm-control installed, for the model file).

As dm_control's `quadruped.run()`: the model of `quadruped.make_model(floor_size=100)` (16 hinge
joints, 12 actuators with activation states, no terrain), a control step of 0.02 s (4
physics steps of 0.005 s), 1 000 control steps per episode. Observation, 78 numbers in dm_control's
order: the hinges' qpos and qvel and the actuators' activations, the torso's velocimeter, the torso's
upright (xmat zz), the IMU (accelerometer, gyro, by sensor id), arcsinh of the toes' force and
torque sensors (by sensor id). Reward: upright x move, with upright = tolerance(zz, (1, inf), margin
2, linear) and move = tolerance(velocimeter x, (5, inf), margin 5, value 0.5 at the margin, linear).
A reset draws a uniform orientation (a normalised Gaussian quaternion) and, as dm_control's
`_find_non_contacting_height`, raises the torso from z = 0 in 1 cm steps until nothing touches (a
`lax.while_loop` over MJX's kinematics and collision; at most 10 000 tries).
"""
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from ml_collections import config_dict
from mujoco import mjx

RUN_SPEED = 5.0
TIME_LIMIT = 20.0          # seconds: 1 000 control steps of 0.02 s
HEIGHT_STEP, MAX_TRIES = 0.01, 10_000


def default_config() -> config_dict.ConfigDict:
  return config_dict.create(ctrl_dt=0.02, sim_dt=0.005, episode_length=1000, action_repeat=1, vision=False,
                            impl='jax', naconmax=100_000, njmax=200)


def model() -> mujoco.MjModel:
  """dm_control's Quadruped Run model (its `make_model` and assets)."""
  try:
    from dm_control.suite import common  # pylint: disable=g-import-not-at-top
    from dm_control.suite import quadruped  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("env.name='QuadrupedRun' loads dm_control's own model file: pip install dm-control") from None
  return mujoco.MjModel.from_xml_string(quadruped.make_model(floor_size=TIME_LIMIT * RUN_SPEED), common.ASSETS)


def _sensor_indices(mj_model, types) -> np.ndarray:
  """Indices into sensordata of the sensors of `types`, in sensor id order (dm_control's order)."""
  ids = np.flatnonzero(np.isin(mj_model.sensor_type, types))
  return np.concatenate([np.arange(mj_model.sensor_adr[i], mj_model.sensor_adr[i] + mj_model.sensor_dim[i])
                         for i in ids])


def _make_env():
  """The MjxEnv class (Playground imported only when the task is used)."""
  from mujoco_playground._src import mjx_env  # pylint: disable=g-import-not-at-top
  from mujoco_playground._src import reward as rewards  # pylint: disable=g-import-not-at-top

  class QuadrupedRun(mjx_env.MjxEnv):
    """reset(rng) -> State, step(State, action) -> State, `_get_obs`, `_get_reward`: dm_control's Run."""

    def __init__(self, config: config_dict.ConfigDict = default_config(), config_overrides=None):
      super().__init__(config, config_overrides)
      self._mj_model = model()
      self._mj_model.opt.timestep = self.sim_dt
      self._mjx_model = mjx.put_model(self._mj_model, impl='jax')
      m, t = self._mj_model, mujoco.mjtSensor
      hinges = np.flatnonzero(m.jnt_type == mujoco.mjtJoint.mjJNT_HINGE)
      self._hinge_qpos, self._hinge_qvel = m.jnt_qposadr[hinges], m.jnt_dofadr[hinges]
      self._velocimeter = _sensor_indices(m, [t.mjSENS_VELOCIMETER])
      self._imu = _sensor_indices(m, [t.mjSENS_GYRO, t.mjSENS_ACCELEROMETER])
      self._force_torque = _sensor_indices(m, [t.mjSENS_FORCE, t.mjSENS_TORQUE])
      self._torso = m.body('torso').id
      self._root = m.joint('root').qposadr[0]

    def _placed(self, orientation: jax.Array, z: jax.Array) -> mjx.Data:
      """Reset data with the torso at (0, 0, z) in `orientation` (a unit quaternion)."""
      blank = mjx.make_data(self._mjx_model)
      root = jnp.concatenate([jnp.stack([0.0, 0.0, z]), orientation]).astype(blank.qpos.dtype)
      return blank.replace(qpos=blank.qpos.at[self._root:self._root + 7].set(root))

    def _touches(self, data: mjx.Data) -> jax.Array:
      """Whether any geom touches another: MuJoCo C's ncon > 0 after collision."""
      contact = mjx.collision(self._mjx_model, mjx.kinematics(self._mjx_model, data))._impl.contact
      return jnp.any(contact.dist < contact.includemargin)

    def non_contacting_height(self, orientation: jax.Array) -> jax.Array:
      """dm_control's `_find_non_contacting_height`: the torso's z, from 0 up in 1 cm steps, at which
      nothing touches (at most 10 000 tries)."""
      z, _ = jax.lax.while_loop(lambda c: self._touches(self._placed(orientation, c[0])) & (c[1] < MAX_TRIES),
                                lambda c: (c[0] + HEIGHT_STEP, c[1] + 1), (jnp.zeros(()), jnp.zeros((), jnp.int32)))
      return z

    def reset(self, rng: jax.Array) -> mjx_env.State:
      rng, key = jax.random.split(rng)
      orientation = jax.random.normal(key, (4,))
      orientation = orientation / jnp.linalg.norm(orientation)
      data = mjx.forward(self._mjx_model, self._placed(orientation, self.non_contacting_height(orientation)))
      info = {'rng': rng}
      return mjx_env.State(data, self._get_obs(data, info), jnp.zeros(()), jnp.zeros(()), {}, info)

    def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
      data = mjx_env.step(self._mjx_model, state.data, action, self.n_substeps)
      reward = self._get_reward(data, action, state.info, state.metrics)
      done = (jnp.isnan(data.qpos).any() | jnp.isnan(data.qvel).any()).astype(jnp.float32)
      return mjx_env.State(data, self._get_obs(data, state.info), reward, done, state.metrics, state.info)

    def _get_obs(self, data: mjx.Data, info: dict[str, Any]) -> jax.Array:
      del info
      return jnp.concatenate([data.qpos[self._hinge_qpos], data.qvel[self._hinge_qvel], data.act,
                              data.sensordata[self._velocimeter], data.xmat[self._torso, 2, 2][None],
                              data.sensordata[self._imu], jnp.arcsinh(data.sensordata[self._force_torque])])

    def _get_reward(self, data: mjx.Data, action, info, metrics) -> jax.Array:
      del action, info, metrics
      upright = rewards.tolerance(data.xmat[self._torso, 2, 2], bounds=(1.0, float('inf')), sigmoid='linear',
                                  margin=2.0, value_at_margin=0.0)
      move = rewards.tolerance(data.sensordata[self._velocimeter][0], bounds=(RUN_SPEED, float('inf')),
                               margin=RUN_SPEED, value_at_margin=0.5, sigmoid='linear')
      return upright * move

    @property
    def xml_path(self) -> str:
      return 'dm_control.suite.quadruped.make_model(floor_size=100)'

    @property
    def action_size(self) -> int:
      return self._mjx_model.nu

    @property
    def mj_model(self) -> mujoco.MjModel:
      return self._mj_model

    @property
    def mjx_model(self) -> mjx.Model:
      return self._mjx_model

  return QuadrupedRun


def load(config: config_dict.ConfigDict = None):
  """The task (`config`: `default_config()` or a changed copy)."""
  return _make_env()(config or default_config())
