"""Level 3 of dynamic deep learning: a layer whose width grows and shrinks inside a static maximum.

The last hidden layer of an MLP keeps all its `width` units (static shapes: nothing recompiles,
seeds stay vmapped) and an active mask splits them into
  - the **backbone** (active): they feed the output as usual;
  - the **fringe** (inactive): candidates that explore. Their activations are masked out of the
    output and out of the features other methods see (CBP, diagnostics), so they have no effect on
    the prediction and the backbone's loss gives them zero gradient. Each candidate i has its own
    shadow output weights s_i (`params['fringe_output']`, trained by the learner's optimizer like
    any weight) and is trained to predict the backbone's residual e alone:
        fringe loss = mean_batch Σ_{i in fringe} ½ ‖e − h_i s_i‖²,
    with e held constant and the candidate's input held constant (stop_gradient), so the fringe's
    gradients do not reach the backbone or the layers below.

The residual e of an example is the output-space error of the backbone: y − ŷ for the squared
losses ('mse', 'half_mse'), the negative loss gradient in the logits (one-hot − p) otherwise.
Utilities (exponential averages with decay `growth_decay`, as CBP's; Mahmood & Sutton 2013's
generate-and-test with a residual-fitting tester, after ejmejm's shadow units):
  candidate  u_i ← EMA(‖e‖² − ‖e − h_i s_i‖²)      how much it would reduce the squared residual
  backbone   u_i ← EMA(‖e + h_i w_i‖² − ‖e‖²)      how much the squared residual grows without it
  error      ē  ← EMA(‖e‖²)
Per step, after the optimizer (and CBP), among units at least `growth_maturity` steps in their role:
  - the candidate of highest utility joins the backbone if u_i > promote_threshold · ē and fewer
    than max_units are active; its outgoing weights are zero, so the output is unchanged;
  - the backbone unit of lowest utility goes back to the fringe if u_i <= demote_threshold · ē and
    more than min_units are active; it is regenerated (fresh input weights, zero bias, zero
    outgoing and shadow weights, its optimizer state zeroed);
  - the candidate of lowest utility is regenerated if u_i <= 0 (the tester rejecting it).
At most one of each per step. Cost per step: O(width x (inputs + outputs)), the layer's own cost.
With CBP in the same program, CBP only considers backbone units (fringe units stay immature to it).
"""
from typing import Any, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
from flax import struct

from ddl import nets
from ddl.learners import cbp as cbp_lib
from ddl.learners import method as method_lib
from ddl.learners.hyper import Hyper
from ddl.learners.topology import UnitLayer

FRINGE = 'fringe_output'   # top-level parameter name of the candidates' shadow output weights

HYPERS = (
    Hyper('initial_units', 0, low=0, traced=False,
          doc="growth: backbone units of the MLP's last hidden layer at the start (0: no growth; "
              'the layer width is the static maximum)'),
    Hyper('min_units', 1, low=0, traced=False, doc='growth: fewest backbone units (no demotion below)'),
    Hyper('max_units', 0, low=0, traced=False, doc='growth: most backbone units (0: the layer width)'),
    Hyper('promote_threshold', 0.01, low=0,
          doc='growth: a mature candidate joins the backbone when its utility exceeds this times the '
              'running squared residual'),
    Hyper('demote_threshold', 0.0,
          doc='growth: a mature backbone unit returns to the fringe when its utility is at most this '
              'times the running squared residual'),
    Hyper('growth_decay', 0.99, low=0, high=1, open_high=True, doc='growth: decay of the utility averages'),
    Hyper('growth_maturity', 100.0, low=0, doc='growth: steps a unit spends in its role before it can change it'),
)


@struct.dataclass
class GrowthState:
  active: jax.Array               # bool (width,): backbone units
  candidate_utility: jax.Array    # (width,), meaningful for fringe units
  backbone_utility: jax.Array     # (width,), meaningful for backbone units
  error: jax.Array                # () running mean squared residual
  ages: jax.Array                 # int32 (width,): steps in the current role


class GrowthInfo(NamedTuple):
  promoted: jax.Array       # bool (width,)
  demoted: jax.Array        # bool (width,)
  regenerated: jax.Array    # bool (width,): demoted or rejected candidates, re-initialised


class Signals(NamedTuple):
  """What one step's forward pass tells the tester (computed in the learner's objective)."""
  residual: jax.Array       # (batch, outputs) e, constant
  candidate: jax.Array      # (batch, width, outputs) h_i s_i of the fringe units (0 for the backbone)
  contribution: jax.Array   # (batch, width, outputs) h_i w_i of the backbone units (0 for the fringe)


