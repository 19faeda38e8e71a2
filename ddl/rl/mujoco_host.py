"""The paper's Ant on MuJoCo's own C simulator, stepped on the host's cores from inside a compiled
program (`env.backend=mujoco`, `env.model=gymnasium`): what the original ran (MuJoCo C in float64),
batched over runs and threads.

Every run's physics state lives in the JAX state, so the host keeps nothing between calls (a
checkpoint resumes exactly, and the result does not depend on the thread count): qpos, qvel, the
solver's warm start (qacc_warmstart) and the torso's xpos as MuJoCo C holds it after a step (from
the forward pass that began the step's last substep: gymnasium's reward reads it), 46 float64
numbers kept bit for bit as uint32 pairs (JAX runs in float32). One `jax.pure_callback` per step
takes all runs of a call at once (`vmap_method='broadcast_all'`) and steps them on `threads` host
threads (MuJoCo releases the GIL in mj_step), each with its own MjModel (the run's friction set on
every geom, as `FrictionAnt._env`) and MjData. A step is gymnasium's Ant-v4 (use_contact_forces
False): ctrl = action, 5 mj_steps, reward x-velocity + 1 - 0.5 |a|^2, termination when the state is
not finite or the torso's z leaves [0.2, 1], observation qpos[2:] and qvel. A reset is gymnasium's:
mj_resetData, qpos0 + U(-0.1, 0.1), 0.1 N(0, 1) (the noise drawn in JAX from the key), mj_forward.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ddl.rl import host_pool

FRAME_SKIP = 5
CTRL_COST = 0.5
HEALTHY_Z = (0.2, 1.0)


class Layout:
  """Index layout of the float64 physics state: qpos, qvel, qacc_warmstart, the torso's xpos."""

  def __init__(self, nq: int, nv: int):
    self.nq, self.nv = nq, nv
    self.qpos = slice(0, nq)
    self.qvel = slice(nq, nq + nv)
    self.warmstart = slice(nq + nv, nq + 2 * nv)
    self.xpos = slice(nq + 2 * nv, nq + 2 * nv + 3)
    self.size = nq + 2 * nv + 3


def to_bits(x: np.ndarray) -> np.ndarray:
  """float64 (..., n) -> uint32 (..., n, 2), the same bytes."""
  x = np.ascontiguousarray(x, np.float64)
  return x.view(np.uint32).reshape(x.shape + (2,))


def from_bits(bits: np.ndarray) -> np.ndarray:
  """uint32 (..., n, 2) -> float64 (..., n), the same bytes."""
  bits = np.ascontiguousarray(bits, np.uint32)
  return bits.view(np.float64).reshape(bits.shape[:-1])


class Simulator:
  """The host side: per-thread MjModel/MjData copies of one model file and the batched step and reset."""

  def __init__(self, xml_path: str, threads: int):
    import mujoco  # pylint: disable=g-import-not-at-top
    self.mujoco = mujoco
    self.xml_path = xml_path
    self.model = mujoco.MjModel.from_xml_path(xml_path)
    self.threads = threads
    self.layout = Layout(self.model.nq, self.model.nv)
    self.torso = self.model.body('torso').id
    self.dt = self.model.opt.timestep * FRAME_SKIP
    # one (model, data) per host thread
    self._pool = host_pool.HostPool(threads, lambda: self._model_and_data(mujoco, xml_path))

  @staticmethod
  def _model_and_data(mujoco, xml_path: str):
    model = mujoco.MjModel.from_xml_path(xml_path)
    return model, mujoco.MjData(model)

  def _map(self, fn, n: int):
    """fn(i, model, data) for i in range(n), on the host threads (`ddl.rl.host_pool`)."""
    return self._pool.map(lambda i, slot: fn(i, *slot), n)

  def step(self, state: np.ndarray, action: np.ndarray, friction: np.ndarray):
    """Batched step: state float64 (n, size), action (n, 8), friction (n,) -> (state, obs (n, 27),
    reward (n,), terminated (n,))."""
    L = self.layout
    new = np.empty_like(state)

    def one(i, model, data):   # only MuJoCo's own work per run; the rest is vectorised below
      model.geom_friction[:, 0] = friction[i]
      data.qpos[:], data.qvel[:], data.qacc_warmstart[:] = state[i, L.qpos], state[i, L.qvel], state[i, L.warmstart]
      data.ctrl[:] = action[i]
      self.mujoco.mj_step(model, data, nstep=FRAME_SKIP)
      new[i, L.qpos], new[i, L.qvel], new[i, L.warmstart] = data.qpos, data.qvel, data.qacc_warmstart
      new[i, L.xpos] = data.xpos[self.torso]

    self._map(one, state.shape[0])
    reward = (new[:, L.xpos][:, 0] - state[:, L.xpos][:, 0]) / self.dt + 1.0 - CTRL_COST * np.sum(
        np.square(action), axis=-1)
    physical = new[:, :L.nq + L.nv]
    with np.errstate(invalid='ignore'):
      healthy = np.isfinite(physical).all(-1) & (new[:, 2] >= HEALTHY_Z[0]) & (new[:, 2] <= HEALTHY_Z[1])
    return new, observation(new, L), reward, ~healthy

  def step_and_start(self, state, action, friction, qpos, qvel, time_up):
    """`step`, then a fresh start (`reset` at qpos, qvel) for the runs whose episode ended (terminated
    or `time_up`), in one call: (stepped state, its obs, the next state: the start where ended, obs of
    it, reward, terminated)."""
    new, new_obs, reward, terminated = self.step(state, action, friction)
    ended = np.flatnonzero(terminated | time_up)
    nxt = new.copy()
    if ended.size:
      nxt[ended] = self.reset(qpos[ended], qvel[ended], friction[ended])[0]
    return new, new_obs, nxt, observation(nxt, self.layout), reward, terminated

  def reset(self, qpos: np.ndarray, qvel: np.ndarray, friction: np.ndarray):
    """Batched gymnasium reset at the given qpos, qvel (noise included): (state, obs)."""
    def one(i, model, data):
      model.geom_friction[:, 0] = friction[i]
      self.mujoco.mj_resetData(model, data)
      data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
      self.mujoco.mj_forward(model, data)
      return np.concatenate([data.qpos, data.qvel, data.qacc_warmstart, data.xpos[self.torso]])

    new = np.stack(self._map(one, qpos.shape[0]))
    return new, observation(new, self.layout)


