"""Spectral normalisation (Miyato et al. 2018; in deep RL Gogianu et al. 2021), as a parametrisation.

The network keeps its raw parameters (so CBP, ReDo and resets see the paths and shapes they know);
the learner runs it on W / sigma(W) for the selected kernels, sigma(W) the largest singular value
estimated by power iteration with a persistent vector u per kernel (Miyato's Algorithm 1).

Orientation. A Flax kernel is (in, out) (a conv's (kh, kw, in, out) is taken as the matrix
(kh * kw * in, out), as `flax.linen.SpectralNorm` does); PyTorch's weight is its transpose, (out, in).
u lives on the units (out,), as in `torch.nn.utils.spectral_norm` (weight_u, size out) and Flax (u,
size out), so with M the (in, out) matrix one training step is, per power iteration,
  v = M u / ||M u||,  u = M^T v / ||M^T v||   (Miyato: v = W^T u / ||.||, u = W v / ||.||, W = M^T),
then sigma = v^T M u with u, v under stop_gradient, and the kernel used is M / sigma. The gradient
flows through M both directly and through sigma's dependence on M, as in Miyato et al.'s gradient
analysis, PyTorch (sigma = dot(u, W v) computed with the weight's graph) and Flax. A conv kernel's
matrix is PyTorch's (out, in * kh * kw) transposed, up to a permutation of its fan-in rows: the
same singular values, u identical, v permuted. Degenerate kernels follow Flax: sigma = 0 (M = 0)
leaves M as it is. Unlike PyTorch and Flax, a power iteration that yields a zero vector (M u = 0,
e.g. a kernel initialised or reset to zeros) keeps the previous u rather than storing the zero
vector, from which neither recovers.

Eval (train=False): the stored u is not updated and no power iteration runs; sigma = v^T M u with
v = M u / ||M u|| from the stored u, i.e. ||M u||. PyTorch's eval reuses the v stored at the last
training step (sigma = u^T W v); Flax's `update_stats=False` iterates from the stored u and
discards the result.

Which kernels (`spectral_norm_layers`): every leaf named 'kernel' with ndim >= 2 of the network's
parameter tree is a layer (biases, norm scales, `log_std` are never touched), and
- 'penultimate' (default): only the last hidden layer of each stack, the one feeding the output
  layer, as Gogianu et al.'s agents: "constraining the Lipschitz constant of a single layer" suffices,
  the hidden fully-connected layer of their Atari and MinAtar nets (floringogianu/snrl: `spectral:
  middle` = fc, or "-2", resolved by `hook_spectral_normalization` in `src/estimators.py`; their layer
  sweep `configs/g10_c51_layer_sweep` spans -2 to -5, never the output layer). It leaves the output's
  scale free (regression targets, returns). MLP: hidden_{last}; ConvNet: dense_1; the actor-critics:
  policy/hidden_{last} and value/hidden_{last}. ResNet-18 names no layer order and ends in a residual
  sum (its last convolution's path plus a skip) before its 'fc': no one penultimate layer, refused.
- 'hidden': every kernel but the output layers (what a bounded-Lipschitz body with a free head
  needs; the choice for ResNet-18).
- 'all': every kernel, the output layers included (Miyato et al.'s discriminators).
Output layers and order: a network with `layer_names()` (MLP, ConvNet) names its layers in forward
order at the root, the last being the output. Otherwise every layer named 'output' (the
actor-critics' 'policy' and 'value' MLPs) or 'fc' (ResNet-18) is an output layer; an 'output'
layer's siblings are ordered as `nets.MLP.layer_names()` orders them (hidden_i by i).

`spectral_norm_iterations`: power iterations per training step, 1 as in both papers (and PyTorch's
and Flax's default). u starts as a unit vector drawn from N(0, I) (PyTorch; Flax draws it
unnormalised). Note that where a norm layer follows the kernel (ResNet-18's batch norm,
`network.layer_norm`), dividing the kernel by sigma changes that layer's output only through the
norm's epsilon: it then acts on the effective step size, the mechanism Gogianu et al. single out.
"""
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import traverse_util

from ddl import nets
from ddl.learners.hyper import Hyper
from ddl.learners.method import Context, Hooks, Method, Where, selected

Path = Tuple[str, ...]
LAYERS = ('penultimate', 'hidden', 'all')
OUTPUT_NAMES = ('output', 'fc')   # ddl's output layers where a network does not name its layers
EPS = 1e-12                       # PyTorch's and Flax's epsilon of the l2 normalisation

