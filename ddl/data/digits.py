"""scikit-learn's 8x8 handwritten digits, shipped in this package (digits.npz) so that tests and
small experiments need neither a download nor scikit-learn: 1797 images of 8x8 pixels 0..16, 10
classes of 174..183 images each.

digits.npz was exported from `sklearn.datasets.load_digits()` (scikit-learn 1.9.1) as uint8 pixels
(1797, 64) and uint8 labels (1797,). The data is the test set of the UCI "Optical Recognition of
Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998), as bundled with scikit-learn
(BSD-3-Clause); the UCI repository distributes the data under CC BY 4.0: credit the authors.
"""
from importlib import resources
from typing import Tuple

import numpy as np


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
  """(float32 images (1797, 64) in [0, 1] (pixels / 16), int32 labels (1797,))."""
  with resources.files(__package__).joinpath('digits.npz').open('rb') as f, np.load(f) as data:
    images, labels = data['images'], data['labels']
  return images.astype(np.float32) / 16.0, labels.astype(np.int32)
