"""TRAC (Muppidi, Zhang & Yang, "Fast TRAC: A Parameter-Free Optimizer for Lifelong Reinforcement
Learning", NeurIPS 2024) as an optax wrapper around any base optimizer (SGD, Adam, UPGD, ...).

The authors' PyTorch package (`ComputationalRobotics/TRAC`, `package/src/trac_optimizer/trac.py`,
the same as the repository's `trac.py` and Plasticine's `plasticine/trac.py`) per step t, with g_t
the loss gradient at the parameters theta_t, u_t the base optimizer's update (its step from theta_t
with gradient g_t) and theta_ref the parameters at the first update:

    Delta_{t-1} = (theta_t - theta_ref) / (S_{t-1} + eps)     recovered from the parameters
    h_t         = <g_t, Delta_{t-1}>                           one scalar over the whole tree
    Delta_t     = Delta_{t-1} + u_t
    v_{t,j}     = beta_j^2 v_{t-1,j} + h_t^2                   for each of the n discounts beta_j
    sigma_{t,j} = beta_j sigma_{t-1,j} - h_t
    s_{t,j}     = s_init / erfi(1/sqrt 2) * erfi(sigma_{t,j} / (sqrt 2 sqrt(v_{t,j}) + eps))
    S_t         = sum_j s_{t,j}
    theta_{t+1} = theta_ref + max(S_t, 0) Delta_t

betas = (0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999), s_init (the code's `s_prev`) = 1e-8,
eps = 1e-8; state at start: s = 0, sigma = 1e-8, v = 0. The returned update is
theta_{t+1} - theta_t (params + update = theta_ref + max(S_t, 0) Delta_t). The base optimizer's
update is computed at the parameters theta_t (the code steps the base optimizer in place on them),
so a base optimizer that reads the parameters (weight decay, UPGD's utility) reads theta_t. g_t is
the gradient TRAC receives: in ddl's chain, the loss gradient before the gradient terms that TRAC
wraps with the optimizer (L2 Init, L2), as the code's p.grad is before PyTorch's weight_decay.

Static options (config section `optimizer`): `trac` (wrap or not), `trac_s_init` (s_init),
`trac_delta`, `trac_clamp`:
- `trac_delta='params'` (default, the code): Delta_{t-1} is recovered from the parameters as above.
  In exact arithmetic it is max(S_{t-1}, 0) / (S_{t-1} + eps) times the previous Delta, hence:
  (1) Delta leaks while S is of the order of eps (s_init = eps = 1e-8: early in training);
  (2) once S_t <= 0 the parameters are theta_ref, the next recovered Delta is 0, so h = 0 from then
  on and sigma_j, sqrt(v_j) decay alike: the run stays frozen at theta_ref until eps tips the sum
  (the fast tuners' terms fade first), and for good if every sigma_j < 0, e.g. when S turns
  negative at step 2 (h_2 = <g_2, u_1> > 1e-8: a first SGD step against the next gradient;
  `tests/test_trac.py` shows it); (3) in float32 theta_t - theta_ref cancels: a weight w records S Delta only
  where it exceeds about |w| 6e-8, so while S ~ 1e-8 the tuner's h_t comes mostly from weights near
  0 (zero-initialised biases) and the others stay at theta_ref bit for bit. All three are the
  authors' behaviour.
- `trac_delta='state'`: Delta_t = Delta_{t-1} + u_t is kept in the optimizer state (the meta-tuner
  form theta = theta_ref + S x, x the base optimizer's accumulated steps): exact in float32, no
  leak, and h_t = <g_t, Delta_{t-1}> goes on while S <= 0, so S can recover. One more params-sized
  buffer; everything else as above.
- `trac_clamp=False`: theta_{t+1} = theta_ref + S_t Delta_t as the authors' JAX port (no max): a
  negative S steps against Delta; in 'params' mode the recovery divides by S + eps, singular at
  S = -eps (as the port).

Departures from the authors' code (the PyTorch package and the JAX port
`package/src/trac_optimizer/experimental/jax/trac.py`):
- erfi is exact here (2/sqrt(pi) exp(x^2) Dawson(x), ~1e-6 relative in float32 for |x| < 4): the
  PyTorch code's Weideman (1994) approximation drops Weideman's zero padding and is ~1% off
  (erfi(x)/erfi(1/sqrt 2) off by -0.3% .. +0.9%); the JAX port's is about half of erfi (FFT
  normalised by 4M, one coefficient dropped), so its erfi(x)/erfi(1/sqrt 2) is off by -0.5% at
  x = 0.1, +4% at 2, +15% at 4, +28% at 6.
- The JAX port also starts s at s_init (no effect: Delta_0 = 0), keeps the betas in its state and
  writes Delta and h with the opposite sign (the same steps). The PyTorch code raises on NaN; here
  nothing is checked (jit). As in both, erfi overflows (S = inf, parameters inf/NaN) once
  sigma / sqrt(2 v) exceeds ~9.3 in float32 (e.g. h_t of one sign and steady size for ~170 steps:
  the beta = 0.999999 tuner's ratio grows like sqrt(t / 2)).

Resets (`state_fields`): a re-initialised unit or layer (CBP, ReDo, resets, plasticity injection)
gets theta_ref = its new values ('reinit'): it is anchored where it restarts, as every weight is at
the start, and its Delta is 0 there: in 'params' mode through theta_t - theta_ref = 0, in 'state'
mode through Delta 'zero' (a fresh unit has taken no base step). Keeping the old anchor (or
zeroing it) would instead read the jump to the fresh weights as a displacement divided by S ~ 1e-8
(h_t and the whole tuner swamped), and keeping Delta would move the fresh unit by the old unit's
S Delta at the next step. The tuner (s, sigma, v) is one global scale and is kept. The base
optimizer's state is its own field (`TracState.inner`), so its params-shaped subtrees (momentum,
Adam's moments) are zeroed, or handled by their own declarations, as without TRAC.
"""
from typing import Any, NamedTuple, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ddl.learners.hyper import Hyper
from ddl.learners.method import Method, selected

