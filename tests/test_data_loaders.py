"""Data loaders, offline: tfds -> arrays on tiny ArrayRecord data sets the tests write, the cache,
continual ImageNet (both sources, the input scale, class order files), MNIST and the bundled digits."""
import io
import os
import socket
import sys
import warnings
from unittest import mock

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import load_config
from ddl import config as config_lib
from ddl.data import arrays, cifar100, digits, imagenet, mnist
from ddl.experiments import ContinualImageNet


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Tests never download: opening a connection fails the test."""
  def refuse(*args, **kwargs):
    raise AssertionError("a data loader test tried to open a network connection")
  monkeypatch.setattr(socket.socket, 'connect', refuse)


def _png(image):
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format='PNG')
  return buffer.getvalue()


def _prepare(name, data_dir, images, labels):
  """Writes a real tfds data set `name` (train split, ArrayRecord files) holding these examples.

  Images go in as PNG bytes encoded by PIL, so neither TensorFlow (which tfds uses to encode
  arrays) nor a download is needed; tfds stores them in its own (hashed key) order.
  """
  _write(tfds.builder(name, data_dir=str(data_dir)), images, labels)


def _write(builder, images, labels):
  """`_prepare` on a given builder."""
  tfds.disable_progress_bar()
  examples = [(str(i), {'image': _png(x), 'label': int(y)}) for i, (x, y) in enumerate(zip(images, labels))]
  config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False)
  with mock.patch.object(type(builder), '_split_generators', lambda self, dl_manager: {'train': iter(examples)}):
    type(builder).download_and_prepare(builder, file_format='array_record', download_config=config)


def _stored(name, data_dir):
  """(images, labels) of the prepared train split in its stored order, read with tfds directly."""
  source = tfds.data_source(name, split='train', data_dir=str(data_dir), download=False)
  examples = [source[i] for i in range(len(source))]
  return np.stack([e['image'] for e in examples]), np.array([e['label'] for e in examples])


@pytest.fixture(scope='module')
def mnist_dir(tmp_path_factory):
  rng = np.random.default_rng(0)
  data_dir = tmp_path_factory.mktemp('tfds_mnist')
  _prepare('mnist', data_dir, rng.integers(0, 256, (60, 28, 28, 1), dtype=np.uint8), np.arange(60) % 10)
  return data_dir


@pytest.fixture(scope='module')
def imagenet_dir(tmp_path_factory):
  """9 images of each class 0..9, and 20 of classes >= 10, which a 10-class load skips."""
  rng = np.random.default_rng(1)
  labels = np.concatenate([np.repeat(np.arange(10), 9), rng.integers(10, 1000, 20)])
  data_dir = tmp_path_factory.mktemp('tfds_imagenet')
  _prepare(imagenet.TFDS_NAME, data_dir, rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8), labels)
  return data_dir


def _no_tfds(monkeypatch):
  """Makes any use of tfds fail, to show a load came from the cache."""
  for attr in ('builder', 'data_source'):
    monkeypatch.setattr(tfds, attr, mock.Mock(side_effect=AssertionError('tfds was used')))


# --- arrays ---------------------------------------------------------------------------------------

def test_tfds_arrays_decode_images_without_tensorflow(mnist_dir):
  loaded = arrays.load_tfds_arrays('mnist', 'train', ('image', 'label'), str(mnist_dir))
  images, labels = _stored('mnist', mnist_dir)
  assert loaded['image'].shape == (60, 28, 28, 1) and loaded['image'].dtype == np.uint8
  np.testing.assert_array_equal(loaded['image'], images)
  np.testing.assert_array_equal(loaded['label'], labels)
  assert sorted(np.bincount(loaded['label'])) == [6] * 10
  assert arrays.load_tfds_arrays('mnist', 'train[:7]', ('label',), str(mnist_dir))['label'].shape == (7,)
  assert 'tensorflow' not in sys.modules


def test_missing_tfds_data_set_says_where_and_how(tmp_path):
  with pytest.raises(arrays.DatasetNotFoundError) as error:
    arrays.load_tfds_arrays('mnist', 'train', data_dir=str(tmp_path))
  message = str(error.value)
  assert str(tmp_path / 'mnist') in message and 'tfds build mnist' in message
  assert '--file_format=array_record' in message
  assert isinstance(error.value, FileNotFoundError)


def _fake_download(monkeypatch, download):
  """tfds.builder's builders with `download(builder, file_format)` as their download_and_prepare, and
  every module a build needs taken as installed; returns the calls made."""
  calls, real_builder = [], tfds.builder

  def builder(name, **kwargs):
    b = real_builder(name, **kwargs)
    def download_and_prepare(file_format=None, **unused):
      calls.append((name, file_format))
      download(b, file_format)
    b.download_and_prepare = download_and_prepare
    return b

  monkeypatch.setattr(tfds, 'builder', builder)
  monkeypatch.setattr(arrays, 'BUILD_MODULES', ())
  return calls


def test_download_prepares_a_missing_set_once(tmp_path, monkeypatch):
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
  calls = _fake_download(monkeypatch, lambda b, _: _write(b, images, np.arange(20) % 10))
  with pytest.raises(arrays.DatasetNotFoundError, match=r'--config.data.download=True .*pip install -e "\.\[data\]"'):
    mnist.load_mnist(str(tmp_path))
  assert not calls
  x, y = mnist.load_mnist(str(tmp_path), download=True)
  assert calls == [('mnist', 'array_record')] and x.shape == (20, 784) and sorted(y) == sorted(np.arange(20) % 10)
  np.testing.assert_array_equal(mnist.load_mnist(str(tmp_path), download=True)[0], x)   # prepared: read, not fetched
  assert len(calls) == 1


@pytest.mark.parametrize('error', [OSError('[Errno -3] Temporary failure in name resolution'),
                                   tfds.download.DownloadError('Failed to get url https://x/mnist.gz')])
def test_download_without_network_says_so(tmp_path, monkeypatch, error):
  def fail(builder, file_format):
    raise error
  calls = _fake_download(monkeypatch, fail)
  with pytest.raises(arrays.DatasetNotFoundError, match='downloading tfds data set .cifar100. failed .*network access'):
    cifar100.load_cifar100(str(tmp_path), None, download=True)
  assert calls == [('cifar100', 'array_record')]


def test_download_without_the_data_extra_names_it_and_fetches_nothing(tmp_path, monkeypatch):
  calls = _fake_download(monkeypatch, lambda b, _: None)
  monkeypatch.setattr(arrays, 'BUILD_MODULES', ('tensorflow', 'no_such_module_for_ddl'))
  with pytest.raises(arrays.DatasetNotFoundError, match=r'needs .*no_such_module_for_ddl.*pip install -e "\.\[data\]"'):
    mnist.load_mnist(str(tmp_path), download=True)
  assert not calls and not os.listdir(tmp_path)


def test_tfrecord_only_data_set_asks_for_array_record(tmp_path, mnist_dir):
  # A TFRecord copy (which tfds reads only with TensorFlow): the prepared set, relabelled as one.
  variant = tmp_path / 'mnist' / '3.0.1'
  variant.mkdir(parents=True)
  info = (mnist_dir / 'mnist' / '3.0.1' / 'dataset_info.json').read_text()
  (variant / 'dataset_info.json').write_text(info.replace('"array_record"', '"tfrecord"'))
  (variant / 'features.json').write_text((mnist_dir / 'mnist' / '3.0.1' / 'features.json').read_text())
  with pytest.raises(arrays.DatasetNotFoundError, match='stored as tfrecord.*--file_format=array_record'):
    arrays.load_tfds_arrays('mnist', 'train', data_dir=str(tmp_path))


def test_cache_builds_once_and_writes_atomically(tmp_path):
  path = str(tmp_path / 'sub' / 'x.npy')
  build = mock.Mock(return_value=np.arange(12, dtype=np.int32).reshape(3, 4))
  first = arrays.cached(path, build)
  second = arrays.cached(path, build)
  mapped = arrays.cached(path, build, mmap_mode='r')
  assert build.call_count == 1
  np.testing.assert_array_equal(first, second)
  assert isinstance(mapped, np.memmap) and second.dtype == np.int32
  assert os.listdir(tmp_path / 'sub') == ['x.npy']

  def interrupted():
    raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    arrays.cached(str(tmp_path / 'y.npy'), interrupted)
  assert not (tmp_path / 'y.npy').exists()
  with pytest.raises(ValueError, match='must end with .npy'):
    arrays.cached(str(tmp_path / 'z.bin'), build)
  np.testing.assert_array_equal(arrays.cached(None, build), first)   # no cache: built again
  assert build.call_count == 2


# --- continual ImageNet ---------------------------------------------------------------------------

def test_imagenet_tfds_keeps_the_first_images_of_each_class(imagenet_dir, tmp_path):
  data = imagenet.load_imagenet32('tfds', str(imagenet_dir), str(tmp_path), images_per_class=7, num_classes=10)
  assert data.shape == (10, 7, 32, 32, 3) and data.dtype == np.uint8
  images, labels = _stored(imagenet.TFDS_NAME, imagenet_dir)
  for c in range(10):
    np.testing.assert_array_equal(data[c], images[labels == c][:7])
  assert 'tensorflow' not in sys.modules
  with pytest.raises(ValueError, match='fewer than images_per_class=10'):
    imagenet.load_imagenet32('tfds', str(imagenet_dir), None, images_per_class=10, num_classes=10)


def test_imagenet_second_load_comes_from_the_cache(imagenet_dir, tmp_path, monkeypatch):
  first = imagenet.load_imagenet32('tfds', str(imagenet_dir), str(tmp_path), images_per_class=7, num_classes=10)
  assert os.listdir(tmp_path) == ['imagenet32_tfds_10x7.npy']
  _no_tfds(monkeypatch)
  again = imagenet.load_imagenet32('tfds', str(imagenet_dir), str(tmp_path), images_per_class=7, num_classes=10)
  np.testing.assert_array_equal(again, first)
  with pytest.raises(AssertionError, match='tfds was used'):   # other sizes: another cache file
    imagenet.load_imagenet32('tfds', str(imagenet_dir), str(tmp_path), images_per_class=6, num_classes=10)


def _write_classes(folder, images, layout, scale):
  """One file per class, in `layout` 'nchw' (the original's) or 'nhwc', as uint8, 0..1 (float32 or
  float64) or 0..255 floats."""
  folder.mkdir(exist_ok=True)
  for c, block in enumerate(images):
    array = block.transpose(0, 3, 1, 2) if layout == 'nchw' else block
    array = {'uint8': array, 'unit': array.astype(np.float32) / 255, 'unit64': array / 255.0,
             'byte': array.astype(np.float64)}[scale]
    np.save(folder / f'{c}.npy', array)


@pytest.mark.parametrize('layout,scale', [('nchw', 'uint8'), ('nchw', 'unit'), ('nhwc', 'byte'), ('nhwc', 'unit')])
def test_imagenet_npy_files_in_either_layout_and_scale(tmp_path, layout, scale):
  images = np.random.default_rng(2).integers(0, 256, (4, 9, 32, 32, 3), dtype=np.uint8)
  _write_classes(tmp_path / 'classes', images, layout, scale)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    data = imagenet.load_imagenet32('npy', str(tmp_path / 'classes'), str(tmp_path / 'cache'), images_per_class=7,
                                    num_classes=4)
  assert [str(w.message).endswith('assumes 0..1 files).') for w in caught] == [True] * (scale != 'unit')
  assert data.dtype == np.uint8 and data.shape == (4, 7, 32, 32, 3)
  np.testing.assert_array_equal(data, images[:, :7])
  assert os.listdir(tmp_path / 'cache') == ['imagenet32_npy_4x7.npy']


def test_imagenet_sources_give_the_same_inputs_as_the_original(imagenet_dir, tmp_path):
  """The same images through tfds and through per-class files in the original's layout ((N, 3, 32,
  32) floats in 0..1, as numpy's x / 255 writes them) give the same network inputs, and with the
  config's default pixel scale those are what the original fed: float32 of the files' values
  (NHWC here). Files of raw bytes warn that the original fed them as 0..255."""
  images, labels = _stored(imagenet.TFDS_NAME, imagenet_dir)
  per_class = np.stack([images[labels == c] for c in range(10)])
  _write_classes(tmp_path / 'unit', per_class, 'nchw', 'unit64')
  _write_classes(tmp_path / 'bytes', per_class, 'nchw', 'uint8')
  scale = load_config('imagenet').data.pixel_scale
  assert scale == pytest.approx(1 / 255)
  group = config_lib.groups(load_config('imagenet', 'smoke,bp'))[0]
  experiment = ContinualImageNet(group.config, group)
  assert experiment.config.data.pixel_scale == scale
  inputs = {}
  for source, where in (('tfds', imagenet_dir), ('npy', tmp_path / 'unit'), ('bytes', tmp_path / 'bytes')):
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      data = imagenet.load_imagenet32('tfds' if source == 'tfds' else 'npy', str(where), None, images_per_class=7,
                                      num_classes=10)
    assert [str(w.message).endswith('assumes 0..1 files).') for w in caught] == [True] * (source == 'bytes')
    inputs[source] = np.asarray(experiment._pixels(jnp.asarray(data)))   # pylint: disable=protected-access
    np.testing.assert_array_equal(inputs[source], imagenet.pixels(data, scale))
  np.testing.assert_array_equal(inputs['tfds'], inputs['npy'])
  np.testing.assert_array_equal(inputs['tfds'], inputs['bytes'])
  original = np.stack([np.load(tmp_path / 'unit' / f'{c}.npy')[:7] for c in range(10)]).astype(np.float32)
  np.testing.assert_allclose(inputs['npy'], original.transpose(0, 1, 3, 4, 2), rtol=1e-6, atol=0)
  assert 0.9 < inputs['npy'].max() <= 1.0


def test_imagenet_npy_files_that_cannot_be_read_as_pixels(tmp_path):
  images = np.random.default_rng(3).integers(0, 256, (2, 9, 32, 32, 3), dtype=np.uint8)
  _write_classes(tmp_path / 'mixed', images, 'nhwc', 'byte')
  np.save(tmp_path / 'mixed' / '1.npy', images[1].astype(np.float32) / 255)
  with pytest.raises(ValueError, match='mix float pixels'):
    imagenet.load_imagenet32('npy', str(tmp_path / 'mixed'), None, images_per_class=7, num_classes=2)
  _write_classes(tmp_path / 'flat', images.reshape(2, 9, -1), 'nhwc', 'uint8')
  with pytest.raises(ValueError, match=r'shape \(9, 3072\).*\(N, 3, 32, 32\)'):
    imagenet.load_imagenet32('npy', str(tmp_path / 'flat'), None, images_per_class=7, num_classes=2)
  _write_classes(tmp_path / 'normalised', images.astype(np.float32) - 128, 'nhwc', 'uint8')
  with pytest.raises(ValueError, match='expected 0..255'):
    imagenet.load_imagenet32('npy', str(tmp_path / 'normalised'), None, images_per_class=7, num_classes=2)
  with pytest.raises(ValueError, match='fewer than images_per_class=10'):
    imagenet.load_imagenet32('npy', str(tmp_path / 'mixed'), None, images_per_class=10, num_classes=1)


@pytest.mark.parametrize('source', imagenet.SOURCES)
def test_missing_imagenet_names_where_it_looked_and_both_ways(tmp_path, source):
  with pytest.raises(arrays.DatasetNotFoundError) as error:
    imagenet.load_imagenet32(source, str(tmp_path), str(tmp_path / 'cache'), images_per_class=7, num_classes=10)
  message = str(error.value)
  where = str(tmp_path / 'imagenet_resized' / '32x32') if source == 'tfds' else str(tmp_path / '0.npy')
  assert where in message
  assert 'tfds build imagenet_resized/32x32' in message and f'{tmp_path}/<class_id>.npy' in message
  assert "data.source='tfds'" in message and "data.source='npy'" in message
  assert not (tmp_path / 'cache').exists()
  with pytest.raises(ValueError, match="data.source='jpeg' is not known"):
    imagenet.load_imagenet32('jpeg', str(tmp_path), None)


def test_class_order_file_is_used_and_validated(tmp_path):
  good = np.stack([np.random.default_rng(i).permutation(10) for i in range(4)])
  np.save(tmp_path / 'good.npy', good)
  np.testing.assert_array_equal(imagenet.load_class_orders(str(tmp_path / 'good.npy'), 3, 10), good[:3])
  bad = good.copy()
  bad[2, 0] = bad[2, 1]
  np.save(tmp_path / 'repeat.npy', bad)
  with pytest.raises(ValueError, match=r'rows \[2\] are not permutations of 0..9'):
    imagenet.load_class_orders(str(tmp_path / 'repeat.npy'), 3, 10)
  with pytest.raises(ValueError, match=r'shape \(4, 10\); expected \(5 or more, 10\)'):
    imagenet.load_class_orders(str(tmp_path / 'good.npy'), 5, 10)
  with pytest.raises(ValueError, match=r'expected \(3 or more, 1000\)'):
    imagenet.load_class_orders(str(tmp_path / 'good.npy'), 3, 1000)
  np.save(tmp_path / 'float.npy', good.astype(np.float32))
  with pytest.raises(ValueError, match='expected integer class ids'):
    imagenet.load_class_orders(str(tmp_path / 'float.npy'), 3, 10)
  with pytest.raises(FileNotFoundError, match='class order file .* not found'):
    imagenet.load_class_orders(str(tmp_path / 'absent.npy'), 3, 10)


# --- MNIST, digits --------------------------------------------------------------------------------

def test_mnist_is_flat_unit_float_and_cached(mnist_dir, tmp_path, monkeypatch):
  images, labels = mnist.load_mnist(str(mnist_dir), str(tmp_path))
  assert images.shape == (60, 784) and images.dtype == np.float32 and labels.dtype == np.int32
  stored_images, stored_labels = _stored('mnist', mnist_dir)
  np.testing.assert_array_equal(images, stored_images.reshape(60, 784) / np.float32(255))
  np.testing.assert_array_equal(labels, stored_labels)
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert sorted(os.listdir(tmp_path)) == ['mnist_train_images.npy', 'mnist_train_labels.npy']
  _no_tfds(monkeypatch)
  again, again_labels = mnist.load_mnist(str(mnist_dir), str(tmp_path))
  np.testing.assert_array_equal(again, images)
  np.testing.assert_array_equal(again_labels, labels)


def test_digits_ship_with_the_package():
  images, labels = digits.load_digits()
  assert images.shape == (1797, 64) and images.dtype == np.float32 and labels.dtype == np.int32
  assert images.min() == 0.0 and images.max() == 1.0
  np.testing.assert_array_equal(images * 16, np.round(images * 16))   # pixels were 0..16
  np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
  assert os.path.getsize(os.path.join(os.path.dirname(digits.__file__), 'digits.npz')) < 100_000
