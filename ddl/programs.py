"""The compiled programs of a launch: per group of variants (see `ddl.config.groups`) and slice of at
most `calls_size` runs, the jitted, vmapped init, chunk (with NaN/inf isolation) and evaluator over
the runs axis, sharded over the devices and padded to a multiple of them; `fitted`, the programs
compiled with as many runs per call as fit the device's memory (`ddl.memory`); the call that turns
a device out-of-memory error into one line saying how many runs fit."""
import dataclasses
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddl import config as config_lib
from ddl import experiments
from ddl import memory
from ddl.devices import Devices


@dataclasses.dataclass
class Program:
  """One group's experiment, its runs and its compiled functions. The state of a program is
  (experiment states, alive): `alive` (runs,) is False for a run whose state became non-finite
  (frozen at its last finite state, no more rows). The runs axis is padded to a multiple of the
  devices; `variants` and `seeds` name the real runs only, the padding is dropped from outputs."""
  group: config_lib.Group
  experiment: Any
  variants: List[str]      # variant of each run (run axis = variants x seeds, variant-major)
  seeds: List[int]
  init: Any                # () -> (states, alive)
  run_chunk: Any           # ((states, alive), data) -> ((states, alive), metrics), data shared by every run
  padded: int = 0          # size of the runs axis on the devices (>= len(variants))
  evaluate: Any = None     # (states, data) -> diagnostics {metric: (runs,)}; None: the experiment has none
  diagnostics_every: int = 1   # chunks between evaluator calls

  def evaluates(self, chunk: int) -> bool:
    """Whether the evaluator runs after `chunk`: every `diagnostics_every` chunks and after the last."""
    return self.evaluate is not None and (chunk % self.diagnostics_every == 0
                                          or chunk == self.experiment.num_chunks - 1)


def _finite(states) -> jax.Array:
  """(runs,) bool: every floating leaf of each run's state is finite. A non-finite loss reaches
  the parameters through the gradient, so the state is where a bad run shows."""
  ok = None
  for leaf in jax.tree.leaves(states):
    if not jnp.issubdtype(leaf.dtype, jnp.inexact):
      continue
    leaf_ok = jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
    ok = leaf_ok if ok is None else ok & leaf_ok
  return ok


def _guard(run_chunk):
  """The vmapped chunk with NaN/inf isolation, on the device: a run whose new state is not finite
  keeps its previous state and is marked dead (alive=False) for good; the others are untouched.
  uint8 leaves (stored images: a pixel replay buffer, tens of GB at the paper's size) take the new
  value in every run: they cannot be non-finite, and selecting between old and new would hold both."""
  def step(carry, data):
    states, alive = carry
    new, values = jax.vmap(run_chunk, in_axes=(0, None))(states, data)
    finite = _finite(new)
    ok = alive if finite is None else alive & finite
    keep = lambda n, o: n if n.dtype == jnp.uint8 else jnp.where(ok.reshape(ok.shape + (1,) * (n.ndim - 1)), n, o)
    return (jax.tree.map(keep, new, states), ok), values
  return step


def split_cpu(config, devices: Devices) -> bool:
  """Whether every call is one run per device of a split CPU (`cpu_devices`)."""
  return devices.platform == 'cpu' and config.cpu_devices > 0


def calls_size(config, devices: Devices, runs: int, runs_per_call: Optional[int] = None) -> int:
  """Runs per call: one per device on a split CPU (`cpu_devices`), else `runs_per_call` (the
  argument, else the config's; 0 or None: all)."""
  if split_cpu(config, devices):
    return devices.count
  return runs_per_call or config.runs_per_call or runs


def over_runs(evaluate, at_once: int = 0):
  """(states, data) -> metrics of every run: `evaluate` vmapped over the runs, or with `at_once` > 0
  mapped over them that many at a time (`jax.lax.map`), so a large evaluator (a ResNet's
  Hessian-vector products) holds one run's memory, not a call's."""
  if not at_once:
    return jax.vmap(evaluate, in_axes=(0, None))
  return lambda states, data: jax.lax.map(lambda state: evaluate(state, data), states, batch_size=at_once)


