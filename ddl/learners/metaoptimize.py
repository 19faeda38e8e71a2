"""MetaOptimize (Sharifnassab, Salehkaleybar & Sutton, ICML 2025, arXiv 2402.02342) as an optax transform.

The Hessian-free ("hg") form with AdamW as the base update and Lion as the meta update, as in the
authors' optax code (`sabersalehk/MetaOptimize`, `meta_optimize/MetaOptimize_AdamW_Lion_hg_jax.py`).
Step sizes α = e^β are meta-learned by descending a discounted sum of future losses; the trace h
approximates −∂w/∂β without its Hessian term. Per step, with g the incoming gradient:

    m ← b1 m + (1 − b1) g;   v ← b2 v + (1 − b2) g²;   m̂, v̂ bias-corrected (step count t)
    u      = m̂ / (√v̂ + ε) + κ w                        AdamW's direction (κ = decoupled weight decay)
    meta_g = Σ_block h ⊙ g                              one value per block of β
    μ      ← meta_b1 μ + (1 − meta_b1) meta_g           Lion's meta momentum
    β      ← clip(β + η sign(meta_c1 μ + (1 − meta_c1) meta_g), β_min, β_max)
    α      = e^β   (the *updated* β, as the JAX code; the PyTorch code uses the previous one)
    Δw     = −α u
    h      ← γ (1 − α κ) h + α g / (√v̂ + ε)

Blocks of β (`blocks`): 'network' (one step size, the authors' JAX version), 'layer' (one per
top-level parameter module, the PyTorch 'layerwise') or 'weight' (one per weight, meta momentum
per weight too). The clip (not in the authors' code) keeps α in [e^β_min, e^β_max] =
[1e-8, 1] by default, so a too-large meta step size stays finite.

Defaults are the authors': η = 1e-3 (`meta_step_size`, traced), α₀ = the learner's
`learning_rate` (their alpha0 = 1e-3; traced), γ = 0.9999, b1 = 0.9, b2 = 0.999 (the `b1`, `b2` of
Adam, traced), meta_b1 = 0.99, meta_c1 = 0.9, κ = 0 (their MNIST example uses 0.1), ε = 1e-8.
State `MetaOptimizeState`: Adam's moments, h, β and μ (params-shaped for 'weight'); when a reset
zeroes a weight's optimizer state (`method.map_reset_state`, as declared in `state_fields`), its m, v and h are zeroed and
its β kept.
"""
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from ddl.learners.hyper import Hyper
from ddl.learners import idbd as idbd_lib
from ddl.learners import optimizers
from ddl.learners.method import Method, selected

BLOCKS = ('network', 'layer', 'weight')

HYPERS = (
    Hyper('blocks', 'network', choices=BLOCKS, traced=False,
          doc="MetaOptimize: one step size per 'network', per 'layer' or per 'weight'"),
    Hyper('gamma', 0.9999, low=0, high=1, traced=False, doc="MetaOptimize: decay gamma of the trace h"),
    Hyper('meta_b1', 0.99, low=0, high=1, open_high=True, traced=False,
          doc="MetaOptimize: Lion's meta momentum decay"),
    Hyper('meta_c1', 0.9, low=0, high=1, traced=False, doc="MetaOptimize: Lion's interpolation of the meta step"),
    Hyper('decoupled_weight_decay', 0.0, low=0, traced=False, doc="MetaOptimize: AdamW's kappa"),
    Hyper('beta_min', math.log(1e-8), traced=False, doc='MetaOptimize: lower clip of beta = log(step size)'),
    Hyper('beta_max', 0.0, traced=False, doc='MetaOptimize: upper clip of beta = log(step size)'),
)


class MetaOptimizeState(NamedTuple):
  count: jax.Array
  mu: Any              # Adam's first moment (params-shaped)
  nu: Any              # Adam's second moment (params-shaped)
  h: Any               # trace h ≈ −∂w/∂β (params-shaped)
  beta: Any            # log step sizes: a scalar, {layer: scalar} or params-shaped
  meta_momentum: Any   # Lion's meta momentum, shaped as beta


def block_sum(tree: Any, blocks: str) -> Any:
  """Σ of a params-shaped tree within each block of β: a scalar, {layer: scalar} or the tree."""
  if blocks == 'weight':
    return tree
  total = lambda t: sum(jnp.sum(leaf) for leaf in jax.tree.leaves(t))
  if blocks == 'layer':
    return {name: total(sub) for name, sub in tree.items()}
  return total(tree)


def broadcast(beta: Any, params: Any, blocks: str) -> Any:
  """β (or any per-block value) spread over the weights: params-shaped."""
  if blocks == 'weight':
    return beta
  if blocks == 'layer':
    return {name: jax.tree.map(lambda p, b=beta[name]: jnp.broadcast_to(b, p.shape), sub)
            for name, sub in params.items()}
  return jax.tree.map(lambda p: jnp.broadcast_to(beta, p.shape), params)


