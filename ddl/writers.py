"""What a launch writes as it goes: metrics.csv (long form, one row per logged value), the W&B curves
(mean and standard error over seeds per variant) and the progress line of every chunk."""
import collections
import contextlib
import os
import time
from typing import Any, Dict, List

import numpy as np
from absl import logging

from ddl import workdir as workdir_lib

METRICS_HEADER = 'variant,seed,step,metric,value\n'


def rows(program, step: int, values: Dict[str, np.ndarray], keep: np.ndarray) -> List[str]:
  """CSV rows of the real runs that are kept (alive), padding dropped."""
  out = []
  for metric, array in values.items():
    array = np.asarray(array).reshape(-1)[:len(program.variants)]
    for variant, seed, value, k in zip(program.variants, program.seeds, array, keep):
      if k:
        out.append(f'{variant},{seed},{step},{metric},{float(value)!r}\n')
  return out


class MetricsCsv:
  """metrics.csv, appended chunk by chunk; on processes other than the lead the rows go to os.devnull.
  A resumed run cuts it back to the byte count its checkpoint recorded (`cut`), so it ends as an
  uninterrupted run's; `sync` makes the rows durable and returns that byte count for a checkpoint."""

  def __init__(self, workdir: str, lead: bool):
    self.lead = lead
    self.path = os.path.join(workdir, 'metrics.csv') if lead else os.devnull
    self.file = None

  def create(self) -> None:
    """The header alone, written atomically (a new run)."""
    if self.lead:
      workdir_lib.write_atomic(self.path, METRICS_HEADER)

  def cut(self, size: int) -> None:
    """Drops the rows written after the checkpoint being resumed."""
    if self.lead:
      with open(self.path, 'r+') as f:
        f.truncate(size)

  def __enter__(self):
    self.file = open(self.path, 'a')
    return self

  def __exit__(self, *args):
    self.file.close()

  def write(self, program, step: int, values: Dict[str, np.ndarray], keep: np.ndarray) -> None:
    self.file.writelines(rows(program, step, values, keep))

  def mark_nonfinite(self, program, stopped: np.ndarray, chunk: int, first_step: int, step: int) -> None:
    """Logs and marks (metric `nonfinite`, value 1) the runs whose state turned NaN/inf in `chunk`."""
    for j in np.flatnonzero(stopped):
      variant, seed = program.variants[j], program.seeds[j]
      logging.warning('variant %s seed %d: non-finite loss or parameters in chunk %d (steps %d..%d); its '
                      'curve stops there (metric nonfinite in metrics.csv), the other runs go on.',
                      variant, seed, chunk + 1, first_step, step)
      self.file.write(f'{variant},{seed},{step},nonfinite,1.0\n')

  def flush(self) -> None:
    self.file.flush()

  def sync(self) -> int:
    """Flushed to disk; returns the file's size in bytes."""
    if self.lead:
      os.fsync(self.file.fileno())
    return self.file.tell()


class Collected:
  """One chunk's logged values of all programs, for the W&B summaries."""

  def __init__(self):
    self.values = collections.defaultdict(list)

  def add(self, program, values: Dict[str, np.ndarray], keep: np.ndarray) -> None:
    for metric, array in values.items():
      array = np.asarray(array).reshape(-1)[:len(program.variants)]
      self.values[metric].append((array[keep], [v for v, k in zip(program.variants, keep) if k]))

  def summaries(self, variants: List[str]) -> Dict[str, float]:
    return summaries(variants, self.values)


def summaries(variants: List[str], values: Dict[str, List[Any]]) -> Dict[str, float]:
  """Mean and standard error over seeds per variant and metric, from the values of all programs
  ({metric: [(values, variant of each value)]})."""
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


class Wandb:
  """W&B curves: per variant and metric, the mean and standard error over seeds per chunk, and the
  progress (chunk, rate, ETA) that the log line shows. `lead`=False (other hosts): disabled."""

  def __init__(self, config, workdir: str, lead: bool = True):
    self.run = None
    if config.wandb.mode == 'disabled' or not lead:
      return
    import wandb  # pylint: disable=g-import-not-at-top
    id_file = os.path.join(workdir, 'wandb_id')
    run_id = open(id_file).read().strip() if os.path.exists(id_file) else wandb.util.generate_id()
    workdir_lib.write_atomic(id_file, run_id)
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


class Progress:
  """Clock and counters of a launch (chunks `start`..`end`): one log line per chunk with the chunk,
  step, examples/s of all runs, elapsed time (with the evaluator's share when there is one), ETA
  and the runs stopped on NaN/inf; the same values for W&B (`progress/*`)."""

  def __init__(self, start: int, end: int, num_chunks: int, evaluator: bool):
    self.start, self.end, self.num_chunks, self.evaluator = start, end, num_chunks, evaluator
    self.examples = 0
    self.evaluate_seconds = 0.0
    self.began = time.time()

  @contextlib.contextmanager
  def evaluating(self):
    """Times an evaluator call (its results fetched to the host inside)."""
    began = time.time()
    try:
      yield
    finally:
      self.evaluate_seconds += time.time() - began

  def chunk_done(self, chunk: int, step: int, examples: int, dead: int) -> Dict[str, float]:
    done = chunk + 1 - self.start
    elapsed = time.time() - self.began
    self.examples += examples
    rate = self.examples / elapsed
    eta = elapsed / done * (self.end - chunk - 1)
    share = self.evaluate_seconds / max(elapsed, 1e-9)
    logging.info('chunk %d/%d  step %d  %.0f examples/s (all runs)  elapsed %.0fs%s  ETA %.0fs%s',
                 chunk + 1, self.num_chunks, step, rate, elapsed,
                 f' (evaluator {100 * share:.0f}%)' if self.evaluator else '', eta,
                 f'  non-finite runs {dead}' if dead else '')
    progress = {'progress/chunk': chunk + 1, 'progress/examples_per_sec': rate, 'progress/elapsed_sec': elapsed,
                'progress/eta_sec': eta, 'progress/nonfinite_runs': dead}
    if self.evaluator:
      progress['progress/evaluate_share'] = share
    return progress

  def summary(self, nonfinite_runs: int) -> Dict[str, Any]:
    """What `ddl.run.run` returns: chunks done, seconds (the evaluator's among them), examples per
    second, runs stopped on NaN/inf."""
    elapsed = time.time() - self.began
    return dict(chunks_done=self.end, num_chunks=self.num_chunks,
                seconds=elapsed, evaluate_seconds=self.evaluate_seconds,
                examples_per_sec=self.examples / max(elapsed, 1e-9), nonfinite_runs=nonfinite_runs)
