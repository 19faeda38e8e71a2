"""The learner: a network, its optimizer and the methods around them, stepped as one pure function.

A learner holds the methods its program uses (`ddl.learners.registry.active`: the optimizer, the
gradient and update terms, unit and boundary transforms, network options) and composes them
generically, in the order `ddl.learners.method` documents; it never names a method. Traced
hyperparameters live in the state as arrays (only those of the program's methods, and the learning
rate), so one compiled step serves every point of a seeds x sweep grid under `jax.vmap`; the
optimizer is rebuilt from them inside the traced step (cheap: closures, no compilation). The
optimizer is an optax `GradientTransformationExtraArgs`: besides the gradient it receives the
step's `key` (per seed and step) and `loss`, the Gauss-Newton `curvature` when a method asks for
it, and what the experiment passes (`extra`: e.g. a TD error). The methods' own state (CBP's
utilities, injected heads, a growing layer's mask, ...) is `LearnerState.methods`, by name.
Interventions at task boundaries run in `boundary`, which experiments call at every chunk start.

Networks with batch norm (a Flax `batch_stats` collection at init) take `train`: training steps run
them in train mode and carry the updated running statistics in the state; evaluation runs
(`predict`) use eval mode.
"""
import dataclasses
import functools
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ddl.learners import optimizers
from ddl.learners import registry
from ddl.learners import topology
from ddl.learners.method import Boundary, Build, Context, Hooks, Method, Step, overrides

LOSSES = ('mse', 'half_mse', 'cross_entropy')


@struct.dataclass
class LearnerState:
  params: Any
  opt_state: Any
  hparams: Dict[str, jax.Array]   # the traced hyperparameters of the program's methods
  batch_stats: Any = None         # Flax batch-norm running statistics (None: no batch norm)
  methods: Dict[str, Any] = struct.field(default_factory=dict)   # each method's own state, by name


class StepOutput(NamedTuple):
  loss: jax.Array                # loss of the batch before the update
  output: jax.Array              # network output before the update (online accuracy/error)
  features: Mapping[str, jax.Array]
  num_replaced: jax.Array        # units re-initialised by the unit transforms in this step


def loss_fn(kind, output: Any, target: Any) -> jax.Array:
  """Mean squared error (regression, output squeezed to the target's shape), half of it
  ('half_mse': the ½ δ² of LMS/IDBD, whose gradient is -δ x for a linear unit), softmax
  cross-entropy with integer labels, or `kind(output, target)` for a callable objective (e.g. the
  PPO loss over a policy and a value head)."""
  if callable(kind):
    return kind(output, target)
  if kind == 'mse':
    return jnp.mean((output.reshape(target.shape) - target) ** 2)
  if kind == 'half_mse':
    return 0.5 * jnp.mean((output.reshape(target.shape) - target) ** 2)
  if kind == 'cross_entropy':
    return optax.softmax_cross_entropy_with_integer_labels(output, target).mean()
  raise ValueError(f'loss={kind!r} is not known; use one of {LOSSES}.')


