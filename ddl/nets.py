"""Networks of the paper as Flax modules.

Every learner network returns `(output, features)`, where `features` maps a hidden layer's name to
its post-activation output: the one way hidden activations reach the reset transforms (CBP, ReDo)
and the diagnostics alike. Which kernels make and read those units is declared outside the
networks, in `ddl.learners.topology`. `layer_norm` (every network): '' none, 'affine' Flax
`LayerNorm` over a layer's units before its activation (per position in conv maps), 'plain' the
no-affine variant over all of a sample's features (as in streaming RL). Networks that name their
layers (`layer_names()`: MLP, ConvNet) also run from a hidden layer on (`start`): the head that
plasticity injection and head resets act on.
"""
import dataclasses
import functools
import math
from typing import Callable, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddl import platform_defaults


ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu, 'tanh': jnp.tanh, 'sigmoid': nn.sigmoid, 'elu': nn.elu, 'swish': nn.swish,
    'leaky_relu': lambda x: nn.leaky_relu(x, 0.01), 'selu': nn.selu, 'linear': lambda x: x}

# PyTorch `calculate_gain`; swish and elu use relu's gain as in the original's CBP bounds.
GAINS = {'relu': math.sqrt(2.0), 'tanh': 5.0 / 3.0, 'sigmoid': 1.0, 'linear': 1.0, 'elu': math.sqrt(2.0),
         'swish': math.sqrt(2.0), 'leaky_relu': math.sqrt(2.0 / (1 + 0.01 ** 2)), 'selu': 1.0}



def _registered_activations():
  """Activations that network-option methods declare (`Method.activation`, e.g. CReLU)."""
  from ddl.learners import registry  # pylint: disable=g-import-not-at-top
  return {m.name: m for m in registry.NETWORK_OPTIONS.values() if m.activation is not None}


def activation_names() -> Tuple[str, ...]:
  """Every activation a network accepts: the built-in ones and those methods declare."""
  return tuple(ACTIVATIONS) + tuple(_registered_activations())


def _declared(name: str):
  """(function, gain) of activation `name`: built in, or declared by a method."""
  if name in ACTIVATIONS:
    return ACTIVATIONS[name], GAINS[name]
  method = _registered_activations().get(name)
  if method is None:
    raise ValueError(f'network.activation={name!r} is not known; use one of {activation_names()}.')
  return method.activation, method.gain


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation function `name` (it may change the width, e.g. CReLU doubles it: the next layer
  reads what it gives)."""
  return _declared(name)[0]


def gain(name: str) -> float:
  """The initialisation gain of activation `name` (PyTorch's `calculate_gain` or the method's)."""
  return _declared(name)[1]


def build(cls, network_config, **fields):
  """`cls(**fields)` plus every field of `cls` that the config's network section sets (its options:
  activation, layer_norm, weight_init, conv, ...), so an experiment passes a network's options
  without naming them; `fields` win."""
  names = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
  options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (network_config or {}).items() if k in names}
  return cls(**{**options, **fields})


INITS = ('kaiming', 'lecun', 'xavier', 'default', 'zeros', 'sparse', 'orthogonal')
LAYER_NORMS = ('', 'affine', 'plain')


def normalize(kind: str, name: str, x: jax.Array) -> jax.Array:
  """The `layer_norm` option applied to pre-activations x (batch, ..., units), inside a compact
  module: 'affine' is Flax LayerNorm over units with a learned scale and offset (params `name`),
  'plain' normalises over all of a sample's features with no parameters, '' leaves x as it is."""
  if kind == 'affine':
    return nn.LayerNorm(epsilon=1e-5, name=name)(x)
  if kind == 'plain':
    return nn.LayerNorm(epsilon=1e-5, use_scale=False, use_bias=False, reduction_axes=tuple(range(1, x.ndim)),
                        name=name)(x)
  if kind:
    raise ValueError(f'network.layer_norm={kind!r} is not known; use one of {LAYER_NORMS}.')
  return x


