"""Every bad input a user can type into launch/main.py stops it with one line `error: ...` on
stderr naming the problem, exit status 2, no traceback, and nothing written (no new workdir, no
file of an existing one or of a data folder changed). Most cases run the command in this process
(`main.command`, the same parsing and launch as the script); those marked `sub` run the script in a
subprocess, so that the real stderr (library logs included) is checked as a user sees it."""
import dataclasses
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from typing import Callable, Optional, Tuple

import numpy as np
import pytest

from conftest import ROOT, load_config
from ddl import run as run_lib
from ddl.data import arrays
from ddl.rl import atari
from ddl.rl import render

SPEC = importlib.util.spec_from_file_location('launch_main', os.path.join(ROOT, 'launch', 'main.py'))
MAIN = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(MAIN)

SCR = 'configs/slowly_changing_regression.py:smoke,bp'   # the config of the `base` run below
SMOKE = {name: f'--config=configs/{name}.py:smoke' for name in
         ('slowly_changing_regression', 'permuted_digits', 'permuted_mnist', 'cifar100', 'imagenet', 'slippery_ant',
          'minatar_replay_ratio', 'dmc_plasticity')}


@dataclasses.dataclass
class Case:
  name: str
  args: Tuple[str, ...]                        # '{tmp}' is the test's folder; --workdir={tmp}/w is added
  says: Tuple[str, ...]                        # words the error line must hold
  prepare: Optional[Callable[[str], None]] = None   # called with the workdir {tmp}/w before the launch
  base: bool = False                           # the workdir starts as a copy of the `base` run's
  sub: bool = False                            # run as a real subprocess
  unprivileged: bool = False                   # needs a user whom permissions stop (not root)


def _edit(path, old, new):
  with open(path) as f:
    text = f.read()
  assert old in text
  with open(path, 'w') as f:
    f.write(text.replace(old, new))


def _drop_saved_key(workdir, key='scan_unroll'):
  """config.json as a run saved before ddl had `key`."""
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    saved = json.load(f)
  del saved[key]
  with open(path, 'w') as f:
    json.dump(saved, f)


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)


def _state_files(workdir):
  files = glob.glob(os.path.join(workdir, 'checkpoints', '*', 'state', '**', 'd', '*'), recursive=True)
  assert files
  return files


def _garble(workdir):
  for path in _state_files(workdir):
    with open(path, 'wb') as f:
      f.write(b'garbage' * 10)


def _truncate(workdir):
  for path in _state_files(workdir):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


