"""Continual backpropagation (CBP): generate-and-test over Flax parameter pytrees.

After every optimizer step, each hidden layer ages its units, updates a running utility from the
step's activations, and re-initialises the lowest-utility mature units (fresh input weights from
the layer's own initializer, zero bias, zero outgoing weights). Shapes are static: the number of
replacements per step is dynamic (a masked `top_k` of static size), so nothing recompiles, and the
whole step vmaps over seeds and over the traced hyperparameters (replacement rate, maturity
threshold, decay rate).

Which kernel makes a layer's units, which kernel reads them and which norm layer follows is
declared once per network as a tuple of `UnitLayer`s. Defaults follow the original code (GnT, see
`lop_reference.md` §2.2): the next-layer bias correction, a no-op there, is off; optimizer state is
not reset. The original's conv variant (ConvGnT, §2.3) is `count_base='width'` with
`count_mode='accumulate'`. The ResNet variant (ResGnT, §2.4) adds `utility_statistic='cumulative'` and
restores the norm layers of replaced channels, Flax `batch_stats` included (`restore_norms`).
"""
import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct
from flax import traverse_util

from ddl.learners import method as method_lib
from ddl.learners.hyper import Hyper

Path = Tuple[str, ...]
UTIL_TYPES = ('contribution', 'adaptable_contribution', 'zero_contribution', 'weight', 'adaptation',
              'feature_by_input', 'random')
COUNT_MODES = ('accumulate', 'bernoulli')
COUNT_BASES = ('eligible', 'width')
UTILITY_STATISTICS = ('ema', 'cumulative')

HYPERS = (
    Hyper('replacement_rate', 0.0, low=0, high=1, doc='units replaced per eligible unit and step (0: no CBP)'),
    Hyper('maturity_threshold', 100.0, low=0, doc='steps a unit is protected after (re)initialisation'),
    Hyper('decay_rate', 0.99, low=0, high=1, doc='decay of the running utility and mean activation'),
    Hyper('util_type', 'contribution', choices=UTIL_TYPES, traced=False, doc='utility measure (original names)'),
    Hyper('count_mode', 'bernoulli', choices=COUNT_MODES, traced=False, doc='how a fractional count is drawn'),
    Hyper('count_base', 'eligible', choices=COUNT_BASES, traced=False, doc='what the rate multiplies'),
    Hyper('utility_statistic', 'ema', choices=UTILITY_STATISTICS, traced=False, doc="'cumulative': ResGnT"),
    Hyper('reset_optimizer_state', False, choices=(False, True), traced=False,
          doc='zero the optimizer state of replaced weights (the original does not)'),
    Hyper('next_bias_correction', False, choices=(False, True), traced=False,
          doc="add a replaced unit's mean contribution to the next layer's bias (a no-op in the original)"),
)

# The original's option bundles: GnT (dense nets), ConvGnT (the ImageNet ConvNet), ResGnT (ResNet-18).
PRESETS = {
    'gnt': dict(count_base='eligible', utility_statistic='ema'),
    'convgnt': dict(count_base='width', count_mode='accumulate', utility_statistic='ema'),
    'resgnt': dict(util_type='contribution', count_base='width', count_mode='accumulate',
                   utility_statistic='cumulative'),
}


@dataclasses.dataclass(frozen=True)
class UnitLayer:
  """One layer of replaceable units (the last axis of `kernel`), declared per network in
  `ddl.learners.topology`.

  features: key of the layer's activations (batch, ..., units) in the features mapping.
  kernel, bias: the parameters that make the units (units on the last axis).
  consumers: the kernels that read the units (one or more). A 2-D (dense) consumer after a conv
    layer reads the flattened map: its rows are (position, unit) in NHWC order, positions matching
    the features'. A 4-D (conv) consumer reads them on axis -2. A replaced unit's outgoing weights
    are zeroed in every consumer; its utility's outgoing magnitude averages over them.
  init: initializer of fresh input weights (fan-in based, so a (..., k) slice gets the layer's
    distribution).
  consumer_biases: biases of the consumers, only for the optional next-layer bias correction.
  norm_ones, norm_zeros: entries of a norm layer to restore to 1 (scale, running variance) and
    0 (offset, running mean) for replaced units, in whichever tree holds them (the parameters, or
    a Flax `batch_stats` collection given to `restore_norms`); entries a tree lacks are skipped.
  """
  features: str
  kernel: Path
  consumers: Tuple[Path, ...]
  init: Callable[..., jax.Array]
  bias: Optional[Path] = None
  consumer_biases: Tuple[Path, ...] = ()
  norm_ones: Tuple[Path, ...] = ()
  norm_zeros: Tuple[Path, ...] = ()

  @property
  def consumer(self) -> Path:
    """The first consumer (the only one in the paper's networks)."""
    return self.consumers[0]


