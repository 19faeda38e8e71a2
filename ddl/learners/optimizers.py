"""Optimizers of the paper as optax transforms, built from a config.

UPGD, IDBD/Autostep, MetaOptimize and L2 Init have modules of their own (`ddl.learners.upgd`,
`ddl.learners.idbd`, `ddl.learners.metaoptimize`, `ddl.learners.l2_init`); the chain's order and which parts it holds are decided
here. Coupled L2 is PyTorch's `weight_decay` (added to the gradient before the optimizer), so L2
and the "shrink" of Shrink & Perturb are one `optax.add_decayed_weights`. The "perturb" is its own
transform that carries its PRNG key in its state. Every hyperparameter a sweep varies
(`learning_rate`, `weight_decay`, `noise_scale`) may be a traced array.
"""
from typing import Any, Mapping, NamedTuple, Optional

import chex
import jax
import jax.flatten_util
import optax

from ddl.learners import idbd as idbd_lib
from ddl.learners import l2_init as l2_init_lib
from ddl.learners import metaoptimize as metaoptimize_lib
from ddl.learners import obgd as obgd_lib
from ddl.learners import registry
from ddl.learners import upgd

OPTIMIZERS = ('sgd', 'adam', 'upgd', 'idbd', 'autostep', 'metaoptimize', 'obgd')
STEP_SIZE_OPTIMIZERS = idbd_lib.NAMES + ('metaoptimize',)   # step sizes are learned state


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
                   key: Optional[chex.PRNGKey] = None, l2_init_strength: Optional[chex.Numeric] = None,
                   upgd_options: Optional[Mapping[str, Any]] = None,
                   idbd_options: Optional[Mapping[str, Any]] = None,
                   metaoptimize_options: Optional[Mapping[str, Any]] = None,
                   obgd_options: Optional[Mapping[str, Any]] = None) -> optax.GradientTransformationExtraArgs:
  """The learner's optimizer: [L2 Init ->] coupled L2 -> SGD (momentum), Adam, UPGD, IDBD,
  Autostep or MetaOptimize -> optional perturbation. Extra arguments of `update` (the step's `key`, `loss`, IDBD's
  `curvature`) reach every transform.

  name: 'sgd' (PyTorch SGD: dampening 0, no Nesterov; momentum 0 keeps no buffer), 'adam'
    (PyTorch Adam, bias-corrected) or 'upgd' (ddl.learners.upgd; `upgd_options`: its
    utility_decay, noise_std, weight_decay, protect), 'idbd' or 'autostep' (ddl.learners.idbd;
    `idbd_options`: meta_step_size, initial_step_size, tau, beta_range; `learning_rate` is unused,
    the step sizes are the transform's state; its update needs the extra argument `curvature`),
    'metaoptimize' (ddl.learners.metaoptimize, AdamW base with b1, b2, eps; `learning_rate` is the
    initial step size alpha_0; `metaoptimize_options`: meta_step_size, blocks, gamma, meta_b1,
    meta_c1, decoupled_weight_decay, beta_min, beta_max),
    'obgd' (ddl.learners.obgd: `learning_rate` is alpha; `obgd_options`: discount, trace_lambda, kappa,
    kappa_policy, per_network, step_sizes ('fixed' or 'tidbd': TIDBD's per-weight step sizes inside
    the bound), meta_step_size, beta_range; its update needs the extra arguments `td_error` and `done`).
  perturbation: whether the chain holds the S&P noise transform (structure, hence static); with
    noise_scale 0 it adds nothing, so BP, L2 and S&P are points of one program.
  key: seeds the perturbation's noise stream (needed only to `init`).
  l2_init_strength: lambda of L2 Init (None: not in the chain).
  """
  if name == 'sgd':
    inner = optax.sgd(learning_rate, momentum=momentum or None)
  elif name == 'adam':
    inner = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  elif name == 'upgd':
    inner = upgd.upgd(learning_rate, **(upgd_options or {}))
  elif name in idbd_lib.NAMES:
    options = dict(idbd_options or {})
    inner = idbd_lib.idbd(options.pop('meta_step_size', 0.001), options.pop('initial_step_size', 0.05),
                          autostep=name == 'autostep', **options)
  elif name == 'metaoptimize':
    inner = metaoptimize_lib.metaoptimize(initial_step_size=learning_rate, b1=b1, b2=b2, eps=eps,
                                          **(metaoptimize_options or {}))
  elif name == 'obgd':
    inner = obgd_lib.obgd(learning_rate, **(obgd_options or {}))
  else:
    raise ValueError(f'optimizer.name={name!r} is not known; use one of {OPTIMIZERS}.')
  parts = [optax.add_decayed_weights(weight_decay), inner]
  if l2_init_strength is not None:
    parts.insert(0, l2_init_lib.l2_init(l2_init_strength))
  if perturbation:
    parts.append(perturb(noise_scale, key))
  return optax.chain(*parts)


