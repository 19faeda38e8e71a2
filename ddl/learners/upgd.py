"""UPGD: utility-based perturbed gradient descent (Elsayed & Mahmood, ICLR 2024), as an optax transform.

First-order weight utility, global scaling: the official `FirstOrderGlobalUPGD` (protecting) and
`FirstOrderNonprotectingGlobalUPGD` of `mohmdelsayed/upgd` (`core/optim/weight_upgd/first_order.py`).
Per weight, with t the number of updates so far (1 at the first):

    u <- b_u u + (1 - b_u) (-g * w)              utility: ~ loss increase if w were set to 0
    u_hat = u / (1 - b_u^t)                      bias-corrected
    s = sigmoid(u_hat / max(u_hat))              ONE max over every weight of the whole tree
    protecting:      w <- (1 - a l) w - a (g + xi) * (1 - s),     xi ~ N(0, sigma^2)
    non-protecting:  w <- (1 - a l) w - a (g + xi * (1 - s))

a = the learner's learning rate (the step is -a as in the official experiment classes; the README's
stand-alone optimizer steps by -2a), l = weight decay, sigma = noise std.

Departures and quirks, on purpose or as upstream:
- No epsilon in the division by max(u_hat), as the official code. If that maximum is <= 0 (every
  utility non-positive, e.g. at a stationary point or after a reset that zeroed them all) the
  scaling flips sign: the LEAST useful weights get s near 1 and are protected; exactly 0 gives
  inf in the upstream code; here a maximum of exactly 0 (every utility 0, e.g. the first step
  after a zeroed head, when no gradient reaches the other weights) gives s = 1/2 everywhere instead
  of upstream's 0/0 = NaN, the only departure.
- The official code divides the bias-corrected utility by the max of the RAW (uncorrected)
  utility, i.e. its sigmoid argument is u_hat / max(u) = (u / max(u)) / (1 - b_u^t), which is
  saturated early in training (1 / (1 - 0.999^t) ~ 1000 / t) and tends to the published
  u_hat / max(u_hat) = u / max(u) as t grows. Default here: the code's form
  (`max_of_raw_utility=True`, the project's rule: the authors' code by default); False gives the
  published one. Note that in the published form the bias
  correction cancels (u_hat / max(u_hat) = u / max(u)); it only matters in the code's form.
- The official weight-level code skips parameters named 'gate' (feature-UPGD's gates); ddl has
  none, every leaf is updated.

Randomness: the noise key is an extra argument of `update` (`key=`, optax
`GradientTransformationExtraArgs`; `optax.chain` forwards it). The learner passes a fresh key per
step and per seed, so vmapped seeds draw different noise; no key is kept in the state. The noise
is one normal draw over the raveled tree (`jax.flatten_util.ravel_pytree`), as `optimizers.perturb`.

State: `UPGDState(utility, count)`; `utility` is params-shaped, so CBP's optimizer-state reset
(`cbp.reset_optimizer_units`) zeroes the utility of replaced units (a fresh unit then starts at
utility 0, s = 1/2, until its utility is re-estimated); `count` (the t above) is never reset.
"""
import functools
from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

from ddl.learners.hyper import Hyper
from ddl.learners.method import Method, selected

HYPERS = (
    Hyper('utility_decay', 0.999, low=0, high=1, open_high=True,
          doc='UPGD: decay b_u of the running weight utility u <- b_u u + (1 - b_u)(-g w).'),
    Hyper('upgd_noise', 1e-3, low=0,
          doc='UPGD: std sigma of the Gaussian noise added to the gradient, gated by 1 - utility.'),
    Hyper('upgd_weight_decay', 1e-3, low=0,
          doc='UPGD: decoupled weight decay l, w <- (1 - lr l) w - ...'),
    Hyper('protect', True, choices=(True, False), traced=False,
          doc='UPGD: gate gradient and noise by 1 - utility (True, "UPGD") or the noise only '
              '(False, "non-protecting UPGD").'),
    Hyper('max_of_raw_utility', True, choices=(True, False), traced=False,
          doc='UPGD: scale by the max of the raw utility, as the official code (True), or of the '
              'bias-corrected one, as published (False).'),
)


