"""Experiments by name: each is a class built from (config, ddl.config.Group) with pure, vmappable
`init(key, hparams) -> state` and `run_chunk(state) -> (state, metrics)`, plus `num_chunks`,
`examples_per_chunk` (per run) and `chunk_step(chunk)` (the x-axis value logged for a chunk)."""
from ddl.experiments.slowly_changing_regression import SlowlyChangingRegression

EXPERIMENTS = {
    'slowly_changing_regression': SlowlyChangingRegression,
}


def get(name: str):
  if name not in EXPERIMENTS:
    from ddl.config import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f'experiment: {name!r} is not known; use one of {sorted(EXPERIMENTS)}.')
  return EXPERIMENTS[name]
