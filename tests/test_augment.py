"""ddl.rl.augment: `shift` equals a numpy port of the authors' RandomShiftsAug (replicate pad, then bilinear
grid_sample with align_corners=False and zeros padding on their shifted base grid) for every offset, on a small
float image, MinAtar's 10x10x4 uint8 grid (pad 1) and DrQ-v2's 84x84x9 pixels (pad 4); `random_shift` draws
offsets in range, per image and per key, under jit and vmap, and keeps the dtype.

The port was checked once against the authors' class itself under torch 2.13.0 (CPU, its randint replaced by
given shifts, every offset): within 6e-6 on unit-scale floats and 2e-3 on 0..255 pixels of 84x84x9 (float32
rounding of their grid), and `shift` within 4e-3 there; with dy and dx swapped it misses by up to 255."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddl.rl import augment


def _grid_sample(x, grid):
  """torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False) in
  numpy: x (n, c, H, W), grid (n, h, w, 2) holding (x, y) in [-1, 1]; returns (n, c, h, w)."""
  n, c, height, width = x.shape
  px = ((grid[..., 0] + 1) * width - 1) / 2                          # unnormalise, align_corners=False
  py = ((grid[..., 1] + 1) * height - 1) / 2
  x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
  out = np.zeros((n, c) + grid.shape[1:3], x.dtype)
  batch = np.arange(n)[:, None, None]
  for xi, yi in itertools.product((x0, x0 + 1), (y0, y0 + 1)):
    weight = (1 - np.abs(px - xi)) * (1 - np.abs(py - yi))           # bilinear weight of this neighbour
    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)    # zeros padding: outside neighbours give 0
    value = x[batch, :, np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]   # (n, h, w, c)
    out += np.moveaxis(np.where(inside[..., None], weight[..., None] * value, 0), -1, 1)
  return out


def _authors_random_shifts(x, shift, pad):
  """drqv2_adapt_rr.py RandomShiftsAug.forward (lines 15-41) in float32 numpy, NCHW, with its randint draw
  `shift` (n, 2) given: shift[:, 0] and shift[:, 1] as their shift[..., 0] and shift[..., 1]."""
  n, c, h, w = x.shape
  assert h == w
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode='edge')   # F.pad(x, (pad,) * 4, 'replicate')
  eps = 1.0 / (h + 2 * pad)
  arange = np.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, dtype=np.float32)[:h]
  arange = np.repeat(arange[None, :], h, axis=0)[:, :, None]       # unsqueeze(0).repeat(h, 1).unsqueeze(2)
  base_grid = np.concatenate([arange, arange.transpose(1, 0, 2)], axis=2)   # cat([arange, arange.T], dim=2)
  base_grid = np.repeat(base_grid[None], n, axis=0)
  shift = np.asarray(shift, np.float32).reshape(n, 1, 1, 2) * np.float32(2.0 / (h + 2 * pad))
  return _grid_sample(x, base_grid + shift)


def _every_offset(pad):
  return np.asarray(list(itertools.product(range(2 * pad + 1), repeat=2)), np.int32)   # rows (dy, dx)


def _theirs_nhwc(images, offsets, pad):
  """Their output for our (dy, dx) offsets: NHWC -> NCHW, their shift = (dx, dy), back to NHWC."""
  nchw = np.moveaxis(np.asarray(images, np.float32), -1, 1)
  return np.moveaxis(_authors_random_shifts(nchw, offsets[:, ::-1], pad), 1, -1)


def test_shift_equals_the_authors_grid_sample_for_every_offset():
  pad = 2
  offsets = _every_offset(pad)
  images = np.random.default_rng(0).normal(size=(len(offsets), 9, 9, 3)).astype(np.float32)
  ours = np.asarray(augment.shift(jnp.asarray(images), jnp.asarray(offsets), pad))
  np.testing.assert_allclose(ours, _theirs_nhwc(images, offsets, pad), rtol=0, atol=1e-5)
  centre = offsets.tolist().index([pad, pad])
  np.testing.assert_array_equal(ours[centre], images[centre])        # (pad, pad): the image itself


def test_their_first_shift_component_moves_the_width():
  """A shift of (1, 0) in theirs (x by one pixel) moves the columns: our (dy, dx) = (0, 1) for pad 1 at the
  centre offset (1, 1) + (0, 1) = (1, 2)."""
  image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  theirs = np.moveaxis(_authors_random_shifts(np.moveaxis(image, -1, 1), np.asarray([[2, 1]]), 1), 1, -1)
  ours = np.asarray(augment.shift(jnp.asarray(image), jnp.asarray([[1, 2]]), 1))
  np.testing.assert_allclose(theirs, ours, atol=1e-5)
  np.testing.assert_array_equal(ours[0, :, :3, 0], image[0, :, 1:, 0])   # columns moved left by one
  np.testing.assert_array_equal(ours[0, :, 3, 0], image[0, :, 3, 0])     # the replicated border column


@pytest.mark.parametrize('shape,pad', [((10, 10, 4), 1), ((84, 84, 9), 4)])
def test_shift_on_minatar_and_pixel_sizes_matches_the_authors_and_keeps_uint8(shape, pad):
  offsets = _every_offset(pad)
  images = np.random.default_rng(0).integers(0, 256, size=(len(offsets),) + shape, dtype=np.uint8)
  ours = augment.shift(jnp.asarray(images), jnp.asarray(offsets), pad)
  assert ours.dtype == jnp.uint8 and ours.shape == images.shape
  theirs = _theirs_nhwc(images, offsets, pad)                  # the authors shift obs.float(): pixel values 0..255
  # their float32 grid lands within ~2e-5 pixel of the integer (92 px wide), which bilinear weights turn into
  # up to ~4e-3 of a 0..255 pixel value: 1e-5 of the range, as for the unit-scale floats above
  np.testing.assert_allclose(np.asarray(ours, np.float32), theirs, rtol=0, atol=255 * 2e-5)
  np.testing.assert_array_equal(np.asarray(ours), np.rint(theirs).astype(np.uint8))


def _coordinates(n, size, channels=1):
  """Images whose pixel (i, j) holds i size + j: a crop's pixel (pad, pad) reads out its offset (dy, dx)."""
  image = np.arange(size * size, dtype=np.float32).reshape(size, size, 1)
  return jnp.asarray(np.broadcast_to(image, (n, size, size, channels)))


