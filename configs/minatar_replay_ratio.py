"""Replay ratio and plasticity in value-based RL (Ma et al., ICLR 2024, Figs. 1 and 7-9 and Table 1's
Atari rows; beyond_reference.md (d)): a DrQ(ε)-style DQN on MinAtar (gymnax) at replay ratios 0.5 and 2
and under Adaptive Replay Ratio (ARR: 0.5 until the Q-network's fraction of active units settles,
then 2); `:full` adds RR 1 and random shift (pad 1 on the 10x10 grid), `:da_reset` is Fig. 1's grid;
`:atari` and `:paper` are Atari-100k on the Arcade Learning Environment (Table 4: DrQ(ε), ReDo and ARR).

  python launch/main.py --config=configs/minatar_replay_ratio.py --workdir=/tmp/minatar_rr   # ~28 min, CPU
  python launch/main.py --config=configs/minatar_replay_ratio.py:da_reset --workdir=/tmp/minatar_da
  python launch/main.py --config=configs/minatar_replay_ratio.py:full --workdir=/tmp/minatar_full   # a GPU
  python launch/main.py --config=configs/minatar_replay_ratio.py:smoke      # tests, seconds
  python launch/main.py --config=configs/minatar_replay_ratio.py:atari --workdir=/tmp/pong     # one game, a GPU
  python launch/main.py --config=configs/minatar_replay_ratio.py:paper --workdir=/tmp/atari    # Table 4, a GPU
  python launch/main.py --config=configs/minatar_replay_ratio.py:atari,smoke   # tests, seconds

Settings: MinAtar's DQN network (Young & Tian 2019: conv3x3(16) -> fc128, ReLU, PyTorch init),
Adam (lr 1e-4, eps 1.5e-4: DrQ(ε)'s), batch 32, a buffer of 100 000 transitions, 3-step double-Q
targets, γ 0.99, a hard target update every 1 000 updates, ε 1 -> 0.01 over the 25 000 steps after
a warm-up of 5 000 random steps (50 000 in `:full`). ARR's check: every 50 episodes (the authors'
check_freq), switch when the mean critic FAU moved by at most 0.001 (Phi_gap). On a CPU each
replay ratio is a call of its own (`replay.calls_per_ratio`, ddl/platform_defaults.py): a call's
runs all make its highest ratio's updates, the lower ratios' masked.

The default (Breakout, 3 seeds, 100 000 steps; measured 2026-12-06 on this 2-core CPU, shared with
other jobs for part of it): 28.4 min (1 705 s) for the 9 runs, 760 updates/s over all runs when it
had the CPU alone. Mean return over the last 25 000 steps, seeds 0 / 1 / 2:
  RR 0.5  5.2 / 5.5 / 6.2   (mean 5.6)
  RR 2    8.8 / 8.6 / 7.9   (mean 8.4)
  ARR    10.8 / 11.1 / 8.1  (mean 10.0; it switched to RR 2 by step 10 000-30 000)
So ARR beats both static ratios, in every seed, as in the paper's Table 1 (Atari-100k: RR 0.5 42.3,
RR 2 35.1, ARR 55.8 human-normalised). The other half of claim 4 does not show at this length: RR 2
learns faster than RR 0.5 here (the paper's RR 2 falls behind over 100k Atari steps of 4 frames).
The fraction of active units does show the high ratio's cost, in the encoder (the conv layer, on
512 replayed transitions, mean over the last 25 000 steps): 0.55 at RR 2 and 0.60 under ARR against
0.71 at RR 0.5; the head's (dense) stays at 0.54-0.56 for all three (figures/plasticity.png).
Not run yet, projected from those 760 updates/s: `:da_reset` (12 updates per step over its 12 runs,
with random shift's gather on top) ~40 min; `:full` (~20M updates) ~7 h here: a GPU's job.

Atari-100k (`:atari` on one game, `:paper` on Ma et al.'s 17; `pip install -e ".[atari]"`): DrQ(ε) as Dopamine
runs it (docs/rl.md): ALE's emulators on the host's cores, their states in the runs' (exact resume), Dopamine's
preprocessing, network (dueling, Flax 'SAME' convolutions), augmentation (shift and intensity), 10-step targets
against the previous step's network, 100 000 agent steps, the score 100 evaluation games at ε 0.001 at the end
(eval_return, eval_human_normalized). Agents per game: RR 0.5 / 1 / 2, ReDo at RR 1 (τ 0.025 every 1 000
updates, Adam's moments of the recycled units reset) and ARR 0.5 -> 2 checking every 2 000 steps, 5 seeds. The
paper's mean human-normalised scores: RR 0.5 42.3, RR 1 41.3, RR 2 35.1, ReDo 42.3, ARR 55.8 (Table 4).
Cost, measured on this 2-core CPU (2026-12-07, `launch/benchmark.py --workload=atari --seeds=2 --env_alone`):
12 agent steps/s learning at RR 1 (5.1 GFLOP per step), the emulators alone 902 steps/s (2 runs; 2 386/s for
16 runs in one process): a GPU's job. Projected, not run: `:paper` does ~3.2M updates per game (16 PFLOP),
~2.6 h for the 17 games at 30 TFLOPS, plus the emulation (2.5M training steps per game and ~5M in its
evaluation games, ~2 400 steps/s per process; `env.processes` spreads them over the host's cores): 7-17 h on
one GPU. `:atari` (one game): 25-60 min. Memory (`launch/benchmark.py --workload=atari --memory --choices=gpu
--project_seeds=20`): 0.74 GB of state per run (its replay of 100 000 frames), a game's 20 runs of one program
33 GB with their call (runs_per_call left AUTO splits what does not fit).
"""
from ddl import config as config_lib
from ddl import platform_defaults
from ddl.rl import atari

