"""Checks ddl.learners.upgd against a numpy loop of the published UPGD equations (first order,
global scaling), per weight, t counting updates from 1:

  u <- b u + (1 - b)(-g w);  u_hat = u / (1 - b^t);  s = sigmoid(u_hat / max_all u_hat)
  protecting:      w <- (1 - a l) w - a (g + xi)(1 - s)
  non-protecting:  w <- (1 - a l) w - a (g + xi (1 - s))

The noise xi of step t is reproduced exactly: N(0, 1) drawn with that step's key over the raveled
tree (`ravel_pytree` order), times sigma.
"""
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddl.learners import cbp as cbp_lib
from ddl.learners import hyper
from ddl.learners import upgd as upgd_lib

ATOL = 1e-6
RTOL = 1e-5
N_STEPS = 5
LR, BETA, SIGMA, WD = 0.1, 0.9, 0.3, 0.01


def make_params():
  rng = np.random.default_rng(0)
  return {'w': rng.normal(size=(3, 2)).astype(np.float32), 'b': rng.normal(size=(2,)).astype(np.float32)}


def make_grads(n_steps=N_STEPS, seed=1):
  rng = np.random.default_rng(seed)
  return [{'w': rng.normal(size=(3, 2)).astype(np.float32), 'b': rng.normal(size=(2,)).astype(np.float32)}
          for _ in range(n_steps)]


def step_keys(n_steps=N_STEPS, seed=5):
  return list(jax.random.split(jax.random.key(seed), n_steps))


def to_jax(tree):
  return jax.tree.map(jnp.asarray, tree)


def unit_noise(key, like):
  """What the transform draws for one step, before the sigma scale: one N(0, 1) draw over the
  raveled tree, unraveled. Returned as float64 numpy."""
  flat, unravel = jax.flatten_util.ravel_pytree(to_jax(like))
  xi = unravel(jax.random.normal(key, flat.shape, flat.dtype))
  return {k: np.asarray(v, np.float64) for k, v in xi.items()}


def run_optax(opt, params, grads, keys):
  params = to_jax(params)
  state = opt.init(params)
  history = []
  for g, k in zip(grads, keys):
    updates, state = opt.update(to_jax(g), state, params, key=k)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history, state


def ref_upgd(params, grads, keys, lr=LR, beta=BETA, sigma=SIGMA, wd=WD, protect=True,
             max_of_raw=True):
  """Plain numpy loop of the equations, float64."""
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  u = {k: np.zeros_like(v) for k, v in w.items()}
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  history, scales = [], []
  for t, (g, key) in enumerate(zip(grads, keys), start=1):
    g = {k: np.asarray(v, np.float64) for k, v in g.items()}
    xi = {k: sigma * v for k, v in unit_noise(key, params).items()}
    u = {k: beta * u[k] + (1 - beta) * (-g[k] * w[k]) for k in w}
    u_hat = {k: u[k] / (1 - beta**t) for k in w}
    scale = max(np.max(v) for v in (u if max_of_raw else u_hat).values())
    scales.append(scale)
    s = {k: sigmoid(u_hat[k] / scale) for k in w}
    if protect:
      w = {k: (1 - lr * wd) * w[k] - lr * (g[k] + xi[k]) * (1 - s[k]) for k in w}
    else:
      w = {k: (1 - lr * wd) * w[k] - lr * (g[k] + xi[k] * (1 - s[k])) for k in w}
    history.append(w)
  return history, u, scales


def assert_history_close(got, want, atol=ATOL, rtol=RTOL):
  assert len(got) == len(want)
  for step, (g, w) in enumerate(zip(got, want)):
    assert set(g) == set(w)
    for k in w:
      np.testing.assert_allclose(np.asarray(g[k]), w[k], atol=atol, rtol=rtol, err_msg=f'step {step}, leaf {k}')


def assert_trees_equal(a, b):
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


# --- 1. against the numpy loop ---


