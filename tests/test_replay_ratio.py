"""ddl.rl.replay_ratio: fractional replay ratios pay floor(t r) updates after t steps, every step, without drift;
ARR, run as ddl's DQN loop runs it (a jitted scan), makes the same updates and switches at the same episode and
step as a plain-Python transcription of the authors' loop (train_adapt_rr.py, drqv2_adapt_rr.py), never reverts,
and vmaps over runs."""
import fractions

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddl.rl import replay_ratio as rr


def test_fractional_ratios_pay_floor_t_r_updates_at_every_step():
  ratios = [fractions.Fraction(p, q) for p, q in ((1, 4), (3, 10), (1, 3), (1, 2), (1, 1), (2, 1), (3, 2), (1, 10))]
  steps = 100_000

  def run(ratio):                                           # the ratio is traced: one program for all of them
    def step(schedule, _):
      due, schedule = rr.updates_due(schedule, ratio)
      return schedule, due
    return jax.lax.scan(step, rr.init(), None, length=steps)[1]

  dues = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray([float(r) for r in ratios], jnp.float32)))
  t = np.arange(1, steps + 1, dtype=np.int64)
  for ratio, due in zip(ratios, dues):
    exact = t * ratio.numerator // ratio.denominator         # floor(t r), in integers
    np.testing.assert_array_equal(np.cumsum(due), exact, err_msg=f'ratio {ratio}')
  assert dues[3, :6].tolist() == [0, 1, 0, 1, 0, 1]          # RR 0.5
  assert dues[0, :8].tolist() == [0, 0, 0, 1, 0, 0, 0, 1]    # RR 0.25
  assert set(dues[5].tolist()) == {2}                        # RR 2


def test_current_ratio_is_high_only_once_switched_and_adaptive():
  schedule = rr.init()
  for adaptive in (True, False, 1.0, 0.0):
    assert float(rr.current_ratio(schedule, 0.5, 2.0, adaptive)) == 0.5
  switched = schedule.replace(switched=jnp.asarray(True))
  assert [float(rr.current_ratio(switched, 0.5, 2.0, a)) for a in (True, False, 1.0, 0.0)] == [2.0, 0.5, 2.0, 0.5]
  assert (rr.LOW_RATIO, rr.HIGH_RATIO, rr.CHECK_EVERY, rr.THRESHOLD) == (0.5, 2.0, 50, 0.001)


# ------------------------------------------------------------------------------------------------------------------
# The authors' loop, transcribed: train_adapt_rr.py Workspace.train (lines 120-211) without the environment, replay,
# logging and evaluation; episodes last `episode_length` steps; the j-th update's critic FAU is
# levels[episode being played] + noise[j].


class _AuthorsAgent:
  """drqv2_adapt_rr.py DrQV2_adapt_rr_Agent: its ARR fields (lines 228-234) and what `update` (lines 322-354,
  update_critic lines 269-279) does with them."""

  def __init__(self):
    self.update_every_steps = 2                   # cfgs/drqv2_adapt_rr_config.yaml line 46
    self.cal_init_Phi, self.init_Phi, self.last_average_Phi, self.average_Phi = False, 0.0, 0.0, 0.0
    self.sum_Phi, self.sum_Phi_count, self.replay_ratio = 0.0, 0, 1

  def update(self, step, fau_critic):
    metrics = dict()
    if step % self.update_every_steps != 0:
      return metrics
    self.sum_Phi += fau_critic
    self.sum_Phi_count += 1
    if self.cal_init_Phi == False:  # pylint: disable=singleton-comparison
      self.init_Phi = fau_critic
      self.last_average_Phi = self.init_Phi
      self.cal_init_Phi = True
    metrics['FAU_Critic'] = fau_critic
    return metrics