name = config_lib.variant_name


def smoke(config):
  """Seconds: 2 seeds, 2 chunks of 300 steps, a 200-step warm-up, small batches, one program (after `atari`:
  one seed of its game at 42x42 with a smaller network, 2 chunks of 150 steps, games truncated at 100 steps, two
  evaluation games at the end)."""
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
  config.fuse_variants = True     # one program for the variants (fewer to compile)
  config.variants = {'rr_0p5': dict(replay_ratio=0.5), 'rr_2': dict(replay_ratio=2.0),
                     'arr': dict(replay_ratio=0.5, arr_high_ratio=2.0),
                     'rr_1_augment': dict(replay_ratio=1.0, augment=1.0)}
  if atari.is_atari(config.env.name):
    config.env.update(size=42, max_episode_steps=100)
    config.network.update(widths=(8, 8), kernels=(8, 4), strides=(4, 2), dense=(32,))
    config.num_seeds, config.total_steps, config.steps_per_chunk = 1, 300, 150
    config.replay.update(capacity=300, warmup=100, n_step=3)
    config.dqn.update(epsilon_steps=100, target_every=1, eval_episodes=2)
    config.arr.check_every = 50
    config.variants = {'rr_0p5': dict(replay_ratio=0.5, augment=1.0), 'rr_2': dict(replay_ratio=2.0, augment=1.0),
                       'arr': dict(replay_ratio=0.5, arr_high_ratio=2.0)}


def full(config):
  """MinAtar at length: 500 000 steps, 5 seeds, RR 0.5 / 1 / 2, ARR and random shift at RR 0.5 / 2
  (hours on this CPU: a GPU's job)."""
  config.num_seeds = 5
  config.total_steps = 500_000
  config.steps_per_chunk = 10_000
  config.dqn.epsilon_steps = 50_000
  config.variants = {name('rr', ratio): dict(replay_ratio=ratio) for ratio in (0.5, 1.0, 2.0)}
  config.variants['arr'] = dict(replay_ratio=0.5, arr_high_ratio=2.0)
  for ratio in (0.5, 2.0):
    config.variants[name('rr', ratio) + '_augment'] = dict(replay_ratio=ratio, augment=1.0)


def da_reset(config):
  """Fig. 1's grid, DA x Reset, at RR 1: random shift on or off, and resets of the head (the dense
  layer and the output) every 20 000 steps or none (from 20 000 on: boundary periods of 1 000 steps)."""
  reset = dict(reset_first=20, reset_every=20, reset_layers=2)
  config.replay.boundary_steps = 1_000
  config.variants = {'rr_1': dict(replay_ratio=1.0), 'rr_1_reset': dict(replay_ratio=1.0, schedule=reset),
                     'rr_1_augment': dict(replay_ratio=1.0, augment=1.0),
                     'rr_1_augment_reset': dict(replay_ratio=1.0, augment=1.0, schedule=reset)}


