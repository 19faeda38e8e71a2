"""Stream AC(lambda) (Elsayed, Vasan & Mahmood 2024, official `stream_ac_continuous.py` of
`mohmdelsayed/streaming-drl`) as pure functions: one environment, one update per step.

Per step, as upstream:
  a ~ N(mu(s), std(s))                        the unclipped sample is what the update sees;
  env.step(clip(a, -1, 1))                    gymnasium's ClipAction (Ant's action box)
  s' <- normalised(s') + time feature         NormalizeObservation then AddTimeInfo
  r <- r / sqrt(var(return trace) + 1e-8)     ScaleReward
  delta = r + gamma v(s') (1 - done) - v(s)   done: termination or time limit, as upstream
  ObGD on the critic with f = v(s), on the actor with f = log pi(a|s) + c H(pi(.|s)) sign(delta)
  (`ddl.learners.obgd`, the traces reset after the update when the step ended an episode).

The wrappers' statistics (`SampleMeanStd`): count, mean and variance (sample variance, n - 1; 1
until two samples), updated with every observation before it is normalised, the first one
included (so the first normalised observation is 0). Kept here as (count, mean, var) with var
updated as var += ((x - m_old)(x - m_new) - var) / (n - 1), equal to upstream's p / (n - 1) but
in float32 a sum p of 10^7 squares stops growing while n does (var would shrink); here the
statistics freeze once 1/n is below float32 resolution (~10^7 samples) instead.

Observation differences forced by the autoresetting Brax env (`ddl.rl.env`): at an episode end the
env returns the next episode's first observation, not the terminal one, so the statistics miss the
terminal observations (upstream adds both the terminal and the reset observation) and v(s') at a
done step is of the reset observation (multiplied by 0, as upstream). The time feature follows
upstream's `AddTimeInfo` exactly: -0.5 at a reset, and the observation after the k-th step of an
episode carries -0.5 + (k - 1) / T (upstream appends, then increments), T the time limit.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ddl.rl import ppo

EPSILON = 1e-8   # upstream's wrappers' epsilon


@struct.dataclass
class RunningStats:
  """Running mean and sample variance of a stream (upstream's `SampleMeanStd`)."""
  count: jax.Array    # int32
  mean: jax.Array
  var: jax.Array      # p / (count - 1); 1 while count < 2

  @classmethod
  def zeros(cls, shape=()) -> 'RunningStats':
    return cls(count=jnp.zeros((), jnp.int32), mean=jnp.zeros(shape), var=jnp.ones(shape))

  def update(self, x: jax.Array) -> 'RunningStats':
    count = self.count + 1
    n = count.astype(jnp.float32)
    mean = self.mean + (x - self.mean) / n
    # at count 2 this is (x - m_old)(x - m_new), whatever the placeholder var was
    var = jnp.where(count < 2, 1.0, self.var + ((x - self.mean) * (x - mean) - self.var) / jnp.maximum(n - 1, 1.0))
    return RunningStats(count=count, mean=mean, var=var)


def normalise_observation(stats: RunningStats, obs: jax.Array):
  """NormalizeObservation: update with obs, then (obs - mean) / sqrt(var + 1e-8). -> (stats, obs)."""
  stats = stats.update(obs)
  return stats, (obs - stats.mean) / jnp.sqrt(stats.var + EPSILON)


def scale_reward(stats: RunningStats, trace: jax.Array, reward: jax.Array, done: jax.Array, gamma):
  """ScaleReward: trace <- trace gamma (1 - done) + r, the statistics updated with the trace, and
  r / sqrt(var + 1e-8). -> (stats, trace, scaled reward)."""
  trace = trace * gamma * (1.0 - done.astype(jnp.float32)) + reward
  stats = stats.update(trace)
  return stats, trace, reward / jnp.sqrt(stats.var + EPSILON)


def time_feature(episode_step: jax.Array, time_limit: int) -> jax.Array:
  """AddTimeInfo's feature of an observation taken after `episode_step` steps of its episode."""
  return -0.5 + jnp.maximum(episode_step - 1, 0).astype(jnp.float32) / time_limit


def gaussian_entropy(std: jax.Array) -> jax.Array:
  """H(N(mu, std^2)) summed over action dimensions."""
  return jnp.sum(0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(std), axis=-1)


class Target(NamedTuple):
  """What the stream AC objective needs besides the observation (the learner's 'target')."""
  action: jax.Array        # (1, actions), the unclipped sample
  sign: jax.Array          # sign(delta), no gradient


def objective(output, target: Target, entropy_coef: float = 0.01) -> jax.Array:
  """The quantity whose gradient ObGD traces (upstream's backward passes of -v(s) and
  -(log pi(a|s) + c H sign(delta))): one sum over the two networks, whose parameters are disjoint.
  output: (mean, std, value) of `nets.StreamActorCritic` on one observation."""
  mean, std, value = output
  log_prob = ppo.gaussian_log_prob(mean, jnp.log(std), target.action)
  return -jnp.sum(value + log_prob + entropy_coef * gaussian_entropy(std) * target.sign)


@struct.dataclass
class AgentState:
  """The wrappers' state of one seed (its learner and env states live beside it)."""
  obs: jax.Array             # current observation: normalised, time feature appended
  obs_stats: RunningStats
  reward_stats: RunningStats
  reward_trace: jax.Array


def reset(env, env_state, time_limit: int) -> AgentState:
  """The wrappers after the env's first reset (its observation enters the statistics)."""
  raw = env.observation(env_state)
  stats, obs = normalise_observation(RunningStats.zeros(raw.shape), raw)
  return AgentState(obs=jnp.concatenate([obs, time_feature(env_state.episode_step, time_limit)[None]]),
                    obs_stats=stats, reward_stats=RunningStats.zeros(), reward_trace=jnp.zeros(()))


class StepInfo(NamedTuple):
  reward: jax.Array            # raw reward
  done: jax.Array
  finished_return: jax.Array   # raw return of the episode that ended (0 where none did)
  td_error: jax.Array
  num_replaced: jax.Array


def step(learner, learner_state, agent: AgentState, env, env_state, key, global_step, schedule, time_limit: int):
  """One environment step and one learner step of one seed. global_step counts this step.
  Returns (learner_state, agent, env_state, StepInfo)."""
  network = learner.network
  act_key, learn_key = jax.random.split(key)
  params = learner.network_params(learner_state)   # what the network runs on (e.g. spectrally normalised)
  s = agent.obs[None]
  mean, std = network.policy(params, s)
  action = mean + std * jax.random.normal(act_key, mean.shape)
  # the env's key (its next episode's initial state) is neither act_key nor learn_key
  env_state, out = env.step(env_state, jnp.clip(action[0], -1.0, 1.0), jax.random.fold_in(key, 2), global_step,
                            schedule)
  obs_stats, next_obs = normalise_observation(agent.obs_stats, env.observation(env_state))
  next_obs = jnp.concatenate([next_obs, time_feature(env_state.episode_step, time_limit)[None]])
  gamma = learner_state.hparams['discount']
  reward_stats, trace, reward = scale_reward(agent.reward_stats, agent.reward_trace, out.reward, out.done, gamma)
  v, v_next = network.value(params, jnp.stack([agent.obs, next_obs]))
  delta = reward + gamma * v_next * (1.0 - out.done.astype(jnp.float32)) - v
  learner_state, learned = learner.step(learner_state, s, Target(action, jnp.sign(delta)), learn_key,
                                        extra=dict(td_error=delta, done=out.done))
  agent = AgentState(obs=next_obs, obs_stats=obs_stats, reward_stats=reward_stats, reward_trace=trace)
  return learner_state, agent, env_state, StepInfo(out.reward, out.done, out.finished_return, delta,
                                                   learned.num_replaced)
