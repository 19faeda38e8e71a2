"""Checks ddl.learners.spectral_norm against plain numpy loops of the published equations: Miyato et
al.'s Algorithm 1 (W (out, in): v = W^T u / ||W^T u||, u = W v / ||W v||, sigma = u^T W v, W / sigma)
and PyTorch's `spectral_norm` on its (out, in * kh * kw) layout of a conv weight; then the selection
of kernels in every ddl network, the declaration's check, and the hooks under jit and vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ddl import nets
from ddl.learners import method as method_lib
from ddl.learners import spectral_norm as sn

ATOL = 1e-5


def unit(x):
  return x / np.linalg.norm(x)


def miyato(w_out_in, u, iterations=1):
  """Algorithm 1 of Miyato et al. (2018) in float64: (the new u, sigma, W / sigma), W (out, in)."""
  w = np.asarray(w_out_in, np.float64)
  for _ in range(iterations):
    v = unit(w.T @ u)
    u = unit(w @ v)
  sigma = u @ w @ v
  return u, sigma, w / sigma


def random_params(net, x, runs=None, seed=0):
  """Parameters of `net`'s shapes drawn from N(0, 1) in numpy (no eager Flax init), `runs` stacked."""
  rng = np.random.default_rng(seed)
  lead = () if runs is None else (runs,)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), x))['params']
  return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=lead + a.shape), jnp.float32), shapes)


def hooks_for(network, **options):
  context = method_lib.Context(network=network, loss='mse', options=options, largest={}, num_chunks=1, learner=None)
  return sn.SpectralNormHooks(context)


def drifting_kernels(shape, steps, seed=0):
  """A kernel and its values after small changes, as a kernel moves under training."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=shape).astype(np.float32)
  out = []
  for _ in range(steps):
    out.append(w)
    w = (w + 0.05 * rng.normal(size=shape)).astype(np.float32)
  return out


@pytest.mark.parametrize('iterations', [1, 3])
def test_dense_matches_miyato_algorithm_over_steps(iterations):
  kernels = drifting_kernels((6, 4), steps=5)            # Flax (in, out): Miyato's W is its transpose
  u0 = unit(np.random.default_rng(1).normal(size=4))
  u_ref, u = u0, jnp.asarray(u0, jnp.float32)
  for step, kernel in enumerate(kernels):
    u_ref, sigma_ref, w_sn_ref = miyato(kernel.T, u_ref, iterations)
    w_sn, u, sigma = sn.normalize_kernel(jnp.asarray(kernel), u, iterations, train=True)
    np.testing.assert_allclose(np.asarray(u), u_ref, atol=ATOL, err_msg=f'u at step {step}')
    np.testing.assert_allclose(float(sigma), sigma_ref, rtol=ATOL, err_msg=f'sigma at step {step}')
    np.testing.assert_allclose(np.asarray(w_sn), w_sn_ref.T, atol=ATOL, err_msg=f'W_sn at step {step}')


def test_conv_matches_pytorch_layout():
  """A (kh, kw, in, out) kernel as PyTorch's weight (out, in, kh, kw) reshaped to (out, in * kh * kw):
  torch.nn.utils.spectral_norm's loop there gives the same u, sigma and normalised weight."""
  kernels = drifting_kernels((3, 3, 2, 5), steps=4, seed=2)
  u0 = unit(np.random.default_rng(3).normal(size=5))
  u_ref, u = u0, jnp.asarray(u0, jnp.float32)
  for step, kernel in enumerate(kernels):
    weight = kernel.transpose(3, 2, 0, 1)                   # PyTorch's Conv2d weight (out, in, kh, kw)
    u_ref, sigma_ref, w_sn_ref = miyato(weight.reshape(5, -1), u_ref)
    w_sn, u, sigma = sn.normalize_kernel(jnp.asarray(kernel), u, 1, train=True)
    np.testing.assert_allclose(np.asarray(u), u_ref, atol=ATOL, err_msg=f'u at step {step}')
    np.testing.assert_allclose(float(sigma), sigma_ref, rtol=ATOL)
    np.testing.assert_allclose(np.asarray(w_sn).transpose(3, 2, 0, 1), w_sn_ref.reshape(weight.shape), atol=ATOL)


