"""Camera images of an MJX (JAX implementation) simulation inside a jitted, vmapped program, by MuJoCo
Warp's batch ray tracer (`mujoco.mjx.warp.render`, MJX 3.17 with `warp-lang`; a CUDA kernel on a GPU,
Warp's CPU backend here): the pixels of DrQ-v2 on DeepMind Control (Ma et al. 2024).

The renderer reads a Warp Data's kinematics: the geoms' and cameras' poses, which the JAX step
computes (`mjx.forward`: kinematics and `camlight`), and the lights' poses, which MJX's JAX data does
not hold: `light_poses` computes them as MuJoCo's mj_camlight (tests/test_render.py checks both
against MuJoCo C's and the frames against MuJoCo Warp's render of MuJoCo C's state). A Warp render
context fixes its number of worlds; `Renderer.frames` is a `jax.custom_batching.custom_vmap` whose
rule builds (once per size) a context for the runs of the call it is vmapped over, so it serves
ddl's one vmap over runs, and a single run. It does not serve nested vmaps (a vmap of a vmapped
call): render once per step of a `lax.map`/`scan` instead.

What differs from dm_control's OpenGL images (DrQ-v2's `physics.render(84, 84, camera_id)`): a ray
tracer, one sample per pixel, with the models' textures, lights and skybox, no shadows by default;
the same camera, field of view and size. No OpenGL exists on this machine to compare against.
"""
import functools
import importlib.util
from typing import Dict

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx


def installed() -> bool:
  """Whether MuJoCo Warp's renderer can run (`warp-lang` importable)."""
  return importlib.util.find_spec('warp') is not None


def light_poses(model: mujoco.MjModel, data) -> Dict[str, jax.Array]:
  """(nlight, 3) world positions and directions of a model's lights from MJX data after `mjx.forward`
  (xpos, xmat, subtree_com), as MuJoCo C's mj_camlight: fixed to their body, tracking its position or
  its subtree's centre of mass with a fixed direction, or aimed at a target body (or its centre of mass)."""
  if model.nlight == 0:
    return dict(light_xpos=jnp.zeros((0, 3)), light_xdir=jnp.zeros((0, 3)))
  body, target = np.asarray(model.light_bodyid), np.asarray(model.light_targetbodyid)
  mode = np.asarray(model.light_mode)
  xmat = data.xmat[body]
  pos = data.xpos[body] + jnp.einsum('lij,lj->li', xmat, jnp.asarray(model.light_pos))
  direction = jnp.einsum('lij,lj->li', xmat, jnp.asarray(model.light_dir))
  track = (mode == mujoco.mjtCamLight.mjCAMLIGHT_TRACK)[:, None]
  track_com = (mode == mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM)[:, None]
  pos = jnp.where(track, data.xpos[body] + jnp.asarray(model.light_pos0), pos)
  pos = jnp.where(track_com, data.subtree_com[body] + jnp.asarray(model.light_poscom0), pos)
  direction = jnp.where(track | track_com, jnp.asarray(model.light_dir0), direction)
  aimed = np.isin(mode, (mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODY, mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODYCOM))
  aimed = (aimed & (target >= 0))[:, None]
  goal = jnp.where((mode == mujoco.mjtCamLight.mjCAMLIGHT_TARGETBODYCOM)[:, None],
                   data.subtree_com[np.maximum(target, 0)], data.xpos[np.maximum(target, 0)])
  toward = goal - pos
  toward = toward / jnp.maximum(jnp.linalg.norm(toward, axis=-1, keepdims=True), mujoco.mjMINVAL)
  return dict(light_xpos=pos, light_xdir=jnp.where(aimed, toward, direction))


def unpack_rgb(packed: jax.Array, height: int, width: int) -> jax.Array:
  """Warp's packed uint32 pixels (..., height * width), 0xAARRGGBB (blue in the low byte), -> uint8
  (..., height, width, 3)."""
  channels = [(packed >> shift) & 255 for shift in (16, 8, 0)]
  return jnp.stack(channels, axis=-1).astype(jnp.uint8).reshape(packed.shape[:-1] + (height, width, 3))


class Renderer:
  """`frames(data)` -> uint8 (size, size, 3): camera `camera` of `model` seen in MJX data (after
  `mjx.forward`), inside jit and under one vmap. textures / shadows / skybox: the ray tracer's options
  (the skybox is dm_control's background; 4 ms per 84x84 frame on this CPU either way)."""

  def __init__(self, model: mujoco.MjModel, camera: int = 0, size: int = 84, textures: bool = True,
               shadows: bool = False, skybox: bool = True):
    if not installed():
      raise ImportError('pixels need MuJoCo Warp\'s renderer: pip install warp-lang (pip install -e . installs it)')
    if not 0 <= camera < model.ncam:
      raise ValueError(f'camera {camera} is not one of the model\'s {model.ncam} cameras')
    self.model, self.camera, self.size = model, camera, size
    self.options = dict(cam_res=(size, size), cam_active=[i == camera for i in range(model.ncam)],
                        render_depth=False, render_seg=False, use_textures=textures, use_shadows=shadows,
                        render_skybox=skybox)
    self.warp_model = mjx.put_model(model, impl='warp')
    self.template = mjx.make_data(model, impl='warp')
    self.frames = jax.custom_batching.custom_vmap(self._one)
    self.frames.def_vmap(self._batched)

  @functools.lru_cache(maxsize=None)
  def _context(self, worlds: int):
    """The render context for `worlds` worlds (Warp buffers sized by it), built once per size and kept:
    its buffers live as long as the context object, which the traced program's pytree only names."""
    return mjx.create_render_context(self.model, nworld=worlds, **self.options)

  def _warp_data(self, data):
    return self.template.tree_replace({
        'geom_xpos': data.geom_xpos, 'geom_xmat': data.geom_xmat, 'cam_xpos': data.cam_xpos,
        'cam_xmat': data.cam_xmat, **{'_impl.' + k: v for k, v in light_poses(self.model, data).items()}})

  def _render(self, data, worlds: int) -> jax.Array:
    """(worlds, size, size, 3) from data whose leaves have a leading axis of `worlds`."""
    from mujoco.mjx.warp import render as warp_render   # pylint: disable=g-import-not-at-top
    context = self._context(worlds).pytree()
    rgb = jax.vmap(lambda d: warp_render.render(self.warp_model, self._warp_data(d), context)[0])(data)
    return unpack_rgb(rgb, self.size, self.size)

  def _one(self, data) -> jax.Array:
    return self._render(jax.tree.map(lambda x: x[None], data), 1)[0]

  def _batched(self, axis_size: int, in_batched, data):
    batched = jax.tree.map(lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + x.shape), data, in_batched[0])
    return self._render(batched, axis_size), True