@struct.dataclass
class LayerState:
  utility: jax.Array          # running utility (not bias-corrected), (units,); with
                              # utility_statistic='cumulative' the cumulative mean |activation|
  mean_activation: jax.Array  # running mean activation, (units,)
  ages: jax.Array             # CBP steps since (re)initialisation, int32 (units,)
  accumulated: jax.Array      # fractional replacement count carried between steps, ()


@struct.dataclass
class CBPState:
  layers: Mapping[str, LayerState]


class CBPInfo(NamedTuple):
  replaced: Mapping[str, jax.Array]  # bool (units,) per layer: the units re-initialised this step
  num_replaced: jax.Array            # int32 total over layers


class ResetTransform(NamedTuple):
  """A pure reset step run after the optimizer step, optax style: init(params) -> state;
  update(params, opt_state, state, features, key) -> (params, opt_state, state, CBPInfo)."""
  init: Callable[[Any], Any]
  update: Callable[..., Tuple[Any, Any, Any, CBPInfo]]


def _get(flat, path):
  if path not in flat:
    raise KeyError(f'CBP topology names {"/".join(path)}, which is not in the parameter tree '
                   f'(it has: {", ".join("/".join(p) for p in flat)}).')
  return flat[path]


def _as_positions(x: jax.Array, units: int) -> jax.Array:
  """(batch, ..., units) -> (batch, positions, units)."""
  return x.reshape(x.shape[0], -1, units)


def _consumer_rows(consumer: jax.Array, units: int) -> jax.Array:
  """The consumer kernel as (positions or taps, units, outputs)."""
  return consumer.reshape(-1, units, consumer.shape[-1])


def _outgoing_magnitude(consumer: jax.Array, units: int) -> jax.Array:
  """Mean |outgoing weight| of each unit in one consumer: (positions, units) for a dense consumer
  (one magnitude per position of a flattened map), (1, units) for a conv one (over taps and outputs)."""
  rows = jnp.abs(_consumer_rows(consumer, units))
  return rows.mean(axis=2) if consumer.ndim == 2 else rows.mean(axis=(0, 2))[None]


def _instant_utility(util_type, h, centre, kernel, consumers, units):
  """Instantaneous utility y of each unit (original GnT/ConvGnT formulas). With several consumers
  the outgoing magnitude is their mean, per unit."""
  mags = [_outgoing_magnitude(c, units) for c in consumers]
  out_mag = mags[0] if len(mags) == 1 else sum(m.mean(axis=0, keepdims=True) for m in mags) / len(mags)
  in_mag = jnp.abs(kernel).reshape(-1, units).mean(axis=0)
  if util_type == 'weight':
    return out_mag.mean(axis=0)
  if util_type == 'adaptation':
    return 1.0 / in_mag
  centred = jnp.abs(h if util_type == 'contribution' else h - centre).mean(axis=0)  # (pos, units)
  if util_type == 'feature_by_input':
    return centred.mean(axis=0) / in_mag
  contribution = (out_mag * centred).mean(axis=0)
  if util_type == 'adaptable_contribution':
    contribution = contribution / in_mag
  return contribution


class Pick(NamedTuple):
  """The units of one layer to re-initialise, as a reset transform selected them."""
  replaced: jax.Array   # bool (units,)
  index: jax.Array      # int32 (slots,): candidate units (static size)
  valid: jax.Array      # bool (slots,): which candidates are replaced
  centre: jax.Array     # (units,) mean activation (for the optional next-layer bias correction)
  key: chex.PRNGKey     # fresh input weights


