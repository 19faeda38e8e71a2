"""Atari on the Arcade Learning Environment (ddl.rl.atari) and DrQ(ε)'s pieces: the in-program environment
against Dopamine's preprocessing and runner written out as a plain loop on ALE, Dopamine's network (Flax 'SAME'
convolutions, dueling) against a plain forward pass, Dopamine's augmentation, and the Atari smoke through the
run loop (resumed exactly)."""
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_resume_is_identical, cheap_diagnostics, load_config
from ddl import nets
from ddl.learners import topology
from ddl.rl import atari
from ddl.rl import augment

ale_py = pytest.importorskip('ale_py')
cv2 = pytest.importorskip('cv2')


class DopamineAtari:
  """Dopamine's AtariPreprocessing (discrete_domains/atari_lib.py) over `{Game}NoFrameskip-v4` (no sticky
  actions, the minimal action set), with DataEfficientAtariRunner's no-op starts, stepped on ALE directly."""

  def __init__(self, game: str):
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self.ale = ale_py.ALEInterface()
    self.ale.setFloat('repeat_action_probability', 0.0)
    self.ale.loadROM(ale_py.roms.get_rom_path(game))
    self.actions = self.ale.getMinimalActionSet()
    self.screen_buffer = [np.zeros((210, 160), np.uint8), np.zeros((210, 160), np.uint8)]

  def _pool_and_resize(self):
    np.maximum(self.screen_buffer[0], self.screen_buffer[1], out=self.screen_buffer[0])
    return cv2.resize(self.screen_buffer[0], (84, 84), interpolation=cv2.INTER_AREA)

  def reset(self):
    self.ale.reset_game()
    self.lives = self.ale.lives()
    self.ale.getScreenGrayscale(self.screen_buffer[0])
    self.screen_buffer[1].fill(0)
    return self._pool_and_resize()

  def step(self, action):
    accumulated_reward = 0.0
    for time_step in range(4):
      accumulated_reward += self.ale.act(self.actions[action])
      game_over = self.ale.game_over()
      new_lives = self.ale.lives()
      is_terminal = game_over or new_lives < self.lives
      self.lives = new_lives
      if is_terminal:
        break
      elif time_step >= 2:
        self.ale.getScreenGrayscale(self.screen_buffer[time_step - 2])
    self.game_over = game_over
    return self._pool_and_resize(), accumulated_reward, is_terminal

  def initialize_episode(self, num_noops):
    observation = self.reset()
    for _ in range(num_noops):
      observation, _, terminal = self.step(0)
      if terminal:
        observation = self.reset()
    return observation


def _dopamine_run(game, actions, noops, max_steps):
  """The runner's loop (atari_100k_runner._run_parallel, one env) and the agent's frame stack (zeros at an
  episode's start): per step the stack after it, reward, terminal, game end."""
  env = DopamineAtari(game)
  stack = np.zeros((84, 84, 4), np.uint8)
  stack[..., -1] = env.initialize_episode(noops[0])
  length, out = 0, []
  for t, action in enumerate(actions):
    obs, reward, done = env.step(int(action))
    length += 1
    stepped = np.concatenate([stack[..., 1:], obs[..., None]], -1)
    game_end = env.game_over or length == max_steps
    if game_end:
      obs, length = env.initialize_episode(noops[t + 1]), 0
    stack = stepped if not (done or game_end) else np.zeros_like(stack)
    if done or game_end:
      stack[..., -1] = obs
    out.append((stack.copy(), stepped, reward, done, game_end))
  return [np.stack(x) for x in zip(*out)]


@pytest.mark.parametrize('game,max_steps,steps', [('breakout', 27_000, 500), ('pong', 90, 220)])
def test_steps_are_dopamines_preprocessing_and_runner_on_ale(game, max_steps, steps):
  """Two runs vmapped, emulated in 2 worker processes (random actions, no-op starts): every observation stack, reward,
  terminal (a lost life: Breakout), truncation (Pong at 90 steps) and game end as Dopamine's loop on ALE."""
  name = 'ALE/' + ''.join(w.capitalize() for w in game.split('_'))
  env = atari.make(name, dict(max_episode_steps=max_steps), processes=2)
  runs = 2
  actions = np.random.default_rng(0).integers(0, env.num_actions, (steps, runs))
  reset_keys = jax.random.split(jax.random.key(1), runs)
  step_keys = jax.random.split(jax.random.key(2), steps * runs).reshape(steps, runs)

  @jax.jit
  def play(reset_keys, step_keys, actions):
    obs, state = jax.vmap(env.reset)(reset_keys)

    def one(state, xs):
      keys, action = xs
      obs, state, reward, terminated, truncated, info = jax.vmap(env.step)(keys, state, action)
      return state, (obs, info['final_observation'], reward, terminated, truncated, info['game_over'])

    return obs, jax.lax.scan(one, state, (step_keys, actions))[1]

  first, (obs, stepped, reward, terminated, truncated, game_over) = play(reset_keys, step_keys, jnp.asarray(actions))
  for run in range(runs):
    noops = [int(env.noops(jax.random.split(reset_keys[run])[1]))] + [int(env.noops(k)) for k in step_keys[:, run]]
    ref_stack, ref_stepped, ref_reward, ref_done, ref_end = _dopamine_run(game, actions[:, run], noops, max_steps)
    np.testing.assert_array_equal(first[run, ..., -1], DopamineAtari(game).initialize_episode(noops[0]))
    np.testing.assert_array_equal(obs[:, run], ref_stack)
    np.testing.assert_array_equal(stepped[:, run], ref_stepped)
    np.testing.assert_array_equal(reward[:, run], ref_reward)
    np.testing.assert_array_equal(terminated[:, run], ref_done)
    np.testing.assert_array_equal(game_over[:, run], ref_end)
    np.testing.assert_array_equal(truncated[:, run], ref_end & ~ref_done)
    if game == 'breakout':
      assert ref_end.any() and (ref_done & ~ref_end).any()      # game overs and lives lost within games
    else:
      assert ref_end.sum() >= 2 and (ref_end & ~ref_done).any()  # truncations