def build(config, devices: Devices, runs_per_call: Optional[int] = None) -> List[Program]:
  """One program per group and slice of at most `calls_size` runs (variants x seeds; runs that differ
  in the experiment's `calls_apart` hyperparameters in slices of their own). Slices of a
  group share one jitted function per program kind (and its compilation when they have the same
  size) and run one after another. Each slice is padded to a multiple of the devices with copies of
  its last run. `runs_per_call` overrides the config's."""
  experiment_cls = experiments.get(config.experiment)
  programs = []
  root = jax.random.PRNGKey(config.seed)
  donate = (0,) if devices.platform != 'cpu' else ()
  for group in config_lib.groups(config):
    experiment = experiment_cls(group.config, group)
    init_one = jax.vmap(experiment.init)
    init = jax.jit(lambda k, h, s, f=init_one: (f(k, h, s), jnp.ones(s.shape, bool)), out_shardings=devices.runs)
    run_chunk = jax.jit(_guard(experiment.run_chunk), donate_argnums=donate, out_shardings=devices.runs)
    evaluate, every = None, int(getattr(experiment, 'diagnostics_every', 1))
    if hasattr(experiment, 'evaluate'):   # the diagnostics: a program of their own, run every `every` chunks
      evaluate = jax.jit(over_runs(experiment.evaluate, getattr(experiment, 'evaluate_runs_at_once', 0)),
                         out_shardings=devices.runs)
      if every < 1:
        raise config_lib.ConfigError(f'diagnostics_every must be >= 1 (chunks between diagnostics), got {every}')
    runs = [(v, s, h) for v, h in zip(group.variants, group.hparams) for s in range(config.num_seeds)]
    size = calls_size(config, devices, len(runs), runs_per_call)
    for part in _slices(runs, size, getattr(experiment, 'calls_apart', ())):
      padded = part + [part[-1]] * (-len(part) % devices.count)
      seeds = np.asarray([s for _, s, _ in padded], np.int32)
      # Seed s gets the same key in every variant: paired comparisons, same data streams.
      keys = np.asarray(jax.vmap(jax.random.fold_in, (None, 0))(root, seeds))
      hparams = {k: np.asarray([h[k] for _, _, h in padded], np.float32) for k in padded[0][2]}
      args = devices.put((keys, hparams, seeds), devices.runs)
      programs.append(Program(
          group=group, experiment=experiment, variants=[v for v, _, _ in part], seeds=[s for _, s, _ in part],
          init=lambda i=init, a=args: i(*a), run_chunk=run_chunk, padded=len(padded), evaluate=evaluate,
          diagnostics_every=every))
  return programs


def _slices(runs, size: int, apart=()):
  """The runs in slices of at most `size`, in order; runs that differ in a hyperparameter of `apart`
  (an experiment's `calls_apart`, e.g. the replay ratio on CPU) never share one."""
  parts = {}
  for run in runs:
    parts.setdefault(tuple(run[2][k] for k in apart), []).append(run)
  return [part[i:i + size] for part in parts.values() for i in range(0, len(part), size)]


def load_data(config, devices: Devices):
  """The experiment's data (`load_data(config)`), replicated on every device, once per launch; a
  missing or mismatched data set is a ConfigError."""
  try:
    return devices.put(experiments.get(config.experiment).load_data(config), devices.replicated)
  except (ValueError, FileNotFoundError) as e:
    raise config_lib.ConfigError(str(e)) from None


