"""Online permuted-input classification (lop_reference.md §5.3): permuted MNIST, permuted digits.

Each task draws a fresh pixel permutation and a fresh order of the examples (per seed, from the
seed's key), then presents `examples_per_task` examples once, in minibatches of `batch_size`
(the paper: 60 000 examples, batch 1). One chunk = one task. Interventions due at a task
(resets, plasticity injection) run at its start. The evaluator measures the network after a task
on that task's first `probe_size` (permuted) examples, every `diagnostics.every` tasks.
"""
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl.data import arrays
from ddl import nets
from ddl.experiments import evaluation
from ddl.experiments import online
from ddl.learners import Learner, LearnerState

SOURCES = ('mnist', 'digits', 'mock')
# the original's MNIST figures: dead units (never active), mean effective rank, |W| of the weights
CONVENTION = evaluation.Convention(dormant='dead_fraction', mean_effective_rank=True, kernels_only=True)


@struct.dataclass
class State:
  learner: LearnerState
  task_key: chex.PRNGKey   # permutations and example orders, folded by task
  step_key: chex.PRNGKey   # learner randomness, folded by step
  task: jax.Array          # tasks done


class PermutedInputs:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""

  def __init__(self, config, group):
    self.config = config
    self.num_chunks = config.num_tasks
    self.learner = Learner.from_config(self.make_network(config), 'cross_entropy', config, group, self.num_chunks)
    self.examples_per_chunk = config.examples_per_task
    self.diagnostics_every = config.diagnostics.every

  @staticmethod
  def make_network(config):
    n = config.network
    return nets.build(nets.MLP, n, hidden=(n.hidden,) * n.layers, outputs=config.data.num_classes)

  @staticmethod
  def checks(config):
    """(condition, message) pairs that a runnable config satisfies."""
    return [
        (config.data.source in SOURCES, f'data.source must be one of {SOURCES}'),
        (config.num_tasks > 0, 'num_tasks must be > 0'),
        (config.examples_per_task > 0 and config.examples_per_task % config.batch_size == 0,
         'examples_per_task must be a positive multiple of batch_size'),
        (config.network.layers >= 0 and config.network.hidden > 0, 'network.layers >= 0, network.hidden > 0'),
        (config.probe_size > 0, 'probe_size must be > 0'),
    ] + evaluation.checks(config)

  @staticmethod
  def load_data(config) -> Dict[str, np.ndarray]:
    """{'images': float32 (N, pixels) in [0, 1], 'labels': int32 (N,)} on the host."""
    data = config.data
    if data.source == 'mnist':
      from ddl.data import mnist  # pylint: disable=g-import-not-at-top
      images, labels = mnist.load_mnist(data.data_dir or None, arrays.config_path(data.cache_dir), data.download)
    elif data.source == 'digits':
      from ddl.data import digits  # pylint: disable=g-import-not-at-top
      images, labels = digits.load_digits()
    else:   # 'mock': random pixels and labels of the configured size, for smoke runs without data
      rng = np.random.default_rng(0)
      images = rng.random((data.mock_examples, data.input_size), dtype=np.float32)
      labels = rng.integers(0, data.num_classes, data.mock_examples).astype(np.int32)
    if images.shape[1] != data.input_size:
      raise ValueError(f'data.input_size={data.input_size} but the {data.source} images have '
                       f'{images.shape[1]} pixels; set data.input_size={images.shape[1]}.')
    return {'images': np.asarray(images, np.float32), 'labels': np.asarray(labels, np.int32)}

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: the task index."""
    return chunk

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    del seed
    learner_key, task_key, step_key = jax.random.split(key, 3)
    pixels = self.config.data.input_size
    learner = self.learner.init(learner_key, jnp.zeros((1, pixels)), hparams)
    return State(learner=learner, task_key=task_key, step_key=step_key, task=jnp.zeros((), jnp.int32))

  def _task(self, state: State, data, task):
    """Task `task`'s pixel permutation and example order."""
    perm_key, order_key = jax.random.split(jax.random.fold_in(state.task_key, task))
    return (jax.random.permutation(perm_key, data['images'].shape[1]),
            jax.random.permutation(order_key, data['images'].shape[0]))

  def evaluate(self, state: State, data) -> Dict[str, jax.Array]:
    """Diagnostics of the network after its last task, on that task's first probe_size examples."""
    permutation, order = self._task(state, data, state.task - 1)
    index = order[:self.config.probe_size]
    probe, labels = data['images'][index][:, permutation], data['labels'][index]
    key = jax.random.fold_in(state.step_key, -1 - state.task)
    return evaluation.diagnose(self.learner, state.learner, probe, labels, key, self.config.diagnostics, CONVENTION)

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    config = self.config
    images, labels = data['images'], data['labels']
    count = images.shape[0]
    permutation, order = self._task(state, data, state.task)
    learner = self.learner.boundary(state.learner, state.task, jax.random.fold_in(state.task_key, -1 - state.task),
                                    jnp.zeros((1, images.shape[1])))
    batch = config.batch_size

    def minibatch(i):
      index = order[(i * batch + jnp.arange(batch)) % count]
      return images[index][:, permutation], labels[index]

    steps = config.examples_per_task // batch
    learner, sums = online.learn(self.learner, learner, minibatch, steps, state.step_key,
                                 state.task * steps, config.scan_unroll)
    values = {'accuracy': sums.correct / sums.examples, 'loss': sums.loss / steps}
    if self.learner.unit_layers:
      values['replacements'] = sums.replaced.astype(jnp.float32)
    return state.replace(learner=learner, task=state.task + 1), values
