"""The run loop, once for every experiment.

Each group of variants (see `ddl.config.groups`) is one jitted, vmapped program over its
variants x seeds, the runs axis sharded over all devices (padded to a multiple of them; the
padding is dropped from every output). The host loop advances every group by one chunk per call,
appends the chunk's metrics to `metrics.csv` (long form: variant,seed,step,metric,value), logs
progress and W&B curves, and checkpoints with orbax. A run whose state turns NaN/inf is frozen
on the device and marked (metric `nonfinite`); the others go on. Relaunching into the same workdir
resumes from the last checkpoint; metrics.csv is cut back to that checkpoint, so it ends identical
to an uninterrupted run's. SIGTERM/SIGINT checkpoint after the current chunk and stop.
"""
import collections
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from ddl import config as config_lib
from ddl import experiments
from ddl import plotting

METRICS_HEADER = 'variant,seed,step,metric,value\n'


class Interrupted(Exception):
  """SIGTERM or SIGINT ended the launch after a checkpoint; relaunching resumes."""

  def __init__(self, chunk: int, num_chunks: int, signum: int):
    super().__init__(f'interrupted by signal {signum} after chunk {chunk}/{num_chunks} (checkpointed)')
    self.chunk, self.num_chunks, self.signum = chunk, num_chunks, signum


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


@contextlib.contextmanager
def _quiet():
  """Keeps orbax's per-save INFO lines out of the progress log."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  try:
    yield
  finally:
    logging.set_verbosity(level)


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
  keeps its previous state and is marked dead (alive=False) for good; the others are untouched."""
  def step(carry, data):
    states, alive = carry
    new, values = jax.vmap(run_chunk, in_axes=(0, None))(states, data)
    finite = _finite(new)
    ok = alive if finite is None else alive & finite
    keep = lambda n, o: jnp.where(ok.reshape(ok.shape + (1,) * (n.ndim - 1)), n, o)
    return (jax.tree.map(keep, new, states), ok), values
  return step


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


class Devices:
  """The mesh that the runs axis is sharded over: all visible devices (or the first
  `config.num_devices`), one mesh axis 'runs'; data is replicated."""

  def __init__(self, config):
    devices = jax.devices(config.platform or None)
    if config.num_devices:
      devices = devices[:config.num_devices]
    self.mesh = jax.sharding.Mesh(np.asarray(devices), ('runs',))
    self.runs = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec('runs'))
    self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self.count = len(devices)
    self.platform = devices[0].platform

  def put(self, tree, sharding):
    """Global arrays from host values every process holds (works on one or several hosts)."""
    def one(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(one, tree)

  # Checkpoints hold the real runs only, so a run can resume on another number of devices.
  # Host copies: no device holds all runs at once.
  # Typed PRNG key arrays travel as their raw key data (NumPy and orbax hold plain arrays);
  # `rewrap` restores them from a template state.
  def unpad(self, tree, runs: int):
    data = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)
    return jax.tree.map(lambda x: np.asarray(x)[:runs], self.get(data))

  def unpadded_target(self, tree, runs: int):
    def one(x):
      x = jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x
      return jax.ShapeDtypeStruct((runs,) + x.shape[1:], x.dtype, sharding=self.replicated)
    return jax.tree.map(one, tree)

  @staticmethod
  def rewrap(tree, template):
    return jax.tree.map(lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
                        tree, template)

  def pad(self, tree, size: int):
    """Pads the runs axis to `size` with copies of the last run, sharded over the devices."""
    def one(x):
      return jnp.concatenate([x, jnp.repeat(x[-1:], size - x.shape[0], axis=0)]) if size > x.shape[0] else x
    return jax.jit(lambda t: jax.tree.map(one, t), out_shardings=self.runs)(tree)

  def get(self, tree):
    """Host copies of (possibly multi-host) global arrays."""
    if jax.process_count() == 1:
      return jax.device_get(tree)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return multihost_utils.process_allgather(tree, tiled=True)


def split_cpu(config) -> None:
  """Splits the host CPU into `config.cpu_devices` JAX devices (at most `num_seeds`, so that a
  variant's seeds need no padding); must run before JAX starts its backends (a process that already
  started them keeps its devices, with a warning)."""
  count = min(config.cpu_devices, config.num_seeds)
  if count <= 0:
    return
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:
    if len(jax.devices('cpu')) != count:
      logging.warning('cpu_devices=%d: JAX started with %d CPU device(s) in this process already; keeping them.',
                      count, len(jax.devices('cpu')))


