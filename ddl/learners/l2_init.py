"""L2 Init, "regenerative regularization" (Kumar, Marklund & Van Roy), as an optax transform.

The loss becomes L + l/2 ||theta - theta_0||^2 with theta_0 the initial parameters, as the
authors' code has it (skumar9876/L2_Init, `agents/agents.py`: `l2_weight * 0.5 * sum((p - p0)^2)`):
it adds l (theta - theta_0) to the gradient, so a l from their sweeps acts here as there.
`l2_init_form='paper'` is the paper's written form, L + l ||theta - theta_0||^2, whose gradient
term is 2 l (theta - theta_0) (ddl's default before 2026-12-06). Put first in a chain, before the
optimizer (like coupled L2, which it is with theta_0 = 0): the optimizer (SGD, Adam, UPGD...) sees
the regularised gradient. theta_0 is copied from `params` at `init` into the transform's state, so it is
checkpointed, vmapped over seeds (each seed anchors to its own initialisation) and restored with
the rest of the optimizer state. `l` may be traced.

Re-initialised units and layers (CBP, ReDo, resets, injection): the anchor is declared 'keep'
(`METHOD.state_fields`, `ddl.learners.method.map_reset_state`), so a replaced unit is still pulled
towards its ORIGINAL initial weights, as before the method seam. 'reinit' (anchor at the fresh
weights, "regenerate towards the latest initialisation") is one word in the declaration;
`tests/test_l2_init.py` shows the current behaviour.
"""
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from ddl.learners.hyper import Hyper
from ddl.learners.method import Method, gated

FORMS = ('code', 'paper')
FACTOR = {'code': 1.0, 'paper': 2.0}   # of l (theta - theta_0) in the gradient

HYPERS = (
    Hyper('l2_init_form', 'code', choices=FORMS, traced=False,
          doc="L2 Init: 'code' l/2 ||theta - theta_0||^2 (the authors' code), 'paper' l ||theta - theta_0||^2"),
    Hyper('l2_init', 0.0, low=0,
          doc='L2 Init: l of the penalty towards the initial parameters (l/2 ||theta - theta_0||^2 as the '
              "authors' code; 0: off)."),
)


class L2InitState(NamedTuple):
  anchor: Any   # theta_0: the parameters at init (params-shaped)


def l2_init(strength: chex.Numeric, form: str = 'code') -> optax.GradientTransformationExtraArgs:
  """Adds strength * (params - theta_0) ('code', the authors') or 2 * strength * (params - theta_0)
  ('paper') to the updates (gradients); theta_0 = params at init.

  strength: may be a traced array. Extra arguments of `update` (e.g. a key for UPGD later in the
  chain) are accepted and ignored.
  """
  if form not in FORMS:
    raise ValueError(f'l2_init_form={form!r} is not known; use one of {FORMS}.')
  factor = FACTOR[form]

  def init_fn(params):
    # A copy, not the same buffers: a step that donates both params and optimizer state must not
    # see one buffer twice.
    return L2InitState(anchor=jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError('l2_init: update needs the parameters (the penalty is on params - theta_0): '
                       'call update(grads, state, params).')
    new_updates = jax.tree.map(
        lambda g, w, w0: (g + factor * strength * (w - w0)).astype(g.dtype), updates, params, state.anchor)
    return new_updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


METHOD = Method(
    'l2_init', 'gradient', "L2 Init (Kumar et al.): loss + l2_init/2 ||theta - theta_0||^2 (the authors' code)",
    HYPERS, section='optimizer', active=gated('l2_init'), examples=(('l2_init', dict(l2_init=1e-3)),),
    transform=lambda b: l2_init(b.hparams['l2_init'], b.options['l2_init_form']),
    state_fields=((L2InitState, dict(anchor='keep')),))
