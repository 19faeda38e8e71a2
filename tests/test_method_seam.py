"""The method seam (ddl.learners.method, ddl.learners.registry): a method is one module and one
registry line. Here: no method is named outside the registry and its own module; a method defined
in this file and registered here runs on every experiment; a program's state holds only its
methods' traced hyperparameters, so a checkpoint resumes after a method is registered; and every
registered method runs (not only traces) on every network family, composed with the others."""
import ast
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from conftest import ROOT, cheap_diagnostics, load_config, trace_programs
from ddl import config as config_lib
from ddl import nets
from ddl import platform_defaults
from ddl import run as run_lib
from ddl.learners import learner as learner_lib
from ddl.learners import method as method_lib
from ddl.learners import registry
from ddl.learners.hyper import Hyper

# Modules that compose methods generically and must name none (the list).
GENERIC = ['ddl/learners/learner.py', 'ddl/config.py', 'ddl/learners/cbp.py', 'ddl/run.py', 'launch/benchmark.py'] + \
    sorted(os.path.join('ddl/experiments', f) for f in os.listdir(os.path.join(ROOT, 'ddl/experiments'))
           if f.endswith('.py'))
# Method names that are also plain words ('reset' a network, 'growth'): only a string equal to one
# names the method; in identifiers they are vocabulary (cbp.reset_units, env.reset).
WORDS = ('reset', 'growth', 'injection')
# Identifiers that name a paper's measure, not a method: ReDo's dormant fraction (Sokar et al.) is a
# diagnostic every experiment reports, whatever its methods.
MEASURES = ('redo_tau', 'redo_dormant_fraction')


def _own_methods(path):
  """Names of the methods a module declares itself (cbp.py may say 'cbp')."""
  module = os.path.splitext(os.path.basename(path))[0]
  return {m.name for m in registry.all_methods() if m.hooks is not None and m.hooks.__module__.endswith(module)
          or getattr(m.transform, '__module__', '').endswith(module) or m.name == module}


def _names_in(path):
  # agent settings (replay ratio, ARR, augmentation) are read by the off-policy experiments that own
  # their loops: those name them by design; every other kind acts through the learner's seam
  names = {m.name for m in registry.all_methods() if m.kind != 'agent'} - _own_methods(path)

  def hit(identifier):
    if identifier in MEASURES:
      return None
    for name in names:
      if identifier == name and name not in WORDS:
        return name
      if name not in WORDS and re.search(rf'(^|_){re.escape(name)}(_|$)', identifier):
        return name
    return None

  found = []
  for node in ast.walk(ast.parse(open(os.path.join(ROOT, path)).read())):
    name = None
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
      name = node.value
    elif isinstance(node, ast.Name):
      name = hit(node.id)
    elif isinstance(node, ast.Attribute):
      name = hit(node.attr)
    elif isinstance(node, ast.arg):
      name = hit(node.arg)
    elif isinstance(node, ast.keyword) and node.arg:
      name = hit(node.arg)
    elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      name = hit(node.name)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      name = next(filter(None, (hit(a.name.split('.')[-1]) or (a.asname and hit(a.asname)) for a in node.names)), None)
    if name:
      found.append(f'{path}:{node.lineno}: {name} ({ast.unparse(node)[:60]})')
  return found


def test_no_method_is_named_outside_the_registry_and_its_module():
  found = [line for path in GENERIC for line in _names_in(path)]
  assert not found, '\n'.join(found)


def test_the_name_check_sees_a_method_name():
  """The check above is not blind: it finds the names that the generic modules used to hold."""
  source = "from ddl.learners import idbd as idbd_lib\nx = learner.uses_cbp\nif name == 'obgd': pass\n"
  path = os.path.join(ROOT, 'tests', '_seam_probe.py')
  try:
    with open(path, 'w') as f:
      f.write(source)
    assert len(_names_in('tests/_seam_probe.py')) == 3
  finally:
    os.remove(path)


def test_registry_tables_hold_their_kind_and_names_are_unique():
  for kind, table in registry.TABLE_OF_KIND.items():
    assert all(m.kind == kind and m.name == name for name, m in table.items())
  assert len(set(registry.names())) == len(registry.names())
  with pytest.raises(ValueError, match='registered already'):
    registry.register(registry.get('cbp'))
  clash = method_lib.Method('clash', 'gradient', 'x', (Hyper('replacement_rate', 0.0),))
  with pytest.raises(ValueError, match='replacement_rate'):
    registry.register(clash)
  with pytest.raises(ValueError, match='kind'):
    method_lib.Method('bad', 'regulariser', 'x')


# --- A method defined here: a traced gradient term and a unit transform with state and a diagnostic.

