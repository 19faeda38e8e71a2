"""DrQ-v2 (ddl.rl.ddpg, nets.DrQActor/DrQCritic, ddl.experiments.drqv2): its losses, targets, noise and
schedule against plain numpy loops of the authors' code (Ma et al.'s drqv2.py and utils.py), the
networks against a numpy forward pass, the per-module FAU, injection into one module only, the
update from pixels against DrQ-v2's joint critic-encoder gradient, and the DeepMind Control experiment
through the run loop, from state and from pixels (resumed exactly)."""
import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_resume_is_identical, cheap_diagnostics, load_config, trace_programs
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


def _numpy_conv(x, p, stride):
  """VALID convolution, NHWC with an HWIO kernel, in float64."""
  k, b = np.asarray(p['kernel'], np.float64), np.asarray(p['bias'], np.float64)
  kh, kw = k.shape[:2]
  oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], oh, ow, k.shape[-1])) + b
  for dy in range(kh):
    for dx in range(kw):
      out += x[:, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride, :] @ k[dy, dx]
  return out


def test_drq_encoder_matches_a_numpy_forward_pass():
  """DrQ-v2's Encoder: obs / 255 - 0.5, conv3x3 stride 2, then stride 1, ReLU after each, flattened;
  its features are the ReLU maps, and its orthogonal kernels have ReLU's gain (columns of norm sqrt 2)."""
  encoder = nets.DrQEncoder(channels=4, layers=3, conv='lax')
  images = np.random.default_rng(3).integers(0, 256, size=(2, 13, 13, 6), dtype=np.uint8)
  params = encoder.init(jax.random.PRNGKey(0), images)['params']
  h, features = encoder.apply({'params': params}, images)
  z = images.astype(np.float64) / 255.0 - 0.5
  for i in range(3):
    z = np.maximum(_numpy_conv(z, params[f'conv_{i}'], 2 if i == 0 else 1), 0)
    np.testing.assert_allclose(features[f'conv_{i}'], z, rtol=1e-4, atol=1e-5)
  assert h.shape == (2, nets.DrQEncoder.output_size(13, 4, 3)) == (2, 4 * 2 * 2)
  np.testing.assert_allclose(h, z.reshape(2, -1), rtol=1e-4, atol=1e-5)
  kernel = np.asarray(params['conv_1']['kernel']).reshape(-1, 4)
  np.testing.assert_allclose(kernel.T @ kernel, 2.0 * np.eye(4), atol=1e-5)
  np.testing.assert_array_equal(encoder.apply({'params': params}, features['conv_0'], start=1)[0], h)


def test_encoder_units_are_its_conv_channels_read_inside_it():
  """CBP / ReDo on the encoder: each conv's channels are units read by the next conv; the last conv's
  channels feed the critic and the actor, outside the module, so they are not among its units. A
  replaced channel gets fresh incoming weights and zero outgoing ones."""
  from ddl.learners import cbp as cbp_lib  # pylint: disable=g-import-not-at-top
  from ddl.learners import topology
  encoder = nets.DrQEncoder(channels=3, layers=3, conv='lax')
  params = encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 11, 11, 6), jnp.uint8))['params']
  layers = topology.unit_layers(encoder)
  assert [(l.kernel, l.consumers) for l in layers] == [
      (('conv_0', 'kernel'), (('conv_1', 'kernel'),)), (('conv_1', 'kernel'), (('conv_2', 'kernel'),))]
  replaced = jnp.arange(3) == 1
  picks = [cbp_lib.Pick(replaced, jnp.asarray([1]), jnp.asarray([True]), jnp.zeros(3), jax.random.PRNGKey(1)),
           cbp_lib.Pick(jnp.zeros(3, bool), jnp.asarray([0]), jnp.asarray([False]), jnp.zeros(3), jax.random.PRNGKey(2))]
  new = cbp_lib.reset_units(layers, params, picks, fresh=True)
  assert not np.allclose(new['conv_0']['kernel'][..., 1], params['conv_0']['kernel'][..., 1])
  np.testing.assert_array_equal(new['conv_0']['kernel'][..., [0, 2]], params['conv_0']['kernel'][..., [0, 2]])
  np.testing.assert_array_equal(new['conv_1']['kernel'][:, :, 1, :], 0.0)
  np.testing.assert_array_equal(new['conv_2']['kernel'], params['conv_2']['kernel'])


