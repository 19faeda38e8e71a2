"""Shared config pieces, the config checks and the expansion of variants into sweep groups.

A config names an experiment, its static settings, default `hparams` (the traced
hyperparameters, `ddl.learners.HPARAMS`) and `variants`: each variant overrides some hparams
(a point of the sweep, same program) and may override static settings (e.g. `network.layers`),
which puts it in a group of its own (another program). Seeds x variants of a group are vmapped.
"""
import copy
import dataclasses
import difflib
import json
from typing import Any, Dict, List, Sequence

import ml_collections

from ddl import platform_defaults
from ddl.learners import growth as growth_lib
from ddl.learners import idbd as idbd_lib
from ddl.learners import learner as learner_lib
from ddl.learners import registry
from ddl.learners import topology

HPARAMS = registry.HPARAMS

WANDB_MODES = ('disabled', 'offline', 'online')
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
  # traced ones in `hparams`, the static ones in their method's section.
  statics = {section: {h.name: h.default for h in hypers} for section, hypers in registry.static_hypers().items()}
  config.optimizer = dict(name='sgd', **statics['optimizer'])
  config.cbp = dict(method='cbp', **statics['cbp'])   # method 'cbp' (ddl.learners.cbp) or 'redo'
  config.upgd = statics['upgd']
  config.idbd = statics['idbd']                       # IDBD and Autostep (ddl.learners.idbd)
  config.metaoptimize = statics['metaoptimize']       # MetaOptimize (ddl.learners.metaoptimize)
  config.obgd = statics['obgd']                       # ObGD (ddl.learners.obgd)
  config.schedule = statics['schedule']               # resets and plasticity injection
  config.growth = statics['growth']                   # a growing last hidden layer (ddl.learners.growth)
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


def apply_config_arg(config: ml_collections.ConfigDict, arg: str, presets: Dict[str, Any]) -> None:
  """Applies the `--config=file.py:a,b` argument: each token is a preset of the file (e.g.
  'smoke', applied in place by the callable in `presets`) or the name of a variant to keep."""
  presets = {'step_sizes': step_size_variants, **presets}
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


def step_size_variants(config: ml_collections.ConfigDict) -> None:
  """The preset 'step_sizes' of every config (`--config=configs/X.py:step_sizes`): adds the
  level-2 learners of dynamic deep learning as variants. IDBD and Autostep start every weight at the
  config's learning rate (meta step sizes 1e-3 and 1e-2: Sutton 1992's and Autostep's usual
  choices); MetaOptimize (one step size per network) starts at the authors' 1e-3 for its AdamW
  base. Per-weight MetaOptimize is `metaoptimize.blocks='weight'` in a variant of its own."""
  start = float(config.hparams.learning_rate)
  config.variants.idbd = dict(optimizer=dict(name='idbd'), initial_step_size=start, meta_step_size=1e-3)
  config.variants.autostep = dict(optimizer=dict(name='autostep'), initial_step_size=start, meta_step_size=1e-2)
  config.variants.metaoptimize = dict(optimizer=dict(name='metaoptimize'), learning_rate=1e-3)


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
  def max_replacement_rate(self) -> float:
    """Largest CBP rate of the group: 0 leaves CBP out of the program."""
    return max(h['replacement_rate'] for h in self.hparams)

  @property
  def perturbation(self) -> bool:
    """Whether the program holds the S&P noise transform."""
    return self.uses('snp')

  def uses(self, method: str) -> bool:
    """Whether the program holds a gated intervention (`registry.GATES`): some variant switches it on."""
    return any(h[registry.GATES[method]] > 0 for h in self.hparams)


