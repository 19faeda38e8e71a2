"""Level 2 of dynamic deep learning on networks, against plain numpy loops of the equations:

  MetaOptimize-hg (AdamW base, Lion meta; Sharifnassab et al. 2025), β per network, layer, weight:
      m, v Adam moments; u = m̂/(√v̂+ε) + κw; meta_g = Σ_block h g; μ = b μ + (1−b) meta_g;
      β = clip(β + η sign(c μ + (1−c) meta_g)); α = e^β; w −= α u; h = γ(1 − ακ) h + α g/(√v̂+ε)
  Network IDBD: the IDBD equations with δx = −g and x² = the Gauss-Newton diagonal Σ_k c_k (∂z_k/∂w)²
      (c = p(1 − p) for softmax cross-entropy).

Plus vmap over seeds, resets keeping the learned step sizes, and the step-size diagnostics.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddl import config as config_lib
from ddl import experiments
from ddl import nets
from ddl import platform_defaults
from ddl.experiments import evaluation
from ddl.learners import idbd as idbd_lib
from ddl.learners import learner as learner_lib
from ddl.learners import metaoptimize as mo
from ddl.learners.method import map_reset_state


# --- MetaOptimize ---


def metaoptimize_ref(grads_seq, params, eta, alpha0, blocks, gamma=0.9999, b1=0.9, b2=0.999, meta_b1=0.99,
                     meta_c1=0.9, kappa=0.0, eps=1e-8, beta_range=(np.log(1e-8), 0.0)):
  """Numpy loop (float64) over named arrays {layer/leaf: array}; returns params and β after each step."""
  names = sorted(params)
  layer = lambda n: n.split('/')[0]
  w = {n: np.asarray(params[n], np.float64) for n in names}
  m = {n: np.zeros_like(w[n]) for n in names}
  v, h = dict(m), dict(m)
  if blocks == 'weight':
    beta = {n: np.full_like(w[n], np.log(alpha0)) for n in names}
    mom = {n: np.zeros_like(w[n]) for n in names}
  else:
    keys = sorted({layer(n) for n in names}) if blocks == 'layer' else ['all']
    beta, mom = {k: np.log(alpha0) for k in keys}, {k: 0.0 for k in keys}
  block_of = lambda n: n if blocks == 'weight' else (layer(n) if blocks == 'layer' else 'all')
  out = []
  for t, g in enumerate(grads_seq, 1):
    g = {n: np.asarray(g[n], np.float64) for n in names}
    m = {n: b1 * m[n] + (1 - b1) * g[n] for n in names}
    v = {n: b2 * v[n] + (1 - b2) * g[n] ** 2 for n in names}
    root = {n: np.sqrt(v[n] / (1 - b2 ** t)) + eps for n in names}
    u = {n: m[n] / (1 - b1 ** t) / root[n] + kappa * w[n] for n in names}
    meta = {}
    for n in names:
      meta[block_of(n)] = meta.get(block_of(n), 0.0) + (h[n] * g[n] if blocks == 'weight' else np.sum(h[n] * g[n]))
    for k in meta:
      mom[k] = meta_b1 * mom[k] + (1 - meta_b1) * meta[k]
      beta[k] = np.clip(beta[k] + eta * np.sign(meta_c1 * mom[k] + (1 - meta_c1) * meta[k]), *beta_range)
    for n in names:
      a = np.exp(beta[block_of(n)])
      w[n] = w[n] - a * u[n]
      h[n] = gamma * (1 - a * kappa) * h[n] + a * g[n] / root[n]
    out.append(({n: w[n].copy() for n in names}, {k: np.copy(b) for k, b in beta.items()}))
  return out


def named(tree):
  return {'/'.join(k.key for k in path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize('blocks', mo.BLOCKS)
def test_metaoptimize_matches_numpy(blocks):
  rng = np.random.default_rng(0)
  params = {'hidden': {'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                       'bias': jnp.zeros(4, jnp.float32)},
            'output': {'kernel': jnp.asarray(rng.normal(size=(4, 1)), jnp.float32)}}
  # gradients with a persistent direction plus noise, so the meta gradient has a sign to follow
  drift = jax.tree.map(lambda p: np.asarray(rng.normal(size=p.shape)), params)
  grads_seq = [jax.tree.map(lambda d: jnp.asarray(d + 0.3 * rng.normal(size=d.shape), jnp.float32), drift)
               for _ in range(12)]
  eta, alpha0, kappa = 0.1, 0.01, 0.1
  opt = mo.metaoptimize(eta, alpha0, blocks=blocks, decoupled_weight_decay=kappa, beta_max=np.log(0.02))
  state = opt.init(params)
  want = metaoptimize_ref([named(g) for g in grads_seq], named(params), eta, alpha0, blocks, kappa=kappa,
                          beta_range=(np.log(1e-8), np.log(0.02)))
  p = params
  for t, g in enumerate(grads_seq):
    updates, state = opt.update(g, state, p)
    p = optax.apply_updates(p, updates)
    w, beta = want[t]
    for n, value in named(p).items():
      np.testing.assert_allclose(value, w[n], rtol=1e-4, atol=1e-5, err_msg=f'{n}, step {t}')
  got_beta = named(state.beta) if blocks != 'network' else {'all': np.asarray(state.beta)}
  for k, b in beta.items():
    np.testing.assert_allclose(got_beta[k], b, rtol=1e-5, atol=1e-6, err_msg=k)
  alphas = np.exp(np.concatenate([np.ravel(b) for b in beta.values()]))
  assert alphas.max() == pytest.approx(0.02, rel=1e-6)   # the upper clip bound
  assert np.ptp(np.log(alphas)) > 0 or blocks != 'weight'   # per-weight step sizes differ


def test_metaoptimize_reset_keeps_step_sizes():
  params = {'w': jnp.zeros(3)}
  opt = mo.metaoptimize(0.01, 0.01, blocks='weight')
  state = opt.update({'w': jnp.ones(3)}, opt.init(params), params)[1]
  state = opt.update({'w': jnp.ones(3)}, state, params)[1]
  zero = lambda t: jax.tree.map(jnp.zeros_like, t)
  out = map_reset_state((state,), params, zero, zero)[0]
  np.testing.assert_array_equal(np.asarray(out.beta['w']), np.asarray(state.beta['w']))
  assert np.all(np.asarray(out.beta['w']) > np.log(0.01))   # grew on a persistent gradient
  assert float(jnp.abs(out.h['w']).sum() + jnp.abs(out.mu['w']).sum() + jnp.abs(out.nu['w']).sum()) == 0.0


# --- network IDBD: curvature and the update ---


def mlp_learner(name='idbd', loss='half_mse', outputs=1, estimator='sketch', hidden=(4,)):
  config = config_lib.base_config()
  config.optimizer.name = name
  config.idbd.curvature_estimator = estimator
  net = nets.MLP(hidden=hidden, outputs=outputs, activation='tanh')
  return learner_lib.Learner.of(net, loss, ('l2', name), config=config)


def jacobian_rows(learner, state, example):
  """(K, params) per-output gradients of one example, by jax.jacrev (independent of the learner's code)."""
  f = lambda p: learner.apply(p, example[None])[0].reshape(-1)
  return jax.jacrev(f)(state.params)


@pytest.mark.parametrize('loss,outputs', [('cross_entropy', 5), ('mse', 3), ('half_mse', 1)])
def test_curvature_is_the_gauss_newton_diagonal(loss, outputs):
  learner = mlp_learner(loss=loss, outputs=outputs, estimator='exact')
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 6)), jnp.float32)
  state = learner.init(jax.random.key(0), x[:1], {})
  got = learner.curvature(state, x, jax.random.key(1))
  want = jax.tree.map(jnp.zeros_like, state.params)
  for example in x:
    z = np.asarray(learner.apply(state.params, example[None])[0]).reshape(-1)
    if loss == 'cross_entropy':
      p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
      c = p * (1 - p)
    else:
      c = np.full(outputs, (2.0 if loss == 'mse' else 1.0) / outputs)
    rows = jacobian_rows(learner, state, example)
    want = jax.tree.map(lambda acc, r: acc + jnp.tensordot(jnp.asarray(c), r ** 2, axes=1) / len(x), want, rows)
  for n, value in named(got).items():
    np.testing.assert_allclose(value, named(want)[n], rtol=1e-4, atol=1e-7, err_msg=n)
  if outputs == 1:   # the sketch is exact for one output
    sketch = mlp_learner(loss=loss, outputs=outputs).curvature(state, x, jax.random.key(2))
    for n, value in named(sketch).items():
      np.testing.assert_allclose(value, named(got)[n], rtol=1e-5, atol=1e-8, err_msg=n)


