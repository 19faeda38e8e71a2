"""Random-label digits: the toy problem of plasticity (Lyle et al. 2023; Kumar et al.'s Random-Label MNIST).

Memorise the first `data.num_images` of the bundled 8x8 digits (ddl/data/digits.npz) with labels
re-drawn uniformly at random over 10 classes at every task, per seed: each task trains
`epochs_per_task` epochs of shuffled minibatches of 16 with Adam (lr 1e-3) on a 64-256-10 ReLU MLP.
One chunk = one task; metrics `train_accuracy` (eval pass over the task's images with its labels
after the last epoch) and `loss` (mean training loss of the last epoch). Source: Kumar et al.'s
Random-Label MNIST, "a variation of Lyle et al. 2023" (1 200 images, 400 epochs per task, 50 tasks,
batch 16: the `paper` preset, on all 1 797 digits, for a GPU); beyond_reference.md (d), (e).

Setting. A first sweep (2 seeds, 400 images, 128 units, 30 epochs, 20 tasks) under-fits: Adam
fits only ~0.44 of the random labels at task 1 and drifts to ~0.37 by task 20 while its top
Hessian eigenvalue *falls* (3.8 -> 2.8); L2 Init holds ~0.43, layer norm falls 0.63 -> 0.48. With
capacity to memorise (256 images, 256 units, 60 epochs; the default, no further tuning) the
effect shows. Measured with the default (5 seeds, 30 tasks; `launch/main.py`, 2026-11-30), mean
over seeds, end-of-task train accuracy of tasks 1-3 / 9-11 / 19-21 / 28-30, and the evaluator's
top Hessian eigenvalue (256-image probe, 20 power iterations) after tasks 1 / 11 / 21 / 30 and
dead-unit fraction after tasks 1 -> 30:

  variant              accuracy 1-3  9-11 19-21 28-30   top Hessian eig. 1/11/21/30   dead units 1 -> 30
  adam                          0.77  0.80  0.70  0.58     7.0   8.9   9.4   8.0         0.08 -> 0.70
  layer_norm                    1.00  1.00  1.00  0.98    13.9  32.8  28.0  26.6         0.00 -> 0.00
  l2_init (1e-3)                0.76  0.86  0.91  0.91     7.1  10.4  11.4  11.7         0.07 -> 0.09
  cbp (1e-4)                    0.80  0.87  0.89  0.89     7.1  10.0  13.0  14.3         0.00 -> 0.00
  snp (1e-4, 1e-4)              0.78  0.83  0.85  0.83     6.9   9.7  12.3  12.5         0.04 -> 0.42
  redo (every task)             0.77  0.75  0.77  0.78     7.8  11.8  13.0  14.7         0.01 -> 0.01
  injection (every 10)          0.77  0.84  0.83  0.82     7.0   6.8   6.6  10.9         0.08 -> 0.29
  reset (last layer, every 10)  0.77  0.83  0.73  0.58     7.0   4.6   4.5   5.0         0.08 -> 0.67
  upgd (lr 1e-2)                0.26  0.23  0.22  0.22     6.2   4.8   3.6   2.7         0.05 -> 0.06
  crelu                         0.95  0.98  1.00  1.00     7.1  24.3  30.7  31.1         0.02 -> 0.03
  spectral_norm (penultimate)   0.49  0.46  0.44  0.42     1.6   7.4  10.5  12.4         0.06 -> 0.32
  parseval (1e-3)               0.75  0.84  0.86  0.83     6.5  14.1  21.3  21.1         0.06 -> 0.57
  trac (over Adam)              0.80  0.82  0.81  0.82    10.3   2.7   5.1   5.8         0.16 -> 0.11

So Adam's end-of-task accuracy rises over the first ~10 tasks, then falls to 0.58 (seeds
0.52-0.66) by task 30 while its training loss rises (1.06 -> 1.41) and 70 % of its units die;
layer norm stays at ~0.98-1.00 and L2 Init climbs to ~0.91 (re-measured 2026-12-06 with the
authors' l/2 ||theta - theta_0||^2; the paper's form, twice as strong at the same l, gave 0.86);
CBP (0.89), S&P (0.83), injection (0.82) and ReDo (0.78, flat) hold too.
The four methods added through the method seam (2026-12-06, same seeds and settings; the nine
rows above re-measured identical in accuracy, L2 Init's but for its form): CReLU keeps every unit alive and memorises each
task (0.95 -> 1.00, as layer norm); Parseval holds (0.83) though 57 % of its ReLU units die;
spectral normalisation of the one hidden layer (Gogianu et al.'s single layer) caps what the net
can memorise (0.42-0.49 from the start: a capacity limit, not a loss of plasticity); TRAC reaches
0.98-1.00 on 4 of 5 seeds and freezes on seed 0 at chance (0.11): the authors' code recovers its
displacement from the parameters, and once its scale goes negative the run stays at its reference
point (`ddl/learners/trac.py`; `optimizer.trac_delta='state'` keeps it in the state instead).
Resetting the output layer alone does not help (the loss is in the hidden layer). UPGD at lr 1e-2
under-fits from the start (SGD-like steps; not tuned). The top Hessian eigenvalue does NOT
separate the runs here: Adam's grows 7.0 -> 9.4 by task 21 while its accuracy falls, then drops
to 8.0 as its units die; L2 Init's and CBP's grow as much or more while they keep their accuracy,
and layer norm's is the largest of all. At this budget the dead units, not the curvature, track
the lost plasticity. Figures: `figures/train_accuracy.png`, `hessian_top_eigenvalue.png`,
`dead_fraction.png` and every other diagnostic in the workdir.

Curvature grid (2026-12-06): does the top Hessian eigenvalue track the loss of plasticity
anywhere? `:curvature_grid` (Adam, layer norm, L2 Init at lr 1e-3 and 3e-4; 3 seeds, 20 tasks,
the evaluator after tasks 1/6/11/16/20) at width x images x epochs per task, 8 launches of 22-90 s:
  for w in 64 256; do for i in 256 1024; do for e in 20 60; do
    python launch/main.py --config=configs/random_label_digits.py:curvature_grid --config.network.hidden=$w \
      --config.data.num_images=$i --config.epochs_per_task=$e --workdir=/tmp/rlg/w${w}_i${i}_e$e; done; done; done
Per run, the loss of plasticity = the peak of its 3-task moving average of end-of-task accuracy
minus its last; Spearman's ρ over the 18 runs of a point between that loss and the change of the
log top eigenvalue (task 20 against task 1), and between it and the change of the dead fraction:
  width images epochs  Adam 1e-3: accuracy start -> end, dead at the end, top eig. x   ρ(loss, eig)  ρ(loss, dead)
   64     256    20              0.30 -> 0.25   0.31   x0.93                        -0.25         +0.43
   64     256    60              0.45 -> 0.30   0.58   x0.52                        -0.24         +0.50
   64    1024    20              0.24 -> 0.16   0.71   x0.34                        -0.61         +0.85
   64    1024    60              0.37 -> 0.12   0.99   x0.05                        -0.75         +0.88
  256     256    20              0.45 -> 0.40   0.35   x0.77                        +0.17         -0.12
  256     256    60              0.77 -> 0.70   0.58   x1.69                        +0.03         +0.58
  256    1024    20              0.37 -> 0.30   0.62   x0.34                        -0.41         +0.56
  256    1024    60              0.68 -> 0.13   0.99   x0.14                        -0.56         +0.81
The claim fails clearly as a separate explanation: where Adam's loss is large (1 024 images, 60
epochs: 0.68 -> 0.13), its top eigenvalue collapses (x0.14) only as its units die (99 %), and in
every point the dead fraction ranks the runs better than the curvature (ρ 0.56-0.88 against
|ρ| <= 0.75, the sign of the curvature's flipping between points). Where a run loses plasticity
with few dead units (layer norm, lr 1e-3, 64 units, 256 images, 60 epochs: 0.74 -> 0.63, 1 %
dead) its top eigenvalue rises (x1.93), the opposite of Adam's. Layer norm also loses at lr 1e-3
on 1 024 images (0.87 -> 0.65, 64 units: 0.46 -> 0.29) and holds at 3e-4; L2 Init holds in every
point. The default stays: it shows Adam's loss with layer norm and L2 Init holding, the seeds'
claims; 1 024 images and 60 epochs show Adam's collapse more sharply but layer norm's loss too.

  python launch/main.py --config=configs/random_label_digits.py --workdir=/tmp/rld
  python launch/main.py --config=configs/random_label_digits.py:smoke
  python launch/main.py --config=configs/random_label_digits.py:paper     # GPU

The variants: the nine above, tuned by hand, plus every other registered method's example
(`config_lib.add_method_variants`: a method added to ddl joins this comparison with no line here).

Expected run time: about 6 minutes on a 2-core CPU for the default (13 variants x 5 seeds; measured
6 min 01 s, 256 s of it the chunks, the rest compilation; the evaluator, every 10 tasks, 2-3 % of
the chunks' time); smoke: under a minute.
paper: 400 epochs x 112 steps x 50 tasks = 2.2 M sequential steps per run; a GPU job.
"""
from ddl import config as config_lib

