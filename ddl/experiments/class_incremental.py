"""Class-incremental CIFAR-100 (lop_reference.md §5.2): a ResNet-18 learns 5 more classes every 200
epochs, with the loss and accuracy over the classes seen so far only.

The data set sits on the device once as uint8 per class ('train': the first `val_per_class` images
of a class are its validation images, the next `train_per_class` its training images; 'test').
Per seed a class order (a permutation drawn from the seed); increment k (1-based) uses the first
k x `classes_per_increment` classes of it. One chunk = one epoch: a shuffle of the seen training
images, `25 k` steps at batch 90 (a loop of dynamic length: shapes stay static), augmentation on
the device per example and per seed, the learning rate of the epoch's place in its increment, then
test and validation accuracy (eval-mode batch norm) over the seen classes, and early stopping: the
state with the best validation accuracy of the increment is kept and restored at its end (momentum
and CBP statistics are not rolled back, as in the original).

An epoch that starts an increment first takes the diagnostics of the model entering it, then
applies `increment_reset` (head or whole network re-initialised; not before the first increment).
The diagnostics are the original's post-run analysis ("next task" metrics, the ones its figures
plot): on the model it saved at the end of each increment, after the early-stopping restore and
*before* the reset (and on the initial model), a probe of `probe_size` (1 000) images drawn at
random from all training images (validation ones included) of the classes of the increment being
entered, no augmentation, train-mode batch norm: dormant fraction over all 17 feature maps, stable
and effective rank of the pooled representation, weight magnitude. The shared evaluator
(`ddl.experiments.evaluation`: active and ReDo-dormant fractions, feature and gradient norms,
plasticity, the top Hessian eigenvalue, learned step sizes, the methods' own) runs after the first
epoch of every `diagnostics.every` epochs and after the last, on `diagnostics_probe_size` images of
all classes seen so far, one run at a time, the loss over those classes; it leaves the four above to the chunk.
"""
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl import metrics
from ddl import nets
from ddl.data import arrays
from ddl.experiments import evaluation
from ddl.experiments import online
from ddl.learners import Learner, LearnerState

SOURCES = ('tfds', 'mock')
RESETS = ('none', 'head', 'network')


