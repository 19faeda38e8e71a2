"""Stream AC(lambda) with ObGD on stationary Ant (Elsayed, Vasan & Mahmood 2024, "Streaming deep
reinforcement learning finally works"; beyond_reference.md (b)), beside PPO (configs/ant.py).

Reproduces the official `stream_ac_continuous.py` of `mohmdelsayed/streaming-drl` on the Ant of
configs/ant.py: one environment per seed, one ObGD step per environment step (alpha 1, gamma 0.99,
lambda 0.8, kappa 3 for the actor and 2 for the critic, entropy 0.01 signed by the TD error),
two hidden layers of 128 Leaky ReLUs after parameter-free layer norm, 90 % sparse initialisation,
observations normalised by running mean and variance, rewards scaled by the running std of the
discounted return, the time feature appended. Claim checked: stream AC learns Ant with no replay,
no batches and no target networks (the paper: competitive with batch PPO on MuJoCo); whether it
keeps learning over 50 M steps, and whether CBP on both networks, or per-weight step sizes for the
critic, change that. Variants: stream, cbp (not from the paper: CBP's rate set so that about as many
units per environment step are replaced as in configs/ant.py's cbp), tidbd (not from the paper: the
critic's step sizes per weight, meta-learned by TIDBD (Kearney et al. 2018) inside ObGD's bound from
alpha = 1, obgd.step_sizes='tidbd' in `ddl.learners.obgd`; the actor keeps ObGD). 30 seeds, 50 M
steps (the paper: 2 M on gym's Ant-v4), bins of 250 k steps as PPO's.

  python launch/main.py --config=configs/stream_ant.py
  python launch/main.py --config=configs/stream_ant.py:smoke       # 2 seeds, 3 x 1000 steps, ~1-2 min
  python launch/main.py --config=configs/stream_ant.py:stream --config.num_seeds=5
  python launch/main.py --config=configs/stream_ant.py:one_program # the three variants in one program

Physics as configs/ant.py: the paper's Ant (env.model=gymnasium; on a CPU MuJoCo C on host threads,
env.backend=mujoco, also in the smoke; on a GPU MJX). Throughput
(launch/benchmark.py --workload=stream_ant --seeds=30 --variant=stream --env_alone; the env alone:
30 copies on the same devices, random actions), environment steps per second of all 30 seeds:
  paper's Ant on MuJoCo C (2026-12-06, + --chunks=1 --override=steps_per_chunk=500
  --override=env.refill_every=500 --override=probe_steps=100 --override=env.backend=mujoco, tests
  running beside it): 2 248 including learning, 3 353 the env alone (ratio 0.67), compile 21 s: 30
  seeds x 50 M steps in ~8 days here;
  paper's Ant on MJX (2026-11-30, nothing else running, + --chunks=1 --override=steps_per_chunk=100 --override=env.refill_every=100
  --override=probe_steps=100): 79.8 including learning, 87.5 the env alone (ratio 0.91), compile
  104 s: 30 seeds x 50 M steps would take ~7 months here; on one H200 (2026-11-30) it is
  latency-bound: 308 steps/s for 30 seeds with learning, 305 the env alone (each seed ~10 steps/s,
  ~56 days for 50 M steps); Brax's Ant there: 32 666 steps/s for stream and cbp's 60 runs;
  --override="env.model='brax'" (mjx): 3 834 including learning, 6 236 the env alone (ratio 0.61),
  compile 92 s: learning adds ~3 ms per step of 30 seeds, most of it ObGD's passes over the
  parameters (trace, its L1 norm, the update, the episode-end reset).
Smoke: ~1-2 min (most of it compilation).
"""
from ddl import config as config_lib
from ddl import platform_defaults

# TIDBD's meta step size theta of the variant tidbd, untuned for returns: one decade below where
# the critic diverged. Measured on Brax's Ant on spring (the smoke's then) with the full-size critic (128,
# 128), 4 seeds x 12 k steps, theta in one program (2026-11-30, this CPU): the std of the critic's
# step sizes (all start at alpha = 1; mean over seeds) after 12 k steps was < 5e-5, 1e-4, 1.1e-3,
# 0.011, 0.11 for theta = 1e-3, 1e-2, 0.1, 1, 10 (about proportional to theta, growing little after
# 3 k steps), the returns within seed noise of theta = 0's; theta = 100 diverged (|TD error| 19
# instead of 0.1, the step sizes' std 2.2).
# Sutton's 1e-3 for a linear unit does nothing here: inside ObGD's bound alpha_eff ~ 1/M, so h ~
# alpha_eff delta z is roughly 1/(kappa x #weights) per weight. With the smoke's (16, 16) critic the
# same theta spreads the step sizes ~10x more (std 0.95 at theta = 10, still stable).
META_STEP_SIZE = 10.0


