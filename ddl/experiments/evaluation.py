"""The diagnostics that every supervised experiment's evaluator reports, on a probe batch: one home
for them, so each is measured the same way everywhere.

`diagnose(learner, state, x, y, key, config.diagnostics, convention)` -> {metric: scalar} (one run;
pure, vmappable) with the paper's diagnostics in the experiment's convention (`Convention`: the
dormant threshold and its name, the effective rank of the last or the mean over hidden layers,
the weight magnitude over all parameters or kernels only):
  weight_magnitude, dormant_fraction (or dead_fraction), effective_rank, stable_rank (last layer)
and
  active_fraction        share of (sample, unit) activations > 0 over all hidden layers (Ma et al.)
  redo_dormant_fraction  units whose normalised mean |activation| <= diagnostics.redo_tau (ReDo)
  feature_norm           mean L2 norm of the last hidden layer's features per sample
  gradient_norm          L2 norm of the probe loss's gradient
  plasticity             1 - L_after / L_before of one learner step on the probe batch, clipped to
                         [0, 1] (UPGD's measure; the step is taken on a copy of the state;
                         `diagnostics.plasticity` False: not measured)
  hessian_top_eigenvalue largest-magnitude eigenvalue of the probe loss's Hessian, by
                         `diagnostics.hessian_iterations` Hessian-vector products (0: not measured;
                         Lyle et al. 2023)
and, for optimizers that learn their step sizes (IDBD, Autostep, MetaOptimize), per top-level layer
  step_size_<layer>         mean step size over the layer's weights and biases
  step_size_spread_<layer>  their standard deviation (per-weight step sizes only)
and what the program's methods report (`Hooks.diagnostics`), e.g. for a growing layer
  backbone_units            active units of the growing layer
"""
from typing import Any, Dict, NamedTuple

import jax
import jax.numpy as jnp

from ddl import metrics


def checks(config) -> list:
  d = config.diagnostics
  return [(d.every >= 1, 'diagnostics.every must be >= 1 chunk'),
          (d.hessian_iterations >= 0, 'diagnostics.hessian_iterations must be >= 0 (0: off)'),
          (d.redo_tau >= 0, 'diagnostics.redo_tau must be >= 0'),
          (d.plasticity in (True, False), 'diagnostics.plasticity must be True or False')]


class Convention(NamedTuple):
  """How an experiment's paper figure measures its diagnostics (lop_reference.md)."""
  dormant: str = 'dormant_fraction'   # metric name
  threshold: float = 0.0              # a unit is dormant if active on <= threshold of the probe (< if strict)
  strict: bool = False
  mean_effective_rank: bool = False   # mean over hidden layers (else the last layer's)
  kernels_only: bool = False          # weight magnitude over kernels only (else every parameter)


def diagnose(learner, state, x: jax.Array, y: Any, key: jax.Array, options,
             convention: Convention = Convention(), output_mask=None) -> Dict[str, jax.Array]:
  """The diagnostics of one run's learner state on the probe batch (x, y); `output_mask` (bool over
  the outputs): the loss over those outputs only (classes seen so far), as in training."""
  params = state.params
  weights = {k: v['kernel'] for k, v in params.items() if 'kernel' in v} if convention.kernels_only else params
  values = {'weight_magnitude': metrics.weight_magnitude(weights)}
  _, features = learner.predict(state, x)
  hidden = list(features.values())
  if hidden:
    values[convention.dormant] = metrics.dormant_fraction_all(hidden, convention.threshold, convention.strict)
    ranks = [metrics.effective_rank(h) for h in (hidden if convention.mean_effective_rank else hidden[-1:])]
    values['effective_rank'] = sum(ranks) / len(ranks)
    values['stable_rank'] = metrics.stable_rank(hidden[-1])
    values['active_fraction'] = metrics.active_fraction(hidden)
    values['redo_dormant_fraction'] = metrics.redo_dormant_fraction(hidden, options.redo_tau)
    values['feature_norm'] = metrics.feature_norm(hidden[-1])
  loss = lambda p: learner.objective(p, state, x, y, output_mask)[1][0]   # the loss alone (no fringe term)
  before, grads = jax.value_and_grad(loss)(params)
  values['gradient_norm'] = metrics.gradient_norm(grads)
  if options.plasticity:
    stepped, _ = learner.step(state, x, y, key, output_mask=output_mask)
    values['plasticity'] = metrics.plasticity(before, loss(stepped.params))
  if options.hessian_iterations > 0:
    values['hessian_top_eigenvalue'] = metrics.top_hessian_eigenvalue(
        loss, params, jax.random.fold_in(key, 1), iterations=options.hessian_iterations)
  values.update(step_size_values(learner, state))
  values.update(learner.diagnostics(state))
  return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def step_size_values(learner, state) -> Dict[str, jax.Array]:
  """Mean (and, per weight, spread) of the learned step sizes of each top-level layer; {} for an
  optimizer with a fixed step size."""
  found = learner.step_sizes(state)
  if found is None:
    return {}
  alphas, per_weight = found
  values = {}
  for layer, tree in alphas.items():
    flat = jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])
    values[f'step_size_{layer}'] = jnp.mean(flat)
    if per_weight:
      values[f'step_size_spread_{layer}'] = jnp.std(flat)
  return values
