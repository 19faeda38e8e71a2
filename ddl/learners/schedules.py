"""Interventions at task boundaries: resets (Nikishin et al. 2022) and plasticity injection (Nikishin
et al. 2023). The learner applies them at the start of a chunk (a task, or a bin of steps), when
the chunk index is due: `due(index, first, every)`.

Reset: re-initialise the last `layers` weight layers (the head), the whole network (layers=0) or,
with layers=-k, the first k (an encoder: e.g. a conv net's conv layers, without its dense head), from the
network's own initializers, and zero their optimizer state.

Injection: at injection j the head θ is frozen and a fresh head θ' (trainable) minus a frozen copy
θ'' of it is added, so the output is unchanged at that moment and only θ' (with the trunk) learns
afterwards: out = f_θ'(x) + Σ_j (h_θj(z) − h_θ''j(z)), z the trunk's features. Shapes are static:
`slots` frozen heads are preallocated (2 per injection of the run), so injecting recompiles nothing.
"""
from typing import Any, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from ddl.learners import method as method_lib
from ddl.learners.hyper import Hyper

RESET_HYPERS = (
    Hyper('reset_first', 0, low=0, traced=False, doc='chunk (task) of the first reset; 0: no resets'),
    Hyper('reset_every', 0, low=0, traced=False, doc='chunks between resets after the first; 0: once'),
    Hyper('reset_layers', 0, traced=False,
          doc='last weight layers re-initialised (a head); 0: the whole network; -k: the first k (an encoder)'),
)
INJECTION_HYPERS = (
    Hyper('injection_first', 0, low=0, traced=False, doc='chunk (task) of the first injection; 0: none'),
    Hyper('injection_every', 0, low=0, traced=False, doc='chunks between injections after the first; 0: once'),
    Hyper('injection_layers', 2, low=1, traced=False, doc='last weight layers forming the head'),
)


def due(index: jax.Array, first: int, every: int) -> jax.Array:
  """Whether chunk `index` gets the intervention: first, then every `every` chunks (0: once);
  first=0 never."""
  if first <= 0:
    return jnp.zeros(jnp.shape(index), bool)
  after = index - first
  if every <= 0:
    return after == 0
  return (after >= 0) & (after % every == 0)


def count(first: int, every: int, num_chunks: int) -> int:
  """How many times the schedule fires in chunks [0, num_chunks)."""
  if first <= 0 or first >= num_chunks:
    return 0
  return 1 if every <= 0 else (num_chunks - 1 - first) // every + 1


def head_start(network, layers: int) -> int:
  """Index of the first layer of a head of the last `layers` weight layers (0: the whole network)."""
  names = network.layer_names()
  return 0 if layers <= 0 else max(len(names) - layers, 0)


def head_names(network, sample_input: jax.Array, start: int) -> Tuple[str, ...]:
  """Top-level parameter names that the network from layer `start` on uses (weights and norms)."""
  z = head_input_shape(network, sample_input, start)
  shapes = jax.eval_shape(lambda: network.init(jax.random.key(0), jnp.zeros(z.shape, z.dtype), start=start))
  return tuple(shapes['params'])


def head_input_shape(network, sample_input: jax.Array, start: int):
  if start == 0:
    return jax.ShapeDtypeStruct(sample_input.shape, sample_input.dtype)
  _, features = jax.eval_shape(lambda: network.init_with_output(jax.random.key(0), sample_input)[0])
  return features[network.layer_names()[start - 1]]


@struct.dataclass
class InjectionState:
  heads: Any          # frozen head parameters, each leaf stacked (slots, ...): θ_j at 2j, θ''_j at 2j + 1
  signs: jax.Array    # (slots,) float32: +1 / -1 once slot is filled, 0 before
  done: jax.Array     # injections so far, int32


def init_injection(head_params: Any, injections: int) -> InjectionState:
  slots = 2 * injections
  heads = jax.tree.map(lambda x: jnp.zeros((slots,) + x.shape, x.dtype), head_params)
  return InjectionState(heads=heads, signs=jnp.zeros((slots,), jnp.float32), done=jnp.zeros((), jnp.int32))


def inject(state: InjectionState, params: Any, fresh_head: Any, names: Tuple[str, ...], now: jax.Array):
  """(params, injection state) after an injection when `now`: the current head goes to slot 2j (+),
  the fresh head becomes the trainable one and its copy goes to slot 2j + 1 (-)."""
  current = {name: params[name] for name in names}
  j = 2 * state.done
  put = lambda stack, value, slot: jax.tree.map(
      lambda s, v: s.at[slot].set(jnp.where(now, v, s[slot])), stack, value)
  heads = put(put(state.heads, current, j), fresh_head, j + 1)
  signs = state.signs.at[j].set(jnp.where(now, 1.0, state.signs[j])).at[j + 1].set(
      jnp.where(now, -1.0, state.signs[j + 1]))
  params = {**params, **{name: jax.tree.map(lambda f, c: jnp.where(now, f, c), fresh_head[name], params[name])
                         for name in names}}
  return params, InjectionState(heads=heads, signs=signs, done=state.done + now.astype(jnp.int32))


def frozen_output(network, state: InjectionState, z: jax.Array, start: int) -> jax.Array:
  """Σ over slots of sign x head_slot(z): the frozen heads' part of the output (gradients reach z,
  not the frozen heads)."""
  heads = jax.lax.stop_gradient(state.heads)
  out = jax.vmap(lambda head: network.apply({'params': head}, z, start=start)[0])(heads)
  return jnp.tensordot(state.signs, out, axes=1)


