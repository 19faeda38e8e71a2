"""Plasticity of an off-policy actor-critic on DeepMind Control (Ma et al., ICLR 2024; beyond_reference.md
(d)): DrQ-v2 from state or from 84x84 pixels on MJX's dm_control tasks (MuJoCo Playground), with
plasticity injection into the actor vs the critic (their Fig. 5), replay ratios 0.5 / 2 and Adaptive
Replay Ratio (Fig. 9, Table 1), DA x Reset (Fig. 1), and the fraction of active units of each module
(encoder, actor, critic) over training (Fig. 3).

  python launch/main.py --config=configs/dmc_plasticity.py --workdir=/tmp/dmc      # CPU default, ~18 min
  python launch/main.py --config=configs/dmc_plasticity.py:paper --workdir=/tmp/dmc_paper   # a GPU, pixels
  python launch/main.py --config=configs/dmc_plasticity.py:paper,da_reset --workdir=/tmp/dmc_da   # Fig. 1, a GPU
  python launch/main.py --config=configs/dmc_plasticity.py:paper,state --workdir=/tmp/dmc_state   # from state
  python launch/main.py --config=configs/dmc_plasticity.py:resets --workdir=/tmp/dmc_resets   # claim 2, ~97 min (2 seeds, 4 variants)
  python launch/main.py --config=configs/dmc_plasticity.py:priming --workdir=/tmp/dmc_priming   # claim 2, ~24 min (2 seeds)
  python launch/main.py --config=configs/dmc_plasticity.py:smoke                   # tests, seconds
  python launch/main.py --config=configs/dmc_plasticity.py:paper --config.env.name=QuadrupedRun   # Table 1's third task

Tasks: MuJoCo Playground's dm_control suite (CheetahRun, WalkerRun, HopperHop, ReacherHard, ...) and
QuadrupedRun, which Playground lacks: ddl's port of dm_control's Run on its own model file
(ddl/rl/quadruped.py; needs dm-control), checked against dm_control step by step (tests/test_dmc.py).
On this 2-core CPU its physics is the cost: 89.6 agent steps/s for 2 copies alone, 78.8 with DrQ-v2
learning at hidden 256 (docs/benchmarks.md), so `:paper` on it (5 seeds x 1M steps at hidden 1 024)
is a GPU's job; its time on one GPU is not measured (no GPU lent).

Settings (the authors' cfgs/config.yaml and drqv2.py): DrQ-v2's actor and double-Q critic (trunk
Linear -> LayerNorm -> tanh of 50 features, ReLU MLPs, orthogonal init), Adam lr 1e-4 per module,
batch 256, 3-step returns, γ 0.99, target critic τ 0.01 every update, action repeat 2, 2 000 uniform
exploration steps (4 000 frames), noise std linear 1.0 -> 0.1 over 500 000 steps (their 'medium'
tasks), clipped at 0.3 in the updates. Replay ratio 0.5 (one update every two steps) as theirs.
Injection (Fig. 5): the whole module, once, half way through (Nikishin et al. 2023's frozen copy plus
a fresh trainable minus frozen twin: the output does not jump).

The CPU default is the paper's protocol shrunk to a 2-core CPU: CheetahRun, hidden 256 (not 1 024),
batch 64, a 100 000-transition buffer, 40 000 agent steps (80 000 frames), 2 seeds, RR 0.5 / 2 / ARR
(its check every 10 episodes of 500 steps: the authors' 50 would check once in so short a run).
`paper`: the paper's protocol, from pixels: 84x84 frames of DrQ-v2's camera, three stacked, rendered in
the program by MuJoCo Warp's ray tracer (ddl/rl/render.py), DrQ-v2's encoder (four 3x3 convolutions of 32
channels) as a third module, hidden 1 024, batch 256, a 10^6 buffer (one frame per slot: 21 GB
per run, 3 runs on an 80 GB GPU), 1M agent steps (2M frames), 5 seeds: a GPU's job. On this CPU pixels run at 2.3 agent
steps/s (RR 1, batch 64, hidden 256; the environment alone with its rendering 370): from pixels is only
the smoke here. Its time on one GPU, projected from the measured 24 GFLOP per step (no GPU lent):
~28 min per run at 30 TFLOPS, ~7 h for 5 seeds x 3 variants (docs/benchmarks.md). `da_reset`: Fig. 1's
grid, random shift (pad 4) on / off x a reset of actor and critic half way / none, at RR 0.5.

The default, measured 2026-12-06 on this 2-core CPU (other jobs running for part of it): 17.7 min
(1 062 s) for the 6 runs. Mean return over the last 20 000 frames, seeds 0 / 1:
  RR 0.5   76 / 54
  RR 2    144 / 107
  ARR      88 / 59   (switched to RR 2 at ~40 000 and ~60 000 frames)
So early in training the higher ratio learns faster. The paper's Table 1 (Cheetah Run at 2M
frames: RR 0.5 828, RR 2 793, ARR 880) is about the late regime, where plasticity limits learning;
this run does not reach it (the exploration noise is still at std ~0.93 of its 500 000-step
schedule). The FAU side of claim 4 does show, as in their Fig. 8. At the end the critic's FAU is
0.538 at RR 2 against 0.548 at RR 0.5, and the actor's 0.591 against 0.634. No unit is dormant yet.
The first measurement of this default (before every reset state was drawn at the run's start and
before ddl.rl.mjx_patches) gave RR 0.5 91 / 75, RR 2 95 / 99, ARR 85 / 77. At this length the
seeds' trajectories part chaotically, and 2 seeds say little about returns.

`:injection` (measured 2026-12-06 before ddl.rl.mjx_patches, 13.3 min on this CPU, 2 seeds, injection
at 40 000 of 80 000 frames, RR 0.5): mean return over the last 20 000 frames, seeds 0 / 1: none 24 / 39, into the critic
25 / 30, into the actor 34 / 45. That is no difference beyond the seeds' spread. The paper's Fig. 5
injects at 1M steps, after the critic has lost its plasticity (Walker Run without DA), which a CPU
run does not reach. Claim 2 is not shown here. Injection into the critic does show in its FAU: 0.41 /
0.44 against 0.51 / 0.55 without injection at the end, with 2 % dormant units while the fresh head
learns. Injection into the actor raises the actor's FAU: 0.65 / 0.65 against 0.60 / 0.63.

`:resets` is claim 2 at a high replay ratio, where from state the critic overfits its replay as the paper's
critic does without augmentation (D'Oro et al. 2023's regime): WalkerWalk at RR 4, 60 000 agent steps (120 000
frames), DrQ-v2's 'easy' noise schedule (100 000 steps), and a reset (Nikishin et al.'s: the whole module,
its optimizer state and, for the critic, its target) at 40 000 and 80 000 frames of the critic alone, the
actor alone, both, or none. Measured 2026-12-07 on this 2-core CPU: 97 min (5 814 s) for the 8 runs of seeds
0 and 1, then 76 min (4 559 s) for seeds 2 and 3 without `rr_4_reset_both` (`--config.seed=2
--config.num_seeds=2`; the variants share each seed's keys, so they are paired). Mean return per seed, 0 / 1 / 2 / 3:
                     last 20 000 frames           frames 40 000-120 000 (after the first reset)
  no reset           424 / 400 / 183 / 405             325 / 309 / 141 / 298
  actor reset        407 / 477 / 167 / 413             308 / 342 / 142 / 294
  critic reset       544 / 520 / 132 / 393             365 / 335 / 117 / 262
  both reset         296 / 432                         190 / 209
Seeds 0 and 1 showed claim 2's pattern (the critic's reset +120 / +120 over no reset, the actor's -17 / +77);
seeds 2 and 3 reverse it (the critic's reset -50 / -12, the actor's -15 / +8). Paired over the 4 seeds, mean
± s.e.: critic reset - none +44 ± 44 over the last 20 000 frames and +2 ± 19 from the first reset on; actor
reset - none +13 ± 22 and +3 ± 11; critic - actor +31 ± 39 and -2 ± 20. So claim 2 is not reproduced in
returns here either. Resetting both modules is the worst in seeds 0 and 1: a fresh actor collects poor data
while a fresh critic learns it. The FAU side holds in all 4 seeds: over the last 20 000 frames the reset
critic's FAU is 0.622 / 0.646 / 0.593 / 0.619 against 0.588 / 0.591 / 0.540 / 0.572 without a reset, and the
actor's reset leaves it where it was (0.587 / 0.589 / 0.541 / 0.570). The critic's reset also lifts the
actor's FAU (0.602 / 0.598 / 0.614 / 0.575 against 0.525 / 0.486 / 0.491 / 0.487), more than the actor's own
reset does (0.543 / 0.533 / 0.510 / 0.527).

`:priming` causes the early loss the paper's Fig. 5 waits 1M steps for: Nikishin et al. 2022's heavy
priming (50 000 updates at once on the warm-up's 500 transitions), then a reset of the critic or of the
actor 5 500 steps later, on CartpoleSwingup (30 000 agent steps, RR 0.5). Measured 2026-12-07 on this CPU
with other jobs beside it: 23.7 min for 2 seeds (1 006 s of it the first chunk: the 50 000 updates, once
in each of the three primed programs), then 3 more (--config.seed=1 --config.num_seeds=3), 5 more
(--config.seed=2 --config.num_seeds=5, 92 min sharing the CPU) and 5 more (--config.seed=3, 36 min alone).
Mean return over the last 10 000 steps, 15 seeds (2 + 3 + 5 + 5), mean ± s.e.:
  unprimed               564 279 574 578 456 253 275 501 660 658 636 643 293 329 551   483 ± 40
  primed                 323 363 426 335 658 357 291 378 518 502 675 431 511 665 673   474 ± 36
  primed, actor reset    452 355 409 466 693 356 417 363 454 562 636 566 625 435 704   500 ± 31
  primed, critic reset   444 635 389 631 674 415 337 641 596 360 652 404 356 677 628   523 ± 35
Paired by seed (the variants share each seed's keys): critic reset - primed +49 ± 36 (t = 1.4), actor reset
- primed +26 ± 25 (t = 1.0), critic reset - actor reset +23 ± 44 (t = 0.5; the critic's reset ahead in 7 of
15 seeds), unprimed - primed +9 ± 48. The means keep claim 2's order (critic reset > actor reset > primed),
but none of the differences is resolved, and with 15 seeds priming itself costs no measurable return here:
claim 2 is not reproduced at this scale. (5 seeds had given +134 ± 67, +54 ± 32, +80 ± 61; 10 seeds +97 ± 45,
+38 ± 22, +59 ± 49: the early seeds were the favourable ones.) The paper's evidence, injection after 1M steps
of Walker Run from pixels, is `:paper`'s scale: a GPU's job.
The FAU says priming cost both modules units, not the critic alone (15 seeds, at the end): the primed
critic's FAU is 0.571 ± 0.004 against 0.604 ± 0.003 unprimed, the actor's 0.518 ± 0.012 against
0.610 ± 0.005; the critic's reset did not bring the critic's back (0.571), the actor's reset brought the
actor's part way (0.561 ± 0.007).
A first try on CheetahRun (24 000 steps, the same priming on 2 000 transitions, resets at 6 000) showed
no cost in return at that length (last 6 000 steps: unprimed 46, primed 45, actor reset 43, critic
reset 50), but a sign in the critic alone: the primed critic's FAU stayed at 0.50 where the unprimed
one rose to 0.55, and the critic's reset brought it back (0.54) while the actor's reset did not (0.50).
"""
from ddl import config as config_lib
from ddl import platform_defaults


