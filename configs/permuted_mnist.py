"""Online permuted MNIST (Dohare et al. 2024, Fig. 2 and ED Figs. 3-4; lop_reference.md §5.3).

Reproduces: a 784-2000-2000-2000-10 ReLU network trained online (batch 1) on MNIST with a new
pixel permutation every 60 000 examples loses plasticity under BP (online accuracy per task falls
from ~95 % to ~94 % at lr 0.003, ~90 % at lr 0.01, with more dead units, larger weights and a lower
effective rank); L2, S&P and CBP keep it. 30 seeds x {bp (lr 0.003, 0.01, 0.001), adam, l2, snp,
cbp} x 800 tasks.

  python launch/main.py --config=configs/permuted_mnist.py --workdir=/tmp/pmnist
  python launch/main.py --config=configs/permuted_mnist.py:smoke    # mock data, about a minute

Data: tfds `mnist` train split: `--config.data.download=True` downloads and prepares it on first use
(network access and `pip install -e ".[data]"`), or point data.data_dir at a prepared tfds directory. Expected run time: the full grid is 48 M
single-example steps of a 9.6 M-weight MLP per run: about 2 GPU-days for 240 runs on one H100
(projection, not measured); impractical on a CPU, where `num_seeds`, `network.hidden` and
`num_tasks` should be cut. Smoke: about a minute on a 2-core CPU.
"""
from ddl import config as config_lib


def smoke(config):
  """Mock data (random pixels), a narrow net, 3 tasks of 600 examples, 2 seeds."""
  config.num_seeds = 2
  config.num_tasks = 3
  config.examples_per_task = 600
  config.probe_size = 200
  config.network.hidden = 32
  config.data.source = 'mock'
  config.data.mock_examples = 1000
  config.checkpoint_every = 2
  config.variants.cbp.replacement_rate = 1e-3


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'permuted_inputs'
  config.num_tasks = 800
  config.examples_per_task = 60_000
  config.batch_size = 1
  config.probe_size = 2_000           # diagnostics on the first examples of a task, after it
  config.diagnostics.every = 5
  config.data = dict(source='mnist', data_dir='', cache_dir='~/.cache/ddl', download=False, input_size=784, num_classes=10,
                     mock_examples=1000)
  config.network.update(layers=3, hidden=2000, activation='relu', weight_init='kaiming', layer_norm='')
  config.optimizer.name = 'sgd'
  config.cbp.util_type = 'adaptable_contribution'
  config.cbp.count_mode = 'accumulate'
  config.cbp.count_base = 'eligible'
  config.hparams.learning_rate = 0.003
  config.hparams.maturity_threshold = 100.0
  config.variants = dict(
      bp=dict(),
      bp_lr01=dict(learning_rate=0.01),
      bp_lr001=dict(learning_rate=0.001),
      adam=dict(optimizer=dict(name='adam'), learning_rate=1e-4),
      l2=dict(weight_decay=1e-4),
      snp=dict(weight_decay=1e-4, noise_scale=1e-5),
      cbp=dict(replacement_rate=1e-6),
  )
  config_lib.apply_config_arg(config, arg, {'smoke': smoke})
  return config
