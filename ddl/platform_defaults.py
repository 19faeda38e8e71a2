"""Settings whose best value depends on the platform, chosen here and nowhere else.

A config leaves such a setting at `AUTO` (None); `resolve` fills it in at launch from the platform
the run is on (`config.platform`, else JAX's default backend). A value that the config file, a
preset, a variant or the command line sets always wins. The rule (`RULE`):

- `network.conv` (the conv nets' convolution, `ddl.nets.Conv`): 'patches' on CPU, where XLA's
  convolutions are slow and vmapped seeds turn them into grouped convolutions (measured: 3.5x
  slower for the ResNet, and the ImageNet net's 3-channel 5x5 layer is slow even for one run);
  'lax' on GPU and TPU, whose convolution libraries are fast and which keep no im2col copies for
  the backward pass ('patches' needs ~3x the ResNet's activation memory: ~80 GB against ~35 GB
  for 30 CIFAR seeds).
- `fuse_variants`: False on CPU (a variant without S&P noise, CBP or another gated method gets a
  program without its random numbers, which dominate a small network's step there); True on GPU
  and TPU (fewer, larger programs, where steps are latency bound).
- `replay.calls_per_ratio` (off-policy experiments, `ddl.rl.off_policy`): True on CPU, where a call's
  runs make as many updates per step as its highest replay ratio (the others' are masked, not
  skipped) and the update is compute-bound, so runs of RR 0.5 in a call with RR 2 cost 4x their own
  work; False on GPU and TPU, where a call's runs update in parallel and separate calls would run
  one after another. Either way the runs of one group share one compiled program.
- `env.backend` (the Ant's physics, `ddl.rl.env`): 'mujoco' on CPU, MuJoCo's C simulator on the host's
  cores (the paper's Ant: PPO with 30 seeds 1 542 env steps/s including learning, against 33.6 on
  MJX, measured on this 2-core CPU; bit for bit gymnasium's Ant-v4); 'mjx' on GPU and TPU until
  MuJoCo C on the host of a GPU machine, MJX and MJX-Warp are measured there (one H200 ran MJX's
  paper Ant at ~10 steps/s per copy, latency-bound, docs/benchmarks.md).
- `env.threads` (the Ant on `env.backend=mujoco`, `ddl.rl.mujoco_host`): one host thread per core of
  this machine, whatever the platform (MuJoCo C steps on the host); the results do not depend on it.
- `env.processes` (Atari, `ddl.rl.ale_host`): the processes that emulate the runs' games. ALE holds the GIL, so
  only processes run emulators side by side, and each step ships every run's state and screens (~86 KB) to a
  worker and back. On this 2-core CPU 2 processes stepped 16 Pong runs at 2 286 steps/s against 2 386 for the
  main process alone (the pickling ate the second core): 1 on CPU. On a GPU's host, one per core (its cores
  are otherwise idle; not measured there).
- `runs_per_call` is not in the table: left at AUTO it is as many runs per call as fit the
  device's memory, all runs where they fit (`ddl.programs.fitted`, from XLA's memory analysis of
  the compiled programs and the device's free memory: a GPU's allocator limit, a CPU host's
  available memory). The rule is the same everywhere; the capacity is the platform's.

`cpu_devices` (CPU only) does not apply elsewhere and needs no rule. Not a setting but decided
here too: `channels_last_gradients`, how a 'lax' convolution takes its gradients.
"""
import copy
import os
from typing import Any, Dict, Optional

import jax
from ml_collections import config_dict

AUTO = None
PLATFORMS = ('cpu', 'accelerator')   # the columns of RULE: CPU, and GPU or TPU

RULE: Dict[str, Dict[str, Any]] = {
    'network.conv': {'cpu': 'patches', 'accelerator': 'lax'},
    'fuse_variants': {'cpu': False, 'accelerator': True},
    'replay.calls_per_ratio': {'cpu': True, 'accelerator': False},
    'env.threads': {'cpu': os.cpu_count() or 1, 'accelerator': os.cpu_count() or 1},
    'env.backend': {'cpu': 'mujoco', 'accelerator': 'mjx'},
    'env.processes': {'cpu': 1, 'accelerator': os.cpu_count() or 1},
}


def auto(kind: type):
  """A config field left AUTO, typed `kind` so that the command line can still set it."""
  return config_dict.placeholder(kind)


def channels_last_gradients() -> bool:
  """Whether 'lax' convolutions take their gradients from `ddl.nets.channels_last_conv` (traced for
  JAX's default backend): on CPU, whose XLA runs JAX's own gradient convolutions inside loops as
  naive loops (jax-ml/jax#12868); elsewhere the plain convolution's gradients."""
  return jax.default_backend() == 'cpu'


def platform(config) -> str:
  """The platform a launch runs on: `config.platform`, else JAX's default backend (starts it)."""
  return config.platform or jax.default_backend()


def choices(platform_name: str) -> Dict[str, Any]:
  """{dotted key: value} that RULE picks for a platform ('cpu', 'gpu', 'tpu', ...)."""
  column = 'cpu' if platform_name == 'cpu' else 'accelerator'
  return {key: values[column] for key, values in RULE.items()}


def resolve(config, platform_name: Optional[str] = None):
  """A copy of `config` whose AUTO settings of RULE hold the choice for `platform_name` (default:
  the launch's platform); set values are kept, and a key the config lacks (an MLP has no
  `network.conv`) is left out."""
  config = copy.deepcopy(config)
  for key, value in choices(platform_name or platform(config)).items():
    *parents, leaf = key.split('.')
    target = config
    for parent in parents:
      target = target.get(parent) if target is not None else None
    if target is not None and leaf in target and target[leaf] is AUTO:
      target[leaf] = value
  return config
