"""Sutton's (1992) tracking task for per-weight step sizes: LMS vs IDBD (and Autostep).

20 inputs x_i ~ N(0, 1); target y* = Σ_{i<5} s_i x_i with s_i = ±1 (drawn per seed) and weight 0 on
the other fifteen; every `flip_period` (20) examples one of the five signs, chosen at random,
flips (after examples 20, 40, ...). A linear unit learns online (batch 1) on ½ δ² ('half_mse',
so the optax gradient is −δ x exactly). By default the network is Sutton's: no bias, w = 0 at the
start (`nets.MLP(hidden=(), outputs=1, bias=False, weight_init='zeros')`); `network.bias=True`
adds a bias weight (input 1) with a step size of its own.

One chunk = one bin of `chunk_size` examples: a `lax.scan` of single-example learner steps over
inputs generated on the device, then the bin's metrics:
  error: the bin's mean squared error δ² of the pre-update predictions (twice the mean ½ δ² loss);
  step_size_relevant / step_size_irrelevant (IDBD, Autostep only): the mean step size e^β over
    the first five / the other fifteen input weights, read from the optimizer state at the bin's
    end.
The asymptotic error of Sutton's Figure 3 is the mean of the bins after `asymptotic_from` examples
(the MSE over examples 20 000-30 000 by default). `figures(workdir)` draws Figures 3 and 4 with
the paper's numbers (run.run calls it after the standard per-metric figures).
"""
import json
import os
from typing import Dict, List, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ddl import nets
from ddl.experiments import online
from ddl.learners import Learner, LearnerState
from ddl.learners import registry

# Sutton (1992), as restated in beyond_reference.md §a.1 (Figures 3 and 4).
PAPER = dict(lms_best_step_size=0.04, lms_best_error=3.5, meta_learned_error=1.5,
             step_size_relevant=0.13, step_size_irrelevant_below=0.007)


@struct.dataclass
class State:
  learner: LearnerState
  signs: jax.Array        # (num_relevant,) current target signs s_i
  data_key: chex.PRNGKey  # inputs and flips of chunk c: fold_in(data_key, c)
  step_key: chex.PRNGKey  # per-example learner randomness (unused by LMS/IDBD; the learner's contract)
  examples: jax.Array     # examples seen so far


