"""ObGD: overshooting-bounded gradient descent with an eligibility trace (Elsayed, Vasan & Mahmood
2024, "Streaming deep reinforcement learning finally works"), as an optax transform.

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

State: `ObGDState(trace)`, params-shaped, so CBP's optimizer-state reset (`cbp.reset_optimizer_units`
with `cbp.reset_optimizer_state=True`) zeroes the traces of replaced units.
"""
from collections.abc import Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from ddl.learners.hyper import Hyper

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
)


class ObGDState(NamedTuple):
  trace: Any      # params-shaped eligibility trace z


def l1_norm(tree: Any) -> jax.Array:
  """||tree||_1 over every leaf."""
  return sum((jnp.abs(leaf).sum() for leaf in jax.tree.leaves(tree)), jnp.zeros(()))


def step_size(trace: Any, td_error: chex.Numeric, learning_rate: chex.Numeric, kappa: chex.Numeric) -> jax.Array:
  """alpha_eff = alpha / max(M, 1), M = alpha kappa max(|delta|, 1) ||z||_1 (alpha if M <= 1)."""
  bound = learning_rate * kappa * jnp.maximum(jnp.abs(td_error), 1.0) * l1_norm(trace)
  return learning_rate / jnp.maximum(bound, 1.0)


def obgd(learning_rate: chex.Numeric = 1.0, discount: chex.Numeric = 0.99, trace_lambda: chex.Numeric = 0.8,
         kappa: chex.Numeric = 2.0, kappa_policy: chex.Numeric = 3.0,
         per_network: bool = False) -> optax.GradientTransformationExtraArgs:
  """The ObGD transform; every numeric argument may be traced (a sweep axis)."""

  def init_fn(params):
    return ObGDState(trace=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None, *, td_error=None, done=None, **extra_args):
    del params, extra_args
    if td_error is None or done is None:
      raise ValueError('optimizer obgd needs the extra arguments td_error and done in every update '
                       '(Learner.step(..., extra=dict(td_error=..., done=...)); experiment stream_ac).')
    delta = jnp.asarray(td_error, jnp.float32).reshape(())
    decay = discount * trace_lambda
    trace = jax.tree.map(lambda z, g: (decay * z + g).astype(z.dtype), state.trace, updates)

    def network_update(z, k):
      alpha = step_size(z, delta, learning_rate, k)
      return jax.tree.map(lambda e: (-alpha * delta * e).astype(e.dtype), z)

    if per_network:
      if not isinstance(trace, Mapping):
        raise ValueError('obgd.per_network needs a dict of networks as the parameter tree.')
      out = {name: network_update(sub, kappa_policy if name == 'policy' else kappa) for name, sub in trace.items()}
    else:
      out = network_update(trace, kappa)
    ended = jnp.asarray(done).reshape(()).astype(bool)
    trace = jax.tree.map(lambda z: jnp.where(ended, jnp.zeros_like(z), z), trace)
    return out, ObGDState(trace=trace)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
