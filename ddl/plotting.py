"""Figures from metrics.csv: one PNG per metric, mean +- standard error over seeds per variant (or a
95 % bootstrap confidence band of the mean, the config's `figure_band='bootstrap95'`)."""
import collections
import csv
import json
import os
from typing import Dict, Sequence, Tuple

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
  mean = np.nanmean(values, axis=0)
  se = np.where(n > 1, np.nanstd(values, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)), 0.0) if values.shape[0] > 1 \
      else np.zeros_like(mean)
  return mean, se


def bootstrap_band(values: np.ndarray, level: float = 0.95, resamples: int = 1000,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean over seeds (axis 0) and the percentile bootstrap confidence interval of that mean
  (seeds resampled with replacement), ignoring missing cells. Returns (mean, low, high)."""
  rng = np.random.default_rng(seed)
  index = rng.integers(0, values.shape[0], (resamples, values.shape[0]))
  with np.errstate(invalid='ignore'):
    import warnings  # pylint: disable=g-import-not-at-top
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


def plot_workdir(workdir: str, metrics_csv: Sequence[str] = ()) -> Sequence[str]:
  """Writes <workdir>/figures/<metric>.png for every metric of the workdir's metrics.csv (and of
  any further metrics.csv files given, drawn on the same axes), binned by the config's
  `figure_bin` logged steps when it has one. Returns the written paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = {}
  for path in [os.path.join(workdir, 'metrics.csv'), *metrics_csv]:
    data.update(read_metrics(path))
  bin_size, band = 1, 'se'
  if os.path.exists(os.path.join(workdir, 'config.json')):
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    bin_size, band = int(saved.get('figure_bin', 1)), saved.get('figure_band', 'se')
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)
  written = []
  for metric in sorted({m for _, m in data}):
    fig, ax = plt.subplots(figsize=(6, 4))
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
    ax.set_xlabel('step')
    ax.set_ylabel(metric)
    per_bin = f' in bins of {bin_size}' if bin_size > 1 else ''
    spread = '95 % bootstrap CI' if band == 'bootstrap95' else 's.e.'
    ax.set_title(f'{metric}{per_bin}: mean and {spread} over seeds')
    ax.legend()
    fig.tight_layout()
    path = os.path.join(workdir, 'figures', f'{metric}.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written
