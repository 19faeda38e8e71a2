"""Networks of the paper as Flax modules.

Every learner network returns `(output, features)`, where `features` maps a hidden layer's name to
its post-activation output (what CBP and the diagnostics read), and declares its replaceable units
once with `unit_layers()` (see `ddl.learners.cbp.UnitLayer`).
"""
import math
from typing import Callable, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddl.learners.cbp import UnitLayer

ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu, 'tanh': jnp.tanh, 'sigmoid': nn.sigmoid, 'elu': nn.elu, 'swish': nn.swish,
    'leaky_relu': lambda x: nn.leaky_relu(x, 0.01), 'selu': nn.selu, 'linear': lambda x: x}

# PyTorch `calculate_gain`; swish and elu use relu's gain as in the original's CBP bounds.
GAINS = {'relu': math.sqrt(2.0), 'tanh': 5.0 / 3.0, 'sigmoid': 1.0, 'linear': 1.0, 'elu': math.sqrt(2.0),
         'swish': math.sqrt(2.0), 'leaky_relu': math.sqrt(2.0 / (1 + 0.01 ** 2)), 'selu': 1.0}

INITS = ('kaiming', 'lecun', 'xavier', 'default')


def initializer(init: str, activation: str = 'linear') -> Callable[..., jax.Array]:
  """Weight initializer by the original's names (lop_reference.md §1.1), fan-in based.

  kaiming: U(+-gain*sqrt(3/fan_in)); lecun: U(+-sqrt(3/fan_in)); default: PyTorch's Linear/Conv
  default U(+-1/sqrt(fan_in)); xavier: U(+-gain*sqrt(6/(fan_in+fan_out))).
  """
  gain = GAINS[activation]
  if init == 'kaiming':
    return nn.initializers.variance_scaling(gain ** 2, 'fan_in', 'uniform')
  if init == 'lecun':
    return nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
  if init == 'default':
    return nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
  if init == 'xavier':
    return nn.initializers.variance_scaling(gain ** 2, 'fan_avg', 'uniform')
  raise ValueError(f'init={init!r} is not known; use one of {INITS}.')


class MLP(nn.Module):
  """in -> hidden... (activation) -> out; hidden layers use `init` with the activation's gain,
  the output layer the same scheme with linear gain; zero biases (the original's FFNN/DeepFFNN).
  With no hidden layers it is the linear baseline (MyLinear). `weight_init`: see `initializer`."""
  hidden: Sequence[int]
  outputs: int
  activation: str = 'relu'
  weight_init: str = 'kaiming'

  @nn.compact
  def __call__(self, x: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    features = {}
    act = ACTIVATIONS[self.activation]
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = act(nn.Dense(width, kernel_init=initializer(self.weight_init, self.activation),
                       bias_init=nn.initializers.zeros, name=f'hidden_{i}')(x))
      features[f'hidden_{i}'] = x
    out = nn.Dense(self.outputs, kernel_init=initializer(self.weight_init, 'linear'),
                   bias_init=nn.initializers.zeros, name='output')(x)
    return out, features

  def unit_layers(self) -> Tuple[UnitLayer, ...]:
    names = [f'hidden_{i}' for i in range(len(self.hidden))] + ['output']
    return tuple(
        UnitLayer(features=name, kernel=(name, 'kernel'), bias=(name, 'bias'),
                  consumer=(after, 'kernel'), consumer_bias=(after, 'bias'),
                  init=initializer(self.weight_init, self.activation))
        for name, after in zip(names[:-1], names[1:]))


class LTUNet(nn.Module):
  """The slowly-changing-regression target (FixLTUNet): in -> linear threshold units -> 1.

  Weights and biases are +-1; unit i fires when w_i.x + b_i > beta*(m+1) - S_i with, as coded in
  the original, S_i = (m - sum_j w_ij + b_i) / 2 (lop_reference.md §5.4).
  """
  hidden: int = 100
  beta: float = 0.7

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    sign = lambda key, shape, dtype=jnp.float32: jax.random.rademacher(key, shape, dtype)
    m = x.shape[-1]
    w = self.param('w', sign, (m, self.hidden))
    b = self.param('b', sign, (self.hidden,))
    v = self.param('v', sign, (self.hidden, 1))
    c = self.param('c', sign, (1,))
    threshold = self.beta * (m + 1) - (m - w.sum(axis=0) + b) / 2
    ltu = (x @ w + b > threshold).astype(x.dtype)
    return (ltu @ v + c)[..., 0]
