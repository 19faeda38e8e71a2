"""Off-policy actor-critic RL under a replay ratio (Ma et al., ICLR 2024; beyond_reference.md (d)):
DrQ-v2 (Yarats et al. 2022, in Ma et al.'s code: DDPG with clipped double Q, n-step returns and a
scheduled exploration noise) on a DeepMind Control task in MJX (`ddl.rl.dmc`), from state, or from
84x84 pixels rendered inside the program (`env.pixels`: three stacked frames, `ddl.rl.render`).

One run = one seed's actor, critic, target critic, environment and replay buffer (on the device, in
the state; from pixels it keeps one frame per slot, `ddl.rl.replay`). One chunk = `steps_per_chunk`
agent steps (each `env.action_repeat` physics steps) in one `lax.scan`. Before
`drqv2.exploration_steps` the actions are uniform; afterwards the actor's mean plus noise of the
scheduled std (`drqv2.std_*`). After each step the agent makes as many updates as its replay ratio
owes (`ddl.rl.replay_ratio`, ARR included). An update samples a batch of n-step transitions; the
critic regresses both Q heads on r + γ^n min(Q1', Q2') of the target critic at an action the actor
samples with clipped noise; the actor then maximises min(Q1, Q2) of the updated critic at its sampled
action; the target critic follows by Polyak averaging (τ 0.01).

Modules: the actor and the critic are two learners (`ddl.learners.Learner`, each its own optimizer
of the config's optimizer section); from pixels the encoder is a third (`nets.DrQEncoder`, DrQ-v2's
`encoder_opt`): it learns from the critic's loss alone, through the critic at its parameters before
the update, and the actor and the target critic read its features detached (the actor's of the
replayed observations before its update, the target's of the next ones), as DrQ-v2's `update`. With
augmentation on (the `augment` agent setting, pad 4) both observations of a replayed batch are
shifted at random, independently. Resets, plasticity injection and unit transforms (CBP, ReDo) act
on the modules `intervene` lists ('actor', 'critic', and from pixels 'encoder'): Fig. 5's injection
into the actor vs the critic. Resets and injection act at the starts of boundary periods of
`replay.boundary_steps` agent steps (`ddl.rl.off_policy`; 0: chunk starts); the critic weights they
rewrite are copied into the target critic (`ddl.rl.dqn.follow_rewrites`). Replay ratio, ARR and
augmentation are the registry's agent settings; augmentation is refused from state, where there is no
image to shift.

Metrics per chunk: episode_return (mean over the episodes that ended in it), episodes, updates,
replay_ratio, critic_loss, actor_loss, critic_fau and actor_fau (the fraction of active units of
each module's ReLU layers over the chunk's update batches, as the authors' forward_with_FAU; ARR
reads the critic's), exploration_std; from pixels also encoder_fau (its ReLU maps). The evaluator
(every `diagnostics.every` chunks) takes the shared diagnostics of the critic
(`ddl.experiments.evaluation`) on `probe_size` replayed transitions, and the fraction of active units
and dormant fraction of each module.
"""
import dataclasses
import importlib.util
from typing import Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from ddl import metrics
from ddl import nets
from ddl import plotting
from ddl.experiments import evaluation
from ddl.learners import Learner, LearnerState
from ddl.rl import augment as augment_lib
from ddl.rl import ddpg
from ddl.rl import dmc
from ddl.rl import dqn
from ddl.rl import off_policy
from ddl.rl import render
from ddl.rl import replay as replay_lib
from ddl.rl import replay_ratio as ratio_lib

MODULES = ('actor', 'critic', 'encoder')
PER_MODULE_KINDS = ('unit', 'boundary')     # methods that act on the modules `intervene` lists


@struct.dataclass
class State:
  actor: LearnerState
  critic: LearnerState
  target: chex.ArrayTree                # the target critic's parameters
  env: dmc.EnvState
  obs: jax.Array                        # the current observation
  replay: replay_lib.Replay
  ratio: ratio_lib.Schedule             # replay-ratio credit and ARR's state
  key: chex.PRNGKey                     # acting and update randomness, folded by step
  steps: jax.Array                      # agent steps done, int32
  updates: jax.Array                    # updates done, int32
  episode_return: jax.Array             # the running episode's return so far
  encoder: Optional[LearnerState] = None   # from pixels: the encoder's learner