BETAS = (0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)   # the authors' discounts, one tuner each
S_INIT = 1e-8       # the code's s_prev: the scale's initial size
EPS = 1e-8
SIGMA_INIT = 1e-8   # sigma at the start (the code's torch.full(..., 1e-8))
DELTA_MODES = ('params', 'state')

HYPERS = (
    Hyper('trac', False, choices=(False, True), traced=False,
          doc='wrap the optimizer (and the gradient terms before it) in TRAC (Muppidi et al. 2024)'),
    Hyper('trac_s_init', S_INIT, low=0, open_low=True, traced=False,
          doc="TRAC: s_init, the scale S's initial size (the authors' s_prev 1e-8)"),
    Hyper('trac_delta', 'params', choices=DELTA_MODES, traced=False,
          doc="TRAC: Delta recovered from (theta - theta_ref) / (S + eps) each step ('params', the "
              "authors' code) or accumulated exactly in the optimizer state ('state')"),
    Hyper('trac_clamp', True, choices=(True, False), traced=False,
          doc='TRAC: theta = theta_ref + max(S, 0) Delta (True, the PyTorch package) or + S Delta (False, '
              "the authors' JAX port)"),
)


class TracAnchor(NamedTuple):
  theta_ref: Any   # params-shaped: the reference point (the parameters at the first update)
  delta: Any       # params-shaped Delta in 'state' mode; None in 'params' mode


class TracState(NamedTuple):
  inner: Any            # the base optimizer's state
  anchor: TracAnchor
  count: chex.Array     # int32 (): updates so far
  s: chex.Array         # (n,): s_{t,j}, S_t = sum(s)
  sigma: chex.Array     # (n,): discounted sum of -h
  variance: chex.Array  # (n,): discounted sum of h^2


def erfi(x: chex.Array) -> jax.Array:
  """The imaginary error function -i erf(ix) = 2/sqrt(pi) exp(x^2) D(x), D Dawson's integral;
  inf beyond |x| ~ 9.3 in float32, ~26.6 in float64."""
  x = jnp.asarray(x)
  return (2 / np.sqrt(np.pi)) * jnp.exp(x * x) * jax.scipy.special.dawsn(x)


def scale(state: TracState, clamp: bool = True) -> jax.Array:
  """TRAC's current factor on Delta, max(S_t, 0) (S_t with clamp=False); 0 before the first update."""
  return jnp.maximum(jnp.sum(state.s), 0) if clamp else jnp.sum(state.s)


