"""Experiments by name: each is a class built from (config, ddl.config.Group) with pure, vmappable
`init(key, hparams, seed index) -> state` and `run_chunk(state, data) -> (state, metrics)`, where `data` is
what the static `load_data(config)` returned (arrays shared by every run, put on the device once;
None when the experiment generates its data), plus `num_chunks`,
`examples_per_chunk` (per run), `chunk_step(chunk)` (the x-axis value logged for a chunk),
optionally `metric_every` ({metric: n}: log it only every n chunks; others every chunk), and the
static `checks(config)`: (condition, message) pairs that config validation enforces, and
`make_network(config)`: the network of a config (validation checks that the methods a variant
switches on find what they need in it: `Method.check`). Traits that methods check: `objective`
('prediction' by default; 'actor_critic' for a policy and a value trained together) and
`step_args` (what it passes its optimizer in every step beyond the learner's own, e.g. a TD error). Each builds its learner with
`Learner.from_config` and calls `Learner.boundary` at the start of every chunk (resets, injection).

Optionally an evaluator: `evaluate(state, data) -> {metric: scalar}` (the diagnostics of one run's
state, pure and vmappable) with `diagnostics_every` (int, chunks; default 1). The run loop compiles
it as a program of its own and calls it after chunk c when c % diagnostics_every == 0 and after the
last chunk; its values are rows of metrics.csv at that chunk's step, like the chunk's metrics.
`evaluate_runs_at_once` (int; default 0: all runs of a call vmapped) evaluates that many runs at a
time instead, for an evaluator whose memory per run is large.

Optionally figures of its own: a static `figures(workdir) -> [paths]`, which the launch calls after
the per-metric figures (`ddl.plotting.plot_workdir`), e.g. a paper's figure with its numbers marked."""
import importlib

# name: (module of ddl.experiments, class); a module is imported when its experiment is first used, so a
# launch of one experiment (or launch/plot.py) does not import every other's libraries (MJX, Brax, gymnax).
_WHERE = {
    'slowly_changing_regression': ('slowly_changing_regression', 'SlowlyChangingRegression'),
    'permuted_inputs': ('permuted_inputs', 'PermutedInputs'),
    'continual_imagenet': ('continual_imagenet', 'ContinualImageNet'),
    'ppo': ('ppo', 'PPO'),
    'stream_ac': ('stream_ac', 'StreamAC'),
    'class_incremental': ('class_incremental', 'ClassIncremental'),
    'random_labels': ('random_labels', 'RandomLabels'),
    'tracking': ('tracking', 'Tracking'),
    'dqn': ('dqn', 'DQN'),
    'drqv2': ('drqv2', 'DrQV2'),
}


class _Registry(dict):
  """{experiment name: class}, each class imported on first lookup (a test may set an entry)."""

  def __missing__(self, name):
    if name not in _WHERE:
      raise KeyError(name)
    module, cls = _WHERE[name]
    self[name] = getattr(importlib.import_module(f'ddl.experiments.{module}'), cls)
    return self[name]

  def __contains__(self, name):
    return dict.__contains__(self, name) or name in _WHERE

  def __iter__(self):
    return iter(dict.fromkeys([*_WHERE, *dict.keys(self)]))

  def get(self, name, default=None):
    return self[name] if name in self else default


EXPERIMENTS = _Registry()


def __getattr__(name: str):
  """`from ddl.experiments import PPO` and the like: the class, imported then."""
  for key, (_, cls) in _WHERE.items():
    if cls == name:
      return EXPERIMENTS[key]
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def figures(workdir: str):
  """The experiment's own figures of a workdir (its static `figures(workdir)`, if it has one; the
  experiment is read from config.json): the written paths, [] without."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    draw = getattr(EXPERIMENTS.get(json.load(f).get('experiment', '')), 'figures', None)
  return list(draw(workdir)) if draw is not None else []


def get(name: str):
  if name not in EXPERIMENTS:
    from ddl.config import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f'experiment: {name!r} is not known; use one of {sorted(EXPERIMENTS)}.')
  return EXPERIMENTS[name]
