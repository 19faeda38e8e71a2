"""Figures from metrics.csv: one PNG per metric, mean +- standard error over seeds per variant (or a
95 % bootstrap confidence band of the mean, the config's `figure_band='bootstrap95'`)."""
import itertools
import json
import os
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

REDUCE = {'mean': np.nanmean, 'max': np.nanmax}


COLUMNS = ['variant', 'seed', 'step', 'metric', 'value']   # metrics.csv (ddl.writers.METRICS_HEADER)


class MetricsFileError(ValueError):
  """A file that is not a metrics.csv of ddl; the message names the first bad line."""


def read_metrics(path: str, with_seeds: bool = False,
                 block: int = 1 << 20) -> Dict[Tuple[str, str], Tuple[np.ndarray, ...]]:
  """{(variant, metric): (steps (T,), values (seeds, T)[, seed ids (seeds,)])} from a long-form
  metrics.csv, keys in order of first appearance, steps and seeds sorted, missing cells NaN (of a
  repeated cell the last row wins). Linear in the rows: `block` lines at a time are split into
  columns (ddl writes no quoted fields), the numbers parsed into arrays and each row given one
  integer key; each key's rows are then placed at once. A file that is not such a metrics.csv
  raises MetricsFileError naming the first bad line."""
  index: Dict[Tuple[str, str], int] = {}
  keys, seeds, steps, values = [], [], [], []
  with open(path) as f:
    header = f.readline()
    if header.rstrip('\r\n').split(',') != COLUMNS:
      raise MetricsFileError(f'{path}, line 1: the header is {header.strip()[:100]!r}, not {",".join(COLUMNS)!r}; '
                       'is it a metrics.csv of ddl?')
    first_line = 2
    for lines in iter(lambda: list(itertools.islice(f, block)), []):
      n, fields = len(lines), ','.join(lines).split(',')
      # 5 fields a line: 5n fields in all, and every line's newline in its value field.
      ends = n - (not lines[-1].endswith('\n'))
      if len(fields) != 5 * n or ''.join(fields[4::5]).count('\n') != ends:
        raise _bad_row(path, lines, first_line)
      try:
        seeds.append(np.fromiter(map(int, fields[1::5]), np.int64, n))
        steps.append(np.fromiter(map(int, fields[2::5]), np.int64, n))
        values.append(np.fromiter(map(float, fields[4::5]), np.float64, n))
      except ValueError:
        raise _bad_row(path, lines, first_line) from None
      pairs = list(zip(fields[0::5], fields[3::5]))
      keys.append(np.fromiter((index.setdefault(k, len(index)) for k in pairs), np.int64, n))
      first_line += n
  if not index:
    return {}
  keys, seeds, steps, values = (np.concatenate(c) for c in (keys, seeds, steps, values))
  order = np.argsort(keys, kind='stable')          # each key's rows together, in file order
  bounds = np.searchsorted(keys[order], np.arange(len(index) + 1))
  out = {}
  for key, i in index.items():
    rows = order[bounds[i]:bounds[i + 1]]
    seed_ids, seed_at = np.unique(seeds[rows], return_inverse=True)
    step_ids, step_at = np.unique(steps[rows], return_inverse=True)
    table = np.full((len(seed_ids), len(step_ids)), np.nan)
    table[seed_at, step_at] = values[rows]
    out[key] = (step_ids, table) + ((seed_ids,) if with_seeds else ())
  return out


def _bad_row(path: str, lines, first_line: int) -> MetricsFileError:
  """The first of `lines` that is not variant,seed(int),step(int),metric,value(float)."""
  for number, line in enumerate(lines, first_line):
    try:
      _, seed, step, _, value = line.split(',')
      int(seed), int(step), float(value)
    except ValueError as e:
      return MetricsFileError(f'{path}, line {number}: {line.strip()[:100]!r} is not a row of {",".join(COLUMNS)} '
                        f'({e}); was the file edited?')
  return MetricsFileError(f'{path}: lines {first_line}..{first_line + len(lines) - 1} are not rows of {",".join(COLUMNS)}')


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


MARKERS = ('nonfinite',)   # rows that mark events (a run stopped on NaN/inf), not curves