def observation(state: np.ndarray, layout: Layout) -> np.ndarray:
  """gymnasium's Ant-v4 observation (use_contact_forces False): qpos[2:] and qvel."""
  return np.concatenate([state[..., layout.qpos][..., 2:], state[..., layout.qvel]], axis=-1)


@functools.lru_cache(maxsize=None)
def simulator(xml_path: str, threads: int) -> Simulator:
  """One Simulator (and thread pool) per model file and thread count in a process."""
  return Simulator(xml_path, threads)


class HostAnt:
  """gymnasium's Ant-v4 on MuJoCo C as a Brax-like env for `FrictionAnt`: reset(key) and
  step_and_start(state, action, key, time_up) over brax `State`s whose pipeline_state is the run's
  float64 physics state as uint32 bits; `at(friction)` binds the run's friction (traced) for a call."""

  def __init__(self, xml_path: str, threads: int, friction=None):
    self.sim = simulator(xml_path, threads)
    self.xml_path, self.threads, self.friction = xml_path, threads, friction
    model = self.sim.model
    self.init_qpos = model.qpos0.copy()
    self.init_qvel = np.zeros(model.nv)
    self.action_size = model.nu
    self.observation_size = model.nq - 2 + model.nv

  def at(self, friction: jax.Array) -> 'HostAnt':
    return HostAnt(self.xml_path, self.threads, friction)

  def _shapes(self, n_out: int):
    size = self.sim.layout.size
    return (jax.ShapeDtypeStruct((size, 2), jnp.uint32), jax.ShapeDtypeStruct((n_out,), jnp.float32))

  def _noise(self, key: jax.Array):
    """gymnasium's reset noise from `key`: qpos0 + U(-0.1, 0.1), 0.1 N(0, 1) (float32, as the MJX Ant's)."""
    qpos_key, qvel_key = jax.random.split(key)
    qpos = jnp.asarray(self.init_qpos, jnp.float32) + jax.random.uniform(
        qpos_key, self.init_qpos.shape, minval=-0.1, maxval=0.1)
    return qpos, 0.1 * jax.random.normal(qvel_key, self.init_qvel.shape)

  def reset(self, key: jax.Array):
    from brax.envs import base  # pylint: disable=g-import-not-at-top
    qpos, qvel = self._noise(key)

    def host(qpos, qvel, friction):
      batch = qpos.shape[:-1]
      new, obs = self.sim.reset(np.asarray(qpos, np.float64).reshape(-1, qpos.shape[-1]),
                                np.asarray(qvel, np.float64).reshape(-1, qvel.shape[-1]),
                                np.asarray(friction, np.float64).reshape(-1))
      return to_bits(new).reshape(batch + (-1, 2)), obs.astype(np.float32).reshape(batch + (-1,))

    bits, obs = jax.pure_callback(host, self._shapes(self.observation_size), qpos, qvel,
                                  jnp.asarray(self.friction, jnp.float32), vmap_method='broadcast_all')
    zero = jnp.zeros((), jnp.float32)
    return base.State(bits, obs, zero, zero, {}, {})

  def step_and_start(self, state, action: jax.Array, key: jax.Array, time_up: jax.Array):
    """(the state after the step, the next episode's start where the step ended it, else that same state),
    in one host call: the step's reward and termination in both; the start's noise from `key`."""
    qpos, qvel = self._noise(key)

    def host(bits, action, friction, qpos, qvel, time_up):
      batch = action.shape[:-1]
      flat = lambda x, tail: np.asarray(x, np.float64).reshape((-1,) + tail)
      new, stepped_obs, nxt, obs, reward, terminated = self.sim.step_and_start(
          from_bits(np.asarray(bits).reshape((-1,) + bits.shape[-2:])), flat(action, action.shape[-1:]),
          flat(friction, ()), flat(qpos, qpos.shape[-1:]), flat(qvel, qvel.shape[-1:]),
          np.asarray(time_up, bool).reshape(-1))
      return (to_bits(new).reshape(batch + (-1, 2)), stepped_obs.astype(np.float32).reshape(batch + (-1,)),
              to_bits(nxt).reshape(batch + (-1, 2)), obs.astype(np.float32).reshape(batch + (-1,)),
              reward.astype(np.float32).reshape(batch), terminated.astype(np.float32).reshape(batch))

    shapes = self._shapes(self.observation_size) * 2 + (jax.ShapeDtypeStruct((), jnp.float32),) * 2
    bits, obs, start_bits, start_obs, reward, done = jax.pure_callback(
        host, shapes, state.pipeline_state, action, jnp.asarray(self.friction, jnp.float32), qpos, qvel, time_up,
        vmap_method='broadcast_all')
    stepped = state.replace(pipeline_state=bits, obs=obs, reward=reward, done=done)
    return stepped, stepped.replace(pipeline_state=start_bits, obs=start_obs)
