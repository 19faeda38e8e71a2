"""Continual ImageNet-32 (lop_reference.md §5.1): thousands of binary tasks, one class pair each.

The whole data set sits on the device once as uint8 (classes, images, 32, 32, 3); task t of a
seed uses classes order[2t], order[2t+1] of the seed's class order (tiled), labelled 0 and 1,
their first `train_per_class` images for training and the rest for testing. One chunk = one task:
the head is zeroed, then `epochs` epochs of minibatches gathered on the device from a fresh
shuffle each epoch, then the test accuracy. Interventions due at a task run at its start. The
evaluator measures the network every `diagnostics.every` tasks on a fixed probe batch (training
images of the seed's first two classes).
"""
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl.data import arrays
from ddl.data import imagenet
from ddl import nets
from ddl.experiments import evaluation
from ddl.experiments import online
from ddl.learners import Learner, LearnerState

SOURCES = ('tfds', 'npy', 'mock')
NETWORKS = ('convnet', 'linear')


@struct.dataclass
class State:
  learner: LearnerState
  order_key: chex.PRNGKey   # the seed's class order (unless an order file is given)
  epoch_key: chex.PRNGKey   # per-epoch shuffles, folded by epoch
  step_key: chex.PRNGKey    # learner randomness, folded by step
  seed: jax.Array           # seed index (row of an order file)
  task: jax.Array           # tasks done


class ContinualImageNet:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""

  def __init__(self, config, group):
    self.config = config
    self.num_chunks = config.num_tasks
    self.learner = Learner.from_config(self.make_network(config), 'cross_entropy', config, group, self.num_chunks)
    self.examples_per_chunk = 2 * config.data.train_per_class * config.epochs
    self.diagnostics_every = config.diagnostics.every

  @staticmethod
  def make_network(config):
    n = config.network
    if n.kind == 'convnet':
      return nets.build(nets.ConvNet, n, outputs=2)
    return nets.MLP(hidden=(), outputs=2, weight_init='default')

  @staticmethod
  def checks(config):
    """(condition, message) pairs that a runnable config satisfies."""
    data = config.data
    return [
        (data.source in SOURCES, f'data.source must be one of {SOURCES}'),
        (config.network.kind in NETWORKS, f'network.kind must be one of {NETWORKS}'),
        (config.network.conv in ('patches', 'lax'), "network.conv must be 'patches' or 'lax'"),
        (0 < data.train_per_class < data.images_per_class, 'data.train_per_class must be in [1, images_per_class)'),
        (2 <= data.num_classes, 'data.num_classes must be >= 2'),
        ((2 * data.train_per_class) % config.batch_size == 0,
         'batch_size must divide the 2 x data.train_per_class training images of a task'),
        (config.num_tasks > 0 and config.epochs > 0, 'num_tasks and epochs must be > 0'),
        (0 < config.probe_size <= 2 * data.train_per_class, 'probe_size must be in [1, 2 x data.train_per_class]'),
    ] + evaluation.checks(config)

  @staticmethod
  def load_data(config) -> Dict[str, np.ndarray]:
    """{'images': uint8 (classes, images, 32, 32, 3)[, 'orders': int32 (seeds, classes)]}."""
    data = config.data
    if data.source == 'mock':   # random pixels, for smoke runs without the data set
      rng = np.random.default_rng(0)
      images = rng.integers(0, 256, (data.num_classes, data.images_per_class, 32, 32, 3), dtype=np.uint8)
    else:
      images = imagenet.load_imagenet32(data.source, data.data_dir or None, arrays.config_path(data.cache_dir),
                                        images_per_class=data.images_per_class, num_classes=data.num_classes)
    out = {'images': np.asarray(images)}
    if data.order_file:
      out['orders'] = imagenet.load_class_orders(data.order_file, config.num_seeds, data.num_classes)
    return out

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: the task index."""
    return chunk

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    learner_key, order_key, epoch_key, step_key = jax.random.split(key, 4)
    learner = self.learner.init(learner_key, jnp.zeros((1, 32, 32, 3)), hparams)
    return State(learner=learner, order_key=order_key, epoch_key=epoch_key, step_key=step_key,
                 seed=jnp.asarray(seed, jnp.int32), task=jnp.zeros((), jnp.int32))

  def _order(self, state: State, data) -> jax.Array:
    if 'orders' in data:
      return data['orders'][state.seed]
    return jax.random.permutation(state.order_key, self.config.data.num_classes)

  def _pixels(self, images: jax.Array) -> jax.Array:
    return imagenet.pixels(images, self.config.data.pixel_scale)

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    config = self.config
    images, train = data['images'], config.data.train_per_class
    order = self._order(state, data)
    classes = order[(2 * state.task + jnp.arange(2)) % order.shape[0]]
    pair = images[classes]                                           # (2, images, 32, 32, 3)
    x_train = pair[:, :train].reshape((-1,) + pair.shape[2:])
    x_test = pair[:, train:].reshape((-1,) + pair.shape[2:])
    labels = lambda n: jnp.repeat(jnp.arange(2), n)
    y_train, y_test = labels(train), labels(pair.shape[1] - train)

    learner = self.learner.boundary(state.learner, state.task, jax.random.fold_in(state.order_key, -1 - state.task),
                                    jnp.zeros((1, 32, 32, 3)))
    learner = learner.replace(params={**learner.params, 'output': jax.tree.map(jnp.zeros_like,
                                                                               learner.params['output'])})
    batch, steps = config.batch_size, (2 * train) // config.batch_size
    first_epoch = state.task * config.epochs

    def epoch(carry, e):
      learner, correct, replaced = carry
      shuffle = jax.random.permutation(jax.random.fold_in(state.epoch_key, first_epoch + e), 2 * train)

      def minibatch(i):
        index = jax.lax.dynamic_slice_in_dim(shuffle, i * batch, batch)
        return self._pixels(x_train[index]), y_train[index]

      learner, sums = online.learn(self.learner, learner, minibatch, steps, state.step_key,
                                   (first_epoch + e) * steps, config.scan_unroll)
      return (learner, correct + sums.correct, replaced + sums.replaced), None

    zero = jnp.zeros((), jnp.int32)
    (learner, correct, replaced), _ = jax.lax.scan(epoch, (learner, zero, zero), jnp.arange(config.epochs))
    logits, _ = self.learner.predict(learner, self._pixels(x_test))
    values = {'test_accuracy': jnp.mean(jnp.argmax(logits, -1) == y_test),
              'train_accuracy': correct / (2 * train * config.epochs)}
    if self.learner.unit_layers:
      values['replacements'] = replaced.astype(jnp.float32)
    return state.replace(learner=learner, task=state.task + 1), values

  def evaluate(self, state: State, data) -> Dict[str, jax.Array]:
    """Diagnostics on the probe: training images of the seed's first two classes (labels 0, 1)."""
    order = self._order(state, data)
    half = self.config.probe_size // 2
    probe = self._pixels(data['images'][order[:2], :half].reshape((-1, 32, 32, 3)))
    labels = jnp.repeat(jnp.arange(2), half)
    key = jax.random.fold_in(state.step_key, -1 - state.task)
    return evaluation.diagnose(self.learner, state.learner, probe, labels, key, self.config.diagnostics,
                               evaluation.Convention(threshold=0.01, strict=True))
