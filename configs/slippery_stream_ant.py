"""Stream AC(lambda) with ObGD on slippery Ant (Elsayed et al. 2024's agent on Dohare et al.
2024's changing-friction Ant), beside PPO (configs/slippery_ant.py).

Reproduces: nothing published; it asks whether stream AC, which learns online from one stream with
no replay, keeps adapting when the ground's sliding friction changes (log-uniform in [0.02, 2], a
schedule drawn per seed or the original's (seeds x 50) file via env.friction.kind=file) at the
first episode end after every 2 M steps, and whether CBP on both networks, or the critic's
per-weight step sizes meta-learned by TIDBD inside ObGD's bound (the step sizes of dynamic deep
learning, for TD), help. Settings and variants as configs/stream_ant.py (the paper's Ant: gymnasium's
ant.xml on MuJoCo C or MJX); 30 seeds x {stream, cbp, tidbd}, 20 M steps, returns per chunk of 100 k steps (PPO's
bins: 100 352), the current friction per chunk; tidbd also the critic's step sizes (mean, spread).

  python launch/main.py --config=configs/slippery_stream_ant.py
  python launch/main.py --config=configs/slippery_stream_ant.py:smoke  # ~1-2 min; friction changes every 1000 steps
  python launch/main.py --config=configs/slippery_stream_ant.py:stream,cbp --config.env.friction.kind=file \\
      --config.env.friction.file=frictions.pkl
  python launch/main.py --config=configs/slippery_stream_ant.py:one_program  # the variants in one program

Expected run time on this 2-core CPU (the paper's Ant on MuJoCo C, env.backend=mujoco): 30 seeds run at
~2 250 env steps/s including learning (configs/stream_ant.py), so 20 M steps are ~3 days per 30-seed
variant; a 64-core machine: docs/benchmarks.md. Smoke: ~1-2 min.
"""
from ddl import config as config_lib


def get_config(arg: str = ''):
  stream_ant = config_lib.config_module('stream_ant')
  presets = {'smoke': lambda c: (stream_ant.smoke(c), smoke(c)), 'one_program': stream_ant.one_program}
  config = stream_ant.get_config()
  config.total_steps = 20_000_000
  config.steps_per_chunk = 100_000
  config.env.friction.kind = 'log_uniform'
  config.env.friction.change_every = 2_000_000
  config_lib.apply_config_arg(config, arg, presets)
  return config


def smoke(config):
  """configs/stream_ant.py's smoke (the paper's Ant on MuJoCo C; stream, cbp and tidbd in one program), with
  the friction changing every 1000 steps (every seed sees >= 2)."""
  config.env.friction.change_every = 1000
