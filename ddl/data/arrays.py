"""tfds data sets as numpy arrays, and an on-disk cache so a second launch loads in seconds.

Reading goes through `tfds.data_source` (random access to ArrayRecord files), which needs no
TensorFlow: records are parsed with protobuf and images decoded with OpenCV when it is installed,
else with PIL. Writing such a data set (`tfds build`) does need TensorFlow, to encode the images:
build it wherever TensorFlow is installed and copy the folder over, or let `tfds_source(...,
download=True)` do it here (`data.download`; TensorFlow comes with the `data` extra).
"""
import importlib.util
import os
from typing import Callable, Dict, Iterator, Optional, Sequence

import numpy as np
from absl import logging
from etils import epath


class DatasetNotFoundError(FileNotFoundError):
  """A data set that is not on disk (in a readable form); the message says where we looked and
  how to get it."""


# What tfds's MNIST and CIFAR-100 builders import to build a set (tf.io.gfile, image encoding), beyond
# ddl's own requirements: the `data` extra of setup.cfg brings it.
BUILD_MODULES = ('tensorflow',)
DATA_EXTRA = 'pip install -e ".[data]"'


def build_command(name: str, data_dir: Optional[str]) -> str:
  """The shell command that prepares `name` in a form `tfds.data_source` reads."""
  where = f' --data_dir={data_dir}' if data_dir else ''
  return f'tfds build {name}{where} --file_format=array_record'


def download_advice(name: str, data_dir: Optional[str]) -> str:
  """How to get a tfds set that tfds downloads by itself (MNIST, CIFAR-100), for error messages."""
  return (f'Get it with --config.data.download=True (tfds downloads and prepares it on first use; needs network '
          f'access and the data extra: {DATA_EXTRA}), or prepare it elsewhere with '
          f'`{build_command(name, data_dir)}` and copy the folder there.')


def tfds_source(name: str, split: str, data_dir: Optional[str] = None, how_to_get: Optional[str] = None,
                download: bool = False):
  """The random-access data source of `name`/`split`.

  `data_dir` None is tfds's default (TFDS_DATA_DIR or ~/tensorflow_datasets). A data set that is
  not prepared there, or only as TFRecord (which needs TensorFlow to read), raises
  DatasetNotFoundError; `how_to_get` replaces the default advice (the `tfds build` command).
  `download`: a set that is not prepared is downloaded and prepared as ArrayRecord first
  (`download_and_prepare`). Checked up front: tfds's own error for a missing set is a misleading
  one about TFRecord files.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (~1 s: only launches that read a set)
  builder = tfds.builder(name, data_dir=data_dir)
  how_to_get = how_to_get or (f'Prepare it with `{build_command(name, data_dir)}` (needs network access and '
                              'TensorFlow where it runs), or copy a prepared folder there.')
  # A variant folder that is not there is not prepared (is_prepared would log a warning saying so).
  if not (epath.Path(builder.data_dir).exists() and builder.is_prepared()):
    if not download:
      raise DatasetNotFoundError(f'tfds data set {name!r} not found: looked in {builder.data_dir}. {how_to_get}')
    download_and_prepare(builder, name)
  formats = builder.info.available_file_formats() or {builder.info.file_format}
  if not formats & set(tfds.core.FileFormat.with_random_access()):
    found = ', '.join(sorted(str(f.value) for f in formats if f))
    raise DatasetNotFoundError(
        f'tfds data set {name!r} in {builder.data_dir} is stored as {found}, which only TensorFlow reads; '
        f'an array_record copy was not found. {how_to_get}')
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


def download_and_prepare(builder, name: str) -> None:
  """Downloads and prepares `name` as ArrayRecord with its tfds builder. Raises DatasetNotFoundError
  (one line) when the modules the builder needs are missing (before any download) or the download
  fails (no network access, say)."""
  missing = [m for m in BUILD_MODULES if importlib.util.find_spec(m) is None]
  if missing:
    raise DatasetNotFoundError(
        f'data.download=True: building tfds data set {name!r} needs {", ".join(missing)}, which is not installed; '
        f'install the data extra: {DATA_EXTRA} (or prepare the set where it is installed and copy it to '
        f'{builder.data_dir}).')
  logging.info('Downloading and preparing tfds data set %r in %s.', name, builder.data_dir)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder.download_and_prepare(file_format='array_record')
  except (OSError, tfds.download.DownloadError) as e:   # requests' and urllib's network errors are OSErrors
    why = ' '.join(f'{type(e).__name__}: {e}'.split())[:300]
    raise DatasetNotFoundError(
        f'data.download=True: downloading tfds data set {name!r} failed ({why}); this machine needs network '
        f'access to the data set\'s servers, or prepare it elsewhere with `{build_command(name, None)}` and copy '
        f'it to {builder.data_dir}.') from None


def iter_tfds(name: str, split: str, keys: Sequence[str] = ('image', 'label'), data_dir: Optional[str] = None,
              batch_size: int = 1000, how_to_get: Optional[str] = None,
              download: bool = False) -> Iterator[Dict[str, np.ndarray]]:
  """Batches of `split` in data-set order, each a dict key -> stacked numpy array (decoded).

  For loaders that keep only part of a split, so the whole split never sits in memory. A missing
  data set raises DatasetNotFoundError at the first batch (`how_to_get`, `download`: see `tfds_source`).
  """
  source = tfds_source(name, split, data_dir, how_to_get, download)
  for start in range(0, len(source), batch_size):
    examples = source.__getitems__(list(range(start, min(start + batch_size, len(source)))))
    yield {key: np.stack([np.asarray(example[key]) for example in examples]) for key in keys}


def load_tfds_arrays(name: str, split: str, keys: Sequence[str] = ('image', 'label'),
                     data_dir: Optional[str] = None, how_to_get: Optional[str] = None,
                     download: bool = False) -> Dict[str, np.ndarray]:
  """The whole of `split` (a tfds split string, slices such as 'train[:1000]' included) as a dict
  key -> numpy array, in data-set order."""
  batches = list(iter_tfds(name, split, keys, data_dir, how_to_get=how_to_get, download=download))
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