@dataclasses.dataclass(frozen=True)
class Learner:
  """Online learner of one run. Static structure only; everything numeric is in the state.

  network: a Flax module returning (output, features); its unit topology comes from
    `ddl.learners.topology`.
  loss: 'mse', 'half_mse', 'cross_entropy' or a callable (output, target) -> scalar loss.
  methods: the program's methods (`registry.active`), in composition order.
  config: the group's config: every method's static options (`Method.options`).
  largest: (name, value) of each traced hyperparameter's largest value over the program's
    variants (sizes static shapes, e.g. CBP's selection slots).
  num_chunks: chunks of the run (sizes e.g. the injection slots).
  """
  network: nn.Module
  loss: Any
  methods: Tuple[Method, ...]
  config: Any = None
  largest: Tuple[Tuple[str, float], ...] = ()
  num_chunks: int = 0

  @classmethod
  def from_config(cls, network: nn.Module, loss: Any, config: Any, group: Any, num_chunks: int) -> 'Learner':
    """The learner of a group of variants (ddl.config.Group): the methods its program holds."""
    methods = registry.active(config, group.hparams)
    largest = tuple((h.name, max(float(v[h.name]) for v in group.hparams)) for h in registry.traced_hypers(methods))
    return cls(network=network, loss=loss, methods=methods, config=config, largest=largest, num_chunks=num_chunks)

  @classmethod
  def of(cls, network: nn.Module, loss: Any, names=(), config: Any = None, num_chunks: int = 0,
         **largest: float) -> 'Learner':
    """A learner of the registered methods `names` (tests, notebooks; the first registered
    optimizer unless `names` holds one); `largest`: e.g. replacement_rate=1e-4 for CBP's selection
    slots."""
    methods = registry.resolve(names)
    if not any(m.kind == 'optimizer' for m in methods):
      methods.insert(0, next(iter(registry.OPTIMIZERS.values())))
    methods = registry.ordered(methods)
    values = {h.name: h.default for h in registry.traced_hypers(methods)}
    values.update(largest)
    return cls(network=network, loss=loss, methods=methods, config=config, largest=tuple(values.items()),
               num_chunks=num_chunks)

  def method(self, name: str) -> Method:
    return next(m for m in self.methods if m.name == name)

  @functools.cached_property
  def options(self) -> Dict[str, Dict[str, Any]]:
    """Each method's static options, by name."""
    return {m.name: m.options(self.config) for m in self.methods}

  @functools.cached_property
  def hooks(self) -> Dict[str, Hooks]:
    """The learner-side parts of the methods that have one (`Method.hooks`), in composition order."""
    largest = dict(self.largest)
    return {m.name: m.hooks(Context(self.network, self.loss, self.options[m.name], largest, self.num_chunks, self))
            for m in self.methods if m.hooks is not None}

  def _hooks_with(self, hook: str):
    return [(name, h) for name, h in self.hooks.items() if overrides(h, hook)]

  @property
  def traced(self) -> Tuple[Tuple[str, float], ...]:
    """(name, default) of the traced hyperparameters the state holds."""
    return tuple((h.name, h.default) for h in registry.traced_hypers(self.methods))

  @property
  def unit_layers(self):
    return topology.unit_layers(self.network)

  @property
  def replaces_units(self) -> bool:
    """Whether the program holds a unit transform (units re-initialised after steps)."""
    return any(m.kind == 'unit' for m in self.methods)

  def make_optimizer(self, hparams: Mapping[str, chex.Numeric], key=None) -> optax.GradientTransformationExtraArgs:
    return optimizers.chain(self.methods, lambda m: Build(hparams, self.options[m.name], key, self.config))

  def step_sizes(self, state: 'LearnerState'):
    """(params-shaped learned step sizes, whether per weight) of an optimizer that learns them
    (`Method.step_sizes`); None for optimizers with a fixed step size."""
    for m in self.methods:
      if m.step_sizes is not None:
        return m.step_sizes(state.opt_state, state.params, self.options[m.name], state.hparams)
    return None

  @property
  def needs_curvature(self) -> bool:
    """Whether a method's update takes `curvature` (`Method.extra_args`)."""
    return any('curvature' in m.extra_args for m in self.methods)

  def curvature(self, state: LearnerState, x: jax.Array, key: chex.PRNGKey, output_mask=None):
    """Params-shaped Gauss-Newton diagonal that IDBD and Autostep use for x²: the batch mean of
    Σ_k c_k (∂z_k/∂w)² over the outputs z_k of each example, c_k the second derivative of the
    example's loss in z_k (its diagonal): 1/K ('half_mse'), 2/K ('mse'), p_k(1 − p_k) for
    softmax cross-entropy (the p(1−p) form), 1 for a callable loss. Exact for one output (x_i² for
    a linear unit's weight, 1 for its bias). With K outputs the idbd section's
    `curvature_estimator` picks 'sketch' (default: one backward pass per example with cotangent
    ε_k √c_k, ε_k = ±1 at random, unbiased, O(#weights)) or 'exact' (K backward passes)."""
    estimators = [o['curvature_estimator'] for o in self.options.values() if 'curvature_estimator' in o]
    exact = (estimators or ['sketch'])[0] == 'exact'

    def outputs(params, example):
      return self.forward(params, state, example[None])[0][0].reshape(-1)

    def per_example(example, example_key):
      z, pullback = jax.vjp(lambda p: outputs(p, example), state.params)
      c = self.output_curvature(z, output_mask)
      if exact:
        rows = jax.vmap(lambda e: pullback(e * jnp.sqrt(c))[0])(jnp.eye(z.shape[0], dtype=z.dtype))
        return jax.tree.map(lambda g: jnp.sum(g ** 2, axis=0), rows)
      signs = jax.random.rademacher(example_key, z.shape, z.dtype)
      return jax.tree.map(jnp.square, pullback(signs * jnp.sqrt(c))[0])

    squares = jax.vmap(per_example)(x, jax.random.split(key, x.shape[0]))
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), squares)

  def output_curvature(self, z: jax.Array, output_mask=None) -> jax.Array:
    """Diagonal of one example's loss Hessian in its K outputs z (see `curvature`)."""
    if self.loss == 'cross_entropy':
      if output_mask is not None:
        z = jnp.where(output_mask.reshape(-1), z, -1e9)
      p = jax.nn.softmax(z)
      return p * (1 - p)
    scale = {'half_mse': 1.0, 'mse': 2.0}.get(self.loss, None)
    return jnp.full_like(z, 1.0 if scale is None else scale / z.shape[0])

  def loss_of(self, output: Any, target: Any) -> jax.Array:
    return loss_fn(self.loss, output, target)

  def init(self, key: chex.PRNGKey, sample_input: jax.Array,
           hparams: Mapping[str, chex.Numeric]) -> LearnerState:
    params_key, noise_key = jax.random.split(key)
    variables = self.network.init(params_key, sample_input)
    params = variables['params']
    hparams = {name: jnp.asarray(hparams.get(name, default), jnp.float32) for name, default in self.traced}
    states = {}
    hook_key = jax.random.fold_in(key, 7)
    for i, (name, hooks) in enumerate(self.hooks.items()):
      params, state = hooks.init(jax.random.fold_in(hook_key, i), params, sample_input, hparams)
      if state is not None:
        states[name] = state
    opt_state = self.make_optimizer(hparams, noise_key).init(params)
    return LearnerState(params=params, opt_state=opt_state, hparams=hparams,
                        batch_stats=variables.get('batch_stats'), methods=states)

  def apply(self, params, x: jax.Array, batch_stats=None):
    """Evaluation forward pass of the network alone (batch norm on its running statistics) ->
    (output, features). `predict` adds what the learner state holds beside the parameters."""
    if batch_stats is None:
      return self.network.apply({'params': params}, x)
    return self.network.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)

  def apply_train(self, params, x: jax.Array, batch_stats=None):
    """Training forward pass -> ((output, features), new batch_stats): batch norm on the batch's
    statistics, running statistics updated (None without batch norm)."""
    if batch_stats is None:
      return self.network.apply({'params': params}, x), None
    out, updates = self.network.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                      mutable=['batch_stats'])
    return out, updates['batch_stats']

  def run(self, params, state: LearnerState, x: jax.Array, train: bool = False):
    """The learner's forward pass -> ((output, features), batch_stats, method states): the
    parametrisations (`Hooks.parametrize`), the network (batch norm in train mode with `train`,
    updating the running statistics), then the methods' `Hooks.forward` (frozen heads, a growing
    layer's mask)."""
    states = dict(state.methods)
    for name, hooks in self._hooks_with('parametrize'):
      params, new = hooks.parametrize(states.get(name), params, train)
      if new is not None:
        states[name] = new
    if train:
      (output, features), batch_stats = self.apply_train(params, x, state.batch_stats)
    else:
      (output, features), batch_stats = self.apply(params, x, state.batch_stats), state.batch_stats
    for name, hooks in self._hooks_with('forward'):
      output, features = hooks.forward(states.get(name), params, x, output, features)
    return (output, features), batch_stats, states

  def network_params(self, state: LearnerState):
    """The parameters the network runs on in evaluation (after the parametrisations, e.g.
    spectrally normalised kernels): what code that calls the network directly (acting) uses."""
    params = state.params
    for name, hooks in self._hooks_with('parametrize'):
      params, _ = hooks.parametrize(state.methods.get(name), params, False)
    return params

  def forward(self, params, state: LearnerState, x: jax.Array, train: bool = False):
    """The learner's forward pass (`run`) -> ((output, features), batch_stats)."""
    return self.run(params, state, x, train)[:2]

  def predict(self, state: LearnerState, x: jax.Array):
    """Evaluation forward pass of the learner -> (output, features): the network on the state's
    parameters and batch-norm statistics, with every method's part of the forward pass."""
    return self.forward(state.params, state, x)[0]

  def objective(self, params, state: LearnerState, x: jax.Array, y: Any, output_mask=None):
    """Training objective of a batch -> (objective, (loss, output, features, new batch_stats,
    the methods' auxiliaries, the methods' states)): the loss plus the methods' terms
    (`Hooks.extra_loss`, e.g. a growing layer's fringe loss)."""
    (output, features), batch_stats, states = self.run(params, state, x, train=True)
    if output_mask is not None:
      output = jnp.where(output_mask, output, -1e9)
    loss = loss_fn(self.loss, output, y)
    total, aux = loss, {}
    for name, hooks in self._hooks_with('extra_loss'):
      term, aux[name] = hooks.extra_loss(states.get(name), params, x, y, output, features)
      total = total + term
    return total, (loss, output, features, batch_stats, aux, states)

  def step(self, state: LearnerState, x: jax.Array, y: Any, key: chex.PRNGKey,
           lr_factor: chex.Numeric = 1.0, output_mask: Optional[jax.Array] = None,
           extra: Optional[Mapping[str, Any]] = None):
    """One minibatch: forward, loss, gradient, optimizer step, then the unit transforms with the
    activations of this forward pass. Returns (new state, StepOutput).

    lr_factor: multiplies the learning rate of this step (a schedule). output_mask: bool over the
    outputs; masked-out logits are excluded from the loss and the returned output (classes not
    seen yet). extra: more extra arguments of the optimizer's update (e.g. a TD error)."""
    (_, (loss, output, features, batch_stats, aux, states)), grads = jax.value_and_grad(
        self.objective, has_aux=True)(state.params, state, x, y, output_mask)
    hparams = state.hparams
    if not (isinstance(lr_factor, (int, float)) and lr_factor == 1.0):
      hparams = {**hparams, 'learning_rate': hparams['learning_rate'] * lr_factor}
    args = {'curvature': self.curvature(state, x, jax.random.fold_in(key, 2), output_mask)} \
        if self.needs_curvature else {}
    args.update(extra or {})
    updates, opt_state = self.make_optimizer(hparams).update(
        grads, state.opt_state, state.params, key=jax.random.fold_in(key, 1), loss=loss, **args)
    params = optax.apply_updates(state.params, updates)
    after = Step(params, opt_state, batch_stats, features, aux, states, key, state.hparams, jnp.zeros((), jnp.int32))
    for name, hooks in self._hooks_with('after_step'):
      after, new = hooks.after_step(after.states.get(name), after)
      if new is not None:
        after = after._replace(states={**after.states, name: new})
    new_state = state.replace(params=after.params, opt_state=after.opt_state, batch_stats=after.batch_stats,
                              methods=after.states)
    return new_state, StepOutput(loss, output, features, after.num_replaced)

  def boundary(self, state: LearnerState, index: jax.Array, key: chex.PRNGKey, sample_input: jax.Array):
    """The boundary transforms due at the start of chunk `index` (a task): resets, plasticity
    injection (`Hooks.boundary`). A no-op (nothing in the program) without one."""
    hooks = self._hooks_with('boundary')
    if not hooks:
      return state
    b = Boundary(state.params, state.opt_state, state.batch_stats, dict(state.methods), index, key, sample_input,
                 state.hparams)
    for name, h in hooks:
      b, new = h.boundary(b.states.get(name), b)
      if new is not None:
        b = b._replace(states={**b.states, name: new})
    return state.replace(params=b.params, opt_state=b.opt_state, batch_stats=b.batch_stats, methods=b.states)

  def diagnostics(self, state: LearnerState) -> Dict[str, jax.Array]:
    """The methods' own diagnostics (`Hooks.diagnostics`, e.g. a growing layer's width)."""
    values = {}
    for name, hooks in self._hooks_with('diagnostics'):
      values.update(hooks.diagnostics(state.methods.get(name), state.params))
    return values