class Tracking:
  """init(key, hparams, seed) -> State; run_chunk(State, None) -> (State, metrics). Pure, vmappable."""

  def __init__(self, config, group):
    self.config = config
    self.num_chunks = config.num_examples // config.chunk_size
    self.learner = Learner.from_config(self.make_network(config), 'half_mse', config, group, self.num_chunks)
    self.examples_per_chunk = config.chunk_size

  @staticmethod
  def make_network(config):
    n = config.network
    return nets.build(nets.MLP, n, hidden=(), outputs=1)

  @staticmethod
  def checks(config):
    data = config.data
    return [
        (config.chunk_size > 0 and config.num_examples > 0 and config.num_examples % config.chunk_size == 0,
         'num_examples and chunk_size must be > 0, num_examples a multiple of chunk_size'),
        (data.flip_period > 0 and config.chunk_size % data.flip_period == 0,
         'data.flip_period must be > 0 and chunk_size a multiple of it'),
        (0 < data.num_relevant <= data.num_inputs, 'data.num_relevant must be in [1, data.num_inputs]'),
        (0 <= config.asymptotic_from < config.num_examples, 'asymptotic_from must be in [0, num_examples)'),
    ]

  def chunk_step(self, chunk: int) -> int:
    """The x-axis value logged for a chunk: examples seen at its end."""
    return (chunk + 1) * self.config.chunk_size

  @staticmethod
  def load_data(config) -> None:
    del config

  def init(self, key: chex.PRNGKey, hparams: Dict[str, jax.Array], seed: jax.Array) -> State:
    del seed
    signs_key, data_key, learner_key, step_key = jax.random.split(key, 4)
    data = self.config.data
    signs = jnp.where(jax.random.bernoulli(signs_key, 0.5, (data.num_relevant,)), 1.0, -1.0)
    learner = self.learner.init(learner_key, jnp.zeros((1, data.num_inputs)), hparams)
    return State(learner=learner, signs=signs, data_key=data_key, step_key=step_key,
                 examples=jnp.zeros((), jnp.int32))

  def stream(self, data_key, signs, examples):
    """The chunk's inputs (count, num_inputs), targets (count,) and the signs after it."""
    data, count = self.config.data, self.config.chunk_size
    periods = count // data.flip_period
    x_key, flip_key = jax.random.split(jax.random.fold_in(data_key, examples // count))
    x = jax.random.normal(x_key, (count, data.num_inputs))
    flipped = jax.random.randint(flip_key, (periods,), 0, data.num_relevant)
    factors = 1.0 - 2.0 * jax.nn.one_hot(flipped, data.num_relevant)   # -1 at the flipped sign
    after = signs * jnp.cumprod(factors, axis=0)                       # signs after each period
    during = jnp.concatenate([signs[None], after[:-1]], axis=0)        # signs within each period
    per_example = jnp.repeat(during, data.flip_period, axis=0)
    y = jnp.sum(per_example * x[:, :data.num_relevant], axis=1)
    return x, y, after[-1]

  def run_chunk(self, state: State, data=None) -> Tuple[State, Dict[str, jax.Array]]:
    del data
    count = self.config.chunk_size
    x, y, signs = self.stream(state.data_key, state.signs, state.examples)
    chunk = state.examples // count
    learner = self.learner.boundary(state.learner, chunk, jax.random.fold_in(state.step_key, -1 - chunk),
                                    jnp.zeros((1, self.config.data.num_inputs)))
    learner, sums = online.learn(self.learner, learner, lambda i: (x[i][None], y[i][None]), count,
                                 state.step_key, state.examples, self.config.scan_unroll)
    values = {'error': 2 * sums.loss / count}
    found = self.learner.step_sizes(learner)
    if found is not None and found[1]:   # per-weight step sizes: relevant and irrelevant inputs apart
      alpha = found[0]['output']['kernel'][:, 0]
      r = self.config.data.num_relevant
      values['step_size_relevant'] = jnp.mean(alpha[:r])
      values['step_size_irrelevant'] = jnp.mean(alpha[r:])
    new_state = state.replace(learner=learner, signs=signs, examples=state.examples + count)
    return new_state, values

  @staticmethod
  def figures(workdir: str) -> List[str]:
    """Sutton's Figures 3 and 4 from a workdir (see `figures`)."""
    return figures(workdir)


def learns_step_sizes(optimizer: str) -> bool:
  """Whether an optimizer learns its step sizes (IDBD, Autostep: the right panel) or keeps the fixed
  one (LMS is SGD on this linear unit: the left panel)."""
  return registry.OPTIMIZERS[optimizer].step_sizes is not None


def _variants(config: dict) -> Dict[str, Tuple[str, float, float]]:
  """{variant: (optimizer name, its swept value: the learning rate for a fixed step size, else the
  meta step size, initial step size)} from a config.json dict."""
  out = {}
  for name, variant in config['variants'].items():
    hp = {**config['hparams'], **variant}
    opt = variant.get('optimizer', {}).get('name', config['optimizer']['name'])
    value = hp['meta_step_size'] if learns_step_sizes(opt) else hp['learning_rate']
    out[name] = (opt, float(value), float(hp['initial_step_size']))
  return out


def asymptotic_errors(workdir: str) -> Dict[str, np.ndarray]:
  """{variant: per-seed mean of the error bins after config.asymptotic_from examples}."""
  from ddl import plotting  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  start, size = config['asymptotic_from'], config['chunk_size']
  table = plotting.read_metrics(os.path.join(workdir, 'metrics.csv'))
  out = {}
  for (variant, metric), (steps, values) in table.items():
    if metric == 'error':
      out[variant] = np.mean(values[:, steps - size >= start], axis=1)
  return out


def figures(workdir: str) -> Sequence[str]:
  """figures/sutton1992_fig3.png (asymptotic error vs the LMS step size and vs the meta step size,
  mean ± s.e. over seeds, the paper's numbers marked, points with diverged runs annotated) and,
  when the run has IDBD/Autostep step sizes, figures/sutton1992_fig4.png (mean step size of the
  relevant and irrelevant inputs over examples, log scale, the paper's 0.13 and 0.007 marked; the
  variants of the config's `figure_step_sizes`; all when none of those ran). Returns the written
  paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from ddl import plotting  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  variants = _variants(config)
  errors = asymptotic_errors(workdir)
  out_dir = os.path.join(workdir, 'figures')
  os.makedirs(out_dir, exist_ok=True)
  written = []
  start, end = config['asymptotic_from'], config['num_examples']

  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  optimizers = sorted({v[0] for v in variants.values()})
  fixed = [o for o in optimizers if not learns_step_sizes(o)]
  learned = [o for o in optimizers if learns_step_sizes(o)]
  for ax, opts, xlabel in ((axes[0], fixed, 'fixed step size α (LMS: sgd)'),
                           (axes[1], learned, 'meta step size θ (IDBD) / μ (Autostep)')):
    for opt in opts:
      points = sorted((v[1], errors[n]) for n, v in variants.items() if v[0] == opt and n in errors)
      if not points:
        continue
      x = np.asarray([p[0] for p in points])
      mean, se = zip(*(plotting.mean_and_se(p[1][:, None]) for p in points))
      mean, se = np.concatenate(mean), np.concatenate(se)
      ax.errorbar(x, mean, yerr=se, marker='o', capsize=3, label=f'{opt} (n={len(points[0][1])} seeds)')
      for xi, mi, (_, e) in zip(x, mean, points):   # runs stopped on NaN/inf: the mean is over the rest
        if np.any(~np.isfinite(e)):
          ax.annotate(f'{np.sum(~np.isfinite(e))}/{e.size} diverged', (xi, min(mi, 9.5)), fontsize=7,
                      textcoords='offset points', xytext=(-40, 8))
    ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
  axes[0].axhline(PAPER['lms_best_error'], color='gray', ls='--')
  axes[0].plot([PAPER['lms_best_step_size']], [PAPER['lms_best_error']], 'k*', ms=12,
               label=f"Sutton 1992: best LMS α≈{PAPER['lms_best_step_size']}, MSE≈{PAPER['lms_best_error']}")
  axes[1].axhline(PAPER['meta_learned_error'], color='gray', ls='--', label=f"Sutton 1992: IDBD MSE≈{PAPER['meta_learned_error']}")
  axes[1].axhline(PAPER['lms_best_error'], color='gray', ls=':', label='Sutton 1992: best LMS')
  axes[0].set_ylabel(f'asymptotic error (MSE over examples {start}-{end})')
  axes[0].set_ylim(0, 10)
  for ax in axes:
    ax.legend(fontsize=8)
  fig.suptitle('Sutton (1992) Figure 3: tracking task, mean ± s.e. over seeds', fontsize=10)
  fig.tight_layout()
  path = os.path.join(out_dir, 'sutton1992_fig3.png')
  fig.savefig(path, dpi=100)
  plt.close(fig)
  written.append(path)

  table = plotting.read_metrics(os.path.join(workdir, 'metrics.csv'))
  pick = lambda names: {v: (table[(v, 'step_size_relevant')], table[(v, 'step_size_irrelevant')])
                        for v in names if (v, 'step_size_relevant') in table}
  curves = pick(config.get('figure_step_sizes') or ()) or pick(variants)
  if curves:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (variant, (rel, irr)) in enumerate(sorted(curves.items())):
      color = f'C{i % 10}'
      for (steps, values), style, which in ((rel, '-', 'relevant'), (irr, '--', 'irrelevant')):
        mean, se = plotting.mean_and_se(values)
        ax.plot(steps, mean, style, color=color, label=f'{variant}: {which}')
        ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.2)
    ax.axhline(PAPER['step_size_relevant'], color='k', ls=':',
               label=f"Sutton 1992 (θ=0.001, α0=0.05, 250k): relevant ≈ {PAPER['step_size_relevant']}")
    ax.axhline(PAPER['step_size_irrelevant_below'], color='gray', ls=':',
               label=f"Sutton 1992: irrelevant < {PAPER['step_size_irrelevant_below']}")
    ax.set_yscale('log')
    ax.set_xlabel('examples')
    ax.set_ylabel('mean step size e^β')
    ax.set_title('Sutton (1992) Figure 4: step sizes of relevant and irrelevant inputs', fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, 'sutton1992_fig4.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


def summary(workdir: str) -> str:
  """The numbers to compare with the paper, as text: per optimizer and swept value the asymptotic
  error (mean ± s.e. over seeds), the best LMS step size, and the step sizes at the end of the run."""
  from ddl import plotting  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  variants = _variants(config)
  errors = asymptotic_errors(workdir)
  table = plotting.read_metrics(os.path.join(workdir, 'metrics.csv'))
  lines = []
  optimizers = sorted({v[0] for v in variants.values()}, key=lambda o: (learns_step_sizes(o), o))
  for opt in optimizers:
    rows = sorted((v[1], n) for n, v in variants.items() if v[0] == opt and n in errors)
    for value, n in rows:
      e = errors[n]
      mean, se = np.nanmean(e), np.nanstd(e, ddof=1) / np.sqrt(np.sum(np.isfinite(e))) if e.size > 1 else 0.0
      line = f'{n}: asymptotic error {mean:.3f} ± {se:.3f} ({np.sum(~np.isfinite(e))} of {e.size} seeds non-finite)'
      if (n, 'step_size_relevant') in table:
        rel, irr = table[(n, 'step_size_relevant')][1][:, -1], table[(n, 'step_size_irrelevant')][1][:, -1]
        line += f'; final step sizes: relevant {np.nanmean(rel):.4f}, irrelevant {np.nanmean(irr):.5f}'
      lines.append(line)
  lms = [(np.nanmean(errors[n]), v[1]) for n, v in variants.items() if not learns_step_sizes(v[0]) and n in errors]
  if lms:
    best = min(lms)
    lines.append(f'best fixed step size (LMS): step size {best[1]:g}, asymptotic error {best[0]:.3f} (paper: 0.04, 3.5)')
  return '\n'.join(lines)
