"""Dynamic deep learning on slowly-changing regression: the talk's levels 1-3 side by side.

The paper's streaming problem (configs/slowly_changing_regression.py: 20 inputs, batch 1, MSE, a
drifting LTU target) with the learners of "The Need for Dynamic Deep Learning":
  level 1, the weights:     SGD at fixed step sizes (a sweep, one program), CBP;
  level 2, step sizes:      network IDBD and Autostep (per weight, Gauss-Newton diagonal),
                            MetaOptimize-hg (one step size per network, per layer, per weight);
  level 3, connections:     a growing hidden layer (backbone/fringe inside 20 units, starting
                            from the paper's 5), alone, with CBP and with IDBD step sizes.
Every learner's error is reported against the best fixed SGD step size of the same program:
figures/summary.md gives, per variant, the error of the first and last bins (mean ± s.e. over
seeds) and the step sizes learned per layer; figures/step_sizes.png their course.

  python launch/main.py --config=configs/dynamic_scr.py --workdir=/tmp/dynamic_scr
  python launch/main.py --config=configs/dynamic_scr.py:smoke          # tests, seconds
  python launch/main.py --config=configs/dynamic_scr.py:idbd_0p01,sgd_0p003  # some variants

Default: 30 seeds x 16 variants x 300 000 examples (bins of 20 000), 11 programs. Measured
(2026-11-30, a 2-core CPU shared with three other jobs): 14 of the variants in 1 108 s, the two
wide controls in 126 s (about 20 minutes for the default together).

How the meta-parameters were chosen (the honest-comparison part): `:meta_sweep`, 10 seeds x
100 000 examples, 19 variants, 201 s on the same loaded CPU; last-bin error (best fixed SGD 0.699):
  IDBD θ: 1e-4 0.871 | 1e-3 0.738 | 1e-2 0.724            -> kept 1e-3 (Sutton's) and 1e-2
  Autostep μ: 1e-3 0.866 | 1e-2 0.609 | 1e-1 0.675         -> kept 1e-2
  MetaOptimize η (per network): 1e-4 0.717 | 1e-3 0.914 | 1e-2 2.52  -> 1e-4 for all blocks
    (the authors' default is 1e-3; at 300 000 examples it gave per network 0.927, per layer
    1.089, per weight 1.691 in the last bin)
  growth promote_threshold x maturity: 0.001: 0.327 (100), 0.347 (1000) | 0.01: 0.300, 0.361 |
    0.1: 0.505, 0.547                                        -> kept 0.01 and 100
  SGD's step size is swept in every run; CBP, IDBD's α0 = 0.01 and MetaOptimize's α0 = 1e-3 and
  γ = 0.9999 are the paper's and the authors' values, not swept.

Result of the default (30 seeds; error = mean squared error of a bin, mean ± s.e. over seeds;
step sizes at the end, hidden / output layer):
  variant                    first bin      last bin       step sizes
  SGD α = 0.003 (best fixed) 0.799 ± 0.068  0.918 ± 0.050
  SGD α = 0.01 (the paper's) 0.766 ± 0.078  1.233 ± 0.094
  SGD α = 0.03 / 0.1         1.044 / 1.828  1.438 / 1.820
  SGD, 20 units, α = 0.003   0.557 ± 0.054  0.465 ± 0.045   (the growing layer's maximum width)
  SGD, 20 units, α = 0.01    0.398 ± 0.060  0.844 ± 0.039
  CBP                        0.687 ± 0.066  0.619 ± 0.037
  IDBD θ = 1e-3              0.745 ± 0.074  0.915 ± 0.054   0.0097 / 0.0048
  IDBD θ = 1e-2              0.740 ± 0.070  0.756 ± 0.048   0.0131 / 0.0026
  Autostep μ = 1e-2          0.701 ± 0.070  0.818 ± 0.048   0.0071 / 0.0031
  MetaOptimize per network   0.926 ± 0.081  0.847 ± 0.053   0.0037
  MetaOptimize per layer     0.915 ± 0.081  0.926 ± 0.072   0.0156 / 0.00066
  MetaOptimize per weight    0.938 ± 0.083  0.916 ± 0.065   0.0043 / 0.0052
  growing layer (5 -> <= 20) 0.481 ± 0.066  0.353 ± 0.031   (11.2 backbone units at the end, 4-16)
  growing layer + CBP        0.542 ± 0.070  0.432 ± 0.037   (8.5 units)
  growing layer + IDBD       0.470 ± 0.064  0.319 ± 0.025   0.0094 / 0.0079 (11.1 units)
IDBD θ = 1e-2, Autostep and MetaOptimize per network end below the best fixed step size's error
(0.756, 0.818, 0.847 vs 0.918); IDBD θ = 1e-3 and MetaOptimize per layer or weight end level with
it, and all of them below the paper's α = 0.01. IDBD and Autostep learn a smaller step size for the
output layer than for the hidden one. The growing layer ends below SGD on its maximum width at
either step size (that network is better from 50 000 to 200 000 examples, then its error rises
again), so it is more than extra capacity; CBP on top of it does not help here.
"""
from ddl import config as config_lib

