"""Shared config pieces, the config checks and the expansion of variants into sweep groups.

A config names an experiment, its static settings, default `hparams` (the traced
hyperparameters of every method, `ddl.learners.registry`) and `variants`: each variant overrides some hparams
(a point of the sweep, same program) and may override static settings (e.g. `network.layers`),
which puts it in a group of its own (another program). Seeds x variants of a group are vmapped.
"""
import copy
import dataclasses
import difflib
import json
from typing import Any, Dict, List, Sequence, Tuple

import ml_collections

from ddl import nets
from ddl import platform_defaults
from ddl.learners import method as method_lib
from ddl.learners import registry

WANDB_MODES = ('disabled', 'offline', 'online')
DEFAULT_OPTIMIZER = next(iter(registry.OPTIMIZERS))
PLATFORMS = ('', 'cpu', 'gpu', 'tpu')


class ConfigError(ValueError):
  """A config value that cannot run; the message names the key and what is allowed."""


def base_config() -> ml_collections.ConfigDict:
  """Settings every experiment shares; experiment config files fill in the rest."""
  config = ml_collections.ConfigDict()
  config.experiment = ''
  config.seed = 0
  config.num_seeds = 30
  config.checkpoint_every = 10      # chunks between checkpoints (and at the end)
  config.scan_unroll = 1            # unroll of the inner lax.scan over steps (speed only)
  # Runs (variants x seeds) vmapped in one call; 0 = all runs of a group. Smaller values bound
  # device memory; the slices run one after another (same results, same metrics.csv). None (AUTO):
  # as many as fit the device's memory (ddl.platform_defaults, ddl.programs.fitted).
  config.runs_per_call = platform_defaults.auto(int)
  # The runs axis is sharded over the devices (0: all visible ones); runs are padded to a multiple
  # of the devices with copies of the last run, and the padding is dropped from every output.
  config.num_devices = 0
  # CPU only: >0 splits the host CPU into this many JAX devices (at most num_seeds) and runs one
  # run per device per call, the devices' programs running concurrently (the calls one after
  # another; runs_per_call does not apply on CPU then). Where one run's step keeps the cores only
  # partly busy this beats vmapping the runs on one CPU device (measured for the ImageNet net).
  # 0: one CPU device.
  config.cpu_devices = 0
  config.platform = ''              # devices to run on: '' JAX's default; 'gpu' or 'tpu' refuses to run without one
  # Multi-host: jax.distributed.initialize before anything else (empty/negative fields are
  # auto-detected on clusters); only process 0 writes metrics.csv, config.json and figures.
  config.distributed = dict(initialize=False, coordinator_address='', num_processes=0, process_id=-1)
  # False: variants without S&P noise or without CBP run in programs that leave those out (random
  # numbers dominate a small net's step on CPU). True: one program for all variants of the same
  # static settings (fewer programs; better where steps are latency bound, as on a GPU). None
  # (AUTO): the platform's choice (ddl.platform_defaults: False on CPU, True on GPU and TPU).
  config.fuse_variants = platform_defaults.auto(bool)
  # Every method's hyperparameters, with the defaults they declare (ddl.learners.registry): the
  # traced ones in `hparams`, the static ones in their method's section; the optimizer by name
  # (`registry.OPTIMIZERS`), the network's activation (`ddl.nets.activation_names`).
  config.optimizer = dict(name=DEFAULT_OPTIMIZER)
  config.network = dict(activation='relu')
  for section, hypers in registry.static_hypers().items():
    if section not in config:
      config[section] = {}
    config[section].update({h.name: h.default for h in hypers})
  config.hparams = {h.name: h.default for h in registry.traced_hypers()}
  # The evaluator (ddl.experiments.evaluation): every `every` chunks, on a fixed probe batch; the
  # Hessian's power iterations (0: not measured), whether to measure UPGD's plasticity (a learner
  # step on the probe: it compiles a second copy of the step) and ReDo's tau.
  config.diagnostics = dict(every=1, hessian_iterations=20, plasticity=True, redo_tau=0.1)
  config.variants = ml_collections.ConfigDict()
  config.wandb = dict(mode='disabled', project='ddl', entity='', group='', name='')
  return config


