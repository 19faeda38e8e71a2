"""The host side of Atari (`ddl.rl.atari`): ALE emulators that take each run's state, step it as Dopamine's
AtariPreprocessing does and give it back, batched over runs, in this process or spread over worker processes.

ALE holds Python's GIL while it emulates (measured: two threads take as long as one), so several cores need
several processes: `Pool` splits a batch of runs into contiguous shares, one per worker process, each with its
own `Emulators` (this module imports no JAX, so workers start light). Each run's state travels with
it, so the result does not depend on the number of workers.
"""
import atexit
import dataclasses
import functools
import json
import os
import pickle
import subprocess
import sys
import threading
from typing import Dict, Tuple

import numpy as np

from ddl.rl import host_pool

SCREEN = (210, 160)


@dataclasses.dataclass(frozen=True)
class Settings:
  """The preprocessing (Dopamine's AtariPreprocessing and Runner, Atari-100k's values)."""
  frame_skip: int = 4
  frame_stack: int = 4
  size: int = 84
  terminal_on_life_loss: bool = True
  max_episode_steps: int = 27_000
  max_noops: int = 30             # a game starts with U{0, ..., max_noops - 1} no-op steps (0: none)
  sticky_actions: float = 0.0     # ALE's repeat_action_probability (Machado et al. 2018 use 0.25)