def _select(now: jax.Array, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda n, o: jnp.where(now, n, o), new, old)


def reinit_optimizer_entries(params: Any, opt_state: Any, names, now: jax.Array) -> Any:
  """The optimizer state after the top-level parameters `names` were re-initialised (when `now`):
  their entries zeroed, kept or re-set to the new parameters as each method declares
  (`ddl.learners.method.map_reset_state`)."""
  def entries(new):
    return lambda sub: {k: _select(now, new(k, v), v) if k in names else v for k, v in sub.items()}
  zero = entries(lambda k, v: jax.tree.map(jnp.zeros_like, v))
  reinit = entries(lambda k, v: params[k])
  return method_lib.map_reset_state(opt_state, params, zero, reinit)


class ResetHooks(method_lib.Hooks):
  """Resets at chunk starts: the last `reset_layers` layers, or the whole network (then batch
  statistics too, and the unit transforms' states started afresh)."""

  def boundary(self, state, b):
    o, network, learner = self.context.options, self.context.network, self.context.learner
    now = due(b.index, o['reset_first'], o['reset_every'])
    reset_key = jax.random.split(b.key)[0]
    fresh = network.init(reset_key, b.sample_input)
    params, batch_stats, states = b.params, b.batch_stats, dict(b.states)
    if o['reset_layers'] > 0:
      names = head_names(network, b.sample_input, head_start(network, o['reset_layers']))
    elif o['reset_layers'] < 0:   # the first k layers: what the layers from k on do not use
      after = head_names(network, b.sample_input, -o['reset_layers'])   # < the layers: `_reset_check`
      names = tuple(n for n in params if n not in after)
    else:
      names = tuple(params)
      if batch_stats is not None:
        batch_stats = _select(now, fresh['batch_stats'], batch_stats)
      for name, hooks in learner.hooks.items():
        if name in states and learner.method(name).kind == 'unit':
          states[name] = _select(now, hooks.init(reset_key, params, b.sample_input, b.hparams)[1], states[name])
    params = {**params, **{n: _select(now, fresh['params'][n], params[n]) for n in names}}
    opt_state = reinit_optimizer_entries(params, b.opt_state, names, now)
    return b._replace(params=params, opt_state=opt_state, batch_stats=batch_stats, states=states), state


def _head_problem(where):
  """Why a head (the last layers) cannot be formed: a network that names no layers."""
  if not hasattr(where.network(), 'layer_names'):
    return (f'its network ({type(where.network()).__name__}) declares no named layers to form a head (networks '
            'with one: MLP, ConvNet)')
  return None


def _reset_check(where):
  layers = RESET.options(where.config)['reset_layers']
  problem = _head_problem(where) if layers != 0 else None
  if problem is None and layers < 0 and -layers >= len(where.network().layer_names()):
    problem = (f'schedule.reset_layers={layers} resets the first {-layers} layers, but the network has '
               f'{len(where.network().layer_names())}: set 0 to reset the whole network')
  return problem


RESET = method_lib.Method(
    'reset', 'boundary', 'resets of the last layers (a head), the first (an encoder) or the whole network (Nikishin et al. 2022)', RESET_HYPERS,
    section='schedule', active=method_lib.positive('schedule.reset_first'), check=_reset_check, hooks=ResetHooks,
    examples=(('reset', dict(schedule=dict(reset_first=1, reset_every=1, reset_layers=1))),
              ('reset_network', dict(schedule=dict(reset_first=1, reset_every=1, reset_layers=0)))))


class InjectionHooks(method_lib.Hooks):
  """Plasticity injection: the frozen-head slots at init, the frozen heads' output in every forward
  pass, an injection at the chunk starts it is due."""

  @property
  def start(self) -> int:
    return head_start(self.context.network, self.context.options['injection_layers'])

  def injections(self) -> int:
    o = self.context.options
    return count(o['injection_first'], o['injection_every'], self.context.num_chunks)

  def init(self, key, params, sample_input, hparams):
    del key, hparams
    if not self.injections():
      return params, None
    names = head_names(self.context.network, sample_input, self.start)
    return params, init_injection({n: params[n] for n in names}, self.injections())

  def forward(self, state, params, x, output, features):
    del params
    if state is None:
      return output, features
    z = x if self.start == 0 else features[self.context.network.layer_names()[self.start - 1]]
    return output + frozen_output(self.context.network, state, z, self.start), features

  def boundary(self, state, b):
    if state is None:
      return b, state
    o, network = self.context.options, self.context.network
    now = due(b.index, o['injection_first'], o['injection_every'])
    inject_key = jax.random.split(b.key)[1]
    z = head_input_shape(network, b.sample_input, self.start)
    fresh_head = network.init(inject_key, jnp.zeros(z.shape, z.dtype), start=self.start)['params']
    names = tuple(fresh_head)
    params, state = inject(state, b.params, fresh_head, names, now)
    opt_state = reinit_optimizer_entries(params, b.opt_state, names, now)
    return b._replace(params=params, opt_state=opt_state), state


INJECTION = method_lib.Method(
    'injection', 'boundary', 'plasticity injection (Nikishin et al. 2023)', INJECTION_HYPERS, section='schedule',
    active=method_lib.positive('schedule.injection_first'), check=_head_problem, hooks=InjectionHooks,
    examples=(('injection', dict(schedule=dict(injection_first=1))),))