def step_sizes(state: MetaOptimizeState, params: Any, blocks: str) -> Any:
  """The params-shaped step sizes α = e^β of a state."""
  return jax.tree.map(jnp.exp, broadcast(state.beta, params, blocks))


def metaoptimize(meta_step_size: chex.Numeric, initial_step_size: chex.Numeric, *, blocks: str = 'network',
                 gamma: float = 0.9999, b1: chex.Numeric = 0.9, b2: chex.Numeric = 0.999, meta_b1: float = 0.99,
                 meta_c1: float = 0.9, decoupled_weight_decay: float = 0.0, eps: float = 1e-8,
                 beta_min: float = math.log(1e-8), beta_max: float = 0.0) -> optax.GradientTransformation:
  """MetaOptimize-hg with AdamW base and Lion meta updates (module docstring). meta_step_size η,
  initial_step_size α₀ > 0, b1 and b2 may be traced arrays; `blocks` and the rest are static."""
  if blocks not in BLOCKS:
    raise ValueError(f'metaoptimize: blocks={blocks!r} is not known; use one of {BLOCKS}.')
  if not beta_min < beta_max:
    raise ValueError(f'metaoptimize: need beta_min < beta_max, got {beta_min} and {beta_max}.')
  kappa = decoupled_weight_decay

  def init_fn(params):
    beta0 = jnp.log(jnp.asarray(initial_step_size, jnp.float32))
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    beta = jax.tree.map(lambda s: jnp.full(jnp.shape(s), beta0, jnp.float32), block_sum(zeros(), blocks))
    return MetaOptimizeState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros(), h=zeros(), beta=beta,
                             meta_momentum=jax.tree.map(jnp.zeros_like, beta))

  def update_fn(grads, state, params=None):
    if params is None and kappa:
      raise ValueError('metaoptimize: decoupled_weight_decay needs params: call update(grads, state, params).')
    count = state.count + 1
    mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, grads, state.mu)
    nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * g * g, grads, state.nu)
    scale = lambda t: t / (1 - b2 ** count)
    root = jax.tree.map(lambda v: jnp.sqrt(scale(v)) + eps, nu)
    direction = jax.tree.map(lambda m, r: m / (1 - b1 ** count) / r, mu, root)
    if kappa:
      direction = jax.tree.map(lambda d, w: d + kappa * w, direction, params)
    meta_grad = block_sum(jax.tree.map(lambda h, g: h * g, state.h, grads), blocks)
    meta_momentum = jax.tree.map(lambda m, mg: meta_b1 * m + (1 - meta_b1) * mg, state.meta_momentum, meta_grad)
    beta = jax.tree.map(
        lambda b, m, mg: jnp.clip(b + meta_step_size * jnp.sign(meta_c1 * m + (1 - meta_c1) * mg), beta_min, beta_max),
        state.beta, meta_momentum, meta_grad)
    alpha = jax.tree.map(jnp.exp, broadcast(beta, grads, blocks))
    updates = jax.tree.map(lambda a, d: -a * d, alpha, direction)
    h = jax.tree.map(lambda h, a, g, r: gamma * (1 - a * kappa) * h + a * g / r, state.h, alpha, grads, root)
    return updates, MetaOptimizeState(count=count, mu=mu, nu=nu, h=h, beta=beta, meta_momentum=meta_momentum)

  return optax.GradientTransformation(init_fn, update_fn)


def _learned(opt_state, params, options, hparams):
  del hparams
  state = idbd_lib.find_state(opt_state, MetaOptimizeState)
  return step_sizes(state, params, options['blocks']), options['blocks'] == 'weight'


METHOD = Method(
    'metaoptimize', 'optimizer', 'MetaOptimize-hg (Sharifnassab et al. 2025): AdamW with meta-learned step sizes '
    'exp(beta) per network, layer or weight (Lion meta update); learning_rate is the initial step size',
    idbd_lib.HYPERS[:1] + optimizers.ADAM_MOMENTS + HYPERS, section='metaoptimize',
    active=selected('optimizer.name', 'metaoptimize'), step_sizes=_learned,
    examples=(('metaoptimize', dict(optimizer=dict(name='metaoptimize'))),
              ('metaoptimize_weight', dict(optimizer=dict(name='metaoptimize'), metaoptimize=dict(blocks='weight')))),
    # preset 'step_sizes': one step size per network, from the authors' 1e-3 for its AdamW base
    # (per weight: metaoptimize.blocks='weight' in a variant of its own)
    presets=(('step_sizes', lambda config: {'metaoptimize': dict(optimizer=dict(name='metaoptimize'),
                                                                 learning_rate=1e-3)}),),
    transform=lambda b: metaoptimize(
        b.hparams['meta_step_size'], b.hparams['learning_rate'], b1=b.hparams['b1'], b2=b.hparams['b2'],
        eps=float(b.setting('optimizer.eps', 1e-8)), **{h.name: b.options[h.name] for h in HYPERS}),
    state_fields=((MetaOptimizeState, dict(mu='zero', nu='zero', h='zero', beta='keep', meta_momentum='keep')),))
