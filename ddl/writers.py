"""What a launch writes as it goes: metrics.csv (long form, one row per logged value), the W&B curves
(mean and standard error over seeds per variant) and the progress line of every chunk."""
import collections
import contextlib
import os
import time
import zlib
from typing import Any, Dict, List, Optional

import numpy as np
from absl import logging

from ddl import config as config_lib
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
  uninterrupted run's; `sync` makes the rows durable and returns that byte count, with the CRC-32 of
  the bytes written (kept as they are written), for a checkpoint; `cut` checks it, so a metrics.csv
  edited since the checkpoint is refused rather than resumed or plotted."""

  def __init__(self, workdir: str, lead: bool):
    self.lead = lead
    self.path = os.path.join(workdir, 'metrics.csv') if lead else os.devnull
    self.file = None
    self.crc = zlib.crc32(METRICS_HEADER.encode())

  def create(self) -> None:
    """The header alone, written atomically (a new run)."""
    if self.lead:
      workdir_lib.write_atomic(self.path, METRICS_HEADER)

  def cut(self, size: int, crc32: Optional[int]) -> None:
    """Drops the rows written after the checkpoint being resumed, which recorded the file's `size` and
    the CRC-32 of those bytes (None: a checkpoint from before the CRC; the bytes are taken as they
    are). Raises ConfigError when the file is missing, shorter or other than the checkpoint saw."""
    if not self.lead:   # its rows go nowhere; process 0's meta data is the one orbax keeps
      self.crc = crc32 or 0
      return
    fresh = 'restore it or pass --fresh to start the run over'
    if not os.path.isfile(self.path):
      raise config_lib.ConfigError(f'{self.path} is missing but the workdir holds checkpoints; {fresh}.')
    if os.path.getsize(self.path) < size:
      raise config_lib.ConfigError(f'{self.path} has {os.path.getsize(self.path)} bytes, fewer than the {size} its '
                                   f'last checkpoint recorded: it was cut or edited; {fresh}.')
    found = file_crc32(self.path, size)
    if crc32 is not None and found != crc32:
      raise config_lib.ConfigError(f'{self.path} differs from what the run wrote up to its last checkpoint (first '
                                   f'{size} bytes, CRC-32 {found:#010x}, expected {crc32:#010x}): it was edited; '
                                   f'{fresh}.')
    with open(self.path, 'r+') as f:
      f.truncate(size)
    self.crc = found

  def __enter__(self):
    self.file = open(self.path, 'a', encoding='utf-8')
    return self

  def __exit__(self, *args):
    self.file.close()

  def _append(self, lines: List[str]) -> None:
    text = ''.join(lines)
    self.file.write(text)
    self.crc = zlib.crc32(text.encode('utf-8'), self.crc)

  def write(self, program, step: int, values: Dict[str, np.ndarray], keep: np.ndarray) -> None:
    self._append(rows(program, step, values, keep))

  def mark_nonfinite(self, program, stopped: np.ndarray, chunk: int, first_step: int, step: int) -> None:
    """Logs and marks (metric `nonfinite`, value 1) the runs whose state turned NaN/inf in `chunk`."""
    for j in np.flatnonzero(stopped):
      variant, seed = program.variants[j], program.seeds[j]
      logging.warning('variant %s seed %d: non-finite loss or parameters in chunk %d (steps %d..%d); its '
                      'curve stops there (metric nonfinite in metrics.csv), the other runs go on.',
                      variant, seed, chunk + 1, first_step, step)
      self._append([f'{variant},{seed},{step},nonfinite,1.0\n'])

  def flush(self) -> None:
    self.file.flush()

  def sync(self) -> Dict[str, int]:
    """Flushed to disk; returns the file's size in bytes and the CRC-32 of those bytes."""
    if self.lead:
      os.fsync(self.file.fileno())
    return {'size': self.file.tell(), 'crc32': self.crc}


def file_crc32(path: str, size: int, block: int = 1 << 24) -> int:
  """CRC-32 of the first `size` bytes of a file, read in blocks."""
  crc = 0
  with open(path, 'rb') as f:
    while size > 0:
      data = f.read(min(block, size))
      if not data:
        break
      crc, size = zlib.crc32(data, crc), size - len(data)
  return crc


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
