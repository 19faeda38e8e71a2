"""Platform defaults (one rule, explicit values win) and the memory check before the first chunk:
a run that fits is unaffected, one that does not is split into calls that fit (same metrics; a
resume keeps them) or stopped with one line saying what fits."""
import csv
import logging
import os

import jax
import numpy as np
import pytest

from conftest import cheap_diagnostics, load_config
from ddl import config as config_lib
from ddl import devices as devices_lib
from ddl import memory
from ddl import platform_defaults
from ddl import programs
from ddl import run as run_lib

SCR = 'slowly_changing_regression'


@pytest.mark.parametrize('name', ['cifar100', 'imagenet'])
def test_auto_settings_resolve_per_platform_and_explicit_values_win(name, monkeypatch):
  config = load_config(name)
  assert config.network.conv is None and config.fuse_variants is None and config.runs_per_call is None
  cpu = platform_defaults.resolve(config)                 # this machine: JAX's default backend is the CPU
  assert (cpu.network.conv, cpu.fuse_variants, cpu.runs_per_call) == ('patches', False, None)
  assert config.network.conv is None                      # the launch's config is not changed
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  gpu = platform_defaults.resolve(config)
  assert (gpu.network.conv, gpu.fuse_variants, gpu.runs_per_call) == ('lax', True, None)
  config.platform = 'cpu'                                 # the config's platform comes first
  assert platform_defaults.resolve(config).network.conv == 'patches'
  config.network.conv, config.fuse_variants = 'patches', False
  assert (platform_defaults.resolve(config, 'gpu').network.conv, platform_defaults.resolve(config, 'gpu').fuse_variants) \
      == ('patches', False)
  config.network.conv = 'lax'
  assert platform_defaults.resolve(config, 'cpu').network.conv == 'lax'


def test_auto_fuse_variants_groups_per_platform():
  config = load_config(SCR, 'smoke')
  assert [g.variants for g in config_lib.groups(platform_defaults.resolve(config, 'cpu'))] == [
      ['bp', 'l2'], ['cbp'], ['linear'], ['snp']]
  assert [g.variants for g in config_lib.groups(platform_defaults.resolve(config, 'tpu'))] == [
      ['bp', 'cbp', 'l2', 'snp'], ['linear']]
  assert 'conv' not in platform_defaults.resolve(config, 'gpu').network   # an MLP has no convolution


def test_replay_ratios_get_calls_of_their_own_on_cpu_only():
  """On CPU the off-policy runs of each (replay ratio, ARR high ratio) are calls of their own, one
  compiled program for the group; on an accelerator all runs of the group are one call."""
  config = load_config('minatar_replay_ratio', 'smoke')     # fuse_variants: one group of 4 variants
  calls = lambda platform: [p.variants for p in programs.build(
      platform_defaults.resolve(config, platform), devices_lib.Devices(platform_defaults.resolve(config, 'cpu')))]
  assert sorted(calls('cpu')) == [['arr'] * 2, ['rr_0p5'] * 2, ['rr_1_augment'] * 2, ['rr_2'] * 2]
  [everything] = calls('gpu')
  assert sorted(everything) == ['arr'] * 2 + ['rr_0p5'] * 2 + ['rr_1_augment'] * 2 + ['rr_2'] * 2
  cpu = programs.build(platform_defaults.resolve(config, 'cpu'), devices_lib.Devices(platform_defaults.resolve(config)))
  assert len({id(p.run_chunk) for p in cpu}) == 1


def test_memory_figures_on_cpu():
  compiled = jax.jit(lambda x: (x @ x).sum(0)).lower(np.ones((64, 64), np.float32)).compile()
  figures = memory.analysis(compiled)
  assert figures['argument'] == 64 * 64 * 4 and figures['output'] == 64 * 4
  assert memory.call_bytes(figures) >= 64 * 4
  assert memory.free_bytes(jax.devices()[0]) > 0 and memory.host_available() > 0


def _footprint(config, runs_per_call):
  config = platform_defaults.resolve(config)
  devices = devices_lib.Devices(config)
  return memory.compile_programs(programs.build(config, devices, runs_per_call),
                                 programs.load_data(config, devices), devices)[1]


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    return sorted(tuple(r.values()) for r in csv.DictReader(f))


def test_runs_that_do_not_fit_are_split_or_stopped_with_what_fits(tmp_path, monkeypatch, caplog):
  caplog.set_level(logging.INFO)
  config = cheap_diagnostics(load_config(SCR, 'smoke,bp'))   # 3 runs, one group
  three, two = _footprint(config, 3), _footprint(config, 2)
  assert three.state == two.state and three.call > two.call
  run_lib.run(config, str(tmp_path / 'fits'), figures=False)         # this host's memory: one call
  assert '3 runs in 1 call(s)' in caplog.text and 'Memory, 3 runs per call' in caplog.text
  # A device with room for the states and a call of 2 runs, not of 3.
  free, host = (two.need + (three.need - two.need) / 2) / memory.HEADROOM, memory.free_bytes
  monkeypatch.setattr(memory, 'free_bytes', lambda device: int(free))
  caplog.clear()
  run_lib.run(config, str(tmp_path / 'split'), stop_after_chunks=2, figures=False)
  assert 'splitting the runs into calls of at most' in caplog.text and '3 runs in 1 call(s)' not in caplog.text
  monkeypatch.setattr(memory, 'free_bytes', host)   # the resume keeps the checkpoint's calls, though 3 fit now
  run_lib.run(config, str(tmp_path / 'split'), figures=False)
  monkeypatch.setattr(memory, 'free_bytes', lambda device: int(free))
  fits, split = _rows(tmp_path / 'fits'), _rows(tmp_path / 'split')
  assert [r[:4] for r in fits] == [r[:4] for r in split]
  np.testing.assert_allclose([float(r[4]) for r in fits], [float(r[4]) for r in split], rtol=1e-5, atol=1e-6)
  config.runs_per_call = 3                          # set explicitly: not split, one line says what fits
  with pytest.raises(config_lib.ConfigError,
                     match=r'runs_per_call: 3 runs per call do not fit the device .*set --config.runs_per_call=[12]\.$'):
    run_lib.run(config, str(tmp_path / 'explicit'))
  assert not os.path.exists(tmp_path / 'explicit')
  monkeypatch.setattr(memory, 'free_bytes', lambda device: three.state // 2)
  config.runs_per_call = None
  with pytest.raises(config_lib.ConfigError, match='num_seeds: the states of all runs alone do not fit'):
    run_lib.run(config, str(tmp_path / 'states'))
