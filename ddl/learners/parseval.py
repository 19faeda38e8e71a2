"""Parseval regularisation (Chung, Cherif, Meger & Precup, NeurIPS 2024), as an optax transform.

The loss becomes L + l * sum_W c_W ||W W^T - s I||_F^2 over the regularised weight matrices W, each
with its rows as the layer's output units, so the term pushes a layer's units towards orthogonal
weight vectors of norm sqrt(s). Like L2 Init, it sits first in the chain, before the optimizer: it
adds the penalty's gradient 4 l c_W (W W^T - s I) W to the gradient, and the optimizer sees the
regularised gradient. Its state is empty (nothing params-shaped, so no `state_fields`); `l` may be
traced (vmapped over runs).

Defaults follow the authors' code (github.com/wechu/parseval_reg, `parseval_reg/agent.py`,
`parseval_reg_network` in `PPOAgent.train`):
- the penalty is the squared Frobenius norm, summed (not averaged) over layers and over the policy
  and value networks;
- s = init_gain^2 with the default orthogonal init gain sqrt(2): s = 2 (`parseval_scale`; Plasticine,
  RLE-Foundation/Plasticine `plasticine/utils.py` `PRLinear`, uses s = 1);
- every hidden layer's weight matrix, not the output layer ('linear_output'), not biases, layer-norm
  or diagonal-layer parameters (the authors' `parseval_last_layer` flag, "removed from uses", is
  `parseval_layers='all'` here);
- c_W = (64 / width)^2: the authors scale l by (64 / net_width)^2 because l "was tuned for width
  64". Here width is the number of rows (output units) of each regularised W, which is net_width
  for every layer of the authors' MLPs; `parseval_reference_width=0` (c_W = 1) is the paper's
  plain form l ||W W^T - s I||_F^2;
- `parseval_groups` > 1 is their subgroup ablation: only the block-diagonal of W W^T (units in
  groups of width / groups) is pulled to s I, i.e. the sum of the groups' own penalties.
Their row-normalised ablation (`parseval_norm`) is not offered.

Which parameters: a leaf named 'kernel' of 2 dims (Dense, (in, out)) or 4 dims (Conv, (kh, kw, in,
out)), anywhere in the (nested dict) parameter tree. With `parseval_layers='hidden'` (the default)
a kernel is left out when a key on its path is 'output' or 'fc': the output layers of ddl's
networks (`nets.MLP` and so ActorCritic's 'policy' and 'value' heads, ConvNet: 'output', ResNet18:
'fc'). Flax's Dense kernel is (in, out), so W = kernel^T. A conv kernel is the matrix
(out, kh * kw * in) of its units' flattened filters (PyTorch's weight.view(out, -1) up to a
permutation of the columns, which leaves W W^T unchanged); neither the authors' code (MLPs only)
nor Plasticine (its only Parseval layer is the encoder's last Linear) regularises a convolution,
so `parseval_conv=False` leaves them out. The products run at HIGHEST precision: W W^T - s I is a
difference of near-equal numbers at the penalty's minimum.
"""
from typing import Any, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from ddl.learners.hyper import Hyper
from ddl.learners.method import Method, gated

OUTPUT_LAYERS = ('output', 'fc')   # keys of the output layers of ddl's networks (`ddl.nets`)
LAYERS = ('hidden', 'all')
_HIGHEST = jax.lax.Precision.HIGHEST

HYPERS = (
    Hyper('parseval', 0.0, low=0,
          doc='Parseval: l of the penalty l sum_W c_W ||W W^T - s I||_F^2 over the weight matrices (0: off)'),
    Hyper('parseval_scale', 2.0, low=0, open_low=True, traced=False,
          doc='Parseval: s, the target squared row norm (authors: init gain^2 = 2; Plasticine: 1)'),
    Hyper('parseval_reference_width', 64, low=0, traced=False,
          doc="Parseval: c_W = (this / W's rows)^2 (authors: 64); 0: c_W = 1 (the paper's form)"),
    Hyper('parseval_groups', 1, low=1, traced=False,
          doc="Parseval: pull only the block-diagonal of W W^T, units in this many groups, to s I"),
    Hyper('parseval_layers', 'hidden', choices=LAYERS, traced=False,
          doc="Parseval: 'hidden': every kernel but those under 'output' or 'fc'; 'all': those too"),
    Hyper('parseval_conv', True, choices=(True, False), traced=False,
          doc='Parseval: regularise conv kernels too, as (out, kh * kw * in) matrices'),
)