name = config_lib.variant_name


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


def curvature_grid(config):
  """One point of the curvature grid (docstring): Adam, layer norm and L2 Init at two step sizes,
  3 seeds, 20 tasks, the evaluator every 5 tasks; width, images and epochs per task by flags."""
  config.num_seeds = 3
  config.num_tasks = 20
  config.diagnostics.every = 5
  config.diagnostics.plasticity = False
  config.variants = {}
  for lr in (1e-3, 3e-4):
    config.variants[name('adam', lr)] = dict(learning_rate=lr)
    config.variants[name('layer_norm', lr)] = dict(learning_rate=lr, network=dict(layer_norm='affine'))
    config.variants[name('l2_init', lr)] = dict(learning_rate=lr, l2_init=1e-3)


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'random_labels'
  config.num_seeds = 5
  config.num_tasks = 30
  config.epochs_per_task = 60
  config.batch_size = 16
  config.probe_size = 256
  config.data = dict(num_images=256)
  config.network.update(layers=1, hidden=256, activation='relu', weight_init='kaiming', layer_norm='')
  config.optimizer.name = 'adam'
  config.hparams.learning_rate = 1e-3
  config.diagnostics.hessian_iterations = 20
  config.diagnostics.every = 10     # the evaluator then takes ~4 % of the run (launch/benchmark.py)
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
  # every other registered method with its declared example (CReLU, spectral norm, Parseval, TRAC,
  # ...); growth is a different network (a layer that starts narrow), not an intervention on this one
  config_lib.add_method_variants(config, skip=('growth',))
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'paper': paper, 'curvature_grid': curvature_grid})
  return config
