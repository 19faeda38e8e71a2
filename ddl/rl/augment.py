"""DrQ's random shift (Kostrikov et al., 2020; DrQ-v2's `RandomShiftsAug`, the augmentation of Ma et al., ICLR
2024): each image is padded by `pad` pixels that repeat its border, then cropped back to its size at a random
whole-pixel offset, independently per image.

The authors' `RandomShiftsAug.forward` (Guozheng-Ma/Adaptive-Replay-Ratio, drqv2_adapt_rr.py lines 15-41, NCHW)
resamples the padded image with `F.grid_sample(bilinear, padding_mode='zeros', align_corners=False)` on a grid
shifted by whole multiples of 2 / (h + 2 pad). Sampling at whole pixels makes that an exact crop, so here it is one
(`jnp.pad` + `lax.dynamic_slice` per image, no interpolation). Their base grid is `cat([arange, arange.T], dim=2)`
with `arange[i, j] = linspace(...)[j]`: channel 0 varies along the width and channel 1 along the height, as
`grid_sample` reads them (x, y), so their `shift[..., 0]` is the column offset dx and `shift[..., 1]` the row offset
dy. `shift` takes (dy, dx) per image; tests/test_augment.py checks it against a numpy port of their forward pass.
Like theirs, it wants square images.

Dopamine's DrQ(ε) on Atari (`atari_100k_rainbow_agent.drq_image_augmentation`, `style='dopamine'`) pads by 4 the
same way but draws offsets in 0..2 pad - 1 (an exclusive `randint` bound), then scales each image's intensity by
1 + 0.05 clip(N(0, 1), -2, 2); it works on [0, 1] floats, and since the scaling is linear, scaling the uint8
values as floats before the network's 1/255 gives the same inputs.
"""
import chex
import jax
import jax.numpy as jnp

STYLES = ('drqv2', 'dopamine')
INTENSITY = 0.05    # Dopamine's intensity augmentation's scale


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f'random shift: images must be NHWC (4 axes), got shape {images.shape}')
  _, h, w, _ = images.shape
  if h != w:
    raise ValueError(f"random shift: images must be square, as in the authors' code (assert h == w), "
                     f'got height {h} != width {w} in NHWC shape {images.shape}')


def shift(images: jax.Array, offsets: jax.Array, pad: int) -> jax.Array:
  """NHWC `images`, each cropped from its `pad`-pixel replicate padding at its (dy, dx) row of `offsets`.

  `offsets`: (N, 2) integers in [0, 2 pad] (out-of-range ones are clamped, as `lax.dynamic_slice` does);
  (pad, pad) returns the image itself. Any dtype (uint8 included); same dtype and shape out.
  """
  _check_images(images)
  n, h, w, c = images.shape
  if offsets.shape != (n, 2):
    raise ValueError(f'random shift: offsets must have shape (N, 2) = ({n}, 2) for images {images.shape}, '
                     f'got {offsets.shape}')
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='edge')
  offsets = offsets.astype(jnp.int32)
  crop = lambda image, offset: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def random_shift(key: chex.PRNGKey, images: jax.Array, pad: int, positions: int = 0) -> jax.Array:
  """`shift` at offsets (dy, dx) drawn uniformly from {0, ..., positions - 1}^2 (0: 2 pad + 1 positions, every
  one there is), independently per image.

  `pad` is static (it sets the padded shape): 4 for 84x84 pixels (DrQ-v2), 1 for MinAtar's 10x10 grid.
  """
  _check_images(images)
  offsets = jax.random.randint(key, (images.shape[0], 2), 0, positions or 2 * pad + 1, dtype=jnp.int32)
  return shift(images, offsets, pad)


def intensity_factors(key: chex.PRNGKey, n: int, scale: float = INTENSITY) -> jax.Array:
  """(n,) factors 1 + scale clip(N(0, 1), -2, 2), one per image (Dopamine's intensity augmentation)."""
  return 1.0 + scale * jnp.clip(jax.random.normal(key, (n,)), -2.0, 2.0)


def shift_batch(key: chex.PRNGKey, batch, on: jax.Array, pad: int, style: str = 'drqv2'):
  """A replayed batch (a NamedTuple with `obs` and `next_obs`) with both observations augmented at random,
  independently (DrQ-v2's `aug(obs)` and `aug(next_obs)`), where `on` (a traced bool: augmentation is a
  hyperparameter of the run); the batch itself where not. `style` 'drqv2': a random shift, dtype kept;
  'dopamine': Dopamine's DrQ(ε) shift and intensity, float32 out."""
  if style not in STYLES:
    raise ValueError(f'augment.style={style!r} is not known; use one of {STYLES}')
  obs_key, next_key = jax.random.split(key)

  def augment(k, x):
    if style == 'drqv2':
      return jnp.where(on, random_shift(k, x, pad), x)
    shift_key, scale_key = jax.random.split(k)
    shifted = random_shift(shift_key, x, pad, positions=2 * pad).astype(jnp.float32)
    factors = intensity_factors(scale_key, x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(on, shifted * factors, x.astype(jnp.float32))

  return batch._replace(obs=augment(obs_key, batch.obs), next_obs=augment(next_key, batch.next_obs))