def atari_100k(config, game: str = 'Pong'):
  """DrQ(ε) on Atari-100k (Dopamine's DrQ_eps.gin, Ma et al.'s Table 3) on one game, RR 0.5 / 1 / 2, ReDo at
  RR 1 and ARR (0.5 -> 2, the critic's FAU checked every 2 000 steps), all with DrQ's augmentation: 100 000
  agent steps (400 000 frames), 5 seeds; ale-py (`pip install -e ".[atari]"`)."""
  config.num_seeds = 5
  config.total_steps = 100_000
  config.steps_per_chunk = 10_000           # Dopamine's iterations
  config.diagnostics.every = 1
  config.env = dict(name=f'ALE/{game}', frame_skip=4, frame_stack=4, size=84, terminal_on_life_loss=True,
                    max_episode_steps=27_000, max_noops=30, sticky_actions=0.0,
                    processes=platform_defaults.auto(int))   # host processes emulating the games (per platform)
  config.replay.update(capacity=100_000, batch_size=32, n_step=10, warmup=1_600)
  config.dqn.update(gamma=0.99, double=True, huber=1.0, target_every=1, target_tau=1.0, epsilon_start=1.0,
                    epsilon_end=0.01, epsilon_steps=5_000, clip_rewards=1.0,
                    eval_episodes=100, eval_epsilon=0.001, eval_when='end')   # the score: 100 games at the end
  config.network.update(widths=(32, 64, 64), kernels=(8, 4, 3), strides=(4, 2, 1), pool=False, dense=(512,),
                        padding='SAME_UPPER', dueling=True, input_scale=1 / 255, weight_init='xavier',
                        conv=platform_defaults.auto(str))
  config.optimizer.eps = 1.5e-4
  config.hparams.learning_rate = 1e-4
  config.augment.update(pad=4, style='dopamine')
  config.arr.update(check_every=2_000, check_unit='steps', threshold=0.001)
  config.probe_size = 512
  config.variants = atari_variants(game)


def atari_variants(game: str) -> dict:
  """Ma et al.'s five agents on one game, named '<game>_<agent>' (static: the game)."""
  prefix, env = atari.rom_id(f'ALE/{game}'), dict(name=f'ALE/{game}')
  redo = dict(method='redo', redo_threshold=0.025, redo_period=1_000, reset_optimizer_state=True)
  agents = {name('rr', ratio): dict(replay_ratio=ratio) for ratio in (0.5, 1.0, 2.0)}
  agents.update(rr_1_redo=dict(replay_ratio=1.0, cbp=redo), arr=dict(replay_ratio=0.5, arr_high_ratio=2.0))
  return {f'{prefix}_{agent}': dict(env=env, augment=1.0, **settings) for agent, settings in agents.items()}


def atari_paper(config):
  """Ma et al.'s Table 4: `atari_100k` on their 17 games (17 programs of 5 agents x 5 seeds; a GPU's job)."""
  atari_100k(config)
  config.variants = {}
  for game in atari.MA_ET_AL_GAMES:
    config.variants.update(atari_variants(game))


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'dqn'
  config.num_seeds = 3
  config.total_steps = 100_000
  config.steps_per_chunk = 5_000
  config.probe_size = 512           # replayed transitions for the evaluator's diagnostics
  config.diagnostics.every = 4
  config.env = dict(name='Breakout-MinAtar')
  config.replay = dict(capacity=100_000, batch_size=32, n_step=3, warmup=5_000,
                       boundary_steps=0,   # resets / injection at chunk starts (ddl.rl.off_policy)
                       calls_per_ratio=platform_defaults.auto(bool))   # per platform
  config.dqn = dict(gamma=0.99, double=True, huber=1.0, target_every=1_000, target_tau=1.0,
                    epsilon_start=1.0, epsilon_end=0.01, epsilon_steps=25_000)
  config.network.update(widths=(16,), kernels=(3,), pool=False, dense=(128,), activation='relu', layer_norm='',
                        conv='patches')
  config.optimizer.name = 'adam'
  config.optimizer.eps = 1.5e-4
  config.hparams.learning_rate = 1e-4
  config.variants = {'rr_0p5': dict(replay_ratio=0.5), 'rr_2': dict(replay_ratio=2.0),
                     'arr': dict(replay_ratio=0.5, arr_high_ratio=2.0)}
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'full': full, 'da_reset': da_reset, 'atari': atari_100k,
                                            'paper': atari_paper})
  return config