class Emulators:
  """One process's side of a game: one ALEInterface into which each run's state is restored in turn (ALE holds
  the GIL while it emulates, so threads would not run side by side), and the batched reset and step."""

  def __init__(self, game: str, settings: Settings):
    import ale_py  # pylint: disable=g-import-not-at-top
    import cv2  # pylint: disable=g-import-not-at-top
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self.ale_py, self.cv2 = ale_py, cv2
    self.game, self.settings = game, settings
    self.slot = [self.make_ale()]
    self.actions = [int(a.value) for a in self.slot[0].getMinimalActionSet()]
    atexit.register(self.slot.clear)   # ALE's objects go before its module does (no leak report at exit)
    # the serialized state's size varies by a few bytes as the game goes (its counters): room to spare
    self.state_bytes = -(-(len(self.slot[0].cloneState(include_rng=True).serialize()) + 4096) // 1024) * 1024

  def make_ale(self, seed: int = 0):
    ale = self.ale_py.ALEInterface()
    ale.setInt('random_seed', int(seed))
    ale.setFloat('repeat_action_probability', float(self.settings.sticky_actions))
    ale.loadROM(self.ale_py.roms.get_rom_path(self.game))
    return ale

  def _save(self, ale, out: np.ndarray) -> int:
    raw = ale.cloneState(include_rng=True).serialize()
    if len(raw) > out.shape[-1]:
      raise RuntimeError(f'ALE state of {self.game} grew to {len(raw)} bytes, over the {out.shape[-1]} kept for it '
                         '(ddl.rl.ale_host.Emulators.state_bytes): raise the margin there')
    out[:len(raw)] = np.frombuffer(raw, np.uint8)
    out[len(raw):] = 0
    return len(raw)

  def _frame(self, screens: np.ndarray) -> np.ndarray:
    """Dopamine's _pool_and_resize: the buffers' maximum (into the first), resized by INTER_AREA."""
    np.maximum(screens[0], screens[1], out=screens[0])
    size = self.settings.size
    return self.cv2.resize(screens[0], (size, size), interpolation=self.cv2.INTER_AREA)

  def _start_game(self, ale, screens: np.ndarray) -> Tuple[int, np.ndarray]:
    """Dopamine's reset: the first screen in buffer 0, buffer 1 zeros: (lives, frame)."""
    ale.getScreenGrayscale(screens[0])
    screens[1] = 0
    return ale.lives(), self._frame(screens)

  def _act(self, ale, screens: np.ndarray, action: int, lives: int):
    """One agent step (Dopamine's AtariPreprocessing.step): (reward, terminal, game_over, lives, frame)."""
    skip = self.settings.frame_skip
    reward, terminal, game_over = 0.0, False, False
    for t in range(skip):
      reward += ale.act(self.actions[action])
      game_over = ale.game_over()
      new_lives = ale.lives()
      terminal = game_over or (self.settings.terminal_on_life_loss and new_lives < lives)
      lives = new_lives
      if terminal:
        break
      if t >= skip - 2:
        ale.getScreenGrayscale(screens[t - (skip - 2)])
    return reward, terminal, game_over, lives, self._frame(screens)

  def _new_game(self, ale, screens: np.ndarray, noops: int) -> Tuple[int, np.ndarray]:
    """A game's start (Dopamine's `_initialize_episode`): reset, then `noops` no-op steps, resetting again at
    a terminal among them: (lives, frame)."""
    ale.reset_game()
    lives, frame = self._start_game(ale, screens)
    for _ in range(noops):
      _, terminal, _, lives, frame = self._act(ale, screens, 0, lives)
      if terminal:
        ale.reset_game()
        lives, frame = self._start_game(ale, screens)
    return lives, frame

  def _outputs(self, n: int) -> Dict[str, np.ndarray]:
    s = self.settings.size
    return dict(bytes=np.zeros((n, self.state_bytes), np.uint8), size=np.zeros((n,), np.int32),
                screens=np.zeros((n, 2) + SCREEN, np.uint8), lives=np.zeros((n,), np.int32),
                frame=np.zeros((n, s, s), np.uint8), start_frame=np.zeros((n, s, s), np.uint8),
                reward=np.zeros((n,), np.float32), terminal=np.zeros((n,), bool), game_over=np.zeros((n,), bool))

  def reset(self, seeds: np.ndarray, noops: np.ndarray):
    """A new emulator per run (ALE's random generator seeded by the run's seed), at a game's start after
    `noops` no-op steps: (state bytes (n, B), sizes, screens (n, 2, 210, 160), lives, frames (n, 84, 84))."""
    n = seeds.shape[0]
    out = self._outputs(n)
    for i in range(n):
      ale = self.make_ale(seeds[i])
      out['lives'][i], out['frame'][i] = self._new_game(ale, out['screens'][i], int(noops[i]))
      out['size'][i] = self._save(ale, out['bytes'][i])
    return out['bytes'], out['size'], out['screens'], out['lives'], out['frame']


  def step(self, state_bytes, sizes, screens, lives, actions, time_up, noops, active):
    """Batched step and, where the game ended (game over, or `time_up`), a new game (`noops` no-op steps):
    outputs as `reset` plus the stepped frame, the start frame (the stepped one where the game goes on),
    reward (the sum over the skipped frames, unclipped), terminal (game over, or a lost life) and game_over.
    Runs not `active` are not emulated: their state comes back as it was, with zero frames and reward."""
    out = self._outputs(actions.shape[0])
    out['screens'][:] = screens
    ale = self.slot[0]
    for i in range(actions.shape[0]):
      if not active[i]:
        out['bytes'][i], out['size'][i], out['lives'][i] = state_bytes[i], sizes[i], lives[i]
        continue
      ale.restoreState(self.ale_py.ALEState(state_bytes[i, :sizes[i]].tobytes()))
      buffers = out['screens'][i]
      reward, terminal, game_over, now, out['frame'][i] = self._act(ale, buffers, int(actions[i]), int(lives[i]))
      out['reward'][i], out['terminal'][i], out['game_over'][i] = reward, terminal, game_over
      if game_over or time_up[i]:
        now, out['start_frame'][i] = self._new_game(ale, buffers, int(noops[i]))
      else:
        out['start_frame'][i] = out['frame'][i]
      out['lives'][i] = now
      out['size'][i] = self._save(ale, out['bytes'][i])
    return tuple(out[k] for k in ('bytes', 'size', 'screens', 'lives', 'frame', 'start_frame', 'reward', 'terminal',
                                  'game_over'))


class Pool:
  """A game's emulators over `processes` worker processes (1: this process): `reset` and `step` as
  `Emulators`', each run's share sent to one worker. A worker is `python -m ddl.rl.ale_host` (not
  multiprocessing, whose spawned children re-import the launching script): it reads pickled
  (method, arrays) requests on its stdin and writes the results on its stdout until its stdin closes."""

  def __init__(self, game: str, settings: Settings, processes: int):
    self.local = Emulators(game, settings)
    self.actions, self.state_bytes = self.local.actions, self.local.state_bytes
    self.game, self.processes = game, processes
    self._lock = threading.Lock()   # one request at a time (on the emulator here, or on the workers' pipes)
    self._broken = ''               # why the workers can no longer serve, once one ended
    self._workers = []
    if processes > 1:
      spec = json.dumps([game, dataclasses.asdict(settings)])
      self._workers = [subprocess.Popen([sys.executable, '-m', 'ddl.rl.ale_host', spec], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env={**os.environ, 'PYTHONPATH': _ROOT + os.pathsep
                                                                     + os.environ.get('PYTHONPATH', '')})
                       for _ in range(processes)]
      atexit.register(self.close)

  def close(self) -> None:
    """Ends the worker processes (at exit)."""
    for worker in self._workers:
      worker.stdin.close()
    for worker in self._workers:
      try:
        worker.wait(timeout=10)
      except subprocess.TimeoutExpired:
        worker.kill()
    self._workers = []

  def _batched(self, method: str, *arrays) -> Tuple[np.ndarray, ...]:
    n = arrays[0].shape[0]
    with self._lock:
      if self._broken:
        raise RuntimeError(self._broken)
      if not self._workers or n == 1:
        return getattr(self.local, method)(*arrays)
      return self._on_workers(method, n, arrays)

  def _on_workers(self, method: str, n: int, arrays) -> Tuple[np.ndarray, ...]:
    parts = host_pool.shares(n, len(self._workers))
    try:
      for worker, share in zip(self._workers, parts):
        pickle.dump((method, [a[share] for a in arrays]), worker.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        worker.stdin.flush()
      results = [pickle.load(worker.stdout) for worker in self._workers[:len(parts)]]
    except (EOFError, OSError):
      ended = [w.pid for w in self._workers if w.poll() is not None]
      self._broken = (f'ALE worker process(es) {ended} of {self.game} ended (their error, if any, is above); the '
                      'run cannot go on: relaunch it, it resumes from its last checkpoint')
      for worker in self._workers:   # the others may be stuck writing a result no one reads
        worker.kill()
      raise RuntimeError(self._broken) from None
    return tuple(np.concatenate(pieces) for pieces in zip(*results))

  def reset(self, seeds: np.ndarray, noops: np.ndarray):
    return self._batched('reset', seeds, noops)

  def step(self, *arrays):
    return self._batched('step', *arrays)


@functools.lru_cache(maxsize=None)
def pool(game: str, settings: Settings, processes: int) -> Pool:
  """One Pool per game, settings and process count in a process."""
  return Pool(game, settings, processes)


def _serve(spec: str) -> None:
  """A worker process: `Emulators` of the game and settings in `spec`, serving requests on stdin."""
  game, settings = json.loads(spec)
  emulators = Emulators(game, Settings(**settings))
  stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
  while True:
    try:
      method, arrays = pickle.load(stdin)
    except EOFError:
      return
    pickle.dump(getattr(emulators, method)(*arrays), stdout, protocol=pickle.HIGHEST_PROTOCOL)
    stdout.flush()


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # ddl's parent folder

if __name__ == '__main__':
  _serve(sys.argv[1])
