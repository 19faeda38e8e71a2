"""Checks ddl.learners.l2_init: SGD on L + l/2 ||theta - theta_0||^2 (the authors' code; the
paper's l ||theta - theta_0||^2 with l2_init_form='paper') against a numpy loop,
theta <- theta - lr (g + l (theta - theta_0)), theta_0 the initial parameters."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddl.learners import cbp as cbp_lib
from ddl.learners import l2_init as l2_init_lib
from ddl.learners import upgd as upgd_lib
from conftest import run_optax

ATOL = 1e-6
RTOL = 1e-5
N_STEPS = 5
LR, STRENGTH = 0.1, 0.3


def make_params():
  rng = np.random.default_rng(0)
  return {'w': rng.normal(size=(3, 2)).astype(np.float32), 'b': rng.normal(size=(2,)).astype(np.float32)}


def make_grads(n_steps=N_STEPS):
  rng = np.random.default_rng(1)
  return [{'w': rng.normal(size=(3, 2)).astype(np.float32), 'b': rng.normal(size=(2,)).astype(np.float32)}
          for _ in range(n_steps)]


def to_jax(tree):
  return jax.tree.map(jnp.asarray, tree)


def ref_sgd_l2_init(params, grads, lr=LR, strength=STRENGTH, factor=1.0):
  theta0 = {k: np.asarray(v, np.float64) for k, v in params.items()}
  theta = dict(theta0)
  history = []
  for g in grads:
    theta = {k: theta[k] - lr * (g[k] + factor * strength * (theta[k] - theta0[k])) for k in theta}
    history.append(theta)
  return history


def assert_history_close(got, want):
  assert len(got) == len(want)
  for step, (g, w) in enumerate(zip(got, want)):
    for k in w:
      np.testing.assert_allclose(np.asarray(g[k]), w[k], atol=ATOL, rtol=RTOL, err_msg=f'step {step}, leaf {k}')


def test_sgd_matches_numpy_reference_and_anchor_stays():
  params, grads = make_params(), make_grads()
  got, state = run_optax(optax.chain(l2_init_lib.l2_init(STRENGTH), optax.sgd(LR)), params, grads)
  assert_history_close(got, ref_sgd_l2_init(params, grads))
  anchor = state[0].anchor
  assert isinstance(state[0], l2_init_lib.L2InitState)
  for k in params:
    np.testing.assert_array_equal(np.asarray(anchor[k]), params[k])
  # The regulariser mattered: the run differs from plain SGD.
  plain = ref_sgd_l2_init(params, grads, strength=0.0)
  assert not np.allclose(plain[-1]['w'], got[-1]['w'], atol=1e-4)


def test_paper_form_doubles_the_term():
  params, grads = make_params(), make_grads()
  got, _ = run_optax(optax.chain(l2_init_lib.l2_init(STRENGTH, 'paper'), optax.sgd(LR)), params, grads)
  assert_history_close(got, ref_sgd_l2_init(params, grads, factor=2.0))
  with pytest.raises(ValueError, match='l2_init_form'):
    l2_init_lib.l2_init(STRENGTH, 'book')


def test_zero_strength_is_plain_sgd():
  params, grads = make_params(), make_grads()
  got, _ = run_optax(optax.chain(l2_init_lib.l2_init(0.0), optax.sgd(LR)), params, grads)
  want, _ = run_optax(optax.sgd(LR), params, grads)
  for a, b in zip(got, want):
    for k in a:
      np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_anchor_is_a_copy_of_init_params():
  params = to_jax(make_params())
  state = l2_init_lib.l2_init(STRENGTH).init(params)
  for k in params:
    np.testing.assert_array_equal(np.asarray(state.anchor[k]), np.asarray(params[k]))
    assert state.anchor[k] is not params[k]
    assert state.anchor[k].unsafe_buffer_pointer() != params[k].unsafe_buffer_pointer()


@pytest.mark.parametrize('form,half', [('code', 0.5), ('paper', 1.0)])
def test_gradient_of_penalty(form, half):
  # The added term is the gradient of l/2 ||theta - theta_0||^2 (the authors' code) or of l ||.||^2.
  params = to_jax(make_params())
  theta0 = jax.tree.map(lambda x: x + 0.5, params)
  penalty = lambda p: half * STRENGTH * sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p),
                                                                                 jax.tree.leaves(theta0)))
  zeros = jax.tree.map(jnp.zeros_like, params)
  added, _ = l2_init_lib.l2_init(STRENGTH, form).update(zeros, l2_init_lib.L2InitState(anchor=theta0), params)
  want = jax.grad(penalty)(params)
  for k in params:
    np.testing.assert_allclose(np.asarray(added[k]), np.asarray(want[k]), atol=ATOL, rtol=RTOL)


def test_traced_strength_under_vmap():
  params, grads = to_jax(make_params()), [to_jax(g) for g in make_grads(3)]
  strengths = jnp.array([0.0, 0.3, 1e-2])
  lrs = jnp.array([0.1, 0.05, 0.2])

  def run(strength, lr):
    opt = optax.chain(l2_init_lib.l2_init(strength), optax.sgd(lr))
    return run_optax(opt, params, grads)[0][-1]

  batched = jax.jit(jax.vmap(run))(strengths, lrs)
  for i in range(3):
    want = ref_sgd_l2_init(make_params(), make_grads(3), lr=float(lrs[i]), strength=float(strengths[i]))[-1]
    for k in want:
      np.testing.assert_allclose(np.asarray(batched[k][i]), want[k], atol=ATOL, rtol=RTOL, err_msg=f'{i} {k}')


def test_in_chain_with_extra_args_before_upgd():
  # l2_init accepts and ignores extra arguments; UPGD after it receives the key and the
  # regularised gradient g + l (theta - theta_0).
  params, grads = to_jax(make_params()), [to_jax(g) for g in make_grads(3)]
  keys = jax.random.split(jax.random.key(4), 3)
  make_upgd = lambda: upgd_lib.upgd(LR, utility_decay=0.9, noise_std=0.1, weight_decay=0.01)
  chained = optax.chain(l2_init_lib.l2_init(STRENGTH), make_upgd())
  alone = make_upgd()
  p_c, s_c = params, chained.init(params)
  p_a, s_a = params, alone.init(params)
  for g, k in zip(grads, keys):
    u_c, s_c = chained.update(g, s_c, p_c, key=k, unused_extra=1.0)
    reg = jax.tree.map(lambda gi, w, w0: gi + STRENGTH * (w - w0), g, p_a, params)
    u_a, s_a = alone.update(reg, s_a, p_a, key=k)
    p_c, p_a = optax.apply_updates(p_c, u_c), optax.apply_updates(p_a, u_a)
  for k in params:
    np.testing.assert_allclose(np.asarray(p_c[k]), np.asarray(p_a[k]), atol=ATOL, rtol=RTOL)


def test_missing_params_raises():
  opt = l2_init_lib.l2_init(STRENGTH)
  p = to_jax(make_params())
  with pytest.raises(ValueError, match='parameters'):
    opt.update(p, opt.init(p))


def test_hypers():
  form, h = l2_init_lib.HYPERS
  assert h.name == 'l2_init' and h.default == 0.0 and h.traced and h.doc
  assert h.problem(-1e-3) and h.problem(1e-3) is None
  assert form.name == 'l2_init_form' and form.default == 'code' and not form.traced and form.problem('x')


def test_cbp_optimizer_reset_keeps_the_anchor():
  # cbp.reset_optimizer_units zeroes per-weight statistics of replaced units, but L2 Init's anchor
  # (the initial weights) is not such a statistic: it stays, so a fresh unit is pulled towards the
  # unit's initial weights, never towards 0.
  rng = np.random.default_rng(2)
  params = {'dense_0': {'kernel': rng.normal(size=(3, 4)), 'bias': rng.normal(size=(4,))},
            'dense_1': {'kernel': rng.normal(size=(4, 2)), 'bias': rng.normal(size=(2,))}}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  opt = optax.chain(l2_init_lib.l2_init(STRENGTH), optax.sgd(LR, momentum=0.9))
  state = opt.update(jax.tree.map(jnp.ones_like, params), opt.init(params), params)[1]
  layer = cbp_lib.UnitLayer('h', ('dense_0', 'kernel'), (('dense_1', 'kernel'),),
                            jax.nn.initializers.lecun_normal(), bias=('dense_0', 'bias'))
  pick = cbp_lib.Pick(replaced=jnp.array([False, True, False, False]), index=jnp.array([1], jnp.int32),
                      valid=jnp.array([True]), centre=jnp.zeros(4), key=jax.random.key(1))
  state = cbp_lib.reset_optimizer_units((layer,), params, state, (pick,))
  jax.tree.map(np.testing.assert_array_equal, state[0].anchor, params)
  momentum = state[1][0].trace
  np.testing.assert_array_equal(np.asarray(momentum['dense_0']['kernel'][:, 1]), 0)
  assert np.all(np.asarray(momentum['dense_0']['kernel'][:, 0]) != 0)
