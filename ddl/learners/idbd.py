"""IDBD (Sutton 1992) and Autostep (Mahmood, Sutton, Degris & Pilarski 2012) as optax transforms.

Per-weight step sizes α = e^β for a linear unit y = Σ_i w_i x_i trained on ½ δ², δ = y* − y.
In optax terms the incoming `updates` are the loss gradient g = −δ x (exact for the loss ½ δ² of a
linear unit, `learner.loss_fn('half_mse', ...)`), so δ x_i is read as −g_i. The x_i² of the
equations is the squared gradient of the prediction w.r.t. the weight, (∂y/∂w_i)² (a Gauss-Newton
diagonal, exact for a linear unit; x_i² for a weight, 1 for a bias); it arrives as the extra
argument `curvature` (params-shaped, written c_i below). `Learner.curvature` computes it for any
network: the batch mean over examples of Σ_k c_k (∂z_k/∂w)², with c_k the loss's second
derivative in output z_k (p(1 − p) for softmax cross-entropy), the network form of IDBD (ejmejm's
`optax_idbd`, version 'prediction_grads'). For a network the equations are those below with δ x_i
read as −g_i: exact in the last linear layer, a Gauss-Newton approximation in the layers below.

IDBD (Sutton 1992, "Adapting bias by gradient descent: an incremental version of delta-bar-delta",
AAAI-92, Figure 2), per example, in this order:

    β_i ← β_i + θ δ x_i h_i                 θ = meta_step_size
    β_i ← clip(β_i, β_min, β_max)           (not in the paper: a guard, see below)
    α_i = e^{β_i}
    w_i ← w_i + α_i δ x_i
    h_i ← h_i [1 − α_i c_i]⁺ + α_i δ x_i    [z]⁺ = max(z, 0)

Autostep (Mahmood, Sutton, Degris & Pilarski 2012, "Tuning-free step-size adaptation", ICASSP,
Table 1; the paper recommends μ = 0.01, τ = 10^4), per example, in this order:

    v_i ← max(|δ x_i h_i|, v_i + (1/τ) α_i c_i (|δ x_i h_i| − v_i))
    α_i ← α_i exp(μ δ x_i h_i / v_i)        only where v_i > 0 (else α_i unchanged)
    M   = max(Σ_j α_j c_j, 1);  α_i ← α_i / M
    w_i ← w_i + α_i δ x_i
    h_i ← h_i (1 − α_i c_i) + α_i δ x_i     no [·]⁺: the paper has none (after the division by M,
                                            Σ α c ≤ 1, so 1 − α_i c_i ≥ 0 already)

with μ = meta_step_size, τ = tau. Here α is carried as β = log α: the step-size update is
β_i ← β_i + μ δ x_i h_i / v_i, then β_i ← β_i − log M, then the clip. The paper's "for each i
such that x_i ≠ 0" on the α update is the `v_i > 0` guard here (v_i = 0 iff δ x_i h_i = 0 so far,
e.g. x_i = 0 or before h_i has grown: the exponent would be 0/0). The sum Σ_j runs over every
weight of the tree: the exact Autostep for a single linear unit (ddl's `MLP(hidden=(), outputs=1)`:
20 weights and a bias), a global normaliser for anything larger (the paper's unit-wise
normaliser would sum per output unit).

The clip: β ∈ [β_min, β_max] = [-10, 2] by default (alberta-framework's range; α ∈ [4.5e-5, 7.4]).
It does not bind in Sutton's tracking task at the paper's settings (the irrelevant inputs' α fall
to ~1e-3 and below); it keeps a run with a too-large meta step size finite instead of overflowing.

The learner's `learning_rate` plays no part: α is the state. The returned update is α δ x = −α g,
so new params = params + updates (optax.apply_updates). State `IDBDState(beta, h, v)`, every field
params-shaped (vmap over seeds and over traced meta step sizes, checkpoints); IDBD keeps v at 0.
When a reset zeroes a weight's optimizer state (`method.map_reset_state`, as declared in `state_fields`), h and v are zeroed
and β, the learned step size of that position, is kept.
"""
from typing import Any, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from ddl.learners.hyper import Hyper
from ddl.learners.method import Method, selected