CASES = [
    # The config file and its argument.
    Case('config_file_missing', ('--config=configs/no_such_config.py',), ('no such config file', 'no_such_config.py'),
         sub=True),
    Case('config_file_misspelt', ('--config=configs/slowly_changing_regresion.py',),
         ('slowly_changing_regresion.py', 'did you mean configs/slowly_changing_regression.py'), sub=True),
    Case('unknown_preset', ('--config=configs/slowly_changing_regression.py:nosuch',), ("'nosuch'", 'preset')),
    Case('misspelt_variant', ('--config=configs/slowly_changing_regression.py:smoke,bpp',), ("did you mean 'bp'",)),
    # Keys and values.
    Case('unknown_key', (SMOKE['slowly_changing_regression'], '--config.nosuch=1'), ("unknown config key 'nosuch'",),
         sub=True),
    Case('unknown_nested_key', (SMOKE['slowly_changing_regression'], '--config.hparams.nosuch=1'),
         ("'hparams.nosuch'",)),
    Case('misspelt_key', (SMOKE['slowly_changing_regression'], '--config.num_sedes=3'), ('num_sedes', 'num_seeds')),
    Case('bad_variant_key', (SMOKE['slowly_changing_regression'], '--config.variants.bp.weight_decy=0.1'),
         ('variants.bp.weight_decy',)),
    Case('string_for_float', (SMOKE['slowly_changing_regression'], '--config.hparams.learning_rate=abc'),
         ('learning_rate', 'abc'), sub=True),
    Case('float_for_int', (SMOKE['slowly_changing_regression'], '--config.num_seeds=1.5'), ('num_seeds',)),
    Case('not_a_bool', (SMOKE['slowly_changing_regression'], '--config.fuse_variants=maybe'), ('fuse_variants',)),
    Case('unknown_flag', (SMOKE['slowly_changing_regression'], '--nosuchflag'), ('nosuchflag',)),
    Case('negative_learning_rate', (SMOKE['slowly_changing_regression'], '--config.hparams.learning_rate=-0.1'),
         ('learning_rate', '> 0')),
    Case('nan_learning_rate', (SMOKE['slowly_changing_regression'], '--config.hparams.learning_rate=nan'),
         ('learning_rate',)),
    Case('replacement_rate_above_1', (SMOKE['slowly_changing_regression'], '--config.hparams.replacement_rate=2'),
         ('replacement_rate', '<= 1')),
    Case('negative_meta_step_size', (SMOKE['slowly_changing_regression'], '--config.hparams.meta_step_size=-1'),
         ('meta_step_size', '>= 0')),
    Case('unknown_optimizer', (SMOKE['slowly_changing_regression'], '--config.optimizer.name=adamw'),
         ('optimizer.name', 'adamw')),
    Case('unknown_activation', (SMOKE['slowly_changing_regression'], '--config.network.activation=swish2'),
         ('network.activation', 'swish2', "did you mean 'swish'")),
    Case('unknown_weight_init', (SMOKE['slowly_changing_regression'], '--config.network.weight_init=kaimnig'),
         ('network.weight_init', 'kaimnig', "did you mean 'kaiming'")),
    Case('hyperparameter_of_another_method',
         ('--config=configs/dynamic_scr.py:smoke', '--config.variants.idbd_0p1.optimizer.name=sgd'),
         ('variant idbd_0p1', 'belongs to autostep, idbd', 'does not use')),
    Case('method_on_an_experiment_it_does_not_apply_to',
         (SMOKE['slowly_changing_regression'], '--config.optimizer.name=obgd'), ('obgd', 'td_error', 'does not apply')),
    Case('optimizer_that_does_not_take_what_the_experiment_gives',
         ('--config=configs/stream_ant.py:smoke', '--config.optimizer.name=adam'), ('adam', 'td_error', 'obgd')),
    # Off-policy RL.
    Case('replay_ratio_not_positive', (SMOKE['minatar_replay_ratio'], '--config.variants.rr_2.replay_ratio=0'),
         ('replay_ratio', '> 0')),
    Case('encoder_reset_of_every_layer', (SMOKE['minatar_replay_ratio'], '--config.schedule.reset_first=1',
                                          '--config.schedule.reset_layers=-5'), ('reset_layers=-5', 'whole network')),
    Case('buffer_smaller_than_a_batch', (SMOKE['minatar_replay_ratio'], '--config.replay.capacity=4'),
         ('replay.capacity', 'smaller than a batch')),
    Case('unknown_task', (SMOKE['minatar_replay_ratio'], '--config.env.name=Brekaout-MinAtar'),
         ('env.name', 'Brekaout-MinAtar', 'Breakout-MinAtar')),
    Case('unknown_atari_game', (SMOKE['minatar_replay_ratio'].replace(':smoke', ':atari,smoke'),
                                '--config.env.name=ALE/Pongg'), ('env.name', 'ALE/Pongg', "'pongg'", 'ALE/Pong')),
    Case('atari_processes_zero', (SMOKE['minatar_replay_ratio'].replace(':smoke', ':atari,smoke'),
                                  '--config.env.processes=0'), ('env.processes=0', '> 0')),
    Case('atari_without_ale_py', (SMOKE['minatar_replay_ratio'].replace(':smoke', ':atari,smoke'),),
         ('ALE/Pong', 'ale-py', 'not installed', '.[atari]')),
    Case('unknown_control_task', (SMOKE['dmc_plasticity'], '--config.env.name=CheetahRunn'),
         ('env.name', 'CheetahRunn', 'CheetahRun')),
    Case('pixels_without_the_renderer', (SMOKE['dmc_plasticity'], '--config.env.pixels=True'),
         ('env.pixels', 'warp-lang is not installed', 'env.pixels=False')),
    Case('camera_the_task_lacks', (SMOKE['dmc_plasticity'] + ',pixels', '--config.env.camera=7'),
         ('env.camera=7', 'CartpoleSwingup has', 'cameras', '-1')),
    Case('encoder_from_state', (SMOKE['dmc_plasticity'], "--config.intervene=('critic','encoder')"),
         ('encoder', 'env.pixels=True')),
    Case('augmentation_from_state', (SMOKE['dmc_plasticity'], '--config.hparams.augment=1'),
         ('augment', 'pixels', 'does not apply')),
    Case('unknown_module', (SMOKE['dmc_plasticity'], "--config.intervene=('critic','policy')"),
         ('intervene', 'actor', 'critic')),
    Case('dmc_replay_ratio_not_positive', (SMOKE['dmc_plasticity'], '--config.variants.arr.replay_ratio=-1'),
         ('replay_ratio', '> 0')),
    Case('unknown_wandb_mode', (SMOKE['slowly_changing_regression'], '--config.wandb.mode=sometimes'), ('wandb.mode',)),
    # Impossible sizes.
    Case('zero_seeds', (SMOKE['slowly_changing_regression'], '--config.num_seeds=0'), ('num_seeds',)),
    Case('zero_chunk_size', (SMOKE['slowly_changing_regression'], '--config.chunk_size=0'), ('chunk_size',)),
    Case('zero_examples', (SMOKE['slowly_changing_regression'], '--config.num_examples=0'), ('num_examples',)),
    Case('zero_checkpoint_every', (SMOKE['slowly_changing_regression'], '--config.checkpoint_every=0'),
         ('checkpoint_every',)),
    Case('batch_larger_than_the_task', (SMOKE['permuted_digits'], '--config.batch_size=100000'), ('batch_size',)),
    Case('negative_stop_after_chunks', (SMOKE['slowly_changing_regression'], '--stop_after_chunks=-1'),
         ('stop_after_chunks',)),
    Case('zero_stop_after_chunks', (SMOKE['slowly_changing_regression'], '--stop_after_chunks=0'),
         ('stop_after_chunks',)),
    # Devices.
    Case('gpu_on_a_cpu_machine', (SMOKE['slowly_changing_regression'], '--config.platform=gpu'),
         ("'gpu'", 'platform')),
    Case('unknown_platform', (SMOKE['slowly_changing_regression'], '--config.platform=cuda'), ('platform', 'cuda')),
    Case('more_devices_than_there_are', (SMOKE['slowly_changing_regression'], '--config.num_devices=64'),
         ('num_devices',)),
    # The workdir.
    Case('workdir_is_a_file', (SMOKE['slowly_changing_regression'],), ('--workdir=', 'not a directory'),
         prepare=lambda w: open(w, 'w').close()),
    Case('workdir_under_proc', (SMOKE['slowly_changing_regression'], '--workdir=/proc/ddl_no_such/w'),
         ('/proc/ddl_no_such/w', 'not writable')),
    Case('workdir_read_only', (SMOKE['slowly_changing_regression'],), ('not writable',),
         prepare=lambda w: os.makedirs(w, mode=0o500), unprivileged=True),
    Case('workdir_of_another_config', (f'--config={SCR}', '--config.hparams.learning_rate=0.5'),
         ('different config', 'hparams.learning_rate', '--fresh'), base=True),
    Case('workdir_saved_before_a_key_came', (f'--config={SCR}',), base=True,
         says=('different config', 'scan_unroll', 'came into ddl', 'config.json'), prepare=_drop_saved_key),
    Case('config_json_garbage', (f'--config={SCR}',), base=True, says=('config.json',),
         prepare=lambda w: open(os.path.join(w, 'config.json'), 'w').write('{oops')),
    Case('config_json_deleted', (f'--config={SCR}',), base=True, says=('config.json', 'checkpoints'),
         prepare=lambda w: os.remove(os.path.join(w, 'config.json'))),
    # Checkpoints and metrics.csv of a run being resumed.
    Case('checkpoint_garbage', (f'--config={SCR}',), base=True, says=('checkpoint', 'damaged'), prepare=_garble, sub=True),
    Case('checkpoint_truncated', (f'--config={SCR}',), base=True, says=('checkpoint', 'damaged'), prepare=_truncate),
    Case('checkpoint_meta_garbage', (f'--config={SCR}',), base=True, says=('checkpoint', 'damaged'),
         prepare=lambda w: open(os.path.join(w, 'checkpoints', '2', 'meta', 'metadata'), 'w').write('{oops')),
    Case('checkpoint_state_deleted', (f'--config={SCR}',), base=True, says=('checkpoint', 'damaged'),
         prepare=lambda w: shutil.rmtree(os.path.join(w, 'checkpoints', '2', 'state'))),
    Case('metrics_csv_column_removed', (f'--config={SCR}',), base=True, says=('metrics.csv',),
         prepare=lambda w: _edit(os.path.join(w, 'metrics.csv'), 'variant,seed,step,metric,value', 'variant,seed,step,value')),
    Case('metrics_csv_garbage', (f'--config={SCR}',), base=True, says=('metrics.csv',),
         prepare=lambda w: open(os.path.join(w, 'metrics.csv'), 'w').write('hello\x00world\n' * 200)),
    Case('metrics_csv_value_edited', (f'--config={SCR}',), base=True, says=('metrics.csv', 'edited'),
         prepare=lambda w: _edit(os.path.join(w, 'metrics.csv'), 'bp,1,500,error,', 'bp,1,500,error,9')),
    Case('metrics_csv_deleted', (f'--config={SCR}',), base=True, says=('metrics.csv', 'missing'),
         prepare=lambda w: os.remove(os.path.join(w, 'metrics.csv'))),
    # Data sets.
    Case('mnist_missing', (SMOKE['permuted_mnist'], '--config.data.source=mnist', '--config.data.data_dir={tmp}/tfds',
                           '--config.data.cache_dir='), ("'mnist'", '--config.data.download=True', '.[data]'), sub=True),
    Case('mnist_download_without_the_extra',
         (SMOKE['permuted_mnist'], '--config.data.source=mnist', '--config.data.data_dir={tmp}/tfds',
          '--config.data.cache_dir=', '--config.data.download=True'), ("'mnist'", 'not installed', '.[data]')),
    Case('cifar100_missing', (SMOKE['cifar100'], '--config.data.source=tfds', '--config.data.num_classes=100',
                              '--config.data.data_dir={tmp}/tfds', '--config.data.cache_dir='),
         ("'cifar100'", '--config.data.download=True')),
    Case('imagenet_tfds_dir_missing', (SMOKE['imagenet'], '--config.data.source=tfds', '--config.data.data_dir={tmp}/no',
                                       '--config.data.cache_dir='), ('imagenet_resized/32x32', '/no')),
    Case('imagenet_npy_dir_missing', (SMOKE['imagenet'], '--config.data.source=npy', '--config.data.data_dir={tmp}/no',
                                      '--config.data.cache_dir='), ('ImageNet-32 class files', '/no/0.npy')),
    Case('friction_file_of_the_wrong_shape',
         (SMOKE['slippery_ant'], '--config.env.friction.kind=file', '--config.env.friction.file={tmp}/frictions.npy'),
         ('env.friction.file', '(3, 7)'), prepare=lambda w: np.save(os.path.join(os.path.dirname(w), 'frictions.npy'), np.ones((3, 7)))),
    Case('friction_file_missing',
         (SMOKE['slippery_ant'], '--config.env.friction.kind=file', '--config.env.friction.file={tmp}/none.npy'),
         ('env.friction.file', 'none.npy')),
    Case('unknown_env_model', (SMOKE['slippery_ant'], '--config.env.model=mujoco'), ("env.model='mujoco'", 'gymnasium')),
    Case('mujoco_backend_with_brax_model', (SMOKE['slippery_ant'], '--config.env.model=brax'),
         ("env.backend='mujoco'", 'set env.model=gymnasium')),
    Case('no_host_threads', (SMOKE['slippery_ant'], '--config.env.threads=0'), ('env.threads=0', 'must be > 0')),
    Case('ant_model_file_unloadable', (SMOKE['slippery_ant'], '--config.env.model_file={tmp}/ant.xml'),
         ('env.model_file=', 'cannot be loaded by MuJoCo', "leave it ''"), prepare=lambda w: _write(
             os.path.join(os.path.dirname(w), 'ant.xml'), '<mujoco><worldbody><body name="torso">')),
    Case('ant_model_file_not_an_ant', (SMOKE['slippery_ant'], '--config.env.model_file={tmp}/box.xml'),
         ('env.model_file=', "not an Ant with gymnasium's layout", 'nq 7'), prepare=lambda w: _write(
             os.path.join(os.path.dirname(w), 'box.xml'),
             '<mujoco><worldbody><body name="torso"><freejoint/><geom size=".1"/></body></worldbody></mujoco>')),
    Case('gymnasium_model_off_mjx', (SMOKE['slippery_ant'], '--config.env.backend=spring'),
         ("env.backend='spring'", 'set env.backend=mjx or mujoco')),
]


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  """A workdir of the SCR smoke run (variant bp) stopped after 2 of 4 chunks, with its checkpoint."""
  workdir = str(tmp_path_factory.mktemp('base') / 'w')
  run_lib.run(load_config('slowly_changing_regression', 'smoke,bp'), workdir, stop_after_chunks=2, figures=False)
  return workdir


