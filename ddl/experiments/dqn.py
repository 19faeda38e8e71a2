"""Off-policy value-based RL under a replay ratio (Ma et al., ICLR 2024; lop_reference.md has none of
it: beyond_reference.md (d)): a DrQ(ε)-style DQN on a gymnax environment (MinAtar by default) or an
Atari game on the Arcade Learning Environment (`env.name='ALE/Pong'`, `ddl.rl.atari`: Atari-100k as
Dopamine's DrQ(ε) plays it, the emulators in host processes, their states in the runs').

One run = one seed's agent, its environment and its replay buffer (`ddl.rl.replay`, on the device in
the state). One chunk = `steps_per_chunk` environment steps in one `lax.scan`; after each step the
agent makes as many updates as its replay ratio owes (`ddl.rl.replay_ratio`: 0.5 = one every two
steps; with `adaptive_replay_ratio` on, ARR's switch from its low to its high ratio once the
critic's fraction of active units settles). An update samples `replay.batch_size` n-step
transitions, optionally shifts their observations at random (`augment`, DrQ's random shift), and
takes one learner step on the Huber loss against double-Q targets from the target network, which
follows the online one by Polyak averaging every `dqn.target_every` updates. Replay ratio, ARR and
augmentation are traced hyperparameters (agent methods of the registry): one program covers a grid
of them. Resets and plasticity injection (`schedule.*`) act at the starts of boundary periods of
`replay.boundary_steps` steps (`ddl.rl.off_policy`; 0: chunk starts); the weights they rewrite are
copied into the target network (`ddl.rl.dqn.follow_rewrites`).

Atari: the agent's episodes end at a lost life (terminal), the game at game over or 27 000 steps; the
returns and episodes logged are the games' (their scores, unclipped), the rewards learnt from clipped to
[-1, 1] (`dqn.clip_rewards`), the stacks replayed one frame per slot (zeros before an episode's first
frame), and `human_normalized` is the return's human-normalised score.

Metrics per chunk: episode_return (mean over the episodes that ended in it), episodes, updates,
replay_ratio (at its end), q_loss, critic_fau (the fraction of active units of the Q-network's
dense layers over the chunk's update batches: ARR's signal), epsilon. The evaluator (every `diagnostics.every` chunks)
takes the shared diagnostics (`ddl.experiments.evaluation`) on `probe_size` transitions drawn from
the replay buffer, with the fraction of active units per module: the encoder (conv layers) and the
head (dense layers); with `dqn.eval_episodes` > 0 also eval_return, the mean score of that many games played
at ε = `dqn.eval_epsilon` (Dopamine's evaluation phase; Atari: eval_human_normalized).
"""
import importlib.util
from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from ddl import metrics
from ddl import nets
from ddl import platform_defaults
from ddl import plotting
from ddl.experiments import evaluation
from ddl.learners import Learner, LearnerState
from ddl.rl import atari
from ddl.rl import augment as augment_lib
from ddl.rl import dqn
from ddl.rl import off_policy
from ddl.rl import replay as replay_lib
from ddl.rl import replay_ratio as ratio_lib


@struct.dataclass
class State:
  learner: LearnerState
  target: chex.ArrayTree                # the target network's parameters
  env: chex.ArrayTree                   # the gymnax environment state
  obs: jax.Array                        # its current observation
  replay: replay_lib.Replay
  ratio: ratio_lib.Schedule             # replay-ratio credit and ARR's state
  key: chex.PRNGKey                     # acting, environment and update randomness, folded by step
  steps: jax.Array                      # environment steps done, int32
  updates: jax.Array                    # learner updates done, int32
  episode_return: jax.Array             # the running episode's return so far


def make_env(env_config):
  """(environment, its parameters) of the env section: a gymnax id, e.g. 'Breakout-MinAtar', or an Atari
  game, e.g. 'ALE/Pong', with the section's preprocessing settings and host processes."""
  if atari.is_atari(env_config.name):
    processes = env_config.get('processes') or platform_defaults.choices(jax.default_backend())['env.processes']
    env = atari.make(env_config.name, env_config, processes)
    return env, env.default_params
  import gymnax  # pylint: disable=g-import-not-at-top
  return gymnax.make(env_config.name)


