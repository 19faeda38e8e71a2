"""launch/plot.py redraws figures from metrics.csv; every notebook runs top to bottom on the
metrics.csv of its experiment's smoke run (nbclient)."""
import os
import subprocess
import sys

import numpy as np

import pytest

from conftest import ROOT, load_config
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
  run_lib.run(load_config(config, arg), workdir, figures=False)
  monkeypatch.setenv('DDL_WORKDIR', workdir)
  monkeypatch.setenv('PYTHONPATH', ROOT)
  nb = nbformat.read(os.path.join(ROOT, 'notebooks', f'{notebook}.ipynb'), as_version=4)
  nbclient.NotebookClient(nb, timeout=120, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  assert any(o.output_type == 'display_data' and 'image/png' in o.data for o in outputs)
