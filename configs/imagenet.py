"""Continual ImageNet-32 (Dohare et al. 2024, Fig. 1; lop_reference.md §5.1).

Reproduces: on thousands of binary tasks (one pair of ImageNet classes each, 1 200 training and
200 test images, 250 epochs of SGD momentum 0.9, batch 100, head zeroed at each task start), BP's
test accuracy falls from ~89 % on early tasks to ~77 % (about the linear baseline's 77.1 %) by task
2 000, while L2, S&P and CBP keep ~89-90 % over 5 000 tasks. 30 seeds x {bp at lr 0.01, 0.001,
0.0001 (2 000 tasks), l2, snp, cbp (5 000 tasks), linear}; accuracy per task in bins of 50.

  python launch/main.py --config=configs/imagenet.py
  python launch/main.py --config=configs/imagenet.py:smoke     # mock data, about a minute
  python launch/main.py --config=configs/imagenet.py:cbp --config.data.source=npy --config.data.data_dir=DIR

Data: `data.source='tfds'` reads `imagenet_resized/32x32` (prepare it once with `tfds build
imagenet_resized/32x32 --file_format=array_record` where TensorFlow is installed; ImageNet needs
a manual download; copy the folder to data.data_dir) and keeps the first 700 images per class; `'npy'` reads the
original's per-class files `<data_dir>/<class_id>.npy`. Both are cached as one uint8 array in
`data.cache_dir` after the first build. Class orders: one permutation per seed drawn from the
seed (the original's class_order file is not public), or `data.order_file`.

Input scale: the network sees float32(uint8 pixel) x `data.pixel_scale`, default 1/255, i.e.
[0, 1]: the scale the original most plausibly trained on. Its data route (lop/imagenet/
single_expr.py) loads `data/classes/<id>.npy`, casts it to float32 and feeds it with no scaling or
normalisation (lop_reference.md §5.1, §8.10), so the scale is the files', which are not
inspectable here. The float cast fits float64 files (numpy's x / 255) as well as uint8 ones; what
decides is the dynamics: with raw 0..255 inputs the paper's L2 setting (SGD lr 0.03, momentum 0.9)
kills this network within a few hundred steps in a probe on synthetic 32x32 images (batch 100:
every ReLU dead, loss stuck at ln 2; the smoke preset's l2 variant went non-finite), while the
original reports ~89 % for it over 5 000 tasks; on [0, 1] inputs it learns. pixel_scale=1.0 feeds
raw bytes (the original's inputs if its files were uint8; the npy loader warns when it finds such
files). Both data sources give the same uint8 images, so the same inputs.

Expected run time: 15 M SGD steps per run (BP: 6 M). Measured on a 2-core CPU
(launch/benchmark.py --workload=imagenet): ~2 800 examples/s for 30 seeds (cpu_devices=2: two CPU
devices, one seed each, concurrently), ~2 200 for 1 seed, 1.0-1.1x the PyTorch reference's one
process; so the full grid (1.9e11 examples) is ~2.1 CPU-years: a GPU job. On one H200
(2026-11-30, docs/benchmarks.md) the six learners' 180 runs (30 seeds each) ran in one call at
508 000 examples/s (6.7 GB; compile 57 s): the grid in ~4.3 days, and each learner's 30 seeds x
5 000 tasks in ~1 day of that program, the design goal (~520 000 examples/s for 30 seeds x 5 000
tasks a day). On GPUs `cpu_devices` does not apply and `runs_per_call`, default as many as fit,
vmaps the seeds. Vmapped seeds cost
~211 MB of device memory each (1.7 GB for 8 in one call, data of 10 classes included; ~6 GB for 30;
the whole data set adds 2.2 GB); `runs_per_call` bounds it. Smoke: about a minute on a 2-core CPU.
"""
from ddl import config as config_lib
from ddl import platform_defaults
from ddl.learners import cbp as cbp_lib


def smoke(config):
  """Mock data (random pixels, 6 classes x 30 images), 4 tasks of 2 epochs, 2 seeds; l2, snp and
  cbp share one program."""
  config.num_seeds = 2
  config.num_tasks = 4
  config.epochs = 2
  config.batch_size = 10
  config.probe_size = 20
  config.diagnostics.every = 2
  config.diagnostics.hessian_iterations = 0   # both compile heavy for the conv net: measured by the
  config.diagnostics.plasticity = False       # MLP experiments' smoke tests
  config.figure_bin = 2
  config.checkpoint_every = 2
  config.data.source = 'mock'
  config.data.num_classes = 6
  config.data.images_per_class = 30
  config.data.train_per_class = 20
  for name in ('bp', 'bp_lr001', 'bp_lr0001'):
    config.variants[name].num_tasks = 3
  config.variants.cbp.replacement_rate = 1e-2
  config.variants.cbp.maturity_threshold = 5.0
  config.fuse_variants = True     # fewer programs to compile


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'continual_imagenet'
  config.num_tasks = 5_000
  config.epochs = 250
  config.batch_size = 100
  config.probe_size = 200
  config.diagnostics.every = 50
  config.figure_bin = 50              # figures: accuracy per task in bins of 50 tasks
  config.data = dict(source='tfds', data_dir='', cache_dir='~/.cache/ddl', order_file='', num_classes=1000,
                     images_per_class=700, train_per_class=600, pixel_scale=1.0 / 255)
  config.network.update(kind='convnet', conv=platform_defaults.auto(str), layer_norm='')   # conv: per platform
  # On CPU: 2 JAX devices, one seed each, running concurrently: ~15 % more examples/s on 2 cores
  # than vmapping the seeds on one device or running them one after another (launch/benchmark.py).
  config.cpu_devices = 2
  config.optimizer.name = 'sgd'
  config.optimizer.momentum = 0.9
  config.cbp.update(cbp_lib.PRESETS['convgnt'])   # the original's ConvGnT
  config.cbp.util_type = 'adaptable_contribution'
  config.hparams.learning_rate = 0.01
  config.hparams.maturity_threshold = 100.0
  config.variants = dict(
      bp=dict(num_tasks=2_000),
      bp_lr001=dict(num_tasks=2_000, learning_rate=0.001),
      bp_lr0001=dict(num_tasks=2_000, learning_rate=0.0001),
      l2=dict(learning_rate=0.03, weight_decay=3e-6),
      snp=dict(weight_decay=1e-5, noise_scale=1e-5),
      cbp=dict(replacement_rate=3e-4),
      linear=dict(network=dict(kind='linear')),
  )
  config_lib.apply_config_arg(config, arg, {'smoke': smoke})
  return config