def test_curvature_sketch_is_unbiased():
  learner, exact = mlp_learner(loss='cross_entropy', outputs=4), mlp_learner(loss='cross_entropy', outputs=4,
                                                                          estimator='exact')
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6)), jnp.float32)
  state = learner.init(jax.random.key(0), x[:1], {})
  want = named(exact.curvature(state, x, jax.random.key(0)))
  draws = jax.vmap(lambda k: learner.curvature(state, x, k))(jax.random.split(jax.random.key(3), 4000))
  mean = {n: v.mean(0) for n, v in named(draws).items()}
  one = {n: v[0] for n, v in named(draws).items()}
  k = 'hidden_0/kernel'
  assert np.abs(one[k] - want[k]).max() > 0.05 * np.abs(want[k]).max()   # one draw is noisy ...
  np.testing.assert_allclose(mean[k], want[k], rtol=0.1, atol=0.02 * np.abs(want[k]).max())  # ... the mean is not


def test_network_idbd_matches_numpy_backprop():
  """IDBD on a 6-4-1 tanh network, batch 1, half MSE: a numpy loop with hand-written backprop."""
  learner = mlp_learner('idbd', hidden=(4,))
  rng = np.random.default_rng(3)
  x = rng.normal(size=(8, 6)).astype(np.float32)
  y = np.sin(x[:, 0]) + x[:, 1]
  theta, alpha0 = 0.5, 0.05
  state = learner.init(jax.random.key(0), jnp.asarray(x[:1]), dict(meta_step_size=theta, initial_step_size=alpha0))
  p = {n: np.asarray(v, np.float64) for n, v in named(state.params).items()}
  names = sorted(p)
  beta = {n: np.full_like(p[n], np.log(alpha0)) for n in names}
  h = {n: np.zeros_like(p[n]) for n in names}
  step = jax.jit(learner.step)
  for t in range(len(x)):
    state, _ = step(state, jnp.asarray(x[t:t + 1]), jnp.asarray(y[t:t + 1]), jax.random.key(t))
    pre = x[t] @ p['hidden_0/kernel'] + p['hidden_0/bias']
    a = np.tanh(pre)
    out = a @ p['output/kernel'][:, 0] + p['output/bias'][0]
    delta = y[t] - out
    back = p['output/kernel'][:, 0] * (1 - a ** 2)          # ∂y/∂pre
    dy = {'output/kernel': a[:, None], 'output/bias': np.ones(1),
          'hidden_0/kernel': np.outer(x[t], back), 'hidden_0/bias': back}   # ∂y/∂w
    for n in names:
      dx = delta * dy[n]                                     # δ x = −g
      beta[n] = np.clip(beta[n] + theta * dx * h[n], -10, 2)
      alpha = np.exp(beta[n])
      p[n] = p[n] + alpha * dx
      h[n] = h[n] * np.maximum(1 - alpha * dy[n] ** 2, 0) + alpha * dx
    for n, value in named(state.params).items():
      np.testing.assert_allclose(value, p[n], rtol=1e-4, atol=1e-5, err_msg=f'{n}, step {t}')
  got_alpha = named(idbd_lib.step_sizes(idbd_lib.find_state(state.opt_state)))
  for n in names:
    np.testing.assert_allclose(got_alpha[n], np.exp(beta[n]), rtol=1e-4, err_msg=n)
  assert np.ptp(np.log(got_alpha['hidden_0/kernel'])) > 0.01   # the hidden layer's step sizes adapt too


