"""ddl.rl.render: the lights' poses against MuJoCo C's mj_camlight, and the frames rendered from MJX's JAX
data (under vmap and for one run) against MuJoCo Warp's own render of MuJoCo C's state."""
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from ddl.rl import render

pytestmark = pytest.mark.skipif(not render.installed(), reason='warp-lang is not installed')

# one light of each mj_camlight mode, on a free body and a hinged arm; a camera tracking the body
LIGHTS = """
<mujoco>
  <worldbody>
    <light name="world" pos="0 0 3" dir="0 0 -1"/>
    <geom type="plane" size="3 3 .1" rgba=".2 .3 .4 1"/>
    <camera name="front" pos="0 -2 1" xyaxes="1 0 0 0 .5 1"/>
    <body name="torso" pos="0 0 1">
      <freejoint/>
      <geom type="box" size=".2 .1 .1" rgba=".8 .5 .3 1"/>
      <light name="fixed" pos=".1 0 .5" dir="0 .6 -.8"/>
      <light name="track" mode="track" pos="0 0 1"/>
      <light name="trackcom" mode="trackcom" pos="0 .2 1" dir="0 0 -1"/>
      <light name="target" mode="targetbody" target="arm" pos=".3 0 .4"/>
      <light name="targetcom" mode="targetbodycom" target="torso" pos="-.3 0 .4"/>
      <camera name="follow" mode="trackcom" pos="0 -1.5 .3" xyaxes="1 0 0 0 .2 1"/>
      <body name="arm" pos=".2 0 0">
        <joint type="hinge" axis="0 1 0"/>
        <geom type="capsule" fromto="0 0 0 .3 0 0" size=".04" rgba=".3 .8 .3 1"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


def _random_states(model, count, seed=0):
  rng = np.random.default_rng(seed)
  data = mujoco.MjData(model)
  states = []
  for _ in range(count):
    data.qpos[:] = model.qpos0 + 0.3 * rng.standard_normal(model.nq)
    mujoco.mj_normalizeQuat(model, data.qpos)
    mujoco.mj_forward(model, data)
    states.append((data.qpos.copy(), data.light_xpos.copy(), data.light_xdir.copy()))
  return data, states


def test_light_poses_follow_mujoco_c_in_every_mode():
  model = mujoco.MjModel.from_xml_string(LIGHTS)
  assert set(model.light_mode) == set(range(5))
  mjx_model = mjx.put_model(model)
  _, states = _random_states(model, 4)
  poses = jax.jit(jax.vmap(lambda q: render.light_poses(model, mjx.forward(mjx_model, mjx.make_data(model).replace(qpos=q)))))(
      jnp.asarray(np.stack([q for q, _, _ in states]), jnp.float32))
  np.testing.assert_allclose(poses['light_xpos'], np.stack([p for _, p, _ in states]), atol=1e-5)
  np.testing.assert_allclose(poses['light_xdir'], np.stack([d for _, _, d in states]), atol=1e-5)


def test_unpack_rgb_reads_warps_packed_pixels():
  rgb = np.array([[[10, 20, 30], [255, 0, 7]]], np.uint8)          # (1, 2, 3): one row of two pixels
  packed = (0xFF << 24) | (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
  np.testing.assert_array_equal(render.unpack_rgb(jnp.asarray(packed.reshape(1, 2)), 1, 2)[0], rgb)


def test_frames_from_mjx_data_equal_warps_render_of_mujoco_c_state():
  """The same pixels as MuJoCo Warp's render of MuJoCo C's forward pass (`mjx.put_data(impl='warp')`, its
  lights included), vmapped over 3 states and for one, from a camera tracking the body (camera 1: its pose
  comes from the step's camlight; a fixed camera's is a constant)."""
  camera = 1
  from mujoco.mjx.warp import render as warp_render   # pylint: disable=g-import-not-at-top
  model = mujoco.MjModel.from_xml_string(LIGHTS)
  renderer = render.Renderer(model, camera=camera, size=32)
  mjx_model = mjx.put_model(model)
  frame = lambda q: renderer.frames(mjx.forward(mjx_model, mjx.make_data(model).replace(qpos=q)))
  data, states = _random_states(model, 3, seed=1)
  qpos = jnp.asarray(np.stack([q for q, _, _ in states]), jnp.float32)
  frames = np.asarray(jax.jit(jax.vmap(frame))(qpos))
  assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(np.asarray(jax.jit(frame)(qpos[1])), frames[1])
  context = mjx.create_render_context(model, nworld=1, **renderer.options)
  warp_model = mjx.put_model(model, impl='warp')
  for (q, _, _), ours in zip(states, frames):
    data.qpos[:] = q
    mujoco.mj_forward(model, data)
    reference = mjx.put_data(model, data, impl='warp')
    packed = jax.jit(jax.vmap(lambda _: warp_render.render(warp_model, reference, context.pytree())[0]))(jnp.zeros(1))
    expected = np.asarray(render.unpack_rgb(packed, 32, 32))[0]
    assert expected.std() > 5, 'the reference frame is blank: the scene is not in view'
    # float32 poses against C's float64 ones: a ray may land on the other side of an edge
    assert np.mean(np.any(ours != expected, axis=-1)) < 0.01
    np.testing.assert_allclose(ours.mean(), expected.mean(), atol=0.5)


def test_renderer_refuses_a_camera_the_model_lacks():
  model = mujoco.MjModel.from_xml_string(LIGHTS)
  with pytest.raises(ValueError, match='camera 5 is not one of'):
    render.Renderer(model, camera=5)