def converged_u(kernel, u, steps):
  """u after `steps` training steps of one power iteration each (= `steps` iterations) at a fixed kernel."""
  return jax.lax.fori_loop(0, steps, lambda _, u: sn.normalize_kernel(kernel, u, 1)[1], u)


@pytest.mark.parametrize('shape', [(7, 5), (2, 2, 3, 4)])
def test_sigma_converges_to_top_singular_value(shape):
  kernel = jnp.asarray(np.random.default_rng(4).normal(size=shape), jnp.float32)
  matrix = np.asarray(kernel, np.float64).reshape(-1, shape[-1])
  top = np.linalg.svd(matrix, compute_uv=False)[0]
  u = jnp.asarray(unit(np.random.default_rng(5).normal(size=shape[-1])), jnp.float32)
  u = converged_u(kernel, u, 200)
  w_sn, _, sigma = sn.normalize_kernel(kernel, u, 1)
  np.testing.assert_allclose(float(sigma), top, rtol=1e-4)
  np.testing.assert_allclose(np.linalg.svd(np.asarray(w_sn).reshape(-1, shape[-1]), compute_uv=False)[0], 1.0,
                             rtol=1e-4)


def test_eval_keeps_state_and_uses_stored_u():
  net = nets.MLP(hidden=(8, 8), outputs=3)
  params = random_params(net, jnp.ones((1, 5)))
  hooks = hooks_for(net, spectral_norm_layers='all')
  _, state = hooks.init(jax.random.key(1), params, jnp.ones((1, 5)), {})
  for _ in range(3):
    _, state = hooks.parametrize(state, params, train=True)
  out, kept = hooks.parametrize(state, params, train=False)
  for key, u in state.items():
    np.testing.assert_array_equal(np.asarray(kept[key]), np.asarray(u))
    kernel = np.asarray(params[key.split('/')[0]]['kernel'], np.float64)
    sigma = np.linalg.norm(kernel @ np.asarray(u, np.float64))    # v = W u / ||W u||: sigma = ||W u||
    np.testing.assert_allclose(np.asarray(out[key.split('/')[0]]['kernel']), kernel / sigma, atol=ATOL)
  # A second eval pass gives the same parameters: nothing moved.
  again, _ = hooks.parametrize(kept, params, train=False)
  jax.tree.map(np.testing.assert_array_equal, again, out)


