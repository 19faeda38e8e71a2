"""The run loop, once for every experiment.

Each group of variants (see `ddl.config.groups`) is one jitted, vmapped program over its
variants x seeds. The host loop advances every group by one chunk per call, appends the chunk's
metrics to `metrics.csv` (long form: variant,seed,step,metric,value), logs progress and W&B
curves, and checkpoints with orbax. Relaunching into the same workdir resumes from the last
checkpoint; metrics.csv is cut back to that checkpoint, so it ends identical to an uninterrupted
run's.
"""
import collections
import contextlib
import dataclasses
import json
import os
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


@dataclasses.dataclass
class Program:
  """One group's experiment, its runs and its compiled functions."""
  group: config_lib.Group
  experiment: Any
  variants: List[str]      # variant of each run (run axis = variants x seeds, variant-major)
  seeds: List[int]
  init: Any
  run_chunk: Any           # (states, data) -> (states, metrics), data shared by every run


@contextlib.contextmanager
def _quiet():
  """Keeps orbax's per-save INFO lines out of the progress log."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _programs(config) -> List[Program]:
  """One program per group and slice of at most `runs_per_call` runs (variants x seeds). Slices of a
  group share one jitted function (and its compilation when they have the same size) and run one
  after another."""
  experiment_cls = experiments.get(config.experiment)
  programs = []
  root = jax.random.PRNGKey(config.seed)
  donate = (0,) if jax.default_backend() != 'cpu' else ()
  for group in config_lib.groups(config):
    experiment = experiment_cls(group.config, group)
    init = jax.jit(jax.vmap(experiment.init))
    run_chunk = jax.jit(jax.vmap(experiment.run_chunk, in_axes=(0, None)), donate_argnums=donate)
    runs = [(v, s, h) for v, h in zip(group.variants, group.hparams) for s in range(config.num_seeds)]
    size = config.runs_per_call or len(runs)
    for start in range(0, len(runs), size):
      part = runs[start:start + size]
      seeds = jnp.asarray([s for _, s, _ in part])
      # Seed s gets the same key in every variant: paired comparisons, same data streams.
      keys = jax.vmap(jax.random.fold_in, (None, 0))(root, seeds)
      hparams = {k: jnp.asarray([h[k] for _, _, h in part], jnp.float32) for k in part[0][2]}
      programs.append(Program(
          group=group, experiment=experiment, variants=[v for v, _, _ in part], seeds=[s for _, s, _ in part],
          init=lambda i=init, k=keys, h=hparams, s=seeds: i(k, h, s), run_chunk=run_chunk))
  return programs


def prepare_workdir(workdir: str, config) -> bool:
  """Creates the workdir, checks that it is writable and that it holds no run of another config.
  Returns whether it created the directory."""
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
  saved = os.path.join(workdir, 'config.json')
  if os.path.exists(saved):
    with open(saved) as f:
      previous = json.load(f)
    differ = config_lib.differing_keys(previous, json.loads(config.to_json()))
    if differ:
      raise config_lib.ConfigError(
          f'--workdir={workdir} holds a run of a different config (keys that differ: '
          f'{", ".join(differ)}); use another workdir or delete this one to start fresh.')
  return created


class _Wandb:
  """W&B curves: per variant and metric, the mean and standard error over seeds per chunk."""

  def __init__(self, config, workdir: str):
    self.run = None
    if config.wandb.mode == 'disabled':
      return
    import wandb  # pylint: disable=g-import-not-at-top
    id_file = os.path.join(workdir, 'wandb_id')
    run_id = open(id_file).read().strip() if os.path.exists(id_file) else wandb.util.generate_id()
    with open(id_file, 'w') as f:
      f.write(run_id)
    self.run = wandb.init(
        project=config.wandb.project, entity=config.wandb.entity or None,
        group=config.wandb.group or config.experiment, name=config.wandb.name or None,
        config=config.to_dict(), mode=config.wandb.mode, dir=workdir, id=run_id, resume='allow')

  def log(self, step: int, values: Dict[str, float]) -> None:
    if self.run is not None:
      self.run.log(values, step=step)

  def finish(self) -> None:
    if self.run is not None:
      self.run.finish()


def _rows(program: Program, step: int, values: Dict[str, np.ndarray]) -> List[str]:
  rows = []
  for metric, array in values.items():
    for variant, seed, value in zip(program.variants, program.seeds, np.asarray(array).reshape(-1)):
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


def run(config, workdir: str, *, stop_after_chunks: Optional[int] = None, figures: bool = True) -> Dict[str, Any]:
  """Runs (or resumes) an experiment into `workdir`. `stop_after_chunks` ends the launch early
  after that many chunks of this launch (with a checkpoint), as an interruption would.
  Returns a summary: chunks done, seconds, examples per second."""
  experiment_cls = experiments.get(config.experiment)
  config_lib.validate(config, experiment_cls)
  workdir = os.path.abspath(workdir)
  created = prepare_workdir(workdir, config)
  try:
    data = jax.device_put(experiment_cls.load_data(config))   # once, before any compilation
  except (ValueError, FileNotFoundError) as e:   # a missing or mismatched data set
    if created and not os.listdir(workdir):
      os.rmdir(workdir)
    raise config_lib.ConfigError(str(e)) from None
  programs = _programs(config)
  num_chunks = max(p.experiment.num_chunks for p in programs)   # groups may stop earlier
  states = [p.init() for p in programs]
  with _quiet():
    manager = ocp.CheckpointManager(
        os.path.join(workdir, 'checkpoints'),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))
  csv_path = os.path.join(workdir, 'metrics.csv')
  start = 0
  if manager.latest_step() is not None:
    start = manager.latest_step()
    with _quiet():
      restored = manager.restore(start, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(states), meta=ocp.args.JsonRestore()))
    states = list(restored.state)
    with open(csv_path, 'r+') as f:
      f.truncate(restored.meta['csv_bytes'])
    logging.info('Resumed %s at chunk %d/%d.', workdir, start, num_chunks)
  else:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json(indent=2))
    with open(csv_path, 'w') as f:
      f.write(METRICS_HEADER)
  wandb_logger = _Wandb(config, workdir)
  examples = 0
  end = num_chunks if stop_after_chunks is None else min(num_chunks, start + stop_after_chunks)
  began = time.time()
  with open(csv_path, 'a') as csv:
    for chunk in range(start, end):
      step = programs[0].experiment.chunk_step(chunk)
      collected, chunk_examples = collections.defaultdict(list), 0
      for i, program in enumerate(programs):
        if chunk >= program.experiment.num_chunks:
          continue
        states[i], values = program.run_chunk(states[i], data)
        values = {m: v for m, v in jax.device_get(values).items()
                  if chunk % program.experiment.metric_every.get(m, 1) == 0}
        csv.writelines(_rows(program, step, values))
        chunk_examples += program.experiment.examples_per_chunk * len(program.variants)
        for metric, array in values.items():
          collected[metric].append((array, program.variants))
      csv.flush()
      wandb_logger.log(step, _summaries([v for p in programs for v in p.variants], collected))
      done = chunk + 1 - start
      elapsed = time.time() - began
      examples += chunk_examples
      rate = examples / elapsed
      eta = elapsed / done * (end - chunk - 1)
      logging.info('chunk %d/%d  step %d  %.0f examples/s (all runs)  elapsed %.0fs  ETA %.0fs',
                   chunk + 1, num_chunks, step, rate, elapsed, eta)
      if (chunk + 1) % config.checkpoint_every == 0 or chunk + 1 == end:
        os.fsync(csv.fileno())
        with _quiet():
          manager.save(chunk + 1, args=ocp.args.Composite(
              state=ocp.args.StandardSave(states), meta=ocp.args.JsonSave({'csv_bytes': csv.tell()})))
          manager.wait_until_finished()
  wandb_logger.finish()
  elapsed = time.time() - began
  if figures and end == num_chunks:
    plotting.plot_workdir(workdir)
  return dict(chunks_done=end, num_chunks=num_chunks, seconds=elapsed,
              examples_per_sec=examples / max(elapsed, 1e-9))
