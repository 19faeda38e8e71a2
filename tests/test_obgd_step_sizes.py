"""ObGD with TIDBD's per-weight step sizes (obgd.step_sizes='tidbd'): the transform against a numpy
loop of the equations (ddl.learners.obgd's docstring) with an episode end, the bound on and off and
the clip; theta = 0 is ObGD exactly; the 'policy' entry keeps ObGD; jit + vmap over seeds and a
traced meta step size; CBP's optimizer-state reset; the config checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddl.learners import obgd as obgd_lib
from ddl.learners import optimizers
from ddl.learners.method import map_reset_state

GAMMA, LAM = 0.99, 0.8
DELTAS = [0.3, -0.7, 2.5, 0.1, -1.5, 0.4]
DONES = [False, False, True, False, False, False]      # one episode end, mid-way


def _problem(seed=0, steps=6):
  """Two networks; gradients large enough that M > 1 in some steps of the critic, not in others."""
  rng = np.random.default_rng(seed)
  params = {'policy': {'w': rng.normal(size=(3, 2)), 'b': rng.normal(size=2)},
            'value': {'w': rng.normal(size=(4, 3)), 'b': rng.normal(size=3)}}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape) * 0.02, params) for _ in range(steps)]
  grads[4] = jax.tree.map(lambda g: g * 40, grads[4])
  return params, grads


def _numpy(params, grads, deltas, dones, *, alpha, kappas, theta, beta_range, tidbd):
  """The equations in float64 with grad f = -g, per network (a dict entry): TIDBD inside the bound for
  the entries in `tidbd`, upstream's ObGD for the others. Returns (params, z of grad f, log alpha_i,
  h, whether M > 1 per step of each network)."""
  f64 = lambda tree: {k: {n: np.array(v, np.float64) for n, v in net.items()} for k, net in tree.items()}
  w = f64(params)
  zeros = lambda: {k: {n: np.zeros_like(v) for n, v in net.items()} for k, net in w.items()}
  z, h = zeros(), zeros()
  beta = {k: {n: np.full_like(v, np.log(alpha)) for n, v in net.items()} for k, net in w.items()}
  bound_on = []
  for g, delta, done in zip(grads, deltas, dones):
    on = {}
    for k in w:
      df = {n: -np.asarray(g[k][n], np.float64) for n in w[k]}             # grad f
      if k in tidbd:
        for n in w[k]:
          beta[k][n] = np.clip(beta[k][n] + theta * delta * df[n] * h[k][n], *beta_range)
      a = {n: np.exp(beta[k][n]) if k in tidbd else np.full_like(w[k][n], alpha) for n in w[k]}
      for n in w[k]:
        z[k][n] = GAMMA * LAM * z[k][n] + df[n]
      m = kappas[k] * max(abs(delta), 1.0) * sum((a[n] * np.abs(z[k][n])).sum() for n in w[k])
      on[k] = m > 1
      for n in w[k]:
        a_eff = a[n] / max(m, 1.0)
        w[k][n] = w[k][n] + a_eff * delta * z[k][n]
        if k in tidbd:
          h[k][n] = h[k][n] * np.maximum(1 - a_eff * df[n] * z[k][n], 0) + a_eff * delta * z[k][n]
        if done:
          z[k][n][:] = 0.0
    bound_on.append(on)
  return w, z, beta, h, bound_on


def _run(opt, params, grads, deltas, dones):
  """The transform's steps (eager); returns (params, state, updates of every step)."""
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
  state = opt.init(params)
  steps = []
  for g, delta, done in zip(grads, deltas, dones):
    updates, state = opt.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g), state, params,
                                td_error=delta, done=done)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    steps.append(updates)
  return params, state, steps


def _close(got, want, **tol):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, **tol), got, want)


