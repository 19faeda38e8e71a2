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

A first look (2026-12-06/07, this CPU shared with other runs, ~3 h): stream and cbp x 2 seeds x 750 000
steps with the friction changing every 250 000 (two changes; the paper's 2 M interval does not fit a CPU
run of stream AC, 4 runs at ~220 steps/s each), in one program:

  python launch/main.py --config=configs/slippery_stream_ant.py:stream,cbp --config.num_seeds=2 \
      --config.total_steps=1000000 --config.steps_per_chunk=50000 --config.env.friction.change_every=250000 \
      --config.checkpoint_every=1 --config.fuse_variants=True      (stopped after 16 of 20 chunks)

Frictions: seed 0 0.057 -> 0.60 -> 0.021, seed 1 0.64 -> 0.76 -> 0.045. Mean return per 50 000 steps:
  stream/0  44  566  710  787  822 | 854  896  882  913  919 |  951  911  907  910  915 | 964
  stream/1  37  629  819  881  977 | 1100 1420 1830 1860 2170 | 2140 2350 2560 2560 2510 | 2800
  cbp/0     21  529  687  754  841 | 865  928  957  941 1050 |  901  910  904  941  938 | 949
  cbp/1     22  580  754  802  867 | 934 1060 1200 1190 1330 | 1180 1020 1130 1050 1100 | 1060
No return collapses at a change at this length: plain stream AC keeps improving or holds (seed 1 reaches
2 800), and CBP is no better (seed 1's dropped by ~300 when its ground turned slippery, 0.76 -> 0.045,
and stayed there). The paper's shape for PPO (Fig. 3: standard PPO degrades over 20 M steps, CBP + L2
keeps improving) would need the 20 M steps. The markers of lost plasticity do build in plain stream AC
and not with CBP: the policy's mean |W| grows monotonically (0.0055 -> 0.0066 / 0.0070) where CBP's stays
at 0.0050-0.0056, and seed 0's stable rank falls from 90 % to 70-80 % with up to 16 % dormant units
(CBP: 80-86 %, at most 9 %).
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
