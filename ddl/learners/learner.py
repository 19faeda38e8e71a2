"""The learner: a network, its optimizer and its reset transform, stepped as one pure function.

Hyperparameters that a sweep varies live in the state as arrays (`HPARAMS`, declared by the methods
in `ddl.learners.registry`), so one compiled step serves every point of a seeds x sweep grid under
`jax.vmap`; the optimizer and the reset transform are rebuilt from them inside the traced step
(cheap: closures, no compilation). The optimizer is an optax `GradientTransformationExtraArgs`:
besides the gradient it receives the step's `key` (per seed and step) and `loss`, which per-weight
methods (UPGD) use, and for IDBD/Autostep the `curvature` (squared gradient of the output).
Interventions at task boundaries (resets, plasticity injection) run in
`boundary`, which experiments call at the start of every chunk.

Networks with batch norm (a Flax `batch_stats` collection at init) take `train`: training steps run
them in train mode and carry the updated running statistics in the state; evaluation runs
(`predict`) use eval mode.
"""
import dataclasses
from typing import Any, Dict, Mapping, NamedTuple, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ddl.learners import cbp as cbp_lib
from ddl.learners import growth as growth_lib
from ddl.learners import idbd as idbd_lib
from ddl.learners import optimizers
from ddl.learners import redo as redo_lib
from ddl.learners import registry
from ddl.learners import schedules
from ddl.learners import topology

HPARAMS = registry.HPARAMS
RESETS = ('cbp', 'redo')
LOSSES = ('mse', 'half_mse', 'cross_entropy')


@struct.dataclass
class LearnerState:
  params: Any
  opt_state: Any
  cbp_state: Optional[cbp_lib.CBPState]
  hparams: Dict[str, jax.Array]
  batch_stats: Any = None        # Flax batch-norm running statistics (None: no batch norm)
  injection: Optional[schedules.InjectionState] = None   # frozen heads of plasticity injection
  growth: Optional[growth_lib.GrowthState] = None         # backbone/fringe mask of a growing layer


