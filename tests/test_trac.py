"""Checks ddl.learners.trac: TRAC around SGD and Adam against a numpy loop of the authors' PyTorch
algorithm (ComputationalRobotics/TRAC, package/src/trac_optimizer/trac.py) with scipy's erfi, in
float64 (the algorithm) and float32 (where theta - theta_ref is representable); vmap, jit and extra
arguments; the declaration; and the reset policy of its state."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special

from ddl.learners import method as method_lib
from ddl.learners import trac as trac_lib
from conftest import run_optax

RTOL = 1e-5
ATOL = 1e-7
N_STEPS = 10
LR = 0.1
BETAS = np.array(trac_lib.BETAS)


def make_params(scale=1.0):
  rng = np.random.default_rng(0)
  return {'w': scale * rng.normal(size=(3, 2)), 'b': np.zeros(2)}


def make_grads(n_steps=N_STEPS, aligned=False):
  # Random gradients (the first two anticorrelated: S turns negative at step 2, the clamp binds),
  # or gradients along one direction plus noise (h < 0: S grows).
  rng = np.random.default_rng(1)
  shapes = {k: v.shape for k, v in make_params().items()}
  common = {k: rng.normal(size=shape) for k, shape in shapes.items()}
  return [{k: (common[k] if aligned else 0) + rng.normal(size=shape) for k, shape in shapes.items()}
          for _ in range(n_steps)]


def to_jax(tree, dtype):
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


class NumpySGD:
  def __init__(self, lr=LR):
    self.lr = lr

  def __call__(self, g):
    return {k: -self.lr * v for k, v in g.items()}


class NumpyAdam:
  """optax.adam: bias-corrected moments, eps outside the square root."""

  def __init__(self, lr=LR, b1=0.9, b2=0.999, eps=1e-8):
    self.lr, self.b1, self.b2, self.eps, self.t, self.m, self.v = lr, b1, b2, eps, 0, None, None

  def __call__(self, g):
    if self.m is None:
      self.m, self.v = ({k: np.zeros_like(x) for k, x in g.items()} for _ in range(2))
    self.t += 1
    self.m = {k: self.b1 * self.m[k] + (1 - self.b1) * g[k] for k in g}
    self.v = {k: self.b2 * self.v[k] + (1 - self.b2) * g[k] ** 2 for k in g}
    return {k: -self.lr * (self.m[k] / (1 - self.b1 ** self.t)) / (np.sqrt(self.v[k] / (1 - self.b2 ** self.t))
                                                                   + self.eps) for k in g}


def ref_trac(params, grads, base, s_init=trac_lib.S_INIT, delta_mode='params', eps=trac_lib.EPS):
  """The authors' TRAC._step, one loop in float64 (theta_ref = the parameters at the first step)."""
  theta_ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
  theta = dict(theta_ref)
  s, sigma, v = np.zeros(len(BETAS)), np.full(len(BETAS), 1e-8), np.zeros(len(BETAS))
  delta = {k: np.zeros_like(x) for k, x in theta.items()}
  history, scales = [], []
  for g in grads:
    u = base(g)   # the base optimizer's step from theta with gradient g
    if delta_mode == 'params':
      delta = {k: (theta[k] - theta_ref[k]) / (s.sum() + eps) for k in theta}
    h = sum(float(np.vdot(g[k], delta[k])) for k in theta)
    delta = {k: delta[k] + u[k] for k in theta}
    v = BETAS ** 2 * v + h ** 2
    sigma = BETAS * sigma - h
    s = s_init / scipy.special.erfi(1 / np.sqrt(2)) * scipy.special.erfi(sigma / (np.sqrt(2) * np.sqrt(v) + eps))
    theta = {k: theta_ref[k] + max(s.sum(), 0.0) * delta[k] for k in theta}
    history.append(theta)
    scales.append(s.sum())
  return history, np.array(scales)


def assert_history_close(got, want, rtol=RTOL, atol=ATOL):
  assert len(got) == len(want)
  for step, (a, b) in enumerate(zip(got, want)):
    for k in b:
      np.testing.assert_allclose(np.asarray(a[k], np.float64), b[k], rtol=rtol, atol=atol, err_msg=f'step {step} {k}')


BASES = {'sgd': (lambda: optax.sgd(LR), NumpySGD), 'adam': (lambda: optax.adam(LR), NumpyAdam)}


def test_erfi_matches_scipy():
  x = np.concatenate([np.linspace(-4, 4, 801), [1e-9, -1e-6, 0.0]])
  np.testing.assert_allclose(np.asarray(trac_lib.erfi(jnp.asarray(x, jnp.float32))), scipy.special.erfi(x),
                             rtol=2e-6, atol=1e-12)
  with jax.enable_x64(True):
    x = np.linspace(-20, 20, 801)
    np.testing.assert_allclose(np.asarray(trac_lib.erfi(jnp.asarray(x))), scipy.special.erfi(x), rtol=1e-12)


