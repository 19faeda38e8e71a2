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

That first look, run 2026-12-06/07 on this CPU shared with other jobs and stopped after 42 of its 60 chunks
(4.2 M steps, through two friction changes; resumable with the same command). Frictions: seed 0 0.057 ->
0.60 -> 0.021, seed 1 0.64 -> 0.76 -> 0.045 (each at the first episode end after 2 M and 4 M: in the last
~10 000 steps of the chunks that start at 1.9 M and 3.9 M). Mean return per segment of steps (per chunk:
the episodes that ended in it):
             0-1 M   1-2 M   2-3 M   3-4 M   4-4.2 M (after the 2nd change)
  std/0       -485    1308    2136    2120      982
  std/1       -383    1463    2064    2199     1639
  cbp/0       -197    1478    2406    3871     1524
  cbp/1       -105    2438    3478    3955     2953
The paper's shape, as far as 4 M steps can show it (its Fig. 3: standard PPO degrades over 20 M steps and
10 changes, CBP + L2 keeps improving, ~4 900 at 50 M): standard PPO stops improving after its first 2 M
(~2 100-2 200 from 2 M to 3.9 M, both seeds) while CBP + L2 keeps climbing (3 900-4 000 before the second
change); every run drops at the second change, to a much more slippery floor (CBP 4 260 -> 1 400 and
3 940 -> 2 700 in the chunk after it, std 2 360 -> 880 and 2 330 -> 1 540), and all recover within two
chunks. At the first change the CBP runs dipped and recovered within a chunk; std did not dip. Standard
PPO's collapse itself is not reached at this length. The markers of lost plasticity (lop_reference.md §6.5)
are clear already: standard PPO's policy has 22-27 % dormant units at 4 M (CBP: 2-6 %), its last hidden
layer's stable rank fell from 92 % to 50-56 % (CBP: 80-84 %), and its mean |W| grew to 0.086 (CBP: 0.045-
0.050), as the paper's std PPO at 50 M (dormant ↑, rank ↓, weights ↑) against CBP + L2.
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
