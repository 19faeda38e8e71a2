"""DrQ-v2 (ddl.rl.ddpg, nets.DrQActor/DrQCritic, ddl.experiments.drqv2): its losses, targets, noise and
schedule against plain numpy loops of the authors' code (Ma et al.'s drqv2.py and utils.py), the
networks against a numpy forward pass, the per-module FAU, injection into one module only, and the
DeepMind Control experiment through the run loop (resumed exactly)."""
import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_resume_is_identical, cheap_diagnostics, load_config
from ddl import metrics
from ddl import nets
from ddl.rl import ddpg

pytest.importorskip('mujoco_playground')


def test_exploration_std_is_drqv2s_linear_schedule():
  def numpy_schedule(step, init, final, duration):    # utils.schedule('linear(init,final,duration)', step)
    mix = np.clip(step / duration, 0.0, 1.0)
    return (1.0 - mix) * init + mix * final
  for step in (0, 1, 250_000, 499_999, 500_000, 2_000_000):
    np.testing.assert_allclose(ddpg.exploration_std(step, 1.0, 0.1, 500_000), numpy_schedule(step, 1.0, 0.1, 500_000),
                               rtol=1e-6)


@pytest.mark.parametrize('clip', [0.0, 0.3])
def test_sample_action_matches_truncated_normal_with_straight_through_clamp(clip):
  key = jax.random.PRNGKey(3)
  mean = jnp.asarray(np.random.default_rng(0).uniform(-1.2, 1.2, size=(64, 6)), jnp.float32)
  std = 0.7
  noise = np.asarray(std * jax.random.normal(key, mean.shape, mean.dtype))
  expected = np.asarray(mean) + (np.clip(noise, -clip, clip) if clip > 0 else noise)
  expected = np.clip(expected, -1 + 1e-6, 1 - 1e-6)
  got = ddpg.sample_action(key, mean, std, clip)
  np.testing.assert_allclose(got, expected, atol=1e-6)
  # the clamp passes the gradient through: d sum(sample) / d mean = 1 everywhere, clamped or not
  grad = jax.grad(lambda m: jnp.sum(ddpg.sample_action(key, m, std, clip)))(mean)
  np.testing.assert_allclose(grad, 1.0)


def test_critic_targets_and_losses_match_numpy():
  rng = np.random.default_rng(1)
  batch = 32
  returns = rng.normal(size=batch).astype(np.float32)
  discount = np.full(batch, 0.99 ** 3, np.float32)
  next_q, q = rng.normal(size=(2, batch, 2)).astype(np.float32)
  y = np.array([returns[i] + discount[i] * min(next_q[i, 0], next_q[i, 1]) for i in range(batch)])
  np.testing.assert_allclose(ddpg.critic_targets(returns, discount, next_q), y, rtol=1e-6)
  mse = lambda a: sum((a[i] - y[i]) ** 2 for i in range(batch)) / batch     # F.mse_loss
  np.testing.assert_allclose(ddpg.critic_loss(q, jnp.asarray(y)), mse(q[:, 0]) + mse(q[:, 1]), rtol=1e-5)
  np.testing.assert_allclose(ddpg.actor_loss(q), -np.mean([min(q[i, 0], q[i, 1]) for i in range(batch)]),
                             rtol=1e-6)


def _numpy_layer_norm(x, p):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * p['scale'] + p['bias']


def _numpy_dense(x, p):
  return x @ np.asarray(p['kernel'], np.float64) + np.asarray(p['bias'], np.float64)


