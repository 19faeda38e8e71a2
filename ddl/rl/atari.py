"""Atari 2600 games on the Arcade Learning Environment (ale-py, the emulator on the host's cores) as a
gymnax-style environment inside a compiled program: Atari-100k as DrQ(ε) plays it (Dopamine's
`atari_lib.AtariPreprocessing` and `Runner`, the settings of Agarwal et al. 2021 and Ma et al. 2024).

A step is Dopamine's: the action (an index into the game's minimal action set) repeated for
`frame_skip` = 4 frames, the rewards summed; grayscale screens of the last two frames kept in two
210x160 buffers, their maximum resized to 84x84 by OpenCV's INTER_AREA. With `terminal_on_life_loss`
(Atari-100k's setting) a lost life ends the agent's episode (a terminal transition; the frame loop
stops at it, so that step's observation pools the buffers as they were) but not the game; the game
is reset (`ale.reset_game`) at game over or after `max_episode_steps` = 27 000 agent steps (108 000
frames; a truncation). A game starts with 0..29 no-op steps (uniform, drawn from the run's key: Dopamine's
`DataEfficientAtariRunner`, max_noops 30; a terminal among them resets the game), not logged. No sticky
actions (repeat_action_probability 0): the emulator is deterministic. The observation is the agent's stack of
the last `frame_stack` = 4 frames (84, 84, 4) uint8; a new episode's stack is zeros but its first
frame (Dopamine's `_reset_state`).

Every run's emulator lives in the JAX state, so the host keeps nothing between calls: a checkpoint
resumes exactly, and results do not depend on the thread count. The emulator is ALE's full system
state with its random generator (`cloneState(include_rng=True).serialize()`, ~14.4 KB), stored as
uint8 bytes padded to a fixed size, beside the two screen buffers and the lives count. One
`jax.pure_callback` per step takes all runs of a call at once and steps them on `threads` host
threads (`ddl.rl.host_pool`), each restoring a run's state into its own ALEInterface.

Scores: `human_normalized` (the Atari-100k metric) from the human and random scores of Mnih et al.
2015 / Badia et al. 2020 as Dopamine's `atari_100k/normalization_utils.py` lists them.
"""
import atexit
import dataclasses
import functools
import importlib.util
import re
from typing import Any, Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl.rl import host_pool

SCREEN = (210, 160)
PREFIX = 'ALE/'

# (human, random) scores per game (ALE's ROM id), as Dopamine's atari_100k normalization_utils.
SCORES = {
    'alien': (7127.7, 227.8), 'amidar': (1719.5, 5.8), 'assault': (742.0, 222.4), 'asterix': (8503.3, 210.0),
    'bank_heist': (753.1, 14.2), 'battle_zone': (37187.5, 2360.0), 'boxing': (12.1, 0.1), 'breakout': (30.5, 1.7),
    'chopper_command': (7387.8, 811.0), 'crazy_climber': (35829.4, 10780.5), 'demon_attack': (1971.0, 152.1),
    'freeway': (29.6, 0.0), 'frostbite': (4334.7, 65.2), 'gopher': (2412.5, 257.6), 'hero': (30826.4, 1027.0),
    'jamesbond': (302.8, 29.0), 'kangaroo': (3035.0, 52.0), 'krull': (2665.5, 1598.0),
    'kung_fu_master': (22736.3, 258.5), 'ms_pacman': (6951.6, 307.3), 'pong': (14.6, -20.7),
    'private_eye': (69571.3, 24.9), 'qbert': (13455.0, 163.9), 'road_runner': (7845.0, 11.5),
    'seaquest': (42054.7, 68.4), 'up_n_down': (11693.2, 533.4), 'enduro': (860.5, 0.0),
    'space_invaders': (1668.7, 148.0),
}
# Ma et al. 2024's 17 games (their Table 4; Enduro and SpaceInvaders are not among Atari-100k's 26)
MA_ET_AL_GAMES = ('Alien', 'Amidar', 'Assault', 'Asterix', 'BankHeist', 'Boxing', 'Breakout', 'ChopperCommand',
                  'CrazyClimber', 'DemonAttack', 'Enduro', 'Freeway', 'KungFuMaster', 'Pong', 'RoadRunner', 'Seaquest',
                  'SpaceInvaders')


