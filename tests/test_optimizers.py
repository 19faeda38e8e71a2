"""Checks ddl.learners.optimizers against hand-written numpy versions of the PyTorch updates.

PyTorch semantics of the original (Dohare et al.) code:
  SGD:  d = g + wd*theta; b <- mu*b + d (first step b = d); theta <- theta - lr*b.
  Adam: g <- g + wd*theta; m, v moments; theta <- theta - lr*mhat/(sqrt(vhat) + eps).
  S&P:  the above (wd is the shrink), then i.i.d. N(0, sigma^2) on every parameter.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ddl import config as config_lib
from ddl.learners import optimizers
from ddl.learners import registry
from ddl.learners.learner import Learner
from conftest import run_optax

ATOL = 1e-6
RTOL = 1e-5
N_STEPS = 4


# --- fixtures: a small pytree and fixed per-step gradients ---


def make_params():
    rng = np.random.default_rng(0)
    return {
        'w': rng.normal(size=(3, 2)).astype(np.float32),
        'b': rng.normal(size=(2,)).astype(np.float32),
    }


def make_grads(n_steps=N_STEPS):
    rng = np.random.default_rng(1)
    return [
        {
            'w': rng.normal(size=(3, 2)).astype(np.float32),
            'b': rng.normal(size=(2,)).astype(np.float32),
        }
        for _ in range(n_steps)
    ]


STATIC = ('momentum', 'eps')   # static options of the optimizers (their config section); the rest is traced


def make_optimizer(name, perturbation=False, key=None, **kwargs):
    """The chain a program of coupled L2, optimizer `name` and (with `perturbation`) S&P noise
    holds: `optimizers.build_chain` with the traced values and the static options of `kwargs`."""
    hparams = {k: v for k, v in kwargs.items() if k not in STATIC}
    options = {k: v for k, v in kwargs.items() if k in STATIC}
    names = ('l2', name, 'snp') if perturbation else ('l2', name)
    return optimizers.build_chain(names, hparams, options=options, key=key)


def to_jax(tree):
    return jax.tree.map(jnp.asarray, tree)


def to_numpy64(tree):
    return {k: np.asarray(v, dtype=np.float64) for k, v in tree.items()}


# --- numpy references (float64) ---


def ref_sgd(params, grads, lr, wd=0.0, momentum=0.0):
    theta = to_numpy64(params)
    buf = None
    history = []
    for g in grads:
        g = to_numpy64(g)
        d = {k: g[k] + wd * theta[k] for k in theta}
        if momentum:
            buf = dict(d) if buf is None else {k: momentum * buf[k] + d[k] for k in theta}
            step = buf
        else:
            step = d
        theta = {k: theta[k] - lr * step[k] for k in theta}
        history.append(theta)
    return history


def ref_adam(params, grads, lr, wd=0.0, b1=0.9, b2=0.999, eps=1e-8):
    theta = to_numpy64(params)
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    history = []
    for t, g in enumerate(grads, start=1):
        g = to_numpy64(g)
        g = {k: g[k] + wd * theta[k] for k in theta}
        m = {k: b1 * m[k] + (1 - b1) * g[k] for k in theta}
        v = {k: b2 * v[k] + (1 - b2) * g[k] ** 2 for k in theta}
        mhat = {k: m[k] / (1 - b1**t) for k in theta}
        vhat = {k: v[k] / (1 - b2**t) for k in theta}
        theta = {k: theta[k] - lr * mhat[k] / (np.sqrt(vhat[k]) + eps) for k in theta}
        history.append(theta)
    return history


def assert_history_close(got, want, atol=ATOL, rtol=RTOL):
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want)):
        assert set(g) == set(w)
        for k in w:
            np.testing.assert_allclose(
                np.asarray(g[k]), w[k], atol=atol, rtol=rtol, err_msg=f'step {step}, leaf {k}')


# --- 1. deterministic optimizers against numpy ---


CASES = {
    'sgd': (dict(name='sgd', learning_rate=0.1),
            lambda p, g: ref_sgd(p, g, lr=0.1)),
    'sgd_momentum': (dict(name='sgd', learning_rate=0.1, momentum=0.9),
                     lambda p, g: ref_sgd(p, g, lr=0.1, momentum=0.9)),
    'sgd_l2': (dict(name='sgd', learning_rate=0.1, weight_decay=0.1),
               lambda p, g: ref_sgd(p, g, lr=0.1, wd=0.1)),
    'sgd_momentum_l2': (dict(name='sgd', learning_rate=0.1, momentum=0.9, weight_decay=0.1),
                        lambda p, g: ref_sgd(p, g, lr=0.1, momentum=0.9, wd=0.1)),
    'adam': (dict(name='adam', learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8),
             lambda p, g: ref_adam(p, g, lr=0.01, b1=0.9, b2=0.999, eps=1e-8)),
    'adam_l2': (dict(name='adam', learning_rate=0.01, weight_decay=0.1, b1=0.9, b2=0.999, eps=1e-8),
                lambda p, g: ref_adam(p, g, lr=0.01, wd=0.1, b1=0.9, b2=0.999, eps=1e-8)),
    'proper_adam': (dict(name='adam', learning_rate=0.01, b1=0.99, b2=0.99, eps=1e-8),
                    lambda p, g: ref_adam(p, g, lr=0.01, b1=0.99, b2=0.99, eps=1e-8)),
    'proper_adam_l2': (dict(name='adam', learning_rate=0.01, weight_decay=0.01, b1=0.99, b2=0.99,
                            eps=1e-8),
                       lambda p, g: ref_adam(p, g, lr=0.01, wd=0.01, b1=0.99, b2=0.99, eps=1e-8)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_matches_numpy_reference(case):
    kwargs, ref = CASES[case]
    kwargs = dict(kwargs)
    name = kwargs.pop('name')
    params, grads = make_params(), make_grads()
    opt = make_optimizer(name, perturbation=False, **kwargs)
    got, _ = run_optax(opt, params, grads)
    assert_history_close(got, ref(params, grads))


def test_sgd_momentum_first_step_is_plain_gradient():
    # PyTorch starts the buffer at the first gradient (not (1 - mu) * g, not 0).
    params, grads = make_params(), make_grads(1)
    opt = make_optimizer('sgd', learning_rate=0.1, momentum=0.9, perturbation=False)
    got, _ = run_optax(opt, params, grads)
    want = {k: params[k] - 0.1 * grads[0][k] for k in params}
    for k in params:
        np.testing.assert_allclose(np.asarray(got[0][k]), want[k], atol=ATOL, rtol=RTOL)


# --- 2. perturbation=True with noise 0 is the unperturbed optimizer ---


@pytest.mark.parametrize('case', sorted(CASES))
def test_zero_noise_perturbation_is_identity(case):
    kwargs = dict(CASES[case][0])
    name = kwargs.pop('name')
    params, grads = make_params(), make_grads()
    plain, _ = run_optax(make_optimizer(name, perturbation=False, **kwargs), params, grads)
    perturbed, _ = run_optax(
        make_optimizer(name, perturbation=True, noise_scale=0.0, key=jax.random.key(3),
                                  **kwargs),
        params, grads)
    for p, q in zip(plain, perturbed):
        for k in p:
            np.testing.assert_array_equal(np.asarray(p[k]), np.asarray(q[k]))


# --- 3. the S&P noise ---


SIGMA = 0.5
NOISE_SHAPES = {'w': (250, 200), 'b': (50_000,)}   # 100k elements over two leaves


def zero_params():
    return {k: jnp.zeros(s, jnp.float32) for k, s in NOISE_SHAPES.items()}


def noise_optimizer(key, sigma=SIGMA, name='sgd'):
    return make_optimizer(name, learning_rate=0.0, weight_decay=0.0, noise_scale=sigma,
                                     perturbation=True, key=key)


def noise_steps(key, n_steps=2, sigma=SIGMA):
    """Parameter change per step for lr 0, wd 0 on zero params with zero gradients."""
    params = zero_params()
    grads = [jax.tree.map(jnp.zeros_like, params)] * n_steps
    history, state = run_optax(noise_optimizer(key, sigma), params, grads)
    prev = params
    deltas = []
    for p in history:
        deltas.append(jax.tree.map(lambda a, b: np.asarray(a - b), p, prev))
        prev = p
    return deltas, state


def key_bits(key):
    return np.asarray(jax.random.key_data(key))


def test_noise_statistics():
    deltas, _ = noise_steps(jax.random.key(0), n_steps=2)
    for delta in deltas:
        flat = np.concatenate([delta[k].ravel() for k in sorted(delta)])
        n = flat.size
        assert n == 100_000
        # mean ~ N(0, sigma^2 / n): 5 standard errors.
        assert abs(flat.mean()) < 5 * SIGMA / np.sqrt(n)
        # sample std has standard error ~ sigma / sqrt(2 n).
        assert abs(flat.std() - SIGMA) < 5 * SIGMA / np.sqrt(2 * n)
        for k, leaf in delta.items():   # every leaf is perturbed at the right scale
            m = leaf.size
            assert abs(leaf.mean()) < 5 * SIGMA / np.sqrt(m), k
            assert abs(leaf.std() - SIGMA) < 5 * SIGMA / np.sqrt(2 * m), k


def test_noise_differs_between_leaves_and_steps():
    deltas, _ = noise_steps(jax.random.key(0), n_steps=2)
    first, second = deltas
    # Leaves get different noise: compare the overlapping first elements.
    m = min(first['w'].size, first['b'].size)
    a, b = first['w'].ravel()[:m], first['b'].ravel()[:m]
    assert not np.allclose(a, b)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(m)
    # Consecutive steps get different (uncorrelated) noise.
    for k in first:
        assert not np.allclose(first[k], second[k]), k
        assert abs(np.corrcoef(first[k].ravel(), second[k].ravel())[0, 1]) < 5 / np.sqrt(first[k].size)


def test_key_advances_in_state():
    key = jax.random.key(0)
    opt = noise_optimizer(key)
    params = zero_params()
    state = opt.init(params)
    assert isinstance(state[-1], optimizers.PerturbState)
    np.testing.assert_array_equal(key_bits(state[-1].key), key_bits(key))
    keys = [key_bits(state[-1].key)]
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):
        _, state = opt.update(zeros, state, params)
        keys.append(key_bits(state[-1].key))
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert not np.array_equal(keys[i], keys[j]), (i, j)


def test_noise_depends_on_key_and_is_deterministic():
    d0, s0 = noise_steps(jax.random.key(0))
    d0_again, s0_again = noise_steps(jax.random.key(0))
    d1, _ = noise_steps(jax.random.key(1))
    for a, b in zip(d0, d0_again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(key_bits(s0[-1].key), key_bits(s0_again[-1].key))
    for a, b in zip(d0, d1):
        for k in a:
            assert not np.allclose(a[k], b[k]), k


def test_noise_lands_after_the_step():
    # S&P with lr > 0 and wd > 0: params = SGD step + sigma * noise, where the noise is the one
    # the same key gives with lr 0 (the noise does not depend on the gradient).
    params, grads = make_params(), make_grads()
    key = jax.random.key(7)
    lr, wd, sigma = 0.1, 0.01, 0.05
    got, _ = run_optax(
        make_optimizer('sgd', learning_rate=lr, weight_decay=wd, noise_scale=sigma,
                                  perturbation=True, key=key),
        params, grads)
    # Reference: the numpy SGD step, with the noise read from the optimizer's own key stream.
    opt0 = make_optimizer('sgd', learning_rate=0.0, noise_scale=sigma,
                                     perturbation=True, key=key)
    zeros = jax.tree.map(jnp.zeros_like, to_jax(params))
    state0 = opt0.init(zeros)
    theta = to_numpy64(params)
    for step, g in enumerate(grads):
        noise, state0 = opt0.update(zeros, state0, zeros)
        g = to_numpy64(g)
        theta = {k: theta[k] - lr * (g[k] + wd * theta[k]) + np.asarray(noise[k], np.float64)
                 for k in theta}
        for k in theta:
            np.testing.assert_allclose(np.asarray(got[step][k]), theta[k], atol=ATOL, rtol=RTOL,
                                       err_msg=f'step {step}, leaf {k}')


# --- 4. traced hyperparameters (jit + vmap over a sweep) ---


SWEEP = {
    'learning_rate': np.array([0.1, 0.01, 0.3], np.float32),
    'weight_decay': np.array([0.0, 0.1, 0.01], np.float32),
    'noise_scale': np.array([0.0, 0.05, 0.2], np.float32),
}


def _run_steps(opt, params, grads):
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize('name,extra', [('sgd', dict(momentum=0.9)), ('adam', {})])
def test_traced_hyperparameters(name, extra):
    params, grads = to_jax(make_params()), [to_jax(g) for g in make_grads(3)]
    key = jax.random.key(11)

    @jax.jit
    @jax.vmap
    def sweep(lr, wd, ns):
        opt = make_optimizer(name, learning_rate=lr, weight_decay=wd, noise_scale=ns,
                                        perturbation=True, key=key, **extra)
        return _run_steps(opt, params, grads)[0]

    batched = sweep(SWEEP['learning_rate'], SWEEP['weight_decay'], SWEEP['noise_scale'])
    for i in range(3):
        opt = make_optimizer(
            name, learning_rate=float(SWEEP['learning_rate'][i]),
            weight_decay=float(SWEEP['weight_decay'][i]), noise_scale=float(SWEEP['noise_scale'][i]),
            perturbation=True, key=key, **extra)
        want, _ = _run_steps(opt, params, grads)
        for k in want:
            np.testing.assert_allclose(np.asarray(batched[k][i]), np.asarray(want[k]),
                                       atol=ATOL, rtol=RTOL, err_msg=f'sweep point {i}, leaf {k}')
    # The sweep points differ from one another (the hyperparameters were not constant-folded).
    assert not np.allclose(np.asarray(batched['w'][0]), np.asarray(batched['w'][1]))


# --- 5. errors ---


def test_unknown_optimizer_name_raises():
    with pytest.raises(KeyError, match='rmsprop') as info:
        make_optimizer('rmsprop', learning_rate=0.1)
    for allowed in registry.OPTIMIZERS:
        assert allowed in str(info.value)
    assert set(registry.OPTIMIZERS) == {'sgd', 'adam', 'upgd', 'idbd', 'autostep', 'metaoptimize', 'obgd'}
    # Every registered optimizer is one and builds a chain with coupled L2 (and S&P's noise).
    params = to_jax(make_params())
    for name, method in registry.OPTIMIZERS.items():
        assert method.name == name and method.kind == 'optimizer'
        state = make_optimizer(name, perturbation=True, key=jax.random.key(0), learning_rate=0.1).init(params)
        assert isinstance(state[-1], optimizers.PerturbState), name


def test_perturb_init_without_key_raises():
    params = to_jax(make_params())
    with pytest.raises(ValueError, match='key'):
        optimizers.perturb(0.1).init(params)
    with pytest.raises(ValueError, match='key'):
        make_optimizer('sgd', learning_rate=0.1, perturbation=True).init(params)
    # Without the perturbation no key is needed.
    make_optimizer('sgd', learning_rate=0.1, perturbation=False).init(params)


def test_perturb_update_without_key_uses_state_key():
    # An optimizer built without a key may still update a state initialised with one.
    params = to_jax(make_params())
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = optimizers.perturb(0.1, jax.random.key(5)).init(params)
    a, sa = optimizers.perturb(0.1).update(zeros, state)
    b, sb = optimizers.perturb(0.1, jax.random.key(6)).update(zeros, state)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    np.testing.assert_array_equal(key_bits(sa.key), key_bits(sb.key))


# --- 6. a learner's optimizer, built from a config ---


@pytest.mark.parametrize('name,momentum,b1,b2', [('sgd', 0.9, 0.9, 0.999), ('sgd', 0.0, 0.9, 0.999),
                                                 ('adam', 0.0, 0.99, 0.99)])
def test_from_config_matches_make_optimizer(name, momentum, b1, b2):
    # The program of a config's variant holds coupled L2, the configured optimizer and, for a
    # variant with noise, S&P's noise; its optimizer step is the chain of those methods.
    cfg = config_lib.base_config()
    cfg.optimizer.name = name
    cfg.optimizer.momentum = momentum
    cfg.optimizer.eps = 1e-8
    cfg.hparams.update(b1=b1, b2=b2)
    hparams = dict(learning_rate=0.05, weight_decay=0.01, noise_scale=0.1)
    params, grads = make_params(), make_grads()
    key = jax.random.key(2)

    def from_config(variant):
        with cfg.unlocked():
            cfg.variants = ml_collections.ConfigDict({'v': variant})
        (group,) = config_lib.groups(cfg)
        learner = Learner.from_config(None, 'mse', group.config, group, num_chunks=1)
        return learner.make_optimizer(learner_hparams(learner, group.hparams[0]), key)

    def learner_hparams(learner, values):
        return {n: values[n] for n, _ in learner.traced}

    for perturbation in (False, True):
        variant = dict(hparams, noise_scale=hparams['noise_scale'] if perturbation else 0.0)
        opt = from_config(variant)
        assert isinstance(opt.init(to_jax(params))[-1], optimizers.PerturbState) == perturbation
        got, _ = run_optax(opt, params, grads)
        want, _ = run_optax(
            make_optimizer(name, momentum=momentum, b1=b1, b2=b2, eps=1e-8,
                           perturbation=perturbation, key=key, **variant),
            params, grads)
        for p, q in zip(got, want):
            for k in p:
                np.testing.assert_array_equal(np.asarray(p[k]), np.asarray(q[k]))
    # And it is the numpy reference when unperturbed.
    got, _ = run_optax(from_config(dict(hparams, noise_scale=0.0)), params, grads)
    if name == 'sgd':
        ref = ref_sgd(params, grads, lr=0.05, wd=0.01, momentum=momentum)
    else:
        ref = ref_adam(params, grads, lr=0.05, wd=0.01, b1=b1, b2=b2, eps=1e-8)
    assert_history_close(got, ref)
