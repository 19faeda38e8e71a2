"""Checks ddl.learners.parseval: SGD on L + l sum_W c_W ||W W^T - s I||_F^2 against a numpy loop of
the authors' equation (github.com/wechu/parseval_reg, `parseval_reg/agent.py`), written in PyTorch's
orientation (W: (out, in), a conv weight (out, in, kh, kw) viewed as (out, in * kh * kw)):
W <- W - lr (g + 4 l c_W (M o (W W^T) - s I) W), c_W = (64 / rows)^2, M the groups' block mask."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ddl import nets
from ddl.learners import parseval as parseval_lib
from ddl.learners.method import Build, Program
from conftest import run_optax

ATOL = 1e-6
RTOL = 1e-5
N_STEPS = 5
LR = 0.1
DEFAULTS = {'scale': 2.0, 'reference_width': 64, 'groups': 1, 'layers': 'hidden', 'conv': True}
PAPER = {'scale': 1.0, 'reference_width': 0, 'groups': 2, 'layers': 'all', 'conv': False}
OUTPUT_PATHS = ('output/kernel', 'output/bias', 'policy/output/kernel', 'log_std', 'hidden_0/bias')


def make_params(seed=0):
  """An MLP-like tree with a conv kernel, a nested policy head and leaves that are not kernels."""
  rng = np.random.default_rng(seed)
  n = lambda *shape: (0.4 * rng.normal(size=shape)).astype(np.float32)
  return {'conv_0': {'kernel': n(3, 3, 2, 4), 'bias': n(4)},
          'hidden_0': {'kernel': n(6, 4), 'bias': n(4)},
          'hidden_1': {'kernel': n(4, 8), 'bias': n(8)},
          'output': {'kernel': n(8, 4), 'bias': n(4)},
          'policy': {'hidden_0': {'kernel': n(5, 4)}, 'output': {'kernel': n(4, 2)}},
          'log_std': n(2)}


def make_grads(n_steps=N_STEPS):
  return [jax.tree.map(lambda x: 0.1 * x, make_params(seed)) for seed in range(1, n_steps + 1)]


def to_jax(tree):
  return jax.tree.map(jnp.asarray, tree)


def flat(tree):
  return {'/'.join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflat(leaves, like):
  return jax.tree_util.tree_unflatten(jax.tree.structure(like), [leaves[k] for k in flat(like)])


def ref_regularised(path, leaf, layers, conv):
  names = path.split('/')
  return (names[-1] == 'kernel' and leaf.ndim in ((2, 4) if conv else (2,))
          and (layers == 'all' or not {'output', 'fc'} & set(names)))


def to_torch(kernel):
  """A flax kernel as PyTorch's 2-d weight: Dense (in, out) -> (out, in); conv (kh, kw, in, out) ->
  (out, in, kh, kw) -> (out, in * kh * kw)."""
  if kernel.ndim == 2:
    return kernel.T
  return kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)


def from_torch(w, like):
  if like.ndim == 2:
    return w.T
  kh, kw, cin, cout = like.shape
  return w.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)


def ref_mask(rows, groups):
  size = rows // groups
  return np.kron(np.eye(groups), np.ones((size, size)))


def ref_penalty(params, scale, reference_width, groups, layers, conv):
  """The authors' loss term: ||mask * (W W^T) - scale I||_F^2, times (64 / width)^2, summed."""
  total = 0.0
  for path, k in flat(params).items():
    if ref_regularised(path, np.asarray(k), layers, conv):
      w = to_torch(np.asarray(k, np.float64))
      c = (reference_width / w.shape[0]) ** 2 if reference_width else 1.0
      total += c * np.sum((ref_mask(w.shape[0], groups) * (w @ w.T) - scale * np.eye(w.shape[0])) ** 2)
  return total


def ref_penalty_grad(w, scale, reference_width, groups):
  """d/dW of c ||M o (W W^T) - s I||_F^2 by hand: 4 c (W_g W_g^T - s I) W_g for each group g of rows."""
  rows = w.shape[0]
  size = rows // groups
  c = (reference_width / rows) ** 2 if reference_width else 1.0
  grad = np.zeros_like(w)
  for g in range(groups):
    wg = w[g * size:(g + 1) * size]
    grad[g * size:(g + 1) * size] = 4 * c * (wg @ wg.T - scale * np.eye(size)) @ wg
  return grad


def ref_sgd_parseval(params, grads, lr, strength, scale, reference_width, groups, layers, conv):
  theta = {k: np.asarray(v, np.float64) for k, v in flat(params).items()}
  history = []
  for g in grads:
    g = flat(g)
    new = {}
    for k, p in theta.items():
      step = np.asarray(g[k], np.float64)
      if ref_regularised(k, p, layers, conv):
        step = step + strength * from_torch(ref_penalty_grad(to_torch(p), scale, reference_width, groups), p)
      new[k] = p - lr * step
    theta = new
    history.append(theta)
  return history