def installed() -> bool:
  """ale-py (the emulator and its ROMs) and OpenCV (the resize) are there: `pip install -e ".[atari]"`."""
  return importlib.util.find_spec('ale_py') is not None and importlib.util.find_spec('cv2') is not None


def is_atari(name: str) -> bool:
  return name.startswith(PREFIX)


def rom_id(name: str) -> str:
  """'ALE/MsPacman' (gymnasium's id) -> 'ms_pacman' (ALE's ROM id)."""
  return re.sub(r'(?<=[a-z0-9])(?=[A-Z])', '_', name[len(PREFIX):]).lower()


def game_names() -> Tuple[str, ...]:
  """The ROM ids ale-py ships."""
  from ale_py import roms  # pylint: disable=g-import-not-at-top
  return tuple(roms.get_all_rom_ids())


def human_normalized(score: jax.Array, game: str) -> jax.Array:
  """(score - random) / (human - random): 1 is a human's score, 0 a random agent's."""
  human, random = SCORES[game]
  return (score - random) / (human - random)


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
  """The host side for one game: an ALEInterface per host thread and the batched step."""

  def __init__(self, game: str, settings: Settings, threads: int):
    import ale_py  # pylint: disable=g-import-not-at-top
    import cv2  # pylint: disable=g-import-not-at-top
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self.ale_py, self.cv2 = ale_py, cv2
    self.game, self.settings = game, settings
    self.pool = host_pool.HostPool(threads, self.make_ale)
    probe = self.pool.slots[0]
    self.actions = [int(a.value) for a in probe.getMinimalActionSet()]
    atexit.register(self.pool.slots.clear)   # ALE's objects go before its module does (no leak report at exit)
    # the serialized state's size varies by a few bytes as the game goes (its counters): room to spare
    self.state_bytes = -(-(len(probe.cloneState(include_rng=True).serialize()) + 4096) // 1024) * 1024

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
                         '(ddl.rl.atari.Emulators.state_bytes): raise the margin there')
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

  def step(self, state_bytes, sizes, screens, lives, actions, time_up, noops):
    """Batched step and, where the game ended (game over, or `time_up`), a new game (`noops` no-op steps):
    outputs as `reset` plus the stepped frame, the start frame (the stepped one where the game goes on),
    reward (the sum over the skipped frames, unclipped), terminal (game over, or a lost life) and game_over."""
    out = self._outputs(actions.shape[0])
    out['screens'][:] = screens

    def one(i, ale):
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

    self.pool.map(one, actions.shape[0])
    return tuple(out[k] for k in ('bytes', 'size', 'screens', 'lives', 'frame', 'start_frame', 'reward', 'terminal',
                                  'game_over'))


@functools.lru_cache(maxsize=None)
def emulators(game: str, settings: Settings, threads: int) -> Emulators:
  """One Emulators (and thread pool) per game, settings and thread count in a process."""
  return Emulators(game, settings, threads)


@struct.dataclass
class State:
  emulator: jax.Array       # uint8 (B,): ALE's serialized state (with its random generator), zero-padded
  emulator_size: jax.Array  # int32: its length
  screens: jax.Array        # uint8 (2, 210, 160): the preprocessing's two screen buffers
  lives: jax.Array          # int32: lives at the last step
  stack: jax.Array          # uint8 (84, 84, frame_stack): the agent's observation
  steps: jax.Array          # int32: agent steps in this game (truncated at max_episode_steps)


@dataclasses.dataclass(frozen=True)
class Space:
  shape: Tuple[int, ...]


