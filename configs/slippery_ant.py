"""PPO on slippery Ant (Dohare et al. 2024, Fig. 3; lop_reference.md §5.5, §6.5).

Reproduces: the ground's sliding friction changes (log-uniform in [0.02, 2], a schedule drawn per
seed, or the original's (seeds x 50) file via env.friction.kind=file) at the first episode end
after every 2 M steps; standard PPO fails catastrophically, proper Adam less, L2 and CBP keep
performing. 30 seeds x {std, ns, l2, cbp, cbpi, redo} (the paper: std, ns, l2, cbp, 100 runs), 20 M
steps; returns per chunk of 49 updates (100 352 steps, the original's 100 k bins) with 95 %
bootstrap bands, and the current friction per chunk.

  python launch/main.py --config=configs/slippery_ant.py
  python launch/main.py --config=configs/slippery_ant.py:smoke     # ~1 min; frictions change every 512 steps
  python launch/main.py --config=configs/slippery_ant.py:std,l2,cbp --config.env.friction.kind=file \\
      --config.env.friction.file=frictions.pkl

Settings as configs/ant.py (the paper's Ant: gymnasium's ant.xml, env.model=gymnasium, on MuJoCo C on
a CPU and MJX on a GPU: env.backend per platform; the friction is set on the floor and every body geom,
see ddl/rl/env.py). Expected run time on this 2-core CPU (env.backend=mujoco): 30 seeds run at ~1 540
env steps/s including learning (configs/ant.py), so 20 M steps are ~4.5 days per 30-seed variant; a
first look, std and cbp x 2 seeds x 6 M steps (three frictions) in one program,

  python launch/main.py --config=configs/slippery_ant.py:std,cbp --config.num_seeds=2 \\
      --config.total_steps=6021120 --config.checkpoint_every=1 --config.fuse_variants=True

ran at ~2 300 env steps/s for its 4 runs with the CPU to itself (2026-12-07): ~3 h, resumable. A 64-core
machine: docs/benchmarks.md. Smoke: ~1 min.
"""
from ddl import config as config_lib


def get_config(arg: str = ''):
  ant = config_lib.config_module('ant')
  presets = {'smoke': lambda c: (ant.smoke(c), smoke(c))}
  config = ant.get_config()
  config.total_steps = 20_000_000
  config.updates_per_chunk = 49          # 100 352 steps
  config.env.friction.kind = 'log_uniform'
  config.env.friction.change_every = 2_000_000
  config_lib.apply_config_arg(config, arg, presets)
  return config


def smoke(config):
  """configs/ant.py's smoke (the paper's Ant on MuJoCo C), with the friction changing every 512 steps (every
  seed sees >= 2)."""
  config.env.friction.change_every = 512
