"""Checks ddl.metrics against plain numpy/scipy versions of the original (Dohare et al.) code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from ddl import metrics

RTOL = 1e-4



# --- reference implementations (loops, float64, as in the original lop/utils code) ---


def ref_singular_values(features):
    m = np.asarray(features, dtype=np.float64)
    m = m.reshape(-1, m.shape[-1])
    return scipy.linalg.svd(m, compute_uv=False, lapack_driver="gesvd")


def ref_effective_rank(features):
    sv = ref_singular_values(features)
    total = np.sum(np.abs(sv))
    if total == 0:
        return 0.0
    entropy = 0.0
    for p in sv / total:
        if p > 0.0:
            entropy -= p * np.log(p)
    return float(np.exp(entropy))


def _ref_threshold_rank(values, prop):
    if np.sum(values) == 0:
        return 0
    normed = np.sort(values / np.sum(values))[::-1]
    cumulative, rank = 0.0, 0
    while cumulative < prop:
        cumulative += normed[rank]
        rank += 1
    return rank


def ref_stable_rank(features, prop=0.99):
    return _ref_threshold_rank(ref_singular_values(features), prop)


def ref_unit_activity(features):
    f = np.asarray(features)
    f = f.reshape(-1, f.shape[-1])
    return np.array([np.count_nonzero(f[:, j] > 0) / f.shape[0] for j in range(f.shape[1])])


def ref_dormant_fraction(features, threshold, strict):
    act = ref_unit_activity(features)
    return float(np.mean(act < threshold if strict else act <= threshold))


# --- test matrices ---


def _random(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _low_rank(seed, n=200, d=50, r=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, r)) @ rng.standard_normal((r, d))).astype(np.float32)


def _dead_columns(seed):
    m = np.maximum(_random(seed, (200, 50)), 0.0)  # ReLU-like features
    m[:, [0, 7, 19, 33, 49]] = 0.0
    return m


def _decaying(seed, n=200, d=50):
    """Full rank but with geometrically decaying spectrum, so ranks are well below d."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = 10.0 * 0.85 ** np.arange(d)
    return ((u * s) @ v.T).astype(np.float32)


MATRICES = {
    "gaussian": _random(0, (200, 50)),
    "wide": _random(1, (30, 80)),
    "relu": np.maximum(_random(2, (200, 50)), 0.0),
    "low_rank3": _low_rank(3),
    "decaying": _decaying(4),
    "dead_columns": _dead_columns(5),
    "conv": np.maximum(_random(6, (8, 5, 5, 16)), 0.0),
    "zeros": np.zeros((200, 50), np.float32),
}


@pytest.fixture(params=sorted(MATRICES), name="features")
def _features(request):
    return MATRICES[request.param]


def test_singular_values(features):
    got = np.asarray(metrics.singular_values(features))
    want = ref_singular_values(features)
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert np.all(np.diff(got) <= 0), "not descending"
    # float32 SVD: errors are relative to the largest singular value.
    scale = max(want[0], 1.0) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale)


def test_effective_rank(features):
    got = metrics.effective_rank(features)
    assert got.dtype == jnp.float32
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), ref_effective_rank(features), rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("threshold", [0.9, 0.99])
def test_stable_rank(features, threshold):
    got = metrics.stable_rank(features, threshold)
    assert got.dtype == jnp.int32
    assert int(got) == ref_stable_rank(features, threshold)


def test_ranks_known_values():
    low = MATRICES["low_rank3"]
    assert 1 <= int(metrics.stable_rank(low)) <= 3
    assert 1.0 < float(metrics.effective_rank(low)) < 3.0 + 1e-3
    # Stacked identities: all singular values equal -> every rank is the full width.
    eye = np.tile(np.eye(50, dtype=np.float32), (4, 1))  # 200 x 50, like the other matrices
    assert float(metrics.effective_rank(eye)) == pytest.approx(50.0, rel=1e-5)
    assert int(metrics.stable_rank(eye)) == 50
    # Threshold 1.0 must not run past the number of singular values.
    assert int(metrics.stable_rank(eye, 1.0)) == 50


def test_zero_features():
    zeros = MATRICES["zeros"]
    assert float(metrics.effective_rank(zeros)) == 0.0
    assert int(metrics.stable_rank(zeros)) == 0
    assert float(metrics.dormant_fraction(zeros)) == 1.0


def test_unit_activity(features):
    got = np.asarray(metrics.unit_activity(features))
    assert got.shape == (features.shape[-1],)
    np.testing.assert_allclose(got, ref_unit_activity(features), rtol=1e-6)


@pytest.mark.parametrize(
    "threshold,strict", [(0.01, True), (0.01, False), (0.0, False), (0.1, True), (0.5, False)]
)
def test_dormant_fraction_matches_reference(features, threshold, strict):
    got = float(metrics.dormant_fraction(features, threshold, strict))
    assert got == pytest.approx(ref_dormant_fraction(features, threshold, strict), abs=1e-6)


def _conventions_example():
    """300 samples x 5 units with activities 0, 1/300, 3/300 (=0.01 exactly), 4/300, 1."""
    f = np.zeros((300, 5), np.float32)
    f[:1, 1] = 1.0
    f[:3, 2] = 0.5
    f[:4, 3] = 2.0
    f[:, 4] = 1.0
    f[10:20, 0] = -1.0  # negative pre-activations count as inactive
    return f


