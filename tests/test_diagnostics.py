"""Checks the diagnostics of ddl.metrics beyond Dohare et al. (FAU, ReDo dormancy, feature and
gradient norms, top Hessian eigenvalue, UPGD plasticity) against plain numpy loops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import flatten_util

from ddl import metrics


# --- reference implementations (numpy, float64, explicit loops) ---


def _matrix(features):
  f = np.asarray(features, np.float64)
  return f.reshape(-1, f.shape[-1])


def ref_active_fraction(layers):
  active, entries = 0, 0
  for f in layers:
    m = _matrix(f)
    for j in range(m.shape[1]):
      active += int(np.count_nonzero(m[:, j] > 0))
      entries += m.shape[0]
  return active / entries


def ref_redo_dormant_fraction(layers, tau):
  dormant, units = 0, 0
  for f in layers:
    m = _matrix(f)
    scores = [np.mean(np.abs(m[:, j])) for j in range(m.shape[1])]
    layer_mean = np.mean(scores)
    for s in scores:
      dormant += 1 if layer_mean == 0 else int(s / layer_mean <= tau)
      units += 1
  return dormant / units


def ref_feature_norm(features):
  f = np.asarray(features, np.float64)
  samples = [f] if f.ndim == 1 else list(f)
  return float(np.mean([np.sqrt(np.sum(s.ravel() ** 2)) for s in samples]))


def ref_gradient_norm(grads):
  total = 0.0
  for leaf in jax.tree_util.tree_leaves(grads):
    for g in np.asarray(leaf, np.float64).ravel():
      total += g * g
  return float(np.sqrt(total))


def ref_plasticity(before, after):
  before = np.asarray(before, np.float64)
  after = np.asarray(after, np.float64)
  out = np.zeros(before.shape)
  for i in np.ndindex(before.shape):
    if before[i] != 0:
      out[i] = min(max(1.0 - after[i] / before[i], 0.0), 1.0)
  return out


def ref_top_eigenvalue(loss_fn, params):
  """Largest-magnitude eigenvalue of the dense Hessian (jax.hessian on the raveled params)."""
  flat, unravel = flatten_util.ravel_pytree(params)
  hessian = np.asarray(jax.jit(jax.hessian(lambda f: loss_fn(unravel(f))))(flat), np.float64)
  eigenvalues = np.linalg.eigvalsh((hessian + hessian.T) / 2)
  return eigenvalues[np.argsort(-np.abs(eigenvalues))], eigenvalues


# --- features ---


def _random(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _layers():
  """Dense ReLU, conv ReLU, tanh (negative entries), dead/faint columns, exact zeros."""
  relu = np.maximum(_random(0, (64, 20)), 0.0)
  conv = np.maximum(_random(1, (6, 4, 4, 8)), 0.0)
  tanh = np.tanh(_random(2, (64, 10)))
  faint = np.maximum(_random(3, (64, 12)), 0.0)
  faint[:, [0, 5]] = 0.0  # dead
  faint[:, [1, 6]] *= 0.05  # faint: normalised score ~0.06
  faint[:3, 7] = 0.0  # a few exact zeros
  return [relu, conv, tanh, faint]


LAYERS = _layers()
ZEROS = np.zeros((32, 6), np.float32)


def _scored_layer():
  """5 units with mean |h| of exactly 0, 0.1, 0.9, 1.5, 2.5 (layer mean 1) on 4 samples."""
  f = np.zeros((4, 5), np.float32)
  f[:, 1] = [0.1, -0.1, 0.1, -0.1]
  f[:, 2] = [0.9, 0.9, -0.9, 0.9]
  f[:, 3] = [3.0, 0.0, 3.0, 0.0]
  f[:, 4] = [-2.5, 2.5, 2.5, 2.5]
  return f


# --- active_fraction (Ma et al. 2024 FAU) ---


@pytest.mark.parametrize('which', [[0], [1], [2], [3], [0, 1, 2, 3]])
def test_active_fraction(which):
  layers = [LAYERS[i] for i in which]
  got = metrics.active_fraction(layers)
  assert got.dtype == jnp.float32
  assert float(got) == pytest.approx(ref_active_fraction(layers), abs=1e-6)


def test_active_fraction_known_values():
  # Entries weigh, not layers: 16 entries with 4 active, 4 entries with 4 active -> 8 / 20.
  quarter = np.array([[1.0, 0.0], [0.0, -1.0]] * 4, np.float32)  # 16 entries, 4 active
  ones = np.ones((2, 2), np.float32)
  assert float(metrics.active_fraction([quarter, ones])) == pytest.approx(8 / 20)
  assert float(metrics.active_fraction(quarter)) == pytest.approx(0.25)  # single array
  assert float(metrics.active_fraction([ZEROS])) == 0.0
  assert float(metrics.active_fraction([_scored_layer()])) == pytest.approx(10 / 20)
  assert float(metrics.active_fraction([-_scored_layer()])) == pytest.approx(4 / 20)


# --- redo_dormant_fraction (Sokar et al. 2023) ---


@pytest.mark.parametrize('tau', [0.0, 0.1, 0.5, 1.0])
def test_redo_dormant_fraction(tau):
  for layers in ([LAYERS[0]], [LAYERS[3]], LAYERS, LAYERS + [ZEROS]):
    got = metrics.redo_dormant_fraction(layers, tau)
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(ref_redo_dormant_fraction(layers, tau), abs=1e-6)


def test_redo_dormant_known_values():
  f = _scored_layer()  # normalised scores 0, 0.1, 0.9, 1.5, 2.5
  for tau, want in [(0.0, 1), (0.05, 1), (0.2, 2), (1.0, 3), (2.0, 4), (3.0, 5)]:
    assert float(metrics.redo_dormant_fraction([f], tau)) == pytest.approx(want / 5), tau
  # Scale-free: the score is normalised per layer.
  assert float(metrics.redo_dormant_fraction([1e3 * f], 0.2)) == pytest.approx(2 / 5)
  # An all-zero layer has every unit dormant; units weigh when pooling (2 + 6 of 11).
  assert float(metrics.redo_dormant_fraction([f, ZEROS], 0.2)) == pytest.approx(8 / 11)
  assert float(metrics.redo_dormant_fraction(ZEROS)) == 1.0
  # Differs from Dohare's dormancy: a faint but always-active unit is ReDo-dormant.
  faint = np.ones((10, 4), np.float32)
  faint[:, 0] = 1e-3
  assert float(metrics.redo_dormant_fraction([faint], 0.1)) == pytest.approx(1 / 4)
  assert float(metrics.dormant_fraction(faint, 0.01)) == 0.0


# --- feature_norm ---


@pytest.mark.parametrize('index', range(len(LAYERS)))
def test_feature_norm(index):
  f = LAYERS[index]
  got = metrics.feature_norm(f)
  assert got.dtype == jnp.float32
  assert float(got) == pytest.approx(ref_feature_norm(f), rel=1e-5)


def test_feature_norm_known_values():
  f = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]], np.float32)  # norms 5, 0, 10
  assert float(metrics.feature_norm(f)) == pytest.approx(5.0)
  assert float(metrics.feature_norm(np.array([3.0, 4.0], np.float32))) == pytest.approx(5.0)
  # A conv map is flattened per sample, not per position.
  conv = np.ones((2, 3, 3, 4), np.float32)
  assert float(metrics.feature_norm(conv)) == pytest.approx(6.0)


# --- a tiny MLP 3-4-2 (tanh, softmax cross-entropy; 26 parameters) and a fixed probe batch ---


def init_mlp(seed, scale=1.0, sizes=(3, 4, 2)):
  rng = np.random.default_rng(seed)
  return [
      {'w': (scale * rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
       'b': (0.1 * rng.standard_normal(b)).astype(np.float32)}
      for a, b in zip(sizes[:-1], sizes[1:])
  ]


def _probe():
  rng = np.random.default_rng(100)
  return rng.standard_normal((16, 3)).astype(np.float32), rng.integers(0, 2, 16)


X, Y = _probe()


def per_example_loss(params, x=X, y=Y):
  h = jnp.tanh(x @ params[0]['w'] + params[0]['b'])
  logits = h @ params[1]['w'] + params[1]['b']
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(y)[:, None], axis=1)[:, 0]


def mlp_loss(params):
  return jnp.mean(per_example_loss(params))


def _stack(trees):
  return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)


# --- gradient_norm ---


def test_gradient_norm():
  grad_fn = jax.jit(jax.grad(mlp_loss))
  grads = [grad_fn(init_mlp(seed)) for seed in range(3)]
  for g in grads:
    got = metrics.gradient_norm(g)
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(ref_gradient_norm(g), rel=1e-5)
  np.testing.assert_allclose(
      np.asarray(jax.vmap(metrics.gradient_norm)(_stack(grads))),
      [ref_gradient_norm(g) for g in grads], rtol=1e-5)
  assert float(metrics.gradient_norm({'a': jnp.array([3.0]), 'b': [jnp.array([[4.0]])]})) == 5.0
  assert float(metrics.gradient_norm({})) == 0.0


# --- top_hessian_eigenvalue (Lyle et al. 2023) ---


def test_top_hessian_eigenvalue_quadratic():
  """0.5 p.A.p over a two-leaf pytree: the Hessian is A, whose top magnitude is negative."""
  rng = np.random.default_rng(7)
  q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
  a = (q * np.array([-3.0, 2.0, 1.0, 0.5, -0.2, 0.0])) @ q.T
  a32 = jnp.asarray(a, jnp.float32)
  params = {'u': jnp.ones((2, 2)), 'v': jnp.ones((2,))}

  def loss(p):
    flat = jnp.concatenate([p['u'].ravel(), p['v']])
    return 0.5 * flat @ a32 @ flat

  got = metrics.top_hessian_eigenvalue(loss, params, jax.random.PRNGKey(0), iterations=100)
  assert got.dtype == jnp.float32
  assert float(got) == pytest.approx(np.linalg.eigvalsh(a)[0], rel=1e-4)  # -3
  # A zero Hessian gives 0, not NaN.
  flat_loss = lambda p: jnp.sum(p['u']) + jnp.sum(p['v'])
  assert float(metrics.top_hessian_eigenvalue(flat_loss, params, jax.random.PRNGKey(0))) == 0.0


def test_top_hessian_eigenvalue_mlp():
  params = init_mlp(5)
  ordered, eigenvalues = ref_top_eigenvalue(mlp_loss, params)
  assert abs(ordered[1] / ordered[0]) < 0.6  # spectral gap: power iteration converges fast
  fn = jax.jit(metrics.top_hessian_eigenvalue, static_argnums=(0, 3))
  got = float(fn(mlp_loss, params, jax.random.PRNGKey(1), 150))
  assert got == pytest.approx(ordered[0], rel=1e-3)
  # Default (20 iterations): a Rayleigh quotient, so within the spectrum, and already close.
  default = float(jax.jit(functools.partial(metrics.top_hessian_eigenvalue, mlp_loss))(
      params, jax.random.PRNGKey(1)))
  assert eigenvalues[0] - 1e-5 <= default <= eigenvalues[-1] + 1e-5
  assert default == pytest.approx(ordered[0], rel=1e-2)


def test_top_hessian_eigenvalue_vmap_over_seeds():
  seeds = [init_mlp(s, scale=2.0) for s in (2, 4, 5)]  # seed 4's top magnitude is negative
  want = []
  for params in seeds:
    ordered, _ = ref_top_eigenvalue(mlp_loss, params)
    assert abs(ordered[1] / ordered[0]) < 0.9
    want.append(ordered[0])
  assert want[1] < 0 < want[0]
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  fn = functools.partial(metrics.top_hessian_eigenvalue, mlp_loss, iterations=150)
  got = np.asarray(jax.jit(jax.vmap(fn))(_stack(seeds), keys))
  assert got.dtype == np.float32 and got.shape == (3,)
  np.testing.assert_allclose(got, want, rtol=1e-3)


# --- plasticity (UPGD) ---


def test_plasticity_elementwise():
  before = np.array([[2.0, 2.0, 2.0, 0.0], [1.0, 0.5, 0.0, 4.0]], np.float32)
  after = np.array([[1.0, 3.0, 0.0, 0.0], [1.0, 0.1, 2.0, 1.0]], np.float32)
  got = metrics.plasticity(before, after)
  assert got.dtype == jnp.float32 and got.shape == before.shape
  np.testing.assert_allclose(np.asarray(got), ref_plasticity(before, after), atol=1e-6)
  np.testing.assert_allclose(np.asarray(got), [[0.5, 0.0, 1.0, 0.0], [0.0, 0.8, 0.0, 0.75]],
                             atol=1e-6)


def test_plasticity_after_sgd_step():
  """Per-example losses on the probe batch before and after one SGD step, 3 seeds under vmap."""
  def step_losses(params):
    grads = jax.grad(mlp_loss)(params)
    stepped = jax.tree_util.tree_map(lambda p, g: p - 2.0 * g, params, grads)
    return per_example_loss(params), per_example_loss(stepped)

  seeds = _stack([init_mlp(s) for s in range(3)])
  before, after = jax.jit(jax.vmap(step_losses))(seeds)
  got = np.asarray(jax.jit(jax.vmap(metrics.plasticity))(before, after))
  want = ref_plasticity(before, after)
  assert got.shape == (3, 16)
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert np.any(want > 0) and np.any(want == 0)  # some examples improve, some do not


# --- jit / vmap over seeds of the feature diagnostics ---


def test_feature_diagnostics_vmap_match_loop():
  rng = np.random.default_rng(11)
  dense = np.maximum(rng.standard_normal((3, 32, 9)), 0.0).astype(np.float32)
  conv = np.maximum(rng.standard_normal((3, 8, 3, 3, 5)), 0.0).astype(np.float32)
  dense[1, :, :4] = 0.0  # seed 1: 4 dead units
  conv[2] *= 0.0  # seed 2: silent conv layer

  def all_diagnostics(d, c, tau):
    return {
        'active_fraction': metrics.active_fraction([d, c]),
        'redo_dormant_fraction': metrics.redo_dormant_fraction([d, c], tau),
        'feature_norm': metrics.feature_norm(c),
    }

  got = jax.jit(jax.vmap(all_diagnostics, in_axes=(0, 0, None)))(dense, conv, 0.1)
  want = {
      'active_fraction': [ref_active_fraction([d, c]) for d, c in zip(dense, conv)],
      'redo_dormant_fraction': [ref_redo_dormant_fraction([d, c], 0.1) for d, c in zip(dense, conv)],
      'feature_norm': [ref_feature_norm(c) for c in conv],
  }
  for name, values in want.items():
    assert got[name].dtype == jnp.float32, name
    np.testing.assert_allclose(np.asarray(got[name]), values, rtol=1e-5, atol=1e-6, err_msg=name)
  assert want['redo_dormant_fraction'][1] == pytest.approx(4 / 14)
  assert want['redo_dormant_fraction'][2] == pytest.approx(5 / 14)
