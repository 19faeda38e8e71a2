"""The off-policy DQN (ddl.rl.dqn, ddl.experiments.dqn): its targets and loss against numpy on a fixed
batch, ε-greedy, the Polyak target, and the MinAtar experiment through the run loop (resumed
exactly, the replay ratio's update counts, ARR's ratio, augmentation, the evaluator's modules)."""
import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_resume_is_identical, cheap_diagnostics, load_config, trace_programs
from ddl.rl import dqn

pytest.importorskip('gymnax')


def _numpy_targets(returns, discount, next_q_target, next_q_online, double):
  y = np.zeros_like(returns)
  for i in range(len(returns)):
    a = int(np.argmax(next_q_online[i] if double else next_q_target[i]))
    y[i] = returns[i] + discount[i] * next_q_target[i, a]
  return y


def _numpy_huber(q, actions, y, delta):
  loss = []
  for i in range(len(y)):
    e = q[i, actions[i]] - y[i]
    loss.append(0.5 * e * e if abs(e) <= delta else delta * (abs(e) - 0.5 * delta))
  return np.mean(loss)


@pytest.mark.parametrize('double', [True, False])
def test_targets_and_huber_loss_match_numpy(double):
  rng = np.random.default_rng(0)
  batch, actions = 16, 4
  returns = rng.normal(size=batch).astype(np.float32)
  discount = (0.99 ** 3 * (rng.uniform(size=batch) > 0.2)).astype(np.float32)   # some terminal
  next_target, next_online = rng.normal(size=(2, batch, actions)).astype(np.float32)
  y = dqn.td_targets(jnp.asarray(returns), jnp.asarray(discount), jnp.asarray(next_target),
                     jnp.asarray(next_online), double)
  np.testing.assert_allclose(y, _numpy_targets(returns, discount, next_target, next_online, double), rtol=1e-6)
  q = rng.normal(scale=3.0, size=(batch, actions)).astype(np.float32)   # errors on both sides of δ = 1
  taken = rng.integers(0, actions, batch)
  loss = dqn.q_loss(jnp.asarray(q), (jnp.asarray(taken), y), huber=1.0)
  np.testing.assert_allclose(loss, _numpy_huber(q, taken, np.asarray(y), 1.0), rtol=1e-5)
  squared = dqn.q_loss(jnp.asarray(q), (jnp.asarray(taken), y), huber=0.0)
  np.testing.assert_allclose(squared, np.mean(0.5 * (q[np.arange(batch), taken] - np.asarray(y)) ** 2), rtol=1e-5)
  # the target is a constant of the gradient: only Q(s, a) of the taken actions gets one
  grad = jax.grad(lambda qq: dqn.q_loss(qq, (jnp.asarray(taken), y)))(jnp.asarray(q))
  mask = np.zeros_like(q, bool)
  mask[np.arange(batch), taken] = True
  assert np.all(np.asarray(grad)[~mask] == 0) and np.any(np.asarray(grad)[mask] != 0)


def test_epsilon_schedule_and_greedy_actions():
  eps = lambda s: float(dqn.epsilon(jnp.asarray(s), 1.0, 0.1, 100, warmup=50))
  assert eps(0) == eps(50) == 1.0 and abs(eps(100) - 0.55) < 1e-6 and eps(150) == eps(10_000) == pytest.approx(0.1)
  q = jnp.asarray([[0.0, 2.0, 1.0]] * 2000)
  greedy = dqn.epsilon_greedy(jax.random.PRNGKey(0), q, 0.0)
  assert np.all(np.asarray(greedy) == 1)
  mixed = np.asarray(dqn.epsilon_greedy(jax.random.PRNGKey(1), q, 0.3))
  # greedy with probability 0.7 + 0.3 / 3
  assert abs(np.mean(mixed == 1) - 0.8) < 0.03 and set(np.unique(mixed)) == {0, 1, 2}


def test_polyak_target():
  target, online = {'w': jnp.zeros(3)}, {'w': jnp.ones(3)}
  np.testing.assert_allclose(dqn.polyak(target, online, 0.01)['w'], 0.01)
  np.testing.assert_allclose(dqn.polyak(target, online, 1.0)['w'], 1.0)


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    return list(csv.DictReader(f))


