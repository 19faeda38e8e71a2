"""Plasticity metrics from Dohare et al. (2024): feature ranks, dormant units, weight magnitude.

Plus diagnostics from related work: Ma et al. (2024)'s fraction of active units, ReDo's
tau-dormancy (Sokar et al., 2023), feature and gradient norms and the top Hessian eigenvalue
(Lyle et al., 2023), and UPGD's per-example plasticity (Elsayed & Mahmood, 2024).

Pure jax.numpy, safe inside `jax.jit` / `jax.vmap`. Every function is `jax.jit`-wrapped except
`top_hessian_eigenvalue`, which takes a loss function: the caller jits around it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from jax import flatten_util


def _as_matrix(features: jax.Array) -> jax.Array:
    """Flattens (..., units) to a float32 (samples, units) matrix."""
    features = jnp.asarray(features)
    units = features.shape[-1]
    return features.reshape(-1, units).astype(jnp.float32)


@jax.jit
def singular_values(features: jax.Array) -> jax.Array:
    """Singular values of the (samples, units) feature matrix, descending, float32.

    Every leading axis (samples, spatial positions) is folded into the sample axis, so
    the result has min(samples, units) entries. All rank measures below derive from it.
    """
    return jnp.linalg.svd(_as_matrix(features), compute_uv=False)


def _normalized(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns (values / sum|values|, sum|values|), with zeros instead of NaN when the sum is 0."""
    total = jnp.sum(jnp.abs(values))
    safe_total = jnp.where(total > 0, total, 1.0)
    return values / safe_total, total


@jax.jit
def effective_rank(features: jax.Array) -> jax.Array:
    """Effective rank (Roy & Vetterli, 2007) of the feature matrix, float32.

    exp of the Shannon entropy of the singular values normalized to sum to one: a smooth
    count of how many directions the representation uses. Returns 0.0 for all-zero features.
    """
    p, total = _normalized(singular_values(features))
    positive = p > 0
    safe_p = jnp.where(positive, p, 1.0)
    entropy = -jnp.sum(jnp.where(positive, p * jnp.log(safe_p), 0.0))
    return jnp.where(total > 0, jnp.exp(entropy), 0.0).astype(jnp.float32)


def _threshold_rank(values: jax.Array, threshold: float) -> jax.Array:
    """Smallest k such that the k largest `values` hold >= threshold of their sum (int32).

    Matches the original loop `count(cumsum(desc values) / sum < threshold) + 1`, clipped to
    the number of values (float round-off can leave the full cumsum just below 1.0), and 0
    when all values are zero.
    """
    p, total = _normalized(jnp.sort(values)[::-1])
    below = jnp.sum(jnp.cumsum(p) < threshold)
    rank = jnp.minimum(below + 1, values.shape[-1])
    return jnp.where(total > 0, rank, 0).astype(jnp.int32)


@jax.jit
def stable_rank(features: jax.Array, threshold: float = 0.99) -> jax.Array:
    """The paper's "stable rank" (the original code's abs approximate rank), int32.

    Number of largest singular values (not squared) needed to reach `threshold` of their
    sum. Falls as features collapse onto few directions, a symptom of lost plasticity.
    """
    return _threshold_rank(singular_values(features), threshold)


@jax.jit
def unit_activity(features: jax.Array) -> jax.Array:
    """Fraction of entries > 0 per unit, over all leading axes: (..., units) -> (units,), float32.

    For conv features (batch, h, w, channels) a channel's activity pools samples and
    spatial positions.
    """
    matrix = _as_matrix(features)
    return jnp.sum(matrix > 0, axis=0).astype(jnp.float32) / jnp.float32(matrix.shape[0])


def _is_dormant(features: jax.Array, threshold: float, strict: bool) -> jax.Array:
    """Boolean (units,): activity < threshold if strict, else activity <= threshold."""
    activity = unit_activity(features)
    return jnp.where(strict, activity < threshold, activity <= threshold)


@jax.jit
def dormant_fraction(
    features: jax.Array, threshold: float = 0.01, strict: bool = False
) -> jax.Array:
    """Fraction of units whose activity is <= threshold (< threshold if strict), float32.

    Dormant units no longer pass gradient, so a growing fraction signals lost plasticity.
    The experiments differ in convention:
      CIFAR (active on fewer than 1% of entries): threshold=0.01, strict=True;
      RL (active in at most 1% of steps):        threshold=0.01, strict=False;
      MNIST "dead" (never active):               threshold=0.0,  strict=False.
    """
    return jnp.mean(_is_dormant(features, threshold, strict).astype(jnp.float32))


