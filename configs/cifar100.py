"""Class-incremental CIFAR-100 with ResNet-18 (Dohare et al. 2024, Fig. 2; lop_reference.md §5.2, §6.2).

Reproduces: a ResNet-18 learns CIFAR-100 5 classes at a time (a new 5 every 200 epochs, 20
increments, 4 000 epochs, SGD lr 0.1 momentum 0.9 weight decay 5e-4 batch 90, lr x0.2 at epochs 60,
120, 160 of each increment, early stopping on validation accuracy). At 100 classes the test accuracy
(max over the increment) is about 76.1 % for the network retrained from scratch at every increment
and for CBP, 74.5 % for S&P, 73.7 % for head resetting and 71.1 % for the base system, whose
dormant units grow to ~55 % and stable rank falls to ~75 % of 512. Variants: base, head_reset,
retrained, snp (sigma 1e-5), cbp (ResGnT: contribution utility, rate 1e-5, maturity 1000).

  python launch/main.py --config=configs/cifar100.py
  python launch/main.py --config=configs/cifar100.py:smoke      # mock data, narrow net, about a minute
  python launch/main.py --config=configs/cifar100.py:cbp,retrained --config.num_seeds=8 --config.runs_per_call=8

Data: tfds `cifar100` in array_record form: `--config.data.download=True` downloads and prepares it on
first use (network access and `pip install -e ".[data]"`), or `tfds build cifar100 --file_format=array_record`
where TensorFlow is installed and copy the folder to data.data_dir; cached as .npy in data.cache_dir.
Quirks of the original kept by default: augmented test images (`data.augment_test=False` for clean
test accuracy), the cumulative never-reset CBP statistic (`cbp.utility_statistic='ema'` for the
clean running utility), S&P noise added with the optimizer step (before CBP; the original adds it
after the CBP step). Diagnostics (dormant units, stable rank) as the original's post-run analysis
takes them: on the model entering each increment, before that increment's head/network reset, with
1 000 images (`probe_size`) drawn from the entering increment's classes. The shared evaluator
(active and ReDo-dormant fractions, feature and gradient norms, plasticity, the top Hessian
eigenvalue; `ddl/experiments/evaluation.py`) runs after the first epoch of each increment
(`diagnostics.every` 200) and after the last, on 256 images of all classes seen so far
(`diagnostics_probe_size`), one run at a time: its Hessian-vector products on a ResNet-18 take
10.4 GB per run (40 GB with 1 000 images; XLA's memory analysis on CPU).

Expected run time and memory (run time not measured on a GPU: on an H200 the 30-seed benchmark did
not finish compiling in the 140 s it had): 1.05 M SGD steps of
batch 90 per run plus 4 000 evaluations (31.5 M images), ~3.5e17 FLOP per run (ResNet-18 at 32x32:
1.1 GFLOP forward, x3 for a training step). On this 2-core CPU one seed at full width trains
~30 examples/s (launch/benchmark.py --workload=cifar100, the epoch's evaluation included; the
PyTorch reference's training steps: ~51, so ~0.6x; two seeds on two CPU devices, `cpu_devices=2`:
31 in total): ~6 weeks per run, so full runs are for GPUs. Projection for one H100 at a sustained
100-200 TFLOP/s (TF32): 30 seeds of one variant in ~15-30 h, the five variants in ~3-6 days; the original reports
~6 h per single run on an A100. Memory per seed (`launch/benchmark.py --workload=cifar100 --memory`,
XLA's analysis on CPU): 128 MB of state (parameters, momentum, the early-stopping copy, CBP
statistics) plus a call's own ~1.15 GB per seed with `network.conv='lax'` and ~4 GB with
'patches' (whose im2col copies are kept for the backward pass); 30 seeds of one variant in one
call therefore need ~38 GB ('lax') or ~120 GB ('patches'); docs/running.md, Memory. The H200's own compiler
(2026-11-30): 30 seeds of all variants need 18.75 GB of states and 85.3 GB for the largest call
(base, cbp and snp fused), so AUTO runs them in smaller calls on an 80 GB H100. The convolution, `fuse_variants`
and `runs_per_call` are left to the platform (`ddl.platform_defaults`): 'lax' and one program per
structure on GPUs, 'patches' on CPU, and as many seeds per call as fit the device's memory (the
rest run in sequence; the launch checks this before the first chunk). Measured on CPU: 1 seed,
full width, 'patches': peak RSS 5.6 GB, a call's device memory 4.2 GB; 'lax': 1.3 GB and ~5 %
faster (25.5 against 24.1 examples/s in one sitting), so on CPU one run per call may use
`--config.network.conv=lax --config.runs_per_call=1`. Smoke: about 1-2 minutes on a 2-core CPU
(mostly compilation of 3 programs).
"""
from ddl import config as config_lib
from ddl import platform_defaults
from ddl.learners import cbp as cbp_lib