def initializer(init: str, activation: str = 'linear') -> Callable[..., jax.Array]:
  """Weight initializer by the original's names (lop_reference.md §1.1), fan-in based.

  kaiming: U(+-gain*sqrt(3/fan_in)); lecun: U(+-sqrt(3/fan_in)); default: PyTorch's Linear/Conv
  default U(+-1/sqrt(fan_in)); xavier: U(+-gain*sqrt(6/(fan_in+fan_out))); zeros: all 0 (a linear
  learner started at w = 0, as LMS/IDBD in Sutton 1992; never for hidden layers); sparse: streaming
  RL's `sparse_init` (see `sparse_uniform`), whatever the activation; orthogonal: PyTorch's
  `orthogonal_` with gain 1 (DrQ-v2's `weight_init` for every linear layer).
  """
  if init == 'sparse':
    return sparse_uniform()
  if init == 'orthogonal':
    return orthogonal()
  g = gain(activation)
  if init == 'kaiming':
    return nn.initializers.variance_scaling(g ** 2, 'fan_in', 'uniform')
  if init == 'lecun':
    return nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
  if init == 'default':
    return nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
  if init == 'xavier':
    return nn.initializers.variance_scaling(g ** 2, 'fan_avg', 'uniform')
  if init == 'zeros':
    return nn.initializers.zeros
  raise ValueError(f'init={init!r} is not known; use one of {INITS}.')


def orthogonal(scale: float = 1.0) -> Callable[..., jax.Array]:
  """PyTorch's `orthogonal_` (a Haar-random matrix with orthonormal rows or columns, whichever are
  fewer) by classical Gram-Schmidt with re-orthogonalisation ("twice is enough") of a Gaussian
  matrix: the Q of its QR with a positive diagonal R, Haar-distributed as torch's and Flax's. Not
  `jnp.linalg.qr`: its LAPACK call, run by XLA beside an MJX simulation in the same CPU program,
  deadlocks XLA's CPU runtime (seen with 4 DrQ-v2 runs vmapped on 2 cores)."""
  def init(key, shape, dtype=jnp.float32):
    rows, cols = math.prod(shape[:-1]), shape[-1]
    n, m = max(rows, cols), min(rows, cols)
    a = jax.random.normal(key, (n, m), jnp.float32)

    def column(j, q):
      v, earlier = a[:, j], (jnp.arange(m) < j).astype(jnp.float32)
      for _ in range(2):
        v = v - q @ ((q.T @ v) * earlier)
      return q.at[:, j].set(v / jnp.linalg.norm(v))

    q = jax.lax.fori_loop(0, m, column, jnp.zeros((n, m), jnp.float32))
    return (scale * (q.T if rows < cols else q)).reshape(shape).astype(dtype)
  return init


def sparse_uniform(sparsity: float = 0.9) -> Callable[..., jax.Array]:
  """The official `sparse_init` of streaming RL (Elsayed et al. 2024, `mohmdelsayed/streaming-drl`
  `sparse_init.py`, type 'uniform'): U(+-1/sqrt(fan_in)), then exactly ceil(sparsity * fan_in) of each
  output unit's fan_in weights set to 0, chosen by a random permutation per unit (not drawn with
  replacement as the JAX port does). Units are the last axis, fan_in the product of the others
  (a conv's h x w x c_in, as upstream), so a (..., k) slice is k fresh units (CBP's re-initialisation)."""
  def init(key, shape, dtype=jnp.float32):
    fan_in = math.prod(shape[:-1])
    zeros = int(math.ceil(sparsity * fan_in))
    weight_key, perm_key = jax.random.split(key)
    bound = math.sqrt(1.0 / fan_in)
    w = jax.random.uniform(weight_key, (fan_in, shape[-1]), dtype, -bound, bound)
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(perm_key, (fan_in, shape[-1])), axis=0), axis=0)
    return jnp.where(ranks < zeros, jnp.zeros((), dtype), w).reshape(shape)
  return init


