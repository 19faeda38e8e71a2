"""The diagnostics that every supervised experiment's evaluator reports beside its own, on a probe
batch: one home for them, so each is measured the same way everywhere.

`diagnose(learner, state, x, y, key, config.diagnostics)` -> {metric: scalar} (one run; pure,
vmappable) with
  active_fraction        share of (sample, unit) activations > 0 over all hidden layers (Ma et al.)
  redo_dormant_fraction  units whose normalised mean |activation| <= diagnostics.redo_tau (ReDo)
  feature_norm           mean L2 norm of the last hidden layer's features per sample
  gradient_norm          L2 norm of the probe loss's gradient
  plasticity             1 - L_after / L_before of one learner step on the probe batch, clipped to
                         [0, 1] (UPGD's measure; the step is taken on a copy of the state)
  hessian_top_eigenvalue largest-magnitude eigenvalue of the probe loss's Hessian, by
                         `diagnostics.hessian_iterations` Hessian-vector products (0: not measured;
                         Lyle et al. 2023)
"""
from typing import Any, Dict

import jax
import jax.numpy as jnp

from ddl import metrics


def checks(config) -> list:
  d = config.diagnostics
  return [(d.every >= 1, 'diagnostics.every must be >= 1 chunk'),
          (d.hessian_iterations >= 0, 'diagnostics.hessian_iterations must be >= 0 (0: off)'),
          (d.redo_tau >= 0, 'diagnostics.redo_tau must be >= 0')]


def diagnose(learner, state, x: jax.Array, y: Any, key: jax.Array, options) -> Dict[str, jax.Array]:
  """The shared diagnostics of one run's learner state on the probe batch (x, y)."""
  _, features = learner.predict(state, x)
  hidden = list(features.values())
  values = {}
  if hidden:
    values['active_fraction'] = metrics.active_fraction(hidden)
    values['redo_dormant_fraction'] = metrics.redo_dormant_fraction(hidden, options.redo_tau)
    values['feature_norm'] = metrics.feature_norm(hidden[-1])
  loss = lambda params: learner.objective(params, state, x, y)[0]
  before, grads = jax.value_and_grad(loss)(state.params)
  values['gradient_norm'] = metrics.gradient_norm(grads)
  stepped, _ = learner.step(state, x, y, key)
  values['plasticity'] = metrics.plasticity(before, loss(stepped.params))
  if options.hessian_iterations > 0:
    values['hessian_top_eigenvalue'] = metrics.top_hessian_eigenvalue(
        loss, state.params, jax.random.fold_in(key, 1), iterations=options.hessian_iterations)
  return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}
