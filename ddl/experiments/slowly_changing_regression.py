"""Slowly-changing regression (lop_reference.md §5.4): the paper's smallest loss of plasticity.

A 20-5-1 network learns online (batch 1, MSE) a fixed LTU target whose inputs drift slowly. One
chunk = one bin of `chunk_size` examples: a `lax.scan` of single-example learner steps over inputs
generated on the device, then the bin's metrics.
"""
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from ddl import metrics
from ddl import nets
from ddl.data import slowly_changing_regression as stream
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
  """init(key, hparams, seed) -> State; run_chunk(State, None) -> (State, metrics);
  evaluate(State, None) -> diagnostics. Pure, vmappable."""
  metric_every: Dict[str, int] = {}   # every metric is logged at every chunk
  diagnostics_every = 1               # chunks between evaluator calls (and after the last chunk)

  def __init__(self, config, group):
    self.config = config
    data = config.data
    self.target = nets.LTUNet(hidden=data.target_hidden, beta=data.beta)
    network = nets.MLP(hidden=(config.network.hidden,) * config.network.layers, outputs=1,
                       activation=config.network.activation, weight_init=config.network.weight_init)
    self.learner = Learner(network=network, loss='mse', optimizer=config.optimizer, cbp=config.cbp,
                           max_replacement_rate=group.max_replacement_rate,
                           perturbation=group.perturbation)
    self.num_chunks = config.num_examples // config.chunk_size
    self.examples_per_chunk = config.chunk_size    # per run, for throughput figures

  @staticmethod
  def checks(config):
    """(condition, message) pairs that a runnable config satisfies."""
    data = config.data
    return [
        (config.num_examples % config.chunk_size == 0, 'num_examples must be a multiple of chunk_size'),
        (0 < data.num_flipping <= data.num_inputs, 'data.num_flipping must be in [1, data.num_inputs]'),
        (data.flip_period > 0, 'data.flip_period must be > 0'),
        (data.target_hidden > 0, 'data.target_hidden must be > 0'),
        (config.network.layers >= 0 and config.network.hidden > 0,
         'network.layers must be >= 0 and network.hidden > 0'),
        (0 < config.probe_size <= config.chunk_size, 'probe_size must be in [1, chunk_size]'),
        (data.generator in stream.GENERATORS, f'data.generator must be one of {stream.GENERATORS}'),
    ]

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

  def run_chunk(self, state: State, data=None) -> Tuple[State, Dict[str, jax.Array]]:
    del data
    config, inputs = self.config, self.config.data
    count = config.chunk_size
    stream_state, x = stream.inputs(state.stream, state.examples, count, num_inputs=inputs.num_inputs,
                                    flip_period=inputs.flip_period, generator=inputs.generator)
    y = self.target.apply({'params': state.target}, x)
    learner, sums = online.learn(self.learner, state.learner, lambda i: (x[i][None], y[i][None]), count,
                                 state.step_key, state.examples, config.scan_unroll)
    values = {'error': sums.loss / count}
    if self.learner.network.unit_layers():
      _, features = self.learner.apply(learner.params, x[-config.probe_size:])
      hidden = list(features.values())
      values['dormant_fraction'] = metrics.dormant_fraction_all(hidden, threshold=0.0)
      values['effective_rank'] = metrics.effective_rank(hidden[-1])
      values['stable_rank'] = metrics.stable_rank(hidden[-1]).astype(jnp.float32)
      values['replacements'] = sums.replaced.astype(jnp.float32)
    new_state = state.replace(learner=learner, stream=stream_state, examples=state.examples + count)
    return new_state, values

  def evaluate(self, state: State, data=None) -> Dict[str, jax.Array]:
    """Diagnostics of the state after a chunk, a program of their own (see ddl.run): the weight
    magnitude. (The probe diagnostics, which use the chunk's last inputs, stay in run_chunk.)"""
    del data
    return {'weight_magnitude': metrics.weight_magnitude(state.learner.params)}