def grown_layer(network) -> UnitLayer:
  """The unit layer that grows: the last hidden layer of an MLP."""
  from ddl.learners import topology  # pylint: disable=g-import-not-at-top
  layers = topology.unit_layers(network)
  return layers[-1]


def problem(network, options) -> Optional[str]:
  """Why growth cannot run on `network` with the growth section `options`, None if it can."""
  if not isinstance(network, nets.MLP) or not network.hidden:
    return f'growth needs an MLP with a hidden layer (the network is {type(network).__name__})'
  if network.layer_norm:
    return 'growth does not support network.layer_norm (set it to "")'
  if nets.activation(network.activation)(jnp.zeros((1, 1))).shape[-1] != 1:
    return f'growth needs an activation that keeps the layer width ({network.activation!r} changes it)'
  width = network.hidden[-1]
  top = options['max_units'] or width
  if top > width:
    return f'growth.max_units={options["max_units"]} is wider than the layer it grows (width {width})'
  if not options['min_units'] <= options['initial_units'] <= top:
    return (f'growth needs min_units <= initial_units <= max_units, got {options["min_units"]}, '
            f'{options["initial_units"]}, {top} (layer width {width})')
  return None


def init(network, options) -> GrowthState:
  width = network.hidden[-1]
  zeros = jnp.zeros(width, jnp.float32)
  return GrowthState(active=jnp.arange(width) < options['initial_units'], candidate_utility=zeros,
                     backbone_utility=zeros, error=jnp.zeros(()), ages=jnp.zeros(width, jnp.int32))


def init_fringe(network) -> dict:
  """The shadow output weights of the candidates, zero: {'kernel': (width, outputs)}."""
  return {'kernel': jnp.zeros((network.hidden[-1], network.outputs), jnp.float32)}


def backbone_output(network, params, features, active: jax.Array) -> jax.Array:
  """The output layer on the masked last hidden layer (the network's own output layer, masked)."""
  h = features[grown_layer(network).features] * active
  out = h @ params['output']['kernel']
  return out + params['output']['bias'] if 'bias' in params['output'] else out


def signals(network, params, features, layer_input, active, residual) -> Signals:
  """The tester's view of one batch (`residual` constant): candidates computed from a constant
  copy of the layer's input, so the fringe loss trains only their own weights."""
  layer = params[grown_layer(network).features]
  pre = jax.lax.stop_gradient(layer_input.reshape(layer_input.shape[0], -1)) @ layer['kernel']
  if 'bias' in layer:
    pre = pre + layer['bias']
  fringe = nets.activation(network.activation)(pre) * (~active)
  h = features[grown_layer(network).features] * active
  return Signals(residual=jax.lax.stop_gradient(residual),
                 candidate=fringe[:, :, None] * params[FRINGE]['kernel'][None],
                 contribution=jax.lax.stop_gradient(h[:, :, None] * params['output']['kernel'][None]))


def fringe_loss(s: Signals) -> jax.Array:
  """mean over the batch of Σ_i ½ ‖e − h_i s_i‖² over the candidates (backbone terms are constant)."""
  return 0.5 * jnp.mean(jnp.sum((s.residual[:, None] - s.candidate) ** 2, axis=(1, 2)))