def test_pixel_update_is_drqv2s_joint_critic_and_encoder_gradient():
  """One update from pixels with SGD moves the encoder and the critic by the gradient of the critic's
  loss through both (DrQ-v2's critic_opt and encoder_opt on one backward pass) and the actor by its loss
  at the updated critic on the encoder's features before the update, detached (`update_actor(obs.detach())`)."""
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import drqv2
  from ddl.rl import replay as replay_lib
  config = load_config('dmc_plasticity', 'smoke,pixels')
  config.optimizer.name = 'sgd'
  group = config_lib.groups(config)[0]
  experiment = drqv2.DrQV2(group.config, group)
  lr = 0.05
  hparams = dict(learning_rate=lr, replay_ratio=2.0, augment=0.0)
  rng = np.random.default_rng(6)
  n, shape, actions = 40, experiment.env.obs_shape, experiment.env.action_size
  obs = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
  # the learners and a filled buffer, without the environment (its rendering compiles for long)
  encoder = jax.jit(experiment.encoder.init)(jax.random.PRNGKey(1), obs[:1], hparams)   # jitted: compiles once
  features = experiment.encoder.predict(encoder, obs[:1])[0]
  critic = jax.jit(experiment.critic.init)(jax.random.PRNGKey(2),
                                           jnp.concatenate([features, jnp.zeros((1, actions))], -1), hparams)
  replay = replay_lib.add_many(
      replay_lib.init(config.replay.capacity, obs[0], jnp.zeros(actions), experiment.env.frame_stack), obs,
      rng.uniform(-1, 1, (n, actions)).astype(np.float32), rng.normal(size=n).astype(np.float32),
      rng.integers(0, 256, (n,) + shape, dtype=np.uint8), np.zeros(n, bool), np.zeros(n, bool))
  state = drqv2.State(actor=jax.jit(experiment.actor.init)(jax.random.PRNGKey(3), features, hparams), critic=critic,
                      target=critic.params, env=None, obs=obs[0], replay=replay, ratio=None, key=jax.random.PRNGKey(4),
                      steps=jnp.asarray(n), updates=jnp.asarray(0), episode_return=jnp.zeros(()), encoder=encoder)
  key = jax.random.PRNGKey(7)
  new, _ = jax.jit(experiment._update)(state, key)    # pylint: disable=protected-access

  expected = jax.jit(lambda state, key: _joint_gradients(experiment, config, state, new, key))(state, key)
  for module, grad in zip(('encoder', 'critic', 'actor'), expected):
    moved = jax.tree.map(lambda old, now: (old - now) / lr, getattr(state, module).params, getattr(new, module).params)
    jax.tree.map(lambda m, g: np.testing.assert_allclose(m, g, rtol=2e-3, atol=2e-5), moved, grad)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad)) > 1e-4, module


def _joint_gradients(experiment, config, state, new, key):
  """DrQ-v2's gradients of one update, written out: the critic loss's through the encoder and the critic
  at once, and the actor's loss at the updated critic on the encoder's features before the update."""
  from ddl.rl import replay as replay_lib  # pylint: disable=g-import-not-at-top
  r, d = config.replay, config.drqv2
  sample_key, next_key, _, _, noise_key = jax.random.split(key, 5)
  batch = replay_lib.sample(state.replay, sample_key, r.batch_size, r.n_step, d.gamma)
  encode = lambda params, obs: experiment.encoder.network.apply({'params': params}, obs)[0]
  critic = lambda params, x: experiment.critic.network.apply({'params': params}, x)[0]
  actor = lambda params, x: experiment.actor.network.apply({'params': params}, x)[0]
  std = experiment._std(state.steps)    # pylint: disable=protected-access
  next_features = encode(state.encoder.params, batch.next_obs)
  next_action = ddpg.sample_action(next_key, actor(state.actor.params, next_features), std, d.std_clip)
  y = ddpg.critic_targets(batch.returns, batch.discount,
                          critic(state.target, jnp.concatenate([next_features, next_action], -1)))
  joint = lambda enc, cri: ddpg.critic_loss(critic(cri, jnp.concatenate([encode(enc, batch.obs), batch.action], -1)), y)
  encoder_grad, critic_grad = jax.grad(joint, argnums=(0, 1))(state.encoder.params, state.critic.params)
  features = encode(state.encoder.params, batch.obs)
  actor_grad = jax.grad(lambda p: ddpg.actor_loss(critic(new.critic.params, jnp.concatenate(
      [features, ddpg.sample_action(noise_key, actor(p, features), std, d.std_clip)], -1))))(state.actor.params)
  return encoder_grad, critic_grad, actor_grad