def reset_units(unit_layers: Tuple[UnitLayer, ...], tree, picks, fresh: bool, next_bias_correction: bool = False):
  """Re-initialises the picked units of every layer in a params-shaped tree: fresh input weights
  from the layer's initializer (fresh=False writes zeros, for optimizer state), zero bias, zero
  outgoing weights, norm parameters restored. Shared by every reset transform (CBP, ReDo)."""
  flat = dict(traverse_util.flatten_dict(tree))
  for layer, (replaced, index, valid, centre, key) in zip(unit_layers, picks):
    _restore_norm(flat, layer, replaced, fresh)
    if layer.kernel not in flat:
      continue
    kernel = flat[layer.kernel]
    units = kernel.shape[-1]
    if fresh:
      new = layer.init(key, kernel.shape[:-1] + index.shape, kernel.dtype)
    else:
      new = jnp.zeros(kernel.shape[:-1] + index.shape, kernel.dtype)
    current = jnp.take(kernel, index, axis=-1)
    flat[layer.kernel] = kernel.at[..., index].set(jnp.where(valid, new, current))
    if layer.bias is not None:
      flat[layer.bias] = jnp.where(replaced, 0.0, flat[layer.bias]).astype(flat[layer.bias].dtype)
    biases = layer.consumer_biases or (None,) * len(layer.consumers)
    for path, bias_path in zip(layer.consumers, biases):
      consumer = flat[path]
      rows = _consumer_rows(consumer, units)
      if fresh and next_bias_correction and bias_path is not None:
        shift = jnp.einsum('pno,n->o', rows, jnp.where(replaced, centre, 0.0))
        flat[bias_path] = flat[bias_path] + shift
      rows = jnp.where(replaced[None, :, None], 0.0, rows)
      flat[path] = rows.reshape(consumer.shape).astype(consumer.dtype)
  return traverse_util.unflatten_dict(flat)


def reset_optimizer_units(unit_layers: Tuple[UnitLayer, ...], params, opt_state, picks):
  """Re-initialises the picked units' entries in the optimizer state as each method declares
  (`ddl.learners.method.map_reset_state`): momentum and moments zeroed, learned step sizes kept,
  an anchor re-set to the unit's fresh weights where a method asks for that ('reinit')."""
  ones = jax.tree.map(jnp.ones_like, params)
  kept = reset_units(unit_layers, ones, picks, fresh=False)     # 0 where a unit was re-initialised
  reinit = lambda sub: jax.tree.map(lambda k, p, s: jnp.where(k == 0, p, s).astype(s.dtype), kept, params, sub)
  return method_lib.map_reset_state(opt_state, params, lambda sub: reset_units(unit_layers, sub, picks, fresh=False),
                                    reinit)