def update(network, params, opt_state, state: GrowthState, s: Signals, hparams, key: chex.PRNGKey,
           options):
  """One tester step: utilities, then at most one promotion, one demotion and one regenerated
  candidate. -> (params, opt_state, state, GrowthInfo)."""
  decay = hparams['growth_decay']
  ema = lambda old, new: decay * old + (1 - decay) * new
  e2 = jnp.sum(s.residual ** 2, axis=-1)[:, None]                                   # (batch, 1)
  gain_candidate = jnp.mean(e2 - jnp.sum((s.residual[:, None] - s.candidate) ** 2, -1), axis=0)
  gain_backbone = jnp.mean(jnp.sum((s.residual[:, None] + s.contribution) ** 2, -1) - e2, axis=0)
  active = state.active
  candidate_utility = jnp.where(active, 0.0, ema(state.candidate_utility, gain_candidate))
  backbone_utility = jnp.where(active, ema(state.backbone_utility, gain_backbone), 0.0)
  error = ema(state.error, jnp.mean(e2))
  ages = state.ages + 1
  mature = ages >= hparams['growth_maturity']
  count = active.sum()
  top = options['max_units'] or active.shape[0]

  def one(mask, score, allowed):
    """One-hot of the unit of highest score among `mask` (all False if none or not allowed)."""
    index = jnp.argmax(jnp.where(mask, score, -jnp.inf))
    return (jnp.arange(active.shape[0]) == index) & mask[index] & allowed

  promoted = one(~active & mature & (candidate_utility > hparams['promote_threshold'] * error),
                 candidate_utility, count < top)
  demoted = one(active & mature & (backbone_utility <= hparams['demote_threshold'] * error),
                -backbone_utility, count > options['min_units'])
  rejected = one(~active & mature & (candidate_utility <= 0) & ~promoted, -candidate_utility, True)
  regenerated = demoted | rejected
  changed = promoted | regenerated
  new_active = (active | promoted) & ~demoted

  layer = grown_layer(network)
  picks = [cbp_lib.Pick(replaced=regenerated, index=jnp.argmax(regenerated)[None], valid=regenerated.any()[None],
                        centre=jnp.zeros(active.shape), key=key)]
  params = cbp_lib.reset_units((layer,), params, picks, fresh=True)
  opt_state = cbp_lib.reset_optimizer_units((layer,), params, opt_state, picks)
  clear_rows = lambda tree: {**tree, FRINGE: {'kernel': jnp.where(changed[:, None], 0.0, tree[FRINGE]['kernel'])},
                             'output': {**tree['output'],
                                        'kernel': jnp.where(promoted[:, None], 0.0, tree['output']['kernel'])}}
  params = clear_rows(params)
  opt_state = method_lib.map_reset_state(opt_state, params, clear_rows, clear_rows)   # cleared rows are 0 in params
  state = GrowthState(active=new_active, candidate_utility=jnp.where(changed, 0.0, candidate_utility),
                      backbone_utility=jnp.where(changed, 0.0, backbone_utility), error=error,
                      ages=jnp.where(changed, 0, ages))
  return params, opt_state, state, GrowthInfo(promoted, demoted, regenerated)


def immature_fringe(cbp_state: Any, network, active: jax.Array) -> Any:
  """CBP state with the fringe units of the grown layer kept immature (CBP leaves them to growth)."""
  name = grown_layer(network).features
  layers = dict(cbp_state.layers)
  layers[name] = layers[name].replace(ages=jnp.where(active, layers[name].ages, 0))
  return cbp_state.replace(layers=layers)


class Hooks(method_lib.Hooks):
  """The growing layer inside the learner: the fringe's shadow weights and the growth state at
  init, the backbone's output in the forward pass, the fringe loss in the objective, the tester's
  step after the optimizer (after CBP, whose state keeps the fringe immature)."""

  def init(self, key, params, sample_input, hparams):
    del key, sample_input, hparams
    network = self.context.network
    return {**params, FRINGE: init_fringe(network)}, init(network, self.context.options)

  def forward(self, state, params, x, output, features):
    del x, output
    network = self.context.network
    name = grown_layer(network).features
    return backbone_output(network, params, features, state.active), {**features, name: features[name] * state.active}

  def extra_loss(self, state, params, x, y, output, features):
    learner, network = self.context.learner, self.context.network
    fixed = jax.lax.stop_gradient(output)
    residual = -jax.grad(lambda z: learner.loss_of(z, y))(fixed) * output.shape[0]
    if learner.loss in ('mse', 'half_mse'):   # y - ŷ: undo the loss's scale 2/K or 1/K
      residual = residual / learner.output_curvature(fixed[0])
    names = network.layer_names()
    grown = names.index(grown_layer(network).features)
    layer_input = x if grown == 0 else features[names[grown - 1]]
    s = signals(network, params, features, layer_input, state.active, residual.reshape(output.shape[0], -1))
    return fringe_loss(s), s

  def after_step(self, state, step):
    params, opt_state, state, _ = update(self.context.network, step.params, step.opt_state, state, step.aux['growth'],
                                         step.hparams, jax.random.fold_in(step.key, 3), self.context.options)
    states = {name: immature_fringe(s, self.context.network, state.active) if isinstance(s, cbp_lib.CBPState) else s
              for name, s in step.states.items()}
    return step._replace(params=params, opt_state=opt_state, states=states), state

  def diagnostics(self, state, params):
    del params
    return {'backbone_units': state.active.sum()}


def _check(where) -> Optional[str]:
  c = where.config
  if c.schedule.reset_first > 0 or c.schedule.injection_first > 0:
    return ('growth does not combine with resets or plasticity injection (schedule.reset_first, '
            'schedule.injection_first); set those to 0 or growth.initial_units to 0')
  return problem(where.network(), METHOD.options(c))


METHOD = method_lib.Method(
    'growth', 'unit', 'a growing last hidden layer: backbone units and a fringe of candidates trained on its '
    'residual (generate-and-test)', HYPERS, section='growth', active=method_lib.positive('growth.initial_units'),
    check=_check, hooks=Hooks, examples=(('growth', dict(growth=dict(initial_units=1))),))