class DQN:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""

  def __init__(self, config, group):
    self.config = config
    self.env, self.env_params = make_env(config.env)
    self.atari = atari.is_atari(config.env.name)
    self.obs_shape = tuple(self.env.observation_space(self.env_params).shape)
    self.num_actions = int(self.env.num_actions)
    self.network = self.make_network(config, self.num_actions)
    self.examples_per_chunk = config.steps_per_chunk
    self.num_chunks = -(-config.total_steps // config.steps_per_chunk)
    loss = lambda output, target: dqn.q_loss(output, target, config.dqn.huber)
    self.calls_apart = off_policy.calls_apart(config)   # replay ratios in calls of their own (on CPU)
    self.learner = Learner.from_config(self.network, loss, config, group, off_policy.num_periods(config))
    self.diagnostics_every = config.diagnostics.every

  @staticmethod
  def make_network(config, actions: int = 3):
    """MinAtar's DQN network by default (Young & Tian 2019): conv3x3(16) -> fc128 -> Q per action."""
    return nets.build(nets.ConvNet, config.network, outputs=actions)   # widths, kernels, dense, pool: the config's

  @staticmethod
  def checks(config):
    d = config.dqn
    return _env_checks(config.env) + [
        (0 < d.gamma <= 1, 'dqn.gamma must be in (0, 1]'),
        (d.target_every > 0 and 0 < d.target_tau <= 1, 'dqn.target_every must be > 0 and dqn.target_tau in (0, 1]'),
        (0 <= d.epsilon_end <= d.epsilon_start <= 1, 'dqn epsilons must satisfy 0 <= epsilon_end <= epsilon_start <= 1'),
        (d.get('clip_rewards', 0.0) >= 0, 'dqn.clip_rewards must be >= 0 (0: rewards as they are)'),
        (d.get('eval_episodes', 0) >= 0 and 0 <= d.get('eval_epsilon', 0.0) <= 1,
         'dqn.eval_episodes must be >= 0 (0: no evaluation games) and dqn.eval_epsilon in [0, 1]'),
        (d.get('eval_when', 'end') in ('end', 'always'), "dqn.eval_when must be 'end' or 'always'"),
    ] + replay_lib.config_checks(config) + off_policy.config_checks(config) + evaluation.checks(config)

  @staticmethod
  def load_data(config):
    del config
    return None

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: environment steps at its start."""
    return chunk * self.config.steps_per_chunk

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    del seed
    learner_key, env_key, run_key = jax.random.split(key, 3)
    obs, env_state = self.env.reset(env_key, self.env_params)
    learner = self.learner.init(learner_key, obs[None].astype(jnp.float32), hparams)
    example = obs.astype(jnp.uint8)
    stacking = dict(frame_stack=self.env.settings.frame_stack, stack_start='zeros') if self.atari else {}
    time_limit = self.env.settings.max_episode_steps if self.atari else self.env_params.max_steps_in_episode
    replay = replay_lib.init(self.config.replay.capacity, example, jnp.zeros((), jnp.int32), episode_steps=int(time_limit),
                             **stacking)
    zero = jnp.zeros((), jnp.int32)
    return State(learner=learner, target=learner.params, env=env_state, obs=obs, replay=replay,
                 ratio=ratio_lib.init(), key=run_key, steps=zero, updates=zero, episode_return=jnp.zeros(()))

  def _targets(self, state: State, batch: replay_lib.Batch) -> jax.Array:
    online = self.learner.network_params(state.learner)
    target = self.learner.network_params(state.learner.replace(params=state.target))
    next_obs = batch.next_obs.astype(jnp.float32)
    next_target, _ = self.learner.apply(target, next_obs, state.learner.batch_stats)
    next_online, _ = self.learner.apply(online, next_obs, state.learner.batch_stats)
    return dqn.td_targets(batch.returns, batch.discount, next_target, next_online, self.config.dqn.double)

  def _update(self, state: State, key) -> Tuple[State, jax.Array, jax.Array]:
    """One learner step on a sampled batch -> (state, loss, the Q-network's FAU on it)."""
    r, d = self.config.replay, self.config.dqn
    sample_key, augment_key, step_key = jax.random.split(key, 3)
    batch = replay_lib.sample(state.replay, sample_key, r.batch_size, r.n_step, d.gamma)
    if 'augment' in state.learner.hparams:    # a program with augmentation (some of its runs)
      a = self.config.augment
      batch = augment_lib.shift_batch(augment_key, batch, state.learner.hparams['augment'] > 0, a.pad, a.style)
    y = self._targets(state, batch)
    learner, out = self.learner.step(state.learner, batch.obs.astype(jnp.float32), (batch.action, y), step_key)
    updates = state.updates + 1
    refresh = (updates % d.target_every) == 0
    target = jax.tree.map(lambda new, old: jnp.where(refresh, new, old),
                          dqn.polyak(state.target, learner.params, d.target_tau), state.target)
    fau = metrics.active_fraction(_head(out.features))
    return state.replace(learner=learner, target=target, updates=updates), out.loss, fau

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    del data
    config, r, d = self.config, self.config.replay, self.config.dqn
    def boundary(state, period):
      learner = self.learner.boundary(state.learner, period, jax.random.fold_in(state.key, -1 - period),
                                      state.obs[None].astype(jnp.float32))
      return state.replace(learner=learner, target=dqn.follow_rewrites(state.target, state.learner.params, learner.params))

    def env_step(carry, _):
      state, sums = carry
      key = jax.random.fold_in(state.key, state.steps)
      act_key, env_key, update_key = jax.random.split(key, 3)
      q, _ = self.learner.predict(state.learner, state.obs[None].astype(jnp.float32))
      eps = dqn.epsilon(state.steps, d.epsilon_start, d.epsilon_end, d.epsilon_steps, r.warmup)
      action = dqn.epsilon_greedy(act_key, q[0], eps)
      obs, env_state, reward, terminated, truncated, info = self.env.step(env_key, state.env, action, self.env_params)
      ended = jnp.logical_or(terminated, truncated)
      game_end = info.get('game_over', ended)    # Atari: the game goes on after a lost life
      replay = replay_lib.add(state.replay, state.obs.astype(jnp.uint8), action, self._learnt_reward(reward),
                              info['final_observation'].astype(jnp.uint8), terminated, ended)
      episode_return = state.episode_return + reward
      due, ratio = ratio_lib.after_step(state.ratio, ended, state.learner.hparams, config.arr, state.steps, r.warmup)
      state = state.replace(env=env_state, obs=obs, replay=replay, ratio=ratio, steps=state.steps + 1,
                            episode_return=jnp.where(game_end, 0.0, episode_return))

      def one_update(i, carry):
        state, loss, fau = carry
        state, l, f = self._update(state, jax.random.fold_in(update_key, i))
        return state.replace(ratio=ratio_lib.record_fau(state.ratio, f)), loss + l, fau + f

      state, loss, fau = jax.lax.fori_loop(0, due, one_update, (state, jnp.zeros(()), jnp.zeros(())))
      sums = dict(returns=sums['returns'] + jnp.where(game_end, episode_return, 0.0),
                  episodes=sums['episodes'] + game_end.astype(jnp.int32), updates=sums['updates'] + due,
                  q_loss=sums['q_loss'] + loss, critic_fau=sums['critic_fau'] + fau)
      return (state, sums), None

    zeros = dict(returns=jnp.zeros(()), episodes=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32),
                 q_loss=jnp.zeros(()), critic_fau=jnp.zeros(()))
    state, sums = off_policy.run_steps(config, state, env_step, boundary, zeros)
    values = ratio_lib.chunk_metrics(sums, state.ratio, state.learner.hparams, ('q_loss', 'critic_fau'))
    values['epsilon'] = dqn.epsilon(state.steps, d.epsilon_start, d.epsilon_end, d.epsilon_steps, r.warmup)
    if self.atari and self.env.game in atari.SCORES:
      values['human_normalized'] = atari.human_normalized(values['episode_return'], self.env.game)
    return state, values

  def _learnt_reward(self, reward: jax.Array) -> jax.Array:
    """The reward stored for learning: clipped to [-c, c] with `dqn.clip_rewards` c > 0 (Dopamine's Atari
    runner: 1), as it is otherwise."""
    clip = self.config.dqn.get('clip_rewards', 0.0)
    reward = reward.astype(jnp.float32)
    return jnp.clip(reward, -clip, clip) if clip > 0 else reward

  @staticmethod
  def figures(workdir: str):
    """figures/plasticity.png, as Ma et al.'s Figs. 7-9 for a value-based agent: the return, the replay
    ratio (ARR's switch) and the Q-network's fraction of active units on its update batches and per module;
    with evaluation games on Atari, figures/atari_scores.md (Table 4's form); with `:da_reset`'s variants,
    figures/da_reset.png (Fig. 1: the return with and without resets, without and with random shift)."""
    return filter(None, [atari.scores_table(workdir),
                         plotting.panels_figure(workdir, 'da_reset', off_policy.da_reset_panels(workdir)),
                         plotting.panels_figure(workdir, 'plasticity', (
        ('episode_return', 'episode return'), ('replay_ratio', 'replay ratio'),
        ('critic_fau', 'FAU, Q-network (update batches)'), ('active_fraction_encoder', 'FAU, encoder (probe)'),
        ('active_fraction_head', 'FAU, head (probe)')))])

  def evaluate(self, state: State, data=None) -> Dict[str, jax.Array]:
    """The shared diagnostics on `probe_size` replayed transitions (their n-step targets as the
    loss's), and the fraction of active units of the encoder (conv layers) and the head (dense)."""
    del data
    r = self.config.replay
    key = jax.random.fold_in(state.key, -1 - state.steps)
    batch = replay_lib.sample(state.replay, key, self.config.probe_size, r.n_step, self.config.dqn.gamma)
    x = batch.obs.astype(jnp.float32)
    values = evaluation.diagnose(self.learner, state.learner, x, (batch.action, self._targets(state, batch)), key,
                                 self.config.diagnostics, evaluation.Convention(threshold=0.01, strict=True))
    _, features = self.learner.predict(state.learner, x)
    encoder = [h for name, h in features.items() if name.startswith('conv_')]
    for module, layers in (('encoder', encoder), ('head', _head(features))):
      if layers:
        values[f'active_fraction_{module}'] = metrics.active_fraction(layers)
    if self.config.dqn.get('eval_episodes', 0) > 0:
      values['eval_return'] = self._play(state, jax.random.fold_in(key, 1))
      if self.atari and self.env.game in atari.SCORES:
        values['eval_human_normalized'] = atari.human_normalized(values['eval_return'], self.env.game)
    return values

  def _play(self, state: State, key) -> jax.Array:
    """Dopamine's evaluation phase: `dqn.eval_episodes` games from fresh starts, one per environment, played at
    ε = `dqn.eval_epsilon` by the current network without learning, each to its end (Atari: game over or the step
    limit; gymnax: its episode's end); their mean score. With `dqn.eval_when='end'` (Atari-100k's protocol) only
    after the run's last step (NaN before), else at every evaluation (Dopamine's after each iteration)."""
    d, n = self.config.dqn, self.config.dqn.eval_episodes
    obs, env_state = jax.vmap(self.env.reset, in_axes=(0, None))(jax.random.split(key, n), self.env_params)
    # dqn.eval_when='end': games only at the run's end (before, none: NaN)
    skip = (d.get('eval_when', 'end') == 'end') & (state.steps < self.config.total_steps)

    def playing(carry):
      return ~jnp.all(carry[2])

    def step(carry):
      env_state, obs, done, returns, t = carry
      act_key, step_key = jax.random.split(jax.random.fold_in(key, t + 1))
      q, _ = self.learner.predict(state.learner, obs.astype(jnp.float32))
      action = dqn.epsilon_greedy(act_key, q, d.eval_epsilon)
      keys = jax.random.split(step_key, n)
      if self.atari:   # games that ended are not emulated further
        step = lambda k, s, a, on: self.env.step(k, s, a, active=on)
        obs, env_state, reward, terminated, truncated, info = jax.vmap(step)(keys, env_state, action, ~done)
      else:
        obs, env_state, reward, terminated, truncated, info = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(
            keys, env_state, action, self.env_params)
      game_end = info.get('game_over', jnp.logical_or(terminated, truncated))
      return env_state, obs, done | game_end, returns + jnp.where(done, 0.0, reward), t + 1

    start = (env_state, obs, jnp.full((n,), skip), jnp.zeros((n,)), jnp.zeros((), jnp.int32))
    return jnp.where(skip, jnp.nan, jnp.mean(jax.lax.while_loop(playing, step, start)[3]))


def _head(features) -> list:
  """The Q-network's dense hidden layers: the 'critic' whose FAU drives ARR."""
  return [h for name, h in features.items() if name.startswith('dense_')]


def _env_names():
  import gymnax  # pylint: disable=g-import-not-at-top
  return list(gymnax.registered_envs)


def _env_checks(env) -> list:
  """(condition, message) pairs for the env section: a gymnax environment or an Atari game that is there."""
  if atari.is_atari(env.name):
    game = atari.rom_id(env.name)
    return [
        (atari.installed(), f'env.name={env.name!r} needs ale-py and OpenCV, which are not installed: '
                            'pip install -e ".[atari]" (ale-py is GPL-2.0)'),
        (not atari.installed() or game in atari.game_names(),
         f'env.name={env.name!r}: ale-py has no game {game!r}; use ALE/ and a game in CamelCase, e.g. '
         "'ALE/Pong', 'ALE/MsPacman'"),
        (env.get('processes') is None or env.processes > 0,
         f'env.processes={env.get("processes")} must be > 0 (host processes emulating the games; unset: the '
         "platform's choice)"),
    ]
  gymnax_there = importlib.util.find_spec('gymnax') is not None
  return [
      (gymnax_there, 'gymnax is not installed: pip install -e . installs it (or pip install gymnax)'),
      (not gymnax_there or env.name in _env_names(),
       f'env.name={env.name!r} is neither a gymnax environment nor an Atari game (ALE/...); use one of '
       f'{_env_names()[:8] if gymnax_there else []} ... or e.g. ALE/Pong'),
  ]