def shrink_updates(factor):
  """Multiplies the gradient by 1 - factor (a traced hyperparameter)."""
  return optax.scale(1.0 - factor)


SHRINK = method_lib.Method(
    'test_shrink', 'gradient', 'a gradient scaled by 1 - test_shrink (a test)',
    (Hyper('test_shrink', 0.0, low=0, high=1, open_high=True, doc='gradient shrink'),),
    active=method_lib.gated('test_shrink'), transform=lambda b: shrink_updates(b.hparams['test_shrink']),
    examples=(('test_shrink', dict(test_shrink=0.1)),))


@struct.dataclass
class CounterState:
  steps: jax.Array


class CounterHooks(method_lib.Hooks):
  def init(self, key, params, sample_input, hparams):
    return params, CounterState(steps=jnp.zeros((), jnp.int32))

  def after_step(self, state, step):
    return step, CounterState(steps=state.steps + self.context.options['test_counter_stride'])

  def diagnostics(self, state, params):
    return {'steps_counted': state.steps}


COUNTER = method_lib.Method(
    'test_counter', 'unit', 'counts learner steps (a test)',
    (Hyper('test_counter', False, choices=(False, True), traced=False, doc='on'),
     Hyper('test_counter_stride', 1, low=1, traced=False, doc='added per step')),
    section='test_counter', active=method_lib.selected('test_counter.test_counter', True), hooks=CounterHooks)

SMOKES = {   # one config per experiment, each with its smoke preset, one variant
    'slowly_changing_regression': 'slowly_changing_regression', 'permuted_inputs': 'permuted_digits',
    'continual_imagenet': 'imagenet', 'class_incremental': 'cifar100', 'ppo': 'ant', 'stream_ac': 'stream_ant',
    'random_labels': 'random_label_digits', 'tracking': 'idbd_tracking'}


def _with_test_methods(experiment):
  config = cheap_diagnostics(load_config(SMOKES[experiment], 'smoke'))
  first = next(iter(config.variants))
  variant = config.variants[first].to_dict()
  config.variants = {'probe': {**variant, 'test_shrink': 0.1, 'test_counter': dict(test_counter=True)}}
  config.num_seeds = 2
  return config


@pytest.mark.parametrize('experiment', sorted(SMOKES))
def test_a_method_defined_here_traces_on_every_experiment(experiment):
  with registry.registered(SHRINK, COUNTER):
    experiment_obj, state, _ = trace_programs(_with_test_methods(experiment))
    assert {m.name for m in experiment_obj.learner.methods} >= {'test_shrink', 'test_counter'}


def _runs_one_chunk(experiment, tmp_path):
  """One chunk with both test methods; where the experiment has an evaluator, the unit method's
  own diagnostic is among its metrics (CIFAR-100 and the tracking task have none yet)."""
  from ddl import experiments  # pylint: disable=g-import-not-at-top
  with registry.registered(SHRINK, COUNTER):
    config = _with_test_methods(experiment)
    run_lib.run(config, str(tmp_path / experiment), stop_after_chunks=1, figures=False)
  with open(tmp_path / experiment / 'metrics.csv') as f:
    rows = [line.split(',') for line in f.read().splitlines()[1:]]
  assert rows and all(np.isfinite(float(r[4])) for r in rows)
  if hasattr(experiments.get(experiment), 'evaluate'):
    counted = [float(r[4]) for r in rows if r[3] == 'steps_counted']
    assert counted and all(c > 0 for c in counted)


def test_a_method_defined_here_runs_a_chunk(tmp_path):
  _runs_one_chunk('slowly_changing_regression', tmp_path)


@pytest.mark.slow   # the default run traces them all (above) and runs SCR
@pytest.mark.parametrize('experiment', sorted(set(SMOKES) - {'slowly_changing_regression'}))
def test_a_method_defined_here_runs_a_chunk_of_every_experiment(experiment, tmp_path):
  _runs_one_chunk(experiment, tmp_path)


def test_the_state_holds_only_its_methods_hyperparameters():
  config = config_lib.groups(load_config('slowly_changing_regression', 'smoke'))
  experiment = __import__('ddl.experiments', fromlist=['x']).get('slowly_changing_regression')
  held = {}
  for group in config:
    learner = experiment(group.config, group).learner
    held[group.name] = {name for name, _ in learner.traced}
  assert held['bp+l2'] == {'learning_rate', 'weight_decay'}
  assert held['cbp'] == {'learning_rate', 'weight_decay', 'replacement_rate', 'maturity_threshold', 'decay_rate'}
  assert held['snp'] == {'learning_rate', 'weight_decay', 'noise_scale'}


