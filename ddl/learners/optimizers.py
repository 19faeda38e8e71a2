"""PyTorch's SGD and Adam, coupled L2 and Shrink & Perturb as method declarations, and the optax
chain that the learner builds from a program's methods.

Coupled L2 is PyTorch's `weight_decay` (added to the gradient before the optimizer), so L2 and the
"shrink" of Shrink & Perturb are one `optax.add_decayed_weights`. The "perturb" is its own
transform that carries its PRNG key in its state. Every traced hyperparameter (`learning_rate`,
`weight_decay`, `noise_scale`, Adam's b1, b2) may be an array under vmap.

`chain(methods, build)` composes the optax part of any set of methods (`ddl.learners.method`):
the 'gradient' terms (registry order), the one 'optimizer', the 'wrapper's around both, then the
'update' terms; `build(method)` gives each its `Build`.
"""
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import chex
import jax
import jax.flatten_util
import optax

from ddl.learners.hyper import Hyper
from ddl.learners.method import Build, Method, gated, selected

LEARNING_RATE = Hyper('learning_rate', 0.01, low=0, open_low=True, doc='step size of every optimizer')
ADAM_MOMENTS = (Hyper('b1', 0.9, low=0, high=1, doc="Adam's first-moment decay"),
                Hyper('b2', 0.999, low=0, high=1, doc="Adam's second-moment decay"))


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


SGD = Method(
    'sgd', 'optimizer', 'PyTorch SGD (dampening 0, no Nesterov; momentum 0 keeps no buffer)',
    (Hyper('momentum', 0.0, low=0, high=1, open_high=True, traced=False, doc='heavy-ball momentum'),),
    section='optimizer', active=selected('optimizer.name', 'sgd'), examples=(('sgd', dict(optimizer=dict(name='sgd'))),),
    transform=lambda b: optax.sgd(b.hparams['learning_rate'], momentum=b.options['momentum'] or None))

ADAM = Method(
    'adam', 'optimizer', 'PyTorch Adam (bias-corrected)',
    (*ADAM_MOMENTS, Hyper('eps', 1e-8, low=0, open_low=True, traced=False, doc="Adam's epsilon")),
    section='optimizer', active=selected('optimizer.name', 'adam'), examples=(('adam', dict(optimizer=dict(name='adam'))),),
    transform=lambda b: optax.adam(b.hparams['learning_rate'], b1=b.hparams['b1'], b2=b.hparams['b2'],
                                   eps=b.options['eps']))

L2 = Method(
    'l2', 'gradient', 'coupled L2 (PyTorch weight_decay); also the shrink of S&P',
    (Hyper('weight_decay', 0.0, low=0, doc='coupled L2 coefficient'),),   # always in the chain: 0 adds nothing
    examples=(('l2', dict(weight_decay=1e-4)),),
    transform=lambda b: optax.add_decayed_weights(b.hparams['weight_decay']))

SNP = Method(
    'snp', 'update', 'Shrink & Perturb (Ash & Adams 2020): weight_decay plus N(0, noise_scale^2) per step',
    (Hyper('noise_scale', 0.0, low=0, doc='std of the noise added to every weight per step'),),
    active=gated('noise_scale'), examples=(('snp', dict(weight_decay=1e-4, noise_scale=1e-4)),), transform=lambda b: perturb(b.hparams['noise_scale'], b.key))


def chain(methods: Sequence[Method], build: Callable[[Method], Build]) -> optax.GradientTransformationExtraArgs:
  """The optax part of `methods`: gradient terms -> the optimizer -> wrappers around both -> update
  terms. Extra arguments of `update` (`key`, `loss`, `curvature`, `td_error`, ...) reach every
  transform (optax drops those a plain transform does not take)."""
  of = lambda kind: [m for m in methods if m.kind == kind]
  optimizers = of('optimizer')
  if len(optimizers) != 1:
    raise ValueError(f'a program holds exactly one optimizer, got {[m.name for m in optimizers]}.')
  inner = optax.chain(*[m.transform(build(m)) for m in of('gradient') + optimizers])
  for wrapper in of('wrapper'):
    inner = wrapper.transform(build(wrapper), inner)
  return optax.chain(inner, *[m.transform(build(m)) for m in of('update')])


def build_chain(names: Sequence[str], hparams: Mapping[str, chex.Numeric], options: Optional[Mapping[str, Any]] = None,
                key: Optional[chex.PRNGKey] = None) -> optax.GradientTransformationExtraArgs:
  """The chain of registered methods by name (e.g. ('l2', 'adam', 'snp')) with traced values
  `hparams` (declared defaults for those missing) and static `options` ({name: value}, declared
  defaults for those missing): the learner's composition outside a learner (tests, notebooks)."""
  from ddl.learners import registry  # pylint: disable=g-import-not-at-top
  methods = registry.resolve(names)
  values = {h.name: h.default for m in methods for h in m.traced}
  values.update({'learning_rate': LEARNING_RATE.default, **hparams})
  settings = dict(options or {})
  make = lambda m: Build(hparams=values, options={h.name: settings.get(h.name, h.default) for h in m.static}, key=key)
  return chain(registry.ordered(methods), make)
