"""Permuted digits: loss of plasticity on real images offline, in minutes on a laptop.

The permuted-MNIST problem (lop_reference.md §5.3) on scikit-learn's 8x8 handwritten digits,
which ship inside the package (ddl/data/digits.npz): each task permutes the 64 pixels afresh and
presents the 1 797 images once, online (batch 1), to a 64-{width}x{layers}-10 ReLU network.
Settings (lr 0.03, 2 x 64 units, 150 tasks) were picked from a sweep (4 seeds; lr 0.03 and 0.1,
CBP rates 1e-4 and 1e-3) so that the effect is plain within minutes: BP's online accuracy falls
from ~0.80 on the first 10 tasks to ~0.52 on tasks 130-150 while its dead units rise from ~13 %
to ~63 %; CBP (rate 1e-4) stays at ~0.81-0.82 with ~4 % dead units. S&P works here too but is left
out of the default variants: its per-step Gaussian noise on every weight dominates the step on a
CPU (add `snp=dict(weight_decay=1e-3, noise_scale=1e-3)` to run it).

  python launch/main.py --config=configs/permuted_digits.py --workdir=/tmp/digits
  python launch/main.py --config=configs/permuted_digits.py:smoke

Expected run time: about 5 minutes on a 2-core CPU for the default 10 seeds x 3 variants;
smoke: under a minute.
"""
from ddl import config as config_lib


def smoke(config):
  """2 seeds, 3 tasks of 600 examples."""
  config.num_seeds = 2
  config.num_tasks = 3
  config.examples_per_task = 600
  config.probe_size = 200
  config.checkpoint_every = 2
  config.variants.cbp.replacement_rate = 1e-3


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'permuted_inputs'
  config.num_seeds = 10
  config.num_tasks = 150
  config.examples_per_task = 1_797
  config.batch_size = 1
  config.probe_size = 500
  config.diagnostics.every = 20     # the evaluator then takes ~4.5 % of the run (launch/benchmark.py)
  config.data = dict(source='digits', data_dir='', cache_dir='', download=False, input_size=64, num_classes=10, mock_examples=0)
  config.network.update(layers=2, hidden=64, activation='relu', weight_init='kaiming', layer_norm='')
  config.optimizer.name = 'sgd'
  config.cbp.util_type = 'adaptable_contribution'
  config.cbp.count_mode = 'accumulate'
  config.cbp.count_base = 'eligible'
  config.hparams.learning_rate = 0.03
  config.hparams.maturity_threshold = 100.0
  config.variants = dict(
      bp=dict(),
      l2=dict(weight_decay=1e-3),
      cbp=dict(replacement_rate=1e-4),
  )
  config_lib.apply_config_arg(config, arg, {'smoke': smoke})
  return config