def test_minatar_smoke_resumes_exactly_with_the_replay_ratios_update_counts(tmp_path):
  config = cheap_diagnostics(load_config('minatar_replay_ratio', 'smoke'))   # the Hessian's: tests/test_diagnostics.py
  whole, split = str(tmp_path / 'whole'), str(tmp_path / 'split')
  assert_resume_is_identical(config, whole, split, stop_after_chunks=1, run_whole=True)
  rows = _rows(whole)
  value = lambda v, m, step: [float(r['value']) for r in rows if r['variant'] == v and r['metric'] == m
                              and int(r['step']) == step]
  warmup, chunk = config.replay.warmup, config.steps_per_chunk

  def expected(ratio):
    """Updates per chunk: the ratio's credit accrues every step, updates are made from the step
    that stores the `warmup`-th transition on (a plain loop of the rule)."""
    credit, counts = 0.0, [0, 0]
    for k in range(1, 2 * chunk + 1):
      credit += ratio
      n = int(np.floor(credit))
      credit -= n
      counts[(k - 1) // chunk] += n if k >= warmup else 0
    return counts

  for variant, ratio in (('rr_0p5', 0.5), ('rr_2', 2.0)):
    assert [value(variant, 'updates', step) for step in (0, chunk)] == [[c] * 2 for c in expected(ratio)], variant
  assert set(value('arr', 'replay_ratio', chunk)) <= {0.5, 2.0}
  assert all(0 <= x <= 1 for x in value('rr_1_augment', 'critic_fau', chunk))
  for metric in ('active_fraction_encoder', 'active_fraction_head', 'episode_return'):
    assert value('rr_2', metric, chunk), metric
  from ddl.experiments import dqn as dqn_experiment  # pylint: disable=g-import-not-at-top
  assert [os.path.basename(p) for p in dqn_experiment.DQN.figures(whole)] == ['plasticity.png']


def test_minatar_evaluator_traces_with_every_diagnostic():
  """The smoke's evaluator with the Hessian's power iterations (off in the resumed smoke above) traces, and
  gives the Hessian's top eigenvalue beside the encoder's and the head's active fractions."""
  trace_programs(load_config('minatar_replay_ratio', 'smoke'))
  assert {'hessian_top_eigenvalue', 'active_fraction_encoder', 'active_fraction_head'} <= set(trace_programs.evaluated)


def test_injection_acts_at_boundary_periods_inside_a_chunk():
  """replay.boundary_steps=100 in chunks of 300 steps: an injection due at period 2 (step 200) happens
  in the first chunk, the next (period 4) in the second; with chunk-level boundaries neither could
  (chunk 0 never gets one). The slots are sized by the run's periods (6: 2 injections)."""
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import dqn as dqn_experiment  # pylint: disable=g-import-not-at-top
  config = load_config('minatar_replay_ratio', 'smoke')
  config.replay.boundary_steps = 100
  config.schedule.update(injection_first=2, injection_every=2)
  group = config_lib.groups(config)[0]
  experiment = dqn_experiment.DQN(group.config, group)
  hparams = {k: jnp.asarray(v, jnp.float32) for k, v in group.hparams[0].items()}
  state = experiment.init(jax.random.PRNGKey(0), hparams, jnp.zeros((), jnp.int32))
  assert state.learner.methods['injection'].signs.shape == (4,)
  run_chunk = jax.jit(experiment.run_chunk)
  done = []
  for _ in range(2):
    state, _ = run_chunk(state, None)
    done.append(int(state.learner.methods['injection'].done))
  assert done == [1, 2]
  assert int(state.steps) == 2 * config.steps_per_chunk


def test_boundary_steps_must_divide_the_chunk():
  from ddl.rl import off_policy  # pylint: disable=g-import-not-at-top
  config = load_config('minatar_replay_ratio', 'smoke')
  config.replay.boundary_steps = 70
  [(ok, message)] = off_policy.config_checks(config)
  assert not ok and 'replay.boundary_steps=70 must divide steps_per_chunk=300' in message
  config.replay.boundary_steps = 150
  assert off_policy.config_checks(config)[0][0] and off_policy.num_periods(config) == 4


def test_a_boundary_rewrite_enters_the_target_per_run_and_per_weight_array():
  """Run 0's head was reset (its 'head' array rewritten), run 1's was not: under vmap, run 0's target
  takes the new head and keeps its averaged trunk; run 1's target is untouched."""
  target = {'trunk': jnp.full((2, 3), 0.5), 'head': jnp.full((2, 4), 0.25)}
  before = {'trunk': jnp.ones((2, 3)), 'head': jnp.ones((2, 4))}
  after = {'trunk': jnp.ones((2, 3)), 'head': jnp.asarray([[1.0, 7.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])}
  out = jax.jit(jax.vmap(dqn.follow_rewrites))(target, before, after)
  np.testing.assert_array_equal(out['head'], [[1.0, 7.0, 1.0, 1.0], [0.25] * 4])
  np.testing.assert_array_equal(out['trunk'], np.full((2, 3), 0.5))