@pytest.mark.parametrize('alpha, theta, beta_range, per_network', [
    (1.0, 0.5, (-10.0, 2.0), True),      # stream AC's setting, a large theta (beta moves at float32 scale)
    (0.5, 20.0, (-1.2, -0.5), True),     # alpha != 1; the clip of log alpha_i binds on both sides
    (0.5, 2.0, (-10.0, 2.0), False),     # one network: TIDBD on every entry, policy included
])
def test_tidbd_matches_a_numpy_loop_of_the_equations(alpha, theta, beta_range, per_network):
  params, grads = _problem()
  kappas = {'policy': 3.0 if per_network else 2.0, 'value': 2.0}
  opt = obgd_lib.obgd(alpha, GAMMA, LAM, kappa=2.0, kappa_policy=3.0, per_network=per_network,
                      step_sizes='tidbd', meta_step_size=theta, beta_range=beta_range)
  got, state, _ = _run(opt, params, grads, DELTAS, DONES)
  tidbd = ('value',) if per_network else ('policy', 'value')
  if per_network:
    want, z, beta, h, bound_on = _numpy(params, grads, DELTAS, DONES, alpha=alpha, kappas=kappas, theta=theta,
                                        beta_range=beta_range, tidbd=tidbd)
  else:   # one network: one sum over both entries
    merge = lambda t: {'all': {f'{k}/{n}': v for k, net in t.items() for n, v in net.items()}}
    split = lambda t: {k: {n: t['all'][f'{k}/{n}'] for n in params[k]} for k in params}
    want, z, beta, h, bound_on = _numpy(merge(params), [merge(g) for g in grads], DELTAS, DONES, alpha=alpha,
                                        kappas={'all': 2.0}, theta=theta, beta_range=beta_range, tidbd=('all',))
    want, z, beta, h = split(want), split(z), split(beta), split(h)
    bound_on = [{'value': b['all']} for b in bound_on]
  assert any(b['value'] for b in bound_on) and not all(b['value'] for b in bound_on)   # the bound on and off
  _close(got, want, rtol=1e-5, atol=1e-6)
  _close(state.trace, jax.tree.map(lambda x: -x, z), rtol=1e-5, atol=1e-7)   # the state's z is of g = -grad f
  _close(state.h, h, rtol=1e-4, atol=1e-7)
  _close(jax.tree.map(lambda b: np.log(alpha) + b, state.beta), beta, rtol=1e-5, atol=1e-6)
  for k in tidbd:
    spread = np.concatenate([np.ravel(b) for b in beta[k].values()])
    assert spread.std() > 1e-3, spread                   # the step sizes moved apart
    if beta_range[1] < 0:
      assert np.isclose(spread, beta_range[0]).any() and np.isclose(spread, beta_range[1]).any()
  if per_network:                                        # the actor's state: plain ObGD, beta and h 0
    _close(state.beta['policy'], jax.tree.map(np.zeros_like, params['policy']), atol=0)
    _close(state.h['policy'], jax.tree.map(np.zeros_like, params['policy']), atol=0)
  # z was reset at the episode end, h and beta carried over; the reported step sizes are the critic's
  sizes = obgd_lib.step_sizes(state, alpha, per_network)
  assert set(sizes) == set(tidbd if per_network else params)
  _close(sizes['value'], jax.tree.map(np.exp, beta['value']), rtol=1e-5)


@pytest.mark.parametrize('alpha, per_network', [(1.0, True), (0.5, True), (0.5, False)])
def test_zero_meta_step_size_is_obgd_exactly(alpha, per_network):
  params, grads = _problem(1)
  common = dict(learning_rate=alpha, discount=GAMMA, trace_lambda=LAM, kappa=2.0, kappa_policy=3.0,
                per_network=per_network)
  _, state, got = _run(obgd_lib.obgd(**common, step_sizes='tidbd', meta_step_size=0.0), params, grads, DELTAS, DONES)
  _, plain_state, want = _run(obgd_lib.obgd(**common), params, grads, DELTAS, DONES)
  for a, b in zip(got, want):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  jax.tree.map(np.testing.assert_array_equal, state.trace, plain_state.trace)
  assert plain_state.beta is None and plain_state.h is None
  jax.tree.map(lambda b: np.testing.assert_array_equal(b, 0), state.beta)


def test_policy_keeps_obgd_and_the_critic_differs():
  params, grads = _problem(2)
  common = dict(learning_rate=1.0, discount=GAMMA, trace_lambda=LAM, kappa=2.0, kappa_policy=3.0, per_network=True)
  _, _, got = _run(obgd_lib.obgd(**common, step_sizes='tidbd', meta_step_size=20.0), params, grads, DELTAS, DONES)
  _, _, want = _run(obgd_lib.obgd(**common), params, grads, DELTAS, DONES)
  for a, b in zip(got, want):
    jax.tree.map(np.testing.assert_array_equal, a['policy'], b['policy'])
  # step 1: h = 0, so beta has not moved yet; from step 2 on the critic's steps differ
  jax.tree.map(np.testing.assert_array_equal, got[0]['value'], want[0]['value'])
  for a, b in zip(got[1:], want[1:]):
    assert not np.allclose(a['value']['w'], b['value']['w'], rtol=1e-4, atol=0)


