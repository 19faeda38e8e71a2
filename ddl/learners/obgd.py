"""ObGD: overshooting-bounded gradient descent with an eligibility trace (Elsayed, Vasan & Mahmood
2024, "Streaming deep reinforcement learning finally works"), as an optax transform, optionally with
per-weight step sizes meta-learned by TIDBD (`step_sizes='tidbd'`, below).

The official `ObGD.step(delta, reset)` of `mohmdelsayed/streaming-drl` (`optim.py`), per network:

    z <- gamma lambda z + g                    g: the gradient handed to the optimizer
    M = alpha kappa max(|delta|, 1) ||z||_1    the L1 norm over ALL of the network's parameters
    alpha_eff = alpha / M if M > 1 else alpha
    w <- w - alpha_eff delta z                 the update is taken with z, THEN
    z <- 0                                     if the step ended an episode (`done`)

As upstream, g is the gradient of a quantity to *decrease* (stream AC hands it -v(s) and
-(log pi(a|s) + c H sign(delta))), so w moves by +alpha_eff delta (gamma lambda z + grad f). The TD
error delta and the episode end are extra arguments of `update` (`td_error=`, `done=`, optax
`GradientTransformationExtraArgs`; `optax.chain` forwards them): the learner hands them in with
`Learner.step(..., extra=dict(td_error=delta, done=done))`. Both are per seed scalars, so under
`vmap` every seed gets its own alpha_eff.

`per_network`: each top-level entry of the parameter tree is a network of its own with its own
||z||_1 and alpha_eff (upstream: one optimizer per network), 'policy' with `kappa_policy` and every
other entry with `kappa` (stream AC: kappa 3 for the actor, 2 for the critic). Without it the whole
tree is one network with `kappa`.

Defaults are the official script's (`stream_ac_continuous.py`): alpha 1 (the learner's
`learning_rate`: set it to 1 in a config), gamma 0.99, lambda 0.8, kappa 2 (critic) and 3 (actor).
Not upstream's AdaptiveObGD. Deviations of the JAX port `Howuhh/streaming-drl-jax` avoided here:
kappa 2 for both networks.

Per-weight step sizes (`step_sizes='tidbd'`): semi-gradient TIDBD(lambda) with accumulating traces
(Kearney, Veeriah, Travnik, Sutton & Pilarski 2018, "TIDBD: Adapting temporal-difference step-sizes
through stochastic meta-descent", arXiv 1804.03334; its 2019 version "Learning feature relevance
through step size adaptation in temporal-difference learning", Algorithm 3, as alberta-framework's
`TDIDBD` ports it), in its network form inside ObGD's bound. Per step, per weight i, with
grad f = -g (f = v(s) for the critic):

    beta_i <- clip(beta_i + theta delta (grad f)_i h_i)     theta = meta_step_size
    alpha_i = e^beta_i
    z_i <- gamma lambda z_i + (grad f)_i
    M = kappa max(|delta|, 1) sum_j alpha_j |z_j|          the network's sum, as ObGD's ||z||_1
    alpha_eff_i = alpha_i / max(M, 1)
    w_i <- w_i + alpha_eff_i delta z_i
    h_i <- h_i [1 - alpha_eff_i (grad f)_i z_i]^+ + alpha_eff_i delta z_i
    z <- 0 after the update if the step ended an episode; beta and h carry over

Where it follows TIDBD: the order (beta with the previous h, then alpha, z, w, h), accumulating
traces, the semi-gradient meta step (phi(s) only, not gamma phi(s') - phi(s)) and the [.]^+ of h's
decay; with M <= 1 (bound inactive) it is TIDBD's step with phi_i read as (grad f)_i. Deviations:
(1) the network form: phi_i is the gradient of the value (exact for a linear critic; in a network
h's decay drops v's second derivatives, as idbd.py's network IDBD); (2) ObGD's bound with per-weight
alpha (alberta-framework's `ObGDBounding` of the per-weight steps alpha_i z_i), which reduces to
ObGD's alpha kappa max(|delta|, 1) ||z||_1 when every alpha_j = alpha; (3) h is updated with the
step actually taken, alpha_eff (h estimates dw_i/dbeta_i, 1/max(M, 1) held constant; the
alberta-framework's bounded MLP learner updates h with the unbounded alpha); (4) the clip of
log alpha_i to [beta_min, beta_max] (idbd.py's guard, not in TIDBD); (5) the episode end resets z
(ObGD's reset) but not h: h follows the weights, which carry over (alberta-framework's TDIDBD resets
nothing; Kearney's own TDBD code resets z only at an episode start, its AutoTDBD h too). With theta = 0 this
is ObGD exactly (the step sizes stay alpha; tests/test_obgd_step_sizes.py).

Only the critic: with `per_network` the 'policy' entry keeps plain ObGD with `learning_rate` (IDBD's
meta-gradient is derived for a prediction's squared error, here the squared TD error of v; the
actor's f = log pi + c H sign(delta) is no prediction); without `per_network` the whole tree is one
network with TIDBD. The initial step size of every weight is ObGD's alpha (`learning_rate`, 1 in
stream AC; as MetaOptimize's `learning_rate`): beta is stored as log(alpha_i / alpha), 0 at the
start, so the clip binds log alpha + beta, and `Method.step_sizes` reports alpha e^beta. Under an
active bound (M > 1, the usual case for a network with alpha = 1) scaling every alpha_j by c leaves
alpha_eff unchanged: TIDBD then moves step size between the critic's weights, the bound sets the
total. It also makes h small (alpha_eff delta z_i is roughly 1/(kappa x #weights)), so theta must be
far larger than a linear unit's 1e-3 to move anything (configs/stream_ant.py: 10, measured).

State: `ObGDState(trace, beta, h)`, params-shaped (beta and h None with fixed step sizes; the
'policy' entry's beta and h stay 0 under `per_network`), so vmap and checkpoints need nothing new;
CBP's optimizer-state reset (`cbp.reset_optimizer_units` with `cbp.reset_optimizer_state=True`)
zeroes the traces z and h of replaced units and keeps their beta (the learned step size of that
position, as for IDBD; zeroing it instead would restart those weights at alpha). O(#weights) per
step.
"""
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from ddl.learners import idbd as idbd_lib
from ddl.learners.hyper import Hyper
from ddl.learners.method import Method, selected

