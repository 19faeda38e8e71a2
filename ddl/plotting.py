"""Figures from metrics.csv: one PNG per metric, mean +- standard error over seeds per variant."""
import collections
import csv
import json
import os
from typing import Dict, Sequence, Tuple

import warnings

import numpy as np

REDUCE = {'mean': np.nanmean, 'max': np.nanmax}


def read_metrics(path: str, with_seeds: bool = False) -> Dict[Tuple[str, str], Tuple[np.ndarray, ...]]:
  """{(variant, metric): (steps (T,), values (seeds, T)[, seed ids (seeds,)])} from a long-form
  metrics.csv."""
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
    out[key] = (np.asarray(steps), values) + ((np.asarray(seeds),) if with_seeds else ())
  return out


def minus_baseline(curve: Tuple[np.ndarray, ...], baseline: Tuple[np.ndarray, ...]) -> Tuple[np.ndarray, np.ndarray]:
  """(steps, values minus the baseline's) over the steps and seeds both have, paired by seed id;
  arguments as `read_metrics(..., with_seeds=True)` gives them."""
  steps, values, seeds = curve
  b_steps, b_values, b_seeds = baseline
  common_steps = np.intersect1d(steps, b_steps)
  common_seeds = np.intersect1d(seeds, b_seeds)
  pick = lambda v, st, se: v[np.searchsorted(se, common_seeds)][:, np.searchsorted(st, common_steps)]
  return common_steps, pick(values, steps, seeds) - pick(b_values, b_steps, b_seeds)


def mean_and_se(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and standard error (ddof 1) over seeds (axis 0), ignoring missing cells."""
  n = np.sum(~np.isnan(values), axis=0)
  mean = np.nanmean(values, axis=0)
  se = np.where(n > 1, np.nanstd(values, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)), 0.0) if values.shape[0] > 1 \
      else np.zeros_like(mean)
  return mean, se


def binned(steps: np.ndarray, values: np.ndarray, size: int, reduce: str = 'mean') -> Tuple[np.ndarray, np.ndarray]:
  """Each seed's values reduced ('mean' or 'max') over bins of `size` steps, [k size, (k + 1) size)
  (the paper's 'bins of 50 tasks', CIFAR's 'max over the increment'); x is each bin's first
  logged step. Metrics logged every n steps get one bin per size steps all the same."""
  if size <= 1 and reduce == 'mean':
    return steps, values
  if reduce not in REDUCE:
    raise ValueError(f'figure_reduce={reduce!r} is not known; use one of {sorted(REDUCE)}.')
  index = np.asarray(steps) // max(size, 1)
  bins = np.unique(index)
  with warnings.catch_warnings():   # all-nan bins stay nan
    warnings.simplefilter('ignore', RuntimeWarning)
    out = np.stack([REDUCE[reduce](values[:, index == b], axis=1) for b in bins], axis=1)
  return np.asarray([steps[np.argmax(index == b)] for b in bins]), out


def plot_workdir(workdir: str, metrics_csv: Sequence[str] = ()) -> Sequence[str]:
  """Writes <workdir>/figures/<metric>.png for every metric of the workdir's metrics.csv (and of
  any further metrics.csv files given, drawn on the same axes), binned by the config's
  `figure_bin` steps with its `figure_reduce` ('mean' default, or 'max'). With `figure_baseline`
  (a variant) also <metric>_minus_<baseline>.png for the metrics in `figure_baseline_metrics`:
  each variant's binned values minus the baseline's, paired by seed. Returns the written paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = {}
  for path in [os.path.join(workdir, 'metrics.csv'), *metrics_csv]:
    data.update(read_metrics(path, with_seeds=True))
  settings = {}
  if os.path.exists(os.path.join(workdir, 'config.json')):
    with open(os.path.join(workdir, 'config.json')) as f:
      settings = json.load(f)
  bin_size, reduce = int(settings.get('figure_bin', 1)), settings.get('figure_reduce', 'mean')
  baseline = settings.get('figure_baseline', '')
  binned_data = {key: binned(steps, values, bin_size, reduce) + (seeds,) for key, (steps, values, seeds) in data.items()}
  figures = [(metric, '', binned_data) for metric in sorted({m for _, m in data})]
  for metric in settings.get('figure_baseline_metrics', ()):
    if (baseline, metric) in binned_data:
      relative = {(v, m): minus_baseline(curve, binned_data[(baseline, metric)]) + (None,)
                  for (v, m), curve in binned_data.items() if m == metric and v != baseline}
      figures.append((metric, baseline, relative))
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)
  written = []
  for metric, relative_to, curves in figures:
    fig, ax = plt.subplots(figsize=(6, 4))
    for (variant, m), (steps, values, _) in sorted(curves.items()):
      if m != metric or not values.size:
        continue
      mean, se = mean_and_se(values)
      ax.plot(steps, mean, label=f'{variant} (n={values.shape[0]})')
      ax.fill_between(steps, mean - se, mean + se, alpha=0.25)
    ax.set_xlabel('step')
    name = f'{metric}_minus_{relative_to}' if relative_to else metric
    ax.set_ylabel(name)
    per_bin = f' ({reduce} over bins of {bin_size})' if bin_size > 1 or reduce != 'mean' else ''
    ax.set_title(f'{name}{per_bin}: mean +- s.e. over seeds', fontsize=9)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(workdir, 'figures', f'{name}.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written