@pytest.mark.parametrize('protect', [True, False])
@pytest.mark.parametrize('max_of_raw', [False, True])
def test_matches_numpy_reference(protect, max_of_raw):
  params, grads, keys = make_params(), make_grads(), step_keys()
  opt = upgd_lib.upgd(LR, utility_decay=BETA, noise_std=SIGMA, weight_decay=WD, protect=protect,
                      max_of_raw_utility=max_of_raw)
  got, state = run_optax(opt, params, grads, keys)
  want, want_u, scales = ref_upgd(params, grads, keys, protect=protect, max_of_raw=max_of_raw)
  assert min(scales) > 0   # the usual regime: some weight has positive utility
  assert_history_close(got, want)
  for k in want_u:
    np.testing.assert_allclose(np.asarray(state.utility[k]), want_u[k], atol=ATOL, rtol=RTOL)
  assert state.count.dtype == jnp.int32 and int(state.count) == N_STEPS
  # The two normalisations differ here (t small, 1 - b^t far from 1): the test tells them apart.
  other, _, _ = ref_upgd(params, grads, keys, protect=protect, max_of_raw=not max_of_raw)
  assert not np.allclose(other[-1]['w'], want[-1]['w'], atol=1e-4)


def test_jit_matches_numpy_reference():
  params, grads, keys = make_params(), make_grads(), step_keys()
  opt = upgd_lib.upgd(LR, utility_decay=BETA, noise_std=SIGMA, weight_decay=WD)
  update = jax.jit(lambda g, s, p, k: opt.update(g, s, p, key=k))
  p = to_jax(params)
  s = opt.init(p)
  got = []
  for g, k in zip(grads, keys):
    u, s = update(to_jax(g), s, p, k)
    p = optax.apply_updates(p, u)
    got.append(p)
  assert_history_close(got, ref_upgd(params, grads, keys)[0])


@pytest.mark.parametrize('protect', [True, False])
def test_non_positive_max_utility_flips_scaling_as_upstream(protect):
  # Gradients aligned with the weights (g = c w, c > 0): every utility -g w < 0, so max u_hat < 0
  # and u_hat / max u_hat > 0 is largest for the LEAST useful weights. No epsilon, as upstream.
  params = make_params()
  grads = [{k: (0.5 + t) * v for k, v in params.items()} for t in range(3)]
  keys = step_keys(3)
  opt = upgd_lib.upgd(LR, utility_decay=BETA, noise_std=SIGMA, weight_decay=WD, protect=protect)
  got, state = run_optax(opt, params, grads, keys)
  want, _, scales = ref_upgd(params, grads, keys, protect=protect)
  assert max(scales) < 0
  assert_history_close(got, want)
  # The weight with the most negative utility gets the smallest gate 1 - s.
  u = np.concatenate([np.asarray(state.utility[k]).ravel() for k in ('b', 'w')])
  gate = 1 - 1 / (1 + np.exp(-u / u.max()))
  assert np.argmin(gate) == np.argmin(u)


def test_zero_noise_protecting_scales_the_gradient():
  # One step from zero utility: u_hat = -g w, so the update is -a l w - a g (1 - s) exactly.
  params, grads = make_params(), make_grads(1)
  opt = upgd_lib.upgd(LR, utility_decay=BETA, noise_std=0.0, weight_decay=WD, max_of_raw_utility=False)
  p, g = to_jax(params), to_jax(grads[0])
  updates, _ = opt.update(g, opt.init(p), p, key=jax.random.key(0))
  u_hat = {k: -grads[0][k].astype(np.float64) * params[k] for k in params}
  m = max(v.max() for v in u_hat.values())
  for k in params:
    s = 1 / (1 + np.exp(-u_hat[k] / m))
    want = -LR * WD * params[k] - LR * grads[0][k] * (1 - s)
    np.testing.assert_allclose(np.asarray(updates[k]), want, atol=ATOL, rtol=RTOL)


# --- 2. randomness: per-seed keys under vmap ---


def one_update(key, opt=None):
  opt = opt or upgd_lib.upgd(LR, noise_std=SIGMA)
  p, g = to_jax(make_params()), to_jax(make_grads(1)[0])
  return opt.update(g, opt.init(p), p, key=key)[0]


