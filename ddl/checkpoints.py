"""Checkpoints (orbax): the real runs' states of every program (padding dropped, so a run can resume on
another number of devices), with the byte count of metrics.csv at that moment and the sizes of the
calls that wrote them (a resume with another call layout is refused). Saves are synchronous, and
orbax writes them atomically."""
import contextlib
import os
from typing import List, Optional, Tuple

import orbax.checkpoint as ocp
from absl import logging

from ddl import config as config_lib


@contextlib.contextmanager
def quiet():
  """Keeps orbax's per-save INFO lines out of the progress log."""
  logger = logging.get_absl_logger()
  level = logger.level            # restored as it was (set_verbosity would pin an unset level to WARNING)
  logger.setLevel(logging.converter.absl_to_standard(logging.WARNING))
  try:
    yield
  finally:
    logger.setLevel(level)


def saved_calls(workdir: str) -> Optional[List[int]]:
  """The call sizes recorded by the last checkpoint of `workdir`, None without one (read before the
  programs are built: a resume keeps them)."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return None
  with quiet():
    manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
    latest = manager.latest_step()
    if latest is None:
      return None
    return manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta.get('calls')


class Checkpoints:
  """The checkpoints of `workdir`, for programs making calls of `calls` runs each."""

  def __init__(self, workdir: str, calls: List[int]):
    self.workdir, self.calls = workdir, calls
    with quiet():
      self.manager = ocp.CheckpointManager(
          os.path.join(workdir, 'checkpoints'),
          options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True))

  def latest(self) -> Optional[int]:
    """The number of chunks done at the last complete checkpoint, None when there is none."""
    return self.manager.latest_step()

  def restore(self, chunks: int, programs, states, devices, cpu_devices: int) -> Tuple[list, int]:
    """The programs' states at the checkpoint after `chunks` chunks, padded and sharded like the
    template `states` (fresh initial states), and the byte count of metrics.csv it recorded."""
    with quiet():
      meta = self.manager.restore(chunks, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if meta.get('calls', self.calls) != self.calls:
      raise config_lib.ConfigError(
          f'--workdir={self.workdir}: its checkpoint holds calls of {meta["calls"]} runs, this launch makes calls '
          f'of {self.calls} ({devices.count} {devices.platform} device(s), cpu_devices={cpu_devices}); resume on '
          'the platform that started the run, or pass --fresh to start over.')
    with quiet():
      restored = self.manager.restore(chunks, args=ocp.args.Composite(
          state=ocp.args.StandardRestore([devices.unpadded_target(s, len(p.variants))
                                          for p, s in zip(programs, states)])))
    states = [devices.pad(devices.rewrap(tuple(s), t), p.padded) for p, s, t in zip(programs, restored.state, states)]
    return states, meta['csv_bytes']

  def save(self, chunks: int, programs, states, devices, csv_bytes: int) -> None:
    """A checkpoint after `chunks` chunks; `csv_bytes`: the size of metrics.csv, synced, at that point."""
    with quiet():
      saved = [devices.unpad(s, len(p.variants)) for p, s in zip(programs, states)]
      meta = {'csv_bytes': csv_bytes, 'calls': self.calls}
      self.manager.save(chunks, args=ocp.args.Composite(
          state=ocp.args.StandardSave(saved), meta=ocp.args.JsonSave(meta)), force=True)
      self.manager.wait_until_finished()