def test_dormant_conventions():
    f = _conventions_example()
    np.testing.assert_allclose(
        np.asarray(metrics.unit_activity(f)), [0.0, 1 / 300, 0.01, 4 / 300, 1.0], rtol=1e-6
    )
    # CIFAR: active on fewer than 1% -> units 0, 1 (unit 2 at exactly 1% is alive).
    assert float(metrics.dormant_fraction(f, 0.01, strict=True)) == pytest.approx(2 / 5)
    # RL: active in <= 1% -> units 0, 1, 2.
    assert float(metrics.dormant_fraction(f, 0.01, strict=False)) == pytest.approx(3 / 5)
    # MNIST dead: never active -> unit 0.
    assert float(metrics.dormant_fraction(f, 0.0, strict=False)) == pytest.approx(1 / 5)
    # Strict with threshold 0 can never fire.
    assert float(metrics.dormant_fraction(f, 0.0, strict=True)) == 0.0
    # Same under jit with strict traced.
    jitted = jax.jit(metrics.dormant_fraction)
    assert float(jitted(f, 0.01, True)) == pytest.approx(2 / 5)
    assert float(jitted(f, 0.01, False)) == pytest.approx(3 / 5)


def test_dormant_fraction_all():
    f1 = _conventions_example()  # 5 units: 2 strict-dormant, 3 non-strict
    f2 = MATRICES["dead_columns"]  # 50 units: 5 dead (others ~50% active)
    f3 = np.maximum(_random(7, (16, 4, 4, 8)), 0.0)  # conv layer, 8 channels, none dormant
    layers = [f1, f2, f3]
    assert float(metrics.dormant_fraction_all(layers, 0.01, True)) == pytest.approx(7 / 63)
    assert float(metrics.dormant_fraction_all(layers, 0.01, False)) == pytest.approx(8 / 63)
    assert float(metrics.dormant_fraction_all(layers, 0.0, False)) == pytest.approx(6 / 63)
    for threshold, strict in [(0.01, True), (0.01, False), (0.0, False)]:
        pooled = np.concatenate(
            [ref_unit_activity(f) < threshold if strict else ref_unit_activity(f) <= threshold
             for f in layers]
        )
        got = float(metrics.dormant_fraction_all(layers, threshold, strict))
        assert got == pytest.approx(float(np.mean(pooled)), abs=1e-6)


def test_weight_magnitude():
    params = {
        "dense": {"kernel": jnp.array([[1.0, -2.0], [3.0, -4.0]]), "bias": jnp.array([0.5, -0.5])},
        "out": [jnp.array([-6.0]), jnp.zeros((3,))],
    }
    # sum |theta| = 10 + 1 + 6 + 0 = 17 over 4 + 2 + 1 + 3 = 10 elements.
    assert float(metrics.weight_magnitude(params)) == pytest.approx(1.7, rel=1e-6)
    assert float(jax.jit(metrics.weight_magnitude)(params)) == pytest.approx(1.7, rel=1e-6)
    assert float(metrics.weight_magnitude({})) == 0.0
    # vmap over a leading seed axis: seed 1 has every weight doubled.
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x]), params)
    np.testing.assert_allclose(
        np.asarray(jax.vmap(metrics.weight_magnitude)(stacked)), [1.7, 3.4], rtol=1e-6
    )


def _seed_batch():
    """(4 seeds, 64, 4, 4, 12) conv-like features with different ranks and dead channels."""
    rng = np.random.default_rng(11)
    out = []
    for seed in range(4):
        base = rng.standard_normal((64 * 16, seed + 2)) @ rng.standard_normal((seed + 2, 12))
        base = np.maximum(base, 0.0)
        base[:, :seed] = 0.0
        out.append(base.reshape(64, 4, 4, 12))
    return np.stack(out).astype(np.float32)


def _all_metrics(f):
    """Every per-array metric at once, so each transform is traced/compiled only once."""
    return {
        "singular_values": metrics.singular_values(f),
        "effective_rank": metrics.effective_rank(f),
        "stable_rank": metrics.stable_rank(f),
        "unit_activity": metrics.unit_activity(f),
        "dormant_fraction": metrics.dormant_fraction(f, 0.01, True),
    }


INT_METRICS = ("stable_rank",)


def test_jit_and_vmap_match_loop():
    batch = _seed_batch()
    per_seed = [_all_metrics(x) for x in batch]  # eager Python loop
    looped = {k: np.stack([np.asarray(r[k]) for r in per_seed]) for k in per_seed[0]}
    results = {
        "vmap": jax.vmap(_all_metrics)(batch),
        "jit(vmap)": jax.jit(jax.vmap(_all_metrics))(batch),
    }
    for how, result in results.items():
        for name, want in looped.items():
            got = np.asarray(result[name])
            assert got.shape == want.shape, (how, name)
            assert got.dtype == want.dtype, (how, name)
            if name in INT_METRICS:
                np.testing.assert_array_equal(got, want, err_msg=f"{how} {name}")
            else:
                np.testing.assert_allclose(
                    got, want, rtol=RTOL, atol=RTOL * 1e-2 * np.max(np.abs(want)),
                    err_msg=f"{how} {name}",
                )
    # Against the numpy references too, so a consistently wrong batch would still fail.
    np.testing.assert_allclose(
        looped["effective_rank"], [ref_effective_rank(x) for x in batch], rtol=RTOL
    )
    np.testing.assert_array_equal(looped["stable_rank"], [ref_stable_rank(x) for x in batch])
    np.testing.assert_allclose(
        looped["dormant_fraction"], [ref_dormant_fraction(x, 0.01, True) for x in batch]
    )


def test_vmap_dormant_fraction_all():
    batch = _seed_batch()
    second = np.maximum(_random(12, (4, 64, 7)), 0.0)
    fn = lambda a, b: metrics.dormant_fraction_all([a, b], 0.0, False)
    looped = np.array([float(fn(a, b)) for a, b in zip(batch, second)])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(fn))(batch, second)), looped, rtol=1e-6)
    # seed s has s dead channels out of 12 + 7 units.
    np.testing.assert_allclose(looped, np.arange(4) / 19, rtol=1e-6)
