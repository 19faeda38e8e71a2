"""Optimizers of the paper as optax transforms, built from a config.

Coupled L2 is PyTorch's `weight_decay` (added to the gradient before the optimizer), so L2 and
the "shrink" of Shrink & Perturb are one `optax.add_decayed_weights`. The "perturb" is its own
transform that carries its PRNG key in its state. Every hyperparameter a sweep varies
(`learning_rate`, `weight_decay`, `noise_scale`) may be a traced array.
"""
from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.flatten_util
import optax

OPTIMIZERS = ('sgd', 'adam')


class PerturbState(NamedTuple):
  key: chex.PRNGKey


def perturb(noise_scale: chex.Numeric, key: Optional[chex.PRNGKey] = None) -> optax.GradientTransformation:
  """Adds i.i.d. N(0, noise_scale^2) to every parameter after the step (the 'perturb' of S&P).

  Put it last in a chain: the noise is added to the final update, so it lands on the parameters
  after the optimizer step, as in the original. `key` seeds the noise stream at `init`; `update`
  reads and advances the key held in the state, so `key` may be omitted for an optimizer that is
  only used to update an existing state.
  """

  def init_fn(params):
    del params
    if key is None:
      raise ValueError('perturb(...).init needs a PRNG key: pass key=jax.random.key(...) '
                       'when building the optimizer that initialises the state.')
    return PerturbState(key=key)

  def update_fn(updates, state, params=None):
    del params
    next_key, noise_key = jax.random.split(state.key)
    flat, unravel = jax.flatten_util.ravel_pytree(updates)   # one draw for all leaves: cheaper
    noise = jax.random.normal(noise_key, flat.shape, flat.dtype)
    return unravel(flat + noise_scale * noise), PerturbState(key=next_key)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(name: str, *, learning_rate: chex.Numeric, weight_decay: chex.Numeric = 0.0,
                   noise_scale: chex.Numeric = 0.0, momentum: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, perturbation: bool = True,
                   key: Optional[chex.PRNGKey] = None) -> optax.GradientTransformation:
  """The learner's optimizer: coupled L2 -> SGD (momentum) or Adam -> optional perturbation.

  name: 'sgd' (PyTorch SGD: dampening 0, no Nesterov; momentum 0 keeps no buffer) or 'adam'
    (PyTorch Adam, bias-corrected).
  perturbation: whether the chain holds the S&P noise transform (structure, hence static); with
    noise_scale 0 it adds nothing, so BP, L2 and S&P are points of one program.
  key: seeds the perturbation's noise stream (needed only to `init`).
  """
  if name == 'sgd':
    inner = optax.sgd(learning_rate, momentum=momentum or None)
  elif name == 'adam':
    inner = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  else:
    raise ValueError(f'optimizer.name={name!r} is not known; use one of {OPTIMIZERS}.')
  parts = [optax.add_decayed_weights(weight_decay), inner]
  if perturbation:
    parts.append(perturb(noise_scale, key))
  return optax.chain(*parts)


def from_config(opt_config: Any, hparams: Any, perturbation: bool,
                key: Optional[chex.PRNGKey] = None) -> optax.GradientTransformation:
  """`make_optimizer` from a config section (static settings) and a hyperparameter mapping
  (traced values: learning_rate, weight_decay, noise_scale and Adam's b1, b2, which fall back to
  the config section's when the mapping has none)."""
  betas = {b: hparams[b] if b in hparams else opt_config[b] for b in ('b1', 'b2')}
  return make_optimizer(
      opt_config.name, learning_rate=hparams['learning_rate'], weight_decay=hparams['weight_decay'],
      noise_scale=hparams['noise_scale'], momentum=opt_config.momentum, eps=opt_config.eps,
      perturbation=perturbation, key=key, **betas)
