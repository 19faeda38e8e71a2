"""Online permuted-input classification (lop_reference.md §5.3): permuted MNIST, permuted digits.

Each task draws a fresh pixel permutation and a fresh order of the examples (per seed, from the
seed's key), then presents `examples_per_task` examples once, in minibatches of `batch_size`
(the paper: 60 000 examples, batch 1). One chunk = one task. At the start of every task the
diagnostics are measured on the first `probe_size` examples of the newly permuted data.
"""
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl import metrics
from ddl.data import arrays
from ddl import nets
from ddl.experiments import online
from ddl.learners import Learner, LearnerState

SOURCES = ('mnist', 'digits', 'mock')


@struct.dataclass
class State:
  learner: LearnerState
  task_key: chex.PRNGKey   # permutations and example orders, folded by task
  step_key: chex.PRNGKey   # learner randomness, folded by step
  task: jax.Array          # tasks done


class PermutedInputs:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""
  metric_every: Dict[str, int] = {}   # every metric is logged at every chunk

  def __init__(self, config, group):
    self.config = config
    network = nets.MLP(hidden=(config.network.hidden,) * config.network.layers, outputs=config.data.num_classes,
                       activation=config.network.activation, weight_init=config.network.weight_init)
    self.learner = Learner(network=network, loss='cross_entropy', optimizer=config.optimizer, cbp=config.cbp,
                           max_replacement_rate=group.max_replacement_rate, perturbation=group.perturbation)
    self.num_chunks = config.num_tasks
    self.examples_per_chunk = config.examples_per_task

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
    ]

  @staticmethod
  def load_data(config) -> Dict[str, np.ndarray]:
    """{'images': float32 (N, pixels) in [0, 1], 'labels': int32 (N,)} on the host."""
    data = config.data
    if data.source == 'mnist':
      from ddl.data import mnist  # pylint: disable=g-import-not-at-top
      images, labels = mnist.load_mnist(data.data_dir or None, arrays.config_path(data.cache_dir))
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

  def _diagnostics(self, params, probe) -> Dict[str, jax.Array]:
    values = {'weight_magnitude': metrics.weight_magnitude({k: v['kernel'] for k, v in params.items()})}
    if self.learner.unit_layers:
      _, features = self.learner.apply(params, probe)
      hidden = list(features.values())
      values['dead_fraction'] = metrics.dormant_fraction_all(hidden, threshold=0.0)
      values['effective_rank'] = sum(metrics.effective_rank(h) for h in hidden) / len(hidden)
      values['stable_rank'] = metrics.stable_rank(hidden[-1]).astype(jnp.float32)
    return values

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    config = self.config
    images, labels = data['images'], data['labels']
    count = images.shape[0]
    task_key = jax.random.fold_in(state.task_key, state.task)
    perm_key, order_key = jax.random.split(task_key)
    permutation = jax.random.permutation(perm_key, images.shape[1])
    order = jax.random.permutation(order_key, count)
    probe = images[order[:config.probe_size]][:, permutation]
    values = self._diagnostics(state.learner.params, probe)      # at the start of the task
    batch = config.batch_size

    def minibatch(i):
      index = order[(i * batch + jnp.arange(batch)) % count]
      return images[index][:, permutation], labels[index]

    steps = config.examples_per_task // batch
    learner, sums = online.learn(self.learner, state.learner, minibatch, steps, state.step_key,
                                 state.task * steps, config.scan_unroll)
    values['accuracy'] = sums.correct / sums.examples
    values['loss'] = sums.loss / steps
    if self.learner.unit_layers:
      values['replacements'] = sums.replaced.astype(jnp.float32)
    return state.replace(learner=learner, task=state.task + 1), values