def trac(inner: optax.GradientTransformation, *, s_init: float = S_INIT, delta: str = 'params', clamp: bool = True,
         betas: Sequence[float] = BETAS, eps: float = EPS) -> optax.GradientTransformationExtraArgs:
  """TRAC around `inner`; returns theta_ref + max(S, 0) Delta - params (see the module docstring).

  inner: any optax transform (its extra arguments, e.g. key=, curvature=, reach it unchanged).
  s_init, betas, eps: the authors' constants (static). delta: 'params' (the code) or 'state'.
  clamp: max(S, 0) (True, the PyTorch package) or S (False, the JAX port) on Delta (static).
  `update(grads, state, params, **extra_args)` needs the parameters.
  """
  if delta not in DELTA_MODES:
    raise ValueError(f'trac: delta must be one of {DELTA_MODES}, got {delta!r}.')
  if not isinstance(clamp, bool):
    raise TypeError(f'trac: clamp must be a Python bool, got {clamp!r}.')
  if not s_init > 0:
    raise ValueError(f'trac: s_init must be > 0, got {s_init!r}.')
  inner = optax.with_extra_args_support(inner)
  betas_np = np.asarray(betas, np.float64)

  def dtype_of(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.promote_types(jnp.result_type(*leaves), jnp.float32) if leaves else jnp.float32

  def init_fn(params):
    dtype = dtype_of(params)
    copy = lambda tree: jax.tree.map(lambda p: jnp.array(p, copy=True), tree)
    anchor = TracAnchor(theta_ref=copy(params),
                        delta=jax.tree.map(jnp.zeros_like, params) if delta == 'state' else None)
    n = len(betas_np)
    return TracState(inner=inner.init(params), anchor=anchor, count=jnp.zeros((), jnp.int32),
                     s=jnp.zeros((n,), dtype), sigma=jnp.full((n,), SIGMA_INIT, dtype),
                     variance=jnp.zeros((n,), dtype))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError('trac: update needs the parameters (theta_t - theta_ref gives Delta): '
                       'call update(grads, state, params).')
    base, inner_state = inner.update(updates, state.inner, params, **extra_args)
    dtype = state.s.dtype
    b = jnp.asarray(betas_np, dtype)
    first = state.count == 0
    theta_ref = jax.tree.map(lambda p, r: jnp.where(first, p, r), params, state.anchor.theta_ref)
    if delta == 'params':
      divisor = jnp.sum(state.s) + eps
      delta_prev = jax.tree.map(lambda p, r: (p - r) / divisor.astype(p.dtype), params, theta_ref)
    else:
      delta_prev = state.anchor.delta
    h = optax.tree_utils.tree_vdot(updates, delta_prev).astype(dtype)
    new_delta = jax.tree.map(lambda d, u: d + u.astype(d.dtype), delta_prev, base)
    variance = b * b * state.variance + h * h
    sigma = b * state.sigma - h
    csi = erfi(jnp.asarray(1 / np.sqrt(2), dtype))
    s = (s_init / csi) * erfi(sigma / (np.sqrt(2) * jnp.sqrt(variance) + eps))
    factor = jnp.maximum(jnp.sum(s), 0) if clamp else jnp.sum(s)
    new_updates = jax.tree.map(lambda r, d, p: (r + factor.astype(p.dtype) * d - p).astype(p.dtype),
                               theta_ref, new_delta, params)
    anchor = TracAnchor(theta_ref=theta_ref, delta=new_delta if delta == 'state' else None)
    return new_updates, TracState(inner=inner_state, anchor=anchor, count=optax.safe_int32_increment(state.count),
                                  s=s, sigma=sigma, variance=variance)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_state(opt_state: Any) -> Optional[TracState]:
  """The first TracState inside an optimizer state, None if there is none."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, TracState))
           if isinstance(s, TracState)]
  return found[0] if found else None


METHOD = Method(
    'trac', 'wrapper', 'TRAC (Muppidi et al. 2024): parameter-free erfi-tuned scale S on the base optimizer\'s '
    'displacement from the initial parameters, theta = theta_ref + S Delta', HYPERS, section='optimizer',
    active=selected('optimizer.trac', True),
    transform=lambda b, inner: trac(inner, s_init=float(b.options['trac_s_init']), delta=b.options['trac_delta'],
                                    clamp=bool(b.options['trac_clamp'])),
    state_fields=((TracAnchor, dict(theta_ref='reinit', delta='zero')),),
    examples=(('trac', dict(optimizer=dict(trac=True))),))