NAMES = ('idbd', 'autostep')
BETA_RANGE = (-10.0, 2.0)
CURVATURE_ESTIMATORS = ('sketch', 'exact')

HYPERS = (
    Hyper('meta_step_size', 0.001, low=0,
          doc="IDBD's theta / Autostep's mu / MetaOptimize's eta / ObGD's TIDBD theta: meta step size of "
              'beta = log(step size); '
              'Sutton 1992 Fig. 4 uses 0.001 (Autostep: 0.01 is the usual choice, set it per variant; '
              "MetaOptimize's default 0.001)."),
    Hyper('initial_step_size', 0.05, low=0, open_low=True,
          doc='IDBD/Autostep: step size alpha_0 of every weight at the start (Sutton 1992 Fig. 4: 0.05).'),
    Hyper('autostep_tau', 1e4, low=0, open_low=True, traced=False,
          doc="Autostep: time constant tau of the normaliser v (Mahmood et al. 2012's 10^4)."),
    Hyper('beta_min', BETA_RANGE[0], traced=False,
          doc='IDBD/Autostep (section idbd), ObGD with TIDBD (section obgd): lower clip of beta = log(step size).'),
    Hyper('beta_max', BETA_RANGE[1], traced=False,
          doc='IDBD/Autostep (section idbd), ObGD with TIDBD (section obgd): upper clip of beta = log(step size).'),
    Hyper('curvature_estimator', 'sketch', choices=CURVATURE_ESTIMATORS, traced=False,
          doc="IDBD/Autostep on a network with several outputs: the Gauss-Newton diagonal by one "
              "random-sign backward pass per example ('sketch', unbiased) or one per output ('exact')."),
)


class IDBDState(NamedTuple):
  beta: Any   # params-shaped log step sizes
  h: Any      # params-shaped traces h
  v: Any      # params-shaped Autostep normaliser v (0 for IDBD)


def step_sizes(state: IDBDState) -> Any:
  """The per-weight step sizes α = e^β of a state."""
  return jax.tree.map(jnp.exp, state.beta)