def continual_backprop(unit_layers: Tuple[UnitLayer, ...], *, replacement_rate: chex.Numeric,
                       maturity_threshold: chex.Numeric, decay_rate: chex.Numeric = 0.99,
                       util_type: str = 'contribution', count_mode: str = 'bernoulli',
                       count_base: str = 'eligible', max_replacement_rate: Optional[float] = None,
                       reset_optimizer_state: bool = False,
                       next_bias_correction: bool = False,
                       utility_statistic: str = 'ema') -> ResetTransform:
  """Builds the CBP reset transform.

  replacement_rate, maturity_threshold, decay_rate: may be traced (a sweep axis).
  util_type: one of UTIL_TYPES (the original's names).
  count_mode: 'accumulate' (fractional counts carry over) or 'bernoulli' (the original FC code's
    default: with r = rate * count < 1, one unit with probability r).
  count_base: 'eligible' (r = rate x mature units, GnT) or 'width' (r = rate x layer width once any
    unit is mature, ConvGnT/ResGnT).
  max_replacement_rate: the largest rate this transform will see; sizes the static number of
    selection slots. Defaults to `replacement_rate` when that is a Python number.
  reset_optimizer_state: zero the optimizer state of reset weights (every params-shaped subtree of
    the optimizer state: momentum, Adam moments). The original does not (its SGD momentum and
    torch Adam moments persist); the global Adam step count is never reset.
  next_bias_correction: add the replaced units' mean contribution to the consumer bias (the clean
    variant; in the original this code path adds exactly 0).
  utility_statistic: 'ema' (GnT/ConvGnT: a decaying, bias-corrected running utility, zeroed on
    reset) or 'cumulative' (ResGnT quirk: `stat += (1 - decay) * mean|h|` with no decay, never
    reset, and the utility computed from it at selection time: out_mag x stat for 'contribution',
    out_mag for 'weight'; other util_types are not defined there).
  """
  for name, value, allowed in (('util_type', util_type, UTIL_TYPES),
                               ('count_mode', count_mode, COUNT_MODES),
                               ('count_base', count_base, COUNT_BASES),
                               ('utility_statistic', utility_statistic, UTILITY_STATISTICS)):
    if value not in allowed:
      raise ValueError(f'cbp.{name}={value!r} is not known; use one of {allowed}.')
  if utility_statistic == 'cumulative' and util_type not in ('contribution', 'weight'):
    raise ValueError(f"cbp.utility_statistic='cumulative' (ResGnT) defines util_type 'contribution' or "
                     f"'weight', not {util_type!r}.")
  if max_replacement_rate is None:
    if not isinstance(replacement_rate, (int, float)):
      raise ValueError('continual_backprop: a traced replacement_rate needs max_replacement_rate '
                       '(the largest rate of the sweep) to size its static selection.')
    max_replacement_rate = float(replacement_rate)
  if max_replacement_rate < 0:
    raise ValueError(f'replacement rate must be >= 0, got {max_replacement_rate}.')

  def slots(units):
    """Static upper bound on replacements per step in a layer of `units` units."""
    return min(units, int(math.floor(max_replacement_rate * units)) + 1)

  def init(params) -> CBPState:
    flat = traverse_util.flatten_dict(params)
    layers = {}
    for layer in unit_layers:
      units = _get(flat, layer.kernel).shape[-1]
      layers[layer.features] = LayerState(
          utility=jnp.zeros(units), mean_activation=jnp.zeros(units),
          ages=jnp.zeros(units, jnp.int32), accumulated=jnp.zeros(()))
    return CBPState(layers=layers)

  def select(layer, state, flat, h, key, draw):
    """Updates a layer's statistics and picks the units to replace (before any reset)."""
    kernel, consumers = _get(flat, layer.kernel), [_get(flat, path) for path in layer.consumers]
    units = kernel.shape[-1]
    h = _as_positions(h, units)
    decay = jnp.asarray(decay_rate, jnp.float32)
    ages = state.ages + 1
    correction = 1.0 - decay ** ages.astype(jnp.float32)
    mean_activation = decay * state.mean_activation + (1 - decay) * h.mean(axis=(0, 1))
    centre = mean_activation / correction
    util_key, draw_key = jax.random.split(key)
    if utility_statistic == 'cumulative':   # ResGnT: no decay, no reset, utility at selection time
      utility = state.utility + (1 - decay) * jnp.abs(h).mean(axis=(0, 1))
      out_mag = _instant_utility('weight', h, centre, kernel, consumers, units)
      corrected = out_mag * utility if util_type == 'contribution' else out_mag
    elif util_type == 'random':
      utility = state.utility
      corrected = jax.random.uniform(util_key, (units,))
    else:
      instant = _instant_utility(util_type, h, centre, kernel, consumers, units)
      utility = decay * state.utility + (1 - decay) * instant
      corrected = utility / correction
    eligible = ages > maturity_threshold
    num_eligible = eligible.sum()
    base = num_eligible if count_base == 'eligible' else units
    rate = jnp.where(num_eligible > 0, replacement_rate * base, 0.0).astype(jnp.float32)
    accumulated = state.accumulated + rate
    if count_mode == 'accumulate':
      count = jnp.floor(accumulated)
      accumulated = accumulated - count
    else:
      u = jax.random.uniform(draw_key, ()) if draw is None else jnp.asarray(draw, jnp.float32)
      count = jnp.where(rate < 1, (u <= rate).astype(jnp.float32), jnp.floor(rate))
    count = jnp.minimum(count, num_eligible).astype(jnp.int32)
    k_max = slots(units)
    _, index = jax.lax.top_k(-jnp.where(eligible, corrected, jnp.inf), k_max)
    valid = jnp.arange(k_max) < count
    replaced = jnp.zeros(units, bool).at[index].max(valid)
    new_state = LayerState(
        utility=utility if utility_statistic == 'cumulative' else jnp.where(replaced, 0.0, utility),
        mean_activation=jnp.where(replaced, 0.0, mean_activation),
        ages=jnp.where(replaced, 0, ages), accumulated=accumulated)
    return new_state, replaced, index, valid, centre

  def update(params, opt_state, state: CBPState, features: Mapping[str, jax.Array],
             key: chex.PRNGKey, draws: Optional[Mapping[str, chex.Numeric]] = None):
    """One CBP step: (params, opt_state, cbp_state, features, key) -> (params, opt_state,
    cbp_state, info). `features` are the step's hidden activations (computed with the weights
    before the optimizer step); `draws` optionally replays recorded Bernoulli draws per layer."""
    flat = traverse_util.flatten_dict(params)
    keys = jax.random.split(key, 2 * max(len(unit_layers), 1))
    layers, picks, replaced_masks = {}, [], {}
    for i, layer in enumerate(unit_layers):
      if layer.features not in features:
        raise KeyError(f'CBP needs features {layer.features!r}; the network returned '
                       f'{sorted(features)}.')
      draw = None if draws is None else draws.get(layer.features)
      new_state, replaced, index, valid, centre = select(
          layer, state.layers[layer.features], flat, features[layer.features], keys[2 * i], draw)
      layers[layer.features] = new_state
      replaced_masks[layer.features] = replaced
      picks.append(Pick(replaced, index, valid, centre, keys[2 * i + 1]))
    params = reset_units(unit_layers, params, picks, fresh=True, next_bias_correction=next_bias_correction)
    if reset_optimizer_state:
      opt_state = reset_optimizer_units(unit_layers, params, opt_state, picks)
    num = sum((m.sum() for m in replaced_masks.values()), jnp.zeros((), jnp.int32))
    return params, opt_state, CBPState(layers=layers), CBPInfo(replaced_masks, num.astype(jnp.int32))

  return ResetTransform(init, update)


