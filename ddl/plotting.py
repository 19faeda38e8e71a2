"""Figures from metrics.csv: one PNG per metric, mean +- standard error over seeds per variant (or a
95 % bootstrap confidence band of the mean, the config's `figure_band='bootstrap95'`)."""
import collections
import csv
import json
import os
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def read_metrics(path: str) -> Dict[Tuple[str, str], Tuple[np.ndarray, np.ndarray]]:
  """{(variant, metric): (steps (T,), values (seeds, T))} from a long-form metrics.csv."""
  table = collections.defaultdict(dict)
  with open(path) as f:
    for row in csv.DictReader(f):
      table[(row['variant'], row['metric'])][(int(row['seed']), int(row['step']))] = float(row['value'])
  out = {}
  for key, cells in table.items():
    seeds = sorted({s for s, _ in cells})
    steps = sorted({t for _, t in cells})
    values = np.full((len(seeds), len(steps)), np.nan)
    for (s, t), v in cells.items():
      values[seeds.index(s), steps.index(t)] = v
    out[key] = (np.asarray(steps), values)
  return out


def mean_and_se(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and standard error (ddof 1) over seeds (axis 0), ignoring missing cells."""
  n = np.sum(~np.isnan(values), axis=0)
  with warnings.catch_warnings():   # steps where fewer than 2 seeds are left (runs stopped on NaN/inf)
    warnings.simplefilter('ignore', RuntimeWarning)
    mean = np.nanmean(values, axis=0)
    se = np.where(n > 1, np.nanstd(values, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)), 0.0) \
        if values.shape[0] > 1 else np.zeros_like(mean)
  return mean, se


def bootstrap_band(values: np.ndarray, level: float = 0.95, resamples: int = 1000,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean over seeds (axis 0) and the percentile bootstrap confidence interval of that mean
  (seeds resampled with replacement), ignoring missing cells. Returns (mean, low, high)."""
  rng = np.random.default_rng(seed)
  index = rng.integers(0, values.shape[0], (resamples, values.shape[0]))
  with np.errstate(invalid='ignore'):
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', category=RuntimeWarning)   # all-missing columns give NaN
      means = np.nanmean(values[index], axis=1)                 # (resamples, T)
      tail = (1 - level) / 2 * 100
      low, high = np.nanpercentile(means, [tail, 100 - tail], axis=0)
      return np.nanmean(values, axis=0), low, high


def binned(steps: np.ndarray, values: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Each seed's values averaged over consecutive bins of `size` logged steps (the paper's
  'bins of 50 tasks'); x is each bin's first step."""
  if size <= 1:
    return steps, values
  edges = range(0, len(steps), size)
  return (np.asarray([steps[i] for i in edges]),
          np.stack([np.nanmean(values[:, i:i + size], axis=1) for i in edges], axis=1))


MARKERS = ('nonfinite',)   # rows that mark events (a run stopped on NaN/inf), not curves


def plot_workdir(workdir: str, metrics_csv: Sequence[str] = (), labels: Optional[Sequence[str]] = None,
                 out_dir: Optional[str] = None) -> Sequence[str]:
  """Writes <out_dir or workdir/figures>/<metric>.png for every metric of the workdir's
  metrics.csv (and of any further metrics.csv files given, drawn on the same axes; with `labels`,
  one per file, each curve is named '<label>: <variant>'), binned by the config's `figure_bin`
  logged steps when it has one. Runs stopped on NaN/inf count only up to where they stopped.
  Returns the written paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = {}
  paths = [os.path.join(workdir, 'metrics.csv'), *metrics_csv]
  for i, path in enumerate(paths):
    for (variant, metric), value in read_metrics(path).items():
      if metric not in MARKERS:
        data[(f'{labels[i]}: {variant}' if labels else variant, metric)] = value
  bin_size, band = figure_bin(workdir), figure_setting(workdir, 'figure_band', 'se')
  out_dir = out_dir or os.path.join(workdir, 'figures')
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for metric in sorted({m for _, m in data}):
    fig, ax = plt.subplots(figsize=(6, 4))
    draw(ax, data, metric, bin_size, band=band)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, f'{metric}.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


def figure_setting(workdir: str, key: str, default):
  """A figure setting of the workdir's config.json (e.g. figure_band), `default` without one."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f).get(key, default)


def figure_bin(workdir: str) -> int:
  """The config's `figure_bin` (logged steps per bin of the figures), 1 without one."""
  return int(figure_setting(workdir, 'figure_bin', 1))


def draw(ax, data, metric: str, bin_size: int = 1, xlabel: str = 'step', band: str = 'se') -> None:
  """One metric's curves on `ax`: per variant, the mean over seeds with a band of +- one standard
  error ('se') or the 95 % bootstrap confidence interval ('bootstrap95', the paper's RL figures),
  binned by `bin_size` logged steps (used by the figures and the notebooks)."""
  for (variant, m), (steps, values) in sorted(data.items()):
    if m != metric:
      continue
    steps, values = binned(steps, values, bin_size)
    if band == 'bootstrap95':
      mean, low, high = bootstrap_band(values)
    else:
      mean, se = mean_and_se(values)
      low, high = mean - se, mean + se
    ax.plot(steps, mean, label=f'{variant} (n={values.shape[0]})')
    ax.fill_between(steps, low, high, alpha=0.25)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(metric)
  per_bin = f' in bins of {bin_size}' if bin_size > 1 else ''
  spread = '95 % bootstrap CI' if band == 'bootstrap95' else 's.e.'
  ax.set_title(f'{metric}{per_bin}: mean and {spread} over seeds')