class DrQV2:
  """init(key, hparams, seed) -> State; run_chunk(State, data) -> (State, metrics). Pure, vmappable."""

  @staticmethod
  def observations(config) -> str:
    """What the agent sees: 'pixels' or 'state' (the agent settings' checks read it: random shift needs images)."""
    return 'pixels' if config.env.get('pixels', False) else 'state'

  def __init__(self, config, group):
    self.config = config
    self.pixels = self.observations(config) == 'pixels'
    self.env = dmc.from_config(config)
    self.examples_per_chunk = config.steps_per_chunk
    self.num_chunks = -(-config.total_steps // config.steps_per_chunk)
    self.calls_apart = off_policy.calls_apart(config)   # replay ratios in calls of their own (on CPU)
    self.encoder = self._module_learner('encoder', self.make_encoder(config), self._encoder_loss, group) \
        if self.pixels else None
    self.critic = self._module_learner('critic', self.make_network(config), ddpg.critic_loss, group)
    self.actor = self._module_learner('actor', self.make_actor(config, self.env.action_size), self._actor_loss, group)
    self.diagnostics_every = config.diagnostics.every

  def _module_learner(self, module: str, network, loss, group) -> Learner:
    learner = Learner.from_config(network, loss, self.config, group, off_policy.num_periods(self.config))
    if module in self.config.intervene:
      return learner
    return dataclasses.replace(learner, methods=tuple(m for m in learner.methods if m.kind not in PER_MODULE_KINDS))

  @staticmethod
  def make_network(config, obs_size: int = 0):
    """The critic (the module whose FAU drives ARR): DrQ-v2's double-Q critic, on the state or on the
    encoder's features."""
    if not obs_size and config.env.get('pixels', False):
      n = config.network
      obs_size = nets.DrQEncoder.output_size(config.env.get('image_size', 84), n.get('encoder_channels', 32),
                                             n.get('encoder_layers', 4))
    obs_size = obs_size or (dmc.observation_size(config.env.name) if dmc.installed() else 1)
    return nets.build(nets.DrQCritic, config.network, obs_size=obs_size)

  @staticmethod
  def make_encoder(config):
    n = config.network
    return nets.build(nets.DrQEncoder, n, channels=n.get('encoder_channels', 32), layers=n.get('encoder_layers', 4))

  @staticmethod
  def make_actor(config, actions: int):
    return nets.build(nets.DrQActor, config.network, outputs=actions)

  @staticmethod
  def checks(config):
    d = config.drqv2
    installed = dmc.installed()
    return [
        (installed, 'MuJoCo Playground is not installed: pip install -e . installs it (or pip install playground)'),
        (not installed or config.env.name in dmc.task_names(),
         f'env.name={config.env.name!r} is not a dm_control task of MuJoCo Playground or ddl; use one of '
         f'{dmc.task_names() if installed else ()}'),
        (config.env.name not in dmc.PORTED or importlib.util.find_spec('dm_control') is not None,
         f"env.name={config.env.name!r} is ddl's port of a dm_control task and loads dm_control's own model file, "
         'but dm-control is not installed: pip install dm-control'),
        (not config.env.get('pixels', False) or render.installed(),
         "env.pixels=True renders with MuJoCo Warp's ray tracer, but warp-lang is not installed: pip install -e . "
         'installs it (or pip install warp-lang), or set env.pixels=False (from state)'),
        (not config.env.get('pixels', False)
         or config.env.get('image_size', 84) >= 2 * config.network.get('encoder_layers', 4) + 3,
         'env.image_size is too small for the encoder: it must be >= 2 network.encoder_layers + 3'),
        (config.env.get('frame_stack', 3) >= 1, 'env.frame_stack must be >= 1'),
        _camera_check(config, installed),
        ('encoder' not in config.intervene or config.env.get('pixels', False),
         "intervene lists 'encoder', but from state there is no encoder: set env.pixels=True or remove it"),
        (config.env.physics in dmc.PHYSICS, f'env.physics={config.env.physics!r} is not known; use one of {dmc.PHYSICS}'),
        (config.env.action_repeat > 0, 'env.action_repeat must be > 0'),
        (set(config.intervene) <= set(MODULES), f'intervene={tuple(config.intervene)}: modules are {MODULES}'),
        (0 < d.gamma <= 1, 'drqv2.gamma must be in (0, 1]'),
        (0 < d.target_tau <= 1, 'drqv2.target_tau must be in (0, 1]'),
        (d.std_start >= 0 and d.std_end >= 0 and d.std_steps > 0, 'drqv2.std_start, std_end >= 0 and std_steps > 0'),
        (d.std_clip >= 0, 'drqv2.std_clip must be >= 0'),
    ] + replay_lib.config_checks(config, 'agent steps') + off_policy.config_checks(config) + evaluation.checks(config)

  @staticmethod
  def load_data(config):
    del config
    return None

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: environment frames (agent steps x action repeat) at its start."""
    return chunk * self.config.steps_per_chunk * self.config.env.action_repeat

  # The actor's loss: its "target" carries what it needs beside the actor's own output (the critic's
  # state, the observations, the noise key and std); the critic's is ddpg.critic_loss on fixed targets.
  def _actor_loss(self, mean: jax.Array, target) -> jax.Array:
    critic, obs, key, std = target
    action = ddpg.sample_action(key, mean, std, self.config.drqv2.std_clip)
    q, _ = self.critic.predict(critic, jnp.concatenate([obs, action], axis=-1))
    return ddpg.actor_loss(q)

  # The encoder's loss: the critic's, through the critic at its parameters before the update ("target":
  # the critic's state, the actions, the critic's targets).
  def _encoder_loss(self, features: jax.Array, target) -> jax.Array:
    critic, action, y = target
    q, _ = self.critic.predict(critic, jnp.concatenate([features, action], axis=-1))
    return ddpg.critic_loss(q, y)

  def _features(self, encoder: Optional[LearnerState], obs: jax.Array) -> jax.Array:
    """What the actor and the critic read of a batch of observations: the encoder's features (no
    gradient) from pixels, the state itself otherwise."""
    if self.encoder is None:
      return obs
    return jax.lax.stop_gradient(self.encoder.predict(encoder, obs)[0])

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    del seed
    actor_key, critic_key, env_key, run_key = jax.random.split(key, 4)
    encoder_key = jax.random.fold_in(key, 4)    # apart: runs from state draw as before the encoder came
    env, obs = self.env.reset(env_key)
    action = jnp.zeros((self.env.action_size,), jnp.float32)
    encoder = None if self.encoder is None else self.encoder.init(encoder_key, obs[None], hparams)
    features = self._features(encoder, obs[None])
    critic = self.critic.init(critic_key, jnp.concatenate([features, action[None]], axis=-1), hparams)
    actor = self.actor.init(actor_key, features, hparams)
    replay = replay_lib.init(self.config.replay.capacity, obs, action, self.env.frame_stack if self.pixels else 1,
                             episode_steps=self.env.episode_steps)
    zero = jnp.zeros((), jnp.int32)
    return State(actor=actor, critic=critic, target=critic.params, env=env, obs=obs, replay=replay,
                 ratio=ratio_lib.init(), key=run_key, steps=zero, updates=zero, episode_return=jnp.zeros(()),
                 encoder=encoder)

  def _std(self, steps: jax.Array) -> jax.Array:
    d = self.config.drqv2
    return ddpg.exploration_std(steps, d.std_start, d.std_end, d.std_steps)

  def _update(self, state: State, key) -> Tuple[State, Dict[str, jax.Array]]:
    """One critic step, one actor step, the target's Polyak step -> (state, their losses and FAUs)."""
    r, d = self.config.replay, self.config.drqv2
    sample_key, next_key, critic_key, actor_key, noise_key = jax.random.split(key, 5)
    augment_key, encoder_key = jax.random.split(jax.random.fold_in(key, 5))   # apart, as the encoder's in `init`
    batch = replay_lib.sample(state.replay, sample_key, r.batch_size, r.n_step, d.gamma)
    if 'augment' in state.critic.hparams:    # a program with augmentation (some of its runs)
      batch = augment_lib.shift_batch(augment_key, batch, state.critic.hparams['augment'] > 0, self.config.augment.pad)
    std = self._std(state.steps)
    next_features = self._features(state.encoder, batch.next_obs)
    next_mean, _ = self.actor.predict(state.actor, next_features)
    next_action = ddpg.sample_action(next_key, next_mean, std, d.std_clip)
    target_critic = state.critic.replace(params=state.target)
    next_q, _ = self.critic.predict(target_critic, jnp.concatenate([next_features, next_action], axis=-1))
    y = jax.lax.stop_gradient(ddpg.critic_targets(batch.returns, batch.discount, next_q))
    values, encoder, features = {}, state.encoder, batch.obs
    if self.encoder is not None:    # its step's forward pass gives the features, before its update
      encoder, encoder_out = self.encoder.step(state.encoder, batch.obs, (state.critic, batch.action, y), encoder_key)
      features = jax.lax.stop_gradient(encoder_out.output)
      values['encoder_fau'] = metrics.active_fraction(list(encoder_out.features.values()))
    critic, critic_out = self.critic.step(state.critic, jnp.concatenate([features, batch.action], axis=-1), y,
                                          critic_key)
    actor, actor_out = self.actor.step(state.actor, features, (critic, features, noise_key, std), actor_key)
    target = dqn.polyak(state.target, critic.params, d.target_tau)
    values.update(critic_loss=critic_out.loss, actor_loss=actor_out.loss,
                  critic_fau=metrics.active_fraction(_relu_layers(critic_out.features)),
                  actor_fau=metrics.active_fraction(_relu_layers(actor_out.features)))
    return state.replace(actor=actor, critic=critic, target=target, encoder=encoder, updates=state.updates + 1), values

  def _act(self, state: State, key) -> jax.Array:
    """Uniform actions before `exploration_steps`, then the actor's mean plus scheduled noise."""
    uniform_key, noise_key = jax.random.split(key)
    mean, _ = self.actor.predict(state.actor, self._features(state.encoder, state.obs[None]))
    noisy = ddpg.sample_action(noise_key, mean[0], self._std(state.steps))
    uniform = jax.random.uniform(uniform_key, noisy.shape, minval=-1.0, maxval=1.0)
    return jnp.where(state.steps < self.config.drqv2.exploration_steps, uniform, noisy)

  def run_chunk(self, state: State, data) -> Tuple[State, Dict[str, jax.Array]]:
    del data
    config, r = self.config, self.config.replay
    def boundary(state, period):
      key = jax.random.fold_in(state.key, -1 - period)
      features = self._features(state.encoder, state.obs[None])
      sample = jnp.concatenate([features, jnp.zeros((1, self.env.action_size))], axis=-1)
      critic = self.critic.boundary(state.critic, period, jax.random.fold_in(key, 0), sample)
      encoder = None if self.encoder is None else self.encoder.boundary(
          state.encoder, period, jax.random.fold_in(key, 2), state.obs[None])
      return state.replace(critic=critic, target=dqn.follow_rewrites(state.target, state.critic.params, critic.params),
                           actor=self.actor.boundary(state.actor, period, jax.random.fold_in(key, 1), features),
                           encoder=encoder)

    names = ('critic_loss', 'actor_loss', 'critic_fau', 'actor_fau') + (('encoder_fau',) if self.pixels else ())

    def env_step(carry, _):
      state, sums = carry
      key = jax.random.fold_in(state.key, state.steps)
      act_key, update_key = jax.random.split(key)
      action = self._act(state, act_key)
      env, obs, reward, terminated, truncated, final_obs = self.env.step(state.env, action)
      ended = jnp.logical_or(terminated, truncated)
      replay = replay_lib.add(state.replay, state.obs, action, reward, final_obs, terminated, ended)
      episode_return = state.episode_return + reward
      due, ratio = ratio_lib.after_step(state.ratio, ended, state.critic.hparams, config.arr, state.steps, r.warmup)
      state = state.replace(env=env, obs=obs, replay=replay, ratio=ratio, steps=state.steps + 1,
                            episode_return=jnp.where(ended, 0.0, episode_return))

      def one_update(i, carry):
        state, totals = carry
        state, values = self._update(state, jax.random.fold_in(update_key, i))
        state = state.replace(ratio=ratio_lib.record_fau(state.ratio, values['critic_fau']))
        return state, {k: totals[k] + values[k] for k in names}

      state, totals = jax.lax.fori_loop(0, due, one_update, (state, {k: jnp.zeros(()) for k in names}))
      sums = {**{k: sums[k] + totals[k] for k in names},
              'returns': sums['returns'] + jnp.where(ended, episode_return, 0.0),
              'episodes': sums['episodes'] + ended.astype(jnp.int32), 'updates': sums['updates'] + due}
      return (state, sums), None

    zeros = {**{k: jnp.zeros(()) for k in names + ('returns',)},
             'episodes': jnp.zeros((), jnp.int32), 'updates': jnp.zeros((), jnp.int32)}
    state, sums = off_policy.run_steps(config, state, env_step, boundary, zeros)
    values = ratio_lib.chunk_metrics(sums, state.ratio, state.critic.hparams, names)
    values['exploration_std'] = self._std(state.steps)
    return state, values

  @staticmethod
  def figures(workdir: str):
    """figures/plasticity.png, as Ma et al.'s Figs. 3, 8 and 9: the return, the replay ratio (ARR's
    switch) and the fraction of active units of the critic, the actor and (from pixels) the encoder; with
    `:da_reset`'s variants, figures/da_reset.png (Fig. 1: DA x Reset)."""
    return filter(None, [plotting.panels_figure(workdir, 'da_reset', off_policy.da_reset_panels(workdir)),
                         plotting.panels_figure(workdir, 'plasticity', (
        ('episode_return', 'episode return'), ('replay_ratio', 'replay ratio'),
        ('critic_fau', 'FAU, critic'), ('actor_fau', 'FAU, actor'), ('encoder_fau', 'FAU, encoder')))])

  def evaluate(self, state: State, data=None) -> Dict[str, jax.Array]:
    """The shared diagnostics of the critic on `probe_size` replayed transitions (its n-step
    targets as the loss's), and each module's fraction of active units and dormant fraction (the
    encoder's over its ReLU maps, each (position, channel) a unit)."""
    del data
    r, d = self.config.replay, self.config.drqv2
    key = jax.random.fold_in(state.key, -1 - state.steps)
    batch = replay_lib.sample(state.replay, key, self.config.probe_size, r.n_step, d.gamma)
    features, next_features = self._features(state.encoder, batch.obs), self._features(state.encoder, batch.next_obs)
    x = jnp.concatenate([features, batch.action], axis=-1)
    next_mean, _ = self.actor.predict(state.actor, next_features)
    next_q, _ = self.critic.predict(state.critic.replace(params=state.target),
                                    jnp.concatenate([next_features, next_mean], axis=-1))
    y = ddpg.critic_targets(batch.returns, batch.discount, next_q)
    values = evaluation.diagnose(self.critic, state.critic, x, y, key, self.config.diagnostics,
                                 evaluation.Convention(threshold=0.01, strict=True))
    modules = [('actor', self.actor, features), ('critic', self.critic, x)]
    if self.encoder is not None:
      modules.append(('encoder', self.encoder, batch.obs))
    for module, learner, inputs in modules:
      learner_state = getattr(state, module)
      _, module_features = learner.predict(learner_state, inputs)
      layers = list(module_features.values()) if module == 'encoder' else _relu_layers(module_features)
      values[f'active_fraction_{module}'] = metrics.active_fraction(layers)
      values[f'dormant_fraction_{module}'] = metrics.dormant_fraction_all(layers, threshold=0.01, strict=True)
    return values


def _camera_check(config, installed: bool):
  """(condition, message): from pixels, `env.camera` is one of the task's cameras (-1: DrQ-v2's)."""
  camera, name = config.env.get('camera', -1), config.env.name
  if not (config.env.get('pixels', False) and installed and name in dmc.task_names()) or camera < 0:
    return True, ''
  count = dmc.camera_count(name)
  return camera < count, (f'env.camera={camera}: {name} has {count} cameras (numbered from 0); -1 takes DrQ-v2\'s '
                          'camera for the task')


def _relu_layers(features) -> list:
  """A module's ReLU layers (its 'hidden_i' features; the trunk is tanh): what its FAU pools."""
  return [h for name, h in features.items() if 'hidden_' in name]