@pytest.mark.parametrize('aligned', [False, True], ids=['random', 'aligned'])
@pytest.mark.parametrize('delta_mode', trac_lib.DELTA_MODES)
@pytest.mark.parametrize('base', sorted(BASES))
def test_matches_numpy_reference_float64(base, delta_mode, aligned):
  make_opt, make_ref = BASES[base]
  params, grads = make_params(), make_grads(aligned=aligned)
  want, scales = ref_trac(params, grads, make_ref(), delta_mode=delta_mode)
  # random: both sides of the clamp (S < 0 from step 2: 'params' mode freezes, 'state' mode goes
  # on); aligned: S grows (to 30 s_init in 10 steps).
  assert scales.min() < 0 < scales.max() if not aligned else scales[-1] > 20 * trac_lib.S_INIT
  with jax.enable_x64(True):
    got, state = run_optax(trac_lib.trac(make_opt(), delta=delta_mode), to_jax(params, jnp.float64),
                           [to_jax(g, jnp.float64) for g in grads])
    assert_history_close(got, want)
    np.testing.assert_allclose(float(jnp.sum(state.s)), scales[-1], rtol=RTOL)
    assert int(state.count) == N_STEPS
    jax.tree.map(np.testing.assert_array_equal, state.anchor.theta_ref, params)
  # The weights moved (at the first step), by far less than the base optimizer's step (S ~ 1e-7).
  moved = np.abs(want[0]['w'] - params['w']).max()
  assert 0 < moved < 1e-5 * LR * np.abs(grads[0]['w']).max()


@pytest.mark.parametrize('delta_mode', trac_lib.DELTA_MODES)
@pytest.mark.parametrize('base', sorted(BASES))
def test_matches_numpy_reference_float32(base, delta_mode):
  # Weights near 0, a large s_init and aligned gradients (S grows): S Delta is far above float32's
  # resolution of theta_ref.
  make_opt, make_ref = BASES[base]
  params, grads = make_params(scale=0.01), make_grads(aligned=True)
  want, _ = ref_trac(params, grads, make_ref(), s_init=0.1, delta_mode=delta_mode)
  got, _ = run_optax(trac_lib.trac(make_opt(), s_init=0.1, delta=delta_mode), to_jax(params, jnp.float32),
                     [to_jax(g, jnp.float32) for g in grads])
  assert_history_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('base', sorted(BASES))
def test_params_mode_freezes_at_theta_ref_once_the_scale_is_negative(base):
  # The authors' code (delta='params', clamp): the second gradient goes against the first step
  # (h_2 = <g_2, u_1> > 0), every sigma_j < 0, S < 0, the parameters return to theta_ref, the
  # recovered Delta is 0 from then on (h = 0, S constant) and nothing moves again, although the
  # last 6 gradients all point along the sum of the first 6 (descending along Delta lowers the
  # loss). 'state' mode keeps Delta, h goes on and S comes back above 0; clamp=False (the JAX
  # port) steps against Delta instead of freezing.
  make_opt, _ = BASES[base]
  params, grads = make_params(), make_grads(6)
  grads += [{k: sum(g[k] for g in grads) for k in params}] * 6
  with jax.enable_x64(True):
    p64, g64 = to_jax(params, jnp.float64), [to_jax(g, jnp.float64) for g in grads]
    opt = trac_lib.trac(make_opt())
    state, frozen_from, history = opt.init(p64), None, []
    p = p64
    for step, g in enumerate(g64):
      updates, state = opt.update(g, state, p)
      p = optax.apply_updates(p, updates)
      if frozen_from is None and float(jnp.sum(state.s)) < 0:
        frozen_from, frozen_scale = step, float(jnp.sum(state.s))
      history.append(p)
    assert frozen_from == 1
    for p in history[frozen_from:]:
      jax.tree.map(np.testing.assert_array_equal, p, params)
    assert float(jnp.sum(state.s)) == pytest.approx(frozen_scale, rel=1e-6) and float(trac_lib.scale(state)) == 0
    _, kept = run_optax(trac_lib.trac(make_opt(), delta='state'), p64, g64)
    assert float(trac_lib.scale(kept)) > 0
    unclamped, state = run_optax(trac_lib.trac(make_opt(), clamp=False), p64, g64)
    assert not np.allclose(np.asarray(unclamped[-1]['w']), params['w'], rtol=0, atol=1e-12)
    assert float(trac_lib.scale(state, clamp=False)) == float(jnp.sum(state.s))