def test_a_checkpoint_resumes_after_a_method_is_registered(tmp_path):
  """Written before `test_shrink` existed, resumed with it registered (its default leaves it off):
  the same metrics.csv as a run that never stopped. config.json gains its keys at their defaults."""
  config = cheap_diagnostics(load_config('slowly_changing_regression', 'smoke,bp,cbp'))
  whole, split = str(tmp_path / 'whole'), str(tmp_path / 'split')
  run_lib.run(config, whole, figures=False)
  run_lib.run(config, split, stop_after_chunks=2, figures=False)
  with registry.registered(SHRINK, COUNTER):
    resumed = cheap_diagnostics(load_config('slowly_changing_regression', 'smoke,bp,cbp'))
    assert 'test_shrink' in resumed.hparams
    run_lib.run(resumed, split, figures=False)
  read = lambda p: open(os.path.join(p, 'metrics.csv')).read()
  assert read(split) == read(whole)


# --- Every registered method runs on every network family, composed with the others.

def _family(name, activation='relu'):
  """(network, loss, sample input, target, extra step args) of a family."""
  key = jax.random.key(3)
  if name == 'mlp':
    net = nets.MLP(hidden=(6, 5), outputs=3, activation=activation)
    return net, 'cross_entropy', jax.random.normal(key, (4, 7)), jnp.arange(4) % 3, {}
  if name == 'convnet':
    net = nets.ConvNet(outputs=2, conv='lax', widths=(2, 2, 3), dense=(4, 4), activation=activation)
    return net, 'cross_entropy', jax.random.normal(key, (2, 32, 32, 3)), jnp.arange(2) % 2, {}
  if name == 'resnet':
    net = nets.ResNet18(outputs=3, width=2, conv='lax', blocks_per_stage=1, activation=activation)
    return net, 'cross_entropy', jax.random.normal(key, (2, 8, 8, 3)), jnp.arange(2) % 3, {}
  net = nets.ActorCritic((5,), 2, activation=activation)
  loss = lambda output, target: jnp.sum(output[0] ** 2) + jnp.sum(output[2] ** 2) + 0 * jnp.sum(target)
  extra = dict(td_error=jnp.float32(0.3), done=jnp.bool_(False))
  return net, loss, jax.random.normal(key, (3, 4)), jnp.zeros(()), extra


FAMILIES = ('mlp', 'convnet', 'resnet', 'actor_critic')
# Methods that one program cannot hold together (the config refuses these pairs).
EXCLUSIVE = (('cbp', 'redo'), ('cbp', 'growth'), ('redo', 'growth'), ('growth', 'reset'), ('growth', 'injection'),
             ('growth', 'layer_norm'), ('growth', 'crelu'), ('layer_norm', 'crelu'), ('growth', 'spectral_norm'))


def _config(net, activation):
  config = config_lib.base_config()
  heads = hasattr(net, 'layer_names')
  config.schedule.update(reset_first=1, reset_every=1, reset_layers=1 if heads else 0, injection_first=1)
  config.growth.update(initial_units=2)
  config.network.activation = activation
  if 'spectral_norm' in config.network:
    config.network.update(spectral_norm=True, spectral_norm_layers='all')
  return config


def _programs(family):
  """Programs (method names) that together hold every registered method applying to the family:
  one per optimizer that applies, the other methods spread over them."""
  net = _family(family)[0]
  traits = type('Experiment', (), {'make_network': staticmethod(lambda c: net),
                                   'objective': 'actor_critic' if family == 'actor_critic' else 'prediction'})
  where = method_lib.Where('test', traits, _config(net, 'relu'))
  applies = lambda m: m.check is None or m.name == 'crelu' or not m.check(where)
  given = set(method_lib.LEARNER_ARGS) | ({'td_error', 'done'} if family == 'actor_critic' else set())
  methods = [m for m in registry.all_methods() if applies(m) and set(m.extra_args) <= given]
  programs = [[m.name] for m in methods if m.kind == 'optimizer']
  for m in methods:
    if m.kind == 'optimizer':
      continue
    for program in programs:
      if not any({m.name, other} == set(pair) for pair in EXCLUSIVE for other in program):
        program.append(m.name)
        break
    else:
      programs.append([programs[0][0], m.name])
  return programs