STEP_SIZES = ('fixed', 'tidbd')

HYPERS = (
    Hyper('discount', 0.99, low=0, high=1,
          doc='ObGD: gamma of the trace decay gamma lambda (stream AC: also the TD discount and the reward scaling)'),
    Hyper('trace_lambda', 0.8, low=0, high=1, doc='ObGD: lambda of the eligibility trace'),
    Hyper('kappa', 2.0, low=0, open_low=True,
          doc="ObGD: kappa of the overshooting bound M (stream AC: the critic's)"),
    Hyper('kappa_policy', 3.0, low=0, open_low=True,
          doc="ObGD: kappa of the 'policy' entry with obgd.per_network (stream AC: the actor's)"),
    Hyper('per_network', False, choices=(False, True), traced=False,
          doc="ObGD: each top-level parameter entry is a network with its own ||z||_1 and step ('policy' takes "
              'kappa_policy, others kappa); False: the whole tree is one network'),
    Hyper('step_sizes', 'fixed', choices=STEP_SIZES, traced=False,
          doc="ObGD: 'fixed' (learning_rate for every weight) or 'tidbd' (per-weight step sizes meta-learned by "
              "TIDBD, Kearney et al. 2018, inside the bound, for every network but 'policy'; meta_step_size is "
              'theta, learning_rate the initial step size, obgd.beta_min/beta_max clip their logs)'),
)


class ObGDState(NamedTuple):
  trace: Any           # params-shaped eligibility trace z (of g, as upstream)
  beta: Any = None     # 'tidbd': params-shaped log(alpha_i / learning_rate); None with fixed step sizes
  h: Any = None        # 'tidbd': params-shaped IDBD trace h (of the weights' sensitivity to beta)