def test_vmapped_seeds_draw_different_noise():
  keys = jax.random.split(jax.random.key(3), 2)
  batched = jax.jit(jax.vmap(one_update))(keys)
  for k in batched:
    assert not np.allclose(np.asarray(batched[k][0]), np.asarray(batched[k][1])), k
  # Same key twice: identical updates, equal to the unbatched update with that key.
  same = jax.vmap(one_update)(jnp.stack([keys[0], keys[0]]))
  single = one_update(keys[0])
  for k in same:
    np.testing.assert_array_equal(np.asarray(same[k][0]), np.asarray(same[k][1]))
    np.testing.assert_allclose(np.asarray(same[k][0]), np.asarray(single[k]), atol=ATOL, rtol=RTOL)


def test_noise_is_the_keyed_draw():
  # Non-protecting, a = 1, l = 0, first step: update = -(g + xi (1 - s)), so the noise can be read
  # off as xi = -(update + g) / (1 - s) and must be sigma times the keyed N(0, 1) draw.
  params, grads = make_params(), make_grads(1)
  key = jax.random.key(9)
  sigma = 0.7
  opt = upgd_lib.upgd(1.0, utility_decay=BETA, noise_std=sigma, weight_decay=0.0, protect=False, max_of_raw_utility=False)
  p, g = to_jax(params), to_jax(grads[0])
  updates, _ = opt.update(g, opt.init(p), p, key=key)
  u_hat = {k: -grads[0][k].astype(np.float64) * params[k] for k in params}
  m = max(v.max() for v in u_hat.values())
  xi = unit_noise(key, params)
  for k in params:
    gate = 1 - 1 / (1 + np.exp(-u_hat[k] / m))
    got_xi = -(np.asarray(updates[k], np.float64) + grads[0][k]) / gate
    np.testing.assert_allclose(got_xi, sigma * xi[k], atol=1e-5, rtol=1e-4)
  # Every leaf gets its own slice of the draw (not one shared vector).
  assert not np.allclose(xi['w'].ravel()[:2], xi['b'])


# --- 3. traced hyperparameters ---


SWEEP = dict(learning_rate=np.array([0.1, 0.01, 0.3], np.float32),
             utility_decay=np.array([0.9, 0.999, 0.5], np.float32),
             noise_std=np.array([0.3, 0.0, 0.05], np.float32),
             weight_decay=np.array([0.01, 0.0, 0.1], np.float32))


def _run(opt, params, grads, keys):
  state = opt.init(params)
  for g, k in zip(grads, keys):
    updates, state = opt.update(g, state, params, key=k)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize('protect', [True, False])
def test_traced_hyperparameters_under_vmap(protect):
  params, grads, keys = to_jax(make_params()), [to_jax(g) for g in make_grads(3)], step_keys(3)

  @jax.jit
  @jax.vmap
  def sweep(lr, beta, sigma, wd):
    return _run(upgd_lib.upgd(lr, utility_decay=beta, noise_std=sigma, weight_decay=wd, protect=protect),
                params, grads, keys)

  batched = sweep(*(SWEEP[n] for n in ('learning_rate', 'utility_decay', 'noise_std', 'weight_decay')))
  for i in range(3):
    opt = upgd_lib.upgd(float(SWEEP['learning_rate'][i]), utility_decay=float(SWEEP['utility_decay'][i]),
                        noise_std=float(SWEEP['noise_std'][i]), weight_decay=float(SWEEP['weight_decay'][i]),
                        protect=protect)
    want = _run(opt, params, grads, keys)
    for k in want:
      np.testing.assert_allclose(np.asarray(batched[k][i]), np.asarray(want[k]), atol=ATOL, rtol=RTOL,
                                 err_msg=f'sweep point {i}, leaf {k}')
  assert not np.allclose(np.asarray(batched['w'][0]), np.asarray(batched['w'][1]))


# --- 4. bad inputs ---


def test_missing_key_raises():
  opt = upgd_lib.upgd(LR)
  p = to_jax(make_params())
  with pytest.raises(ValueError, match='key=') as info:
    opt.update(p, opt.init(p), p)
  assert 'PRNG key' in str(info.value)
  # Also inside a chain (extra arguments are forwarded; none given).
  chained = optax.chain(optax.identity(), opt)
  with pytest.raises(ValueError, match='PRNG key'):
    chained.update(p, chained.init(p), p)


