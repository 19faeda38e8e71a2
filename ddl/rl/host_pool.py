"""Simulators stepped on the host's cores from inside a compiled program (`jax.pure_callback` with all
runs of a call at once): a fixed pool of threads, each owning its own simulator objects (a slot), the
runs split into contiguous shares, one per slot. Each run is independent, so results do not depend on
the thread count. Used by MuJoCo C's Ant (`ddl.rl.mujoco_host`), which releases the GIL while it steps;
`shares` also splits the Arcade Learning Environment's runs over processes (`ddl.rl.ale_host`).
"""
import concurrent.futures
from typing import Any, Callable, List

import numpy as np


class HostPool:
  """`threads` slots made by `make_slot()` (owned here for the process's life, not thread-local: XLA
  calls back on short-lived threads, and simulator objects freed at a thread's exit crash Python)."""

  def __init__(self, threads: int, make_slot: Callable[[], Any]):
    if threads < 1:
      raise ValueError(f'host threads must be >= 1, got {threads}')
    self.threads = threads
    self.slots = [make_slot() for _ in range(threads)]
    self._pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None

  def map(self, fn: Callable[[int, Any], Any], n: int) -> List[Any]:
    """[fn(i, slot) for i in range(n)], run i on the slot of its share."""
    parts = shares(n, self.threads)
    run = lambda k: [fn(i, self.slots[k]) for i in parts[k]]
    if self._pool is None or len(parts) == 1:
      return [r for k in range(len(parts)) for r in run(k)]
    return [r for f in [self._pool.submit(run, k) for k in range(len(parts))] for r in f.result()]


def shares(n: int, workers: int) -> List[np.ndarray]:
  """Runs 0..n-1 in contiguous shares, one per worker (no empty ones)."""
  return [c for c in np.array_split(np.arange(n), workers) if c.size]