def one_program(config):
  """The preset 'one_program': every variant in the program of tidbd (obgd.step_sizes='tidbd'), the
  others at meta_step_size 0, where TIDBD is ObGD (its step sizes stay alpha: tests/test_obgd_step_sizes.py).
  With fuse_variants (the smoke; AUTO on a GPU) that is one program for stream, cbp and tidbd instead
  of two; the others then carry TIDBD's state and passes (O(#weights) per step)."""
  with config.unlocked():
    config.obgd.step_sizes = 'tidbd'
    config.hparams.meta_step_size = 0.0
  if 'tidbd' in config.variants:
    tidbd = config.variants.tidbd
    with tidbd.unlocked():
      if 'obgd' in tidbd and tidbd.obgd.to_dict() == {'step_sizes': 'tidbd'}:
        del tidbd['obgd']


def smoke(config):
  """Tiny networks, 2 seeds, 3 chunks of 1000 steps, 200-step episodes, the paper's Ant on MuJoCo C
  (env.backend=mujoco: no physics to compile, the fastest smoke on a CPU); stream, cbp and tidbd in
  one program (compilation dominates the smoke; `one_program`)."""
  config.num_seeds = 2
  config.total_steps = 3 * 1000
  config.steps_per_chunk = 1000
  config.probe_steps = 200
  config.checkpoint_every = 2
  config.env.model = 'gymnasium'
  config.env.backend = 'mujoco'
  config.env.episode_length = 200
  config.env.refill_every = 500
  config.network.hidden = (16, 16)
  config.variants.cbp.replacement_rate = 1e-2
  config.variants.cbp.maturity_threshold = 5.0
  config.fuse_variants = True
  one_program(config)


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'stream_ac'
  config.total_steps = 50_000_000
  config.steps_per_chunk = 250_000        # a chunk is a bin of the return curve (PPO's: 249 856)
  config.probe_steps = 1000               # dormant units and stable rank over the last 1000 observations
  config.figure_bin = 1
  config.figure_band = 'bootstrap95'
  # one env per seed; model: gymnasium's ant.xml (the paper's Ant) or Brax's; starts: model brax's
  # initial states drawn every refill_every steps and used in turn at episode ends (see ddl/rl/env.py)
  config.env = dict(model='gymnasium', backend=platform_defaults.auto(str), episode_length=1000, starts=8, refill_every=1000,
                    threads=platform_defaults.auto(int),   # env.backend=mujoco: host threads (one per core)
                    model_file='',   # model gymnasium: another MuJoCo XML of the Ant ('': gymnasium's ant.xml)
                    friction=dict(kind='constant', value=1.0, low=0.02, high=2.0, num=50,
                                  change_every=2_000_000, file=''))
  config.network.update(hidden=(128, 128), activation='leaky_relu', weight_init='sparse', layer_norm='plain')
  config.stream = dict(entropy_coef=0.01)
  config.optimizer.name = 'obgd'
  config.obgd.per_network = True          # actor (kappa_policy) and critic (kappa): one ObGD each
  config.hparams.learning_rate = 1.0      # ObGD's alpha
  config.hparams.discount = 0.99
  config.hparams.trace_lambda = 0.8
  config.hparams.kappa = 2.0
  config.hparams.kappa_policy = 3.0
  config.cbp.util_type = 'contribution'
  config.cbp.count_mode = 'bernoulli'
  config.hparams.maturity_threshold = 10_000.0
  config.hparams.decay_rate = 0.99
  config.variants = dict(
      stream=dict(),
      # ~1.3e-3 units per layer and env step; configs/ant.py's cbp: 1e-4 x 256 units x 160 minibatch
      # steps per 2048 env steps = 2e-3
      cbp=dict(replacement_rate=1e-5),
      # the critic's per-weight step sizes meta-learned by TIDBD inside ObGD's bound, from alpha = 1
      # (ddl.learners.obgd); the actor keeps ObGD. theta: META_STEP_SIZE's note
      tidbd=dict(obgd=dict(step_sizes='tidbd'), meta_step_size=META_STEP_SIZE),
  )
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'one_program': one_program})
  return config