def _offsets_of(shifted, pad, size):
  return np.stack(np.divmod(np.asarray(shifted[:, pad, pad, 0], np.int64), size), axis=1)


def test_random_shift_under_jit_and_vmap_draws_offsets_in_range_per_image_and_per_key():
  pad, size, n = 2, 10, 200
  images = _coordinates(n, size)
  draw = jax.jit(augment.random_shift, static_argnums=2)
  first, second = draw(jax.random.PRNGKey(0), images, pad), draw(jax.random.PRNGKey(1), images, pad)
  offsets = _offsets_of(first, pad, size)
  assert offsets.min() == 0 and offsets.max() == 2 * pad
  assert len({tuple(o) for o in offsets}) == (2 * pad + 1) ** 2      # all 25 pairs among 200 images
  assert not np.array_equal(offsets, _offsets_of(second, pad, size))
  np.testing.assert_array_equal(first, augment.shift(images, jnp.asarray(offsets), pad))   # exactly those crops
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  runs = jax.jit(jax.vmap(augment.random_shift, in_axes=(0, None, None)), static_argnums=2)(keys, images, pad)
  for key, run in zip(keys, runs):                                    # vmapped over runs = one run at a time
    np.testing.assert_array_equal(run, draw(key, images, pad))
  assert not np.array_equal(runs[0], runs[1])


@pytest.mark.parametrize('dtype', [jnp.uint8, jnp.float32, jnp.bfloat16])
def test_random_shift_keeps_dtype_and_shape(dtype):
  images = jax.random.randint(jax.random.PRNGKey(0), (4, 10, 10, 4), 0, 256).astype(dtype)
  shifted = augment.random_shift(jax.random.PRNGKey(1), images, 1)
  assert shifted.dtype == dtype and shifted.shape == images.shape


def test_non_square_images_and_bad_offsets_are_refused():
  with pytest.raises(ValueError, match=r'square.*height 4 != width 5.*\(1, 4, 5, 1\)'):
    augment.shift(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 2), jnp.int32), 1)
  with pytest.raises(ValueError, match='square'):
    augment.random_shift(jax.random.PRNGKey(0), jnp.zeros((2, 6, 8, 3)), 1)
  with pytest.raises(ValueError, match=r'\(N, 2\)'):
    augment.shift(jnp.zeros((2, 4, 4, 1)), jnp.zeros((3, 2), jnp.int32), 1)