def calls_size(config, devices: Devices, runs: int) -> int:
  """Runs per call: one per device on a split CPU (`cpu_devices`), else `runs_per_call` (0: all)."""
  if devices.platform == 'cpu' and config.cpu_devices > 0:
    return devices.count
  return config.runs_per_call or runs


def _programs(config, devices: Devices) -> List[Program]:
  """One program per group and slice of at most `calls_size` runs (variants x seeds). Slices of a
  group share one jitted function (and its compilation when they have the same size) and run one
  after another. Each slice is padded to a multiple of the devices with copies of its last run."""
  experiment_cls = experiments.get(config.experiment)
  programs = []
  root = jax.random.PRNGKey(config.seed)
  donate = (0,) if devices.platform != 'cpu' else ()
  for group in config_lib.groups(config):
    experiment = experiment_cls(group.config, group)
    init_one = jax.vmap(experiment.init)
    init = jax.jit(lambda k, h, s, f=init_one: (f(k, h, s), jnp.ones(s.shape, bool)), out_shardings=devices.runs)
    run_chunk = jax.jit(_guard(experiment.run_chunk), donate_argnums=donate, out_shardings=devices.runs)
    runs = [(v, s, h) for v, h in zip(group.variants, group.hparams) for s in range(config.num_seeds)]
    size = calls_size(config, devices, len(runs))
    for start in range(0, len(runs), size):
      part = runs[start:start + size]
      padded = part + [part[-1]] * (-len(part) % devices.count)
      seeds = np.asarray([s for _, s, _ in padded], np.int32)
      # Seed s gets the same key in every variant: paired comparisons, same data streams.
      keys = np.asarray(jax.vmap(jax.random.fold_in, (None, 0))(root, seeds))
      hparams = {k: np.asarray([h[k] for _, _, h in padded], np.float32) for k in padded[0][2]}
      args = devices.put((keys, hparams, seeds), devices.runs)
      programs.append(Program(
          group=group, experiment=experiment, variants=[v for v, _, _ in part], seeds=[s for _, s, _ in part],
          init=lambda i=init, a=args: i(*a), run_chunk=run_chunk, padded=len(padded)))
  return programs


OUTPUTS = ('config.json', 'metrics.csv', 'checkpoints', 'figures', 'wandb_id', 'wandb')


def _write_atomic(path: str, text: str) -> None:
  """Writes a whole file or nothing (a kill mid-write leaves the old file or none)."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def prepare_workdir(workdir: str, config, fresh: bool = False) -> bool:
  """Creates the workdir, checks that it is writable and that it holds no run of another config
  (`fresh`: deletes a previous run's outputs instead). Returns whether it created the directory."""
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, '.write_test')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise config_lib.ConfigError(f'--workdir={workdir}: not writable ({e.strerror}); choose a directory '
                                 'you can write to.') from None
  if fresh:
    for name in OUTPUTS:
      path = os.path.join(workdir, name)
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)
  saved = os.path.join(workdir, 'config.json')
  if os.path.exists(saved):
    try:
      with open(saved) as f:
        previous = json.load(f)
    except ValueError:
      raise config_lib.ConfigError(f'--workdir={workdir}: config.json is not readable JSON; pass --fresh to '
                                   'start this workdir over.') from None
    differ = config_lib.differing_keys(previous, json.loads(config.to_json()))
    if differ:
      raise config_lib.ConfigError(
          f'--workdir={workdir} holds a run of a different config (keys that differ: '
          f'{", ".join(differ)}); use another workdir, or pass --fresh to delete its outputs and start over.')
  return created


class _Wandb:
  """W&B curves: per variant and metric, the mean and standard error over seeds per chunk, and the
  progress (chunk, rate, ETA) that the log line shows."""

  def __init__(self, config, workdir: str):
    self.run = None
    if config.wandb.mode == 'disabled':
      return
    import wandb  # pylint: disable=g-import-not-at-top
    id_file = os.path.join(workdir, 'wandb_id')
    run_id = open(id_file).read().strip() if os.path.exists(id_file) else wandb.util.generate_id()
    _write_atomic(id_file, run_id)
    self.run = wandb.init(
        project=config.wandb.project, entity=config.wandb.entity or None,
        group=config.wandb.group or config.experiment, name=config.wandb.name or None,
        config=config.to_dict(), mode=config.wandb.mode, dir=workdir, id=run_id, resume='allow')

  def log(self, step: int, values: Dict[str, float]) -> None:
    if self.run is not None:
      self.run.log(values, step=step)

  def finish(self, exit_code: int = 0) -> None:
    if self.run is not None:
      self.run.finish(exit_code=exit_code)