def test_dopamines_network_is_flax_same_convolutions_and_a_dueling_head():
  """DrQ(ε)'s FullRainbowNetwork as ddl's ConvNet (both conv implementations) against lax's 'SAME' convolutions
  and the dueling head written out: 84x84x4 -> 21x21x32 -> 11x11x64 -> 11x11x64 -> 512 -> Q; CBP and ReDo
  see the value layer as a reader of the last hidden layer."""
  x = jax.random.randint(jax.random.key(1), (2, 84, 84, 4), 0, 256).astype(jnp.float32)
  for conv in ('patches', 'lax'):
    net = nets.ConvNet(outputs=6, conv=conv, widths=(32, 64, 64), kernels=(8, 4, 3), strides=(4, 2, 1), pool=False,
                       dense=(512,), padding='SAME_UPPER', dueling=True, input_scale=1 / 255, weight_init='xavier')
    params = net.init(jax.random.key(0), x)
    q, features = net.apply(params, x)
    p = params['params']
    h = x / 255
    for i, stride in enumerate((4, 2, 1)):
      h = jax.nn.relu(jax.lax.conv_general_dilated(h, p[f'conv_{i}']['kernel'], (stride, stride), 'SAME',
                                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + p[f'conv_{i}']['bias'])
      assert features[f'conv_{i}'].shape == h.shape
    h = jax.nn.relu(h.reshape(2, -1) @ p['dense_0']['kernel'] + p['dense_0']['bias'])
    advantage = h @ p['output']['kernel'] + p['output']['bias']
    value = h @ p['value']['kernel'] + p['value']['bias']
    np.testing.assert_allclose(q, value + advantage - advantage.mean(-1, keepdims=True), atol=2e-6)
    assert h.shape == (2, 512) and p['dense_0']['kernel'].shape == (11 * 11 * 64, 512)
    assert not np.any(p['dense_0']['bias'])                                  # Flax's zero biases
  last = topology.unit_layers(net)[-1]
  assert last.features == 'dense_0' and last.consumers == (('output', 'kernel'), ('value', 'kernel'))


def test_dopamines_augmentation_crops_within_2_pad_positions_and_scales_intensity():
  """Each image a crop at offsets 0..2 pad - 1 of its edge padding times one factor in [0.9, 1.1]; both offsets 0
  and 7 occur and never 8; off: the images as floats."""
  images = jax.random.randint(jax.random.key(0), (256, 12, 12, 1), 1, 256).astype(jnp.uint8)

  class Batch(NamedTuple):
    obs: jax.Array
    next_obs: jax.Array

  out = augment.shift_batch(jax.random.key(1), Batch(images, images), jnp.asarray(True), 4, 'dopamine')
  assert out.obs.dtype == jnp.float32
  padded = np.pad(np.asarray(images, np.float32), ((0, 0), (4, 4), (4, 4), (0, 0)), mode='edge')
  seen = set()
  for i, image in enumerate(np.asarray(out.obs)):
    crops = {(dy, dx): padded[i, dy:dy + 12, dx:dx + 12] for dy in range(9) for dx in range(9)}
    found = [(offset, image.sum() / crop.sum()) for offset, crop in crops.items()
             if np.allclose(image, crop * (image.sum() / crop.sum()), rtol=1e-5)]
    assert len(found) == 1, i
    (dy, dx), factor = found[0]
    assert 0.9 - 1e-6 <= factor <= 1.1 + 1e-6
    seen.update((dy, dx))
  assert 0 in seen and 7 in seen and 8 not in seen
  assert not np.array_equal(out.obs, out.next_obs)
  off = augment.shift_batch(jax.random.key(1), Batch(images, images), jnp.asarray(False), 4, 'dopamine')
  np.testing.assert_array_equal(off.obs, np.asarray(images, np.float32))


def test_atari_smoke_resumes_exactly_with_games_scores(tmp_path):
  """`:atari,smoke` (Pong, a small network, 2 chunks of 300 steps, games truncated at 200 steps) through the run
  loop: stopped after a chunk and resumed, metrics.csv and the final state equal an uninterrupted run's (the
  emulators' states are in the runs' states); a game's score and its human-normalised score are logged, and the
  evaluation games' mean score at the end."""
  config = cheap_diagnostics(load_config('minatar_replay_ratio', 'atari,smoke'))   # the Hessian's: tested elsewhere
  whole, split = str(tmp_path / 'whole'), str(tmp_path / 'split')
  assert_resume_is_identical(config, whole, split, stop_after_chunks=1, run_whole=True)
  import csv  # pylint: disable=g-import-not-at-top
  with open(os.path.join(whole, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  value = lambda m: [float(r['value']) for r in rows if r['metric'] == m]
  returns, normalized = value('episode_return'), value('human_normalized')
  assert returns and all(-21 <= r <= 21 for r in returns)
  np.testing.assert_allclose(normalized, (np.asarray(returns) + 20.7) / (14.6 + 20.7), rtol=1e-5)
  assert value("active_fraction_encoder") and set(value("replay_ratio")) <= {0.5, 2.0}
  played = np.asarray(value('eval_return'))   # 2 games after the last chunk (at most 100 steps each), none before
  assert np.isnan(played).sum() == 3 and np.isfinite(played).sum() == 3   # 3 runs: a seed of 3 variants
  assert np.all(np.abs(played[np.isfinite(played)]) <= 21)
  from ddl.experiments import dqn as dqn_experiment  # pylint: disable=g-import-not-at-top
  assert sorted(os.path.basename(p) for p in dqn_experiment.DQN.figures(whole)) == ['atari_scores.md', 'plasticity.png']


def test_scores_table_is_table_4s_form(tmp_path):
  """figures/atari_scores.md from a synthetic `:paper`-style workdir: per game and agent the last evaluation score
  (mean over seeds; earlier NaNs skipped), then the mean and median human-normalised scores over the games."""
  import json  # pylint: disable=g-import-not-at-top
  (tmp_path / 'config.json').write_text(json.dumps({'env': {'name': 'ALE/Pong'}}))
  rows = ['variant,seed,step,metric,value']
  finals = {('bank_heist', 'rr_1'): (400.0, 500.0), ('bank_heist', 'arr'): (600.0, 700.0),
            ('pong', 'rr_1'): (-20.0, -10.0), ('pong', 'arr'): (0.0, 10.0)}
  for (game, agent), values in finals.items():
    for seed, value in enumerate(values):
      rows += [f'{game}_{agent},{seed},0,eval_return,nan', f'{game}_{agent},{seed},100,eval_return,{value}',
               f'{game}_{agent},{seed},100,episode_return,1.0']
  (tmp_path / 'metrics.csv').write_text('\n'.join(rows) + '\n')
  path = atari.scores_table(str(tmp_path))
  text = open(path).read()
  assert '| bank_heist | 450.0 | 650.0 |' in text and '| pong | -15.0 | 5.0 |' in text
  hns = lambda score, human, random: 100 * (score - random) / (human - random)
  rr_1 = [hns(450.0, 753.1, 14.2), hns(-15.0, 14.6, -20.7)]
  arr = [hns(650.0, 753.1, 14.2), hns(5.0, 14.6, -20.7)]
  assert f'| mean HNS % | {np.mean(rr_1):.1f} | {np.mean(arr):.1f} |' in text
  assert '| paper mean / median (17 games) | 41.3 / 30.3 | 55.8 / 48.7 |' in text


def test_a_worker_process_that_dies_is_a_clear_error():
  """A killed emulator worker: the next step raises naming the workers that ended and the way on (a relaunch
  resumes), not a bare pickling or pipe error."""
  from ddl.rl import ale_host  # pylint: disable=g-import-not-at-top
  pool = ale_host.Pool('pong', ale_host.Settings(), 2)
  state = pool.reset(np.arange(2), np.zeros(2, np.int64))
  pool._workers[1].kill()  # pylint: disable=protected-access
  pool._workers[1].wait()  # pylint: disable=protected-access
  step = lambda: pool.step(*state[:4], np.zeros(2, np.int64), np.zeros(2, bool), np.zeros(2, np.int64), np.ones(2, bool))
  for _ in range(2):     # and so at every later step: never this process's emulator in their place
    with pytest.raises(RuntimeError, match=r'ALE worker process\(es\) \[\d+\] of pong ended.*relaunch'):
      step()
  pool.close()