def _snapshot(path):
  """Every file and folder under `path` with its size and modification time (None: no such path)."""
  if not os.path.lexists(path):
    return None
  if not os.path.isdir(path):
    return {'': (os.path.getsize(path), os.stat(path).st_mtime_ns)}
  out = {}
  for folder, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(folder, name)
      out[os.path.relpath(full, path)] = (os.path.getsize(full), os.stat(full).st_mtime_ns)
  return out


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_error_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys, request):
  if case.unprivileged and os.geteuid() == 0:
    pytest.skip('root ignores file permissions')
  monkeypatch.chdir(ROOT)
  tmp = str(tmp_path)
  workdir = os.path.join(tmp, 'w')
  if case.base:
    shutil.copytree(request.getfixturevalue('base'), workdir)
  if case.prepare is not None:
    case.prepare(workdir)
  args = [a.replace('{tmp}', tmp) for a in case.args]
  if not any(a.startswith('--workdir=') for a in args):
    args.append(f'--workdir={workdir}')
  watched = [a.split('=', 1)[1] for a in args if a.startswith('--workdir=')] + [tmp]
  before = {path: _snapshot(path) for path in watched}
  if case.sub:
    proc = subprocess.run([sys.executable, os.path.join('launch', 'main.py'), *args], capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': ROOT}, timeout=300)
    status, out, err = proc.returncode, proc.stdout, proc.stderr
  else:
    if case.name == 'mnist_download_without_the_extra':   # whatever is installed here: never download
      monkeypatch.setattr(arrays, 'BUILD_MODULES', ('tensorflow', 'no_such_module_for_ddl'))
    if case.name == 'pixels_without_the_renderer':        # as on a machine without warp-lang
      monkeypatch.setattr(render, 'installed', lambda: False)
    if case.name == 'atari_without_ale_py':               # as on a machine without the atari extra
      monkeypatch.setattr(atari, 'installed', lambda: False)
    status = MAIN.command(['launch/main.py', *args])
    out, err = capsys.readouterr()
  assert status == 2, (out, err)
  assert 'Traceback' not in out + err
  assert err.endswith('\n') and err.count('\n') == 1 and err.startswith('error: '), err
  for word in case.says:
    assert word in err, err
  assert {path: _snapshot(path) for path in watched} == before