class MLP(nn.Module):
  """in -> hidden... (activation) -> out; hidden layers use `init` with the activation's gain,
  the output layer the same scheme with linear gain; zero biases (the original's FFNN/DeepFFNN).
  With no hidden layers it is the linear baseline (MyLinear). `weight_init`: see `initializer`.
  start: index of the first layer to run (x is then that layer's input, the features of layer
  start - 1): the network from a hidden layer on, as plasticity injection's head. bias=False: no
  biases at all (a pure linear unit y = w.x with no hidden layers)."""
  hidden: Sequence[int]
  outputs: int
  activation: str = 'relu'
  weight_init: str = 'kaiming'
  layer_norm: str = ''
  bias: bool = True

  def layer_names(self) -> Tuple[str, ...]:
    return tuple(f'hidden_{i}' for i in range(len(self.hidden))) + ('output',)

  @nn.compact
  def __call__(self, x: jax.Array, start: int = 0) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    features = {}
    act = activation(self.activation)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      if i < start:
        continue
      x = nn.Dense(width, kernel_init=initializer(self.weight_init, self.activation),
                   bias_init=nn.initializers.zeros, use_bias=self.bias, name=f'hidden_{i}')(x)
      x = act(normalize(self.layer_norm, f'norm_{i}', x))
      features[f'hidden_{i}'] = x
    out = nn.Dense(self.outputs, kernel_init=initializer(self.weight_init, 'linear'),
                   bias_init=nn.initializers.zeros, use_bias=self.bias, name='output')(x)
    return out, features


def drq_trunk(x: jax.Array, features: int, init: str) -> jax.Array:
  """DrQ-v2's trunk (Yarats et al. 2022), inside a compact module: Dense(features) -> LayerNorm ->
  tanh, parameters 'trunk' and 'trunk_norm'."""
  x = nn.Dense(features, kernel_init=initializer(init), bias_init=nn.initializers.zeros, name='trunk')(x)
  return jnp.tanh(nn.LayerNorm(epsilon=1e-5, name='trunk_norm')(x))


class DrQActor(nn.Module):
  """DrQ-v2's actor (Yarats et al. 2022; Ma et al. 2024's code): trunk (`drq_trunk`), then an MLP
  of `hidden` ReLU layers and a tanh action mean. Returns (mean, features) with 'trunk' and
  'hidden_i' (the policy's layers, whose active units are the actor's FAU). Its layers are named
  ('trunk', 'hidden_i'..., 'output') and it runs from any of them on (`start`, as `MLP`)."""
  hidden: Sequence[int]
  outputs: int
  feature_dim: int = 50
  activation: str = 'relu'
  weight_init: str = 'orthogonal'
  layer_norm: str = ''

  def layer_names(self) -> Tuple[str, ...]:
    return ('trunk',) + tuple(f'hidden_{i}' for i in range(len(self.hidden))) + ('output',)

  @nn.compact
  def __call__(self, x: jax.Array, start: int = 0) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    features = {}
    if start == 0:
      x = features['trunk'] = drq_trunk(x, self.feature_dim, self.weight_init)
    act = activation(self.activation)
    for i, width in enumerate(self.hidden):
      if i + 1 < start:
        continue
      x = nn.Dense(width, kernel_init=initializer(self.weight_init, self.activation),
                   bias_init=nn.initializers.zeros, name=f'hidden_{i}')(x)
      x = features[f'hidden_{i}'] = act(normalize(self.layer_norm, f'norm_{i}', x))
    out = nn.Dense(self.outputs, kernel_init=initializer(self.weight_init), bias_init=nn.initializers.zeros,
                   name='output')(x)
    return jnp.tanh(out), features


class DrQCritic(nn.Module):
  """DrQ-v2's critic (clipped double Q): trunk (`drq_trunk`) on the observation, then two MLPs
  'q1', 'q2' of `hidden` ReLU layers on [trunk features, action]. Its input is one array,
  [observation, action] (the first `obs_size` columns the observation), so that the learner,
  resets and plasticity injection treat it as any network; returns ((batch, 2) Q-values,
  features: 'trunk', 'q1/hidden_i', 'q2/hidden_i'). Its heads read the action beside the trunk,
  so it is one block for resets and injection: `layer_names()` is ('critic',) and both act on the
  whole critic."""
  obs_size: int
  hidden: Sequence[int]
  feature_dim: int = 50
  activation: str = 'relu'
  weight_init: str = 'orthogonal'
  layer_norm: str = ''

  def layer_names(self) -> Tuple[str, ...]:
    return ('critic',)

  def head(self) -> MLP:
    """One Q MLP ('q1' and 'q2' are two of it), unbound (the unit topology reads it)."""
    return MLP(self.hidden, 1, self.activation, self.weight_init, self.layer_norm, parent=None)

  @nn.compact
  def __call__(self, x: jax.Array, start: int = 0) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    if start != 0:
      raise ValueError(f'DrQCritic runs as one block (start=0), got start={start}')
    obs, action = x[:, :self.obs_size], x[:, self.obs_size:]
    h = drq_trunk(obs, self.feature_dim, self.weight_init)
    features, values = {'trunk': h}, []
    for head in ('q1', 'q2'):
      q, hidden = MLP(self.hidden, 1, self.activation, self.weight_init, self.layer_norm, name=head)(
          jnp.concatenate([h, action], axis=-1))
      values.append(q[:, 0])
      features.update({f'{head}/{k}': v for k, v in hidden.items()})
    return jnp.stack(values, axis=-1), features