def smoke(config):
  """Seconds: 2 seeds, 2 chunks of 100 steps, tiny networks, a 50-step warm-up, one program: every
  variant injects into the critic at its second chunk, and rr_0p5 is primed with 30 updates. CartpoleSwingup: every task runs the same code,
  and its physics compiles in a third less time than CheetahRun's (whose steps, and WalkerRun's, are
  checked against dm_control's in tests/test_dmc.py)."""
  config.env.name = 'CartpoleSwingup'
  config.num_seeds = 2
  config.total_steps = 200
  config.steps_per_chunk = 100
  config.checkpoint_every = 1
  config.network.update(hidden=(16, 16), feature_dim=8)
  config.replay.update(capacity=300, batch_size=8, warmup=50)
  config.drqv2.update(exploration_steps=50, std_steps=200)
  config.probe_size = 16
  config.diagnostics.hessian_iterations = 3
  config.arr.check_every = 1
  config.schedule.injection_first = 1
  config.intervene = ('critic',)
  config.fuse_variants = True
  config.replay.calls_per_ratio = False   # one call: in so small a run MJX's physics, not the update, dominates
  config.variants = {'rr_0p5': dict(replay_ratio=0.5, priming_updates=30.0), 'rr_2': dict(replay_ratio=2.0),
                     'arr': dict(replay_ratio=0.5, arr_high_ratio=2.0)}


