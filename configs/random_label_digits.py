"""Random-label digits: the toy problem of plasticity (Lyle et al. 2023; Kumar et al.'s Random-Label MNIST).

DOCSTRING_PLACEHOLDER
"""
from ddl import config as config_lib


def smoke(config):
  """2 seeds, 3 tasks of 3 epochs on 200 images."""
  config.num_seeds = 2
  config.num_tasks = 3
  config.epochs_per_task = 3
  config.data.num_images = 200
  config.probe_size = 200
  config.checkpoint_every = 2
  config.diagnostics.hessian_iterations = 5


def paper(config):
  """Kumar et al.'s Random-Label MNIST protocol (beyond_reference.md (d), (e)) on all 1 797 digits
  (they use 1 200 MNIST images): batch 16, 400 epochs per task, 50 tasks, 30 seeds. For a GPU."""
  config.num_seeds = 30
  config.num_tasks = 50
  config.epochs_per_task = 400
  config.batch_size = 16
  config.data.num_images = 1_797
  config.probe_size = 1_024
  config.diagnostics.every = 5


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'random_labels'
  config.num_seeds = 5
  config.num_tasks = 30
  config.epochs_per_task = 60
  config.batch_size = 16
  config.probe_size = 256
  config.data = dict(num_images=256)
  config.network = dict(layers=1, hidden=256, activation='relu', weight_init='kaiming', layer_norm='')
  config.optimizer.name = 'adam'
  config.hparams.learning_rate = 1e-3
  config.diagnostics.hessian_iterations = 20
  config.variants = dict(
      adam=dict(),
      layer_norm=dict(network=dict(layer_norm='affine')),
      l2_init=dict(l2_init=1e-3),
      cbp=dict(replacement_rate=1e-4),
      snp=dict(weight_decay=1e-4, noise_scale=1e-4),
      redo=dict(cbp=dict(method='redo', redo_period=960)),
      upgd=dict(optimizer=dict(name='upgd'), learning_rate=1e-2),
      injection=dict(schedule=dict(injection_first=10, injection_every=10)),
      reset=dict(schedule=dict(reset_first=10, reset_every=10, reset_layers=1)),
  )
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'paper': paper})
  return config