class DrQEncoder(nn.Module):
  """DrQ-v2's pixel encoder (Yarats et al. 2022; Ma et al. 2024's code, drqv2.py `Encoder`): uint8 NHWC
  images (stacked frames on the channels) scaled to /255 - 0.5, then `layers` ReLU convolutions 3x3 of
  `channels` (the first of stride 2), flattened: 32 x 35 x 35 = 39 200 features from 84x84. Orthogonal
  init with ReLU's gain, zero biases (their `weight_init`). It flattens (row, column, channel), where
  theirs is channel-major: a permutation of the next layer's input rows that changes nothing else.
  Features 'conv_i' (what the encoder's FAU pools); layers named 'conv_i', run from any (`start`, as `MLP`:
  x is then the map of layer start - 1)."""
  channels: int = 32
  layers: int = 4
  conv: str = 'patches'

  def layer_names(self) -> Tuple[str, ...]:
    return tuple(f'conv_{i}' for i in range(self.layers))

  @staticmethod
  def output_size(image_size: int, channels: int = 32, layers: int = 4) -> int:
    side = (image_size - 3) // 2 + 1 - 2 * (layers - 1)
    return channels * side * side

  @nn.compact
  def __call__(self, x: jax.Array, start: int = 0) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    features = {}
    if start == 0:
      x = x.astype(jnp.float32) / 255.0 - 0.5
    for i in range(start, self.layers):
      x = Conv(self.channels, (3, 3), self.conv, orthogonal(math.sqrt(2.0)), nn.initializers.zeros,
               strides=2 if i == 0 else 1, name=f'conv_{i}')(x)
      x = features[f'conv_{i}'] = nn.relu(x)
    return x.reshape(x.shape[0], -1), features


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
  """Convolution with the parameter layout of `nn.Conv` (kernel (kh, kw, in, out), bias (out,)),
  computed either by `lax.conv_general_dilated` ('lax') or as image patches times a matrix
  ('patches'). Under `jax.vmap` over parameters the first becomes a grouped convolution, a slow path
  on CPU; the second stays a batched matmul. On CPU, 'lax' takes its gradients from
  `channels_last_conv` (fast inside loops): for one run per device it is the faster and much the
  leaner choice for the ResNet (docs/benchmarks.md), while 'patches' wins for the ImageNet net,
  whose 3-channel 5x5 first layer XLA's convolution handles poorly. The patches are shifted
  (strided) slices of the input (`lax.conv_general_dilated_patches` costs a convolution of its
  own), stacked in two passes, first the kw column shifts, then the kh row shifts of those: XLA's
  CPU concatenate of all kh x kw pieces at once is ~3x slower for the 3-channel input of the
  ImageNet net's first layer.
  padding: 'VALID', 'SAME' (PyTorch's symmetric padding (k - 1) // 2, also with stride 2) or 'SAME_UPPER'
  (Flax's and TensorFlow's 'SAME': ceil(in / stride) outputs, the odd pixel of padding after).
  use_bias: False leaves the bias parameter out."""
  features: int
  kernel_size: Tuple[int, int]
  implementation: str = 'patches'
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros
  strides: int = 1
  padding: str = 'VALID'
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    s = self.strides
    channels = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, channels, self.features))
    if self.padding == 'SAME':
      pads = (((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2)
    elif self.padding == 'SAME_UPPER':
      total = [max((-(-n // s) - 1) * s + k - n, 0) for n, k in ((x.shape[1], kh), (x.shape[2], kw))]
      pads = tuple((t // 2, t - t // 2) for t in total)
    elif self.padding == 'VALID':
      pads = ((0, 0), (0, 0))
    else:
      raise ValueError(f'conv padding {self.padding!r} is not known; use VALID, SAME or SAME_UPPER.')
    if self.implementation == 'lax':
      conv = channels_last_conv if platform_defaults.channels_last_gradients() else _conv_nhwc
      y = conv(x, kernel, (s, s), pads)
    elif self.implementation == 'patches':
      if any(sum(pads, ())):
        x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),))
      # shifted views stacked along features, ordered (kh, kw, in) as the kernel: data movement only
      h, w = (x.shape[1] - kh) // s + 1, (x.shape[2] - kw) // s + 1
      rows = jnp.concatenate([x[:, :, j:j + (w - 1) * s + 1:s, :] for j in range(kw)], axis=-1)
      patches = jnp.concatenate([rows[:, i:i + (h - 1) * s + 1:s] for i in range(kh)], axis=-1)
      y = patches @ kernel.reshape(kh * kw * channels, self.features)
    else:
      raise ValueError(f'conv implementation {self.implementation!r} is not known; use lax or patches.')
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,))
    return y


def _conv_nhwc(x, kernel, strides, padding, numbers=('NHWC', 'HWIO', 'NHWC')):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=numbers)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def channels_last_conv(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  """An NHWC x HWIO convolution whose two gradient convolutions are also written channels-last.

  XLA's CPU backend runs a convolution fast only in that canonical form, and puts JAX's own
  gradient convolutions (kernel: batch and features swapped; input: kernel in and out swapped)
  into it only outside loops: inside `lax.scan` or `while` (every run loop here) they fall back to a
  naive loop, ~30x slower for the kernel gradient and ~3x for the input gradient (jax-ml/jax#12868).
  Here the operands are transposed into the canonical layouts explicitly (XLA leaves such explicit
  transposes in place; a test checks that a scan of gradient steps holds only canonical ones).
  Same values as `jax.grad` of the plain convolution, up to float rounding; being a custom VJP it
  has no forward-mode derivative (`jax.jvp`), for which use conv='patches'."""
  return _conv_nhwc(x, kernel, strides, padding)


def _channels_last_conv_fwd(x, kernel, strides, padding):
  return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _channels_last_conv_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  shape = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)
  # input gradient: the transpose of the convolution with its kernel stored (h, w, out, in)
  kernel_hwoi = jnp.swapaxes(kernel, 2, 3)
  dx, = jax.linear_transpose(lambda v: _conv_nhwc(v, kernel_hwoi, strides, padding, ('NHWC', 'HWOI', 'NHWC')),
                             shape(x))(dy)
  # kernel gradient: the transpose in the kernel, with x stored (in, h, w, batch), dy (h, w, batch, out)
  x_chwn, dy_hwno = jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3))
  kernel_ihwo = jnp.transpose(kernel, (2, 0, 1, 3))
  dk, = jax.linear_transpose(lambda k: _conv_nhwc(x_chwn, k, strides, padding, ('CHWN', 'IHWO', 'HWNC')),
                             shape(kernel_ihwo))(dy_hwno)
  return dx, jnp.transpose(dk, (1, 2, 0, 3))