def _authors_run(levels, noise, episode_length, seed_steps, check_freq, Phi_gap,  # pylint: disable=invalid-name
                 num_steps):
  """(updates made at each loop iteration, (global_episode, global_step) at the switch or None)."""
  agent = _AuthorsAgent()
  global_step = global_episode = episode_step = updates_so_far = 0
  last, metrics, switch, made = False, None, None, []
  while global_step < num_steps:
    if last:                                      # time_step.last() of the previous iteration's env step
      global_episode += 1
      if metrics is not None:
        if global_episode % check_freq == check_freq - 1:
          agent.sum_Phi = 0.0
          agent.sum_Phi_count = int(0)
        if global_episode % check_freq == 0:
          agent.average_Phi = agent.sum_Phi / agent.sum_Phi_count
          if abs(agent.average_Phi - agent.last_average_Phi) <= Phi_gap and agent.update_every_steps == 2:
            agent.update_every_steps = 1
            agent.replay_ratio = 2
            switch = (global_episode, global_step)
          agent.last_average_Phi = agent.average_Phi
          agent.sum_Phi = 0.0
          agent.sum_Phi_count = int(0)
      episode_step = 0
    before = updates_so_far
    if not global_step < seed_steps:
      for _ in range(agent.replay_ratio):
        fau = float(np.float32(levels[global_episode] + noise[updates_so_far]))
        metrics = agent.update(global_step, fau)
        updates_so_far += 1 if metrics else 0
    made.append(updates_so_far - before)
    episode_step += 1                             # take env step
    global_step += 1
    last = episode_step == episode_length
  return np.asarray(made), switch


def _ddl_run(levels, noise, adaptive, episode_length, warmup, check_every, threshold, num_steps):
  """ddl's loop (as ddl/experiments/dqn.py runs it): env step, `episode_end`, `updates_due` at the current ratio
  (none before `warmup` steps), each update's FAU into `record_fau`. Returns (updates after each step, switched
  after each step, final schedule)."""
  def step(carry, s):
    schedule, updates_so_far = carry
    ended = (s + 1) % episode_length == 0
    schedule = rr.episode_end(schedule, ended, check_every, threshold, s + 1)   # s + 1: the authors' global_step
    due, schedule = rr.updates_due(schedule, rr.current_ratio(schedule, rr.LOW_RATIO, rr.HIGH_RATIO, adaptive))
    due = jnp.where(s + 1 >= warmup, due, 0)
    playing = schedule.episodes                   # episodes finished: the index of the one being played

    def update(_, carry):
      schedule, j = carry
      return rr.record_fau(schedule, levels[playing] + noise[j]), j + 1

    schedule, updates_so_far = jax.lax.fori_loop(0, due, update, (schedule, updates_so_far))
    return (schedule, updates_so_far), (due, schedule.switched)

  (schedule, _), (dues, switched) = jax.lax.scan(step, (rr.init(), 0), jnp.arange(num_steps))
  return dues, switched, schedule


def _compare(levels, noise, *, episode_length=10, warmup=100, check_every=50, threshold=0.001, num_steps=5000):
  """Runs both loops; checks they make the same updates at the same steps and switch at the same episode and
  step; returns the authors' (episode, step) of the switch, or None."""
  levels, noise = np.asarray(levels, np.float32), np.asarray(noise, np.float32)
  made, switch = _authors_run(levels, noise, episode_length, warmup, check_every, threshold, num_steps)
  run = jax.jit(_ddl_run, static_argnums=(3, 4, 5, 6, 7))
  dues, switched, schedule = run(jnp.asarray(levels), jnp.asarray(noise), True, episode_length, warmup,
                                 check_every, threshold, num_steps)
  dues, switched = np.asarray(dues), np.asarray(switched)
  # the authors update at the top of iteration k, ddl after env step k - 1: the same update
  np.testing.assert_array_equal(dues[:-1], made[1:])
  assert np.all(np.diff(switched.astype(int)) >= 0)                      # never reverts
  if switch is None:
    assert not switched.any() and int(schedule.switch_step) == -1
  else:
    episode, step = switch
    assert int(schedule.switch_step) == step and step % episode_length == 0 and step // episode_length == episode
    assert not switched[step - 2] and switched[step - 1]                 # switched at that episode end, not before
    assert set(made[step:].tolist()) == {2} and set(made[warmup:step].tolist()) == {0, 1}   # RR 0.5, then 2
  return switch