def variant_name(prefix: str, value: float) -> str:
  """A variant name for a swept value, without dots (config keys cannot hold them): sgd_0p01."""
  return f'{prefix}_{value:g}'.replace('.', 'p')


def config_module(name: str):
  """The module of configs/<name>.py (a config file built on another one, e.g. slippery Ant on Ant)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'configs_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def method_presets() -> Dict[str, Any]:
  """The presets that methods declare (`Method.presets`), each adding its methods' variants."""
  found: Dict[str, list] = {}
  for method in registry.all_methods():
    for preset, variants in method.presets:
      found.setdefault(preset, []).append(variants)

  def apply(makers):
    def add(config):
      for make in makers:
        config.variants.update(make(config))
    return add

  return {preset: apply(makers) for preset, makers in found.items()}


def apply_config_arg(config: ml_collections.ConfigDict, arg: str, presets: Dict[str, Any]) -> None:
  """Applies the `--config=file.py:a,b` argument: each token is a preset of the file (e.g.
  'smoke', applied in place by the callable in `presets`), a preset the methods declare (e.g.
  'step_sizes': the level-2 learners that learn their step sizes, `Method.presets`) or the name of
  a variant to keep."""
  presets = {**method_presets(), **presets}
  keep = []
  for token in filter(None, (t.strip() for t in (arg or '').split(','))):
    if token in presets:
      presets[token](config)
    elif token in config.variants:
      keep.append(token)
    else:
      choices = sorted(presets) + sorted(config.variants)
      raise ConfigError(f'config argument {token!r} is neither a preset nor a variant{_suggest(token, choices)}; '
                        f'use a comma-separated list of {choices}.')
  if keep:
    for name in list(config.variants):
      if name not in keep:
        del config.variants[name]


def add_method_variants(config: ml_collections.ConfigDict, skip: Sequence[str] = ()) -> None:
  """Adds the first (typical) example (`Method.examples`) of every registered method that changes
  the learner around its optimizer (not an optimizer, not an agent setting, not always in the
  program), unless the method
  has a variant of its name there or is in `skip`: a config that compares interventions then covers
  every method registered, a new one included, with no line of its own."""
  for method in registry.all_methods():
    if method.kind in ('optimizer', 'agent') or method.active is method_lib.always or method.name in skip:
      continue
    name, variant = next(iter(method.variants().items()), (None, None))
    if name is not None and method.name not in config.variants and name not in config.variants:
      config.variants[name] = variant


