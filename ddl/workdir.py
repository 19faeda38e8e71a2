"""The workdir of a launch: checked before anything is written (writable, no run of another config),
its outputs, atomic writes, and nothing half-written left behind by a refused launch."""
import contextlib
import errno
import json
import os
import shutil

from ddl import config as config_lib

OUTPUTS = ('config.json', 'metrics.csv', 'checkpoints', 'figures', 'wandb_id', 'wandb')


def write_atomic(path: str, text: str) -> None:
  """Writes a whole file or nothing (a kill mid-write leaves the old file or none)."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def prepare_workdir(workdir: str, config, fresh: bool = False) -> bool:
  """Checks that the workdir can be written and holds no run of another config (`fresh`: deletes a
  previous run's outputs instead), and creates it. A refusal leaves an existing workdir untouched.
  Returns whether it created the directory."""
  if os.path.lexists(workdir) and not os.path.isdir(workdir):
    raise config_lib.ConfigError(f'--workdir={workdir} is a file, not a directory; choose another path.')
  created = not os.path.exists(workdir)
  try:
    if created:
      os.makedirs(workdir)
    elif not os.access(workdir, os.W_OK | os.X_OK):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
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
  checkpoints = os.path.join(workdir, 'checkpoints')
  if not os.path.exists(saved) and os.path.isdir(checkpoints) and os.listdir(checkpoints):
    raise config_lib.ConfigError(f'--workdir={workdir} holds checkpoints but no config.json to check this launch '
                                 'against; restore config.json, or pass --fresh to delete its outputs and start over.')
  if os.path.exists(saved):
    try:
      with open(saved) as f:
        previous = json.load(f)
    except ValueError:
      raise config_lib.ConfigError(f'--workdir={workdir}: config.json is not readable JSON; pass --fresh to '
                                   'start this workdir over.') from None
    differ = config_lib.differing_keys(previous, json.loads(config.to_json()))
    if differ:
      new = config_lib.keys_absent(previous, differ)
      added = (f'; {", ".join(new)} came into ddl after this run was saved: if the value this launch '
               'gives it changes nothing of the run, add it with that value to config.json and relaunch') if new else ''
      raise config_lib.ConfigError(
          f'--workdir={workdir} holds a run of a different config (keys that differ: '
          f'{", ".join(differ)}){added}; use another workdir, or pass --fresh to delete its outputs and start over.')
  return created


def write_config(workdir: str, config) -> None:
  """config.json, the record that a relaunch is compared with."""
  write_atomic(os.path.join(workdir, 'config.json'), config.to_json(indent=2))


def _remove_if_new_and_empty(workdir: str, created: bool) -> None:
  if created and not os.listdir(workdir):
    os.rmdir(workdir)


@contextlib.contextmanager
def removed_if_refused(workdir: str, created: bool):
  """A ConfigError inside (a missing data set, the device out of memory) removes the workdir when
  this launch created it and nothing was written into it yet."""
  try:
    yield
  except config_lib.ConfigError:
    _remove_if_new_and_empty(workdir, created)
    raise


def remove_outputs(workdir: str, created: bool) -> None:
  """Deletes this run's outputs (and the workdir when this launch created it and it is now empty)."""
  for name in OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
      os.remove(path)
  _remove_if_new_and_empty(workdir, created)
