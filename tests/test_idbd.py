"""Checks ddl.learners.idbd against plain numpy loops of the equations on a linear learner
y = w.x (+ b), δ = y* − y, per example:

  IDBD (Sutton 1992):   β += θ δ x h;  α = e^β;  w += α δ x;  h = h [1 − α x²]⁺ + α δ x
  Autostep (Mahmood et al. 2012):
      v = max(|δxh|, v + α x² (|δxh| − v) / τ);  α *= exp(μ δxh / v) where v > 0;
      α /= max(Σ α x², 1);  w += α δ x;  h = h (1 − α x²) + α δ x

(x² of a bias is 1), and the pieces around it: the learner's curvature and 'half_mse', vmap over
seeds and meta step sizes, config validation, and the tracking experiment's smoke run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config

from ddl import config as config_lib
from ddl import experiments
from ddl import nets
from ddl.learners import idbd as idbd_lib
from ddl.learners import learner as learner_lib
from ddl.learners.method import map_reset_state

N_IN, N_STEPS = 6, 8


def stream(seed=0, n_steps=N_STEPS, n_in=N_IN):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n_steps, n_in)) * 1.5
  y = x[:, :3] @ np.array([1.0, -1.0, 1.0]) + 0.1 * rng.normal(size=n_steps)
  return x.astype(np.float32), y.astype(np.float32)


def ref(x, y, theta, alpha0, autostep=False, tau=1e4, bias=True, beta_range=(-10., 2.)):
  """Numpy loop (float64) of the equations; the bias is a weight with input 1. Returns the
  weights, step sizes, h and v after each step, and whether [·]⁺ / M > 1 ever bound."""
  n = x.shape[1] + int(bias)
  w, beta, h, v = np.zeros(n), np.full(n, np.log(alpha0)), np.zeros(n), np.zeros(n)
  history, clipped, normalised = [], False, False
  for xt, yt in zip(x.astype(np.float64), y.astype(np.float64)):
    xt = np.append(xt, 1.0) if bias else xt
    delta = yt - w @ xt
    if not autostep:
      beta = np.clip(beta + theta * delta * xt * h, *beta_range)
      alpha = np.exp(beta)
      w = w + alpha * delta * xt
      clipped |= bool(np.any(1 - alpha * xt**2 < 0))
      h = h * np.maximum(1 - alpha * xt**2, 0) + alpha * delta * xt
    else:
      alpha = np.exp(beta)
      z = delta * xt * h
      v = np.maximum(np.abs(z), v + alpha * xt**2 * (np.abs(z) - v) / tau)
      alpha = np.where(v > 0, alpha * np.exp(theta * z / np.where(v > 0, v, 1)), alpha)
      m = max(np.sum(alpha * xt**2), 1.0)
      normalised |= m > 1
      beta = np.clip(np.log(alpha / m), *beta_range)
      alpha = np.exp(beta)
      w = w + alpha * delta * xt
      h = h * (1 - alpha * xt**2) + alpha * delta * xt
    history.append(dict(w=w.copy(), alpha=alpha.copy(), h=h.copy(), v=v.copy()))
  return history, clipped, normalised


def flat(tree, bias=True):
  """[kernel..., bias] of an MLP(hidden=(), outputs=1) tree as numpy."""
  k = np.asarray(tree['output']['kernel'])[:, 0]
  return np.append(k, np.asarray(tree['output']['bias'])) if bias else k


def optimizer_config(name):
  config = config_lib.base_config()
  config.optimizer.name = name
  return config


def make_learner(name, bias=True, tau=1e4):
  config = optimizer_config(name)
  config.idbd.autostep_tau = tau
  net = nets.MLP(hidden=(), outputs=1, weight_init='zeros', bias=bias)
  return learner_lib.Learner.of(net, 'half_mse', ('l2', name), config=config)


def run_learner(learner, x, y, hparams, key=0):
  state = learner.init(jax.random.key(key), jnp.zeros((1, x.shape[1])), hparams)
  step = jax.jit(learner.step)
  history = []
  for i in range(len(x)):
    state, _ = step(state, jnp.asarray(x[i:i + 1]), jnp.asarray(y[i:i + 1]), jax.random.key(i))
    history.append(state)
  return history


# --- 1. against the numpy loops ---


@pytest.mark.parametrize('bias', [True, False])
def test_idbd_learner_matches_numpy(bias):
  x, y = stream()
  theta, alpha0 = 0.05, 0.3   # large: beta moves visibly and [1 - alpha x^2]+ binds
  got = run_learner(make_learner('idbd', bias), x, y, dict(meta_step_size=theta, initial_step_size=alpha0))
  want, clipped, _ = ref(x, y, theta, alpha0, bias=bias)
  assert clipped
  for t, (g, r) in enumerate(zip(got, want)):
    s = idbd_lib.find_state(g.opt_state)
    np.testing.assert_allclose(flat(g.params, bias), r['w'], rtol=1e-4, atol=1e-5, err_msg=f'w, step {t}')
    np.testing.assert_allclose(flat(idbd_lib.step_sizes(s), bias), r['alpha'], rtol=1e-4, err_msg=f'alpha, step {t}')
    np.testing.assert_allclose(flat(s.h, bias), r['h'], rtol=1e-4, atol=1e-5, err_msg=f'h, step {t}')
  assert np.ptp(np.log(want[-1]['alpha'])) > 0.1   # the step sizes did adapt


@pytest.mark.parametrize('bias', [True, False])
def test_autostep_learner_matches_numpy(bias):
  x, y = stream(1)
  mu, alpha0, tau = 0.05, 0.2, 10.0   # sum alpha x^2 > 1 at first: the normaliser M binds
  got = run_learner(make_learner('autostep', bias, tau), x, y, dict(meta_step_size=mu, initial_step_size=alpha0))
  want, _, normalised = ref(x, y, mu, alpha0, autostep=True, tau=tau, bias=bias)
  assert normalised
  for t, (g, r) in enumerate(zip(got, want)):
    s = idbd_lib.find_state(g.opt_state)
    np.testing.assert_allclose(flat(g.params, bias), r['w'], rtol=1e-4, atol=1e-5, err_msg=f'w, step {t}')
    np.testing.assert_allclose(flat(idbd_lib.step_sizes(s), bias), r['alpha'], rtol=1e-4, err_msg=f'alpha, step {t}')
    np.testing.assert_allclose(flat(s.h, bias), r['h'], rtol=1e-4, atol=1e-5, err_msg=f'h, step {t}')
    np.testing.assert_allclose(flat(s.v, bias), r['v'], rtol=1e-4, atol=1e-6, err_msg=f'v, step {t}')


def test_transform_alone_matches_numpy_and_clips_beta():
  # The transform with gradients -δx and curvature x² built by hand; a tight beta range binds.
  x, y = stream(2)
  theta, alpha0, beta_range = 0.2, 0.1, (-2.35, -2.25)   # log 0.1 = -2.30
  opt = idbd_lib.idbd(theta, alpha0, beta_range=beta_range)
  params = {'w': jnp.zeros(N_IN)}
  state = opt.init(params)
  want, _, _ = ref(x, y, theta, alpha0, bias=False, beta_range=beta_range)
  hit = set()
  for t in range(N_STEPS):
    delta = y[t] - float(params['w'] @ x[t])
    updates, state = opt.update({'w': jnp.asarray(-delta * x[t])}, state, params,
                                curvature={'w': jnp.asarray(x[t] ** 2)})
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params['w']), want[t]['w'], rtol=1e-4, atol=1e-5)
    beta = np.asarray(state.beta['w'])
    assert beta.min() >= -2.35 - 1e-6 and beta.max() <= -2.25 + 1e-6
    hit |= {b for b in beta_range if np.any(np.isclose(beta, b))}
  assert hit == set(beta_range)   # both bounds bound at some step


def test_meta_step_size_zero_is_lms():
  x, y = stream(3)
  for name in idbd_lib.NAMES:
    got = run_learner(make_learner(name, bias=False), x, y, dict(meta_step_size=0.0, initial_step_size=0.02))
    lms = run_learner(make_learner('sgd', bias=False), x, y, dict(learning_rate=0.02))
    np.testing.assert_allclose(flat(got[-1].params, False), flat(lms[-1].params, False), rtol=1e-5, atol=1e-6)


def test_half_mse_gradient_is_minus_delta_x_and_curvature_is_x_squared():
  learner = make_learner('idbd')
  x, y = stream(4, n_steps=3)
  state = learner.init(jax.random.key(0), jnp.zeros((1, N_IN)), {})
  state = state.replace(params=jax.tree.map(lambda p: p + 0.3, state.params))
  xb, yb = jnp.asarray(x[:1]), jnp.asarray(y[:1])
  grads = jax.grad(lambda p: learner.objective(p, state, xb, yb)[0])(state.params)
  delta = y[0] - (x[0] @ np.full(N_IN, 0.3) + 0.3)
  np.testing.assert_allclose(flat(grads), -delta * np.append(x[0], 1.0), rtol=1e-5)
  curvature = learner.curvature(state, jnp.asarray(x), jax.random.key(0))   # a batch: the mean of the squares
  np.testing.assert_allclose(flat(curvature), np.append(np.mean(x**2, 0), 1.0), rtol=1e-5)


def test_missing_curvature_is_a_clear_error():
  opt = idbd_lib.idbd(0.01, 0.05)
  params = {'w': jnp.zeros(3)}
  with pytest.raises(ValueError, match='curvature'):
    opt.update({'w': jnp.ones(3)}, opt.init(params), params)


def test_reset_keeps_step_sizes_zeroes_traces():
  state = idbd_lib.IDBDState(beta={'w': jnp.full(3, -2.0)}, h={'w': jnp.ones(3)}, v={'w': jnp.ones(3)})
  zero = lambda t: jax.tree.map(jnp.zeros_like, t)
  out = map_reset_state((state,), {'w': jnp.zeros(3)}, zero, zero)[0]
  np.testing.assert_array_equal(np.asarray(out.beta['w']), -2.0)
  assert float(jnp.abs(out.h['w']).sum() + jnp.abs(out.v['w']).sum()) == 0.0


# --- 2. vmap over seeds and traced meta step sizes ---


@pytest.mark.parametrize('name', idbd_lib.NAMES)
def test_vmap_over_seeds_and_meta_step_sizes(name):
  learner = make_learner(name, tau=50.0)
  thetas = jnp.asarray([0.0, 0.01, 0.05, 0.05])
  xs = jnp.asarray(np.stack([stream(s)[0] for s in range(4)]))
  ys = jnp.asarray(np.stack([stream(s)[1] for s in range(4)]))

  def run(key, theta, x, y):
    state = learner.init(key, jnp.zeros((1, N_IN)), dict(meta_step_size=theta, initial_step_size=0.1))
    def body(state, i):
      return learner.step(state, x[i][None], y[i][None], jax.random.fold_in(key, i))[0], None
    return jax.lax.scan(body, state, jnp.arange(N_STEPS))[0]

  keys = jax.random.split(jax.random.key(0), 4)
  batched = jax.jit(jax.vmap(run))(keys, thetas, xs, ys)
  for i in range(4):
    single = jax.jit(run)(keys[i], thetas[i], xs[i], ys[i])
    want, _, _ = ref(np.asarray(xs[i]), np.asarray(ys[i]), float(thetas[i]), 0.1, autostep=name == 'autostep', tau=50.0)
    np.testing.assert_allclose(flat(jax.tree.map(lambda a: a[i], batched.params)), flat(single.params),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat(single.params), want[-1]['w'], rtol=1e-4, atol=1e-5)
  assert not np.allclose(flat(jax.tree.map(lambda a: a[0], batched.params)),
                         flat(jax.tree.map(lambda a: a[1], batched.params)))


# --- 3. config validation and the tracking experiment ---


def tracking_config(arg='smoke'):
  return load_config('idbd_tracking', arg)


@pytest.mark.parametrize('key,value,match', [
    ('meta_step_size', -0.001, 'hparams.meta_step_size: must be >= 0'),
    ('initial_step_size', 0.0, 'hparams.initial_step_size: must be > 0'),
    ('initial_step_size', -0.05, 'hparams.initial_step_size: must be > 0'),
])
def test_bad_meta_parameters_name_the_key(key, value, match):
  config = tracking_config()
  config.variants.idbd_0p001[key] = value
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    config_lib.validate(config, experiments.get(config.experiment))
  assert '\n' not in str(e.value) and 'idbd_0p001' in str(e.value)


def test_bad_tau_names_the_key():
  config = tracking_config()
  config.idbd.autostep_tau = -1.0
  with pytest.raises(config_lib.ConfigError, match='idbd.autostep_tau'):
    config_lib.validate(config, experiments.get(config.experiment))


def test_default_configs_validate():
  for arg in ('', 'fig4'):
    config = tracking_config(arg)
    config_lib.validate(config, experiments.get(config.experiment))


def test_tracking_signs_flip_one_per_period():
  config = tracking_config()
  group = config_lib.groups(config)[0]
  exp = experiments.get('tracking')(group.config, group)
  signs = jnp.asarray([1.0, -1.0, 1.0, 1.0, -1.0])
  x, y, after = exp.stream(jax.random.key(0), signs, jnp.asarray(0))
  period = config.data.flip_period
  implied = []   # the signs are recoverable per period by least squares on its 20 examples
  for p in range(config.chunk_size // period):
    xs, ys = np.asarray(x[p * period:(p + 1) * period]), np.asarray(y[p * period:(p + 1) * period])
    implied.append(np.linalg.lstsq(xs, ys, rcond=None)[0])
  implied = np.asarray(implied)
  np.testing.assert_allclose(implied[:, 5:], 0, atol=1e-4)
  np.testing.assert_allclose(implied[0, :5], np.asarray(signs), atol=1e-4)
  changes = np.sum(np.abs(np.diff(implied[:, :5], axis=0)) > 1, axis=1)
  assert np.all(changes == 1)
  assert np.sum(np.abs(np.asarray(after) - implied[-1, :5]) > 1) == 1   # the state: signs after the last flip


def test_tracking_smoke_run(tmp_path):
  from ddl import run as run_lib  # pylint: disable=g-import-not-at-top
  config = tracking_config()
  run_lib.run(config, str(tmp_path))
  from ddl import plotting  # pylint: disable=g-import-not-at-top
  table = plotting.read_metrics(str(tmp_path / 'metrics.csv'))
  for variant in config.variants:
    steps, error = table[(variant, 'error')]
    assert list(steps) == [200, 400, 600] and error.shape == (2, 3) and np.all(np.isfinite(error))
    if variant.startswith(('idbd', 'autostep')):
      rel = table[(variant, 'step_size_relevant')][1]
      irr = table[(variant, 'step_size_irrelevant')][1]
      assert np.all(rel > 0) and np.all(irr > 0)
    else:
      assert (variant, 'step_size_relevant') not in table
  for figure in ('sutton1992_fig3.png', 'sutton1992_fig4.png', 'error.png'):
    assert (tmp_path / 'figures' / figure).exists()
  errors = experiments.tracking.asymptotic_errors(str(tmp_path))
  assert set(errors) == set(config.variants) and errors['lms_0p04'].shape == (2,)
  text = experiments.tracking.summary(str(tmp_path))
  assert 'best fixed step size (LMS)' in text and 'idbd_0p001' in text
