"""A method's declaration: the one place that describes it, beside its code.

Every method of ddl (an optimizer, a gradient term, a unit or boundary transform, a network option)
is one `Method` in its own module and one line in `ddl.learners.registry`. The config, the learner,
CBP's handling of optimizer state, the benchmark and the experiments read these declarations and
never name a method. A `Method` says:
- `name`, `kind` (one of KINDS) and `doc` (one line);
- `hypers`: its hyperparameters (`ddl.learners.hyper.Hyper`): traced ones live in the flat
  `config.hparams` namespace (a sweep over them is one program), static ones in its config
  `section`;
- `active(program)`: whether a program (a group of variants, `Program`) holds it; a program's
  state holds the traced hyperparameters of its active methods only (`learning_rate` always);
- `extra_args`: the extra arguments its optax update takes beyond `key` and `loss` (which every
  update gets): 'curvature' the learner computes only when an active method asks for it; others
  ('td_error', 'done') an experiment provides (`experiment.step_args`);
- `state_fields`: what happens to its params-shaped optimizer state when units or layers are
  re-initialised (CBP, ReDo, resets, injection): per state class, field -> 'zero', 'keep' or
  'reinit' (take the new parameters' values). A params-shaped subtree of no declared class is
  zeroed (momentum, Adam's moments);
- `step_sizes`: for an optimizer that learns its step sizes, how to read them (the evaluator
  reports them); `presets`: variants it adds to a config's named preset (`--config=X.py:step_sizes`);
- `examples`: config variants that switch it on (the benchmark's and the tests' method matrix);
- `check(where)`: where it applies: None, or a one-line refusal (`Where`: the experiment, its
  config and network);
- how it acts, by kind: `transform(build)` for 'optimizer', 'gradient' and 'update' (an optax
  `GradientTransformationExtraArgs`), `transform(build, inner)` for 'wrapper'; `hooks(context)`
  (a `Hooks`) for what acts inside the learner ('unit', 'boundary', 'network' parametrisations,
  anything with state or a forward pass of its own); `activation` (with `gain`) for an activation
  function usable by every network; nothing for an 'agent' setting (the replay ratio, ARR, data
  augmentation), which an off-policy experiment reads from its runs' traced hyperparameters.

The learner composes the active methods in this order (registry order within a kind):
  forward:   parameters -> `Hooks.parametrize` (e.g. spectral normalisation) -> the network (its
             activation and layer norm are network options) -> `Hooks.forward` (e.g. frozen heads
             of plasticity injection, a growing layer's mask);
  objective: loss + `Hooks.extra_loss` (e.g. a growing layer's fringe loss);
  gradient:  optax chain of 'gradient' terms (L2 Init, L2, Parseval) -> the 'optimizer' (exactly
             one) -> 'wrapper's around both (TRAC) -> 'update' terms (S&P's noise);
  then:      `Hooks.after_step` (CBP, ReDo, growth);
  and at the start of every chunk: `Hooks.boundary` (resets, plasticity injection).
"""
import dataclasses
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp

from ddl.learners.hyper import Hyper

KINDS = ('optimizer', 'gradient', 'wrapper', 'update', 'unit', 'boundary', 'network', 'agent')
STATE_POLICIES = ('zero', 'keep', 'reinit')
LEARNER_ARGS = ('key', 'loss', 'curvature')   # extra arguments the learner itself provides


def setting(config: Any, dotted: str, default: Any = None) -> Any:
  """The value of a dotted config key ('optimizer.name'), `default` where the config lacks it."""
  node = config
  for part in dotted.split('.'):
    if node is None or part not in node:
      return default
    node = node[part]
  return node


@dataclasses.dataclass(frozen=True)
class Program:
  """What a method sees to decide whether a program holds it: the group's resolved config and
  every variant's traced hyperparameters."""
  config: Any
  hparams: Sequence[Mapping[str, float]]

  def setting(self, dotted: str, default: Any = None) -> Any:
    return setting(self.config, dotted, default)

  def largest(self, name: str) -> float:
    return max(float(h[name]) for h in self.hparams)


def always(program: Program) -> bool:
  del program
  return True


def gated(hyper: str) -> Callable[[Program], bool]:
  """Active when some variant sets the traced `hyper` above 0 (it is off at 0)."""
  return lambda program: program.largest(hyper) > 0