def assert_history_close(got, want):
  assert len(got) == len(want)
  for step, (g, w) in enumerate(zip(got, want)):
    g = flat(g)
    for k in w:
      np.testing.assert_allclose(np.asarray(g[k]), w[k], atol=ATOL, rtol=RTOL, err_msg=f'step {step}, leaf {k}')


def build(strength, **options):
  """The declared transform, built as the learner builds it."""
  method = parseval_lib.METHOD
  return method.transform(Build(hparams={'parseval': strength}, options={**method.options(None), **options}))


def test_declared_sgd_matches_numpy_reference():
  params, grads = make_params(), make_grads()
  strength = 1e-4   # c_W = 256 for 4 units
  got, state = run_optax(optax.chain(build(jnp.asarray(strength)), optax.sgd(LR)), params, grads)
  want = ref_sgd_parseval(params, grads, LR, strength, **DEFAULTS)
  assert_history_close(got, want)
  assert isinstance(state[0], optax.EmptyState)
  # The regulariser mattered on the kernels it is on, and only there.
  plain = ref_sgd_parseval(params, grads, LR, 0.0, **DEFAULTS)[-1]
  for k, v in flat(got[-1]).items():
    changed = not np.allclose(plain[k], np.asarray(v), atol=1e-4)
    assert changed == ref_regularised(k, plain[k], 'hidden', True), k


def test_paper_form_options_match_numpy_reference():
  # c_W = 1, s = 1, two groups of units, the output layers too, conv kernels left out.
  params, grads = make_params(), make_grads()
  options = {f'parseval_{k}': v for k, v in PAPER.items()}
  got, _ = run_optax(optax.chain(build(0.02, **options), optax.sgd(LR)), params, grads)
  assert_history_close(got, ref_sgd_parseval(params, grads, LR, 0.02, **PAPER))


@pytest.mark.parametrize('options', [DEFAULTS, PAPER], ids=['defaults', 'paper'])
def test_penalty_and_its_gradient(options):
  params = to_jax(make_params())
  np.testing.assert_allclose(float(parseval_lib.penalty(params, **options)), ref_penalty(params, **options), rtol=RTOL)
  zeros = jax.tree.map(jnp.zeros_like, params)
  opt = parseval_lib.parseval(0.5, **options)
  added, _ = opt.update(zeros, opt.init(params), params)
  want = jax.grad(lambda p: 0.5 * parseval_lib.penalty(p, **options))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=RTOL),
               added, want)


@pytest.mark.parametrize('scale', [1.0, 2.0])
def test_scaled_orthogonal_rows_cost_nothing(scale):
  rng = np.random.default_rng(3)
  rows_orthonormal = lambda fan_in, units: np.linalg.qr(rng.normal(size=(fan_in, units)))[0]   # K: W = K^T
  params = to_jax({'hidden_0': {'kernel': np.sqrt(scale) * rows_orthonormal(6, 4)},
                   'conv_0': {'kernel': np.sqrt(scale) * rows_orthonormal(18, 4).reshape(3, 3, 2, 4)},
                   'output': {'kernel': rng.normal(size=(4, 3))}})
  params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
  options = {**DEFAULTS, 'scale': scale, 'reference_width': 0}   # c_W = 1 (64: c_W = 256, the same zeros)
  assert abs(float(parseval_lib.penalty(params, **options))) < 1e-10
  opt = parseval_lib.parseval(1.0, **options)
  zeros = jax.tree.map(jnp.zeros_like, params)
  added, _ = opt.update(zeros, opt.init(params), params)
  for k, v in flat(added).items():
    np.testing.assert_allclose(np.asarray(v), 0.0, atol=1e-5, err_msg=k)
  # Rows scaled by 1.1 off the minimum: W W^T - s I = (1.1^2 - 1) s I in both 4-unit layers.
  off = parseval_lib.penalty(jax.tree.map(lambda x: x * 1.1, params), **options)
  np.testing.assert_allclose(float(off), 2 * 4 * (0.21 * scale) ** 2, rtol=1e-4)


