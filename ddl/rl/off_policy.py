"""The chunk loop that the off-policy experiments (`dqn`, `drqv2`) share: a chunk's environment steps
run in boundary periods of `replay.boundary_steps` steps (0: the whole chunk), with the learners'
boundary transforms (resets, plasticity injection) at the start of each period.

So resets and injection can act at any step interval that divides the chunk, not only at chunk
starts: `schedule.reset_first` / `reset_every` (and injection's) count periods. Nikishin et al.'s
reset every 10^5 updates at replay ratio 1 is `replay.boundary_steps=1000, schedule.reset_every=100`.
A period is a multiple of a step, not of an update: under ARR the updates per period change with the
ratio. With one period per chunk the program is the chunk loop of one scan and a boundary per chunk.
"""
import json
import os
from typing import Any, Callable, List, Tuple

import jax


def period_steps(config) -> int:
  """Environment steps per boundary period: `replay.boundary_steps`, or the chunk when 0 or unset."""
  return int(config.replay.get('boundary_steps', 0)) or config.steps_per_chunk


def num_periods(config) -> int:
  """Boundary periods in the run (what the schedules' `*_first` / `*_every` count and size by)."""
  return -(-config.total_steps // period_steps(config))


def calls_apart(config) -> Tuple[str, ...]:
  """Hyperparameters whose different values never share a call (`ddl.programs.build`): the replay ratio and
  ARR's high ratio where `replay.calls_per_ratio` (a platform choice, `ddl.platform_defaults`), else none."""
  return ('replay_ratio', 'arr_high_ratio') if config.replay.get('calls_per_ratio') else ()


def config_checks(config):
  """(condition, message) checks of the boundary period, for an experiment's `checks`."""
  period = int(config.replay.get('boundary_steps', 0))
  return [(period >= 0 and (period == 0 or config.steps_per_chunk % period == 0),
           f'replay.boundary_steps={period} must divide steps_per_chunk={config.steps_per_chunk} '
           '(0: one period per chunk)')]


def run_steps(config, state, env_step: Callable, boundary: Callable, sums) -> Tuple[Any, Any]:
  """(state, sums) after `steps_per_chunk` calls of `env_step((state, sums), None) -> ((state, sums), None)`,
  with `state = boundary(state, period)` before each period's first step, `period = state.steps // period_steps`
  (the run's period index; `state.steps` counts environment steps)."""
  period = period_steps(config)

  def one_period(carry, _):
    state, sums = carry
    state = boundary(state, state.steps // period)
    carry, _ = jax.lax.scan(env_step, (state, sums), None, length=period)
    return carry, None

  (state, sums), _ = jax.lax.scan(one_period, (state, sums), None, length=config.steps_per_chunk // period)
  return state, sums


def da_reset_panels(workdir: str, metric: str = 'episode_return') -> List[Tuple[str, str, Tuple[str, str]]]:
  """Ma et al.'s Fig. 1 (DA x Reset) as `ddl.plotting.panels_figure` panels: for every variant X of the
  workdir's config with X_reset, X_augment and X_augment_reset (`:da_reset`'s names), a panel without
  augmentation (X, X_reset) and one with (X_augment, X_augment_reset)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    variants = set(json.load(f).get('variants', {}))
  panels = []
  for base in sorted(variants):
    grid = (base, base + '_reset', base + '_augment', base + '_augment_reset')
    if all(v in variants for v in grid):
      panels += [(metric, f'{base}: no augmentation', grid[:2]), (metric, f'{base}: random shift', grid[2:])]
  return panels
