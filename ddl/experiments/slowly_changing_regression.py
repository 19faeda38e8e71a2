"""Slowly-changing regression (lop_reference.md §5.4): the paper's smallest loss of plasticity.

A 20-5-1 network learns online (batch 1, MSE) a fixed LTU target whose inputs drift slowly. One
chunk = one bin of `chunk_size` examples: a `lax.scan` of single-example learner steps over inputs
generated on the device, then the bin's metrics. Interventions due at a chunk run at its start;
the evaluator measures the network on the next `probe_size` inputs of the stream (not consumed).
"""
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from ddl import nets
from ddl.data import slowly_changing_regression as stream
from ddl.experiments import evaluation
from ddl.experiments import online
from ddl.learners import Learner, LearnerState


@struct.dataclass
class State:
  learner: LearnerState
  target: dict            # parameters of the LTU target network
  stream: stream.StreamState
  step_key: chex.PRNGKey  # per-example learner randomness (CBP draws, S&P noise), folded by example
  examples: jax.Array     # examples seen so far (the data-stream position)


class SlowlyChangingRegression:
  """init(key, hparams, seed) -> State; run_chunk(State, None) -> (State, metrics). Pure, vmappable."""

  def __init__(self, config, group):
    self.config = config
    data = config.data
    self.target = nets.LTUNet(hidden=data.target_hidden, beta=data.beta)
    self.num_chunks = config.num_examples // config.chunk_size
    self.learner = Learner.from_config(self.make_network(config), 'mse', config, group, self.num_chunks)
    self.examples_per_chunk = config.chunk_size    # per run, for throughput figures
    self.diagnostics_every = config.diagnostics.every

  @staticmethod
  def make_network(config):
    n = config.network
    return nets.build(nets.MLP, n, hidden=(n.hidden,) * n.layers, outputs=1)

  @staticmethod
  def checks(config):
    """(condition, message) pairs that a runnable config satisfies."""
    data = config.data
    return [
        (config.chunk_size > 0 and config.num_examples > 0 and config.num_examples % config.chunk_size == 0,
         'num_examples and chunk_size must be > 0, num_examples a multiple of chunk_size'),
        (0 < data.num_flipping <= data.num_inputs, 'data.num_flipping must be in [1, data.num_inputs]'),
        (data.flip_period > 0, 'data.flip_period must be > 0'),
        (data.target_hidden > 0, 'data.target_hidden must be > 0'),
        (config.network.layers >= 0 and config.network.hidden > 0,
         'network.layers must be >= 0 and network.hidden > 0'),
        (0 < config.probe_size <= config.chunk_size, 'probe_size must be in [1, chunk_size]'),
        (data.generator in stream.GENERATORS, f'data.generator must be one of {stream.GENERATORS}'),
    ] + evaluation.checks(config)

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: examples seen at its end."""
    return (chunk + 1) * self.config.chunk_size

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    del seed
    target_key, stream_key, learner_key, step_key = jax.random.split(key, 4)
    data = self.config.data
    target = self.target.init(target_key, jnp.zeros((1, data.num_inputs)))['params']
    learner = self.learner.init(learner_key, jnp.zeros((1, data.num_inputs)), hparams)
    return State(learner=learner, target=target, stream=stream.init_stream(stream_key, data.num_flipping),
                 step_key=step_key, examples=jnp.zeros((), jnp.int32))

  @staticmethod
  def load_data(config) -> None:
    """Nothing to load: the stream is generated on the device."""
    del config

  def _inputs(self, stream_state, examples, count):
    inputs = self.config.data
    return stream.inputs(stream_state, examples, count, num_inputs=inputs.num_inputs,
                         flip_period=inputs.flip_period, generator=inputs.generator)

  def evaluate(self, state: State, data=None) -> Dict[str, jax.Array]:
    """Diagnostics on the stream's next probe_size inputs (generated, not consumed)."""
    del data
    _, x = self._inputs(state.stream, state.examples, self.config.probe_size)
    y = self.target.apply({'params': state.target}, x)
    key = jax.random.fold_in(state.step_key, -1 - state.examples)
    return evaluation.diagnose(self.learner, state.learner, x, y, key, self.config.diagnostics)

  def run_chunk(self, state: State, data=None) -> Tuple[State, Dict[str, jax.Array]]:
    del data
    count = self.config.chunk_size
    stream_state, x = self._inputs(state.stream, state.examples, count)
    y = self.target.apply({'params': state.target}, x)
    chunk = state.examples // count
    learner = self.learner.boundary(state.learner, chunk, jax.random.fold_in(state.step_key, -1 - chunk),
                                    jnp.zeros((1, self.config.data.num_inputs)))
    learner, sums = online.learn(self.learner, learner, lambda i: (x[i][None], y[i][None]), count,
                                 state.step_key, state.examples, self.config.scan_unroll)
    values = {'error': sums.loss / count}
    if self.learner.unit_layers:
      values['replacements'] = sums.replaced.astype(jnp.float32)
    new_state = state.replace(learner=learner, stream=stream_state, examples=state.examples + count)
    return new_state, values