def test_float32_params_mode_loses_small_displacements():
  # The authors' recovery of Delta from theta - theta_ref: with s_init = 1e-8 the displacement
  # S Delta ~ 1e-7 of an O(10) weight rounds away in float32 (the weight stays at theta_ref bit for
  # bit, its Delta reads 0), a zero-initialised bias keeps it. 'state' mode plays the same rounded
  # parameters but keeps Delta, the sum of the base steps, exactly.
  params = to_jax(make_params(scale=10), jnp.float32)
  grads = [to_jax(g, jnp.float32) for g in make_grads(3, aligned=True)]
  got, state = run_optax(trac_lib.trac(optax.sgd(LR)), params, grads)
  for step in got:
    np.testing.assert_array_equal(np.asarray(step['w']), np.asarray(params['w']))
  assert np.all(np.asarray(got[0]['b']) != 0)
  assert state.anchor.delta is None
  _, kept = run_optax(trac_lib.trac(optax.sgd(LR), delta='state'), params, grads)
  for k in params:
    np.testing.assert_allclose(np.asarray(kept.anchor.delta[k]), sum(-LR * np.asarray(g[k]) for g in grads),
                               rtol=1e-5, atol=1e-7)


def sgd_that_needs_a_key(lr):
  """SGD whose update refuses to run without `key` (and checks it is a PRNG key)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, key=None, **extra_args):
    del params, extra_args
    assert key is not None, 'the inner update did not receive key'
    assert jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return jax.tree.map(lambda g: -lr * g, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def test_vmap_jit_and_extra_args_reach_the_inner_update():
  params = to_jax(make_params(), jnp.float32)
  grads = [to_jax(g, jnp.float32) for g in make_grads(4)]
  lrs = jnp.array([0.1, 0.05, 0.2])
  scales = jnp.array([1.0, 0.5, 2.0])   # a different parameter set per run

  def run(lr, scale, key):
    opt = trac_lib.trac(optax.chain(sgd_that_needs_a_key(lr)), s_init=0.1)
    p = jax.tree.map(lambda x: scale * x, params)
    state = opt.init(p)
    for i, g in enumerate(grads):
      updates, state = opt.update(g, state, p, key=jax.random.fold_in(key, i), loss=jnp.zeros(()), unused=1.0)
      p = optax.apply_updates(p, updates)
    return p, state

  keys = jax.random.split(jax.random.key(0), 3)
  batched, states = jax.jit(jax.vmap(run))(lrs, scales, keys)
  assert states.s.shape == (3, len(trac_lib.BETAS)) and states.count.shape == (3,)
  for i in range(3):
    want = ref_trac(jax.tree.map(lambda x: float(scales[i]) * np.asarray(x, np.float64), params),
                    [jax.tree.map(np.asarray, g) for g in grads], NumpySGD(float(lrs[i])), s_init=0.1)[0][-1]
    for k in want:
      np.testing.assert_allclose(np.asarray(batched[k][i]), want[k], rtol=1e-4, atol=1e-6, err_msg=f'run {i} {k}')
  with pytest.raises(AssertionError, match='key'):
    opt = trac_lib.trac(sgd_that_needs_a_key(0.1))
    opt.update(grads[0], opt.init(params), params)


def test_built_from_the_declaration():
  method = trac_lib.METHOD
  options = method.options(None)
  assert options == {'trac': False, 'trac_s_init': 1e-8, 'trac_delta': 'params', 'trac_clamp': True}
  assert method.kind == 'wrapper' and method.section == 'optimizer' and not method.traced
  assert all(h.problem(h.default) is None for h in method.hypers)
  hypers = {h.name: h for h in method.hypers}
  assert hypers['trac_delta'].problem('paper') and hypers['trac_s_init'].problem(0.0)
  assert hypers['trac_clamp'].problem('yes') and hypers['trac'].problem('yes')
  program = lambda trac: method_lib.Program(config={'optimizer': {'name': 'sgd', 'trac': trac}}, hparams=[{}])
  assert method.active(program(True)) and not method.active(program(False))
  opt = method.transform(method_lib.Build(hparams={}, options=options), optax.sgd(LR))
  params, grads = make_params(), make_grads()
  want, _ = ref_trac(params, grads, NumpySGD())
  with jax.enable_x64(True):
    got, _ = run_optax(opt, to_jax(params, jnp.float64), [to_jax(g, jnp.float64) for g in grads])
    assert_history_close(got, want)
  state_opt = method.transform(method_lib.Build(hparams={}, options={**options, 'trac_delta': 'state'}), optax.sgd(LR))
  assert state_opt.init(to_jax(params, jnp.float32)).anchor.delta is not None
  with pytest.raises(ValueError, match='delta'):
    trac_lib.trac(optax.sgd(LR), delta='paper')


@pytest.mark.parametrize('delta_mode', trac_lib.DELTA_MODES)
@pytest.mark.parametrize('base', ['sgd_momentum', 'adam'])
def test_map_reset_state_follows_the_declaration(base, delta_mode):
  inner = optax.sgd(LR, momentum=0.9) if base == 'sgd_momentum' else optax.adam(LR)
  params = to_jax(make_params(), jnp.float32)
  # As the learner composes it: TRAC around the gradient terms and the optimizer.
  opt = trac_lib.trac(optax.chain(optax.add_decayed_weights(1e-3), inner), delta=delta_mode)
  state = opt.init(params)
  for g in make_grads(3):
    updates, state = opt.update(to_jax(g, jnp.float32), state, params)
    params = optax.apply_updates(params, updates)
  zero = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  marker = lambda tree: jax.tree.map(lambda x: jnp.full_like(x, 7.0), tree)
  mapped = method_lib.map_reset_state(state, params, zero, marker, [trac_lib.METHOD])
  before, after = trac_lib.find_state(state), trac_lib.find_state(mapped)
  jax.tree.map(lambda x: np.testing.assert_array_equal(np.asarray(x), 7.0), after.anchor.theta_ref)   # 'reinit'
  if delta_mode == 'state':
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(before.anchor.delta))
    jax.tree.map(lambda x: np.testing.assert_array_equal(np.asarray(x), 0.0), after.anchor.delta)   # 'zero'
  else:
    assert after.anchor.delta is None
  for field in ('count', 's', 'sigma', 'variance'):   # the tuner is not params-shaped: kept
    np.testing.assert_array_equal(np.asarray(getattr(after, field)), np.asarray(getattr(before, field)))
  # The inner optimizer's params-shaped state (momentum, Adam's moments) is zeroed as without TRAC;
  # its counts are kept.
  moments = ([after.inner[1][0].trace] if base == 'sgd_momentum' else [after.inner[1][0].mu, after.inner[1][0].nu])
  olds = ([before.inner[1][0].trace] if base == 'sgd_momentum' else [before.inner[1][0].mu, before.inner[1][0].nu])
  for new, old in zip(moments, olds):
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(old))
    jax.tree.map(lambda x: np.testing.assert_array_equal(np.asarray(x), 0.0), new)
  if base == 'adam':
    assert int(after.inner[1][0].count) == 3


@pytest.mark.parametrize('delta_mode', trac_lib.DELTA_MODES)
def test_reset_unit_restarts_at_its_fresh_weights(delta_mode):
  # After a reset that re-initialises some entries (parameters and theta_ref to fresh values,
  # Delta zeroed), those entries move by S u only at the next step: Delta is 0 there in both modes;
  # the other entries keep their Delta.
  with jax.enable_x64(True):
    params = to_jax(make_params(), jnp.float64)
    opt = trac_lib.trac(optax.sgd(LR), delta=delta_mode, s_init=0.1)
    state = opt.init(params)
    grads = make_grads(4, aligned=True)
    for g in grads[:3]:
      updates, state = opt.update(to_jax(g, jnp.float64), state, params)
      params = optax.apply_updates(params, updates)
    mask = {'w': jnp.array([[True, False]] * 3), 'b': jnp.array([True, False])}
    fresh = jax.tree.map(lambda p: p + 5.0, params)
    params = jax.tree.map(lambda m, f, p: jnp.where(m, f, p), mask, fresh, params)
    reinit = lambda tree: jax.tree.map(lambda m, f, x: jnp.where(m, f, x), mask, fresh, tree)
    zero_masked = lambda tree: jax.tree.map(lambda m, x: jnp.where(m, 0.0, x), mask, tree)
    state = method_lib.map_reset_state(state, params, zero_masked, reinit, [trac_lib.METHOD])
    g = to_jax(grads[-1], jnp.float64)
    updates, new_state = opt.update(g, state, params)
    factor = float(trac_lib.scale(new_state))
    assert factor > 0
    for k in params:
      m = np.asarray(mask[k])
      np.testing.assert_allclose(np.asarray(updates[k])[m], -LR * factor * np.asarray(g[k])[m], rtol=1e-9)
    assert not np.allclose(np.asarray(updates['w'])[~np.asarray(mask['w'])],
                           -LR * factor * np.asarray(g['w'])[~np.asarray(mask['w'])], rtol=1e-3)


def test_missing_params_raises():
  opt = trac_lib.trac(optax.sgd(LR))
  p = to_jax(make_params(), jnp.float32)
  with pytest.raises(ValueError, match='parameters'):
    opt.update(p, opt.init(p))