def selected(setting: str, value: Any) -> Callable[[Program], bool]:
  """Active when the static `setting` (dotted config key) equals `value`."""
  return lambda program: program.setting(setting) == value


def positive(setting: str) -> Callable[[Program], bool]:
  """Active when the static `setting` (dotted config key) is above 0."""
  return lambda program: (program.setting(setting) or 0) > 0


@dataclasses.dataclass(frozen=True)
class Where:
  """Where a method would run, for its `check`: the experiment's name and class, the group's
  config, and its network (built on demand: `network()`)."""
  experiment: str
  experiment_cls: Any
  config: Any

  def network(self):
    return self.experiment_cls.make_network(self.config)


@dataclasses.dataclass(frozen=True)
class Build:
  """What a method's optax `transform` is built from: this program's traced hyperparameters
  (`hparams`, arrays under vmap), its static section (`options`, a mapping with every declared
  static hyperparameter), and a PRNG key for transforms that seed a stream at init (None when the
  transform only updates an existing state). `setting` reads another static config key (e.g. a
  shared 'optimizer.eps')."""
  hparams: Mapping[str, chex.Numeric]
  options: Mapping[str, Any]
  key: Optional[chex.PRNGKey] = None
  config: Any = None

  def setting(self, dotted: str, default: Any = None) -> Any:
    return setting(self.config, dotted, default)


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method's learner hooks are built from (static): the network, the loss, its static
  options, the program's largest traced values (`largest`: sizes static shapes, e.g. CBP's
  selection slots), the run's chunks, and the learner itself (its forward pass, unit topology)."""
  network: Any
  loss: Any
  options: Mapping[str, Any]
  largest: Mapping[str, float]
  num_chunks: int
  learner: Any


class Step(NamedTuple):
  """What an `after_step` hook reads and returns: the parameters after the optimizer step, the
  optimizer state, the network's batch statistics (None without batch norm), the step's hidden
  activations (before the update), the `extra_loss` auxiliaries, every active method's state
  (by name), the step's key, the traced hyperparameters and the units replaced so far."""
  params: Any
  opt_state: Any
  batch_stats: Any
  features: Mapping[str, jax.Array]
  aux: Mapping[str, Any]
  states: Mapping[str, Any]
  key: chex.PRNGKey
  hparams: Mapping[str, jax.Array]
  num_replaced: jax.Array


class Boundary(NamedTuple):
  """What a `boundary` hook reads and returns at the start of chunk `index`."""
  params: Any
  opt_state: Any
  batch_stats: Any
  states: Mapping[str, Any]
  index: jax.Array
  key: chex.PRNGKey
  sample_input: jax.Array
  hparams: Mapping[str, jax.Array]


class Hooks:
  """A method's part inside the learner; every hook defaults to doing nothing. Subclass it and
  override what the method does. All hooks are pure and traced (vmapped over runs)."""

  def __init__(self, context: Context):
    self.context = context

  def init(self, key: chex.PRNGKey, params: Any, sample_input: jax.Array,
           hparams: Mapping[str, jax.Array]) -> Tuple[Any, Any]:
    """(params, this method's state) at the start of a run; may add parameters of its own."""
    del key, sample_input, hparams
    return params, None

  def parametrize(self, state: Any, params: Any, train: bool) -> Tuple[Any, Any]:
    """(the parameters the network runs on, the new state): e.g. normalised kernels. `train`: a
    training forward pass (may update the state); the state is kept otherwise."""
    del train
    return params, state

  def forward(self, state: Any, params: Any, x: jax.Array, output: Any, features: Mapping[str, jax.Array]):
    """(output, features) after the network's forward pass (e.g. frozen heads added)."""
    del state, params, x
    return output, features

  def extra_loss(self, state: Any, params: Any, x: jax.Array, y: Any, output: Any,
                 features: Mapping[str, jax.Array]) -> Tuple[jax.Array, Any]:
    """(a term added to the training objective, auxiliaries for `after_step`)."""
    del state, params, x, y, output, features
    return jnp.zeros(()), None

  def after_step(self, state: Any, step: Step) -> Tuple[Step, Any]:
    """(the step with params, optimizer state, batch statistics, other methods' states and
    num_replaced as this method leaves them, this method's new state) after the optimizer step."""
    return step, state

  def boundary(self, state: Any, boundary: Boundary) -> Tuple[Boundary, Any]:
    """(the boundary with params, optimizer state, batch statistics and other methods' states as
    this method leaves them, this method's new state) at the start of a chunk."""
    return boundary, state

  def diagnostics(self, state: Any, params: Any) -> Dict[str, jax.Array]:
    """{metric: scalar} the evaluator reports for this method (e.g. a growing layer's width)."""
    del state, params
    return {}