# --- vmap over seeds, step-size diagnostics ---


@pytest.mark.parametrize('name', ['idbd', 'autostep', 'metaoptimize'])
def test_network_step_size_learners_vmap_over_seeds(name):
  learner = mlp_learner(name, loss='cross_entropy', outputs=3)
  rng = np.random.default_rng(4)
  xs = jnp.asarray(rng.normal(size=(3, 6, 5)), jnp.float32)
  ys = jnp.asarray(rng.integers(0, 3, size=(3, 6)))
  hparams = dict(meta_step_size=0.01, initial_step_size=0.05, learning_rate=0.01)

  def run(key, x, y):
    state = learner.init(key, x[:1], hparams)
    body = lambda s, i: (learner.step(s, x[i][None], y[i][None], jax.random.fold_in(key, i))[0], None)
    return jax.lax.scan(body, state, jnp.arange(x.shape[0]))[0]

  keys = jax.random.split(jax.random.key(5), 3)
  batched = jax.jit(jax.vmap(run))(keys, xs, ys)
  for i in range(3):
    single = jax.jit(run)(keys[i], xs[i], ys[i])
    for n, value in named(single.params).items():
      np.testing.assert_allclose(named(batched.params)[n][i], value, rtol=1e-5, atol=1e-6, err_msg=n)
  alpha, per_weight = learner.step_sizes(jax.tree.map(lambda a: a[0], batched))
  assert per_weight == (name != 'metaoptimize')
  initial = 0.01 if name == 'metaoptimize' else 0.05
  assert not np.allclose(np.asarray(jax.tree.leaves(alpha)[0]), initial)   # the step sizes moved