def test_drq_networks_match_a_numpy_forward_pass_and_pool_fau_as_the_authors():
  obs_size, actions = 17, 6
  rng = np.random.default_rng(2)
  obs = rng.normal(size=(8, obs_size)).astype(np.float32)
  action = rng.uniform(-1, 1, size=(8, actions)).astype(np.float32)
  critic = nets.DrQCritic(obs_size=obs_size, hidden=(32, 32), feature_dim=10)
  actor = nets.DrQActor(hidden=(32, 32), outputs=actions, feature_dim=10)
  x = np.concatenate([obs, action], -1)
  cp = critic.init(jax.random.PRNGKey(0), x)['params']
  ap = actor.init(jax.random.PRNGKey(1), obs)['params']
  relu = lambda z: np.maximum(z, 0)

  def trunk(p, o):
    return np.tanh(_numpy_layer_norm(_numpy_dense(o, p['trunk']), jax.tree.map(np.asarray, p['trunk_norm'])))

  h = np.concatenate([trunk(cp, obs), action], -1)
  qs, active, total = [], 0, 0
  for head in ('q1', 'q2'):
    z = h
    for layer in ('hidden_0', 'hidden_1'):
      z = relu(_numpy_dense(z, cp[head][layer]))
      active, total = active + (z > 0).sum(), total + z.size     # forward_with_FAU: pooled entries
    qs.append(_numpy_dense(z, cp[head]['output'])[:, 0])
  q, features = critic.apply({'params': cp}, x)
  np.testing.assert_allclose(q, np.stack(qs, -1), rtol=1e-4, atol=1e-5)
  relu_layers = [v for k, v in features.items() if 'hidden_' in k]
  assert len(relu_layers) == 4
  np.testing.assert_allclose(metrics.active_fraction(relu_layers), active / total, rtol=1e-6)

  z = trunk(ap, obs)
  for layer in ('hidden_0', 'hidden_1'):
    z = relu(_numpy_dense(z, ap[layer]))
  mean, _ = actor.apply({'params': ap}, obs)
  np.testing.assert_allclose(mean, np.tanh(_numpy_dense(z, ap['output'])), rtol=1e-4, atol=1e-5)


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    return list(csv.DictReader(f))


def test_dmc_smoke_resumes_exactly_and_builds_injection_into_the_listed_module_only(tmp_path):
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import drqv2
  config = cheap_diagnostics(load_config('dmc_plasticity', 'smoke'))
  whole, split = str(tmp_path / 'whole'), str(tmp_path / 'split')
  assert_resume_is_identical(config, whole, split, stop_after_chunks=1, run_whole=True)
  rows = _rows(whole)
  value = lambda v, m, step: [float(r['value']) for r in rows if r['variant'] == v and r['metric'] == m
                              and int(r['step']) == step]
  chunk = config.steps_per_chunk * config.env.action_repeat       # frames
  for metric in ('critic_fau', 'actor_fau', 'critic_loss', 'actor_loss', 'active_fraction_actor',
                 'dormant_fraction_critic', 'effective_rank'):
    assert value('rr_0p5', metric, chunk) and all(np.isfinite(value('rr_0p5', metric, chunk))), metric
  assert value('arr', 'replay_ratio', chunk) and set(value('arr', 'replay_ratio', chunk)) <= {0.5, 2.0}
  assert len(value('rr_2', 'updates', chunk)) == 2
  assert value('rr_2', 'updates', chunk) == [2 * config.steps_per_chunk] * 2     # RR 2 after the warm-up
  # rr_0p5's first chunk: RR 0.5 from the warm-up's 50th transition (steps 49, 51, ..., 99: 26 updates)
  # and 30 of priming; then RR 0.5 alone
  assert value('rr_0p5', 'updates', 0) == [26.0 + 30.0] * 2 and value('rr_0p5', 'updates', chunk) == [50.0] * 2
  assert [os.path.basename(p) for p in drqv2.DrQV2.figures(whole)] == ['plasticity.png']
  # the smoke injects into the critic alone: its critic holds the frozen heads; its actor has no
  # boundary method at all
  group = config_lib.groups(config)[0]
  experiment = drqv2.DrQV2(group.config, group)
  assert 'injection' in [m.name for m in experiment.critic.methods]
  assert not [m for m in experiment.actor.methods if m.kind in drqv2.PER_MODULE_KINDS]


def test_orthogonal_init_is_the_q_of_a_gaussians_qr():
  """nets.orthogonal (Gram-Schmidt, no LAPACK) gives the Q of numpy's QR of the same Gaussian draw with
  R's diagonal made positive: PyTorch's orthogonal_, for tall, wide and square kernels."""
  key = jax.random.PRNGKey(4)
  for shape in ((50, 20), (20, 50), (64, 64)):
    n, m = max(shape), min(shape)
    a = np.asarray(jax.random.normal(key, (n, m), jnp.float32), np.float64)
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    expected = q.T if shape[0] < shape[1] else q
    np.testing.assert_allclose(nets.orthogonal()(key, shape), expected, atol=2e-5)