@pytest.mark.parametrize('family', FAMILIES)
def test_every_method_runs_on_every_network_family(family):
  """Each program runs two chunks and its losses are finite; on the conv families a program that holds
  an optimizer alone is traced, not compiled (an optimizer acts on the parameter tree whatever the
  layers, and its numbers are checked against numpy loops on MLPs: what a conv net could break is
  its tree handling, which tracing runs; compiling the four ResNets took ~40 s of the suite), and so
  is every ResNet program (compiling its two took ~20 s): the ConvNet runs the same methods' numbers on
  conv layers, and the ResNet's run in test_cifar100 (CBP and its batch-norm resets) and, with every
  method, in `-m slow`'s test_every_method_runs_a_chunk_of_every_experiment."""
  programs = _programs(family)
  if family == 'actor_critic':
    assert {p[0] for p in programs} >= {'obgd', 'adam'}
  else:
    assert {p[0] for p in programs} >= {'idbd', 'autostep', 'sgd'}
  for names in programs:
    activation = 'crelu' if 'crelu' in names else 'relu'
    net, loss, x, y, extra = _family(family, activation)
    learner = learner_lib.Learner.of(net, loss, names, config=_config(net, activation), num_chunks=3,
                                     replacement_rate=0.5)
    values = {n: d for n, d in learner.traced}
    values.update({n: v for n, v in dict(replacement_rate=0.5, maturity_threshold=0.0, l2_init=1e-3, noise_scale=1e-3,
                                         weight_decay=1e-3, parseval=1e-3).items() if n in values})
    run = jax.vmap(lambda k: _steps(learner, k, x, y, values, extra))
    if family == 'resnet' or (family == 'convnet' and len(names) == 1):
      shapes = jax.eval_shape(run, jax.random.split(jax.random.key(0), 2))[0]
      assert shapes.shape == (2, 2), (family, names)
      continue
    losses, replaced, diagnostics = jax.jit(run)(jax.random.split(jax.random.key(0), 2))
    assert np.all(np.isfinite(np.asarray(losses))), (family, names)
    if 'cbp' in names:
      assert np.asarray(replaced).sum() > 0, (family, names)
    if 'growth' in names:   # a method's own diagnostics reach the evaluator
      assert np.all(np.asarray(diagnostics['backbone_units']) >= 1), (family, names)


def _steps(learner, key, x, y, values, extra):
  """Two chunks of one step each (a boundary, then a step), as one scan: the step compiles once."""
  def chunk(state, index):
    state = learner.boundary(state, index, jax.random.fold_in(key, 10 + index), x[:1])
    state, out = learner.step(state, x, y, jax.random.fold_in(key, index), extra=extra or None)
    return state, (out.loss, out.num_replaced)

  state, (losses, replaced) = jax.lax.scan(chunk, learner.init(key, x[:1], values), jnp.arange(1, 3))
  return losses, replaced.sum(), learner.diagnostics(state)


def _merge(a, b):
  out = dict(a)
  for k, v in b.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def _applies(config, experiment_cls, variant):
  one = platform_defaults.resolve(config)
  one.variants = {'v': variant}
  try:
    config_lib.validate(one, experiment_cls)
    return True
  except config_lib.ConfigError:
    return False


def _composed_variants(config, experiment_cls):
  """Variants that together hold every registered method that applies to the experiment (its first
  example that does): one per optimizer that applies, every other method added to the first variant
  that still validates with it. They start from the config's simplest variant."""
  base = min((v.to_dict() for v in config.variants.values()), key=lambda v: len(config_lib._flatten(v)))  # pylint: disable=protected-access
  applying = {}
  for m in registry.all_methods():
    example = next((v for v in m.variants().values() if _applies(config, experiment_cls, _merge(base, v))), None)
    if example is not None:
      applying[m.name] = example
  variants = {n: _merge(base, v) for n, v in applying.items() if registry.get(n).kind == 'optimizer'}
  for name, example in applying.items():
    if registry.get(name).kind == 'optimizer':
      continue
    for key, variant in variants.items():
      merged = _merge(variant, example)
      if _applies(config, experiment_cls, merged):
        variants[key] = merged
        break
    else:
      variants[name] = _merge(base, example)
  return variants, set(applying)


@pytest.mark.slow   # the default run: every method on every network family (above), composed interventions
@pytest.mark.parametrize('experiment', sorted(SMOKES))
def test_every_method_runs_a_chunk_of_every_experiment(experiment, tmp_path):
  from ddl import experiments  # pylint: disable=g-import-not-at-top
  config = cheap_diagnostics(load_config(SMOKES[experiment], 'smoke'))
  experiment_cls = experiments.get(config.experiment)
  variants, applying = _composed_variants(config, experiment_cls)
  config.variants = variants
  config.num_seeds = 1
  config.fuse_variants = False
  run_lib.run(config, str(tmp_path / 'w'), stop_after_chunks=1, figures=False)
  held = {m.name for g in config_lib.groups(platform_defaults.resolve(config)) for m in g.methods}
  assert applying <= held, applying - held