def overrides(hooks: Hooks, name: str) -> bool:
  """Whether `hooks` does something in hook `name` (the learner leaves out what does nothing)."""
  return getattr(type(hooks), name) is not getattr(Hooks, name)


@dataclasses.dataclass(frozen=True)
class Method:
  """One method of ddl, declared once beside its code (see the module docstring)."""
  name: str
  kind: str
  doc: str
  hypers: Tuple[Hyper, ...] = ()
  section: str = ''
  active: Callable[[Program], bool] = always
  extra_args: Tuple[str, ...] = ()
  state_fields: Tuple[Tuple[type, Mapping[str, str]], ...] = ()
  check: Optional[Callable[[Where], Optional[str]]] = None
  transform: Optional[Callable[..., Any]] = None
  hooks: Optional[Callable[[Context], Hooks]] = None
  activation: Optional[Callable[[jax.Array], jax.Array]] = None
  gain: float = 1.0
  step_sizes: Optional[Callable[..., Any]] = None   # (opt_state, params, options, hparams) -> (tree, per weight) | None
  presets: Tuple[Tuple[str, Callable[[Any], Dict[str, Any]]], ...] = ()   # (preset, config -> {variant: dict})
  examples: Tuple[Tuple[str, Mapping[str, Any]], ...] = ()   # (name, a variant that switches it on), typical first

  def variants(self) -> Dict[str, Mapping[str, Any]]:
    """Config variants that switch this method on with typical values (its `examples`: the
    benchmark's and the tests' matrix of methods, random-label digits' comparison)."""
    return {name: dict(v) for name, v in self.examples}

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'method {self.name}: kind {self.kind!r} is not one of {KINDS}.')
    for cls, fields in self.state_fields:
      for field, policy in fields.items():
        if policy not in STATE_POLICIES:
          raise ValueError(f'method {self.name}: {cls.__name__}.{field} policy {policy!r} is not one of '
                           f'{STATE_POLICIES}.')

  @property
  def traced(self) -> Tuple[Hyper, ...]:
    return tuple(h for h in self.hypers if h.traced)

  @property
  def static(self) -> Tuple[Hyper, ...]:
    return tuple(h for h in self.hypers if not h.traced)

  def options(self, config: Any) -> Dict[str, Any]:
    """This method's static hyperparameters in `config` (declared defaults where it has none)."""
    section = config.get(self.section) if self.section and config is not None else None
    return {h.name: (section[h.name] if section is not None and h.name in section else h.default)
            for h in self.static}


def map_reset_state(opt_state: Any, params: Any, zero: Callable[[Any], Any], reinit: Callable[[Any], Any],
                    methods: Optional[Sequence[Method]] = None) -> Any:
  """Applies a re-initialisation of units or layers to an optimizer state: every params-shaped
  subtree is zeroed with `zero` (momentum, Adam's moments), except the fields of the state classes
  that `methods` declare (`Method.state_fields`), which follow their policy: 'zero' (`zero`),
  'keep' (left as is) or 'reinit' (`reinit`: the new parameters' values where they were reset).
  `methods`: None for every registered method (a state class belongs to one method, so the
  policies do not depend on which are active)."""
  if methods is None:
    from ddl.learners import registry  # pylint: disable=g-import-not-at-top
    methods = registry.all_methods()
  policies = {cls: fields for method in methods for cls, fields in method.state_fields}
  params_def = jax.tree.structure(params)
  is_params = lambda sub: jax.tree.structure(sub) == params_def
  is_leaf = lambda sub: is_params(sub) or type(sub) in policies
  act = {'zero': zero, 'reinit': reinit, 'keep': lambda sub: sub}

  def apply(sub):
    fields = policies.get(type(sub))
    if fields is not None:
      replace = sub._replace if hasattr(sub, '_replace') else sub.replace
      return replace(**{f: (None if getattr(sub, f) is None else act[p](getattr(sub, f))) for f, p in fields.items()})
    return zero(sub) if is_params(sub) else sub

  return jax.tree.map(apply, opt_state, is_leaf=is_leaf)
