"""The learner: a network, its optimizer and its reset transform, stepped as one pure function.

Hyperparameters that a sweep varies live in the state as arrays (`HPARAMS`), so one compiled step
serves every point of a seeds x sweep grid under `jax.vmap`; the optimizer and the CBP transform are
rebuilt from them inside the traced step (cheap: closures, no compilation).

Networks with batch norm (a Flax `batch_stats` collection at init) take `train`: training steps run
them in train mode and carry the updated running statistics in the state; `apply` is eval mode.
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
from ddl.learners import optimizers
from ddl.learners import redo as redo_lib

HPARAMS = ('learning_rate', 'weight_decay', 'noise_scale', 'replacement_rate', 'maturity_threshold',
           'decay_rate', 'b1', 'b2')
RESETS = ('cbp', 'redo')
LOSSES = ('mse', 'cross_entropy')


@struct.dataclass
class LearnerState:
  params: Any
  opt_state: Any
  cbp_state: Optional[cbp_lib.CBPState]
  hparams: Dict[str, jax.Array]
  batch_stats: Any = None        # Flax batch-norm running statistics (None: no batch norm)


class StepOutput(NamedTuple):
  loss: jax.Array                # loss of the batch before the update
  output: jax.Array              # network output before the update (online accuracy/error)
  features: Mapping[str, jax.Array]
  num_replaced: jax.Array        # units re-initialised by the reset transform in this step


def loss_fn(kind, output: Any, target: Any) -> jax.Array:
  """Mean squared error (regression, output squeezed to the target's shape), softmax
  cross-entropy with integer labels, or `kind(output, target)` for a callable objective (e.g. the
  PPO loss over a policy and a value head)."""
  if callable(kind):
    return kind(output, target)
  if kind == 'mse':
    return jnp.mean((output.reshape(target.shape) - target) ** 2)
  if kind == 'cross_entropy':
    return optax.softmax_cross_entropy_with_integer_labels(output, target).mean()
  raise ValueError(f'loss={kind!r} is not known; use one of {LOSSES}.')


@dataclasses.dataclass(frozen=True)
class Learner:
  """Online learner of one run. Static structure only; everything numeric is in the state.

  network: a Flax module returning (output, features) and declaring `unit_layers()`.
  loss: 'mse', 'cross_entropy' or a callable (output, target) -> scalar loss.
  optimizer: config section with name, momentum, eps (ddl.learners.optimizers); Adam's b1, b2 are
    traced hparams.
  perturbation: whether the optimizer holds the S&P noise transform.
  cbp: config section with util_type, count_mode, count_base, reset_optimizer_state,
    next_bias_correction, utility_statistic, and optionally method ('cbp' or 'redo',
    ddl.learners.redo, with redo_threshold and redo_period); None, or for CBP max_replacement_rate
    0, leaves the reset transform out of the program.
  max_replacement_rate: the largest replacement rate of the sweep sharing this program.
  """
  network: nn.Module
  loss: Any
  optimizer: Any
  cbp: Any = None
  max_replacement_rate: float = 0.0
  perturbation: bool = True

  @property
  def reset_method(self) -> str:
    return self.cbp.get('method', 'cbp') if self.cbp is not None else 'cbp'

  @property
  def uses_cbp(self) -> bool:
    """Whether the program holds a reset transform (CBP with a positive rate, or ReDo)."""
    active = self.max_replacement_rate > 0 or self.reset_method == 'redo'
    return self.cbp is not None and active and bool(self.network.unit_layers())

  def make_optimizer(self, hparams: Mapping[str, chex.Numeric], key=None) -> optax.GradientTransformation:
    return optimizers.from_config(self.optimizer, hparams, self.perturbation, key)

  def make_cbp(self, hparams: Mapping[str, chex.Numeric]) -> cbp_lib.ResetTransform:
    if self.reset_method == 'redo':
      return redo_lib.redo(self.network.unit_layers(), threshold=self.cbp.redo_threshold,
                           period=int(self.cbp.redo_period), reset_optimizer_state=self.cbp.reset_optimizer_state)
    return cbp_lib.continual_backprop(
        self.network.unit_layers(), replacement_rate=hparams['replacement_rate'],
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
    hparams = {name: jnp.asarray(hparams[name], jnp.float32) for name in HPARAMS}
    opt_state = self.make_optimizer(hparams, noise_key).init(params)
    cbp_state = self.make_cbp(hparams).init(params) if self.uses_cbp else None
    return LearnerState(params=params, opt_state=opt_state, cbp_state=cbp_state, hparams=hparams,
                        batch_stats=variables.get('batch_stats'))

  def apply(self, params, x: jax.Array, batch_stats=None):
    """Evaluation forward pass (batch norm on its running statistics) -> (output, features)."""
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

  def step(self, state: LearnerState, x: jax.Array, y: Any, key: chex.PRNGKey,
           lr_factor: chex.Numeric = 1.0, output_mask: Optional[jax.Array] = None):
    """One minibatch: forward, loss, gradient, optimizer step, then the reset transform with the
    activations of this forward pass. Returns (new state, StepOutput).

    lr_factor: multiplies the learning rate of this step (a schedule). output_mask: bool over the
    outputs; masked-out logits are excluded from the loss and the returned output (classes not
    seen yet)."""

    def objective(params):
      (output, features), batch_stats = self.apply_train(params, x, state.batch_stats)
      if output_mask is not None:
        output = jnp.where(output_mask, output, -1e9)
      return loss_fn(self.loss, output, y), (output, features, batch_stats)

    (loss, (output, features, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    hparams = state.hparams
    if not (isinstance(lr_factor, (int, float)) and lr_factor == 1.0):
      hparams = {**hparams, 'learning_rate': hparams['learning_rate'] * lr_factor}
    updates, opt_state = self.make_optimizer(hparams).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    cbp_state, num_replaced = state.cbp_state, jnp.zeros((), jnp.int32)
    if self.uses_cbp:
      unit_layers = self.network.unit_layers()
      params, opt_state, cbp_state, info = self.make_cbp(state.hparams).update(
          params, opt_state, state.cbp_state, features, key)
      num_replaced = info.num_replaced
      if batch_stats is not None:
        batch_stats = cbp_lib.restore_norms(unit_layers, batch_stats, info.replaced)
    new_state = state.replace(params=params, opt_state=opt_state, cbp_state=cbp_state, batch_stats=batch_stats)
    return new_state, StepOutput(loss, output, features, num_replaced)