@jax.jit
def dormant_fraction_all(
    feature_list: Sequence[jax.Array], threshold: float = 0.01, strict: bool = False
) -> jax.Array:
    """Dormant fraction pooled over several layers: dormant units in all layers / all units.

    Each array is (..., units_l) with its own leading shape; layers weigh by their unit
    count, not equally. Conventions as in `dormant_fraction`.
    """
    dormant = [_is_dormant(f, threshold, strict) for f in feature_list]
    return jnp.mean(jnp.concatenate(dormant).astype(jnp.float32))


@jax.jit
def weight_magnitude(params: Any) -> jax.Array:
    """Mean |theta| over every element of every leaf of a pytree, float32.

    Element-weighted (sum |theta| / number of elements), so large layers dominate; growth
    of this quantity accompanies loss of plasticity. Returns 0.0 for an empty pytree.
    """
    leaves = jax.tree_util.tree_leaves(params)
    count = sum(jnp.size(leaf) for leaf in leaves)
    if count == 0:  # static: depends on shapes only
        return jnp.float32(0.0)
    total = sum(jnp.sum(jnp.abs(jnp.asarray(leaf).astype(jnp.float32))) for leaf in leaves)
    return (total / jnp.float32(count)).astype(jnp.float32)


# --- diagnostics from related work (beyond_reference.md, sections c-e) ---


@jax.jit
def active_fraction(feature_list: Sequence[jax.Array]) -> jax.Array:
    """Fraction of active units, FAU (Ma et al., ICLR 2024), float32.

    Share of (sample, unit) entries with output > 0, pooled over every given layer: entries
    weigh, not units or layers, and a conv map's positions count as samples. Each array is
    (..., units); a single array is accepted too. Unlike `dormant_fraction` (a unit is dormant
    only if almost never active) this is 1 - activation sparsity, so it moves as soon as units
    start to switch off on part of the data.
    """
    leaves = [jnp.asarray(f) for f in jax.tree_util.tree_leaves(feature_list)]
    total = sum(f.size for f in leaves)
    if total == 0:  # static: depends on shapes only
        return jnp.float32(0.0)
    # Per-layer means weighted by static sizes: no int32 count that could overflow.
    return sum(
        jnp.mean((f > 0).astype(jnp.float32)) * jnp.float32(f.size / total) for f in leaves
    ).astype(jnp.float32)


def _redo_is_dormant(features: jax.Array, tau: jax.Array) -> jax.Array:
    """Boolean (units,): the layer's mean |h_i| over its mean over units is <= tau (see below)."""
    score = jnp.mean(jnp.abs(_as_matrix(features)), axis=0)
    layer_mean = jnp.mean(score)
    silent = layer_mean <= 0  # every s_i == 0
    normalised = score / jnp.where(silent, 1.0, layer_mean)
    return silent | (normalised <= tau)


@jax.jit
def redo_dormant_fraction(feature_list: Sequence[jax.Array], tau: float = 0.0) -> jax.Array:
    """Fraction of tau-dormant units, ReDo's criterion (Sokar et al., ICML 2023), float32.

    Per layer, s_i = mean |h_i| over samples (and positions) is normalised by the layer's mean
    of s over units; unit i is dormant if normalised s_i <= tau. Units pool over the given
    layers (units weigh, not layers). tau = 0 counts units that output 0 everywhere; ReDo uses
    tau in {0, 0.01, 0.1}. A layer whose s are all 0 has every unit dormant (the ratio is 0/0
    there, and no unit carries signal); note `ddl.learners.redo` resets none in that case.
    Each array is (..., units); a single array is accepted too. tau may be traced.
    """
    leaves = jax.tree_util.tree_leaves(feature_list)
    dormant = [_redo_is_dormant(f, tau) for f in leaves]
    return jnp.mean(jnp.concatenate(dormant).astype(jnp.float32))