def l1_norm(tree: Any) -> jax.Array:
  """||tree||_1 over every leaf."""
  return sum((jnp.abs(leaf).sum() for leaf in jax.tree.leaves(tree)), jnp.zeros(()))


def step_size(trace: Any, td_error: chex.Numeric, learning_rate: chex.Numeric, kappa: chex.Numeric) -> jax.Array:
  """alpha_eff = alpha / max(M, 1), M = alpha kappa max(|delta|, 1) ||z||_1 (alpha if M <= 1)."""
  bound = learning_rate * kappa * jnp.maximum(jnp.abs(td_error), 1.0) * l1_norm(trace)
  return learning_rate / jnp.maximum(bound, 1.0)


def adapts(name: Optional[str], per_network: bool) -> bool:
  """Whether the network at top-level entry `name` gets TIDBD's step sizes (all but 'policy')."""
  return not per_network or name != 'policy'


def step_sizes(state: ObGDState, learning_rate: chex.Numeric, per_network: bool) -> Any:
  """The per-weight step sizes alpha e^beta of the networks TIDBD adapts (per_network: every entry
  but 'policy', as a dict; else the whole tree)."""
  alphas = jax.tree.map(lambda b: learning_rate * jnp.exp(b), state.beta)
  if per_network:
    return {name: sub for name, sub in alphas.items() if adapts(name, per_network)}
  return alphas


