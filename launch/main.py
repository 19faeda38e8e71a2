"""Runs an experiment: `python launch/main.py --config=configs/X.py[:preset,variant,...] [--workdir=DIR]`.

Any config value can be overridden with `--config.a.b=value`. Without flags it runs the
slowly-changing regression default into ./workdirs/slowly_changing_regression.
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ddl import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import run as run_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                              'slowly_changing_regression.py')
config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'Experiment config file[:arguments].',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Output directory (default: workdirs/<experiment>).')
flags.DEFINE_integer('stop_after_chunks', None, 'End this launch after N chunks (resumable).')
flags.DEFINE_bool('fresh', False, 'Delete the outputs of a previous run in --workdir and start over.')


def parse_flags(argv):
  """absl flag parsing with one clear line for a bad config file, argument, key or value."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e.args[0] if e.args else e).strip('"\'').replace('\\n', ' ').replace('\n', ' ')
    message = message.replace("\\'", "'")
    if 'Traceback' in message:   # an error raised inside the config file: keep its last line
      message = message.rsplit('Error: ', 1)[-1].strip()
    if isinstance(e, (AttributeError, KeyError)):
      message = f'unknown config key {message} (list the keys with --config.help or read the config file)'
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  del argv
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join('workdirs', config.experiment)
  try:
    summary = run_lib.run(config, workdir, stop_after_chunks=flags.FLAGS.stop_after_chunks, fresh=flags.FLAGS.fresh)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except run_lib.Interrupted as e:
    print(f'{e}; metrics.csv is flushed. Relaunch the same command (same --workdir, without --fresh) to '
          'resume from this checkpoint.', file=sys.stderr)
    return 128 + e.signum
  nonfinite = f'; {summary["nonfinite_runs"]} run(s) stopped on NaN/inf' if summary['nonfinite_runs'] else ''
  print(f'done: {summary["chunks_done"]}/{summary["num_chunks"]} chunks in {summary["seconds"]:.1f}s '
        f'({summary["examples_per_sec"]:.0f} examples/s){nonfinite}; results in {os.path.abspath(workdir)}')
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
