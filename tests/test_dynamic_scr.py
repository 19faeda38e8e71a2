"""configs/dynamic_scr.py: every dynamic learner through the run loop (resumed exactly), and the
summary it writes (first/last bins against the best fixed step size, learned step sizes)."""
import csv
import os

import numpy as np

from conftest import assert_resume_is_identical, load_config
from ddl import plotting


def test_dynamic_scr_smoke_resumes_exactly_and_summarises(tmp_path):
  config = load_config('dynamic_scr', 'smoke,sgd_0p01,idbd_0p1,metaoptimize_weight,grow_cbp')
  whole, split = str(tmp_path / 'whole'), str(tmp_path / 'split')
  assert_resume_is_identical(config, whole, split, stop_after_chunks=1, run_whole=True)
  with open(os.path.join(whole, 'metrics.csv')) as f:
    rows = list(csv.DictReader(f))
  metrics = {(r['variant'], r['metric']) for r in rows}
  assert ('grow_cbp', 'backbone_units') in metrics and ('sgd_0p01', 'backbone_units') not in metrics
  assert {('idbd_0p1', 'step_size_spread_hidden_0'), ('metaoptimize_weight', 'step_size_output')} <= metrics
  assert ('metaoptimize_weight', 'step_size_spread_output') in metrics   # per-weight blocks
  plotting.plot_workdir(whole)
  figures = os.path.join(whole, 'figures')
  assert os.path.exists(os.path.join(figures, 'step_sizes.png'))
  table = open(os.path.join(figures, 'summary.md')).read()
  assert 'Baseline (`summary_baseline`): sgd_0p01.' in table
  assert all(f'| {v} |' in table for v in ('sgd_0p01', 'idbd_0p1', 'metaoptimize_weight', 'grow_cbp'))


def test_summary_table_numbers(tmp_path):
  steps = np.array([10, 20, 30, 40])
  data = {('sgd_a', 'error'): (steps, np.array([[1., 1., 2., 2.], [3., 3., 4., 4.]])),
          ('sgd_b', 'error'): (steps, np.array([[1., 1., 1., 1.], [1., 1., 1., 1.]])),
          ('idbd', 'error'): (steps, np.array([[2., 2., 0.5, 0.5], [2., 2., 1.5, 1.5]])),
          ('idbd', 'step_size_out'): (steps, np.array([[.1, .1, .1, .2], [.1, .1, .1, .4]]))}
  path = plotting.summary_table(data, str(tmp_path), 'error', 'sgd_b', bin_size=20)
  lines = open(path).read().splitlines()
  assert lines[2] == 'Baseline (`summary_baseline`): sgd_b.'
  row = {line.split(' | ')[0][2:]: line for line in lines if line.startswith('| ') and 'variant' not in line}
  assert row['sgd_a'].startswith('| sgd_a | 2.000 ± 1.000 | 3.000 ± 1.000 | +2.000 |')
  assert row['idbd'].startswith('| idbd | 2.000 ± 0.000 | 1.000 ± 0.500 | +0.000 | 0.3 |')
  assert plotting.summary_table(data, str(tmp_path), 'accuracy', 'sgd_b') is None
  assert ' | +' not in open(plotting.summary_table(data, str(tmp_path), 'error', 'unknown')).read()   # no baseline: no column values