def fitted(config, devices: Devices, data, saved_calls: Optional[List[int]] = None,
           built: Optional[Dict[Any, Any]] = None):
  """(the launch's programs, a line on the memory they need per device to log): the programs
  compiled before any state is allocated (`memory.compile_programs`). `built`: a dict that keeps
  the compiled programs by config and slice sizes across launches in one process (a relaunch of the
  same config then neither traces, lowers nor compiles again; the config must describe the programs
  fully: files it names are read again only when building). The caller logs the line
  once the launch is known to go ahead (after a resume's checkpoint is read), so a refused launch
  prints its error alone. Where it exceeds the device's free memory: with
  `runs_per_call` left AUTO (None) the runs are split into more, smaller calls until they fit;
  else (a set value, a split CPU, or a resume, whose calls must stay those of its checkpoint,
  `saved_calls`) one ConfigError line says which `runs_per_call` fits."""
  resumed = saved_calls is not None and config.runs_per_call is None and not split_cpu(config, devices)
  size = max(saved_calls) if resumed else None
  may_split = config.runs_per_call is None and not split_cpu(config, devices) and not resumed
  while True:
    if built is None:
      programs, footprint = memory.compile_programs(build(config, devices, size), data, devices)
    else:
      programs = build(config, devices, size)   # its slices' sizes key the compiled programs (nothing traced yet)
      key = (config.to_json_best_effort(sort_keys=True), tuple(d.id for d in devices.mesh.devices.flat),
             tuple(p.padded for p in programs))
      if key not in built:
        built[key] = memory.compile_programs(programs, data, devices)
      programs, footprint = built[key]
      footprint = dataclasses.replace(footprint, free=memory.free_bytes(devices.mesh.devices.flat[0]))
    per_call = max(p.padded for p in programs)
    if footprint.fits:
      return programs, f'Memory, {per_call} runs per call: {footprint.describe()}.'
    fit = footprint.runs_that_fit() * devices.count
    if fit < 1:
      raise config_lib.ConfigError(
          f'num_seeds: the states of all runs alone do not fit the device ({footprint.describe()}); launch '
          'fewer seeds or variants at a time (--config.num_seeds=N, or name variants: --config=FILE:a,b).')
    size = min(fit, per_call - devices.count)   # strictly fewer: the linear estimate may be optimistic
    if size < 1:
      raise config_lib.ConfigError(
          f'runs_per_call: even one run per device and call does not fit the device ({footprint.describe()}); '
          'launch fewer seeds or variants at a time (--config.num_seeds=N, or name variants: --config=FILE:a,b).')
    if resumed:
      raise config_lib.ConfigError(
          f'runs_per_call: the checkpoint\'s calls of {per_call} runs do not fit the device now '
          f'({footprint.describe()}); free memory or resume on a larger device, or start over with --fresh '
          f'--config.runs_per_call={size}.')
    if not may_split:
      raise config_lib.ConfigError(
          f'runs_per_call: {per_call} runs per call do not fit the device ({footprint.describe()}); about '
          f'{size} fit: set --config.runs_per_call={size}.')
    logging.info('Memory: splitting the runs into calls of at most %d.', size)


def out_of_memory(error: Exception, fn, program: Program, devices: Devices) -> config_lib.ConfigError:
  """The device OOM error of `fn` (one of the program's compiled functions) as one line: how many
  runs per call/device it tried and how many would fit (from its memory analysis and the device's
  memory limit, when both are known; otherwise half of what failed)."""
  per_device = program.padded // devices.count
  fit, how = max(1, per_device // 2), 'at most'
  figures = memory.analysis(fn) if hasattr(fn, 'memory_analysis') else None
  try:
    limit = (devices.mesh.devices.flat[0].memory_stats() or {}).get('bytes_limit')
  except Exception:  # pylint: disable=broad-except
    limit = None
  if figures and limit:
    need = figures['argument'] + memory.call_bytes(figures)
    if need > 0:
      fit, how = max(0, int(memory.HEADROOM * limit / (need / per_device))), 'about'
  first_line = str(error).strip().splitlines()[0][:200]
  return config_lib.ConfigError(
      f'runs_per_call: the device ran out of memory with {program.padded} runs per call '
      f'({per_device} per device on {devices.count} device(s)); {how} {fit} runs per device would fit: '
      f'set --config.runs_per_call={max(1, fit) * devices.count} (XLA: {first_line}).')


def call(fn, program: Program, devices: Devices, *args):
  """`fn(*args)` (one of the program's functions), a device out-of-memory error raised as the
  ConfigError of `out_of_memory`."""
  try:
    return fn(*args)
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' in str(e):
      raise out_of_memory(e, fn, program, devices) from None
    raise


def host_values(program: Program, values: Dict[str, Any]) -> Dict[str, np.ndarray]:
  """{metric: (real runs,)} host arrays of a program's per-run outputs, padding dropped."""
  return {m: np.asarray(v).reshape(-1)[:len(program.variants)] for m, v in values.items()}