@struct.dataclass
class State:
  learner: LearnerState
  best_params: chex.ArrayTree       # early stopping: the best-validation parameters of this increment
  best_batch_stats: chex.ArrayTree  # ... and their batch-norm statistics
  best_val: jax.Array               # best validation accuracy of this increment (-1: none yet)
  order_key: chex.PRNGKey           # the seed's class order
  epoch_key: chex.PRNGKey           # per-epoch shuffles and test-set augmentation
  step_key: chex.PRNGKey            # learner randomness, folded by step
  augment_key: chex.PRNGKey         # training augmentation, folded by step
  reset_key: chex.PRNGKey           # re-initialisations as increments start
  epoch: jax.Array                  # epochs done
  steps: jax.Array                  # SGD steps done


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 NHWC -> float32, x / 255 normalised per channel."""
  return (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean)) / jnp.asarray(std)


def augment_one(key: chex.PRNGKey, x: jax.Array, pad: int = 4, max_degrees: float = 15.0) -> jax.Array:
  """The original's augmentation of one normalised HWC image: horizontal flip (p 0.5), a crop of the
  original size after `pad`-pixel reflect padding, rotation about the centre by an angle uniform in
  [0, max_degrees] (counter-clockwise, nearest neighbour, fill 0), in that order (torchvision
  RandomHorizontalFlip, RandomCrop(padding_mode='reflect'), RandomRotation((0, 15)))."""
  flip_key, crop_key, angle_key = jax.random.split(key, 3)
  h, w, c = x.shape
  x = jnp.where(jax.random.bernoulli(flip_key), x[:, ::-1], x)
  padded = jnp.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
  top, left = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
  x = jax.lax.dynamic_slice(padded, (top, left, 0), (h, w, c))
  theta = jnp.deg2rad(jax.random.uniform(angle_key, (), minval=0.0, maxval=max_degrees))
  dy, dx = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing='ij')
  src_x = jnp.round(dx * jnp.cos(theta) - dy * jnp.sin(theta) + (w - 1) / 2).astype(jnp.int32)
  src_y = jnp.round(dx * jnp.sin(theta) + dy * jnp.cos(theta) + (h - 1) / 2).astype(jnp.int32)
  inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
  rotated = x[jnp.clip(src_y, 0, h - 1), jnp.clip(src_x, 0, w - 1)]
  return jnp.where(inside[..., None], rotated, 0.0)


def augment(key: chex.PRNGKey, images: jax.Array) -> jax.Array:
  """`augment_one` per example of a normalised NHWC batch, each with its own key."""
  return jax.vmap(augment_one)(jax.random.split(key, images.shape[0]), images)


def shuffled(key: chex.PRNGKey, per_class: int, num_classes: int, first: jax.Array, stop: jax.Array) -> jax.Array:
  """A random order of the num_classes x per_class images (class-major indices into the seed's class
  order) with the images of classes first..stop-1 before all others: its first (stop - first) x
  per_class entries are a shuffle of those images (static shapes, traced bounds)."""
  index = jnp.arange(num_classes * per_class)
  inside = (index >= first * per_class) & (index < stop * per_class)
  return jnp.argsort(jnp.where(inside, jax.random.uniform(key, index.shape), 2.0))


def _pick(cond: jax.Array, a, b):
  """The tree `a` where `cond`, else `b`."""
  return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def lr_factor(epoch_in_increment: jax.Array, milestones, decay: float) -> jax.Array:
  """decay ** (number of milestones reached): the per-increment step schedule (0.2 at 60, 120, 160)."""
  reached = (epoch_in_increment >= jnp.asarray(milestones, jnp.int32)).sum() if milestones else 0
  return jnp.asarray(decay, jnp.float32) ** reached


class ClassIncremental:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""

  def __init__(self, config, group):
    self.config = config
    data = config.data
    self.num_increments = data.num_classes // config.classes_per_increment
    self.num_chunks = self.num_increments * config.epochs_per_increment
    self.learner = Learner.from_config(self.make_network(config), 'cross_entropy', config, group, self.num_chunks)
    # training examples per epoch grow with the increment; this is the mean over the run
    self.examples_per_chunk = int(round(
        config.classes_per_increment * data.train_per_class * (self.num_increments + 1) / 2))
    diagnostics = ('dormant_fraction', 'stable_rank', 'stable_rank_percent', 'effective_rank', 'weight_magnitude')
    self.metric_every = {name: config.epochs_per_increment for name in diagnostics}
    self.diagnostics_every = config.diagnostics.every
    self.evaluate_runs_at_once = 1   # the Hessian-vector products on a ResNet-18 take ~10 GB per run (256 images)

  @staticmethod
  def make_network(config):
    """ResNet-18 (`network.blocks_per_stage` 1: a ResNet-10); `network.layer_norm` puts layer norm
    in place of batch norm."""
    n = config.network
    return nets.build(nets.ResNet18, n, outputs=config.data.num_classes)

  @staticmethod
  def checks(config):
    """(condition, message) pairs that a runnable config satisfies."""
    data = config.data
    per_increment = config.classes_per_increment * data.train_per_class
    return [
        (data.source in SOURCES, f'data.source must be one of {SOURCES}'),
        (config.increment_reset in RESETS, f'increment_reset must be one of {RESETS}'),
        (config.network.conv in ('patches', 'lax'), "network.conv must be 'patches' or 'lax'"),
        (config.network.width > 0, 'network.width must be > 0'),
        (config.network.blocks_per_stage in (1, 2), 'network.blocks_per_stage must be 2 (ResNet-18) or 1 (ResNet-10)'),
        (data.source == 'mock' or data.num_classes == 100, 'data.num_classes must be 100 for the real data set'),
        (data.source == 'mock' or (data.val_per_class + data.train_per_class <= 500 and data.test_per_class <= 100),
         'data: val_per_class + train_per_class must be <= 500 and test_per_class <= 100 (CIFAR-100 per class)'),
        (data.train_per_class > 0 and data.val_per_class > 0 and data.test_per_class > 0,
         'data.train_per_class, val_per_class and test_per_class must be > 0'),
        (config.classes_per_increment > 0 and data.num_classes % config.classes_per_increment == 0,
         'classes_per_increment must divide data.num_classes'),
        (per_increment % config.batch_size == 0,
         'batch_size must divide classes_per_increment x data.train_per_class (the training images added per '
         'increment)'),
        (config.epochs_per_increment > 0, 'epochs_per_increment must be > 0'),
        (list(config.lr_milestones) == sorted(config.lr_milestones), 'lr_milestones must be increasing'),
        (0 < config.probe_size <= config.classes_per_increment * (data.val_per_class + data.train_per_class),
         'probe_size must be in [1, classes_per_increment x (val_per_class + train_per_class)]'),
        (0 < config.diagnostics_probe_size <= config.classes_per_increment * (data.val_per_class + data.train_per_class),
         'diagnostics_probe_size must be in [1, classes_per_increment x (val_per_class + train_per_class)]'),
    ] + evaluation.checks(config)

  @staticmethod
  def load_data(config) -> Dict[str, np.ndarray]:
    """{'train': uint8 (classes, val + train per class, 32, 32, 3), 'test': uint8 (classes, test per
    class, 32, 32, 3)}."""
    data = config.data
    train_images = data.val_per_class + data.train_per_class
    if data.source == 'mock':   # random pixels with a class-dependent tint, for runs without the data set
      rng = np.random.default_rng(0)
      tint = rng.integers(0, 128, (data.num_classes, 1, 1, 1, 3))
      make = lambda n: (rng.integers(0, 128, (data.num_classes, n, 32, 32, 3)) + tint).astype(np.uint8)
      return {'train': make(train_images), 'test': make(data.test_per_class)}
    from ddl.data import cifar100  # pylint: disable=g-import-not-at-top
    images = cifar100.load_cifar100(data.data_dir or None, arrays.config_path(data.cache_dir), data.download)
    return {'train': images['train'][:, :train_images], 'test': images['test'][:, :data.test_per_class]}

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: the epoch."""
    return chunk

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    del seed
    learner_key, order_key, epoch_key, step_key, augment_key, reset_key = jax.random.split(key, 6)
    learner = self.learner.init(nets.rbg_key(learner_key), jnp.zeros((1, 32, 32, 3)), hparams)
    zero = jnp.zeros((), jnp.int32)
    return State(learner=learner, best_params=learner.params, best_batch_stats=learner.batch_stats,
                 best_val=-jnp.ones(()), order_key=order_key, epoch_key=epoch_key, step_key=step_key,
                 augment_key=augment_key, reset_key=reset_key, epoch=zero, steps=zero)

  def order(self, state: State) -> jax.Array:
    return jax.random.permutation(state.order_key, self.config.data.num_classes)

  def _pixels(self, images: jax.Array) -> jax.Array:
    return normalize(images, self.config.data.mean, self.config.data.std)

  def accuracy(self, learner: LearnerState, test: jax.Array, val: jax.Array, order: jax.Array,
               increments: jax.Array, mask: jax.Array, key) -> Tuple[jax.Array, jax.Array]:
    """Eval-mode (test, validation) accuracy over the classes of the first `increments` increments,
    one increment's classes per batch (test and validation images in one forward pass); `key` None:
    no test augmentation, else augmented test images (the original's quirk)."""
    per = self.config.classes_per_increment
    n_test, n_val = test.shape[1], val.shape[1]

    def body(b, correct):
      classes = jax.lax.dynamic_slice_in_dim(order, b * per, per)
      x_test = self._pixels(test[classes].reshape((-1,) + test.shape[2:]))
      if key is not None:
        x_test = augment(jax.random.fold_in(key, b), x_test)
      x = jnp.concatenate([x_test, self._pixels(val[classes].reshape((-1,) + val.shape[2:]))])
      logits, _ = self.learner.predict(learner, x)
      hit = jnp.argmax(jnp.where(mask, logits, -jnp.inf), -1) == jnp.concatenate(
          [jnp.repeat(classes, n_test), jnp.repeat(classes, n_val)])
      return correct + jnp.stack([hit[:per * n_test].sum(), hit[per * n_test:].sum()])

    correct = jax.lax.fori_loop(0, increments, body, jnp.zeros(2, jnp.int32))
    return correct[0] / (increments * per * n_test), correct[1] / (increments * per * n_val)

  def probe(self, train: jax.Array, order: jax.Array, first: jax.Array, stop: jax.Array,
            key: chex.PRNGKey, size: int = 0) -> Tuple[jax.Array, jax.Array]:
    """(uint8 (size or probe_size, 32, 32, 3) images, their classes): drawn without replacement from all
    training images (validation ones included) of classes order[first:stop], as the original's
    post-run analysis draws them (the first batch of a shuffled loader over those classes)."""
    per_class = train.shape[1]
    pick = shuffled(key, per_class, self.config.data.num_classes, first, stop)[:size or self.config.probe_size]
    classes = order[pick // per_class]
    return train[classes, pick % per_class], classes

  def diagnostics(self, learner: LearnerState, probe: jax.Array) -> Dict[str, jax.Array]:
    """Dormant fraction over all units, stable and effective rank of the pooled representation and
    weight magnitude, on uint8 `probe` images, train-mode batch norm (statistics discarded)."""
    (_, features), _ = self.learner.apply_train(learner.params, self._pixels(probe), learner.batch_stats)
    hidden = list(features.values())
    pooled = hidden[-1]
    stable = metrics.stable_rank(pooled).astype(jnp.float32)
    return {'dormant_fraction': metrics.dormant_fraction_all(hidden, threshold=0.01, strict=True),
            'stable_rank': stable, 'stable_rank_percent': 100.0 * stable / pooled.shape[-1],
            'effective_rank': metrics.effective_rank(pooled),
            'weight_magnitude': metrics.weight_magnitude(learner.params)}

  def seen_after(self, state: State) -> jax.Array:
    """The number of classes seen by the end of the last epoch done."""
    return ((state.epoch - 1) // self.config.epochs_per_increment + 1) * self.config.classes_per_increment

  def evaluate(self, state: State, data) -> Dict[str, jax.Array]:
    """The shared diagnostics on a `probe` of `diagnostics_probe_size` images of the classes seen so far (no augmentation), the loss over the classes seen so
    far; without the four the chunk takes as the paper does (`diagnostics`)."""
    key = jax.random.fold_in(state.step_key, -1 - state.epoch)
    order, seen = self.order(state), self.seen_after(state)
    images, classes = self.probe(data['train'], order, 0, seen, key, self.config.diagnostics_probe_size)
    values = evaluation.diagnose(self.learner, state.learner, self._pixels(images), classes, key,
                                 self.config.diagnostics, output_mask=jnp.argsort(order) < seen)
    return {name: value for name, value in values.items() if name not in self.metric_every}

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    config, data_config = self.config, self.config.data
    train, test = data['train'], data['test']
    num_classes, per = data_config.num_classes, config.classes_per_increment
    val, per_class, batch = data_config.val_per_class, data_config.train_per_class, config.batch_size
    epochs = config.epochs_per_increment
    order = self.order(state)
    increment = state.epoch // epochs                      # 0-based
    epoch_in_increment = state.epoch % epochs
    seen = (increment + 1) * per
    mask = jnp.argsort(order) < seen                       # outputs of the seen classes
    # the model entering the epoch: at an increment start, the one saved at the end of the last
    # increment (restored), before the increment's reset
    probe_key = jax.random.fold_in(state.epoch_key, -1 - state.epoch)
    values = self.diagnostics(state.learner, self.probe(train, order, increment * per, seen, probe_key)[0])
    learner = state.learner
    if config.increment_reset != 'none':
      now = (epoch_in_increment == 0) & (increment > 0)
      fresh = self.learner.network.init(nets.rbg_key(jax.random.fold_in(state.reset_key, increment - 1)),
                                        jnp.zeros((1, 32, 32, 3)))['params']
      params = learner.params
      if config.increment_reset == 'head':
        params = {**params, 'fc': _pick(now, fresh['fc'], params['fc'])}
      else:
        params = _pick(now, fresh, params)
      learner = learner.replace(params=params)
    learner = self.learner.boundary(learner, state.epoch, jax.random.fold_in(state.reset_key, -1 - state.epoch),
                                    jnp.zeros((1, 32, 32, 3)))

    # one epoch over the seen training images, a fresh shuffle of them first
    shuffle_key, test_key = jax.random.split(jax.random.fold_in(state.epoch_key, state.epoch))
    shuffle = shuffled(shuffle_key, per_class, num_classes, 0, seen)
    steps = seen * per_class // batch

    def minibatch(i):
      index = jax.lax.dynamic_slice_in_dim(shuffle, i * batch, batch)
      classes = order[index // per_class]
      x = self._pixels(train[classes, val + index % per_class])
      return augment(jax.random.fold_in(state.augment_key, state.steps + i), x), classes

    factor = lr_factor(epoch_in_increment, tuple(config.lr_milestones), config.lr_decay)
    learner, sums = online.learn(self.learner, learner, minibatch, steps, state.step_key, state.steps,
                                 lr_factor=factor, output_mask=mask)
    values['test_accuracy'], values['val_accuracy'] = self.accuracy(
        learner, test, train[:, :val], order, increment + 1, mask, test_key if data_config.augment_test else None)
    values['train_accuracy'] = sums.correct / sums.examples
    values['train_loss'] = sums.loss / steps
    if self.learner.replaces_units:
      values['replacements'] = sums.replaced.astype(jnp.float32)

    # early stopping: keep the best-validation state of the increment, restore it at its end
    end = epoch_in_increment == epochs - 1
    better = values['val_accuracy'] > state.best_val
    best_params = _pick(better, learner.params, state.best_params)
    best_batch_stats = _pick(better, learner.batch_stats, state.best_batch_stats)
    best_val = jnp.maximum(values['val_accuracy'], state.best_val)
    params, batch_stats = learner.params, learner.batch_stats
    if config.early_stopping:
      params = _pick(end, best_params, params)
      batch_stats = _pick(end, best_batch_stats, batch_stats)
    learner = learner.replace(params=params, batch_stats=batch_stats)
    state = state.replace(learner=learner, best_params=best_params, best_batch_stats=best_batch_stats,
                          best_val=jnp.where(end, -1.0, best_val), epoch=state.epoch + 1,
                          steps=state.steps + steps)
    return state, values