def _levels(settle_at, episodes=600, wild=False, seed=0):
  """Per-episode critic FAU: climbing 0.01 per 50 episodes until `settle_at`, then 0.0005 per 50. `wild`: every
  episode but each check's last (the 50th, 100th, ...) is at a random level instead."""
  e = np.arange(episodes)
  levels = 0.3 + 0.01 / 50 * np.minimum(e, settle_at) + 0.0005 / 50 * np.maximum(e - settle_at, 0)
  if wild:
    levels = np.where((e + 1) % 50 == 0, levels, np.random.default_rng(seed).uniform(0.2, 0.9, episodes))
  return levels


def _noise(seed=0, updates=20_000):
  return np.random.default_rng(seed).normal(scale=3e-5, size=updates)


@pytest.mark.parametrize('settle_at', [220, 330])
def test_arr_switches_where_the_authors_loop_does_once_the_fau_settles(settle_at):
  switch = _compare(_levels(settle_at), _noise(settle_at))
  assert switch is not None
  episode, _ = switch
  assert episode % 50 == 0 and settle_at < episode <= settle_at + 100   # the first check with two settled windows


def test_arr_never_switches_while_the_fau_drifts():
  assert _compare(_levels(10**6), _noise(1)) is None


def test_arr_compares_the_last_episode_before_a_check_only():
  """Every other episode of a check window is wild: a mean over all of them since the last check would not settle,
  the authors' window (the last episode) does."""
  switch = _compare(_levels(220, wild=True), _noise(2))
  assert switch is not None and switch[0] == 300


def test_arr_first_check_compares_with_the_first_update_and_uses_less_or_equal():
  """Dyadic FAUs: the first update's 0.5, then 0.75 from the second episode on. The first check (episode 2)
  differs from the first update by exactly the threshold 0.25: a switch there (with `<`, or against a previous
  check only, it would come at episode 4)."""
  levels, noise = [0.5] + [0.75] * 20, np.zeros(100)
  kwargs = dict(episode_length=4, warmup=2, check_every=2, num_steps=40)
  assert _compare(levels, noise, threshold=0.25, **kwargs) == (2, 8)
  assert _compare(levels, noise, threshold=0.2499, **kwargs) == (4, 16)


def test_an_empty_window_skips_its_check_and_check_every_one_reads_the_episode():
  schedule = rr.record_fau(rr.init(), 0.5)                                # the first update: reference 0.5
  schedule = rr.episode_end(schedule, True, 2, 0.001, 10)                # episode 1: restarts the window
  schedule = rr.episode_end(schedule, True, 2, 0.001, 20)                # episode 2: no update since, skipped
  assert not bool(schedule.switched) and float(schedule.previous_fau) == 0.5 and int(schedule.episodes) == 2
  schedule = rr.record_fau(rr.init(), 0.5)
  schedule = rr.episode_end(rr.record_fau(schedule, 0.5), False, 1, 0.001, 5)   # not ended: nothing happens
  assert int(schedule.fau_count) == 2 and int(schedule.episodes) == 0
  schedule = rr.episode_end(schedule, True, 1, 0.001, 7)
  assert bool(schedule.switched) and int(schedule.switch_step) == 7 and int(schedule.fau_count) == 0
  before_any_update = rr.episode_end(rr.init(), True, 1, 0.001, 3)       # no update yet: counted, never checked
  assert int(before_any_update.episodes) == 1 and float(before_any_update.previous_fau) == -1


def test_vmapped_runs_equal_single_runs():
  """Three runs in one program: two traces under ARR, and the first trace as a static-RR run (adaptive off)."""
  levels = np.stack([_levels(220), _levels(10**6), _levels(220)]).astype(np.float32)
  noise = np.stack([_noise(0), _noise(1), _noise(0)]).astype(np.float32)
  adaptive = jnp.asarray([True, True, False])
  run = lambda l, n, a: _ddl_run(l, n, a, 10, 100, 50, 0.001, 4000)
  together = jax.jit(jax.vmap(run))(jnp.asarray(levels), jnp.asarray(noise), adaptive)
  single = jax.jit(run)
  for i in range(3):
    alone = single(jnp.asarray(levels[i]), jnp.asarray(noise[i]), adaptive[i])
    jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a[i], b), together, alone)
  dues, switched, _ = together
  assert np.asarray(switched[:, -1]).tolist() == [True, False, True]    # ARR's state runs with adaptive off too
  assert int(dues[0].max()) == 2 and int(dues[1].max()) == 1 and int(dues[2].max()) == 1