def _resumed_smoke(preset, tmp_path):
  """A preset of configs/dmc_plasticity.py run whole and stopped-and-resumed (metrics.csv identical) ->
  (config, the whole run's workdir, value(variant, metric, step) -> the seeds' values, a chunk in frames)."""
  config = cheap_diagnostics(load_config('dmc_plasticity', preset))
  whole, split = str(tmp_path / 'whole'), str(tmp_path / 'split')
  assert_resume_is_identical(config, whole, split, stop_after_chunks=1, run_whole=True)
  with open(os.path.join(whole, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  value = lambda v, m, step: [float(r['value']) for r in rows if r['variant'] == v and r['metric'] == m
                              and int(r['step']) == step]
  return config, whole, value, config.steps_per_chunk * config.env.action_repeat


@pytest.mark.slow
def test_dmc_smoke_resumes_exactly_and_builds_injection_into_the_listed_module_only(tmp_path):
  """From state, through the run loop (~50 s: `-m slow`). The default run covers its code with the pixel
  smoke (the same loop, resume, ratios, ARR and priming, with an encoder) and the traced state program
  (test_dmc_state_smoke_traces_with_injection_into_the_critic_only)."""
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import drqv2
  config, whole, value, chunk = _resumed_smoke('smoke', tmp_path)
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


def test_dmc_state_smoke_traces_with_injection_into_the_critic_only():
  """The CPU default's path, from state (no encoder): its init, chunk and evaluator traced (`jax.eval_shape`,
  nothing compiled) with the smoke's injection into the critic and none into the actor."""
  from ddl.experiments import drqv2  # pylint: disable=g-import-not-at-top
  config = cheap_diagnostics(load_config('dmc_plasticity', 'smoke'))
  experiment, state, values = trace_programs(config)
  assert experiment.encoder is None and state.encoder is None
  assert state.obs.shape == (experiment.env.obs_size,) and state.replay.frame_stack == 1
  assert {'critic_fau', 'actor_fau', 'critic_loss', 'actor_loss', 'replay_ratio', 'updates'} <= set(values)
  assert 'encoder_fau' not in values
  assert {'active_fraction_actor', 'dormant_fraction_critic'} <= set(trace_programs.evaluated)
  assert 'injection' in [m.name for m in experiment.critic.methods]
  assert not [m for m in experiment.actor.methods if m.kind in drqv2.PER_MODULE_KINDS]


def test_dmc_pixels_smoke_resumes_exactly_with_the_encoders_fau_and_random_shift(tmp_path):
  """`:smoke,pixels` (one seed of three variants): frames rendered in the program, the encoder as a third module
  (its FAU logged and diagnosed; reset at the second chunk), random shift on in one variant; resumed exactly."""
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import drqv2
  config, _, value, chunk = _resumed_smoke('smoke,pixels', tmp_path)
  for variant in ('rr_0p5_augment', 'rr_2', 'arr'):
    for metric in ('encoder_fau', 'critic_fau', 'actor_fau', 'active_fraction_encoder', 'dormant_fraction_encoder'):
      values = value(variant, metric, chunk)
      assert len(values) == 1 and all(0 <= v <= 1 for v in values), (variant, metric, values)
  # RR 0.5 from the warm-up's 50th transition (26 updates) and 30 of priming, then RR 0.5 alone; RR 2
  assert value('rr_0p5_augment', 'updates', 0) == [26.0 + 30.0]
  assert value('rr_0p5_augment', 'updates', chunk) == [50.0]
  assert value('rr_2', 'updates', chunk) == [2 * config.steps_per_chunk]
  assert value('arr', 'replay_ratio', chunk) and set(value('arr', 'replay_ratio', chunk)) <= {0.5, 2.0}
  group = config_lib.groups(config)[0]
  experiment = drqv2.DrQV2(group.config, group)
  assert experiment.env.obs_shape == (24, 24, 9)
  assert [m.name for m in experiment.encoder.methods if m.kind in drqv2.PER_MODULE_KINDS] == ['reset']
  assert not [m for m in experiment.critic.methods if m.kind in drqv2.PER_MODULE_KINDS]
  # the reset drew a fresh encoder
  assert value('rr_0p5_augment', 'encoder_fau', chunk)[0] != value('rr_0p5_augment', 'encoder_fau', 0)[0]
  assert 'augment' in dict(experiment.critic.traced)    # the program shifts where a run's augment > 0


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


def test_resets_preset_resets_each_module_alone_both_or_none_at_the_same_chunks():
  """`:resets` (claim 2 at RR 4): four variants at one replay ratio whose only differences are the modules a
  periodic reset acts on (the critic, the actor, both) or no reset; it validates as a launch does."""
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.experiments import drqv2  # pylint: disable=g-import-not-at-top
  config = load_config('dmc_plasticity', 'resets')
  config_lib.validate(config, drqv2.DrQV2)
  assert config.env.name == 'WalkerWalk'
  variants = {name: v.to_dict() for name, v in config.variants.items()}
  assert {v['replay_ratio'] for v in variants.values()} == {4.0}
  assert {name: tuple(v.get('intervene', ())) for name, v in variants.items()} == {
      'rr_4': (), 'rr_4_reset_critic': ('critic',), 'rr_4_reset_actor': ('actor',),
      'rr_4_reset_both': ('actor', 'critic')}
  schedules = [v['schedule'] for name, v in variants.items() if name != 'rr_4']
  assert all(s == dict(reset_first=10, reset_every=10, reset_layers=0) for s in schedules)
  assert 'schedule' not in variants['rr_4'] and config.schedule.reset_first == 0
