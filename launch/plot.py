"""Redraws the figures of finished (or running) experiments from their metrics.csv.

  python launch/plot.py WORKDIR [WORKDIR ...]              # each into WORKDIR/figures/
  python launch/plot.py A B --together --out=/tmp/compare  # A's and B's curves on one figure per metric

Uses ddl/plotting.py (mean +- standard error over seeds per variant, binned as each config says),
plus an experiment's own figures where it has some (e.g. the tracking task's Sutton 1992 Figures 3
and 4).
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ddl import experiments  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import plotting  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_bool('together', False, 'Draw the curves of all workdirs on one figure per metric.')
flags.DEFINE_string('out', None, 'Output folder for --together (default: <first workdir>/figures_together).')


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    print('error: give at least one workdir: python launch/plot.py WORKDIR [WORKDIR ...]', file=sys.stderr)
    return 2
  for workdir in workdirs:
    if not os.path.exists(os.path.join(workdir, 'metrics.csv')):
      print(f'error: {workdir}: no metrics.csv (is it a workdir of launch/main.py?)', file=sys.stderr)
      return 2
  try:
    written = _plot(workdirs)
  except plotting.MetricsFileError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print('\n'.join(written))
  return 0


def _plot(workdirs):
  """The figures of `workdirs`, alone or together; returns the written paths."""
  if flags.FLAGS.together:
    labels = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    if len(set(labels)) < len(labels):
      labels = [os.path.normpath(w) for w in workdirs]
    out = flags.FLAGS.out or os.path.join(workdirs[0], 'figures_together')
    return plotting.plot_workdir(workdirs[0], [os.path.join(w, 'metrics.csv') for w in workdirs[1:]],
                                 labels=labels, out_dir=out)
  return [p for w in workdirs for p in (*plotting.plot_workdir(w), *experiments.figures(w))]


if __name__ == '__main__':
  app.run(main)