def test_jit_vmap_over_seeds_and_a_traced_meta_step_size():
  """Through optimizers.build_chain (the learner's composition: coupled L2, then ObGD) and ObGD's
  declared reading of its step sizes: seeds x meta step sizes vmapped in one program, each against the
  numpy loop."""
  obgd_config = dict(per_network=True, step_sizes='tidbd', beta_min=-10.0, beta_max=2.0)
  options = {h.name: obgd_config.get(h.name, h.default) for h in obgd_lib.METHOD.static}
  thetas, seeds = [0.0, 0.1, 1.0], [0, 1]
  problems = [_problem(seed) for seed in seeds]
  stack = lambda trees: jax.tree.map(lambda *x: jnp.stack([jnp.asarray(a, jnp.float32) for a in x]), *trees)

  def run(params, grads, theta):
    hparams = dict(learning_rate=1.0, weight_decay=0.0, discount=GAMMA, trace_lambda=LAM,
                   kappa=2.0, kappa_policy=3.0, meta_step_size=theta)
    opt = optimizers.build_chain(('l2', 'obgd'), hparams, options=obgd_config)
    state = opt.init(params)
    for t in range(len(DELTAS)):
      updates, state = opt.update(jax.tree.map(lambda g: g[t], grads), state, params, td_error=DELTAS[t],
                                  done=DONES[t], key=jax.random.PRNGKey(0), loss=0.0)
      params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, obgd_lib.METHOD.step_sizes(state, params, options, hparams)[0]

  runs = [(s, t) for s in range(len(seeds)) for t in thetas]
  got, sizes = jax.jit(jax.vmap(run))(stack([problems[s][0] for s, _ in runs]),
                                      stack([stack(problems[s][1]) for s, _ in runs]),
                                      jnp.asarray([t for _, t in runs], jnp.float32))
  assert set(sizes) == {'value'}
  for i, (s, theta) in enumerate(runs):
    params, grads = problems[s]
    want, _, beta, _, _ = _numpy(params, grads, DELTAS, DONES, alpha=1.0, kappas={'policy': 3.0, 'value': 2.0},
                                 theta=theta, beta_range=(-10.0, 2.0), tidbd=('value',))
    _close(jax.tree.map(lambda x: x[i], got), want, rtol=1e-5, atol=1e-6)
    _close(jax.tree.map(lambda x: x[i], sizes['value']), jax.tree.map(np.exp, beta['value']), rtol=1e-5)


def test_a_replaced_unit_loses_its_traces_and_keeps_its_step_sizes():
  params, grads = _problem(3)
  opt = obgd_lib.obgd(1.0, GAMMA, LAM, per_network=True, step_sizes='tidbd', meta_step_size=1.0)
  _, state, _ = _run(opt, params, grads, DELTAS, [False] * len(DELTAS))
  zero_value = lambda sub: {k: jax.tree.map(jnp.zeros_like, v) if k == 'value' else v for k, v in sub.items()}
  reset = map_reset_state((state,), params, zero_value, zero_value)[0]
  for field in ('trace', 'h'):
    jax.tree.map(lambda x: np.testing.assert_array_equal(x, 0), getattr(reset, field)['value'])
    jax.tree.map(np.testing.assert_array_equal, getattr(reset, field)['policy'], getattr(state, field)['policy'])
    assert np.abs(getattr(state, field)['value']['w']).max() > 0
  jax.tree.map(np.testing.assert_array_equal, reset.beta, state.beta)
  # fixed step sizes: the state keeps its one field's behaviour (z zeroed), beta and h stay None
  _, plain, _ = _run(obgd_lib.obgd(1.0, per_network=True), params, grads, DELTAS, [False] * len(DELTAS))
  reset = map_reset_state((plain,), params, zero_value, zero_value)[0]
  assert reset.beta is None and reset.h is None
  jax.tree.map(lambda x: np.testing.assert_array_equal(x, 0), reset.trace['value'])


def test_step_sizes_are_validated():
  from conftest import load_config  # pylint: disable=g-import-not-at-top
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl import experiments  # pylint: disable=g-import-not-at-top
  from ddl.experiments import StreamAC  # pylint: disable=g-import-not-at-top
  config = load_config('stream_ant', 'tidbd')
  config_lib.validate(config, StreamAC)
  config.variants.tidbd.obgd.step_sizes = 'idbd'
  with pytest.raises(config_lib.ConfigError, match=r"variant\(s\) tidbd: obgd.step_sizes: 'idbd' is not known"):
    config_lib.validate(config, StreamAC)
  config = load_config('stream_ant', 'tidbd')
  config.optimizer.name = 'adam'   # stream AC steps its optimizer with td_error and done: only ObGD takes them
  with pytest.raises(config_lib.ConfigError, match=r"variant\(s\) tidbd: optimizer.name=adam: experiment stream_ac "
                                                   r"steps its optimizer with td_error, done, which adam does not "
                                                   r"take; use one of \('obgd',\)"):
    config_lib.validate(config, StreamAC)
  # TIDBD's settings in a variant whose program holds another optimizer: they belong to ObGD
  config = load_config('slowly_changing_regression', 'smoke,bp')
  config.variants.bp.obgd = dict(step_sizes='tidbd')
  with pytest.raises(config_lib.ConfigError, match='variant bp: obgd.step_sizes belongs to obgd, which this '
                                                   'variant does not use'):
    config_lib.validate(config, experiments.get(config.experiment))
  config = load_config('stream_ant', 'tidbd')
  config.obgd.beta_min = 3.0
  with pytest.raises(config_lib.ConfigError, match=r'variant\(s\) tidbd: obgd .* obgd.beta_min must be < obgd.beta_max, got 3.0 and 2.0'):
    config_lib.validate(config, StreamAC)
  config = load_config('stream_ant', 'tidbd')
  config.variants.tidbd.meta_step_size = -1.0
  with pytest.raises(config_lib.ConfigError, match='variant tidbd: hparams.meta_step_size'):
    config_lib.validate(config, StreamAC)
  with pytest.raises(ValueError, match='step_sizes'):
    obgd_lib.obgd(step_sizes='autostep')
