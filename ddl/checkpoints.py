"""Checkpoints (orbax): the real runs' states of every program (padding dropped, so a run can resume on
another number of devices), with the byte count and CRC-32 of metrics.csv at that moment and the sizes of the
calls that wrote them (a resume with another call layout is refused). Saves are synchronous, and
orbax writes them atomically. A checkpoint that cannot be read is one clear error, not a traceback."""
import contextlib
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
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
  programs are built: a resume keeps them). A damaged checkpoint is a ConfigError."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return None
  reader = Checkpoints(workdir, calls=[])
  latest = reader.latest()
  return None if latest is None else reader.meta(latest).get('calls')


def _nonempty(tree):
  """`tree` with each zero-size array (an MJX state's `act` for a model without actuator activations),
  which orbax refuses to save, as one element; `_emptied` restores them from a template."""
  def one(x):
    if int(np.prod(x.shape)) > 0:
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct((1,), x.dtype, sharding=x.sharding)
    return np.zeros((1,), x.dtype)
  return jax.tree.map(one, tree)


def _emptied(tree, template):
  """The zero-size arrays of `template` (host arrays or shapes) back in place of `_nonempty`'s stand-ins."""
  return jax.tree.map(lambda x, t: np.zeros(t.shape, t.dtype) if int(np.prod(t.shape)) == 0 else x, tree, template)


@contextlib.contextmanager
def _closed_loop_callbacks_dropped():
  """When a read fails, TensorStore still completes the reads that orbax abandoned; their callbacks
  find orbax's event loop closed and Python prints each 'Event loop is closed' as an unraisable
  exception (tracebacks around the launch's one error line). Drops exactly those during a read and,
  when it failed, from then on."""
  previous = sys.unraisablehook

  def hook(unraisable):
    if not (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)
  sys.unraisablehook = hook
  yield
  sys.unraisablehook = previous


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

  def restore(self, chunks: int, programs, states, devices, cpu_devices: int) -> Tuple[list, Dict[str, Any]]:
    """The programs' states at the checkpoint after `chunks` chunks, padded and sharded like the
    template `states` (fresh initial states), and what it recorded of metrics.csv (`MetricsCsv.cut`'s
    arguments). A checkpoint that cannot be read, or one written with other calls, is a ConfigError."""
    meta = self.meta(chunks)
    if meta.get('calls', self.calls) != self.calls:
      raise config_lib.ConfigError(
          f'--workdir={self.workdir}: its checkpoint holds calls of {meta["calls"]} runs, this launch makes calls '
          f'of {self.calls} ({devices.count} {devices.platform} device(s), cpu_devices={cpu_devices}); resume on '
          'the platform that started the run, or pass --fresh to start over.')
    targets = [devices.unpadded_target(s, len(p.variants)) for p, s in zip(programs, states)]
    restored = self._read(chunks, state=ocp.args.StandardRestore([_nonempty(t) for t in targets]))
    states = [devices.pad(devices.rewrap(_emptied(tuple(s), target), t), p.padded)
              for p, s, target, t in zip(programs, restored.state, targets, states)]
    return states, {'size': meta['csv_bytes'], 'crc32': meta.get('csv_crc32')}

  def meta(self, chunks: int) -> Dict[str, Any]:
    """The meta data of the checkpoint after `chunks` chunks (csv_bytes, csv_crc32, calls); a
    ConfigError when it cannot be read or holds no csv_bytes."""
    meta = self._read(chunks, meta=ocp.args.JsonRestore()).meta
    if not isinstance(meta, dict) or not isinstance(meta.get('csv_bytes'), int):
      raise self._damaged(chunks, f'its meta data holds no csv_bytes: {str(meta)[:100]}')
    return meta

  def _read(self, chunks: int, **items):
    """Items of the checkpoint after `chunks` chunks. Orbax and TensorStore report a damaged or
    incomplete checkpoint with many error types; each becomes one ConfigError naming the folder."""
    try:
      with quiet(), _closed_loop_callbacks_dropped():
        return self.manager.restore(chunks, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      if 'tree structures do not match' in str(e):
        raise self._other_structure(chunks, str(e)) from None
      raise self._damaged(chunks, f'{type(e).__name__}: {str(e).strip()}') from None

  def _other_structure(self, chunks: int, error: str) -> config_lib.ConfigError:
    """A checkpoint whose state has other fields than this code's (another ddl version or experiment)."""
    fields = re.findall(r'\]\.([\w.]+): - Source', error) or re.findall(r'\]\.([\w.]+):', error)
    named = f' (first: {fields[0]})' if fields else ''
    return config_lib.ConfigError(
        f'--workdir={self.workdir}: checkpoint {os.path.join(self.workdir, "checkpoints", str(chunks))} holds a '
        f'state whose fields differ from this code\'s{named}: it was written by another version of ddl; resume it '
        'with the version that wrote it, or pass --fresh to start over.')

  def _damaged(self, chunks: int, why: str) -> config_lib.ConfigError:
    folder = os.path.join(self.workdir, 'checkpoints', str(chunks))
    why = ' '.join(why.split())[:300]
    return config_lib.ConfigError(
        f'--workdir={self.workdir}: checkpoint {folder} cannot be read ({why}); it is damaged or incomplete: '
        'delete that folder to resume from the checkpoint before it (if any), or pass --fresh to start over.')

  def save(self, chunks: int, programs, states, devices, csv: Dict[str, int]) -> None:
    """A checkpoint after `chunks` chunks; `csv`: what `MetricsCsv.sync` returned at that point (the
    size of metrics.csv, synced, and the CRC-32 of its bytes)."""
    with quiet():
      saved = [_nonempty(devices.unpad(s, len(p.variants))) for p, s in zip(programs, states)]
      meta = {'csv_bytes': csv['size'], 'csv_crc32': csv['crc32'], 'calls': self.calls}
      self.manager.save(chunks, args=ocp.args.Composite(
          state=ocp.args.StandardSave(saved), meta=ocp.args.JsonSave(meta)), force=True)
      self.manager.wait_until_finished()