def _rows(program: Program, step: int, values: Dict[str, np.ndarray], keep: np.ndarray) -> List[str]:
  """CSV rows of the real runs that are kept (alive), padding dropped."""
  rows = []
  for metric, array in values.items():
    array = np.asarray(array).reshape(-1)[:len(program.variants)]
    for variant, seed, value, k in zip(program.variants, program.seeds, array, keep):
      if k:
        rows.append(f'{variant},{seed},{step},{metric},{float(value)!r}\n')
  return rows


def _summaries(variants: List[str], values: Dict[str, List[np.ndarray]]) -> Dict[str, float]:
  """Mean and standard error over seeds per variant and metric, from the values of all programs."""
  out = {}
  for metric, arrays in values.items():
    array = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a, _ in arrays])
    runs = np.asarray([v for _, names in arrays for v in names])
    for variant in sorted(set(variants)):
      v = array[runs == variant]
      if not len(v):
        continue
      out[f'{variant}/{metric}'] = float(v.mean())
      out[f'{variant}/{metric}_se'] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
  return out


class _Signals:
  """SIGTERM and SIGINT set a flag that the loop reads after each chunk (it then checkpoints and
  stops); a second signal acts at once, as without this handler."""

  def __init__(self):
    self.signum = None
    self.previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self.previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      self.__exit__()
      os.kill(os.getpid(), signum)
      return
    self.signum = signum
    logging.warning('signal %d: finishing the current chunk, then checkpointing and stopping '
                    '(send it again to stop at once).', signum)

  def __exit__(self, *args):
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)
    self.previous = {}


def _check_platform(config) -> None:
  """`config.platform` ('' = JAX's default) names the devices the run uses; they and `num_devices`
  must exist."""
  try:
    available = jax.devices(config.platform or None)
  except RuntimeError:
    raise config_lib.ConfigError(
        f'platform: the config asks for {config.platform!r} but JAX sees only {jax.default_backend()!r} devices '
        f'({jax.devices()[0].device_kind}); install the accelerator\'s JAX (e.g. pip install -e ".[cuda12]" for '
        "NVIDIA GPUs), check that the device is visible (nvidia-smi, CUDA_VISIBLE_DEVICES), or set "
        "--config.platform='' to run on what is there.") from None
  if config.num_devices > len(available):
    raise config_lib.ConfigError(
        f'num_devices: {config.num_devices} asked for but JAX sees {len(available)} {available[0].platform} '
        'device(s); set --config.num_devices=0 to use all of them.')


def _initialize_distributed(config) -> None:
  """jax.distributed.initialize for multi-host runs when `config.distributed.initialize` (empty
  fields are auto-detected from the cluster environment, e.g. SLURM)."""
  dist = config.distributed
  if not dist.initialize or jax.distributed.is_initialized():
    return
  jax.distributed.initialize(
      coordinator_address=dist.coordinator_address or None,
      num_processes=dist.num_processes if dist.num_processes > 0 else None,
      process_id=dist.process_id if dist.process_id >= 0 else None)


