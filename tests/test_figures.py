"""launch/plot.py redraws figures from metrics.csv; every notebook runs top to bottom on the
metrics.csv of its experiment's smoke run (nbclient)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

import pytest

from conftest import ROOT, cheap_diagnostics, load_config
from ddl import plotting
from ddl import run as run_lib



def _fake_workdir(path, seed):
  """A workdir with a random metrics.csv: 2 variants x 3 seeds x 4 steps, one run stopped."""
  os.makedirs(path)
  values = np.random.default_rng(seed).uniform(size=(2, 3, 4))
  with open(os.path.join(path, 'metrics.csv'), 'w') as f:
    f.write('variant,seed,step,metric,value\n')
    for v, variant in enumerate(('bp', 'cbp')):
      for s in range(3):
        for t in range(4 if (v, s) != (1, 2) else 2):
          f.write(f'{variant},{s},{(t + 1) * 10},error,{float(values[v, s, t])!r}\n')
    f.write('cbp,2,30,nonfinite,1.0\n')


def test_read_metrics_pivots_a_hand_made_csv(tmp_path):
  """Keys in order of first appearance, seeds and steps sorted, missing cells NaN, the last of a
  repeated cell kept, read in blocks smaller than the file."""
  path = tmp_path / 'metrics.csv'
  path.write_text('variant,seed,step,metric,value\n'
                  'cbp,1,20,error,0.5\n'
                  'bp,0,10,error,1.0\n'
                  'cbp,0,10,error,0.25\n'
                  'cbp,1,10,error,nan\n'
                  'bp,0,10,dead,0.125\n'
                  'cbp,0,20,error,inf\n'
                  'bp,2,30,error,3.0\n'
                  'bp,2,30,error,4.0\n')
  for block in (1, 3, 100):
    out = plotting.read_metrics(str(path), with_seeds=True, block=block)
    assert list(out) == [('cbp', 'error'), ('bp', 'error'), ('bp', 'dead')]
    steps, values, seeds = out[('cbp', 'error')]
    np.testing.assert_array_equal(steps, [10, 20])
    np.testing.assert_array_equal(seeds, [0, 1])
    np.testing.assert_array_equal(values, [[0.25, np.inf], [np.nan, 0.5]])
    steps, values, seeds = out[('bp', 'error')]
    np.testing.assert_array_equal(steps, [10, 30])
    np.testing.assert_array_equal(seeds, [0, 2])
    np.testing.assert_array_equal(values, [[1.0, np.nan], [np.nan, 4.0]])
    assert steps.dtype == seeds.dtype == np.int64 and values.dtype == np.float64
    assert [len(v) for v in plotting.read_metrics(str(path)).values()] == [2, 2, 2]
  path.write_text(path.read_text().rstrip('\n'))   # a last line without its newline
  np.testing.assert_array_equal(plotting.read_metrics(str(path))[('bp', 'error')][1], [[1.0, np.nan], [np.nan, 4.0]])


def test_read_metrics_matches_a_cell_by_cell_pivot(tmp_path):
  """Random rows (shuffled, some cells missing) against the plain dict-of-cells pivot."""
  rng = np.random.default_rng(0)
  cells = [(v, int(s), int(t), m) for v in ('bp', 'cbp', 'l2') for s in rng.permutation(7)[:5]
           for t in rng.permutation(40)[:30] for m in ('error', 'dead')]
  rows = [(*c, float(x)) for c, x in zip(cells, rng.normal(size=len(cells)) * 10.0 ** rng.integers(-8, 8, len(cells)))]
  rows = [rows[i] for i in rng.permutation(len(rows))]
  path = tmp_path / 'metrics.csv'
  path.write_text('variant,seed,step,metric,value\n' + ''.join(f'{v},{s},{t},{m},{x!r}\n' for v, s, t, m, x in rows))
  got = plotting.read_metrics(str(path), with_seeds=True, block=1000)
  want = {}
  for v, s, t, m, x in rows:
    want.setdefault((v, m), {})[(s, t)] = x
  assert list(got) == list(want)
  for key, table in want.items():
    steps, values, seeds = got[key]
    assert list(seeds) == sorted({s for s, _ in table}) and list(steps) == sorted({t for _, t in table})
    for (s, t), x in table.items():
      assert values[list(seeds).index(s), list(steps).index(t)] == x
    assert np.isnan(values).sum() == values.size - len(table)


@pytest.mark.parametrize('text, line', [
    ('variant,seed,step,value\nbp,0,10,1.0\n', 1),                  # a column gone
    ('hello\x00world\n', 1),                                         # not a CSV of ours
    ('variant,seed,step,metric,value\nbp,0,10,error,1.0\nbp,x,10,error,2.0\n', 3),
    ('variant,seed,step,metric,value\nbp,0,10,error,1.0\nbp,0,20,error\n', 3),
    ('variant,seed,step,metric,value\nbp,0,10,error,1.0\nbp,0,20,error,abc\n', 3)])
def test_read_metrics_names_the_first_bad_line(tmp_path, text, line):
  path = tmp_path / 'metrics.csv'
  path.write_text(text)
  with pytest.raises(plotting.MetricsFileError, match=f'metrics.csv, line {line}: '):
    plotting.read_metrics(str(path), block=1)


@pytest.mark.filterwarnings('ignore:No artists with labels')   # the recording draw() below draws nothing
def test_plot_redraws_workdirs_alone_and_together(tmp_path, monkeypatch):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  _fake_workdir(a, 0)
  _fake_workdir(b, 1)
  plot = os.path.join(ROOT, 'launch', 'plot.py')
  proc = subprocess.run([sys.executable, plot, a, b], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for w in (a, b):
    assert os.listdir(os.path.join(w, 'figures')) == ['error.png']   # markers are not curves
  out = str(tmp_path / 'together')
  proc = subprocess.run([sys.executable, plot, a, b, '--together', f'--out={out}'], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0 and os.path.getsize(os.path.join(out, 'error.png')) > 1000, proc.stderr[-2000:]
  curves = []
  monkeypatch.setattr(plotting, 'draw', lambda ax, data, metric, *args, **kwargs: curves.extend(sorted(data)))
  plotting.plot_workdir(a, [os.path.join(b, 'metrics.csv')], labels=['a', 'b'], out_dir=out)
  assert curves == [('a: bp', 'error'), ('a: cbp', 'error'), ('b: bp', 'error'), ('b: cbp', 'error')]
  proc = subprocess.run([sys.executable, plot, str(tmp_path)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and 'no metrics.csv' in proc.stderr
  with open(os.path.join(b, 'metrics.csv'), 'a') as f:
    f.write('bp,0,50,error\n')   # a hand-edited line: one error line naming it, no figure written
  shutil.rmtree(os.path.join(b, 'figures'))
  proc = subprocess.run([sys.executable, plot, b], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1, proc.stderr
  assert 'metrics.csv, line 25: ' in proc.stderr and not os.path.exists(os.path.join(b, 'figures'))


def test_baseline_figure_is_each_variants_bins_minus_the_baselines_paired_by_seed(tmp_path, monkeypatch):
  """CIFAR's `figure_baseline='retrained'`: <metric>_minus_retrained.png from max-binned curves,
  differences taken per seed (seed 1 of the baseline is missing: only seed 0 pairs)."""
  workdir = str(tmp_path)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(dict(figure_bin=2, figure_reduce='max', figure_baseline='retrained',
                   figure_baseline_metrics=['test_accuracy']), f)
  rows = {('base', 0): [0.1, 0.5, 0.2, 0.3], ('base', 1): [0.9, 0.9, 0.9, 0.9], ('retrained', 0): [0.2, 0.3, 0.6, 0.4]}
  with open(os.path.join(workdir, 'metrics.csv'), 'w') as f:
    f.write('variant,seed,step,metric,value\n')
    for (variant, seed), values in rows.items():
      f.writelines(f'{variant},{seed},{t},test_accuracy,{v}\n' for t, v in enumerate(values))
  curves = {}
  monkeypatch.setattr(plotting, 'draw', lambda ax, data, metric, *args, **kwargs: curves.update({metric: data}))
  written = plotting.plot_workdir(workdir)
  assert sorted(os.path.basename(p) for p in written) == ['test_accuracy.png', 'test_accuracy_minus_retrained.png']
  steps, diff = curves['test_accuracy_minus_retrained'][('base', 'test_accuracy_minus_retrained')]
  np.testing.assert_array_equal(steps, [0, 2])
  np.testing.assert_allclose(diff, [[0.5 - 0.3, 0.3 - 0.6]])   # bins' maxima, seed 0 only


def test_stopped_runs_count_until_they_stop():
  values = np.array([[1., 2., 3.], [3., np.nan, np.nan]])
  mean, se = plotting.mean_and_se(values)
  np.testing.assert_allclose(mean, [2., 2., 3.])
  np.testing.assert_allclose(se, [1., 0., 0.])


@pytest.mark.parametrize('notebook,config,arg', [
    ('slowly_changing_regression', 'slowly_changing_regression', 'smoke,bp,linear'),
    ('permuted_inputs', 'permuted_digits', 'smoke,bp'),
    ('continual_imagenet', 'imagenet', 'smoke,bp'),
])
def test_notebook_runs_on_smoke_outputs(tmp_path, monkeypatch, notebook, config, arg):
  nbclient = pytest.importorskip('nbclient')
  nbformat = pytest.importorskip('nbformat')
  workdir = str(tmp_path / 'w')
  run_lib.run(cheap_diagnostics(load_config(config, arg)), workdir, figures=False)   # (no notebook plots those)
  monkeypatch.setenv('DDL_WORKDIR', workdir)
  monkeypatch.setenv('PYTHONPATH', ROOT)
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', f'{notebook}.ipynb'), as_version=4)
  nbclient.NotebookClient(nb, timeout=120, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  assert any(o.output_type == 'display_data' and 'image/png' in o.data for o in outputs)


def test_da_reset_figure_pairs_each_grid_of_variants(tmp_path):
  """Ma et al.'s Fig. 1 from `:da_reset`'s variant names: a panel without and one with augmentation, each with
  and without the reset (ddl.rl.off_policy.da_reset_panels); none for other variants."""
  import json  # pylint: disable=g-import-not-at-top
  from ddl import plotting  # pylint: disable=g-import-not-at-top
  from ddl.rl import off_policy  # pylint: disable=g-import-not-at-top
  grid = ('rr_1', 'rr_1_reset', 'rr_1_augment', 'rr_1_augment_reset')
  (tmp_path / 'config.json').write_text(json.dumps({'variants': {v: {} for v in grid + ('rr_2',)}}))
  (tmp_path / 'metrics.csv').write_text('variant,seed,step,metric,value\n' + ''.join(
      f'{v},{seed},{step},episode_return,{i + step + seed}\n' for i, v in enumerate(grid + ('rr_2',))
      for seed in range(2) for step in range(3)))
  panels = off_policy.da_reset_panels(str(tmp_path))
  assert panels == [('episode_return', 'rr_1: no augmentation', grid[:2]),
                    ('episode_return', 'rr_1: random shift', grid[2:])]
  assert plotting.panels_figure(str(tmp_path), 'da_reset', panels).endswith('figures/da_reset.png')
  (tmp_path / 'config.json').write_text(json.dumps({'variants': {'rr_1': {}, 'rr_1_reset': {}}}))
  assert off_policy.da_reset_panels(str(tmp_path)) == []
  assert plotting.panels_figure(str(tmp_path), 'da_reset', []) is None