channels_last_conv.defvjp(_channels_last_conv_fwd, _channels_last_conv_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2, stride-2 max-pooling of an NHWC map (even sizes, as in the ImageNet net) by a reshape:
  its gradient is a mask, where `reduce_window`'s is a slow select-and-scatter on CPU."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ConvNet(nn.Module):
  """The continual-ImageNet network (lop_reference.md §5.1): conv5x5(32) -> pool -> conv3x3(64) ->
  pool -> conv3x3(128) -> pool -> fc128 -> fc128 -> fc(outputs), ReLU, 2x2 max-pool, PyTorch
  default init; 177 218 parameters for 32x32x3 inputs and 2 outputs. Features: the pooled conv
  maps and the dense activations (what the original's ConvGnT reads). start: as `MLP` (3 runs the
  dense layers from the flattened last conv map). widths, kernels, dense: the conv widths and
  kernel sizes and the dense widths (the paper's by default; smaller ones for tests, or MinAtar's
  DQN net: one conv3x3(16), no pooling, fc128); pool: 2x2 max-pool after each conv. The last conv
  map is flattened in NHWC order, (position, channel); the original flattens channel-major, a
  permutation of the first dense layer's input rows that changes nothing else. activation: after
  every hidden layer (the paper's ReLU by default; one that changes the width, as CReLU, widens
  what the next layer reads).

  Dopamine's Atari network (DrQ(ε)'s FullRainbowNetwork: convs 32/64/64 of 8/4/3 at strides 4/2/1,
  fc512, dueling) takes the other fields: strides (one per conv; () = 1); padding ('VALID', or
  'SAME_UPPER': Flax's and TensorFlow's 'SAME', see `Conv`); dueling: Q = V + A - mean(A), the
  advantage A in 'output' and the value V in 'value', both read from the last hidden layer (one
  output layer for resets and injection); input_scale: the input's factor (1/255 for pixels);
  weight_init: 'default' (PyTorch's, biases too) or a name of `initializer` (zero biases, as Flax's
  default: Dopamine's is 'xavier')."""
  outputs: int = 2
  conv: str = 'patches'
  layer_norm: str = ''
  activation: str = 'relu'
  widths: Tuple[int, ...] = (32, 64, 128)
  kernels: Tuple[int, ...] = (5, 3, 3)
  pool: bool = True
  dense: Tuple[int, ...] = (128, 128)
  strides: Tuple[int, ...] = ()
  padding: str = 'VALID'
  dueling: bool = False
  input_scale: float = 1.0
  weight_init: str = 'default'

  def layer_names(self) -> Tuple[str, ...]:
    return (tuple(f'conv_{i}' for i in range(len(self.widths))) + tuple(f'dense_{i}' for i in range(len(self.dense)))
            + ('output',))

  def _layer_init(self, fan_in: int):
    """(kernel init, bias init) of a layer."""
    if self.weight_init == 'default':
      return initializer('default'), torch_default_bias(fan_in)
    return initializer(self.weight_init), nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array, start: int = 0) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    if len(self.kernels) != len(self.widths) or len(self.strides) not in (0, len(self.widths)):
      raise ValueError(f'ConvNet: {len(self.widths)} conv widths but {len(self.kernels)} kernel sizes and '
                       f'{len(self.strides)} strides (give one per conv, or no strides for 1).')
    features = {}
    act = activation(self.activation)
    if start == 0 and self.input_scale != 1.0:
      x = x * self.input_scale
    strides = self.strides or (1,) * len(self.widths)
    for i, (width, size, stride) in enumerate(zip(self.widths, self.kernels, strides)):
      if i < start:
        continue
      name = f'conv_{i}'
      x = Conv(width, (size, size), self.conv, *self._layer_init(x.shape[-1] * size * size), strides=stride,
               padding=self.padding, name=name)(x)
      x = act(normalize(self.layer_norm, f'{name}_norm', x))
      x = max_pool_2x2(x) if self.pool else x
      features[name] = x
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.dense, start=len(self.widths)):
      if i < start:
        continue
      name = f'dense_{i - len(self.widths)}'
      kernel_init, bias_init = self._layer_init(x.shape[-1])
      x = nn.Dense(width, kernel_init=kernel_init, bias_init=bias_init, name=name)(x)
      x = act(normalize(self.layer_norm, f'{name}_norm', x))
      features[name] = x
    kernel_init, bias_init = self._layer_init(x.shape[-1])
    out = nn.Dense(self.outputs, kernel_init=kernel_init, bias_init=bias_init, name='output')(x)
    if self.dueling:
      value = nn.Dense(1, kernel_init=kernel_init, bias_init=bias_init, name='value')(x)
      out = value + out - jnp.mean(out, axis=-1, keepdims=True)
    return out, features


