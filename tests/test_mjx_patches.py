"""ddl.rl.mjx_patches: MuJoCo C's plane-capsule contact frame (against C's own contacts on steep and
shallow capsules, and the shipped MJX function's difference, which says when the patch can go) and
the line search's while loop (the same iterations as MJX's scan). The Ant's step against MuJoCo C
under the shipped pyramidal cones is tests/test_gym_ant.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

mujoco = pytest.importorskip('mujoco')
from mujoco import mjx  # pylint: disable=g-import-not-at-top,wrong-import-position

from ddl.rl import mjx_patches  # pylint: disable=g-import-not-at-top,wrong-import-position

CAPSULE_ON_PLANE = """
<mujoco>
  <worldbody>
    <geom type="plane" size="5 5 .1"/>
    <body pos="0 0 {z}" euler="{ax} {ay} 0"><freejoint/><geom type="capsule" size=".05 .3"/></body>
  </worldbody>
</mujoco>"""


def _c_frames(tilt_x: float, tilt_y: float):
  """(MuJoCo C's contact frames, the plane's normal, the capsule's axis) of a capsule touching the plane
  (its lower end 1 mm into it), tilted by the euler angles in degrees."""
  axis_z = np.cos(np.radians(tilt_x)) * np.cos(np.radians(tilt_y))
  model = mujoco.MjModel.from_xml_string(CAPSULE_ON_PLANE.format(z=0.3 * abs(axis_z) + 0.049, ax=tilt_x, ay=tilt_y))
  data = mujoco.MjData(model)
  mujoco.mj_forward(model, data)
  assert data.ncon >= 1
  frames = np.array([data.contact[i].frame.reshape(3, 3) for i in range(data.ncon)])
  return frames, data.geom_xmat[0].reshape(3, 3)[:, 2], data.geom_xmat[1].reshape(3, 3)[:, 2]


@pytest.mark.parametrize('tilt', [(0.0, 20.0), (15.0, 10.0), (75.0, 0.0), (40.0, 70.0), (0.0, 0.0)])
def test_plane_capsule_frame_is_mujoco_cs(tilt):
  """Tilted from upright by 20 and ~18 degrees (steeper than 60 degrees over the plane: where MJX 3.17
  takes a world axis), by 75 and ~77 (shallow), and upright (the fallback)."""
  frames, normal, axis = _c_frames(*tilt)
  with jax.enable_x64(True):
    ours = np.asarray(mjx_patches.plane_capsule_frame(jnp.asarray(normal), jnp.asarray(axis)))
  for frame in frames:
    np.testing.assert_allclose(ours, frame, atol=1e-12)


def test_the_shipped_mjx_frame_still_differs_on_a_steep_capsule():
  """When this fails, MJX's own plane_capsule agrees with MuJoCo C: drop `_plane_capsule` from
  ddl/rl/mjx_patches.py (see its docstring). A capsule tilted 20 degrees from upright about y (70 over
  the plane): C's tangent is the projected axis (along x), MJX 3.17's the world y axis."""
  from mujoco.mjx._src import collision_primitive  # pylint: disable=g-import-not-at-top
  frames, _, _ = _c_frames(0.0, 20.0)
  model = mujoco.MjModel.from_xml_string(CAPSULE_ON_PLANE.format(z=0.3 * np.cos(np.radians(20)) + 0.049, ax=0, ay=20))
  data = mjx.kinematics(mjx.put_model(model), mjx.make_data(model))
  _, _, frame = collision_primitive.plane_capsule(mjx.put_model(model), data, None, jnp.array([[0, 1]]))
  assert np.abs(np.asarray(frame[0]) - frames[0]).max() > 0.5


def test_capped_while_loop_takes_the_scans_iterations():
  """MJX's scan (no-ops once the condition fails) and the while loop with the same cap end in the same
  value with the same count of bodies, for runs converging before, at and after the cap, vmapped."""
  from mujoco.mjx._src import solver  # pylint: disable=g-import-not-at-top
  original = solver._while_loop_scan if solver._while_loop_scan is not mjx_patches.capped_while_loop else None  # pylint: disable=protected-access
  if original is None:
    pytest.skip('MJX already patched in this process before the original could be kept')
  cond = lambda v: v[0] < v[1]
  body = lambda v: (v[0] + 1.5, v[1], v[2] + 1)
  for loop in (original, mjx_patches.capped_while_loop):
    out = jax.jit(jax.vmap(lambda limit, loop=loop: loop(cond, body, (0.0, limit, 0), 10)))(jnp.array([0.0, 4.0, 15.0, 40.0]))
    np.testing.assert_array_equal(out[2], [0, 3, 10, 10])
