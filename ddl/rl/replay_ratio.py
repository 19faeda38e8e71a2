"""Replay ratios and Adaptive Replay Ratio (ARR; Ma et al., ICLR 2024).

The replay ratio (RR) is the number of gradient updates per environment step; fractional ratios are paid out
from a credit (RR 0.5: one update every two steps). ARR starts at a low ratio and switches once, for good, to a
high one when the critic's fraction of active units (FAU) has settled. Everything here is elementwise jax on
scalars: pure, jittable and vmappable over runs, with the ratios, the ARR flag and the threshold traceable.

ARR as the authors' code does it (Guozheng-Ma/Adaptive-Replay-Ratio, train_adapt_rr.py lines 136-163,
drqv2_adapt_rr.py lines 228-234 and 269-279):
* every critic update adds its FAU (of the critic's ReLU layers, on the update's batch) to a window;
* episodes are counted globally (`_global_episode`); at an episode end, once updates have begun (`metrics is not
  None`), the window restarts when the count is k check_every - 1 (line 144) and is checked at k check_every
  (line 147), so a check sees the updates of the most recent episode only, not of all episodes since the last check;
* the check compares that mean Φ with the previous check's Φ, or for the first check with the FAU of the very first
  update (`init_Phi`, lines 275-279); it switches when |Φ - Φ_prev| <= threshold (line 149, `<=`); Φ becomes the
  previous value at every check (line 161), switched or not, and the switch never reverts (it requires
  `update_every_steps == 2`, which it sets to 1);
* the low phase is `update_every_steps` 2 with one update per call (RR 0.5), the high phase `update_every_steps` 1
  with `replay_ratio` 2 update calls per step (RR 2).
The repository's README gives only the idea (raise the RR once the critic's FAU has recovered to a satisfactory
level); the interval counted in episodes, the window of the last episode's updates, the first comparison against
the untrained critic's first FAU and the `<=` are the code's.

Where this differs from the code, it is where the code has no answer: a check whose window is empty (no update in
the episode; the authors' `sum_Phi / sum_Phi_count` would divide by zero, which their 500-step DMC episodes never
reach) is skipped, keeping Φ_prev; with check_every 1 the check reads the window before restarting it (theirs
would empty it first, then divide by zero); updates begin at the first recorded FAU rather than at the first
`agent.update` call (the same step in their config: 2 000 seed steps, an even one).

On Atari the paper checks every 2 000 (its Table 3; no code published): `check_unit='steps'` counts environment
steps instead of episodes, and then the window holds every update since the last check.
"""
import jax
import jax.numpy as jnp
from flax import struct

# Defaults of the authors' code (Guozheng-Ma/Adaptive-Replay-Ratio).
CHECK_EVERY = 50    # cfgs/drqv2_adapt_rr_config.yaml line 36: check_freq (episodes between checks)
THRESHOLD = 0.001   # cfgs/drqv2_adapt_rr_config.yaml line 37: Phi_gap
LOW_RATIO = 0.5     # cfgs/drqv2_adapt_rr_config.yaml line 46: update_every_steps 2; drqv2_adapt_rr.py line 234:
                    # replay_ratio 1 (update calls per step; line 325 skips odd steps)
HIGH_RATIO = 2.0    # train_adapt_rr.py lines 150-151: update_every_steps = 1, replay_ratio = 2
CHECK_UNITS = ('episodes', 'steps')   # what check_every counts


@struct.dataclass
class Schedule:
  """A run's replay-ratio credit and ARR state (all scalars, so a batch of runs is the same tree, vmapped)."""
  credit: jax.Array        # float32: updates owed and not yet made, in [0, 1) between steps
  switched: jax.Array      # bool: ARR has switched to its high ratio (never reverts)
  previous_fau: jax.Array  # float32: Φ at the last check; the first update's FAU before one; -1 before any update
  fau_sum: jax.Array       # float32: the window's critic FAU measurements, summed ...
  fau_count: jax.Array     # int32: ... and counted
  episodes: jax.Array      # int32: episodes finished, all of them (the authors' _global_episode: checks at multiples)
  switch_step: jax.Array   # int32: the environment step passed to `episode_end` at the switch; -1 before


def init() -> Schedule:
  """No credit, no switch, no FAU measured yet."""
  zero_f, zero_i = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
  return Schedule(credit=zero_f, switched=jnp.zeros((), bool), previous_fau=-jnp.ones((), jnp.float32),
                  fau_sum=zero_f, fau_count=zero_i, episodes=zero_i, switch_step=-jnp.ones((), jnp.int32))


def updates_due(schedule: Schedule, ratio: jax.Array) -> tuple[jax.Array, Schedule]:
  """(int32 number of updates to make at this environment step, schedule), `ratio` >= 0 traceable.

  The credit gains `ratio` every step and pays out its whole part: RR 0.5 gives 0, 1, 0, 1, ..., RR 2 gives 2
  every step, and after t steps floor(t ratio) updates have been made. Only float32 rounding of the credit could
  move an update by a step: exact for dyadic ratios (0.25, 0.5, 2), otherwise off by at most half an ulp of the
  credit per step (~1e-7 of an update for ratios up to 2; tests: exact over 1e5 steps for 0.1, 0.3, 1/3, 1.5).
  """
  credit = schedule.credit + jnp.asarray(ratio, jnp.float32)
  due = jnp.floor(credit)
  return due.astype(jnp.int32), schedule.replace(credit=credit - due)


