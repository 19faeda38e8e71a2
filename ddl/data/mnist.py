"""MNIST for Online Permuted MNIST (lop_reference.md §5.3): the training split only, flattened to
784 pixels in [0, 1], as the original's torchvision `ToTensor` gives; no other preprocessing.

Read from the tfds data set `mnist` (see `ddl.data.arrays`; `download=True` fetches it) and cached as uint8 .npy files in
`cache_dir`, so later launches skip tfds.
"""
import functools
import os
from typing import Optional, Tuple

import numpy as np

from ddl.data import arrays


def load_mnist(data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
               download: bool = False) -> Tuple[np.ndarray, np.ndarray]:
  """(float32 images (60000, 784) in [0, 1], int32 labels (60000,)) of the training split.

  `data_dir`: the tfds data directory (None: tfds's default). `cache_dir` None: no cache.
  `download`: tfds downloads and prepares the set when it is missing (else DatasetNotFoundError).
  """
  loaded = functools.cache(lambda: arrays.load_tfds_arrays(
      'mnist', 'train', ('image', 'label'), data_dir, arrays.download_advice('mnist', data_dir), download))
  path = lambda name: cache_dir and os.path.join(cache_dir, f'mnist_train_{name}.npy')
  images = arrays.cached(path('images'), lambda: loaded()['image'].reshape(-1, 28 * 28).astype(np.uint8))
  labels = arrays.cached(path('labels'), lambda: loaded()['label'].astype(np.int32))
  if images.shape[0] != labels.shape[0]:
    raise ValueError(f'the MNIST cache in {cache_dir} holds {images.shape[0]} images but {labels.shape[0]} labels; '
                     'delete its mnist_train_*.npy files to rebuild it.')
  return images.astype(np.float32) / 255.0, labels.astype(np.int32)