HYPERS = (
    Hyper('spectral_norm', False, choices=(False, True), traced=False,
          doc='spectral normalisation of kernels (Miyato et al. 2018; Gogianu et al. 2021)'),
    Hyper('spectral_norm_layers', 'penultimate', choices=LAYERS, traced=False,
          doc="which kernels: 'penultimate' (the last hidden layer, Gogianu et al.), 'hidden' (all but the "
              "output layers) or 'all' (Miyato et al.)"),
    Hyper('spectral_norm_iterations', 1, low=1, traced=False,
          doc='power iterations per training step (an integer; 1 as in both papers)'),
)
DEFAULTS = {h.name: h.default for h in HYPERS}


def _option(options: Mapping[str, Any], name: str) -> Any:
  return options[name] if name in options else DEFAULTS[name]


def _l2_normalize(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """(x / max(||x||, EPS), ||x||), as PyTorch's F.normalize."""
  norm = jnp.sqrt(jnp.sum(x * x))
  return x / jnp.maximum(norm, EPS), norm


def normalize_kernel(kernel: jax.Array, u: jax.Array, iterations: int = 1,
                     train: bool = True) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """(kernel / sigma, the new u, sigma) for a kernel (..., out) seen as the matrix (-1, out) and its
  power-iteration vector u (out,); see the module docstring. train=False: no iteration, u kept."""
  matrix = kernel.reshape(-1, kernel.shape[-1])
  u = jax.lax.stop_gradient(u)
  frozen = jax.lax.stop_gradient(matrix)
  for _ in range(iterations if train else 0):
    v, v_norm = _l2_normalize(frozen @ u)
    u_next, u_norm = _l2_normalize(frozen.T @ v)
    u = jnp.where((u_norm > EPS) & (v_norm > EPS), u_next, u)
  if not train or iterations < 1:
    v, _ = _l2_normalize(frozen @ u)
  sigma = v @ matrix @ u
  safe = jnp.where(sigma != 0, sigma, jnp.ones_like(sigma))
  return (matrix / safe).reshape(kernel.shape).astype(kernel.dtype), u, sigma


def state_key(path: Path) -> str:
  return '/'.join(path)


def _is_layer(node: Any) -> bool:
  return isinstance(node, Mapping) and 'kernel' in node and getattr(node['kernel'], 'ndim', 0) >= 2


def _mlp_order(names: Sequence[str]) -> Optional[Tuple[str, ...]]:
  """The names of an 'output' layer's siblings in forward order where they are an MLP's
  (`nets.MLP.layer_names()`), else None."""
  hidden = [n for n in names if re.fullmatch(r'hidden_\d+', n)]
  order = nets.MLP(hidden=(1,) * len(hidden), outputs=1).layer_names()
  return order if set(order) == set(names) else None


def _stacks(network: Any, params: Any) -> Tuple[Tuple[Path, Optional[Tuple[str, ...]], Tuple[str, ...]], ...]:
  """The (prefix, layer names in forward order or None where unknown, output layer names) of each group
  of layers that ends in an output layer."""
  if hasattr(network, 'layer_names'):
    names = tuple(n for n in network.layer_names() if _is_layer(params.get(n)))
    return (((), names, names[-1:]),) if names else ()
  stacks = []

  def visit(prefix: Path, node: Mapping[str, Any]):
    layers = tuple(k for k, child in node.items() if _is_layer(child))
    outputs = tuple(k for k in layers if k in OUTPUT_NAMES)
    if outputs:
      stacks.append((prefix, _mlp_order(layers) if 'output' in outputs else None, outputs))
    for k, child in node.items():
      if isinstance(child, Mapping) and not _is_layer(child):
        visit(prefix + (k,), child)

  visit((), params)
  return tuple(stacks)


def selected_kernels(network: Any, params: Any, layers: str) -> Tuple[Path, ...]:
  """The paths of the kernels `layers` selects in `params` (sorted); raises ValueError where
  `layers` cannot apply (see `problem`)."""
  if layers not in LAYERS:
    raise ValueError(f'network.spectral_norm_layers={layers!r} is not known; use one of {LAYERS}.')
  kernels = sorted(path for path, leaf in traverse_util.flatten_dict(params).items()
                   if path[-1] == 'kernel' and getattr(leaf, 'ndim', 0) >= 2)
  if layers == 'all':
    return tuple(kernels)
  stacks = _stacks(network, params)
  name = type(network).__name__
  if layers == 'hidden':
    outputs = {prefix + (o, 'kernel') for prefix, _, outs in stacks for o in outs}
    if not outputs:
      raise ValueError(f"spectral_norm_layers='hidden': {name} has no output layer ddl knows (layer_names(), "
                       f"or a layer named one of {OUTPUT_NAMES}); use 'all'.")
    chosen = tuple(p for p in kernels if p not in outputs)
  else:
    chosen = []
    for prefix, order, _ in stacks:
      if order is None:
        raise ValueError(f"spectral_norm_layers='penultimate': {name} names no order of the layers before its "
                         "output (ResNet-18 ends in a residual sum); use 'hidden' or 'all'.")
      if len(order) >= 2:
        chosen.append(prefix + (order[-2], 'kernel'))
    if not stacks:
      raise ValueError(f"spectral_norm_layers='penultimate': {name} has no output layer ddl knows; use 'all'.")
    chosen = tuple(sorted(chosen))
  if not chosen:
    raise ValueError(f'spectral_norm_layers={layers!r}: {name} has no hidden layer; use \'all\'.')
  return chosen


def _leaf(tree: Any, path: Path) -> Any:
  for k in path:
    tree = tree[k]
  return tree


def problem(network: Any, options: Mapping[str, Any]) -> Optional[str]:
  """Why spectral normalisation with the network section `options` cannot run on `network`, None if it
  can. Reads the network's declaration only (no parameters): the same rules as `selected_kernels`."""
  layers = _option(options, 'spectral_norm_layers')
  iterations = _option(options, 'spectral_norm_iterations')
  name = type(network).__name__
  if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
    return f'network.spectral_norm_iterations must be an integer >= 1, got {iterations!r}'
  if layers not in LAYERS:
    return f'network.spectral_norm_layers={layers!r} is not known; use one of {LAYERS}'
  if layers == 'all':
    return None
  if hasattr(network, 'layer_names'):
    hidden = len(network.layer_names()) - 1
  elif hasattr(network, 'mlps'):   # the actor-critics: MLPs under 'policy' and 'value'
    hidden = len(network.hidden)
  elif layers == 'penultimate':
    return (f"network.spectral_norm_layers='penultimate': {name} names no order of the layers before its output "
            "(ResNet-18 ends in a residual sum); use 'hidden' or 'all'")
  else:
    hidden = 1   # ResNet-18: convolutions before its 'fc'
  if hidden < 1:
    return f"network.spectral_norm_layers={layers!r}: {name} has no hidden layer; use 'all'"
  return None


def check(where: Where) -> Optional[str]:
  options = METHOD.options(where.config)
  if not options['spectral_norm']:
    return None
  return problem(where.network(), options)


class SpectralNormHooks(Hooks):
  """Runs the network on its selected kernels divided by their spectral norms; the state is the
  power-iteration vector u of each, keyed by the kernel's path ('hidden_0/kernel')."""

  def __init__(self, context: Context):
    super().__init__(context)
    self.layers = _option(context.options, 'spectral_norm_layers')
    self.iterations = int(_option(context.options, 'spectral_norm_iterations'))

  def init(self, key: chex.PRNGKey, params: Any, sample_input: jax.Array,
           hparams: Mapping[str, jax.Array]) -> Tuple[Any, Dict[str, jax.Array]]:
    del sample_input, hparams
    paths = selected_kernels(self.context.network, params, self.layers)
    keys = jax.random.split(key, len(paths))
    state = {}
    for k, path in zip(keys, paths):
      kernel = _leaf(params, path)
      state[state_key(path)] = _l2_normalize(jax.random.normal(k, kernel.shape[-1:], kernel.dtype))[0]
    return params, state

  def parametrize(self, state: Mapping[str, jax.Array], params: Any, train: bool) -> Tuple[Any, Any]:
    new_state = dict(state)

    def normalise(path, leaf):
      key = '/'.join(str(getattr(p, 'key', p)) for p in path)
      if key not in state:
        return leaf
      kernel, new_state[key], _ = normalize_kernel(leaf, state[key], self.iterations, train)
      return kernel

    out = jax.tree_util.tree_map_with_path(normalise, params)
    return out, (new_state if train else state)


METHOD = Method(
    'spectral_norm', kind='network',
    doc='spectral normalisation (Miyato et al. 2018; Gogianu et al. 2021): kernels divided by their '
        'power-iteration spectral norm',
    hypers=HYPERS, section='network', active=selected('network.spectral_norm', True), hooks=SpectralNormHooks,
    check=check, examples=(('spectral_norm', dict(network=dict(spectral_norm=True))),
                         ('spectral_norm_all', dict(network=dict(spectral_norm=True, spectral_norm_layers='all')))))