def test_gradient_flows_through_sigma():
  """jax.grad through the parametrisation equals jax.grad of W / (v^T W u) written out with the
  power iteration's u, v as constants; and differs from treating sigma as a constant."""
  kernel = jnp.asarray(np.random.default_rng(6).normal(size=(5, 3)), jnp.float32)
  x = jnp.asarray(np.random.default_rng(7).normal(size=(4, 5)), jnp.float32)
  u0 = jnp.asarray(unit(np.random.default_rng(8).normal(size=3)), jnp.float32)
  loss = lambda w_sn: jnp.sum(jnp.tanh(x @ w_sn) ** 2)

  got = jax.grad(lambda w: loss(sn.normalize_kernel(w, u0, 1)[0]))(kernel)
  k = np.asarray(kernel, np.float64)
  v = unit(k @ np.asarray(u0, np.float64))
  u = unit(k.T @ v)
  v, u = jnp.asarray(v, jnp.float32), jnp.asarray(u, jnp.float32)
  want = jax.grad(lambda w: loss(w / (v @ w @ u)))(kernel)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL)
  frozen = jax.grad(lambda w: loss(w / jax.lax.stop_gradient(v @ w @ u)))(kernel)
  assert not np.allclose(np.asarray(got), np.asarray(frozen), atol=1e-3)
  # At a converged u (the top singular vectors) it is the gradient of W / sigma_max(W) itself: a central
  # finite difference of that, with sigma_max from numpy's SVD.
  u_star = converged_u(kernel, u0, 500)
  converged = jax.grad(lambda w: loss(sn.normalize_kernel(w, u_star, 1)[0]))(kernel)
  top = lambda w: np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[0]
  f = lambda w: float(loss(jnp.asarray(np.asarray(w, np.float64) / top(w), jnp.float32)))
  eps = 1e-3
  direction = np.random.default_rng(9).normal(size=kernel.shape).astype(np.float32)
  fd = (f(kernel + eps * direction) - f(kernel - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(fd, float(jnp.sum(converged * direction)), rtol=1e-2)


def test_zero_kernel_is_left_as_is_and_keeps_u():
  u0 = jnp.asarray(unit(np.arange(1.0, 4.0)), jnp.float32)
  w_sn, u, sigma = sn.normalize_kernel(jnp.zeros((4, 3)), u0, 1)
  assert float(sigma) == 0.0
  np.testing.assert_array_equal(np.asarray(w_sn), 0.0)
  np.testing.assert_array_equal(np.asarray(u), np.asarray(u0))
  # sigma = 0 divides by 1: the kernel passes through with an identity gradient, no NaN.
  grad = jax.grad(lambda w: jnp.sum(sn.normalize_kernel(w, u0, 1)[0]))(jnp.zeros((4, 3)))
  np.testing.assert_array_equal(np.asarray(grad), 1.0)


def test_mlp_tree_under_vmap_and_jit():
  """Three runs vmapped: each run's state and parameters equal its own unbatched call; only the selected
  kernels change; a jitted, vmapped gradient through the parametrisation is finite and updates u alike."""
  net = nets.MLP(hidden=(8, 8), outputs=3)
  x = jnp.asarray(np.random.default_rng(10).normal(size=(6, 5)), jnp.float32)
  params = random_params(net, x, runs=3)
  for layers, normalised in [('penultimate', {'hidden_1'}), ('hidden', {'hidden_0', 'hidden_1'}),
                             ('all', {'hidden_0', 'hidden_1', 'output'})]:
    hooks = hooks_for(net, spectral_norm=True, spectral_norm_layers=layers, spectral_norm_iterations=1)
    init = jax.vmap(lambda k, p: hooks.init(k, p, x, {}))
    params_out, state = init(jax.random.split(jax.random.key(1), 3), params)
    assert set(state) == {f'{n}/kernel' for n in normalised}
    for u in state.values():                                  # unit vectors, one draw per run
      np.testing.assert_allclose(np.linalg.norm(np.asarray(u), axis=-1), 1.0, rtol=1e-6)
      assert not np.allclose(np.asarray(u[0]), np.asarray(u[1]))
    jax.tree.map(np.testing.assert_array_equal, params_out, params)
    out, new_state = jax.vmap(lambda s, p: hooks.parametrize(s, p, True))(state, params)
    for i in range(3 if layers == 'all' else 0):
      run = lambda tree: jax.tree.map(lambda a: a[i], tree)
      one_out, one_state = hooks.parametrize(run(state), run(params), True)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=ATOL), run(out), one_out)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=ATOL), run(new_state), one_state)
    for name in ('hidden_0', 'hidden_1', 'output'):
      np.testing.assert_array_equal(np.asarray(out[name]['bias']), np.asarray(params[name]['bias']))
      same = np.array_equal(np.asarray(out[name]['kernel']), np.asarray(params[name]['kernel']))
      assert same == (name not in normalised), (layers, name)

  def loss(p, s):
    p_sn, s = hooks.parametrize(s, p, True)
    return jnp.mean((net.apply({'params': p_sn}, x)[0] - 1.0) ** 2), s

  (grads, jit_state) = jax.jit(jax.vmap(jax.grad(loss, has_aux=True)))(params, state)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=ATOL), jit_state, new_state)


