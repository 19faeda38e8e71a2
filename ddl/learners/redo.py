"""ReDo (Sokar et al. 2023) as the original's `GnTredo` (lop_reference.md §2.6): a reset transform.

Called after every optimizer step; every `period` calls it scores each hidden unit on the current
minibatch, s_i = mean |h_i|, normalised by the layer's mean score, and re-initialises every unit
with normalised score <= `threshold` (fresh input weights from the layer's initializer, zero bias,
zero outgoing weights: the same reset as CBP, `cbp.reset_units`). No ages, no maturity, no
optimizer-state reset. Same interface as `cbp.continual_backprop` (`cbp.ResetTransform`).
"""
from typing import Mapping, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct
from flax import traverse_util

from ddl.learners import cbp as cbp_lib
from ddl.learners import method as method_lib
from ddl.learners.hyper import Hyper

UNIT_METHODS = ('cbp', 'redo')   # cbp.method: which unit-replacement method runs

HYPERS = (
    Hyper('method', 'cbp', choices=UNIT_METHODS, traced=False,
          doc="which unit replacement runs: 'cbp' (ddl.learners.cbp) or 'redo' (this module)"),
    Hyper('redo_threshold', 0.1, low=0, traced=False, doc='tau: reset units whose normalised score is <= tau'),
    Hyper('redo_period', 1000, low=1, traced=False, doc='steps between ReDo resets'),
)


@struct.dataclass
class RedoState:
  calls: jax.Array   # calls since the last reset, int32


def redo(unit_layers: Tuple[cbp_lib.UnitLayer, ...], *, threshold: chex.Numeric, period: int,
         reset_optimizer_state: bool = False) -> cbp_lib.ResetTransform:
  """Builds the ReDo reset transform. threshold may be traced; period (calls between resets) is static."""
  if period < 1:
    raise ValueError(f'redo period must be >= 1 call, got {period}.')

  def init(params) -> RedoState:
    del params
    return RedoState(calls=jnp.zeros((), jnp.int32))

  def update(params, opt_state, state: RedoState, features: Mapping[str, jax.Array], key: chex.PRNGKey,
             draws: Optional[Mapping[str, chex.Numeric]] = None):
    del draws
    flat = traverse_util.flatten_dict(params)
    calls = state.calls + 1
    act = calls >= period
    keys = jax.random.split(key, max(len(unit_layers), 1))
    picks, masks = [], {}
    for layer, layer_key in zip(unit_layers, keys):
      if layer.features not in features:
        raise KeyError(f'ReDo needs features {layer.features!r}; the network returned {sorted(features)}.')
      units = cbp_lib._get(flat, layer.kernel).shape[-1]  # pylint: disable=protected-access
      score = jnp.abs(features[layer.features].reshape(-1, units)).mean(axis=0)
      normalised = score / score.mean()           # all units silent: 0/0, nothing is reset (as the original)
      replaced = act & (normalised <= threshold)
      masks[layer.features] = replaced
      picks.append(cbp_lib.Pick(replaced, jnp.arange(units), replaced, jnp.zeros(units), layer_key))
    params = cbp_lib.reset_units(unit_layers, params, picks, fresh=True)
    if reset_optimizer_state:
      opt_state = cbp_lib.reset_optimizer_units(unit_layers, params, opt_state, picks)
    num = sum((m.sum() for m in masks.values()), jnp.zeros((), jnp.int32))
    new_state = RedoState(calls=jnp.where(act, 0, calls))
    return params, opt_state, new_state, cbp_lib.CBPInfo(masks, num.astype(jnp.int32))

  return cbp_lib.ResetTransform(init, update)


class Hooks(cbp_lib.Hooks):
  """ReDo inside the learner: CBP's hooks (state at init, the step after every optimizer step, batch
  norm restored) with ReDo's transform (its call counter and tau-dormant resets)."""

  def transform(self, hparams=None) -> cbp_lib.ResetTransform:
    del hparams
    o = self.context.options
    return redo(self.context.learner.unit_layers, threshold=o['redo_threshold'], period=int(o['redo_period']),
                reset_optimizer_state=bool(o['reset_optimizer_state']))


METHOD = method_lib.Method(
    'redo', 'unit', 'ReDo (Sokar et al. 2023): reset tau-dormant units (cbp.method=redo)',
    HYPERS + tuple(h for h in cbp_lib.HYPERS if h.name == 'reset_optimizer_state'), section='cbp',
    active=method_lib.selected('cbp.method', 'redo'), check=cbp_lib.units_problem, hooks=Hooks,
    examples=(('redo', dict(cbp=dict(method='redo'))),))