class ActorCritic(nn.Module):
  """PPO's networks as one module (lop_reference.md §5.5): a policy MLP giving the action mean, a
  state-independent `log_std` (init 0), and a value MLP; both ReLU MLPs with `weight_init`
  (the original: lecun). Returns ((mean, log_std, value), features) with the hidden activations
  of both MLPs as 'policy/hidden_i' and 'value/hidden_i', so one reset transform acts on both."""
  hidden: Sequence[int]
  actions: int
  activation: str = 'relu'
  weight_init: str = 'lecun'
  layer_norm: str = ''

  def mlps(self, **kwargs):
    """The (policy, value) MLPs, as unbound modules with `parent=None`."""
    return (MLP(self.hidden, self.actions, self.activation, self.weight_init, self.layer_norm, **kwargs),
            MLP(self.hidden, 1, self.activation, self.weight_init, self.layer_norm, **kwargs))

  @nn.compact
  def __call__(self, x: jax.Array):
    mean, policy_features = MLP(self.hidden, self.actions, self.activation, self.weight_init, self.layer_norm,
                                name='policy')(x)
    v, value_features = MLP(self.hidden, 1, self.activation, self.weight_init, self.layer_norm, name='value')(x)
    log_std = self.param('log_std', nn.initializers.zeros, (self.actions,))
    features = {**{f'policy/{k}': h for k, h in policy_features.items()},
                **{f'value/{k}': h for k, h in value_features.items()}}
    return (mean, log_std, v[..., 0]), features

  def policy_mean(self, params, x: jax.Array) -> jax.Array:
    """The action mean alone (what acting needs)."""
    return self.mlps(parent=None)[0].apply({'params': params['policy']}, x)[0]