def from_config(opt_config: Any, hparams: Any, perturbation: bool, key: Optional[chex.PRNGKey] = None,
                l2_init: bool = False, upgd_config: Any = None,
                idbd_config: Any = None, metaoptimize_config: Any = None,
                obgd_config: Any = None) -> optax.GradientTransformationExtraArgs:
  """`make_optimizer` from a config section (static settings) and a hyperparameter mapping
  (traced values: learning_rate, weight_decay, noise_scale, l2_init, Adam's b1, b2, UPGD's and
  IDBD's meta_step_size, initial_step_size, which fall back to the config section's, then to their
  declared defaults, when the mapping has none; IDBD's and MetaOptimize's static options come from
  `idbd_config` and `metaoptimize_config`, ObGD's `per_network`, `step_sizes` and clip of log step
  sizes from `obgd_config`)."""
  defaults = {h.name: h.default for h in registry.traced_hypers()}
  value = lambda name: hparams[name] if name in hparams else opt_config.get(name, defaults[name])
  options = None
  if opt_config.name == 'upgd':
    options = dict(utility_decay=value('utility_decay'), noise_std=value('upgd_noise'),
                   weight_decay=value('upgd_weight_decay'),
                   protect=bool(upgd_config.protect) if upgd_config is not None else True,
                   max_of_raw_utility=bool(upgd_config.max_of_raw_utility) if upgd_config is not None else True)
  idbd_options = None
  if opt_config.name in idbd_lib.NAMES:
    static = lambda name: idbd_config[name] if idbd_config is not None and name in idbd_config else \
        next(h.default for h in idbd_lib.HYPERS if h.name == name)
    idbd_options = dict(meta_step_size=value('meta_step_size'), initial_step_size=value('initial_step_size'),
                        tau=float(static('autostep_tau')),
                        beta_range=(float(static('beta_min')), float(static('beta_max'))))
  metaoptimize_options = None
  if opt_config.name == 'metaoptimize':
    statics = dict(metaoptimize_config or {h.name: h.default for h in metaoptimize_lib.HYPERS})
    metaoptimize_options = dict(meta_step_size=value('meta_step_size'),
                                **{h.name: statics.get(h.name, h.default) for h in metaoptimize_lib.HYPERS})
  obgd_options = None
  if opt_config.name == 'obgd':
    static = lambda name: obgd_config[name] if obgd_config is not None and name in obgd_config else \
        next(h.default for h in registry.OPTIMIZERS['obgd'].hypers if h.name == name)
    obgd_options = dict(discount=value('discount'), trace_lambda=value('trace_lambda'), kappa=value('kappa'),
                        kappa_policy=value('kappa_policy'), per_network=bool(static('per_network')),
                        step_sizes=str(static('step_sizes')), meta_step_size=value('meta_step_size'),
                        beta_range=(float(static('beta_min')), float(static('beta_max'))))
  return make_optimizer(
      opt_config.name, learning_rate=hparams['learning_rate'], weight_decay=value('weight_decay'),
      noise_scale=value('noise_scale'), momentum=opt_config.get('momentum', 0.0), eps=opt_config.get('eps', 1e-8),
      perturbation=perturbation, key=key, b1=value('b1'), b2=value('b2'),
      l2_init_strength=value('l2_init') if l2_init else None, upgd_options=options, idbd_options=idbd_options,
      metaoptimize_options=metaoptimize_options, obgd_options=obgd_options)


def learned_step_sizes(opt_state: Any, params: Any, optimizer_config: Any, metaoptimize_config: Any = None,
                       obgd_config: Any = None, learning_rate: chex.Numeric = 1.0):
  """(params-shaped step sizes α, whether they are per weight) of an optimizer that learns them
  (IDBD, Autostep, MetaOptimize, ObGD with obgd.step_sizes='tidbd': the networks it adapts, with
  per_network the entries but 'policy', given ObGD's `learning_rate`), None for any other."""
  if optimizer_config.name == 'obgd':
    state = idbd_lib.find_state(opt_state, obgd_lib.ObGDState)
    if state is None or state.beta is None:
      return None
    per_network = bool((obgd_config or {}).get('per_network', False))
    return obgd_lib.step_sizes(state, learning_rate, per_network), True
  if optimizer_config.name in idbd_lib.NAMES:
    return idbd_lib.step_sizes(idbd_lib.find_state(opt_state)), True
  if optimizer_config.name == 'metaoptimize':
    blocks = (metaoptimize_config or {}).get('blocks', 'network')
    state = idbd_lib.find_state(opt_state, metaoptimize_lib.MetaOptimizeState)
    return metaoptimize_lib.step_sizes(state, params, blocks), blocks == 'weight'
  return None