def current_ratio(schedule: Schedule, low: jax.Array, high: jax.Array, adaptive: jax.Array) -> jax.Array:
  """The replay ratio now: `high` once ARR switched where `adaptive` (bool or 0/1), else `low` (float32).

  A static-RR run passes adaptive False and its ratio as `low`; one program serves both kinds of run.
  """
  use_high = jnp.logical_and(jnp.asarray(adaptive).astype(bool), schedule.switched)
  return jnp.where(use_high, jnp.asarray(high, jnp.float32), jnp.asarray(low, jnp.float32))


def record_fau(schedule: Schedule, fau: jax.Array) -> Schedule:
  """Adds one update's critic FAU (in [0, 1]) to the window; the first one ever is also the reference that the
  first check compares with (the authors' init_Phi)."""
  fau = jnp.asarray(fau, jnp.float32)
  first = schedule.previous_fau < 0
  return schedule.replace(fau_sum=schedule.fau_sum + fau, fau_count=schedule.fau_count + 1,
                          previous_fau=jnp.where(first, fau, schedule.previous_fau))


def episode_end(schedule: Schedule, ended: jax.Array, check_every: int, threshold: float,
                step: jax.Array, window: str = 'last') -> Schedule:
  """Counts an episode if `ended`, restarting the window one episode before a check and checking at every
  `check_every`-th episode (see the module docstring); a no-op when not `ended` and before the first update.
  window='all': the window restarts only at a check, so it holds every update since the last one.

  Call it after the environment step that ended the episode and before that step's updates: the authors handle an
  episode end at the top of the next loop iteration, before its update, so a switch applies to those updates.
  `step` is only recorded (switch_step).
  """
  ended = jnp.asarray(ended, bool)
  episodes = schedule.episodes + ended.astype(jnp.int32)
  active = ended & (schedule.previous_fau >= 0)                     # `metrics is not None`: updates have begun
  phase = episodes % check_every
  check = active & (phase == 0) & (schedule.fau_count > 0)          # an empty window: skipped
  restart = active & (((phase == check_every - 1) & (window == 'last')) | check)
  fau = schedule.fau_sum / jnp.maximum(schedule.fau_count, 1)       # Φ, the window's mean FAU
  switch = check & ~schedule.switched & (jnp.abs(fau - schedule.previous_fau) <= threshold)
  return schedule.replace(
      episodes=episodes,
      fau_sum=jnp.where(restart, 0.0, schedule.fau_sum),
      fau_count=jnp.where(restart, 0, schedule.fau_count),
      previous_fau=jnp.where(check, fau, schedule.previous_fau),
      switched=schedule.switched | switch,
      switch_step=jnp.where(switch, jnp.asarray(step, jnp.int32), schedule.switch_step))


def ratio_of(schedule: Schedule, hparams) -> jax.Array:
  """The replay ratio now of a run with the agent settings `hparams` (ddl.rl.agent): `replay_ratio`,
  or ARR's `arr_high_ratio` once it switched where that is > 0."""
  high = hparams.get('arr_high_ratio', jnp.zeros(()))
  return current_ratio(schedule, hparams['replay_ratio'], high, high > 0)


def after_step(schedule: Schedule, ended: jax.Array, hparams, arr, steps: jax.Array,
               warmup: int) -> tuple[jax.Array, Schedule]:
  """An experiment's bookkeeping after its environment step `steps` (0-based): ARR's check at an
  episode's end (`arr`: its config section), then the updates the ratio owes, none before the
  `warmup`-th transition is stored, and at that step also `priming_updates` more (Nikishin et al.
  2022's heavy priming, where the hyperparameter is held) -> (updates due, schedule). With
  arr.check_unit='steps' every step counts toward ARR's checks, over a window of all updates between them."""
  if arr.get('check_unit', 'episodes') == 'steps':
    schedule = episode_end(schedule, jnp.ones((), bool), arr.check_every, arr.threshold, steps, window='all')
  else:
    schedule = episode_end(schedule, ended, arr.check_every, arr.threshold, steps)
  due, schedule = updates_due(schedule, ratio_of(schedule, hparams))
  priming = jnp.asarray(hparams.get('priming_updates', 0), jnp.float32).astype(jnp.int32)
  due = due + jnp.where(steps + 1 == warmup, priming, 0)
  return jnp.where(steps + 1 >= warmup, due, 0), schedule


def chunk_metrics(sums, schedule: Schedule, hparams, per_update=()) -> dict:
  """An off-policy experiment's metrics of a chunk from its sums over the chunk's steps: the mean
  return of the episodes that ended in it ('returns' / 'episodes'; NaN if none), episodes,
  updates, the replay ratio at its end, and the sums named in `per_update` averaged over the
  chunk's updates (NaN if none)."""
  count, updates = sums['episodes'], sums['updates']
  per = lambda total: jnp.where(updates > 0, total / jnp.maximum(updates, 1), jnp.nan)
  return {'episode_return': jnp.where(count > 0, sums['returns'] / jnp.maximum(count, 1), jnp.nan),
          'episodes': count.astype(jnp.float32), 'updates': updates.astype(jnp.float32),
          'replay_ratio': ratio_of(schedule, hparams), **{k: per(sums[k]) for k in per_update}}
