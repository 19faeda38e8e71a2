"""PPO on stationary Ant (Dohare et al. 2024, Fig. 4 and ED Fig. 5; lop_reference.md §5.5, §6.5).

Reproduces: standard PPO (Adam 0.9/0.999) peaks and then collapses while its policy's dormant
fraction rises and stable rank falls; "proper Adam" (0.99/0.99) fails later; L2 and CBP (+L2) keep
performing (CBP best); ReDo+L2 worsens over time. 30 seeds x {std, ns, l2, cbp, cbpi, redo},
50 M steps each (the original: 100 M configured, 50 M plotted); returns of finished episodes per
chunk of 122 updates (249 856 steps, the original's 250 k bins), with 95 % bootstrap bands.

  python launch/main.py --config=configs/ant.py
  python launch/main.py --config=configs/ant.py:smoke       # tiny nets, a few thousand steps, ~1 min
  python launch/main.py --config=configs/ant.py:std,cbp --config.num_seeds=5 --config.env.backend=mjx

Physics (`env.model`, `env.backend`): the default model is 'gymnasium', the paper's Ant: gym's
ant.xml (every body geom touches the floor, RK4, Newton solver), frame skip 5, Ant-v4's reward and
termination, and reset noise drawn per episode. The backend is a platform choice
(ddl/platform_defaults.py). On a CPU it is 'mujoco': MuJoCo's own C simulator in float64, as the
original ran it, on the host's cores, bit for bit gymnasium's Ant-v4 (ddl/rl/mujoco_host.py). On a
GPU it is 'mjx': MJX in float32, patched to step as MuJoCo C (ddl/rl/mjx_patches.py). env.model=brax
keeps Brax's own Ant (only the feet touch the floor, one solver iteration) on any backend but
'mujoco'. env.model_file: another MuJoCo XML of the Ant for env.model=gymnasium ('' : gymnasium's
ant.xml), checked at launch (it must load and have Ant-v4's layout). The smoke runs the paper's Ant
on 'mujoco', which has no physics to compile.

Expected run time on this 2-core CPU (launch/benchmark.py --workload=ant --seeds=30 --variant=std
--chunks=1 --override=updates_per_chunk=1 --override=ppo.rollout_steps=256 --override=probe_steps=256:
one update per 256-step rollout, the same learning per environment step as 2048-step rollouts).
On 'mujoco' (2026-12-06): 1 542 env steps/s for the 30 seeds including learning, compile 15 s; the
env alone ran at 4 619. So 30 seeds x 50 M steps would take ~11 days here, and a 64-core machine
would take ~8 h per variant if the per-core rate scales (docs/benchmarks.md). On 'mjx' (2026-11-30):
33.6 env steps/s, compile 5 min, ~1.4 years. On one H200 MJX's paper Ant is latency-bound at ~300
steps/s for 30 copies. Earlier figures for env.model=brax on mjx (quiet machine): 1 seed 4 060 env
steps/s including learning; 30 vmapped seeds 6 860 (std) and 6 680 (cbp) steps/s in total (under
load: 1 320-3 220); the 160 minibatch steps of each update take about half the time, acting a third.
Compile: 1-2 min per program on this CPU. Smoke: ~1 min (about 30 s with a warm compilation
cache).
"""
from ddl import config as config_lib
from ddl import platform_defaults


def smoke(config):
  """Tiny networks, short rollouts and episodes, 2 seeds, 3 chunks of 2 updates x 256 steps; the
  paper's Ant on MuJoCo C (env.backend=mujoco: no physics to compile, the fastest smoke on a CPU);
  std, ns, l2, cbp and cbpi share a program, redo has its own."""
  config.num_seeds = 2
  config.total_steps = 3 * 2 * 256
  config.updates_per_chunk = 2
  config.probe_steps = 200
  config.checkpoint_every = 2
  config.env.model = 'gymnasium'
  config.env.backend = 'mujoco'
  config.env.episode_length = 200       # several episodes per seed in the few steps
  config.network.hidden = (16, 16)
  config.ppo.rollout_steps = 256
  config.ppo.epochs = 2
  config.ppo.minibatches = 4
  config.hparams.learning_rate = 1e-3
  for name in ('cbp', 'cbpi'):
    config.variants[name].replacement_rate = 1e-2
    config.variants[name].maturity_threshold = 5.0
  config.variants.redo.cbp = dict(method='redo', redo_period=3)
  config.fuse_variants = True     # fewer programs to compile: std..cbpi in one, redo in another


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'ppo'
  config.total_steps = 50_000_000
  config.updates_per_chunk = 122          # 249 856 steps: a chunk is a bin of the return curve
  config.probe_steps = 1000               # dormant units and stable rank over the last 1000 acting steps
  config.figure_bin = 1
  config.figure_band = 'bootstrap95'
  # model: gymnasium's ant.xml (the paper's Ant) or Brax's; starts: model brax's initial states drawn
  # per rollout and used in turn at episode ends (see ddl/rl/env.py)
  config.env = dict(model='gymnasium', backend=platform_defaults.auto(str), num_envs=1, episode_length=1000, starts=8,
                    threads=platform_defaults.auto(int),   # env.backend=mujoco: host threads (one per core)
                    model_file='',   # model gymnasium: another MuJoCo XML of the Ant ('': gymnasium's ant.xml)
                    friction=dict(kind='constant', value=1.0, low=0.02, high=2.0, num=50,
                                  change_every=2_000_000, file=''))
  config.network.update(hidden=(256, 256), weight_init='lecun', layer_norm='')
  config.ppo = dict(rollout_steps=2048, epochs=10, minibatches=16, gamma=0.99, lam=0.95, clip=0.2,
                    value_coef=1.0, normalise_advantages=True)
  config.optimizer.name = 'adam'
  config.cbp.util_type = 'contribution'
  config.cbp.count_mode = 'bernoulli'
  config.cbp.redo_threshold = 0.1
  config.cbp.redo_period = 100
  config.hparams.learning_rate = 1e-4
  config.hparams.b1 = 0.99
  config.hparams.b2 = 0.99
  config.hparams.maturity_threshold = 10_000.0
  config.hparams.decay_rate = 0.99
  config.variants = dict(
      std=dict(b1=0.9, b2=0.999),
      ns=dict(),
      l2=dict(weight_decay=1e-3),
      cbp=dict(weight_decay=1e-4, replacement_rate=1e-4),
      cbpi=dict(weight_decay=1e-4, replacement_rate=1e-4, decay_rate=0.0),
      redo=dict(weight_decay=1e-4, cbp=dict(method='redo')),
  )
  config_lib.apply_config_arg(config, arg, {'smoke': smoke})
  return config
