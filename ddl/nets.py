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


def torch_default_bias(fan_in: int) -> Callable[..., jax.Array]:
  """PyTorch's default Linear/Conv bias init, U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Conv(nn.Module):
  """VALID, stride-1 convolution with the parameter layout of `nn.Conv` (kernel (kh, kw, in, out),
  bias (out,)), computed either by `lax.conv_general_dilated` ('lax') or as image patches times a
  matrix ('patches'). Under `jax.vmap` over parameters the first becomes a grouped convolution, a
  slow path on CPU; the second stays a batched matmul. The patches are shifted slices of the input
  (`lax.conv_general_dilated_patches` costs a convolution of its own)."""
  features: int
  kernel_size: Tuple[int, int]
  implementation: str = 'patches'
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    channels = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, channels, self.features))
    bias = self.param('bias', self.bias_init, (self.features,))
    numbers = ('NHWC', 'HWIO', 'NHWC')
    if self.implementation == 'lax':
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=numbers)
    elif self.implementation == 'patches':
      # shifted views stacked along features, ordered (kh, kw, in): data movement only
      h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
      patches = jnp.concatenate([x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
      y = patches @ kernel.reshape(kh * kw * channels, self.features)
    else:
      raise ValueError(f'conv implementation {self.implementation!r} is not known; use lax or patches.')
    return y + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2, stride-2 max-pooling of an NHWC map (even sizes, as in the ImageNet net) by a reshape:
  its gradient is a mask, where `reduce_window`'s is a slow select-and-scatter on CPU."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ConvNet(nn.Module):
  """The continual-ImageNet network (lop_reference.md §5.1): conv5x5(32) -> pool -> conv3x3(64) ->
  pool -> conv3x3(128) -> pool -> fc128 -> fc128 -> fc(outputs), ReLU, 2x2 max-pool, PyTorch
  default init; 177 218 parameters for 32x32x3 inputs and 2 outputs. Features: the pooled conv
  maps and the dense activations (what the original's ConvGnT reads)."""
  outputs: int = 2
  conv: str = 'patches'

  @nn.compact
  def __call__(self, x: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    features = {}
    init = initializer('default')
    pool = max_pool_2x2
    for name, width, size in (('conv_0', 32, 5), ('conv_1', 64, 3), ('conv_2', 128, 3)):
      fan_in = x.shape[-1] * size * size
      x = pool(nn.relu(Conv(width, (size, size), self.conv, init, torch_default_bias(fan_in), name=name)(x)))
      features[name] = x
    x = x.reshape(x.shape[0], -1)
    for name, width in (('dense_0', 128), ('dense_1', 128)):
      x = nn.relu(nn.Dense(width, kernel_init=init, bias_init=torch_default_bias(x.shape[-1]), name=name)(x))
      features[name] = x
    out = nn.Dense(self.outputs, kernel_init=init, bias_init=torch_default_bias(x.shape[-1]), name='output')(x)
    return out, features

  def unit_layers(self) -> Tuple[UnitLayer, ...]:
    names = ['conv_0', 'conv_1', 'conv_2', 'dense_0', 'dense_1', 'output']
    return tuple(UnitLayer(features=name, kernel=(name, 'kernel'), bias=(name, 'bias'), consumer=(after, 'kernel'),
                           consumer_bias=(after, 'bias'), init=initializer('default'))
                 for name, after in zip(names[:-1], names[1:]))


class ActorCritic(nn.Module):
  """PPO's networks as one module (lop_reference.md §5.5): a policy MLP giving the action mean, a
  state-independent `log_std` (init 0), and a value MLP; both ReLU MLPs with `weight_init`
  (the original: lecun). Returns ((mean, log_std, value), features) with the hidden activations
  of both MLPs as 'policy/hidden_i' and 'value/hidden_i', so one reset transform acts on both."""
  hidden: Sequence[int]
  actions: int
  activation: str = 'relu'
  weight_init: str = 'lecun'

  def _mlps(self, **kwargs):
    return (MLP(self.hidden, self.actions, self.activation, self.weight_init, **kwargs),
            MLP(self.hidden, 1, self.activation, self.weight_init, **kwargs))

  @nn.compact
  def __call__(self, x: jax.Array):
    mean, policy_features = MLP(self.hidden, self.actions, self.activation, self.weight_init, name='policy')(x)
    v, value_features = MLP(self.hidden, 1, self.activation, self.weight_init, name='value')(x)
    log_std = self.param('log_std', nn.initializers.zeros, (self.actions,))
    features = {**{f'policy/{k}': h for k, h in policy_features.items()},
                **{f'value/{k}': h for k, h in value_features.items()}}
    return (mean, log_std, v[..., 0]), features

  def policy_mean(self, params, x: jax.Array) -> jax.Array:
    """The action mean alone (what acting needs)."""
    return self._mlps(parent=None)[0].apply({'params': params['policy']}, x)[0]

  def unit_layers(self) -> Tuple[UnitLayer, ...]:
    layers = []
    for name, mlp in zip(('policy', 'value'), self._mlps(parent=None)):
      for layer in mlp.unit_layers():
        layers.append(UnitLayer(
            features=f'{name}/{layer.features}', kernel=(name,) + layer.kernel, bias=(name,) + layer.bias,
            consumer=(name,) + layer.consumer, consumer_bias=(name,) + layer.consumer_bias, init=layer.init))
    return tuple(layers)