def test_step_size_diagnostics_per_layer():
  learner = mlp_learner('idbd')
  x = jnp.asarray(np.random.default_rng(6).normal(size=(4, 6)), jnp.float32)
  state = learner.init(jax.random.key(0), x[:1], dict(initial_step_size=0.05))
  found = idbd_lib.find_state(state.opt_state)
  beta = jax.tree.map(lambda b: b + jnp.log(2.0) * (jnp.arange(b.size).reshape(b.shape) % 2), found.beta)
  state = state.replace(opt_state=jax.tree.map(
      lambda s: s._replace(beta=beta) if isinstance(s, idbd_lib.IDBDState) else s, state.opt_state,
      is_leaf=lambda s: isinstance(s, idbd_lib.IDBDState)))
  options = config_lib.base_config().diagnostics
  options.plasticity, options.hessian_iterations = False, 0
  values = evaluation.diagnose(learner, state, x, jnp.zeros(4), jax.random.key(0), options)
  for layer in ('hidden_0', 'output'):
    alphas = np.concatenate([np.ravel(np.exp(np.asarray(b))) for b in jax.tree.leaves(beta[layer])])
    assert float(values[f'step_size_{layer}']) == pytest.approx(alphas.mean(), rel=1e-5)
    assert float(values[f'step_size_spread_{layer}']) == pytest.approx(alphas.std(), rel=1e-4)
  sgd = learner_lib.Learner.of(learner.network, 'half_mse', ('l2', 'sgd'), config=config_lib.base_config())
  plain = evaluation.diagnose(sgd, sgd.init(jax.random.key(0), x[:1], {}), x, jnp.zeros(4), jax.random.key(0), options)
  assert not any(k.startswith('step_size') for k in plain)


# --- every supervised experiment takes the dynamic learners as variants ---

SUPERVISED = ('slowly_changing_regression', 'permuted_digits', 'permuted_mnist', 'random_label_digits', 'imagenet',
              'cifar100')


@pytest.mark.parametrize('name', SUPERVISED)
def test_every_supervised_config_takes_the_step_size_preset_and_growth(name):
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  config = platform_defaults.resolve(load_config(name, 'smoke,step_sizes'))   # as a launch does
  assert {'idbd', 'autostep', 'metaoptimize'} <= set(config.variants)
  config_lib.validate(config, experiments.get(config.experiment))
  config.variants = {'grow': dict(growth=dict(initial_units=1))}
  if name in ('imagenet', 'cifar100'):   # conv nets: no growing layer, one line says so
    with pytest.raises(config_lib.ConfigError, match='growth needs an MLP'):
      config_lib.validate(config, experiments.get(config.experiment))
  else:
    config_lib.validate(config, experiments.get(config.experiment))


def test_permuted_digits_runs_growth_with_autostep(tmp_path):
  from conftest import cheap_diagnostics, load_config  # pylint: disable=g-import-not-at-top
  from ddl import run as run_lib  # pylint: disable=g-import-not-at-top
  import csv  # pylint: disable=g-import-not-at-top
  config = load_config('permuted_digits', 'smoke,bp')
  config.variants = {'grow_autostep': dict(growth=dict(initial_units=10), optimizer=dict(name='autostep'),
                                           meta_step_size=0.01, initial_step_size=0.01)}
  config.num_seeds = 2
  run_lib.run(cheap_diagnostics(config), str(tmp_path), figures=False)
  with open(tmp_path / 'metrics.csv') as f:
    rows = [r for r in csv.DictReader(f)]
  values = {(r['variant'], r['metric']): float(r['value']) for r in rows}
  assert 0 < values[("grow_autostep", "backbone_units")] <= config.network.hidden
  assert values[('grow_autostep', 'step_size_output')] != pytest.approx(0.01)
  assert ('grow_autostep', 'step_size_spread_fringe_output') in values
  assert all(np.isfinite(v) for v in values.values())


@pytest.mark.parametrize('config_name,variant,match', [
    ('dynamic_scr', dict(optimizer=dict(name='metaoptimize'), metaoptimize=dict(blocks='unit')),
     "variant\\(s\\) v: metaoptimize.blocks: 'unit' is not known"),
    ('dynamic_scr', dict(optimizer=dict(name='metaoptimize'), learning_rate=0.0), 'hparams.learning_rate: must be > 0'),
    ('dynamic_scr', dict(optimizer=dict(name='idbd'), meta_step_size=-1.0), 'hparams.meta_step_size: must be >= 0'),
    ('dynamic_scr', dict(optimizer=dict(name='rmsprop')), "variant\\(s\\) v: optimizer.name: 'rmsprop' is not known"),
    ('ant', dict(optimizer=dict(name='autostep')),
     "variant\\(s\\) v: autostep .* does not apply to experiment ppo: needs one prediction to differentiate"),
])
def test_bad_step_size_settings_in_a_variant_name_the_key(config_name, variant, match):
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  config = load_config(config_name, 'smoke')
  config.variants = {'v': variant}
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    config_lib.validate(config, experiments.get(config.experiment))
  assert '\n' not in str(e.value)