def obgd(learning_rate: chex.Numeric = 1.0, discount: chex.Numeric = 0.99, trace_lambda: chex.Numeric = 0.8,
         kappa: chex.Numeric = 2.0, kappa_policy: chex.Numeric = 3.0,
         per_network: bool = False, step_sizes: str = 'fixed', meta_step_size: chex.Numeric = 0.001,
         beta_range: Tuple[float, float] = idbd_lib.BETA_RANGE) -> optax.GradientTransformationExtraArgs:
  """The ObGD transform; every numeric argument but beta_range may be traced (a sweep axis).

  step_sizes: 'fixed' (ObGD) or 'tidbd' (per-weight step sizes, module docstring; static).
  meta_step_size: TIDBD's theta (unused with 'fixed'). beta_range: clip of log alpha_i (static)."""
  if step_sizes not in STEP_SIZES:
    raise ValueError(f'obgd.step_sizes={step_sizes!r} is not known; use one of {STEP_SIZES}.')
  tidbd = step_sizes == 'tidbd'
  low, high = float(beta_range[0]), float(beta_range[1])
  if not low < high:
    raise ValueError(f'obgd: beta_range must be (low, high) with low < high, got {beta_range!r}.')

  def init_fn(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return ObGDState(trace=zeros(), beta=zeros() if tidbd else None, h=zeros() if tidbd else None)

  def update_fn(updates, state, params=None, *, td_error=None, done=None, **extra_args):
    del params, extra_args
    if td_error is None or done is None:
      raise ValueError('optimizer obgd needs the extra arguments td_error and done in every update '
                       '(Learner.step(..., extra=dict(td_error=..., done=...)); experiment stream_ac).')
    delta = jnp.asarray(td_error, jnp.float32).reshape(())
    decay = discount * trace_lambda

    def fixed_network(g, z, k):
      """ObGD: -> (update, new trace)."""
      z = jax.tree.map(lambda z, g: (decay * z + g).astype(z.dtype), z, g)
      alpha = step_size(z, delta, learning_rate, k)
      return jax.tree.map(lambda e: (-alpha * delta * e).astype(e.dtype), z), z

    def tidbd_network(g, z, beta, h, k):
      """ObGD with TIDBD's per-weight step sizes (g = -grad f, z the trace of g): -> (update, z, beta, h)."""
      log_alpha = jnp.log(jnp.asarray(learning_rate, jnp.float32))
      beta = jax.tree.map(lambda b, g, h: jnp.clip(b - meta_step_size * delta * g * h, low - log_alpha,
                                                   high - log_alpha).astype(b.dtype), beta, g, h)
      z = jax.tree.map(lambda z, g: (decay * z + g).astype(z.dtype), z, g)
      scale = jax.tree.map(jnp.exp, beta)                            # alpha_i / alpha
      weighted = sum(((s * jnp.abs(e)).sum() for s, e in zip(jax.tree.leaves(scale), jax.tree.leaves(z))),
                     jnp.zeros(()))
      bound = learning_rate * k * jnp.maximum(jnp.abs(delta), 1.0) * weighted
      alpha = learning_rate / jnp.maximum(bound, 1.0)                # alpha_eff_i = alpha * scale_i
      alpha_eff = jax.tree.map(lambda s: alpha * s, scale)
      out = jax.tree.map(lambda a, e: (-a * delta * e).astype(e.dtype), alpha_eff, z)
      # h <- h [1 - a (grad f) z_f]^+ + a delta z_f, with grad f = -g and z_f = -z
      h = jax.tree.map(lambda h, a, g, e: (h * jnp.maximum(1 - a * g * e, 0) - a * delta * e).astype(h.dtype),
                       h, alpha_eff, g, z)
      return out, z, beta, h

    def network(name, g, z, beta, h):
      k = kappa_policy if per_network and name == 'policy' else kappa
      if tidbd and adapts(name, per_network):
        return tidbd_network(g, z, beta, h, k)
      out, z = fixed_network(g, z, k)
      return out, z, beta, h

    if per_network:
      if not isinstance(updates, Mapping):
        raise ValueError('obgd.per_network needs a dict of networks as the parameter tree.')
      parts = {name: network(name, updates[name], state.trace[name], state.beta[name] if tidbd else None,
                             state.h[name] if tidbd else None) for name in updates}
      out, trace, beta, h = ({name: part[i] for name, part in parts.items()} for i in range(4))
    else:
      out, trace, beta, h = network(None, updates, state.trace, state.beta, state.h)
    ended = jnp.asarray(done).reshape(()).astype(bool)
    trace = jax.tree.map(lambda z: jnp.where(ended, jnp.zeros_like(z), z), trace)
    return out, ObGDState(trace=trace, beta=beta if tidbd else None, h=h if tidbd else None)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _learned(opt_state, params, options, hparams):
  del params
  state = idbd_lib.find_state(opt_state, ObGDState)
  if state is None or state.beta is None:
    return None
  return step_sizes(state, hparams['learning_rate'], bool(options['per_network'])), True


def _check(where) -> Optional[str]:
  options = METHOD.options(where.config)
  if options['step_sizes'] != 'fixed' and not options['beta_min'] < options['beta_max']:
    return f"obgd.beta_min must be < obgd.beta_max, got {options['beta_min']} and {options['beta_max']}"
  return None


METHOD = Method(
    'obgd', 'optimizer', 'ObGD (Elsayed et al. 2024): eligibility-trace steps alpha delta z bounded against '
    'overshooting; learning_rate is alpha (1 in the paper); obgd.step_sizes=tidbd: per-weight step sizes '
    'meta-learned by TIDBD (Kearney et al. 2018) for the critic, from learning_rate',
    HYPERS + tuple(h for h in idbd_lib.HYPERS if h.name in ('meta_step_size', 'beta_min', 'beta_max')),
    section='obgd', active=selected('optimizer.name', 'obgd'), examples=(('obgd', dict(optimizer=dict(name='obgd'))),), extra_args=('td_error', 'done'), check=_check,
    step_sizes=_learned,
    transform=lambda b: obgd(
        b.hparams['learning_rate'], discount=b.hparams['discount'], trace_lambda=b.hparams['trace_lambda'],
        kappa=b.hparams['kappa'], kappa_policy=b.hparams['kappa_policy'], per_network=bool(b.options['per_network']),
        step_sizes=str(b.options['step_sizes']), meta_step_size=b.hparams['meta_step_size'],
        beta_range=(float(b.options['beta_min']), float(b.options['beta_max']))),
    state_fields=((ObGDState, dict(trace='zero', h='zero', beta='keep')),))
