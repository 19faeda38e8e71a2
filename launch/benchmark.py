"""Throughput of an experiment's compiled chunk: one JSON line per program (group of variants)
and one for all of them together.

  python launch/benchmark.py --workload=scr --seeds=30 [--variant=cbp] [--chunks=3]

Fields: workload, variant, seeds, runs (variants x seeds), examples_per_sec (all runs together,
steady state, after one untimed chunk), compile_sec (init + chunk compilation), peak_rss_mb
(of this process so far), backend.
"""
import ast
import json
import os
import resource
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ddl import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import run as run_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

# workload: (config file, overrides that keep the network and batch but make chunks short and the
# data synthetic, so that the measurement needs no data set and ends in minutes)
WORKLOADS = {
    'scr': ('slowly_changing_regression', {}),
    'imagenet': ('imagenet', {'data.source': 'mock', 'data.num_classes': 10, 'epochs': 5}),
    'permuted_mnist': ('permuted_mnist', {'data.source': 'mock', 'data.mock_examples': 60_000,
                                          'examples_per_task': 2_000}),
    'permuted_digits': ('permuted_digits', {}),
    # one increment of 5 classes: a chunk is an epoch of the first increment (25 steps of 90, then
    # test and validation of 750 images); later increments scale the steps by the increment number
    'cifar100': ('cifar100', {'data.source': 'mock', 'data.num_classes': 5}),
}

flags.DEFINE_enum('workload', 'scr', sorted(WORKLOADS), 'Experiment to measure.')
flags.DEFINE_integer('seeds', 30, 'Seeds per variant (vmapped).')
flags.DEFINE_string('variant', '', 'Comma-separated variants (default: all of the config).')
flags.DEFINE_integer('chunks', 3, 'Timed chunks per program.')
flags.DEFINE_string('config_arg', '', 'Extra config argument, e.g. a preset such as smoke.')
flags.DEFINE_bool('fuse_variants', False, 'One program for all variants of a structure.')
flags.DEFINE_multi_string('override', [], 'Config override key=value (Python literal), e.g. network.conv=lax.')


def _set(config, key, value):
  *parents, leaf = key.split('.')
  for parent in parents:
    config = config[parent]
  config[leaf] = value


def _config():
  import importlib.util  # pylint: disable=g-import-not-at-top
  name, overrides = WORKLOADS[flags.FLAGS.workload]
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  arg = ','.join(filter(None, [flags.FLAGS.config_arg, flags.FLAGS.variant]))
  config = module.get_config(arg)
  config.num_seeds = flags.FLAGS.seeds
  config.fuse_variants = flags.FLAGS.fuse_variants
  for key, value in overrides.items():
    _set(config, key, value)
  for item in flags.FLAGS.override:
    key, value = item.split('=', 1)
    _set(config, key, ast.literal_eval(value) if value[:1] in '0123456789-.[(\'"TF' else value)
  for name in config.variants:   # time every variant on the same number of chunks
    if 'num_tasks' in config.variants[name]:
      with config.variants[name].unlocked():
        del config.variants[name]['num_tasks']
  return config


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  config = _config()
  config_lib.validate(config, run_lib.experiments.get(config.experiment))
  total_examples, total_seconds, total_compile = 0, 0.0, 0.0
  data = jax.device_put(run_lib.experiments.get(config.experiment).load_data(config))
  programs = run_lib._programs(config)  # pylint: disable=protected-access
  for program in programs:
    began = time.time()
    state = program.init()
    compiled = program.run_chunk.lower(state, data).compile()
    state, values = compiled(state, data)
    jax.block_until_ready(values)
    compile_sec = time.time() - began
    began = time.time()
    for _ in range(flags.FLAGS.chunks):
      state, values = compiled(state, data)
    jax.block_until_ready((state, values))
    seconds = time.time() - began
    examples = program.experiment.examples_per_chunk * len(program.variants) * flags.FLAGS.chunks
    total_examples += examples
    total_seconds += seconds
    total_compile += compile_sec
    print(json.dumps(dict(
        workload=flags.FLAGS.workload, variant=program.group.name, seeds=config.num_seeds,
        runs=len(program.variants), examples_per_sec=round(examples / seconds, 1),
        compile_sec=round(compile_sec, 2), peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        backend=jax.default_backend())), flush=True)
  if len(programs) > 1:
    print(json.dumps(dict(
        workload=flags.FLAGS.workload, variant='all', seeds=config.num_seeds,
        runs=sum(len(p.variants) for p in programs), examples_per_sec=round(total_examples / total_seconds, 1),
        compile_sec=round(total_compile, 2), peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        backend=jax.default_backend())), flush=True)


if __name__ == '__main__':
  app.run(main)