class StreamActorCritic(nn.Module):
  """Stream AC's networks (Elsayed et al. 2024, official `stream_ac_continuous.py`): an actor and a
  critic, each in -> hidden... (Dense, layer norm without parameters over the sample's features,
  Leaky ReLU 0.01) -> out, every Dense sparse-initialised (`sparse_uniform`, zero bias). The actor's
  output layer holds the mean head and the std head side by side (upstream: two Linear layers with the
  same per-unit init, so one Dense of 2 x actions units is the same distribution); std =
  softplus(pre-std), state-dependent, unbounded below. Returns ((mean, std, value), features) with
  'policy/hidden_i' and 'value/hidden_i', so one reset transform acts on both networks."""
  hidden: Sequence[int] = (128, 128)
  actions: int = 8
  activation: str = 'leaky_relu'
  weight_init: str = 'sparse'
  layer_norm: str = 'plain'

  def mlps(self, **kwargs):
    """The (policy, value) MLPs, as unbound modules with `parent=None`."""
    return (MLP(self.hidden, 2 * self.actions, self.activation, self.weight_init, self.layer_norm, **kwargs),
            MLP(self.hidden, 1, self.activation, self.weight_init, self.layer_norm, **kwargs))

  @nn.compact
  def __call__(self, x: jax.Array):
    out, policy_features = MLP(self.hidden, 2 * self.actions, self.activation, self.weight_init, self.layer_norm,
                               name='policy')(x)
    v, value_features = MLP(self.hidden, 1, self.activation, self.weight_init, self.layer_norm, name='value')(x)
    features = {**{f'policy/{k}': h for k, h in policy_features.items()},
                **{f'value/{k}': h for k, h in value_features.items()}}
    return (*self._split(out), v[..., 0]), features

  def _split(self, out: jax.Array):
    return out[..., :self.actions], nn.softplus(out[..., self.actions:])

  def policy(self, params, x: jax.Array):
    """(mean, std) alone (what acting needs)."""
    return self._split(self.mlps(parent=None)[0].apply({'params': params['policy']}, x)[0])

  def value(self, params, x: jax.Array) -> jax.Array:
    """v(x) alone."""
    return self.mlps(parent=None)[1].apply({'params': params['value']}, x)[0][..., 0]


def rbg_key(key: jax.Array) -> jax.Array:
  """The key as an 'rbg' key (XLA's RngBitGenerator; split and fold_in stay threefry): a draw then
  compiles to one op instead of an unrolled threefry, which keeps programs with many initializers
  (the ResNet's, CBP's fresh weights of 17 layers) compiling in seconds on CPU. Its numbers are the
  same for a run under vmap of any batch size, not between vmapped and unbatched calls."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl='rbg')):
      return key
    key = jax.random.key_data(key)
  if key.shape[-1] == 4:    # raw rbg key data
    return jax.random.wrap_key_data(key, impl='rbg')
  return jax.random.wrap_key_data(jnp.concatenate([key, key ^ jnp.uint32(0x9E3779B9)], axis=-1), impl='rbg')


def _rbg(init: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """`init` drawing from `rbg_key(key)`."""
  return lambda key, shape, dtype=jnp.float32: init(rbg_key(key), shape, dtype)


def he_normal() -> Callable[..., jax.Array]:
  """N(0, 2 / fan_in), untruncated: PyTorch's kaiming_normal_(mode='fan_in', relu), the ResNet's
  conv init and ResGnT's fresh weights (lop_reference.md §1.1, §2.4). Draws from `rbg_key`."""
  return _rbg(nn.initializers.variance_scaling(2.0, 'fan_in', 'normal'))


