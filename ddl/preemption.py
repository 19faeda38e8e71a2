"""Preemption: SIGTERM or SIGINT end a launch after the current chunk, with a checkpoint; every host
stops at the same chunk; a second signal stops at once."""
import os
import signal
import threading
from typing import Optional

import jax
import numpy as np
from absl import logging


class Interrupted(Exception):
  """SIGTERM or SIGINT ended the launch after a checkpoint; relaunching resumes."""

  def __init__(self, chunk: int, num_chunks: int, signum: int):
    super().__init__(f'interrupted by signal {signum} after chunk {chunk}/{num_chunks} (checkpointed)')
    self.chunk, self.num_chunks, self.signum = chunk, num_chunks, signum


class Signals:
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

  def received(self, devices) -> Optional[int]:
    """The signal that asks to stop after this chunk, or None. With several hosts, every host stops
    at the same chunk when any of them was signalled."""
    stop = self.signum
    if jax.process_count() > 1:
      stop = int(np.max(devices.get(np.asarray([stop or 0])))) or None
    return stop