def test_zero_strength_leaves_updates_bit_for_bit():
  params, grads = to_jax(make_params()), to_jax(make_grads(1)[0])
  for opt in (parseval_lib.parseval(0.0), build(jnp.zeros(()))):
    updates, _ = opt.update(grads, opt.init(params), params, key=jax.random.key(0), loss=jnp.ones(()))
    for k, v in flat(updates).items():
      assert np.asarray(v).tobytes() == np.asarray(flat(grads)[k]).tobytes(), k
  got, _ = run_optax(optax.chain(parseval_lib.parseval(0.0), optax.sgd(LR)), make_params(), make_grads())
  want, _ = run_optax(optax.sgd(LR), make_params(), make_grads())
  for a, b in zip(got, want):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_traced_strength_under_jit_and_vmap():
  params, grads = to_jax(make_params()), [to_jax(g) for g in make_grads(3)]
  strengths = jnp.array([0.0, 1e-4, 3e-4])
  lrs = jnp.array([0.1, 0.05, 0.2])

  def run(strength, lr):
    return run_optax(optax.chain(build(strength), optax.sgd(lr)), params, grads)[0][-1]

  batched = jax.jit(jax.vmap(run))(strengths, lrs)
  for i in range(3):
    want = ref_sgd_parseval(make_params(), make_grads(3), float(lrs[i]), float(strengths[i]), **DEFAULTS)[-1]
    for k, v in flat(batched).items():
      np.testing.assert_allclose(np.asarray(v[i]), want[k], atol=ATOL, rtol=RTOL, err_msg=f'{i} {k}')


def test_output_layers_and_other_leaves_are_excluded():
  params, grads = to_jax(make_params()), to_jax(make_grads(1)[0])
  updates, _ = parseval_lib.parseval(1e-2).update(grads, optax.EmptyState(), params)
  for k in OUTPUT_PATHS:
    assert np.asarray(flat(updates)[k]).tobytes() == np.asarray(flat(grads)[k]).tobytes(), k
  assert parseval_lib.regularised_paths(params) == ('conv_0/kernel', 'hidden_0/kernel', 'hidden_1/kernel',
                                                   'policy/hidden_0/kernel')
  assert parseval_lib.regularised_paths(params, layers='all', conv=False) == (
      'hidden_0/kernel', 'hidden_1/kernel', 'output/kernel', 'policy/hidden_0/kernel', 'policy/output/kernel')


def test_selection_on_ddl_networks():
  x = jnp.zeros((1, 3))
  shapes = lambda net, x, **kw: jax.eval_shape(net.init, jax.random.key(0), x, **kw)['params']
  mlp = shapes(nets.MLP((8, 8), 2), x)
  assert parseval_lib.regularised_paths(mlp) == ('hidden_0/kernel', 'hidden_1/kernel')
  ac = shapes(nets.ActorCritic((8, 8), 2), x)
  assert parseval_lib.regularised_paths(ac) == tuple(f'{h}/hidden_{i}/kernel' for h in ('policy', 'value')
                                                     for i in range(2))
  image = jnp.zeros((1, 32, 32, 3))
  conv = shapes(nets.ConvNet(widths=(2, 2, 2), dense=(4, 4)), image)
  assert parseval_lib.regularised_paths(conv) == ('conv_0/kernel', 'conv_1/kernel', 'conv_2/kernel',
                                                  'dense_0/kernel', 'dense_1/kernel')
  resnet = shapes(nets.ResNet18(outputs=3, width=2, blocks_per_stage=1), image[:, :8, :8])
  paths = parseval_lib.regularised_paths(resnet)
  assert 'stem/kernel' in paths and 'fc/kernel' not in paths and len(paths) == 1 + 2 * 4 + 3
  assert set(parseval_lib.regularised_paths(resnet, layers='all')) == {*paths, 'fc/kernel'}


def test_missing_params_and_bad_groups_raise():
  params = to_jax(make_params())
  opt = parseval_lib.parseval(1e-3)
  with pytest.raises(ValueError, match='parameters'):
    opt.update(params, opt.init(params))
  opt = parseval_lib.parseval(1e-3, groups=3)
  with pytest.raises(ValueError, match='groups'):
    opt.update(params, opt.init(params), params)


def test_declaration():
  method = parseval_lib.METHOD
  assert method.kind == 'gradient' and method.section == 'parseval' and method.doc and method.state_fields == ()
  assert [h.name for h in method.traced] == ['parseval']
  assert all(h.name.startswith('parseval_') and h.doc for h in method.static)
  assert all(h.problem(h.default) is None for h in method.hypers)
  assert method.hypers[0].default == 0.0 and method.hypers[0].problem(-1e-3)
  assert method.options(None) == {'parseval_scale': 2.0, 'parseval_reference_width': 64, 'parseval_groups': 1,
                                  'parseval_layers': 'hidden', 'parseval_conv': True}
  assert method.options({'parseval': {'parseval_scale': 1.0}})['parseval_scale'] == 1.0
  assert not method.active(Program(config=None, hparams=[{'parseval': 0.0}, {'parseval': 0.0}]))
  assert method.active(Program(config=None, hparams=[{'parseval': 0.0}, {'parseval': 1e-3}]))