class Atari:
  """A game as a gymnax environment (reset(key, params), step(key, state, action, params), auto-reset):
  `terminated` is the agent's terminal (a lost life or game over), `truncated` the step limit;
  info['game_over'] marks a game's end (game over or truncation), where its score is complete."""

  default_params = None

  def __init__(self, name: str, settings: Settings = Settings(), threads: int = 1):
    self.name, self.game, self.settings = name, rom_id(name), settings
    self.host = emulators(self.game, settings, threads)
    self.num_actions = len(self.host.actions)
    s = settings.size
    self.obs_shape = (s, s, settings.frame_stack)

  def observation_space(self, params=None) -> Space:
    del params
    return Space(self.obs_shape)

  def _shapes(self, n: int) -> Tuple[jax.ShapeDtypeStruct, ...]:
    s, frame = self.settings.size, jnp.uint8
    return ((jax.ShapeDtypeStruct((self.host.state_bytes,), jnp.uint8), jax.ShapeDtypeStruct((), jnp.int32),
             jax.ShapeDtypeStruct((2,) + SCREEN, jnp.uint8), jax.ShapeDtypeStruct((), jnp.int32))
            + (jax.ShapeDtypeStruct((s, s), frame),) * n)

  def _fresh_stack(self, frame: jax.Array) -> jax.Array:
    """A new episode's stack: zeros, the frame last."""
    zeros = jnp.zeros(self.obs_shape[:-1] + (self.settings.frame_stack - 1,), jnp.uint8)
    return jnp.concatenate([zeros, frame[..., None]], axis=-1)

  def noops(self, key: chex.PRNGKey) -> jax.Array:
    """The no-op steps of a game started from `key` (by `reset`: its key's second split), int32."""
    return jax.random.randint(key, (), 0, max(self.settings.max_noops, 1))

  def reset(self, key: chex.PRNGKey, params=None) -> Tuple[jax.Array, State]:
    del params
    seed_key, noop_key = jax.random.split(key)
    seed = jax.random.randint(seed_key, (), 0, 2 ** 31 - 1)

    def host(seed, noops):
      batch = seed.shape
      out = self.host.reset(np.asarray(seed).reshape(-1), np.asarray(noops).reshape(-1))
      return tuple(x.reshape(batch + x.shape[1:]) for x in out)

    emulator, size, screens, lives, frame = jax.pure_callback(host, self._shapes(1), seed, self.noops(noop_key),
                                                              vmap_method='broadcast_all')
    stack = self._fresh_stack(frame)
    return stack, State(emulator, size, screens, lives, stack, jnp.zeros((), jnp.int32))

  def step(self, key: chex.PRNGKey, state: State, action: jax.Array, params=None):
    """-> (observation, state, reward, terminated, truncated, info), the observation and state those of
    the next episode's start where this one ended; info['final_observation'] is the step's own. `key` draws
    the no-op steps of a game that starts."""
    del params
    time_up = state.steps + 1 >= self.settings.max_episode_steps

    def host(emulator, size, screens, lives, action, time_up, noops):
      batch = action.shape
      flat = lambda x: np.asarray(x).reshape((-1,) + x.shape[len(batch):])
      out = self.host.step(flat(emulator), flat(size), flat(screens), flat(lives), flat(action).astype(np.int64),
                           flat(time_up).astype(bool), flat(noops))
      return tuple(x.reshape(batch + x.shape[1:]) for x in out)

    shapes = self._shapes(2) + (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((), bool),
                                jax.ShapeDtypeStruct((), bool))
    emulator, size, screens, lives, frame, start_frame, reward, terminal, game_over = jax.pure_callback(
        host, shapes, state.emulator, state.emulator_size, state.screens, state.lives,
        jnp.asarray(action, jnp.int32), time_up, self.noops(key), vmap_method='broadcast_all')
    stepped = jnp.concatenate([state.stack[..., 1:], frame[..., None]], axis=-1)
    truncated = time_up & ~terminal
    ended = terminal | time_up
    game_end = game_over | time_up
    stack = jnp.where(ended, self._fresh_stack(start_frame), stepped)
    steps = jnp.where(game_end, 0, state.steps + 1)
    new = State(emulator, size, screens, lives, stack, steps)
    info = {'final_observation': stepped, 'game_over': game_end}
    return stack, new, reward, terminal, truncated, info


def make(name: str, env_config: Optional[Any] = None, threads: int = 1) -> Atari:
  """The game `name` ('ALE/Pong') with the env section's preprocessing settings (its defaults: Atari-100k's)."""
  env_config = env_config or {}
  fields = {f.name for f in dataclasses.fields(Settings)}
  return Atari(name, Settings(**{k: v for k, v in dict(env_config).items() if k in fields}), threads)