@jax.jit
def feature_norm(features: jax.Array) -> jax.Array:
    """Mean over samples of the L2 norm of each sample's feature vector, float32.

    Axis 0 is the sample axis; the rest (conv maps: positions and channels) is flattened per
    sample, and a 1-D array is one sample. The representation-side companion of
    `weight_magnitude` (Dohare et al., 2024): growing weights show up as growing features, which
    saturate units and distort the curvature (cf. `top_hessian_eigenvalue`).
    """
    features = jnp.asarray(features).astype(jnp.float32)
    matrix = features.reshape(1 if features.ndim == 1 else features.shape[0], -1)
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(matrix), axis=1))).astype(jnp.float32)


@jax.jit
def gradient_norm(grads: Any) -> jax.Array:
    """Global L2 norm of a gradient pytree, float32 (`optax.tree.norm`, the non-deprecated name
    of `optax.global_norm` in optax >= 0.2.8; leaves cast to float32 first).

    Lyle et al. (ICML 2023) and UPGD's statistics (Elsayed & Mahmood, 2024) track it: plasticity
    can be lost without divergent gradient norms, so it separates causes. 0.0 for an empty tree.
    """
    grads = jax.tree_util.tree_map(lambda g: jnp.asarray(g).astype(jnp.float32), grads)
    return jnp.asarray(optax.tree.norm(grads), jnp.float32)


def top_hessian_eigenvalue(
    loss_fn: Callable[[Any], jax.Array], params: Any, key: jax.Array, iterations: int = 20
) -> jax.Array:
    """Eigenvalue of largest magnitude of the Hessian of scalar `loss_fn(params)`, float32.

    Lyle et al. (ICML 2023) tie loss of plasticity to the curvature of the loss landscape; this
    is its cheapest summary. Power iteration on Hessian-vector products (forward-over-reverse,
    `jax.jvp(jax.grad(loss_fn), ...)`, about 2-3 backward passes each) over the whole raveled
    parameter pytree, from a random unit vector drawn from `key`: `iterations` (static) steps in
    a `lax.fori_loop`, then the Rayleigh quotient v.Hv (one more product). The sign is kept (a
    negative value is the most negative curvature). Convergence goes as (|l2| / |l1|)^iterations,
    so near-degenerate top magnitudes (e.g. +l and -l) need more iterations; the result always
    lies within [l_min, l_max]. Safe under `jax.jit` and `jax.vmap` over (params, key); not
    jitted itself because `loss_fn` (typically closing over a fixed probe batch) is a function.
    """
    flat, unravel = flatten_util.ravel_pytree(params)
    grad_fn = jax.grad(loss_fn)

    def hvp(v):
        tangent = unravel(v.astype(flat.dtype))
        return flatten_util.ravel_pytree(jax.jvp(grad_fn, (params,), (tangent,))[1])[0]

    def normalise(v):
        norm = jnp.sqrt(jnp.sum(jnp.square(v)))
        return norm, v / jnp.where(norm > 0, norm, 1.0)

    _, v0 = normalise(jax.random.normal(key, flat.shape, jnp.float32))

    def step(_, v):
        hv = hvp(v).astype(jnp.float32)
        norm, unit = normalise(hv)
        return jnp.where(norm > 0, unit, v)  # zero Hessian along v: keep v (quotient 0)

    v = jax.lax.fori_loop(0, iterations, step, v0)
    return jnp.vdot(v, hvp(v).astype(jnp.float32)).astype(jnp.float32)


@jax.jit
def plasticity(loss_before: jax.Array, loss_after: jax.Array) -> jax.Array:
    """UPGD's per-example plasticity (Elsayed & Mahmood, ICLR 2024), elementwise, float32.

    clip(1 - L_after / L_before, 0, 1), where L_after is the loss on the same example after the
    learner's update on it: the fraction of its loss one step removes (1: fully fitted, 0: no
    progress or worse). 0 where L_before is 0 (nothing left to learn; the original divides by
    zero). Losses are non-negative; average the result as needed. The caller runs the step.
    """
    before = jnp.asarray(loss_before, jnp.float32)
    after = jnp.asarray(loss_after, jnp.float32)
    positive = before > 0
    ratio = after / jnp.where(positive, before, 1.0)
    return jnp.where(positive, jnp.clip(1.0 - ratio, 0.0, 1.0), 0.0).astype(jnp.float32)
