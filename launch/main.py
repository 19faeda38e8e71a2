"""Runs an experiment: `python launch/main.py --config=configs/X.py[:preset,variant,...] [--workdir=DIR]`.

Any config value can be overridden with `--config.a.b=value`. Without flags it runs the
slowly-changing regression default into ./workdirs/slowly_changing_regression. A bad input (config
file, argument, key, value, workdir, data set, checkpoint) stops the launch with one line
`error: ...` on stderr and exit status 2, before anything is written.
"""
import difflib
import logging as py_logging
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


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, argv=None) -> None:
  """The launch's flags on `flag_values`; `argv` is the command line the `--config.x` overrides are
  read from (None: sys.argv)."""
  config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'Experiment config file[:arguments].',
                                  flag_values=flag_values, lock_config=True, sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'Output directory (default: workdirs/<experiment>).', flag_values=flag_values)
  flags.DEFINE_integer('stop_after_chunks', None, 'End this launch after N >= 1 chunks (resumable).', lower_bound=1,
                       flag_values=flag_values)
  flags.DEFINE_bool('fresh', False, 'Delete the outputs of a previous run in --workdir and start over.',
                    flag_values=flag_values)


def parse(argv, flag_values: flags.FlagValues = flags.FLAGS):
  """absl flag parsing; returns the remaining arguments. A bad config file, argument, key or value
  raises ConfigError with one clear line."""
  try:
    rest = flag_values(argv)
    flag_values.config.experiment   # ml_collections defers a config file's load error to the first access
    return rest
  except OSError as e:
    raise config_lib.ConfigError(_config_file_error(e, argv)) from None
  except (AttributeError, KeyError) as e:
    raise config_lib.ConfigError(_unknown_key(e, argv)) from None
  except (flags.Error, TypeError, ValueError) as e:
    message = str(e.args[0] if e.args else e)
    if 'Traceback' in message:   # an error raised inside the config file: keep its last line
      message = message.strip().rsplit('\n', 1)[-1].split(': ', 1)[-1]
    raise config_lib.ConfigError(' '.join(message.split())) from None


def _config_file_error(error: OSError, argv) -> str:
  """A config file that does not load: the path and why, with the closest file name beside it."""
  path = next((a.split('=', 1)[1].split(':', 1)[0] for a in argv if a.startswith('--config=')), DEFAULT_CONFIG)
  if not os.path.isfile(path):
    folder = os.path.dirname(path) or '.'
    names = sorted(n for n in os.listdir(folder) if n.endswith('.py')) if os.path.isdir(folder) else []
    close = difflib.get_close_matches(os.path.basename(path), names, n=1)
    hint = f' (did you mean {os.path.join(os.path.dirname(path), close[0])}?)' if close else \
        f' (config files: {", ".join(names)})' if names else ''
    return f'--config={path}: no such config file{hint}'
  return f'--config={path}: cannot load it ({str(error).strip().splitlines()[-1].strip()})'


def _unknown_key(error: Exception, argv) -> str:
  """ml_collections' unknown-key error as the whole dotted key of the override, with its hint."""
  inner = error.args[0] if error.args else error
  inner = inner.args[0] if isinstance(inner, KeyError) and inner.args else inner
  key, _, hint = str(inner).partition('\n')
  key = key.strip('\'"')
  paths = [a[len('--config.'):].split('=', 1)[0] for a in argv if a.startswith('--config.')]
  path = next((p for p in paths if key in p.split('.')), key)
  hint = f' ({hint.strip()})' if hint.strip() else ''
  return f'unknown config key {path!r}{hint}; read the config file and ddl/config.py for its keys'


def launch(flag_values: flags.FlagValues = flags.FLAGS) -> int:
  """Runs the parsed launch; returns the exit status. A ConfigError: one line `error: ...` on stderr, 2."""
  config = flag_values.config
  workdir = flag_values.workdir or os.path.join('workdirs', config.experiment)
  try:
    summary = run_lib.run(config, workdir, stop_after_chunks=flag_values.stop_after_chunks, fresh=flag_values.fresh)
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


def command(argv) -> int:
  """`python launch/main.py ARGV` in this process (argv[0] is the program name): parse, then
  launch, on flags of its own; returns the exit status."""
  flag_values = flags.FlagValues()
  define_flags(flag_values, argv)
  try:
    parse(argv, flag_values)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return launch(flag_values)


def _parse_or_exit(argv):
  try:
    return parse(argv)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  del argv
  py_logging.getLogger('jax').setLevel(py_logging.WARNING)   # e.g. the INFO line on every backend JAX finds missing
  return launch()


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=_parse_or_exit)