def test_missing_params_raises():
  opt = upgd_lib.upgd(LR)
  p = to_jax(make_params())
  with pytest.raises(ValueError, match='parameters'):
    opt.update(p, opt.init(p), key=jax.random.key(0))


def test_traced_protect_is_rejected():
  with pytest.raises(TypeError, match='protect'):
    upgd_lib.upgd(LR, protect=jnp.asarray(True))


# --- 5. declarations and state layout ---


def test_hypers():
  by_name = {h.name: h for h in upgd_lib.HYPERS}
  assert set(by_name) == {'utility_decay', 'upgd_noise', 'upgd_weight_decay', 'protect', 'max_of_raw_utility'}
  assert {h.name for h in hyper.static(upgd_lib.HYPERS)} == {'protect', 'max_of_raw_utility'}
  assert by_name['max_of_raw_utility'].default is True   # the official code's normalisation
  assert by_name['utility_decay'].default == 0.999 and by_name['upgd_noise'].default == 1e-3
  assert by_name['upgd_weight_decay'].default == 1e-3 and by_name['protect'].default is True
  assert by_name['utility_decay'].problem(1.0) and by_name['utility_decay'].problem(0.0) is None
  assert by_name['upgd_noise'].problem(-1e-3) and by_name['protect'].problem('yes')
  assert all(h.doc for h in upgd_lib.HYPERS)


def test_cbp_optimizer_reset_finds_the_utility():
  # The utility is params-shaped: cbp.reset_optimizer_units zeroes the replaced units' entries
  # (incoming column, bias, outgoing row) and leaves the step count alone.
  rng = np.random.default_rng(2)
  params = to_jax({'dense_0': {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=(4,))},
                   'dense_1': {'kernel': rng.normal(size=(4, 2)), 'bias': rng.normal(size=(2,))}})
  params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  grads = jax.tree.map(lambda x: 0.5 * x + 0.1, params)
  opt = optax.chain(optax.identity(), upgd_lib.upgd(LR, utility_decay=BETA))
  _, state = opt.update(grads, opt.init(params), params, key=jax.random.key(0))
  layer = cbp_lib.UnitLayer('h', ('dense_0', 'kernel'), (('dense_1', 'kernel'),),
                            jax.nn.initializers.lecun_normal(), bias=('dense_0', 'bias'))
  replaced = jnp.array([False, True, False, False])
  pick = cbp_lib.Pick(replaced=replaced, index=jnp.array([1], jnp.int32), valid=jnp.array([True]),
                      centre=jnp.zeros(4), key=jax.random.key(1))
  reset = cbp_lib.reset_optimizer_units((layer,), params, state, (pick,))
  before, after = state[1].utility, reset[1].utility
  assert int(reset[1].count) == 1
  np.testing.assert_array_equal(np.asarray(after['dense_0']['kernel'][:, 1]), 0)
  np.testing.assert_array_equal(np.asarray(after['dense_0']['bias'][1]), 0)
  np.testing.assert_array_equal(np.asarray(after['dense_1']['kernel'][1]), 0)
  keep = np.array([0, 2, 3])
  np.testing.assert_array_equal(np.asarray(after['dense_0']['kernel'][:, keep]),
                                np.asarray(before['dense_0']['kernel'][:, keep]))
  np.testing.assert_array_equal(np.asarray(after['dense_1']['bias']), np.asarray(before['dense_1']['bias']))
  assert np.all(np.asarray(before['dense_0']['kernel'][:, 1]) != 0)


def test_all_zero_utility_gives_half_gates_not_nan():
  # A zeroed head blocks every gradient but its own, whose weights are 0: all utilities are 0.
  params = {'w': jnp.zeros((3, 2)), 'b': jnp.zeros((2,))}
  grads = {'w': jnp.ones((3, 2)), 'b': jnp.ones((2,))}
  opt = upgd_lib.upgd(LR, noise_std=0.0, weight_decay=0.0)
  updates, _ = opt.update(grads, opt.init(params), params, key=jax.random.key(0))
  for k in params:
    np.testing.assert_allclose(np.asarray(updates[k]), -LR * 0.5 * np.asarray(grads[k]), rtol=1e-6)
