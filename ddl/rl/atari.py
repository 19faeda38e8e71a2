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
resumes exactly, and results do not depend on the number of host workers. The emulator is ALE's full
system state with its random generator (`cloneState(include_rng=True).serialize()`, ~14.4 KB), stored
as uint8 bytes padded to a fixed size, beside the two screen buffers and the lives count. One
`jax.pure_callback` per step takes all runs of a call at once and steps them in `env.processes` host
processes (`ddl.rl.ale_host`: ALE holds the GIL, so threads would not help), each restoring a run's
state into its ALEInterface.

Scores: `human_normalized` (the Atari-100k metric) from the human and random scores of Mnih et al.
2015 / Badia et al. 2020 as Dopamine's `atari_100k/normalization_utils.py` lists them.
"""
import dataclasses
import importlib.util
import re
from typing import Any, Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl.rl import ale_host
from ddl.rl.ale_host import SCREEN, Settings

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


# Ma et al.'s Table 4: mean and median human-normalised score (%) over their 17 games, per agent
PAPER_HNS = {'rr_0p5': (42.3, 22.6), 'rr_1': (41.3, 30.3), 'rr_2': (35.1, 26.0), 'rr_1_redo': (42.3, 41.6),
             'arr': (55.8, 48.7)}


def human_normalized(score: jax.Array, game: str) -> jax.Array:
  """(score - random) / (human - random): 1 is a human's score, 0 a random agent's."""
  human, random = SCORES[game]
  return (score - random) / (human - random)


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

  def __init__(self, name: str, settings: Settings = Settings(), processes: int = 1):
    self.name, self.game, self.settings = name, rom_id(name), settings
    self.host = ale_host.pool(self.game, settings, processes)
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

  def step(self, key: chex.PRNGKey, state: State, action: jax.Array, params=None, active=True):
    """-> (observation, state, reward, terminated, truncated, info), the observation and state those of
    the next episode's start where this one ended; info['final_observation'] is the step's own. `key` draws
    the no-op steps of a game that starts. `active` False: the state as it was (not emulated: games that
    ended, in evaluation)."""
    del params
    time_up = state.steps + 1 >= self.settings.max_episode_steps
    active = jnp.asarray(active, bool)

    def host(emulator, size, screens, lives, action, time_up, noops, active):
      batch = action.shape
      flat = lambda x: np.asarray(x).reshape((-1,) + x.shape[len(batch):])
      out = self.host.step(flat(emulator), flat(size), flat(screens), flat(lives), flat(action).astype(np.int64),
                           flat(time_up).astype(bool), flat(noops), flat(active).astype(bool))
      return tuple(x.reshape(batch + x.shape[1:]) for x in out)

    shapes = self._shapes(2) + (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((), bool),
                                jax.ShapeDtypeStruct((), bool))
    emulator, size, screens, lives, frame, start_frame, reward, terminal, game_over = jax.pure_callback(
        host, shapes, state.emulator, state.emulator_size, state.screens, state.lives,
        jnp.asarray(action, jnp.int32), time_up, self.noops(key), active, vmap_method='broadcast_all')
    stepped = jnp.concatenate([state.stack[..., 1:], frame[..., None]], axis=-1)
    truncated = time_up & ~terminal
    ended = terminal | time_up
    game_end = game_over | time_up
    stack = jnp.where(ended, self._fresh_stack(start_frame), stepped)
    steps = jnp.where(game_end, 0, state.steps + 1)
    new = State(emulator, size, screens, lives, jnp.where(active, stack, state.stack), jnp.where(active, steps, state.steps))
    info = {'final_observation': stepped, 'game_over': game_end}
    return stack, new, reward, terminal, truncated, info


def scores_table(workdir: str) -> Optional[str]:
  """<workdir>/figures/atari_scores.md, Table 4's form: each game's final evaluation score per agent (the last
  `eval_return`, mean over seeds), then per agent the mean and median human-normalised score (%) over the
  games, beside the paper's. Variants named '<game>_<agent>' (`:paper`'s) or, of one game, '<agent>'. None
  without evaluation scores."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from ddl import plotting  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json')) as f:
    name = json.load(f)['env']['name']
  if not is_atari(name):
    return None
  default_game = rom_id(name)
  data = plotting.read_metrics(os.path.join(workdir, 'metrics.csv'))
  scores: Dict[str, Dict[str, float]] = {}   # agent -> game -> score
  for (variant, metric), (_, values) in data.items():
    if metric != 'eval_return' or not np.isfinite(values[:, -1]).any():
      continue
    game = max((g for g in SCORES if variant.startswith(g + '_')), key=len, default=default_game)
    agent = variant[len(game) + 1:] if variant.startswith(game + '_') else variant
    scores.setdefault(agent, {})[game] = float(np.nanmean(values[:, -1]))
  if not scores:
    return None
  agents = list(scores)
  games = sorted({g for per_game in scores.values() for g in per_game})
  cell = lambda x: f'{x:.1f}' if x is not None else ''
  lines = ['# Final evaluation scores (mean over seeds) and human-normalised scores', '',
           '| game | ' + ' | '.join(agents) + ' |', '|---' * (len(agents) + 1) + '|']
  lines += ['| ' + ' | '.join([g] + [cell(scores[a].get(g)) for a in agents]) + ' |' for g in games]
  hns = {a: [100 * float(human_normalized(s, g)) for g, s in scores[a].items() if g in SCORES] for a in agents}
  lines.append('| mean HNS % | ' + ' | '.join(cell(np.mean(hns[a]) if hns[a] else None) for a in agents) + ' |')
  lines.append('| median HNS % | ' + ' | '.join(cell(np.median(hns[a]) if hns[a] else None) for a in agents) + ' |')
  lines.append('| paper mean / median (17 games) | ' + ' | '.join(
      '{} / {}'.format(*PAPER_HNS[a]) if a in PAPER_HNS else '' for a in agents) + ' |')
  out_dir = os.path.join(workdir, 'figures')
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, 'atari_scores.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return path


def make(name: str, env_config: Optional[Any] = None, processes: int = 1) -> Atari:
  """The game `name` ('ALE/Pong') with the env section's preprocessing settings (its defaults: Atari-100k's),
  emulated in `processes` host processes (1: this one)."""
  env_config = env_config or {}
  fields = {f.name for f in dataclasses.fields(Settings)}
  return Atari(name, Settings(**{k: v for k, v in dict(env_config).items() if k in fields}), processes)