SGD_STEP_SIZES = (0.003, 0.01, 0.03, 0.1)
GROW = dict(network=dict(hidden=20), growth=dict(initial_units=5, min_units=1))


name = config_lib.variant_name


def smoke(config):
  """Seconds: 2 seeds, 2 bins of 500 examples, one variant per learner family."""
  config.num_seeds = 2
  config.num_examples = 1_000
  config.chunk_size = 500
  config.probe_size = 100
  config.checkpoint_every = 1
  config.data.flip_period = 250
  config.diagnostics.hessian_iterations = 0
  config.diagnostics.plasticity = False
  keep = (name('sgd', 0.01), 'cbp', 'idbd_0p001', 'metaoptimize_weight', 'grow', 'grow_cbp')
  for variant in list(config.variants):
    if variant not in keep:
      del config.variants[variant]
  config.variants.grow.growth_maturity = 20.0


def meta_sweep(config):
  """The sweep that picked the meta-parameters of the default variants: 10 seeds x 100 000 examples."""
  config.num_seeds = 10
  config.num_examples = 100_000
  config.diagnostics.hessian_iterations = 0
  config.diagnostics.plasticity = False
  variants = {name('sgd', lr): dict(learning_rate=lr) for lr in SGD_STEP_SIZES}
  for meta in (1e-4, 1e-3, 1e-2):
    variants[name('idbd', meta)] = dict(optimizer=dict(name='idbd'), meta_step_size=meta, initial_step_size=0.01)
    variants[name('autostep', meta * 10)] = dict(optimizer=dict(name='autostep'), meta_step_size=meta * 10,
                                                 initial_step_size=0.01)
    variants[name('metaoptimize', meta)] = dict(optimizer=dict(name='metaoptimize'), meta_step_size=meta,
                                                learning_rate=1e-3)
  for threshold in (0.001, 0.01, 0.1):
    for maturity in (100, 1000):
      variants[name(f'grow_m{maturity}', threshold)] = dict(**GROW, promote_threshold=threshold,
                                                            growth_maturity=float(maturity))
  config.variants = variants


def get_config(arg: str = ''):
  config = config_lib.config_module('slowly_changing_regression').get_config()
  config.num_examples = 300_000
  config.diagnostics.every = 3
  config.variants = {name('sgd', lr): dict(learning_rate=lr) for lr in SGD_STEP_SIZES}
  # the growing layer's maximum width at full width: is growth more than a wider network?
  config.variants.update({name('wide_sgd', lr): dict(network=dict(hidden=20), learning_rate=lr)
                          for lr in SGD_STEP_SIZES[:2]})
  config.variants.update(
      cbp=dict(replacement_rate=1e-4),
      idbd_0p001=dict(optimizer=dict(name='idbd'), meta_step_size=1e-3, initial_step_size=0.01),
      idbd_0p01=dict(optimizer=dict(name='idbd'), meta_step_size=1e-2, initial_step_size=0.01),
      autostep_0p01=dict(optimizer=dict(name='autostep'), meta_step_size=1e-2, initial_step_size=0.01),
      metaoptimize_network=dict(optimizer=dict(name='metaoptimize'), meta_step_size=1e-4, learning_rate=1e-3),
      metaoptimize_layer=dict(optimizer=dict(name='metaoptimize'), metaoptimize=dict(blocks='layer'),
                              meta_step_size=1e-4, learning_rate=1e-3),
      metaoptimize_weight=dict(optimizer=dict(name='metaoptimize'), metaoptimize=dict(blocks='weight'),
                               meta_step_size=1e-4, learning_rate=1e-3),
      grow=dict(**GROW),
      grow_cbp=dict(**GROW, replacement_rate=1e-4),
      grow_idbd=dict(**GROW, optimizer=dict(name='idbd'), meta_step_size=1e-3, initial_step_size=0.01),
  )
  config.summary_metric = 'error'             # figures/summary.md: first and last bins of the error,
  config.summary_baseline_family = 'sgd_'     # ... each variant against the best fixed step size
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'meta_sweep': meta_sweep})
  return config
