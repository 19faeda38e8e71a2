"""tfds data sets as numpy arrays, and an on-disk cache so a second launch loads in seconds.

Reading goes through `tfds.data_source` (random access to ArrayRecord files), which needs no
TensorFlow: records are parsed with protobuf and images decoded with OpenCV when it is installed,
else with PIL. Writing such a data set (`tfds build`) does need TensorFlow, to encode the images:
build it wherever TensorFlow is installed and copy the folder over.
"""
import os
from typing import Callable, Dict, Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds


class DatasetNotFoundError(FileNotFoundError):
  """A data set that is not on disk (in a readable form); the message says where we looked and
  how to get it."""


def build_command(name: str, data_dir: Optional[str]) -> str:
  """The shell command that prepares `name` in a form `tfds.data_source` reads."""
  where = f' --data_dir={data_dir}' if data_dir else ''
  return f'tfds build {name}{where} --file_format=array_record'


def tfds_source(name: str, split: str, data_dir: Optional[str] = None, how_to_get: Optional[str] = None):
  """The random-access data source of `name`/`split`; never downloads.

  `data_dir` None is tfds's default (TFDS_DATA_DIR or ~/tensorflow_datasets). A data set that is
  not prepared there, or only as TFRecord (which needs TensorFlow to read), raises
  DatasetNotFoundError; `how_to_get` replaces the default advice (the `tfds build` command).
  Checked up front: tfds's own error for a missing set is a misleading one about TFRecord files.
  """
  builder = tfds.builder(name, data_dir=data_dir)
  how_to_get = how_to_get or (f'Prepare it with `{build_command(name, data_dir)}` (needs network access and '
                              'TensorFlow where it runs), or copy a prepared folder there.')
  if not builder.is_prepared():
    raise DatasetNotFoundError(f'tfds data set {name!r} not found: looked in {builder.data_dir}. {how_to_get}')
  formats = builder.info.available_file_formats() or {builder.info.file_format}
  if not formats & set(tfds.core.FileFormat.with_random_access()):
    found = ', '.join(sorted(str(f.value) for f in formats if f))
    raise DatasetNotFoundError(
        f'tfds data set {name!r} in {builder.data_dir} is stored as {found}, which only TensorFlow reads; '
        f'an array_record copy was not found. {how_to_get}')
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


def iter_tfds(name: str, split: str, keys: Sequence[str] = ('image', 'label'), data_dir: Optional[str] = None,
              batch_size: int = 1000, how_to_get: Optional[str] = None) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `split` in data-set order, each a dict key -> stacked numpy array (decoded).

  For loaders that keep only part of a split, so the whole split never sits in memory. A missing
  data set raises DatasetNotFoundError at the first batch (`how_to_get`: see `tfds_source`).
  """
  source = tfds_source(name, split, data_dir, how_to_get)
  for start in range(0, len(source), batch_size):
    examples = source.__getitems__(list(range(start, min(start + batch_size, len(source)))))
    yield {key: np.stack([np.asarray(example[key]) for example in examples]) for key in keys}


def load_tfds_arrays(name: str, split: str, keys: Sequence[str] = ('image', 'label'),
                     data_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
  """The whole of `split` (a tfds split string, slices such as 'train[:1000]' included) as a dict
  key -> numpy array, in data-set order."""
  batches = list(iter_tfds(name, split, keys, data_dir))
  if not batches:
    raise ValueError(f'tfds split {name!r}/{split!r} is empty; check the split name.')
  return {key: np.concatenate([batch[key] for batch in batches]) for key in keys}


def cached(path: Optional[str], build_fn: Callable[[], np.ndarray], mmap_mode: Optional[str] = None) -> np.ndarray:
  """The array stored at `path` (a .npy file), built by `build_fn` and saved there on first use.

  The file is written to a temporary name and renamed, so an interrupted launch never leaves a
  partial cache. `mmap_mode='r'` maps a cached file instead of reading it; `path` None: no cache.
  Delete the file to rebuild it.
  """
  if path is None:
    return np.asarray(build_fn())
  if not path.endswith('.npy'):
    raise ValueError(f'cache path {path!r} must end with .npy (np.save would append it otherwise).')
  if os.path.exists(path):
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
  array = np.asarray(build_fn())
  if array.dtype == object:
    raise ValueError(f'cannot cache an object array at {path}; build_fn must return a numeric array.')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return array


def config_path(path: str) -> Optional[str]:
  """A path from a config with ~ expanded; '' means none."""
  return os.path.expanduser(path) if path else None
