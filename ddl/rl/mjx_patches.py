"""Two small patches that make MJX 3.17 step as MuJoCo's C simulator does (issue: the paper's Ant on
MJX must equal MuJoCo C, which the original ran). `install()` applies both, once per process; the
MJX environments (`ddl.rl.env.FrictionAnt` with the gymnasium model, `ddl.rl.dmc.Control`) call it
before they trace anything.

1. The plane-capsule contact frame. MuJoCo C (engine_collision_primitive.c, mjc_PlaneCapsule) sets
   the frame's second axis to the capsule's axis and `mju_makeFrame` projects it onto the plane:
   the tangent is the capsule's axis projected on the plane, whatever the capsule's tilt (the
   fallback (1, 0, 0) only where the projection vanishes, below mjMINVAL). MJX 3.17's
   `collision_primitive.plane_capsule` takes the world y (or z) axis instead wherever the projection
   is shorter than 0.5, i.e. wherever the capsule is steeper than 60 degrees: it applies
   mju_makeFrame's "tangent undefined" test to the projected axis rather than to the axis. With
   pyramidal cones (ant.xml's, MuJoCo's default) the friction pyramid then turns about the normal
   and the step differs from C's (by up to 2 in an observation on 12-21 % of the Ant's steps). The
   text of the upstream report is docs/mjx_plane_capsule_frame.md.
2. The line search. MJX runs the Newton solver's line search as a fixed scan of `ls_iterations`
   (50) steps that turn into no-ops once converged (`solver._while_loop_scan`, for reverse-mode
   autodiff); under vmap every step is computed. A `lax.while_loop` with the same cap takes the
   same steps and stops when the last run converged: the same trajectories, ~2x faster. It is not
   reverse-differentiable; nothing here differentiates the physics.

To drop a patch once MJX changes: `tests/test_mjx_patches.py` compares the shipped function with
C's frame on a steep capsule and fails, saying so, when they agree; then delete `_plane_capsule`
(and its line in `install`). The line search patch can go when MJX's `_linesearch` stops calling
`_while_loop_scan`.
"""
import jax
import jax.numpy as jnp

MINVAL = 1e-15    # MuJoCo's mjMINVAL: mju_normalize3's threshold
_installed = False


def plane_capsule_frame(normal: jax.Array, axis: jax.Array) -> jax.Array:
  """MuJoCo C's contact frame of a plane-capsule contact: rows normal, the capsule's axis projected on
  the plane (normalised; (1, 0, 0) where it vanishes, as mju_normalize3), their cross product."""
  tangent = axis - normal * jnp.dot(normal, axis)
  length = jnp.linalg.norm(tangent)
  tangent = jnp.where(length < MINVAL, jnp.array([1.0, 0.0, 0.0], tangent.dtype),
                      tangent / jnp.where(length < MINVAL, 1.0, length))
  return jnp.array([normal, tangent, jnp.cross(normal, tangent)])


def _plane_capsule(plane, cap):
  """MJX's `collision_primitive.plane_capsule` with MuJoCo C's frame (`plane_capsule_frame`)."""
  from mujoco.mjx._src import collision_primitive as primitive  # pylint: disable=g-import-not-at-top
  n, axis = plane.mat[:, 2], cap.mat[:, 2]
  frame = plane_capsule_frame(n, axis)[None]
  segment = axis * cap.size[1]
  collisions = []
  for offset in (segment, -segment):
    dist, pos = primitive._plane_sphere(n, plane.pos, cap.pos + offset, cap.size[0])  # pylint: disable=protected-access
    collisions.append((dist[None], pos[None], frame))
  return jax.tree.map(lambda *x: jnp.concatenate(x), *collisions)


def capped_while_loop(cond_fun, body_fun, init_val, max_iter):
  """`solver._while_loop_scan`'s semantics (at most `max_iter` bodies, each while `cond_fun` holds)
  as a `lax.while_loop`: it stops at convergence instead of scanning on with no-ops."""
  def cond(carry):
    i, val = carry
    return jnp.logical_and(i < max_iter, cond_fun(val))

  def body(carry):
    i, val = carry
    return i + 1, body_fun(val)

  return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), init_val))[1]


def install() -> None:
  """Both patches, once per process (MJX reads them when it traces a step)."""
  global _installed
  if _installed:
    return
  from mujoco.mjx._src import collision_driver  # pylint: disable=g-import-not-at-top
  from mujoco.mjx._src import collision_primitive  # pylint: disable=g-import-not-at-top
  from mujoco.mjx._src import solver  # pylint: disable=g-import-not-at-top
  from mujoco.mjx._src.types import GeomType  # pylint: disable=g-import-not-at-top
  collision_driver._COLLISION_FUNC[(GeomType.PLANE, GeomType.CAPSULE)] = (   # pylint: disable=protected-access
      collision_primitive.collider(ncon=2)(_plane_capsule))
  solver._while_loop_scan = capped_while_loop   # pylint: disable=protected-access
  _installed = True