def paper(config):
  """The paper's protocol: from 84x84 pixels (three stacked frames), hidden 1 024, batch 256, a 10^6 buffer,
  1M agent steps (2M frames), 5 seeds; RR 0.5 / 2 / ARR (Table 1). `:paper,state` learns from state."""
  config.env.pixels = True
  config.num_seeds = 5
  config.total_steps = 1_000_000
  config.steps_per_chunk = 10_000
  config.network.hidden = (1024, 1024)
  config.replay.update(capacity=1_000_000, batch_size=256)


def state(config):
  """From the state vector, not pixels (after `paper`)."""
  config.env.pixels = False


def da_reset(config):
  """Fig. 1's DA x Reset grid from pixels at RR 0.5: random shift (pad 4) on or off, and a reset of the
  actor and the critic half way (Nikishin et al.'s, the encoder kept) or none (figures/da_reset.png)."""
  config.env.pixels = True
  half = -(-config.total_steps // config.steps_per_chunk) // 2
  reset = dict(reset_first=half, reset_layers=0)
  config.intervene = ('actor', 'critic')
  config.variants = {'rr_0p5': dict(replay_ratio=0.5), 'rr_0p5_reset': dict(replay_ratio=0.5, schedule=reset),
                     'rr_0p5_augment': dict(replay_ratio=0.5, augment=1.0),
                     'rr_0p5_augment_reset': dict(replay_ratio=0.5, augment=1.0, schedule=reset)}


def injection(config):
  """Fig. 5: plasticity injection into the critic vs the actor half way through, against none (RR 0.5)."""
  config.schedule.injection_first = -(-config.total_steps // config.steps_per_chunk) // 2   # half way
  config.variants = {
      'rr_0p5': dict(replay_ratio=0.5, schedule=dict(injection_first=0)),
      'inject_critic': dict(replay_ratio=0.5, intervene=('critic',)),
      'inject_actor': dict(replay_ratio=0.5, intervene=('actor',)),
  }


def priming(config, updates: int = 50_000, reset_chunk: int = 3):
  """An attempt at claim 2 at a CPU's scale (not reproduced with 15 seeds: the module docstring): Nikishin
  et al. 2022's heavy priming (`updates` updates at once on the
  warm-up's 500 transitions) costs the agent its plasticity early, as the paper's no-DA critic loses it
  early; then a reset of the critic vs of the actor (each with what it holds: the critic's target follows)
  at chunk `reset_chunk` (6 000 steps), against primed without a reset and unprimed, all at RR 0.5.
  CartpoleSwingup, 30 000 agent steps: it learns within a CPU run, where CheetahRun barely starts."""
  config.env.name = 'CartpoleSwingup'
  config.total_steps = 30_000
  config.replay.warmup = 500
  config.drqv2.exploration_steps = 500
  primed = dict(replay_ratio=0.5, priming_updates=float(updates))
  reset = lambda module: dict(primed, intervene=(module,), schedule=dict(reset_first=reset_chunk, reset_layers=0))
  config.variants = {'rr_0p5': dict(replay_ratio=0.5), 'primed': primed,
                     'primed_reset_critic': reset('critic'), 'primed_reset_actor': reset('actor')}


def resets(config, ratio: float = 4.0, every: int = 10):
  """An attempt at claim 2 at a high replay ratio (D'Oro et al. 2023's regime; not reproduced in returns with 4
  seeds, reproduced in the critic's FAU: the module docstring): WalkerWalk from state at RR `ratio`, whose
  critic overfits its replay as the paper's no-DA critic does, with periodic resets (every `every` chunks
  of 2 000 steps, from the `every`-th) of the critic alone, of the actor alone, of both, or none.
  DrQ-v2's 'easy' noise schedule (std 1.0 -> 0.1 over 100 000 steps), 60 000 agent steps."""
  config.env.name = 'WalkerWalk'
  config.total_steps = 60_000
  config.drqv2.std_steps = 100_000
  high = dict(replay_ratio=ratio)
  reset = lambda modules: dict(high, intervene=modules, schedule=dict(reset_first=every, reset_every=every,
                                                                       reset_layers=0))
  tag = config_lib.variant_name('rr', ratio)
  config.variants = {tag: high, f'{tag}_reset_critic': reset(('critic',)),
                     f'{tag}_reset_actor': reset(('actor',)), f'{tag}_reset_both': reset(('actor', 'critic'))}


def pixels(config):
  """From pixels (DrQ-v2's setting): 84x84 frames, three stacked, rendered in the program by MuJoCo Warp's
  ray tracer. After `smoke` (`:smoke,pixels`, for the tests): one seed, 24x24 frames, a 2-layer encoder of 4
  channels reset at the second chunk (no injection: its frozen copy would double the program), random
  shift in one variant, ARR in another."""
  config.env.pixels = True
  if config.total_steps <= 1_000:       # after `smoke`
    config.num_seeds = 1
    config.env.image_size = 24
    config.network.update(encoder_channels=4, encoder_layers=2)
    config.replay.capacity = 200
    config.intervene = ('encoder',)
    config.schedule.update(injection_first=0, reset_first=1, reset_layers=0)
    config.variants = {'rr_0p5_augment': dict(replay_ratio=0.5, augment=1.0, priming_updates=30.0),
                       'rr_2': dict(replay_ratio=2.0), 'arr': dict(replay_ratio=0.5, arr_high_ratio=2.0)}


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'drqv2'
  config.num_seeds = 2
  config.total_steps = 40_000           # agent steps (x action_repeat frames)
  config.steps_per_chunk = 2_000
  config.probe_size = 256
  config.diagnostics.every = 5
  # pixels: DrQ-v2's 84x84 frames of camera `camera` (-1: DrQ-v2's for the task), `frame_stack` stacked
  config.env = dict(name='CheetahRun', action_repeat=2, pixels=False, physics='dm_control', image_size=84,
                    frame_stack=3, camera=-1)
  config.replay = dict(capacity=100_000, batch_size=64, n_step=3, warmup=2_000,
                       boundary_steps=0,   # resets / injection at chunk starts (ddl.rl.off_policy)
                       calls_per_ratio=platform_defaults.auto(bool))   # per platform
  config.drqv2 = dict(gamma=0.99, target_tau=0.01, exploration_steps=2_000, std_start=1.0, std_end=0.1,
                      std_steps=500_000, std_clip=0.3)
  config.network.update(hidden=(256, 256), feature_dim=50, activation='relu', weight_init='orthogonal',
                        layer_norm='', encoder_channels=32, encoder_layers=4)   # the encoder: from pixels
  config.augment.pad = 4                    # random shift on 84x84 pixels (DrQ-v2's)
  config.optimizer.name = 'adam'
  config.hparams.learning_rate = 1e-4
  config.hparams.replay_ratio = 0.5
  config.arr.check_every = 10               # episodes of 500 steps (the authors' 50 would check once in the run)
  config.intervene = ('actor', 'critic')    # the modules resets, injection and unit transforms act on
  config.schedule.injection_layers = 8      # >= the actor's layers: the whole module (`injection` preset)
  config.variants = {'rr_0p5': dict(replay_ratio=0.5), 'rr_2': dict(replay_ratio=2.0),
                     'arr': dict(replay_ratio=0.5, arr_high_ratio=2.0)}
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'paper': paper, 'injection': injection,
                                           'priming': priming, 'resets': resets, 'pixels': pixels, 'state': state,
                                           'da_reset': da_reset})
  return config
