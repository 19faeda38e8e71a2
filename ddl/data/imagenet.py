"""Continual ImageNet data (lop_reference.md §5.1): 1000 ImageNet classes at 32x32, the first
`images_per_class` images of each, and optional per-seed class orders from a file.

`load_imagenet32` returns uint8 (num_classes, images_per_class, 32, 32, 3): NHWC, class-major, the
class id is the index. Rows keep their source order; the original trains on rows 0..599 of a class
and tests on rows 600..699 (of 700); the experiment does that split. Two sources:
  'tfds': `imagenet_resized/32x32` (Chrabaszcz et al. 2017), train split, the first images of each
    label in the order the prepared data set stores them. Its labels are tfds's (the downsampled
    set's 1-indexed labels minus 1), which need not match the class ids of the authors' files.
  'npy': the original code's per-class files `<data_dir>/<class_id>.npy`, 700 images each, in the
    original's (700, 3, 32, 32) layout or (700, 32, 32, 3); the layout is detected.
Both are cached as one .npy in `cache_dir`, so later launches skip the source entirely.

Pixel scale: the original applies no normalisation: it casts its files' pixels to float32 and
feeds them as they are (single_expr.py: `x_train.type(torch.FloatTensor)`, no division). Here
pixels are cached as uint8 0..255: uint8 files are kept as they are (with a warning: the original
fed such files as raw 0..255), float files whose maximum is <= 1 are taken as 0..1 and multiplied by
255, other float files as 0..255 (rounded). `pixels` makes the network's input from them,
x * pixel_scale (the config's `data.pixel_scale`, whose docstring gives the default's grounds).
"""
import os
import warnings
from typing import Optional, Tuple

import numpy as np

from ddl.data import arrays

SOURCES = ('tfds', 'npy')
TFDS_NAME = 'imagenet_resized/32x32'
IMAGE_SHAPE = (32, 32, 3)


def how_to_get(data_dir: Optional[str]) -> str:
  """The two ways of getting the data, for error messages."""
  where = data_dir or '<data_dir>'
  return (f"Get it one of two ways: (1) data.source='tfds': `{arrays.build_command(TFDS_NAME, data_dir)}` "
          '(downloads Imagenet32_train_npz.zip and Imagenet32_val_npz.zip from image-net.org, whose terms of '
          'access apply; needs TensorFlow where it runs; copy the built folder here if built elsewhere); '
          "(2) data.source='npy': the original code's per-class files from the authors' preprocessed archive "
          f"(linked from the lop repository's imagenet README), placed as {where}/<class_id>.npy "
          '(0.npy ... 999.npy, 700 images each).')


def load_imagenet32(source: str, data_dir: Optional[str], cache_dir: Optional[str], images_per_class: int = 700,
                    num_classes: int = 1000, mmap_mode: Optional[str] = None) -> np.ndarray:
  """uint8 (num_classes, images_per_class, 32, 32, 3) from `source` ('tfds' or 'npy'), cached.

  `data_dir`: the tfds data directory ('tfds'; None for tfds's default) or the folder of class
  files ('npy'). `cache_dir` None: no cache. `mmap_mode='r'` maps a cached file instead of reading it.
  """
  if source not in SOURCES:
    raise ValueError(f'data.source={source!r} is not known; use one of {SOURCES}.')
  if not 1 <= num_classes <= 1000 or images_per_class < 1:
    raise ValueError(f'num_classes={num_classes} and images_per_class={images_per_class}: '
                     'use 1..1000 classes and at least 1 image per class.')
  build = _from_tfds if source == 'tfds' else _from_npy
  path = cache_dir and os.path.join(cache_dir, f'imagenet32_{source}_{num_classes}x{images_per_class}.npy')
  return arrays.cached(path, lambda: build(data_dir, images_per_class, num_classes), mmap_mode=mmap_mode)


def _from_tfds(data_dir: Optional[str], images_per_class: int, num_classes: int) -> np.ndarray:
  hint = ''
  if data_dir and os.path.exists(os.path.join(data_dir, '0.npy')):
    hint = f" ({data_dir} holds per-class .npy files: did you mean data.source='npy'?)"
  source_hint = how_to_get(data_dir) + hint
  images = np.zeros((num_classes, images_per_class) + IMAGE_SHAPE, np.uint8)
  counts = np.zeros(num_classes, np.int64)
  batches = arrays.iter_tfds(TFDS_NAME, 'train', ('image', 'label'), data_dir, how_to_get=source_hint)
  for batch in batches:
    for image, label in zip(batch['image'], batch['label']):
      if label < num_classes and counts[label] < images_per_class:
        images[label, counts[label]] = image
        counts[label] += 1
    if counts.min() == images_per_class:
      return images
  short = np.flatnonzero(counts < images_per_class)
  raise ValueError(f'{TFDS_NAME} train has fewer than images_per_class={images_per_class} images of classes '
                   f'{short[:10].tolist()} (e.g. class {short[0]}: {counts[short[0]]}); lower images_per_class.')