NETWORKS = {
    'mlp': (nets.MLP(hidden=(4, 4, 4), outputs=2), (1, 3)),
    'linear': (nets.MLP(hidden=(), outputs=2), (1, 3)),
    'convnet': (nets.ConvNet(outputs=2, widths=(2, 2, 2), dense=(4, 4)), (1, 24, 24, 3)),
    'actor_critic': (nets.ActorCritic(hidden=(4, 4), actions=2), (1, 3)),
    'stream_actor_critic': (nets.StreamActorCritic(hidden=(4, 4), actions=2), (1, 3)),
    'resnet': (nets.ResNet18(outputs=3, width=2, blocks_per_stage=1), (1, 8, 8, 3)),
}
# The kernels each option selects (None: refused), per network.
EXPECTED = {
    ('mlp', 'penultimate'): ['hidden_2'],
    ('mlp', 'hidden'): ['hidden_0', 'hidden_1', 'hidden_2'],
    ('linear', 'penultimate'): None,
    ('linear', 'hidden'): None,
    ('linear', 'all'): ['output'],
    ('convnet', 'penultimate'): ['dense_1'],
    ('convnet', 'hidden'): ['conv_0', 'conv_1', 'conv_2', 'dense_0', 'dense_1'],
    ('actor_critic', 'penultimate'): ['policy/hidden_1', 'value/hidden_1'],
    ('actor_critic', 'hidden'): ['policy/hidden_0', 'policy/hidden_1', 'value/hidden_0', 'value/hidden_1'],
    ('stream_actor_critic', 'penultimate'): ['policy/hidden_1', 'value/hidden_1'],
    ('resnet', 'penultimate'): None,
}


@pytest.mark.parametrize('name', sorted(NETWORKS))
@pytest.mark.parametrize('layers', sn.LAYERS)
def test_selection_and_check_in_every_network(name, layers):
  net, shape = NETWORKS[name]
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.ones(shape)))['params']
  kernels = sorted('/'.join(p[:-1]) for p in traverse_util.flatten_dict(params) if p[-1] == 'kernel')
  expected = EXPECTED.get((name, layers))
  if (name, layers) not in EXPECTED:
    outputs = {'resnet': ['fc'], 'actor_critic': ['policy/output', 'value/output'],
               'stream_actor_critic': ['policy/output', 'value/output']}.get(name, ['output'])
    expected = kernels if layers == 'all' else [k for k in kernels if k not in outputs]
  problem = sn.problem(net, {'spectral_norm_layers': layers, 'spectral_norm_iterations': 1})
  if expected is None:
    assert problem is not None
    with pytest.raises(ValueError):
      sn.selected_kernels(net, params, layers)
  else:
    assert problem is None, problem
    got = ['/'.join(p[:-1]) for p in sn.selected_kernels(net, params, layers)]
    assert got == sorted(expected)


def where(network, **section):
  """Where an experiment of `network` runs with the network section `section`."""
  cls = type('Experiment', (), {'make_network': staticmethod(lambda config: network)})
  return method_lib.Where(experiment='test', experiment_cls=cls, config={'network': section})


def test_declaration_and_check():
  method = sn.METHOD
  assert method.kind == 'network' and method.section == 'network' and method.hooks is sn.SpectralNormHooks
  assert all(not h.traced and h.name.startswith('spectral_norm') for h in method.hypers)
  assert method.options({}) == {'spectral_norm': False, 'spectral_norm_layers': 'penultimate',
                                'spectral_norm_iterations': 1}
  program = lambda value: method_lib.Program(config={'network': {'spectral_norm': value}}, hparams=[{}])
  assert method.active(program(True)) and not method.active(program(False))
  mlp, linear = nets.MLP(hidden=(4,), outputs=2), nets.MLP(hidden=(), outputs=2)
  resnet = nets.ResNet18(outputs=3, width=2, blocks_per_stage=1)
  assert method.check(where(mlp, spectral_norm=True)) is None
  assert method.check(where(resnet, spectral_norm=False)) is None      # off: nothing to refuse
  assert 'ResNet' in method.check(where(resnet, spectral_norm=True))
  assert method.check(where(resnet, spectral_norm=True, spectral_norm_layers='hidden')) is None
  assert 'no hidden layer' in method.check(where(linear, spectral_norm=True, spectral_norm_layers='hidden'))
  assert method.check(where(linear, spectral_norm=True, spectral_norm_layers='all')) is None
  assert 'integer' in method.check(where(mlp, spectral_norm=True, spectral_norm_iterations=1.5))