def is_regularised(path: Tuple[Any, ...], leaf: Any, layers: str = 'hidden', conv: bool = True) -> bool:
  """Whether the parameter at `path` (a `jax.tree_util` key path) is a kernel the penalty is on."""
  if layers not in LAYERS:
    raise ValueError(f'parseval: layers {layers!r} is not known; use one of {LAYERS}.')
  names = [getattr(k, 'key', getattr(k, 'name', None)) for k in path]
  if not names or names[-1] != 'kernel' or jnp.ndim(leaf) not in ((2, 4) if conv else (2,)):
    return False
  return layers == 'all' or not any(n in OUTPUT_LAYERS for n in names[:-1])


def regularised_paths(params: Any, layers: str = 'hidden', conv: bool = True) -> Tuple[str, ...]:
  """The '/'-joined paths of the kernels the penalty is on (for tests and diagnostics)."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return tuple('/'.join(str(getattr(k, 'key', k)) for k in path) for path, leaf in leaves
               if is_regularised(path, leaf, layers, conv))


def _matrix(kernel: jax.Array) -> jax.Array:
  """(in, out) Dense or (kh, kw, in, out) conv kernel -> K: (fan_in, out), the columns of K (the rows
  of W = K^T) being the output units."""
  return kernel.reshape(-1, kernel.shape[-1])


def _error(k: jax.Array, scale: float, groups: int) -> Tuple[jax.Array, jax.Array]:
  """(E, K's groups): E = M o (W W^T) - s I for W = K^T and M the block-diagonal mask of `groups`
  groups of units, as its (groups, units / groups, units / groups) diagonal blocks (E is zero off
  them); K's groups: (groups, fan_in, units / groups)."""
  units, groups = k.shape[-1], int(groups)
  if units % groups:
    raise ValueError(f'parseval: a layer of {units} units does not split into {groups} groups '
                     '(parseval_groups must divide every regularised layer\'s width).')
  blocks = k.reshape(k.shape[0], groups, units // groups).transpose(1, 0, 2)
  gram = jnp.einsum('gfi,gfj->gij', blocks, blocks, precision=_HIGHEST)
  return gram - scale * jnp.eye(units // groups, dtype=k.dtype), blocks


def _coefficient(units: int, reference_width: float) -> float:
  return (reference_width / units) ** 2 if reference_width else 1.0


def penalty(params: Any, scale: float = 2.0, reference_width: float = 64, groups: int = 1,
            layers: str = 'hidden', conv: bool = True) -> jax.Array:
  """sum_W c_W ||M o (W W^T) - s I||_F^2 over the regularised kernels (without the strength l)."""
  total = jnp.zeros(())
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if is_regularised(path, leaf, layers, conv):
      k = _matrix(leaf)
      error, _ = _error(k, scale, groups)
      total = total + _coefficient(k.shape[-1], reference_width) * jnp.sum(error ** 2)
  return total


def parseval(strength: chex.Numeric, scale: float = 2.0, reference_width: float = 64, groups: int = 1,
             layers: str = 'hidden', conv: bool = True) -> optax.GradientTransformationExtraArgs:
  """Adds strength * grad `penalty` = 4 strength c_W (W W^T - s I) W (as kernels) to the updates.

  strength: may be a traced array. Extra arguments of `update` (a key, the loss) are accepted and
  ignored. Leaves other than the regularised kernels pass through unchanged.
  """

  def grad_kernel(kernel):
    k = _matrix(kernel)
    error, blocks = _error(k, scale, groups)
    # d/dK ||E||_F^2 = 4 K E (E symmetric), blockwise: (fan_in, size) x (size, size) per group.
    g = jnp.einsum('gfi,gij->fgj', blocks, error, precision=_HIGHEST).reshape(k.shape)
    return (4 * _coefficient(k.shape[-1], reference_width) * g).reshape(kernel.shape)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError('parseval: update needs the parameters (the penalty is on the weight matrices): '
                       'call update(grads, state, params).')

    def add(path, g, w):
      if not is_regularised(path, w, layers, conv):
        return g
      return (g + strength * grad_kernel(w)).astype(g.dtype)

    return jax.tree_util.tree_map_with_path(add, updates, params), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def from_build(build) -> optax.GradientTransformationExtraArgs:
  """The transform of a program (`ddl.learners.method.Build`): its traced l and static options."""
  o = build.options
  return parseval(build.hparams['parseval'], scale=o['parseval_scale'],
                  reference_width=o['parseval_reference_width'], groups=o['parseval_groups'],
                  layers=o['parseval_layers'], conv=o['parseval_conv'])


METHOD = Method('parseval', kind='gradient',
                doc='Parseval regularisation (Chung et al. 2024): loss + parseval sum_W c_W ||W W^T - s I||_F^2',
                hypers=HYPERS, section='parseval', active=gated('parseval'), transform=from_build,
                examples=(('parseval', dict(parseval=1e-3)),))
