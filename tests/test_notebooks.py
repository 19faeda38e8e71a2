"""Every notebook runs top to bottom on the metrics.csv of its experiment's smoke run (nbclient)."""
import os

import pytest

from conftest import ROOT, load_config
from ddl import run as run_lib

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')


@pytest.mark.parametrize('notebook,config,arg', [
    ('slowly_changing_regression', 'slowly_changing_regression', 'smoke,bp,linear'),
    ('permuted_inputs', 'permuted_digits', 'smoke,bp'),
    ('continual_imagenet', 'imagenet', 'smoke,bp'),
])
def test_notebook_runs_on_smoke_outputs(tmp_path, monkeypatch, notebook, config, arg):
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