def _suggest(name: str, choices: Sequence[str]) -> str:
  close = difflib.get_close_matches(name, list(choices), n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


@dataclasses.dataclass
class Group:
  """Variants that share one compiled program: the same static config, different hparams."""
  name: str
  config: ml_collections.ConfigDict
  variants: List[str]
  hparams: List[Dict[str, float]]

  @property
  def methods(self) -> Tuple[method_lib.Method, ...]:
    """The methods this group's program holds (`registry.active`)."""
    return registry.active(self.config, self.hparams)


def _flatten(d: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _overridden(config: ml_collections.ConfigDict, static: Dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with a variant's static settings."""
  out = copy.deepcopy(config)
  with out.unlocked():
    for key, value in _flatten(static).items():
      target = out
      *parents, leaf = key.split('.')
      for parent in parents:
        target = target[parent]
      target[leaf] = value
  return out


def groups(config: ml_collections.ConfigDict) -> List[Group]:
  """Splits the variants into groups of identical static settings (and, unless
  `fuse_variants`, the same use of S&P noise and CBP), in config order. A launch resolves
  `fuse_variants` first (`ddl.platform_defaults`); left AUTO here it counts as False."""
  result: Dict[str, Group] = {}
  for name, variant in config.variants.items():
    variant = variant.to_dict()
    names = registry.hparam_names()
    static = {k: v for k, v in variant.items() if k not in names}
    hparams = {k: float(config.hparams[k]) for k in names}
    hparams.update({k: float(v) for k, v in variant.items() if k in names})
    # a gated method (S&P noise, CBP, ...) only in the programs of the variants that switch it on
    uses = {} if config.fuse_variants else {
        m.name: m.active(method_lib.Program(_overridden(config, static), [hparams])) for m in registry.all_methods()}
    signature = json.dumps([static, uses], sort_keys=True)
    if signature not in result:
      result[signature] = Group(name='', config=_overridden(config, static), variants=[], hparams=[])
    group = result[signature]
    group.variants.append(name)
    group.hparams.append(hparams)
    group.name = '+'.join(group.variants)
  return list(result.values())


def _check(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f'{key}: {message}')


def validate(config: ml_collections.ConfigDict, experiment_cls: Any) -> None:
  """Checks a resolved config before anything is compiled or written. Raises ConfigError."""
  _check(isinstance(config.num_seeds, int) and config.num_seeds > 0, 'num_seeds',
         f'must be a positive integer, got {config.num_seeds!r}')
  _check(isinstance(config.seed, int) and config.seed >= 0, 'seed', f'must be an integer >= 0, got {config.seed!r}')
  _check(config.checkpoint_every > 0, 'checkpoint_every', f'must be > 0, got {config.checkpoint_every}')
  _check(config.scan_unroll >= 1, 'scan_unroll', f'must be >= 1, got {config.scan_unroll}')
  _check(config.runs_per_call is None or config.runs_per_call >= 0, 'runs_per_call',
         f'must be >= 0 (0: all runs; None: as many as fit), got {config.runs_per_call}')
  _check(config.cpu_devices >= 0, 'cpu_devices', f'must be >= 0 (0: one CPU device), got {config.cpu_devices}')
  _check(config.num_devices >= 0, 'num_devices', f'must be >= 0 (0: all visible devices), got {config.num_devices}')
  _check(config.platform in PLATFORMS, 'platform', f'{config.platform!r} is not known; use one of {PLATFORMS}')
  _check_methods(config)
  _check(config.wandb.mode in WANDB_MODES, 'wandb.mode', f'{config.wandb.mode!r} is not known; use one of {WANDB_MODES}')
  _check(len(config.variants) > 0, 'variants', 'at least one variant is needed')
  top_level = set(config.keys())
  names = registry.hparam_names()
  for name, variant in config.variants.items():
    _check(isinstance(variant, ml_collections.ConfigDict), f'variants.{name}',
           'must be a dict of hparams and setting overrides')
    for key in variant.keys():
      _check(key in names or key in top_level, f'variants.{name}.{key}',
             f'is neither a hyperparameter {names} nor a config key{_suggest(key, list(names) + sorted(top_level))}')
  traced = registry.traced_hypers()
  for group in groups(config):
    where = f'variant(s) {", ".join(group.variants)}'
    _check_methods(group.config, f'{where}: ')
    for variant, hparams in zip(group.variants, group.hparams):
      for h in traced:
        problem = h.problem(hparams[h.name])
        _check(problem is None, f'variant {variant}: hparams.{h.name}', str(problem))
    methods = group.methods
    try:
      checks = experiment_cls.checks(group.config)
    except (ZeroDivisionError, TypeError, KeyError, AttributeError) as e:
      raise ConfigError(f'{where}: a size or type is impossible ({e!r})') from None
    for ok, message in checks:
      _check(ok, where, message)
    _check_applies(config.experiment, experiment_cls, group, methods)
    for variant in group.variants:
      _check_belongs(variant, config.variants[variant].to_dict(), methods)


def _check_methods(c: ml_collections.ConfigDict, where: str = '') -> None:
  """The static settings of the methods (the optimizer by name, each method's section) in the
  base config or, with `where` naming them, in a group of variants."""
  _check(c.optimizer.name in registry.OPTIMIZERS, f'{where}optimizer.name',
         f'{c.optimizer.name!r} is not known{_suggest(c.optimizer.name, list(registry.OPTIMIZERS))}; use one of '
         f'{tuple(registry.OPTIMIZERS)}')
  for section, hypers in registry.static_hypers().items():
    for h in hypers:
      if section in c and h.name in c[section]:
        problem = h.problem(c[section][h.name])
        _check(problem is None, f'{where}{section}.{h.name}', str(problem))
  network = c.get('network') or {}
  for key, choices in (('activation', nets.activation_names()), ('weight_init', nets.INITS)):
    if key in network:
      _check(network[key] in choices, f'{where}network.{key}',
             f'{network[key]!r} is not known{_suggest(str(network[key]), choices)}; use one of {tuple(choices)}')


def _check_belongs(variant: str, overrides: Dict[str, Any], methods: Sequence[method_lib.Method]) -> None:
  """A variant sets only hyperparameters of methods its program holds (a value other than the
  declared default for a method it does not use is a mistake: it would change nothing)."""
  traced = {h.name: h for m in registry.all_methods() for h in m.traced}
  static = {(m.section, h.name): h for m in registry.all_methods() for h in m.static}
  used_traced = {h.name for m in methods for h in m.traced} | {registry.LEARNING_RATE.name}
  used_static = {(m.section, h.name) for m in methods for h in m.static}
  owners = lambda test: sorted(m.name for m in registry.all_methods() if test(m))
  for key, value in _flatten(overrides).items():
    if key in traced and key not in used_traced and value != traced[key].default:
      raise ConfigError(
          f'variant {variant}: hparams.{key} belongs to {", ".join(owners(lambda m: key in [h.name for h in m.traced]))}, '
          f'which this variant does not use (it uses {", ".join(m.name for m in methods)}); remove {key} from the '
          'variant or switch the method on.')
    section, _, name = key.rpartition('.')
    h = static.get((section, name))
    if h is not None and (section, name) not in used_static and value != h.default:
      belongs = owners(lambda m: m.section == section and name in [x.name for x in m.static])
      raise ConfigError(
          f'variant {variant}: {key} belongs to {", ".join(belongs)}, which this variant does not use (it uses '
          f'{", ".join(m.name for m in methods)}); remove {key} from the variant or switch the method on.')


def _check_applies(experiment: str, experiment_cls: Any, group: Group, methods: Sequence[method_lib.Method]) -> None:
  """Each method a group's program holds runs where it applies (its own `check`), gets the extra
  arguments its update takes, and the experiment's optimizer takes what the experiment gives it."""
  where = f'variant(s) {", ".join(group.variants)}'
  given = tuple(getattr(experiment_cls, 'step_args', ()))
  for method in methods:
    missing = [a for a in method.extra_args if a not in method_lib.LEARNER_ARGS and a not in given]
    if missing:
      raise ConfigError(f'{where}: {method.name} ({method.doc}) does not apply to experiment {experiment}: its update '
                        f'needs {", ".join(missing)} in every step, which this experiment does not give; remove the '
                        'variant or choose another method.')
  optimizer = next(m for m in methods if m.kind == 'optimizer')
  if given and not set(given) <= set(optimizer.extra_args):
    takes = tuple(m.name for m in registry.OPTIMIZERS.values() if set(given) <= set(m.extra_args))
    raise ConfigError(f'{where}: optimizer.name={optimizer.name}: experiment {experiment} steps its optimizer with '
                      f'{", ".join(given)}, which {optimizer.name} does not take; use one of {takes}.')
  located = method_lib.Where(experiment, experiment_cls, group.config)
  for method in methods:
    if method.check is None:
      continue
    missing = method.check(located)
    if missing:
      raise ConfigError(f'{where}: {method.name} ({method.doc}) does not apply to experiment {experiment}: '
                        f'{missing}; remove the variant or choose another network or method.')


def declared_defaults() -> Dict[str, Any]:
  """{dotted config key: declared default} of every registered method's hyperparameters."""
  out = {f'hparams.{h.name}': h.default for h in registry.traced_hypers()}
  for section, hypers in registry.static_hypers().items():
    out.update({f'{section}.{h.name}': h.default for h in hypers})
  return out


def keys_absent(saved: Dict[str, Any], keys: Sequence[str]) -> List[str]:
  """Of the dotted `keys`, those that a saved config `saved` (nested dicts) does not hold: keys that came into
  ddl after it was saved."""
  held = _flatten(saved)
  return [k for k in keys if k not in held]


def differing_keys(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
  """Dotted keys whose values differ between a saved config `a` and a new one `b` (nested dicts).
  A key only `b` has that holds a registered method's declared default is no difference: a method
  registered since `a` was saved, left off (its default), changes nothing of the run."""
  fa, fb = _flatten(a), _flatten(b)
  defaults = declared_defaults()
  added = lambda k: k not in fa and k in defaults and fb[k] == defaults[k]
  return sorted(k for k in set(fa) | set(fb) if fa.get(k, '<absent>') != fb.get(k, '<absent>') and not added(k))

