"""Plasticity metrics from Dohare et al. (2024): feature ranks, dormant units, weight magnitude.

Pure jax.numpy, each function `jax.jit`-wrapped and safe inside further `jax.jit` / `jax.vmap`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp


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
def approximate_rank(features: jax.Array, threshold: float = 0.99) -> jax.Array:
    """Approximate rank (Yang et al., 2020), int32: as `stable_rank` but on squared singular values.

    Squared singular values are the variance captured per direction, so this counts the
    directions needed to explain `threshold` of the features' energy.
    """
    return _threshold_rank(jnp.square(singular_values(features)), threshold)


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