def plot_workdir(workdir: str, metrics_csv: Sequence[str] = (), labels: Optional[Sequence[str]] = None,
                 out_dir: Optional[str] = None) -> Sequence[str]:
  """Writes <out_dir or workdir/figures>/<metric>.png for every metric of the workdir's
  metrics.csv (and of any further metrics.csv files given, drawn on the same axes; with `labels`,
  one per file, each curve is named '<label>: <variant>'). The config's figure settings apply:
  `figure_bin` (steps per bin), `figure_reduce` ('mean' or 'max' over a bin), `figure_band` ('se'
  or 'bootstrap95'), and with `figure_baseline` (a variant) also <metric>_minus_<baseline>.png for
  the metrics in `figure_baseline_metrics`: each variant's binned values minus the baseline's,
  paired by seed. Runs stopped on NaN/inf count only up to where they stopped. Returns the
  written paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = {}
  paths = [os.path.join(workdir, 'metrics.csv'), *metrics_csv]
  for i, path in enumerate(paths):
    for (variant, metric), value in read_metrics(path, with_seeds=True).items():
      if metric not in MARKERS:
        data[(f'{labels[i]}: {variant}' if labels else variant, metric)] = value
  bin_size, band = figure_bin(workdir), figure_setting(workdir, 'figure_band', 'se')
  reduce, baseline = figure_setting(workdir, 'figure_reduce', 'mean'), figure_setting(workdir, 'figure_baseline', '')
  figures = [(metric, data, bin_size) for metric in sorted({m for _, m in data})]
  for metric in figure_setting(workdir, 'figure_baseline_metrics', ()):
    if (baseline, metric) in data:   # bin first, then pair by seed
      binned_data = {key: binned(steps, values, bin_size, reduce) + (seeds,)
                     for key, (steps, values, seeds) in data.items() if key[1] == metric}
      name = f'{metric}_minus_{baseline}'
      figures.append((name, {(v, name): minus_baseline(curve, binned_data[(baseline, metric)])
                             for (v, _), curve in binned_data.items() if v != baseline}, 1))
  out_dir = out_dir or os.path.join(workdir, 'figures')
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for name, curves, size in figures:
    many = len({v for v, m in curves if m == name}) > 6
    fig, ax = plt.subplots(figsize=(8.5, 4) if many else (6, 4))
    draw(ax, curves, name, size, band=band, reduce=reduce)
    if size != bin_size:   # pre-binned curves: name the bins all the same
      ax.set_title(f'{name} ({reduce} over bins of {bin_size}): mean over seeds, paired by seed', fontsize=9)
    if many:   # beside the axes, not over the curves
      ax.legend(fontsize=8, loc='center left', bbox_to_anchor=(1.01, 0.5))
    else:
      ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, f'{name}.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  written += filter(None, [step_size_figure(data, out_dir),
                           summary_table(data, out_dir, figure_setting(workdir, 'summary_metric', ''),
                                         figure_setting(workdir, 'summary_baseline', ''), bin_size)])
  return written


STEP_SIZE, SPREAD = 'step_size_', 'step_size_spread_'


def step_size_figure(data, out_dir: str) -> Optional[str]:
  """<out_dir>/step_sizes.png for the variants that learn their step sizes (IDBD, Autostep,
  MetaOptimize): one panel per variant, the mean step size of each layer over time (mean over
  seeds, log scale) with a band of ± its spread over the layer's weights. None without such variants."""
  means = {(v, m[len(STEP_SIZE):]): curve for (v, m), curve in data.items()
           if m.startswith(STEP_SIZE) and not m.startswith(SPREAD)}
  if not means:
    return None
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  variants = sorted({v for v, _ in means})
  cols = min(4, len(variants))
  rows = -(-len(variants) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharey=True)
  for ax in axes.flat[len(variants):]:
    ax.axis('off')
  for ax, variant in zip(axes.flat, variants):
    for (v, layer), (steps, values, *_) in sorted(means.items()):
      if v != variant:
        continue
      mean = np.nanmean(values, axis=0)
      ax.plot(steps, mean, label=layer)
      spread = data.get((variant, SPREAD + layer))
      if spread is not None:
        width = np.nanmean(spread[1], axis=0)
        ax.fill_between(steps, np.maximum(mean - width, mean * 1e-3), mean + width, alpha=0.2)
    ax.set_yscale('log')
    ax.set_title(variant, fontsize=9)
    ax.set_xlabel('step')
    ax.legend(fontsize=7)
  for ax in axes[:, 0]:
    ax.set_ylabel('step size')
  fig.suptitle('learned step sizes per layer: mean over seeds; band: ± spread over the weights', fontsize=9)
  fig.tight_layout()
  path = os.path.join(out_dir, 'step_sizes.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def summary_table(data, out_dir: str, metric: str, baseline: str, bin_size: int = 1) -> Optional[str]:
  """<out_dir>/summary.md: per variant, `metric` in the first and the last bin (mean ± s.e. over
  seeds), the last bin's difference to the `baseline` variant's (a config's `summary_baseline`,
  e.g. the best fixed step size, chosen on other seeds: not picked here from the runs it is
  compared with), and the learned step size of each layer at the end (mean over seeds). None
  without `metric` (a config's `summary_metric`)."""
  if not metric or not any(m == metric for _, m in data):
    return None
  rows = {}
  for (variant, m), (steps, values, *_) in sorted(data.items()):
    if m == metric:
      _, binned_values = binned(steps, values, bin_size)
      rows[variant] = [mean_and_se(binned_values[:, [0]]), mean_and_se(binned_values[:, [-1]])]
  last = lambda v: float(rows[v][1][0][0])
  best = baseline if baseline in rows else ''
  layers = sorted({m[len(STEP_SIZE):] for _, m in data if m.startswith(STEP_SIZE) and not m.startswith(SPREAD)})
  lines = [f'# {metric}: first and last bin (mean ± s.e. over seeds)', '',
           f'Baseline (`summary_baseline`): {best or "none"}.', '',
           '| ' + ' | '.join(['variant', 'first bin', 'last bin', 'last − best'] +
                             [f'step size {l}' for l in layers]) + ' |',
           '|---' * (4 + len(layers)) + '|']
  for variant, ((m0, s0), (m1, s1)) in rows.items():
    sizes = []
    for layer in layers:
      curve = data.get((variant, STEP_SIZE + layer))
      sizes.append(f'{np.nanmean(curve[1][:, -1]):.3g}' if curve is not None else '')
    diff = f'{m1[0] - last(best):+.3f}' if best else ''
    cells = [variant, f'{m0[0]:.3f} ± {s0[0]:.3f}', f'{m1[0]:.3f} ± {s1[0]:.3f}', diff] + sizes
    lines.append('| ' + ' | '.join(cells) + ' |')
  path = os.path.join(out_dir, 'summary.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return path


def panels_figure(workdir: str, name: str, metrics: Sequence[Tuple], title: str = '') -> Optional[str]:
  """<workdir>/figures/<name>.png: one panel per (metric, panel title) of `metrics` that the workdir's
  metrics.csv holds, side by side, every variant's curve in each (mean over seeds ± the config's
  band, its figure bin): a paper's multi-panel figure, e.g. return and each module's fraction of
  active units over training. A third element (metric, title, variants) keeps those variants' curves
  only: a grid of conditions, e.g. Ma et al.'s DA x Reset. None when none of the metrics is there."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = read_metrics(os.path.join(workdir, 'metrics.csv'), with_seeds=True)
  shown = lambda key, panel: key[1] == panel[0] and (len(panel) < 3 or key[0] in panel[2])
  present = [panel for panel in metrics if any(shown(key, panel) for key in data)]
  if not present:
    return None
  bin_size, band = figure_bin(workdir), figure_setting(workdir, 'figure_band', 'se')
  xlabel = figure_setting(workdir, 'figure_xlabel', 'step')
  fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.6), squeeze=False)
  for ax, panel in zip(axes[0], present):
    draw(ax, {k: v for k, v in data.items() if shown(k, panel)}, panel[0], bin_size, xlabel=xlabel, band=band)
    ax.set_title(panel[1], fontsize=10)
  for ax in axes[0] if any(len(panel) > 2 for panel in present) else axes[0][:1]:
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  out_dir = os.path.join(workdir, 'figures')
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f'{name}.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def figure_setting(workdir: str, key: str, default):
  """A figure setting of the workdir's config.json (e.g. figure_band), `default` without one."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f).get(key, default)


def figure_bin(workdir: str) -> int:
  """The config's `figure_bin` (steps per bin of the figures), 1 without one."""
  return int(figure_setting(workdir, 'figure_bin', 1))


def draw(ax, data, metric: str, bin_size: int = 1, xlabel: str = 'step', band: str = 'se',
         reduce: str = 'mean') -> None:
  """One metric's curves on `ax`: per variant, the mean over seeds with a band of +- one standard
  error ('se') or the 95 % bootstrap confidence interval ('bootstrap95', the paper's RL figures),
  each seed's values reduced over bins of `bin_size` steps (used by the figures and the
  notebooks). `data`: {(variant, metric): (steps, values[, seeds])}."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  curves = [(variant, value) for (variant, m), value in sorted(data.items()) if m == metric and value[1].size]
  # more curves than the default cycle's 10 colours: 20 distinct ones (tab20), never a repeat
  colours = [plt.cm.tab20(i % 20) for i in range(len(curves))] if len(curves) > 10 else [None] * len(curves)
  for colour, (variant, (steps, values, *_)) in zip(colours, curves):
    steps, values = binned(steps, values, bin_size, reduce)
    if band == 'bootstrap95':
      mean, low, high = bootstrap_band(values)
    else:
      mean, se = mean_and_se(values)
      low, high = mean - se, mean + se
    line, = ax.plot(steps, mean, label=f'{variant} (n={values.shape[0]})', color=colour)
    ax.fill_between(steps, low, high, alpha=0.25, color=line.get_color())
  ax.set_xlabel(xlabel)
  ax.set_ylabel(metric)
  per_bin = f' ({reduce} over bins of {bin_size})' if bin_size > 1 or reduce != 'mean' else ''
  spread = '95 % bootstrap CI' if band == 'bootstrap95' else 's.e.'
  ax.set_title(f'{metric}{per_bin}: mean and {spread} over seeds', fontsize=9)