def _from_npy(data_dir: Optional[str], images_per_class: int, num_classes: int) -> np.ndarray:
  if not data_dir:
    raise ValueError("data.source='npy' needs data_dir: the folder holding <class_id>.npy files.")
  paths = [os.path.join(data_dir, f'{c}.npy') for c in range(num_classes)]
  missing = [c for c, path in enumerate(paths) if not os.path.exists(path)]
  if missing:
    found = 'none of them' if len(missing) == num_classes else f'classes {missing[:10]} are missing'
    raise arrays.DatasetNotFoundError(
        f'ImageNet-32 class files not found: looked for {paths[0]} ... {paths[-1]}: {found}. '
        f'{how_to_get(data_dir)}')
  images = np.zeros((num_classes, images_per_class) + IMAGE_SHAPE, np.uint8)
  scales = set()
  for c, path in enumerate(paths):
    raw = _nhwc(np.load(path, mmap_mode='r', allow_pickle=False), path)
    if raw.shape[0] < images_per_class:
      raise ValueError(f'{path} holds {raw.shape[0]} images, fewer than images_per_class={images_per_class}.')
    images[c], scale = _to_uint8(np.asarray(raw[:images_per_class]), path)
    scales.add(scale)
  if len(scales) > 1:
    raise ValueError(f'the class files in {data_dir} mix float pixels in 0..1 and in 0..255; '
                     're-export them in one scale.')
  if 'unit' not in scales:
    warnings.warn(f'the class files in {data_dir} hold 0..255 pixels, which the original fed unscaled: set '
                  'data.pixel_scale=1.0 to match it (the default 1/255 assumes 0..1 files).')
  return images


def _nhwc(images: np.ndarray, path: str) -> np.ndarray:
  """(N, 32, 32, 3) from the original's (N, 3, 32, 32) or from (N, 32, 32, 3)."""
  if images.ndim == 4 and images.shape[1:] == (3, 32, 32):
    return images.transpose(0, 2, 3, 1)
  if images.ndim == 4 and images.shape[1:] == IMAGE_SHAPE:
    return images
  raise ValueError(f'{path} holds an array of shape {images.shape}; expected (N, 3, 32, 32) or (N, 32, 32, 3).')


def _to_uint8(images: np.ndarray, path: str) -> Tuple[np.ndarray, str]:
  """(uint8 pixels 0..255, the scale found: 'byte' or 'unit')."""
  if images.dtype == np.uint8:
    return images, 'byte'
  if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
    raise ValueError(f'{path} holds {images.dtype} pixels; expected uint8, another integer or a float type.')
  low, high = images.min(), images.max()
  if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= 255):
    raise ValueError(f'{path} holds pixels in [{low}, {high}]; expected 0..255 (or 0..1 floats). '
                     'Normalised (e.g. mean-subtracted) files are not supported: export raw pixels.')
  if np.issubdtype(images.dtype, np.integer):
    return images.astype(np.uint8), 'byte'
  scale = 'unit' if high <= 1.0 else 'byte'
  return np.rint(images * 255.0 if scale == 'unit' else images).astype(np.uint8), scale


def load_class_orders(order_file: str, num_seeds: int, num_classes: int = 1000) -> np.ndarray:
  """int32 (num_seeds, num_classes) from `order_file`: row i is the class order of seed index i.

  The original's own orders (a pickle, one permutation per run) are not available (§8.9); without
  a file the experiment draws one permutation per seed from the seed. An order file (.npy of shape
  (>= num_seeds, num_classes), each row a permutation of 0..num_classes-1) fixes them: its first
  num_seeds rows are used.
  """
  if not os.path.exists(order_file):
    raise FileNotFoundError(f'class order file {order_file} not found; give an existing .npy or leave it unset '
                            'to draw the orders from the seed.')
  try:
    orders = np.load(order_file, allow_pickle=False)
  except ValueError as e:
    raise ValueError(f'class order file {order_file} is not a plain .npy array ({e}); save one with '
                     'np.save(path, orders) with orders of shape (num_seeds, num_classes).') from e
  if orders.ndim != 2 or orders.shape[0] < num_seeds or orders.shape[1] != num_classes:
    raise ValueError(f'class order file {order_file} has shape {orders.shape}; expected ({num_seeds} or more, '
                     f'{num_classes}): one row per seed.')
  orders = orders[:num_seeds]
  if not np.issubdtype(orders.dtype, np.integer):
    raise ValueError(f'class order file {order_file} holds {orders.dtype}; expected integer class ids.')
  bad = [i for i, row in enumerate(orders) if not np.array_equal(np.sort(row), np.arange(num_classes))]
  if bad:
    raise ValueError(f'class order file {order_file}: rows {bad[:10]} are not permutations of '
                     f'0..{num_classes - 1}; every row must hold each class id once.')
  return orders.astype(np.int32)


def pixels(images, pixel_scale: float):
  """The network's input from uint8 NHWC pixels: float32(images) * pixel_scale (numpy or jax)."""
  return images.astype('float32') * pixel_scale
