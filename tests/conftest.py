"""Shared test helpers: configs are loaded from the repo's config files, as launch/main.py does."""
import importlib.util
import os
import tempfile

import jax
import jax.numpy as jnp
import optax

# Runs of the same config in one test session compile the same programs: share them, also with the
# launches that tests start as subprocesses (launch/main.py), which read the same settings from the
# environment.
CACHE = os.path.join(tempfile.gettempdir(), 'ddl_test_jax_cache')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))

# Most of the suite's time is XLA compiling programs that then run for a moment: compile with LLVM's
# cheapest optimisation level (measured: 39 % less CPU for the suite; XLA's own HLO passes still run,
# results stay IEEE float32, only the rounding of some sums moves). The PyTorch trace replays, the
# proof of fidelity, compile at the level of real runs instead (`trace_replay.jit`).
# Launches in a subprocess inherit it. A level already in XLA_FLAGS wins
# (XLA_FLAGS=--xla_backend_optimization_level=2: XLA's default).
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules whose end-to-end runs take a minute or more on a 2-core CPU (compiling a ResNet, Brax, or
# many programs): run first, so that the short tests fill the other processes' time around them.
LONG_FIRST = ('test_ddpg', 'test_cifar100', 'test_method_seam', 'test_dqn', 'test_rl', 'test_stream_ac', 'test_robust', 'test_dynamic_scr', 'test_run',
              'test_experiments', 'test_platform', 'test_interventions', 'test_dmc', 'test_gym_ant', 'test_mujoco_host')


def pytest_collection_modifyitems(items):
  rank = lambda item: LONG_FIRST.index(item.module.__name__) if item.module.__name__ in LONG_FIRST else len(LONG_FIRST)
  items.sort(key=rank)


def run_optax(opt, params, grads, **extra):
  """Applies the optax transform `opt` to `params` with the given per-step gradients (numpy or jax
  trees; `extra`: the update's extra arguments) -> (the params after each step, the final state)."""
  params = jax.tree.map(jnp.asarray, params)
  state = opt.init(params)
  history = []
  for g in grads:
    updates, state = opt.update(jax.tree.map(jnp.asarray, g), state, params, **extra)
    params = optax.apply_updates(params, updates)
    history.append(params)
  return history, state


def load_config(name: str, arg: str = ''):
  """get_config(arg) of configs/<name>.py."""
  spec = importlib.util.spec_from_file_location(f'configs_{name}', os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def assert_resume_is_identical(config, whole: str, split: str, stop_after_chunks: int, run_whole: bool = False,
                               built=None) -> None:
  """A run stopped after `stop_after_chunks` chunks and relaunched into the same workdir ends with a
  metrics.csv identical to that of the uninterrupted run in `whole` (written first here with
  `run_whole`, else already there). The launches here share their built programs (`run(..., built=)`:
  nothing is traced twice; pass the dict of the launch that wrote `whole` to share its programs too)."""
  from ddl import run as run_lib  # pylint: disable=g-import-not-at-top
  built = {} if built is None else built
  if run_whole:
    run_lib.run(config, whole, figures=False, built=built)
  run_lib.run(config, split, stop_after_chunks=stop_after_chunks, figures=False, built=built)
  run_lib.run(config, split, figures=False, built=built)
  read = lambda p: open(os.path.join(p, 'metrics.csv')).read()
  assert read(split) == read(whole)


# The evaluator's Hessian power iterations and UPGD plasticity probe: off in tests of other code (they
# have tests of their own, and they nearly double an MLP evaluator's compilation). For launches in a
# subprocess: the same as command-line flags.
CHEAP = {'hessian_iterations': 0, 'plasticity': False}
CHEAP_DIAGNOSTICS = tuple(f'--config.diagnostics.{k}={v}' for k, v in CHEAP.items())


def cheap_diagnostics(config):
  """`config` (changed in place and returned) with the evaluator's costly diagnostics off."""
  config.diagnostics.update(CHEAP)
  return config


def trace_programs(config):
  """Every group's init, one chunk and the evaluator of a launch's config, traced on abstract values
  (`jax.eval_shape`: each experiment's code runs, nothing is compiled), after the launch's platform
  choices and validation. Returns (experiment, state after the chunk, its values) of the first group
  (`trace_programs.evaluated`: the evaluator's values of it, or None)."""
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl import experiments  # pylint: disable=g-import-not-at-top
  from ddl import platform_defaults  # pylint: disable=g-import-not-at-top
  config = platform_defaults.resolve(config)
  experiment_cls = experiments.get(config.experiment)
  config_lib.validate(config, experiment_cls)
  data = experiment_cls.load_data(config)
  traced = []
  for group in config_lib.groups(config):
    experiment = experiment_cls(group.config, group)
    hparams = {k: jnp.float32(v) for k, v in group.hparams[0].items()}
    state = jax.eval_shape(experiment.init, jax.random.PRNGKey(0), hparams, jnp.int32(0))
    state, values = jax.eval_shape(experiment.run_chunk, state, data)
    evaluated = jax.eval_shape(experiment.evaluate, state, data) if hasattr(experiment, 'evaluate') else None
    traced.append((experiment, state, values, evaluated))
  trace_programs.evaluated = traced[0][3]
  return traced[0][:3]


def poisoned_scr():
  """SCR whose seed 1 gets NaN parameters once more than `poison_after` examples are seen (the
  class attribute; 1000: from its third smoke chunk on); states are (SCR state, seed)."""
  from ddl.experiments import SlowlyChangingRegression  # pylint: disable=g-import-not-at-top

  class PoisonedSeed(SlowlyChangingRegression):
    poison_after = 1000

    def init(self, key, hparams, seed):
      return super().init(key, hparams, seed), seed

    def run_chunk(self, state, data=None):
      inner, seed = state
      inner, values = super().run_chunk(inner, data)
      poison = (seed == 1) & (inner.examples > self.poison_after)
      params = jax.tree.map(lambda p: jnp.where(poison, jnp.nan, p), inner.learner.params)
      return (inner.replace(learner=inner.learner.replace(params=params)), seed), values

    def evaluate(self, state, data=None):
      return super().evaluate(state[0], data)

  return PoisonedSeed