def smoke(config):
  """Mock data (6 classes), 3 increments of 2 classes and 2 epochs each, a ResNet-10 of width 4,
  2 seeds; base, snp and cbp share one program (3 programs in all)."""
  config.num_seeds = 2
  config.classes_per_increment = 2
  config.epochs_per_increment = 2
  config.lr_milestones = (1,)
  config.batch_size = 10
  config.probe_size = 20
  config.diagnostics_probe_size = 20
  config.checkpoint_every = 2
  config.figure_bin = 2
  config.diagnostics.every = 2
  config.data.source = 'mock'
  config.data.num_classes = 6
  config.data.val_per_class = 5
  config.data.train_per_class = 15
  config.data.test_per_class = 5
  config.network.width = 4
  config.network.blocks_per_stage = 1   # a ResNet-10: the same layers and joins, half of them to compile
  config.network.conv = 'lax'     # compiles in half the time of 'patches' (same results)
  config.variants.cbp.replacement_rate = 1e-2
  config.variants.cbp.maturity_threshold = 2.0
  config.fuse_variants = True     # fewer programs to compile


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'class_incremental'
  config.classes_per_increment = 5
  config.epochs_per_increment = 200
  config.lr_milestones = (60, 120, 160)   # epochs within an increment where the learning rate ...
  config.lr_decay = 0.2                   # ... is multiplied by this
  config.batch_size = 90
  config.early_stopping = True
  config.increment_reset = 'none'         # 'head' or 'network': re-initialised as each increment starts
  config.probe_size = 1_000               # diagnostics: images of the entering increment's classes
  config.diagnostics.every = 200          # the shared evaluator: after the first epoch of each increment, ...
  config.diagnostics_probe_size = 256     # ... on this many images of the classes seen so far
  config.figure_bin = 200                 # figures: per increment
  config.figure_reduce = 'max'            # ... the max over the increment's epochs, as the paper
  config.figure_baseline = 'retrained'    # ... and minus the retrained network's, paired by seed, for
  config.figure_baseline_metrics = ('test_accuracy',)
  config.data = dict(source='tfds', data_dir='', cache_dir='~/.cache/ddl', download=False, num_classes=100,
                     val_per_class=50, train_per_class=450, test_per_class=100, augment_test=True,
                     mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
  # conv: per platform; blocks_per_stage 2: ResNet-18 (1: a ResNet-10, the smoke's)
  config.network.update(width=64, conv=platform_defaults.auto(str), layer_norm='', blocks_per_stage=2)
  config.optimizer.name = 'sgd'
  config.optimizer.momentum = 0.9
  config.cbp.update(cbp_lib.PRESETS['resgnt'])    # the original's ResGnT
  config.hparams.learning_rate = 0.1
  config.hparams.weight_decay = 5e-4
  config.hparams.maturity_threshold = 1000.0
  config.hparams.decay_rate = 0.99
  config.variants = dict(
      base=dict(),
      head_reset=dict(increment_reset='head'),
      retrained=dict(increment_reset='network'),
      snp=dict(noise_scale=1e-5),
      cbp=dict(replacement_rate=1e-5),
  )
  config_lib.apply_config_arg(config, arg, {'smoke': smoke})
  return config
