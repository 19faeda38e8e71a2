"""CIFAR-100 (lop_reference.md §5.2) as class-major uint8 arrays, from tfds `cifar100`.

`load_cifar100` returns {'train': (100, 500, 32, 32, 3), 'test': (100, 100, 32, 32, 3)}: per class
(fine label) its images in data-set order. The experiment takes a class's first 50 training images
as validation and the other 450 for training, as the original did with torchvision's order (tfds
builds `cifar100` from the same python-version files, in the same order). Both splits are cached
as .npy in `cache_dir`, so later launches skip tfds entirely.
"""
import os
from typing import Dict, Optional

import numpy as np

from ddl.data import arrays

TFDS_NAME = 'cifar100'
PER_CLASS = {'train': 500, 'test': 100}


def load_cifar100(data_dir: Optional[str], cache_dir: Optional[str], download: bool = False) -> Dict[str, np.ndarray]:
  """{'train': uint8 (100, 500, 32, 32, 3), 'test': uint8 (100, 100, 32, 32, 3)}, cached.
  A data set that is not prepared raises arrays.DatasetNotFoundError saying how to get it, unless
  `download` (tfds downloads and prepares it)."""
  out = {}
  for split, per_class in PER_CLASS.items():
    path = cache_dir and os.path.join(cache_dir, f'cifar100_{split}.npy')
    out[split] = arrays.cached(path, lambda s=split, n=per_class: _by_class(s, n, data_dir, download))
  return out


def _by_class(split: str, per_class: int, data_dir: Optional[str], download: bool) -> np.ndarray:
  images = np.zeros((100, per_class, 32, 32, 3), np.uint8)
  counts = np.zeros(100, np.int64)
  batches = arrays.iter_tfds(TFDS_NAME, split, ('image', 'label'), data_dir,
                             how_to_get=arrays.download_advice(TFDS_NAME, data_dir), download=download)
  for batch in batches:
    for image, label in zip(batch['image'], batch['label']):
      if counts[label] < per_class:
        images[label, counts[label]] = image
        counts[label] += 1
  if counts.min() < per_class:
    raise ValueError(f'{TFDS_NAME} {split} has {counts.min()} images of some class; expected {per_class} per class.')
  return images
