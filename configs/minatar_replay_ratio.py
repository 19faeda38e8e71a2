"""Replay ratio and plasticity in value-based RL (Ma et al., ICLR 2024, Figs. 7-9 and Table 1's Atari
rows; beyond_reference.md (d)): a DrQ(ε)-style DQN on MinAtar (gymnax) at replay ratios 0.5 / 1 / 2
and under Adaptive Replay Ratio (ARR: 0.5 until the Q-network's fraction of active units settles,
then 2), with and without data augmentation (random shift, pad 1 on the 10x10 grid).

  python launch/main.py --config=configs/minatar_replay_ratio.py --workdir=/tmp/minatar_rr
  python launch/main.py --config=configs/minatar_replay_ratio.py:smoke      # tests, seconds

Settings: MinAtar's DQN network (Young & Tian 2019: conv3x3(16) -> fc128, ReLU, PyTorch init),
Adam (lr 1e-4, eps 1.5e-4: DrQ(ε)'s), batch 32, a buffer of 100 000 transitions, 3-step double-Q
targets, γ 0.99, a hard target update every 1 000 updates, ε 1 -> 0.01 over the first 50 000 steps
after a warm-up of 5 000 random steps. ARR's check: every 50 episodes (the authors' check_freq),
switch when the mean critic FAU moved by at most 0.001 (Phi_gap).

Run time (2026-12-06, this 2-core CPU with one core taken by another job): the 30 runs step at 11
environment steps/s each once updates start (5 000 steps in 454 s), ~600 updates of batch 32 per
second over all runs: the update is compute-bound here (the 1024 -> 128 dense layer, ~380 MFLOP per
vmapped step of 15 runs). A call's runs make as many updates per step as its highest ratio (the
others' are masked), so the default's 500 000 steps are ~6-12 hours on this CPU: a GPU run, or a
smaller one, e.g. `--config=configs/minatar_replay_ratio.py:rr_0p5,rr_2,arr --config.num_seeds=2
--config.total_steps=100000`.
Not yet measured: the returns per replay ratio (Ma et al.'s claim 4) on MinAtar.
"""
from ddl import config as config_lib

name = config_lib.variant_name


def smoke(config):
  """Seconds: 2 seeds, 2 chunks of 300 steps, a 200-step warm-up, small batches, one program."""
  config.num_seeds = 2
  config.total_steps = 600
  config.steps_per_chunk = 300
  config.checkpoint_every = 1
  config.replay.update(capacity=500, batch_size=8, warmup=200)
  config.dqn.epsilon_steps = 200
  config.dqn.target_every = 50
  config.probe_size = 64
  config.diagnostics.hessian_iterations = 3
  config.arr.check_every = 2
  config.fuse_variants = True     # one program for the four variants (fewer to compile)
  config.variants = {'rr_0p5': dict(replay_ratio=0.5), 'rr_2': dict(replay_ratio=2.0),
                     'arr': dict(replay_ratio=0.5, arr_high_ratio=2.0),
                     'rr_1_augment': dict(replay_ratio=1.0, augment=1.0)}


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'dqn'
  config.num_seeds = 5
  config.total_steps = 500_000
  config.steps_per_chunk = 10_000
  config.probe_size = 512           # replayed transitions for the evaluator's diagnostics
  config.diagnostics.every = 5
  config.env = dict(name='Breakout-MinAtar')
  config.replay = dict(capacity=100_000, batch_size=32, n_step=3, warmup=5_000)
  config.dqn = dict(gamma=0.99, double=True, huber=1.0, target_every=1_000, target_tau=1.0,
                    epsilon_start=1.0, epsilon_end=0.01, epsilon_steps=50_000)
  config.network.update(widths=(16,), kernels=(3,), pool=False, dense=(128,), activation='relu', layer_norm='',
                        conv='patches')
  config.optimizer.name = 'adam'
  config.optimizer.eps = 1.5e-4
  config.hparams.learning_rate = 1e-4
  config.variants = {name('rr', ratio): dict(replay_ratio=ratio) for ratio in (0.5, 1.0, 2.0)}
  config.variants['arr'] = dict(replay_ratio=0.5, arr_high_ratio=2.0)
  for ratio in (0.5, 2.0):
    config.variants[name('rr', ratio) + '_augment'] = dict(replay_ratio=ratio, augment=1.0)
  config_lib.apply_config_arg(config, arg, {'smoke': smoke})
  return config