class BatchNorm(nn.Module):
  """PyTorch's BatchNorm2d over the last axis (NHWC): normalises with the batch's biased variance in
  train mode and updates the running statistics with `momentum` (PyTorch's convention: the weight of
  the new batch) and the *unbiased* batch variance (n / (n - 1), n = values per channel), as
  PyTorch does and Flax's BatchNorm does not. Parameters 'scale', 'bias'; batch_stats 'mean', 'var'
  (Flax's names)."""
  use_running_average: bool
  momentum: float = 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = x.mean(axes)
      var = jnp.square(x - mean).mean(axes)
      n = x.size // c
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * mean
        ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class ResNet18(nn.Module):
  """The modified ResNet-18 of class-incremental CIFAR-100 (lop_reference.md §5.2): 3x3 stride-1
  stem, no max-pool, BasicBlocks [2, 2, 2, 2] at widths w, 2w, 4w, 8w (stride 2 and a 1x1 conv + BN
  downsample at the first block of stages 2-4), convs with biases, BN as PyTorch's (`BatchNorm`:
  momentum 0.1, eps 1e-5, unbiased running variance), global average pool -> fc(outputs). Init:
  convs He normal, fc N(0, 1/fan_in), zero biases, BN 1 / 0. Call with train=True for batch
  statistics (mutable 'batch_stats').

  Features (what ResGnT and the diagnostics read, 17 entries): 'stem' (after BN + ReLU), per block
  'block{i}_conv1' (after bn1 + ReLU) and 'block{i}_out' (after the residual add + ReLU); the last
  block's output is replaced by the pooled (batch, 8w) vector.

  layer_norm: '' batch norm (the paper), else the `layer_norm` option: Flax LayerNorm over channels
  in place of every BatchNorm (affine, same names, no running statistics).

  blocks_per_stage: 2 is ResNet-18 (the paper); 1 (a ResNet-10, what the `:smoke` config uses) has
  the same kinds of layers and joins, half of them to compile.

  activation: inside each block, after conv1 and bn1 (ReLU, the paper's, by default); the stem's and
  the blocks' outputs keep ReLU, since the identity shortcuts need their width (an activation that
  changes the width, as CReLU, then widens only what conv2 reads)."""
  outputs: int = 100
  width: int = 64
  conv: str = 'patches'
  layer_norm: str = ''
  blocks_per_stage: int = 2
  activation: str = 'relu'

  def _conv(self, features, size, strides, name):
    return Conv(features, (size, size), self.conv, he_normal(), nn.initializers.zeros, strides=strides,
                padding='SAME', name=name)

  def _bn(self, train, name):
    if self.layer_norm:
      return nn.LayerNorm(epsilon=1e-5, name=name)
    return BatchNorm(use_running_average=not train, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    features = {}
    x = nn.relu(self._bn(train, 'stem_bn')(self._conv(self.width, 3, 1, 'stem')(x)))
    features['stem'] = x
    for i, (width, strides) in enumerate(self.blocks()):
      h = activation(self.activation)(self._bn(train, f'block{i}_bn1')(self._conv(width, 3, strides,
                                                                                  f'block{i}_conv1')(x)))
      features[f'block{i}_conv1'] = h
      h = self._bn(train, f'block{i}_bn2')(self._conv(width, 3, 1, f'block{i}_conv2')(h))
      if strides != 1 or x.shape[-1] != width:
        x = self._bn(train, f'block{i}_down_bn')(self._conv(width, 1, strides, f'block{i}_down')(x))
      x = nn.relu(h + x)
      features[f'block{i}_out'] = x
    x = x.mean(axis=(1, 2))
    features[f'block{len(self.blocks()) - 1}_out'] = x
    out = nn.Dense(self.outputs, kernel_init=_rbg(nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')),
                   bias_init=nn.initializers.zeros, name='fc')(x)
    return out, features

  def blocks(self):
    return [(self.width * m, 2 if (m > 1 and b == 0) else 1) for m in (1, 2, 4, 8) for b in range(self.blocks_per_stage)]