def _flatten(d: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def groups(config: ml_collections.ConfigDict) -> List[Group]:
  """Splits the variants into groups of identical static settings (and, unless
  `fuse_variants`, the same use of S&P noise and CBP), in config order. A launch resolves
  `fuse_variants` first (`ddl.platform_defaults`); left AUTO here it counts as False."""
  result: Dict[str, Group] = {}
  for name, variant in config.variants.items():
    variant = variant.to_dict()
    static = {k: v for k, v in variant.items() if k not in HPARAMS}
    hparams = {k: float(config.hparams[k]) for k in HPARAMS}
    hparams.update({k: float(v) for k, v in variant.items() if k in HPARAMS})
    uses = {} if config.fuse_variants else {name: hparams[gate] > 0 for name, gate in registry.GATES.items()}
    signature = json.dumps([static, uses], sort_keys=True)
    if signature not in result:
      group_config = copy.deepcopy(config)
      with group_config.unlocked():
        for key, value in _flatten(static).items():
          target = group_config
          *parents, leaf = key.split('.')
          for parent in parents:
            target = target[parent]
          target[leaf] = value
      result[signature] = Group(name='', config=group_config, variants=[], hparams=[])
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
  for name, variant in config.variants.items():
    _check(isinstance(variant, ml_collections.ConfigDict), f'variants.{name}',
           'must be a dict of hparams and setting overrides')
    for key in variant.keys():
      _check(key in HPARAMS or key in top_level, f'variants.{name}.{key}',
             f'is neither a hyperparameter {HPARAMS} nor a config key{_suggest(key, list(HPARAMS) + sorted(top_level))}')
  traced = registry.traced_hypers()
  for group in groups(config):
    _check_methods(group.config, f'variant(s) {", ".join(group.variants)}: ')
    for variant, hparams in zip(group.variants, group.hparams):
      for h in traced:
        problem = h.problem(hparams[h.name])
        _check(problem is None, f'variant {variant}: hparams.{h.name}', str(problem))
    _check(group.config.optimizer.name != 'obgd' or getattr(experiment_cls, 'td_errors', False),
           f'variant(s) {", ".join(group.variants)}: optimizer.name',
           f'obgd needs a TD error and the episode ends in every step, which experiment {config.experiment} does '
           'not give (experiment stream_ac does)')
    try:
      checks = experiment_cls.checks(group.config)
    except (ZeroDivisionError, TypeError, KeyError, AttributeError) as e:
      raise ConfigError(f'variant(s) {", ".join(group.variants)}: a size or type is impossible ({e!r})') from None
    for ok, message in checks:
      _check(ok, f'variant(s) {", ".join(group.variants)}', message)
    _check_applies(config.experiment, experiment_cls, group)


def _check_methods(c: ml_collections.ConfigDict, where: str = '') -> None:
  """The static settings of the methods (optimizer, reset method, each method's section) in the
  base config or, with `where` naming them, in a group of variants."""
  _check(c.optimizer.name in registry.OPTIMIZERS, f'{where}optimizer.name',
         f'{c.optimizer.name!r} is not known; use one of {tuple(registry.OPTIMIZERS)}')
  _check(c.cbp.method in learner_lib.RESETS, f'{where}cbp.method',
         f'{c.cbp.method!r} is not known; use one of {learner_lib.RESETS}')
  for section, hypers in registry.static_hypers().items():
    for h in hypers:
      if section in c and h.name in c[section]:
        problem = h.problem(c[section][h.name])
        _check(problem is None, f'{where}{section}.{h.name}', str(problem))
  _check(c.cbp.utility_statistic == 'ema' or c.cbp.util_type in ('contribution', 'weight'),
         f'{where}cbp.utility_statistic', "'cumulative' (ResGnT) needs cbp.util_type 'contribution' or 'weight'")
  step_sizes = c.obgd.get('step_sizes', 'fixed') if 'obgd' in c else 'fixed'
  _check(step_sizes == 'fixed' or c.optimizer.name == 'obgd', f'{where}obgd.step_sizes',
         f"{step_sizes!r} (per-weight step sizes inside ObGD's bound) needs optimizer.name='obgd', got "
         f"{c.optimizer.name!r}; set obgd.step_sizes='fixed' or use optimizer obgd")
  beta_min, beta_max = (c.obgd.get(name, default) if 'obgd' in c else default
                        for name, default in zip(('beta_min', 'beta_max'), idbd_lib.BETA_RANGE))
  _check(step_sizes == 'fixed' or beta_min < beta_max, f'{where}obgd.beta_min',
         f'must be < obgd.beta_max, got {beta_min} and {beta_max}')


def _check_applies(experiment: str, experiment_cls: Any, group: Group) -> None:
  """Each intervention a group switches on must find what it needs in the experiment's network
  (registry.Method.needs): hidden units for CBP and ReDo, named layers for a head."""
  c = group.config
  wanted = []
  if group.max_replacement_rate > 0 or c.cbp.method == 'redo':
    wanted.append(registry.INTERVENTIONS['redo' if c.cbp.method == 'redo' else 'cbp'])
  if c.schedule.injection_first > 0:
    wanted.append(registry.INTERVENTIONS['injection'])
  if c.schedule.reset_first > 0 and c.schedule.reset_layers > 0:
    wanted.append(dataclasses.replace(registry.INTERVENTIONS['reset'], needs='head'))
  if c.growth.initial_units > 0:
    wanted.append(registry.INTERVENTIONS['growth'])
    if c.schedule.reset_first > 0 or c.schedule.injection_first > 0:
      raise ConfigError(f'variant(s) {", ".join(group.variants)}: growth does not combine with resets or plasticity '
                        'injection (schedule.reset_first, schedule.injection_first); set those to 0 or '
                        'growth.initial_units to 0.')
  if not any(m.needs for m in wanted):
    return
  network = experiment_cls.make_network(c)
  for method in wanted:
    name = type(network).__name__
    if method.needs == 'units' and not topology.unit_layers(network):
      missing = f'its network ({name}) has no hidden units'
    elif method.needs == 'head' and not hasattr(network, 'layer_names'):
      missing = f'its network ({name}) declares no named layers to form a head (networks with one: MLP, ConvNet)'
    elif method.needs == 'grow' and growth_lib.problem(network, c.growth):
      missing = growth_lib.problem(network, c.growth)
    else:
      continue
    raise ConfigError(f'variant(s) {", ".join(group.variants)}: {method.name} ({method.doc}) does not apply to '
                      f'experiment {experiment}: {missing}; remove the variant or choose another network.')


def differing_keys(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
  """Dotted keys whose values differ between two (nested) config dicts."""
  fa, fb = _flatten(a), _flatten(b)
  return sorted(k for k in set(fa) | set(fb) if fa.get(k, '<absent>') != fb.get(k, '<absent>'))