def _out_of_memory(error: Exception, program: Program, devices: Devices, args) -> config_lib.ConfigError:
  """The device OOM error as one line: how many runs per call/device it tried and how many would fit
  (estimated from the compiled program's memory analysis and the device's memory, when both are
  known; otherwise half of what failed)."""
  per_device = program.padded // devices.count
  fit, how = max(1, per_device // 2), 'at most'
  try:
    stats = devices.mesh.devices.flat[0].memory_stats() or {}
    analysis = program.run_chunk.lower(*args).compile().memory_analysis()
    need = analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes \
        - analysis.alias_size_in_bytes
    if stats.get('bytes_limit') and need > 0:
      fit, how = max(0, int(0.9 * stats['bytes_limit'] / (need / per_device))), 'about'
  except Exception:  # pylint: disable=broad-except
    pass
  first_line = str(error).strip().splitlines()[0][:200]
  return config_lib.ConfigError(
      f'runs_per_call: the device ran out of memory with {program.padded} runs per call '
      f'({per_device} per device on {devices.count} device(s)); {how} {fit} runs per device would fit: '
      f'set --config.runs_per_call={max(1, fit) * devices.count} (XLA: {first_line}).')


def _call(fn, program, devices, *args):
  try:
    return fn(*args)
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' in str(e):
      raise _out_of_memory(e, program, devices, args) from None
    raise


def run(config, workdir: str, *, stop_after_chunks: Optional[int] = None, figures: bool = True,
        fresh: bool = False) -> Dict[str, Any]:
  """Runs (or resumes) an experiment into `workdir`. `stop_after_chunks` ends the launch early
  after that many chunks of this launch (with a checkpoint), as an interruption would; `fresh`
  deletes a previous run's outputs first. SIGTERM/SIGINT end the launch after the current chunk
  with a checkpoint (raises Interrupted). Returns a summary: chunks done, seconds, examples per
  second, non-finite runs."""
  experiment_cls = experiments.get(config.experiment)
  config_lib.validate(config, experiment_cls)
  split_cpu(config)                 # before anything touches the backend
  _initialize_distributed(config)
  _check_platform(config)
  lead = jax.process_index() == 0    # multi-host: only process 0 writes files (orbax syncs itself)
  workdir = os.path.abspath(workdir)
  created = prepare_workdir(workdir, config, fresh) if lead else False
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('ddl: workdir ready')
  devices = Devices(config)
  try:
    data = devices.put(experiment_cls.load_data(config), devices.replicated)   # once, before any compilation
  except (ValueError, FileNotFoundError) as e:   # a missing or mismatched data set
    if created and not os.listdir(workdir):
      os.rmdir(workdir)
    raise config_lib.ConfigError(str(e)) from None
  programs = _programs(config, devices)
  num_chunks = max(p.experiment.num_chunks for p in programs)   # groups may stop earlier
  logging.info('%d runs in %d call(s) per chunk, over %d device(s) (%d padding runs).',
               sum(len(p.variants) for p in programs), len(programs), devices.count,
               sum(p.padded - len(p.variants) for p in programs))
  try:
    states = [_call(p.init, p, devices) for p in programs]
  except config_lib.ConfigError:   # out of memory
    if created and not os.listdir(workdir):
      os.rmdir(workdir)
    raise
  with _quiet():
    manager = ocp.CheckpointManager(
        os.path.join(workdir, 'checkpoints'),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True))
  csv_path = os.path.join(workdir, 'metrics.csv')
  calls = [len(p.variants) for p in programs]   # runs per call, recorded with each checkpoint
  start = 0
  if manager.latest_step() is not None:
    start = manager.latest_step()
    with _quiet():
      meta = manager.restore(start, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if meta.get('calls', calls) != calls:
      raise config_lib.ConfigError(
          f'--workdir={workdir}: its checkpoint holds calls of {meta["calls"]} runs, this launch makes calls of '
          f'{calls} ({devices.count} {devices.platform} device(s), cpu_devices={config.cpu_devices}); resume on the '
          'platform that started the run, or pass --fresh to start over.')
    with _quiet():
      restored = manager.restore(start, args=ocp.args.Composite(
          state=ocp.args.StandardRestore([devices.unpadded_target(s, len(p.variants))
                                          for p, s in zip(programs, states)])))
    states = [devices.pad(devices.rewrap(tuple(s), t), p.padded) for p, s, t in zip(programs, restored.state, states)]
    if lead:
      with open(csv_path, 'r+') as f:
        f.truncate(meta['csv_bytes'])
    logging.info('Resumed %s at chunk %d/%d.', workdir, start, num_chunks)
  elif lead:
    _write_atomic(csv_path, METRICS_HEADER)
    _write_atomic(os.path.join(workdir, 'config.json'), config.to_json(indent=2))
  alive = [np.asarray(devices.get(s[1]))[:len(p.variants)] for p, s in zip(programs, states)]
  wandb_logger = _Wandb(config, workdir) if lead else _Wandb(_no_wandb(config), workdir)
  examples = 0
  end = num_chunks if stop_after_chunks is None else min(num_chunks, start + stop_after_chunks)
  began = time.time()
  chunk = start
  with open(csv_path if lead else os.devnull, 'a') as csv, _Signals() as signals:
    try:
      for chunk in range(start, end):
        step = programs[0].experiment.chunk_step(chunk)
        collected, chunk_examples = collections.defaultdict(list), 0
        for i, program in enumerate(programs):
          if chunk >= program.experiment.num_chunks:
            continue
          states[i], values = _call(program.run_chunk, program, devices, states[i], data)
          values, now_alive = devices.get((values, states[i][1]))
          now_alive = np.asarray(now_alive)[:len(program.variants)]
          for j in np.flatnonzero(alive[i] & ~now_alive):
            variant, seed = program.variants[j], program.seeds[j]
            logging.warning('variant %s seed %d: non-finite loss or parameters in chunk %d (steps %d..%d); its '
                            'curve stops there (metric nonfinite in metrics.csv), the other runs go on.',
                            variant, seed, chunk + 1, programs[0].experiment.chunk_step(chunk - 1) if chunk else 0,
                            step)
            csv.write(f'{variant},{seed},{step},nonfinite,1.0\n')
          alive[i] = now_alive
          values = {m: v for m, v in values.items() if chunk % program.experiment.metric_every.get(m, 1) == 0}
          csv.writelines(_rows(program, step, values, alive[i]))
          chunk_examples += program.experiment.examples_per_chunk * int(alive[i].sum())
          for metric, array in values.items():
            array = np.asarray(array).reshape(-1)[:len(program.variants)]
            collected[metric].append((array[alive[i]], [v for v, k in zip(program.variants, alive[i]) if k]))
        csv.flush()
        done = chunk + 1 - start
        elapsed = time.time() - began
        examples += chunk_examples
        rate = examples / elapsed
        eta = elapsed / done * (end - chunk - 1)
        dead = sum(int((~a).sum()) for a in alive)
        logging.info('chunk %d/%d  step %d  %.0f examples/s (all runs)  elapsed %.0fs  ETA %.0fs%s',
                     chunk + 1, num_chunks, step, rate, elapsed, eta, f'  non-finite runs {dead}' if dead else '')
        progress = {'progress/chunk': chunk + 1, 'progress/examples_per_sec': rate, 'progress/elapsed_sec': elapsed,
                    'progress/eta_sec': eta, 'progress/nonfinite_runs': dead}
        wandb_logger.log(step, {**_summaries([v for p in programs for v in p.variants], collected), **progress})
        stop = signals.signum
        if jax.process_count() > 1:   # every host stops at the same chunk when any of them was signalled
          stop = int(np.max(devices.get(np.asarray([stop or 0])))) or None
        if (chunk + 1) % config.checkpoint_every == 0 or chunk + 1 == end or stop is not None:
          if lead:
            os.fsync(csv.fileno())
          with _quiet():
            saved = [devices.unpad(s, len(p.variants)) for p, s in zip(programs, states)]
            meta = {'csv_bytes': csv.tell(), 'calls': calls}
            manager.save(chunk + 1, args=ocp.args.Composite(
                state=ocp.args.StandardSave(saved), meta=ocp.args.JsonSave(meta)), force=True)
            manager.wait_until_finished()
        if stop is not None and chunk + 1 < end:
          raise Interrupted(chunk + 1, num_chunks, stop)
    except BaseException as e:
      wandb_logger.finish(exit_code=1)
      if isinstance(e, config_lib.ConfigError) and start == 0 and manager.latest_step() is None and lead:
        _remove_outputs(workdir, created)   # e.g. out of memory in the first chunk: nothing half-written
      raise
  wandb_logger.finish()
  elapsed = time.time() - began
  if figures and end == num_chunks and lead:
    plotting.plot_workdir(workdir)
  return dict(chunks_done=end, num_chunks=num_chunks, seconds=elapsed,
              examples_per_sec=examples / max(elapsed, 1e-9),
              nonfinite_runs=sum(int((~a).sum()) for a in alive))


def _no_wandb(config):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.wandb.mode = 'disabled'
  return config


def _remove_outputs(workdir: str, created: bool) -> None:
  for name in OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
      os.remove(path)
  if created and not os.listdir(workdir):
    os.rmdir(workdir)