class UPGDState(NamedTuple):
  utility: Any          # params-shaped running utility u (not bias-corrected)
  count: chex.Array     # int32 (): number of updates so far


def _global_max(tree) -> jax.Array:
  leaves = [jnp.max(leaf) for leaf in jax.tree.leaves(tree) if leaf.size]
  if not leaves:
    raise ValueError('upgd: the parameter tree has no elements.')
  return functools.reduce(jnp.maximum, leaves)


def upgd(learning_rate: chex.Numeric, *, utility_decay: chex.Numeric = 0.999,
         noise_std: chex.Numeric = 1e-3, weight_decay: chex.Numeric = 1e-3, protect: bool = True,
         max_of_raw_utility: bool = True) -> optax.GradientTransformationExtraArgs:
  """First-order, globally scaled UPGD; returns the update (new params = params + update).

  learning_rate, utility_decay, noise_std, weight_decay: may be traced arrays (a sweep under vmap).
  protect: static. True: update = -a l w - a (g + xi)(1 - s); False: -a l w - a (g + xi (1 - s)).
  max_of_raw_utility: static. True (default): s = sigmoid(u_hat / max u), the official code;
    False: s = sigmoid(u_hat / max u_hat), the published equation (see the module docstring).

  `update(updates, state, params, *, key, **extra_args)` needs the parameters and a PRNG key for
  this step's noise (other extra arguments are ignored).
  """
  if not isinstance(protect, bool):
    raise TypeError(f'upgd: protect must be a Python bool (it selects the program), got {protect!r}.')

  def init_fn(params):
    return UPGDState(utility=jax.tree.map(jnp.zeros_like, params), count=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, key: Optional[chex.PRNGKey] = None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError('upgd: update needs the parameters (the utility is -g * w and the weight '
                       'decay acts on w): call update(grads, state, params, key=...).')
    if key is None:
      raise ValueError('upgd: update needs a PRNG key for the noise: call update(grads, state, params, '
                       'key=step_key) with a fresh per-step, per-seed key (optax.chain passes extra '
                       'arguments on).')
    count = optax.safe_int32_increment(state.count)
    utility = jax.tree.map(
        lambda u, g, w: (utility_decay * u + (1 - utility_decay) * (-g * w)).astype(u.dtype),
        state.utility, updates, params)
    flat_g, unravel = jax.flatten_util.ravel_pytree(updates)
    noise = unravel(noise_std * jax.random.normal(key, flat_g.shape, flat_g.dtype))
    correction = 1 - jnp.asarray(utility_decay, jnp.float32) ** count.astype(jnp.float32)
    corrected = jax.tree.map(lambda u: u / correction.astype(u.dtype), utility)
    scale = _global_max(utility if max_of_raw_utility else corrected)
    scale = jnp.where(scale == 0, 1.0, scale)   # every utility 0: s = 1/2 everywhere, not 0/0

    def step(g, w, u_hat, xi):
      gate = 1 - jax.nn.sigmoid(u_hat / scale.astype(u_hat.dtype))
      direction = (g + xi) * gate if protect else g + xi * gate
      return (-learning_rate * weight_decay * w - learning_rate * direction).astype(g.dtype)

    new_updates = jax.tree.map(step, updates, params, corrected, noise)
    return new_updates, UPGDState(utility=utility, count=count)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


METHOD = Method(
    'upgd', 'optimizer', 'UPGD (Elsayed & Mahmood 2024): utility-gated, perturbed SGD', HYPERS, section='upgd',
    active=selected('optimizer.name', 'upgd'), examples=(('upgd', dict(optimizer=dict(name='upgd'))),),
    transform=lambda b: upgd(b.hparams['learning_rate'], utility_decay=b.hparams['utility_decay'],
                             noise_std=b.hparams['upgd_noise'], weight_decay=b.hparams['upgd_weight_decay'],
                             protect=bool(b.options['protect']),
                             max_of_raw_utility=bool(b.options['max_of_raw_utility'])))