def test_priming_adds_its_updates_once_at_the_warmups_last_step_vmapped():
  """Heavy priming (Nikishin et al. 2022): a plain loop pays nothing before the warm-up's `warmup`-th
  transition, then floor(t r) of the ratio since, plus `priming_updates` at that one step; traced and vmapped
  over runs with and without it."""
  from ml_collections import ConfigDict  # pylint: disable=g-import-not-at-top
  arr, warmup, steps = ConfigDict(dict(check_every=50, threshold=0.001)), 7, 40

  def run(ratio, priming):
    hparams = {'replay_ratio': ratio, 'priming_updates': priming}
    def step(schedule, t):
      due, schedule = rr.after_step(schedule, False, hparams, arr, t, warmup)
      return schedule, due
    return jax.lax.scan(step, rr.init(), jnp.arange(steps))[1]

  ratios, primings = [0.5, 0.5, 2.0], [0.0, 300.0, 25.0]
  dues = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(ratios), jnp.asarray(primings)))
  for ratio, priming, due in zip(ratios, primings, dues):
    credit, expected = 0.0, []
    for t in range(steps):                                    # the numpy loop
      credit += ratio
      paid = int(np.floor(credit))
      credit -= paid
      expected.append(0 if t + 1 < warmup else paid + (int(priming) if t + 1 == warmup else 0))
    np.testing.assert_array_equal(due, expected)
  assert dues[1, warmup - 1] == 300 + dues[0, warmup - 1] and dues[1].sum() == dues[0].sum() + 300


def test_arr_counting_steps_checks_the_mean_of_every_update_since_the_last_check():
  """check_unit='steps' (Ma et al.'s Atari interval): every `check_every` environment steps, the mean FAU of all
  updates since the last check against the previous one, written out as a plain loop over a synthetic trace
  whose FAU climbs, then settles; the switch comes at the same step, and at RR 0.5 / 2 before / after it."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  check_every, threshold, warmup, steps = 20, 0.002, 10, 600
  fau_at = lambda t: 0.3 + 0.001 * np.minimum(t, 300) + 0.00001 * np.maximum(t - 300, 0)   # updates at step t
  # the reference: updates at RR 0.5 (odd steps t) until the switch, then 2 per step; checks at steps 20, 40, ...
  window, previous, switched_at, high, made = [], None, None, False, []
  for t in range(steps):
    if t >= 1 and (t + 1) % check_every == 0 and previous is not None and window:
      phi = sum(window) / len(window)
      if not high and abs(phi - previous) <= threshold:
        high, switched_at = True, t
      previous, window = phi, []
    due = 0 if t + 1 < warmup else (2 if high else t % 2)
    for _ in range(due):
      window.append(np.float32(fau_at(t)))
      previous = window[0] if previous is None else previous
    made.append(due)
  arr = ml_collections.ConfigDict(dict(check_every=check_every, threshold=threshold, check_unit='steps'))
  hparams = dict(replay_ratio=jnp.asarray(0.5), arr_high_ratio=jnp.asarray(2.0))

  def step(schedule, t):
    due, schedule = rr.after_step(schedule, False, hparams, arr, t, warmup)
    fau = jnp.asarray(np.float32([fau_at(s) for s in range(steps)]))[t]
    return jax.lax.fori_loop(0, due, lambda _, s: rr.record_fau(s, fau), schedule), due

  schedule, dues = jax.lax.scan(step, rr.init(), jnp.arange(steps))
  assert switched_at is not None and 300 < switched_at < 400
  np.testing.assert_array_equal(np.asarray(dues), made)
  assert int(schedule.switch_step) == switched_at