class StepOutput(NamedTuple):
  loss: jax.Array                # loss of the batch before the update
  output: jax.Array              # network output before the update (online accuracy/error)
  features: Mapping[str, jax.Array]
  num_replaced: jax.Array        # units re-initialised by the reset transform in this step


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
  optimizer: config section with name ('sgd', 'adam', 'upgd', 'idbd', 'autostep'), momentum, eps;
    Adam's b1, b2, UPGD's and IDBD's hyperparameters are traced hparams (UPGD's `protect` in the
    `upgd` section, Autostep's tau and the clip of log step sizes in the `idbd` section).
  perturbation: whether the optimizer holds the S&P noise transform.
  l2_init: whether the optimizer holds the L2 Init regulariser.
  cbp: config section with util_type, count_mode, count_base, reset_optimizer_state,
    next_bias_correction, utility_statistic, and optionally method ('cbp' or 'redo',
    ddl.learners.redo, with redo_threshold and redo_period); None, or for CBP max_replacement_rate
    0, leaves the reset transform out of the program.
  max_replacement_rate: the largest replacement rate of the sweep sharing this program.
  upgd: config section of UPGD's static options (None: defaults).
  idbd: config section of IDBD's and Autostep's static options (None: defaults), with
    `curvature_estimator` (see `curvature`).
  metaoptimize: config section of MetaOptimize's static options (None: defaults).
  obgd: config section of ObGD's static options (None: defaults: per_network, step_sizes 'fixed' or
    'tidbd', the clip of log step sizes); its update takes `td_error` and `done`, which `step` passes
    on from its `extra` argument.
  schedule: config section with reset_* and injection_* (ddl.learners.schedules); None: neither.
  growth: config section of a growing last hidden layer (ddl.learners.growth); None or
    initial_units 0: no growth.
  num_chunks: chunks of the run (sizes the injection slots).
  """
  network: nn.Module
  loss: Any
  optimizer: Any
  cbp: Any = None
  max_replacement_rate: float = 0.0
  perturbation: bool = True
  l2_init: bool = False
  upgd: Any = None
  idbd: Any = None
  metaoptimize: Any = None
  obgd: Any = None
  schedule: Any = None
  growth: Any = None
  num_chunks: int = 0

  @classmethod
  def from_config(cls, network: nn.Module, loss: Any, config: Any, group: Any, num_chunks: int) -> 'Learner':
    """The learner of a group of variants (ddl.config.Group): what its program holds."""
    return cls(network=network, loss=loss, optimizer=config.optimizer, cbp=config.cbp,
               max_replacement_rate=group.max_replacement_rate, perturbation=group.perturbation,
               l2_init=group.uses('l2_init'), upgd=config.get('upgd'), idbd=config.get('idbd'),
               metaoptimize=config.get('metaoptimize'), obgd=config.get('obgd'), growth=config.get('growth'), schedule=config.get('schedule'),
               num_chunks=num_chunks)

  @property
  def unit_layers(self):
    return topology.unit_layers(self.network)

  @property
  def reset_method(self) -> str:
    return self.cbp.get('method', 'cbp') if self.cbp is not None else 'cbp'

  @property
  def uses_cbp(self) -> bool:
    """Whether the program holds a reset transform (CBP with a positive rate, or ReDo)."""
    active = self.max_replacement_rate > 0 or self.reset_method == 'redo'
    return self.cbp is not None and active and bool(self.unit_layers)

  @property
  def grows(self) -> bool:
    """Whether the last hidden layer grows and shrinks (ddl.learners.growth)."""
    return self.growth is not None and self.growth.initial_units > 0

  @property
  def injections(self) -> int:
    """Plasticity injections this run makes (static: sizes the frozen-head slots)."""
    s = self.schedule
    return 0 if s is None else schedules.count(s.injection_first, s.injection_every, self.num_chunks)

  @property
  def head_start(self) -> int:
    return schedules.head_start(self.network, self.schedule.injection_layers)

  def make_optimizer(self, hparams: Mapping[str, chex.Numeric], key=None) -> optax.GradientTransformationExtraArgs:
    return optimizers.from_config(self.optimizer, hparams, self.perturbation, key, l2_init=self.l2_init,
                                  upgd_config=self.upgd, idbd_config=self.idbd,
                                  metaoptimize_config=self.metaoptimize, obgd_config=self.obgd)

  def step_sizes(self, state: 'LearnerState'):
    """(params-shaped learned step sizes, whether per weight) for IDBD, Autostep, MetaOptimize and
    ObGD with TIDBD (its critic's); None for optimizers with a fixed step size."""
    return optimizers.learned_step_sizes(state.opt_state, state.params, self.optimizer, self.metaoptimize,
                                         self.obgd, state.hparams['learning_rate'])

  @property
  def needs_curvature(self) -> bool:
    """Whether the optimizer's update takes `curvature` (IDBD, Autostep)."""
    return self.optimizer.name in idbd_lib.NAMES

  def curvature(self, state: LearnerState, x: jax.Array, key: chex.PRNGKey, output_mask=None):
    """Params-shaped Gauss-Newton diagonal that IDBD and Autostep use for x²: the batch mean of
    Σ_k c_k (∂z_k/∂w)² over the outputs z_k of each example, c_k the second derivative of the
    example's loss in z_k (its diagonal): 1/K ('half_mse'), 2/K ('mse'), p_k(1 − p_k) for
    softmax cross-entropy (the p(1−p) form), 1 for a callable loss. Exact for one output (x_i² for
    a linear unit's weight, 1 for its bias). With K outputs the idbd section's
    `curvature_estimator` picks 'sketch' (default: one backward pass per example with cotangent
    ε_k √c_k, ε_k = ±1 at random, unbiased, O(#weights)) or 'exact' (K backward passes)."""
    exact = (self.idbd or {}).get('curvature_estimator', 'sketch') == 'exact'

    def outputs(params, example):
      return self.forward(params, state, example[None])[0][0].reshape(-1)

    def per_example(example, example_key):
      z, pullback = jax.vjp(lambda p: outputs(p, example), state.params)
      c = self._output_curvature(z, output_mask)
      if exact:
        rows = jax.vmap(lambda e: pullback(e * jnp.sqrt(c))[0])(jnp.eye(z.shape[0], dtype=z.dtype))
        return jax.tree.map(lambda g: jnp.sum(g ** 2, axis=0), rows)
      signs = jax.random.rademacher(example_key, z.shape, z.dtype)
      return jax.tree.map(jnp.square, pullback(signs * jnp.sqrt(c))[0])

    squares = jax.vmap(per_example)(x, jax.random.split(key, x.shape[0]))
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), squares)

  def _output_curvature(self, z: jax.Array, output_mask=None) -> jax.Array:
    """Diagonal of one example's loss Hessian in its K outputs z (see `curvature`)."""
    if self.loss == 'cross_entropy':
      if output_mask is not None:
        z = jnp.where(output_mask.reshape(-1), z, -1e9)
      p = jax.nn.softmax(z)
      return p * (1 - p)
    scale = {'half_mse': 1.0, 'mse': 2.0}.get(self.loss, None)
    return jnp.full_like(z, 1.0 if scale is None else scale / z.shape[0])

  def make_cbp(self, hparams: Mapping[str, chex.Numeric]) -> cbp_lib.ResetTransform:
    if self.reset_method == 'redo':
      return redo_lib.redo(self.unit_layers, threshold=self.cbp.redo_threshold,
                           period=int(self.cbp.redo_period), reset_optimizer_state=self.cbp.reset_optimizer_state)
    return cbp_lib.continual_backprop(
        self.unit_layers, replacement_rate=hparams['replacement_rate'],
        maturity_threshold=hparams['maturity_threshold'], decay_rate=hparams['decay_rate'],
        util_type=self.cbp.util_type, count_mode=self.cbp.count_mode,
        count_base=self.cbp.count_base, max_replacement_rate=self.max_replacement_rate,
        reset_optimizer_state=self.cbp.reset_optimizer_state,
        next_bias_correction=self.cbp.next_bias_correction,
        utility_statistic=self.cbp.get('utility_statistic', 'ema'))

  def init(self, key: chex.PRNGKey, sample_input: jax.Array,
           hparams: Mapping[str, chex.Numeric]) -> LearnerState:
    params_key, noise_key = jax.random.split(key)
    variables = self.network.init(params_key, sample_input)
    params = variables['params']
    growth = None
    if self.grows:
      params = {**params, growth_lib.FRINGE: growth_lib.init_fringe(self.network)}
      growth = growth_lib.init(self.network, self.growth)
    hparams = {h.name: jnp.asarray(hparams.get(h.name, h.default), jnp.float32) for h in registry.traced_hypers()}
    opt_state = self.make_optimizer(hparams, noise_key).init(params)
    cbp_state = self.make_cbp(hparams).init(params) if self.uses_cbp else None
    injection = None
    if self.injections:
      names = schedules.head_names(self.network, sample_input, self.head_start)
      injection = schedules.init_injection({n: params[n] for n in names}, self.injections)
    return LearnerState(params=params, opt_state=opt_state, cbp_state=cbp_state, hparams=hparams,
                        batch_stats=variables.get('batch_stats'), injection=injection, growth=growth)

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

  def _with_injection(self, output, features, x, injection):
    if injection is None:
      return output
    start = self.head_start
    z = x if start == 0 else features[self.network.layer_names()[start - 1]]
    return output + schedules.frozen_output(self.network, injection, z, start)

  def forward(self, params, state: LearnerState, x: jax.Array, train: bool = False):
    """The learner's forward pass -> ((output, features), batch_stats): the network (batch norm in
    train mode with `train`, updating the running statistics), plus injected frozen heads, with a
    growing layer's fringe masked out of the output and the features."""
    if train:
      (output, features), batch_stats = self.apply_train(params, x, state.batch_stats)
    else:
      (output, features), batch_stats = self.apply(params, x, state.batch_stats), state.batch_stats
    output = self._with_injection(output, features, x, state.injection)
    if state.growth is not None:
      output = growth_lib.backbone_output(self.network, params, features, state.growth.active)
      name = growth_lib.grown_layer(self.network).features
      features = {**features, name: features[name] * state.growth.active}
    return (output, features), batch_stats

  def predict(self, state: LearnerState, x: jax.Array):
    """Evaluation forward pass of the learner -> (output, features): the network on the state's
    parameters and batch-norm statistics, plus injected frozen heads (`forward`)."""
    return self.forward(state.params, state, x)[0]

  def objective(self, params, state: LearnerState, x: jax.Array, y: Any, output_mask=None):
    """Training objective of a batch -> (objective, (loss, output, features, new batch_stats,
    growth signals)): the loss, plus a growing layer's fringe loss (ddl.learners.growth; its
    signals are None without growth)."""
    (output, features), batch_stats = self.forward(params, state, x, train=True)
    if output_mask is not None:
      output = jnp.where(output_mask, output, -1e9)
    loss = loss_fn(self.loss, output, y)
    if state.growth is None:
      return loss, (loss, output, features, batch_stats, None)
    fixed = jax.lax.stop_gradient(output)
    residual = -jax.grad(lambda z: loss_fn(self.loss, z, y))(fixed) * output.shape[0]
    if self.loss in ('mse', 'half_mse'):   # y - ŷ: undo the loss's scale 2/K or 1/K
      residual = residual / self._output_curvature(fixed[0])
    names = self.network.layer_names()
    grown = names.index(growth_lib.grown_layer(self.network).features)
    layer_input = x if grown == 0 else features[names[grown - 1]]
    signals = growth_lib.signals(self.network, params, features, layer_input, state.growth.active,
                                 residual.reshape(output.shape[0], -1))
    return loss + growth_lib.fringe_loss(signals), (loss, output, features, batch_stats, signals)

  def step(self, state: LearnerState, x: jax.Array, y: Any, key: chex.PRNGKey,
           lr_factor: chex.Numeric = 1.0, output_mask: Optional[jax.Array] = None,
           extra: Optional[Mapping[str, Any]] = None):
    """One minibatch: forward, loss, gradient, optimizer step, then the reset transform with the
    activations of this forward pass. Returns (new state, StepOutput).

    lr_factor: multiplies the learning rate of this step (a schedule). output_mask: bool over the
    outputs; masked-out logits are excluded from the loss and the returned output (classes not
    seen yet). extra: more extra arguments of the optimizer's update (ObGD's `td_error`, `done`)."""
    (_, (loss, output, features, batch_stats, signals)), grads = jax.value_and_grad(self.objective, has_aux=True)(
        state.params, state, x, y, output_mask)
    hparams = state.hparams
    if not (isinstance(lr_factor, (int, float)) and lr_factor == 1.0):
      hparams = {**hparams, 'learning_rate': hparams['learning_rate'] * lr_factor}
    args = {'curvature': self.curvature(state, x, jax.random.fold_in(key, 2), output_mask)} \
        if self.needs_curvature else {}
    args.update(extra or {})
    updates, opt_state = self.make_optimizer(hparams).update(
        grads, state.opt_state, state.params, key=jax.random.fold_in(key, 1), loss=loss, **args)
    params = optax.apply_updates(state.params, updates)
    cbp_state, num_replaced = state.cbp_state, jnp.zeros((), jnp.int32)
    if self.uses_cbp:
      params, opt_state, cbp_state, info = self.make_cbp(state.hparams).update(
          params, opt_state, state.cbp_state, features, key)
      num_replaced = info.num_replaced
      if batch_stats is not None:
        batch_stats = cbp_lib.restore_norms(self.unit_layers, batch_stats, info.replaced)
    growth = state.growth
    if growth is not None:
      params, opt_state, growth, _ = growth_lib.update(self.network, params, opt_state, growth, signals, state.hparams,
                                                       jax.random.fold_in(key, 3), self.growth)
      if cbp_state is not None:
        cbp_state = growth_lib.immature_fringe(cbp_state, self.network, growth.active)
    new_state = state.replace(params=params, opt_state=opt_state, cbp_state=cbp_state, batch_stats=batch_stats,
                              growth=growth)
    return new_state, StepOutput(loss, output, features, num_replaced)

  def boundary(self, state: LearnerState, index: jax.Array, key: chex.PRNGKey, sample_input: jax.Array):
    """The interventions due at the start of chunk `index` (a task): a reset of the last
    `reset_layers` layers or the whole network, and a plasticity injection. Their parameters'
    optimizer state is zeroed. A no-op (nothing in the program) without a schedule."""
    s = self.schedule
    if s is None or (s.reset_first <= 0 and not self.injections):
      return state
    reset_key, inject_key = jax.random.split(key)
    params, opt_state, batch_stats, cbp_state = state.params, state.opt_state, state.batch_stats, state.cbp_state
    if s.reset_first > 0:
      now = schedules.due(index, s.reset_first, s.reset_every)
      fresh = self.network.init(reset_key, sample_input)
      if s.reset_layers > 0:
        names = schedules.head_names(self.network, sample_input, schedules.head_start(self.network, s.reset_layers))
      else:
        names = tuple(params)
        if batch_stats is not None:
          batch_stats = _select(now, fresh['batch_stats'], batch_stats)
        if cbp_state is not None:
          cbp_state = _select(now, self.make_cbp(state.hparams).init(params), cbp_state)
      params = {**params, **{n: _select(now, fresh['params'][n], params[n]) for n in names}}
      opt_state = _zero_optimizer_entries(params, opt_state, names, now)
    injection = state.injection
    if self.injections:
      now = schedules.due(index, s.injection_first, s.injection_every)
      start = self.head_start
      z = schedules.head_input_shape(self.network, sample_input, start)
      fresh_head = self.network.init(inject_key, jnp.zeros(z.shape, z.dtype), start=start)['params']
      names = tuple(fresh_head)
      params, injection = schedules.inject(injection, params, fresh_head, names, now)
      opt_state = _zero_optimizer_entries(params, opt_state, names, now)
    return state.replace(params=params, opt_state=opt_state, batch_stats=batch_stats, cbp_state=cbp_state,
                         injection=injection)


def _select(now: jax.Array, new: Any, old: Any) -> Any:
  return jax.tree.map(lambda n, o: jnp.where(now, n, o), new, old)


def _zero_optimizer_entries(params: Any, opt_state: Any, names, now: jax.Array) -> Any:
  """Zeroes, when `now`, the entries of top-level parameters `names` in the optimizer's per-weight
  statistics (momentum, Adam moments, UPGD utilities)."""
  zero = lambda sub: {k: _select(now, jax.tree.map(jnp.zeros_like, v), v) if k in names else v for k, v in sub.items()}
  return cbp_lib.map_optimizer_moments(zero, params, opt_state)