def _restore_norm(flat, layer: UnitLayer, replaced: jax.Array, fresh: bool = True) -> None:
  """Sets the norm entries of `layer` found in `flat` to 1 / 0 (fresh) or 0 (optimizer state) for
  replaced units, in place."""
  for paths, value in ((layer.norm_ones, 1.0), (layer.norm_zeros, 0.0)):
    for path in paths:
      if path in flat:
        flat[path] = jnp.where(replaced, value if fresh else 0.0, flat[path]).astype(flat[path].dtype)


def restore_norms(unit_layers: Tuple[UnitLayer, ...], tree: Any, replaced: Mapping[str, jax.Array]) -> Any:
  """Restores the norm entries (`norm_ones` to 1, `norm_zeros` to 0) of the replaced units in a tree
  other than the parameters, e.g. Flax `batch_stats` (running mean 0, running variance 1), as
  ResGnT does. `replaced`: `CBPInfo.replaced`. Entries the tree lacks are skipped."""
  flat = dict(traverse_util.flatten_dict(tree))
  for layer in unit_layers:
    _restore_norm(flat, layer, replaced[layer.features])
  return traverse_util.unflatten_dict(flat)


class Hooks(method_lib.Hooks):
  """CBP inside the learner: its state at init, its step after every optimizer step (with the
  step's activations), and batch norm's running statistics of replaced units restored. A unit
  transform of the same interface (ReDo) subclasses it and gives its own `transform`."""

  def transform(self, hparams) -> ResetTransform:
    o, learner = self.context.options, self.context.learner
    return continual_backprop(
        learner.unit_layers, replacement_rate=hparams['replacement_rate'],
        maturity_threshold=hparams['maturity_threshold'], decay_rate=hparams['decay_rate'],
        util_type=o['util_type'], count_mode=o['count_mode'], count_base=o['count_base'],
        max_replacement_rate=self.context.largest['replacement_rate'],
        reset_optimizer_state=bool(o['reset_optimizer_state']), next_bias_correction=bool(o['next_bias_correction']),
        utility_statistic=o['utility_statistic'])

  def init(self, key, params, sample_input, hparams):
    del key, sample_input
    return params, self.transform(hparams).init(params)

  def after_step(self, state, step):
    params, opt_state, state, info = self.transform(step.hparams).update(
        step.params, step.opt_state, state, step.features, step.key)
    batch_stats = step.batch_stats
    if batch_stats is not None:
      batch_stats = restore_norms(self.context.learner.unit_layers, batch_stats, info.replaced)
    return step._replace(params=params, opt_state=opt_state, batch_stats=batch_stats,
                         num_replaced=step.num_replaced + info.num_replaced), state


def units_problem(where) -> Optional[str]:
  """Why a unit transform (CBP, ReDo) cannot run where it is asked to: a network without hidden units."""
  from ddl.learners import topology  # pylint: disable=g-import-not-at-top
  network = where.network()
  return None if topology.unit_layers(network) else f'its network ({type(network).__name__}) has no hidden units'


def _check(where) -> Optional[str]:
  options = METHOD.options(where.config)
  if options['utility_statistic'] == 'cumulative' and options['util_type'] not in ('contribution', 'weight'):
    return "cbp.utility_statistic 'cumulative' (ResGnT) needs cbp.util_type 'contribution' or 'weight'"
  return units_problem(where)


def _active(program) -> bool:
  return program.setting('cbp.method', 'cbp') == 'cbp' and program.largest('replacement_rate') > 0


METHOD = method_lib.Method(
    'cbp', 'unit', 'continual backpropagation (Dohare et al. 2024)', HYPERS, section='cbp', active=_active,
    check=_check, hooks=Hooks, examples=(('cbp', dict(replacement_rate=1e-4)),))
