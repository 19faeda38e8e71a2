"""Random-label memorisation (Lyle et al. 2023; Kumar et al.'s Random-Label MNIST): the toy problem
of plasticity. beyond_reference.md sections (d), (e).

A fixed set of images (the first `data.num_images` of the bundled 8x8 digits) is memorised with
labels re-drawn uniformly at random over 10 classes at every task, per seed: task t's labels are
`randint(fold_in(label_key, t), (num_images,), 0, 10)`, label_key drawn from the seed's key. Each
task trains `epochs_per_task` epochs of shuffled minibatches of `batch_size` (a fresh order every
epoch; the last partial batch of an epoch is dropped, as PyTorch's drop_last). One chunk = one
task. Interventions due at a task (resets, plasticity injection) run at its start.

Chunk metrics:
  train_accuracy  accuracy on the task's whole image set with its random labels after the last
                  epoch (an evaluation pass: `Learner.predict`)
  loss            mean training loss (pre-update, per minibatch) of the task's last epoch
  replacements    units re-initialised by CBP/ReDo during the task (networks with hidden units)
The evaluator measures the network after a task on its first `probe_size` images with that task's
labels, every `diagnostics.every` tasks (weight magnitude, dead units, ranks and
`evaluation.diagnose`, which holds the top Hessian eigenvalue).
"""
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl import nets
from ddl.experiments import evaluation
from ddl.experiments import online
from ddl.experiments import permuted_inputs
from ddl.learners import Learner, LearnerState

NUM_CLASSES = 10
DIGITS = 1797   # images in ddl/data/digits.npz


@struct.dataclass
class State:
  learner: LearnerState
  label_key: chex.PRNGKey   # labels, folded by task
  order_key: chex.PRNGKey   # epoch orders, folded by task and epoch
  step_key: chex.PRNGKey    # learner randomness, folded by step
  task: jax.Array           # tasks done


class RandomLabels:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""

  def __init__(self, config, group):
    self.config = config
    self.num_chunks = config.num_tasks
    self.learner = Learner.from_config(self.make_network(config), 'cross_entropy', config, group, self.num_chunks)
    self.steps_per_epoch = config.data.num_images // config.batch_size
    self.examples_per_chunk = config.epochs_per_task * self.steps_per_epoch * config.batch_size
    self.diagnostics_every = config.diagnostics.every

  @staticmethod
  def make_network(config):
    n = config.network
    return nets.build(nets.MLP, n, hidden=(n.hidden,) * n.layers, outputs=NUM_CLASSES)

  @staticmethod
  def checks(config):
    """(condition, message) pairs that a runnable config satisfies."""
    images = config.data.num_images
    return [
        (0 < images <= DIGITS, f'data.num_images must be in 1..{DIGITS} (the bundled digits)'),
        (config.num_tasks > 0, 'num_tasks must be > 0'),
        (config.epochs_per_task > 0, 'epochs_per_task must be > 0'),
        (0 < config.batch_size <= images, 'batch_size must be in 1..data.num_images'),
        (config.network.layers >= 0 and config.network.hidden > 0, 'network.layers >= 0, network.hidden > 0'),
        (0 < config.probe_size <= images, 'probe_size must be in 1..data.num_images'),
    ] + evaluation.checks(config)

  @staticmethod
  def load_data(config) -> Dict[str, np.ndarray]:
    """{'images': float32 (num_images, 64) in [0, 1]} on the host: the first num_images digits
    (their true labels are not used)."""
    from ddl.data import digits  # pylint: disable=g-import-not-at-top
    images, _ = digits.load_digits()
    return {'images': np.asarray(images[:config.data.num_images], np.float32)}

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: the task index."""
    return chunk

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    del seed
    learner_key, label_key, order_key, step_key = jax.random.split(key, 4)
    pixels = 64   # 8x8 digits
    learner = self.learner.init(learner_key, jnp.zeros((1, pixels)), hparams)
    return State(learner=learner, label_key=label_key, order_key=order_key, step_key=step_key,
                 task=jnp.zeros((), jnp.int32))

  def labels(self, state: State, task, count: int) -> jax.Array:
    """Task `task`'s random labels of the `count` images: int32 (count,) in 0..9."""
    return jax.random.randint(jax.random.fold_in(state.label_key, task), (count,), 0, NUM_CLASSES)

  def accuracy(self, learner: LearnerState, images: jax.Array, labels: jax.Array) -> jax.Array:
    output, _ = self.learner.predict(learner, images)
    return (jnp.argmax(output, -1) == labels).mean()

  def evaluate(self, state: State, data) -> Dict[str, jax.Array]:
    """Diagnostics of the network after its last task, on its first probe_size images with that
    task's labels."""
    images = data['images']
    labels = self.labels(state, state.task - 1, images.shape[0])
    probe, labels = images[:self.config.probe_size], labels[:self.config.probe_size]
    key = jax.random.fold_in(state.step_key, -1 - state.task)
    return evaluation.diagnose(self.learner, state.learner, probe, labels, key, self.config.diagnostics,
                               permuted_inputs.CONVENTION)

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    config = self.config
    images = data['images']
    count = images.shape[0]
    labels = self.labels(state, state.task, count)
    learner = self.learner.boundary(state.learner, state.task, jax.random.fold_in(state.order_key, -1 - state.task),
                                    jnp.zeros((1, images.shape[1])))
    batch, steps, epochs = config.batch_size, self.steps_per_epoch, config.epochs_per_task
    task_order_key = jax.random.fold_in(state.order_key, state.task)

    def epoch(learner, e):
      order = jax.random.permutation(jax.random.fold_in(task_order_key, e), count)

      def minibatch(i):
        index = order[i * batch + jnp.arange(batch)]
        return images[index], labels[index]

      first_step = (state.task * epochs + e) * steps
      learner, sums = online.learn(self.learner, learner, minibatch, steps, state.step_key, first_step,
                                   config.scan_unroll)
      return learner, sums

    learner, sums = jax.lax.scan(epoch, learner, jnp.arange(epochs))
    values = {'train_accuracy': self.accuracy(learner, images, labels), 'loss': sums.loss[-1] / steps}
    if self.learner.unit_layers:
      values['replacements'] = sums.replaced.sum().astype(jnp.float32)
    return state.replace(learner=learner, task=state.task + 1), values