def find_state(opt_state: Any, kind: type = IDBDState) -> Optional[Any]:
  """The first `kind` state (default IDBDState; e.g. a MetaOptimizeState) inside an optimizer state
  such as an optax.chain's tuple, None if there is none."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, kind)) if isinstance(s, kind)]
  return found[0] if found else None


def idbd(meta_step_size: chex.Numeric, initial_step_size: chex.Numeric, *, autostep: bool = False,
         tau: float = 1e4, beta_range: Tuple[float, float] = BETA_RANGE) -> optax.GradientTransformationExtraArgs:
  """IDBD (autostep=False) or Autostep (autostep=True); see the module docstring for the equations.

  meta_step_size: θ (IDBD) or μ (Autostep), >= 0; initial_step_size: α_0 > 0 of every weight.
    Both may be traced arrays (a sweep under vmap).
  tau: Autostep's time constant (static). beta_range: clip of β = log α (static).

  `update(grads, state, params=None, *, curvature, **extra_args)`: `grads` is the gradient of
  ½ δ², `curvature` the params-shaped (∂y/∂w)² (x² for a linear unit's weights).
  """
  if not isinstance(autostep, bool):
    raise TypeError(f'idbd: autostep must be a Python bool (it selects the program), got {autostep!r}.')
  low, high = float(beta_range[0]), float(beta_range[1])
  if not low < high:
    raise ValueError(f'idbd: beta_range must be (low, high) with low < high, got {beta_range!r}.')
  name = 'autostep' if autostep else 'idbd'

  def init_fn(params):
    beta0 = jnp.log(jnp.asarray(initial_step_size, jnp.float32))
    beta = jax.tree.map(lambda p: jnp.full(p.shape, beta0, p.dtype), params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    return IDBDState(beta=beta, h=zeros, v=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, *, curvature=None, **extra_args):
    del params, extra_args
    if curvature is None:
      raise ValueError(f'{name}: update needs curvature=(params-shaped squared gradient of the prediction, '
                       f'x^2 for a linear unit): call update(grads, state, params, curvature=...); '
                       f"Learner.step passes it when optimizer.name is one of {NAMES}.")
    dx = jax.tree.map(lambda g: -g, updates)   # δ x
    if not autostep:
      beta = jax.tree.map(lambda b, d, h: jnp.clip(b + meta_step_size * d * h, low, high),
                          state.beta, dx, state.h)
      alpha = jax.tree.map(jnp.exp, beta)
      new_updates = jax.tree.map(lambda a, d: (a * d), alpha, dx)
      h = jax.tree.map(lambda h, a, c, d: h * jnp.maximum(1 - a * c, 0) + a * d, state.h, alpha, curvature, dx)
      return new_updates, IDBDState(beta=beta, h=h, v=state.v)
    dxh = jax.tree.map(lambda d, h: d * h, dx, state.h)
    alpha_old = jax.tree.map(jnp.exp, state.beta)
    v = jax.tree.map(lambda v, a, c, z: jnp.maximum(jnp.abs(z), v + a * c * (jnp.abs(z) - v) / tau),
                     state.v, alpha_old, curvature, dxh)
    beta = jax.tree.map(lambda b, z, v: b + jnp.where(v > 0, meta_step_size * z / jnp.where(v > 0, v, 1), 0),
                        state.beta, dxh, v)
    effective = sum(jnp.sum(jnp.exp(b) * c) for b, c in zip(jax.tree.leaves(beta), jax.tree.leaves(curvature)))
    log_m = jnp.log(jnp.maximum(effective, 1.0))
    beta = jax.tree.map(lambda b: jnp.clip(b - log_m, low, high), beta)
    alpha = jax.tree.map(jnp.exp, beta)
    new_updates = jax.tree.map(lambda a, d: a * d, alpha, dx)
    h = jax.tree.map(lambda h, a, c, d: h * (1 - a * c) + a * d, state.h, alpha, curvature, dx)
    return new_updates, IDBDState(beta=beta, h=h, v=v)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _transform(autostep: bool):
  return lambda b: idbd(b.hparams['meta_step_size'], b.hparams['initial_step_size'], autostep=autostep,
                        tau=float(b.options['autostep_tau']),
                        beta_range=(float(b.options['beta_min']), float(b.options['beta_max'])))


def _learned(opt_state, params, options, hparams):
  del params, options, hparams
  return step_sizes(find_state(opt_state)), True


def _check(where) -> Optional[str]:
  if getattr(where.experiment_cls, 'objective', 'prediction') != 'prediction':
    return ('needs one prediction to differentiate (its Gauss-Newton diagonal), and this experiment trains a '
            'policy and a value together; use another optimizer')
  return None


def _variant(name: str, meta_step_size: float):
  """The preset 'step_sizes' variant: every weight starts at the config's learning rate (meta step
  sizes 1e-3 and 1e-2: Sutton 1992's and Autostep's usual choices)."""
  return lambda config: {name: dict(optimizer=dict(name=name), initial_step_size=float(config.hparams.learning_rate),
                                    meta_step_size=meta_step_size)}


_SHARED = dict(hypers=HYPERS, section='idbd', extra_args=('curvature',), check=_check, step_sizes=_learned,
               state_fields=((IDBDState, dict(beta='keep', h='zero', v='zero')),))
IDBD = Method('idbd', 'optimizer', 'IDBD (Sutton 1992): per-weight step sizes exp(beta) meta-learned for a '
              'linear unit', active=selected('optimizer.name', 'idbd'), transform=_transform(False),
              examples=(('idbd', dict(optimizer=dict(name='idbd'))),),
              presets=(('step_sizes', _variant('idbd', 1e-3)),), **_SHARED)
AUTOSTEP = Method('autostep', 'optimizer', 'Autostep (Mahmood et al. 2012): IDBD normalised, effective step '
                  'bounded', active=selected('optimizer.name', 'autostep'), transform=_transform(True),
                  examples=(('autostep', dict(optimizer=dict(name='autostep'))),),
                  presets=(('step_sizes', _variant('autostep', 1e-2)),), **_SHARED)
