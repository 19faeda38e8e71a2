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
  python launch/main.py --config=configs/dynamic_scr.py:idbd,sgd_0p01  # some variants

Default: 30 seeds x 16 variants x 300 000 examples (bins of 20 000). Expected run time: about
10 minutes on a 2-core CPU (compilation of 10 programs included).

How the meta-parameters were chosen (the honest-comparison part; each a sweep over the smoke-free
default at 10 seeds x 100 000 examples, the cost in CPU minutes in brackets):
  SGD step size: swept here in every run (0.003-0.1).
  CBP: the paper's replacement rate 1e-4, maturity 10, lr 0.01 (no sweep: the paper's values).
  IDBD/Autostep: meta step size in {1e-4, 1e-3, 1e-2} [~2 min]; both kept here; α0 = 0.01 (SGD's
    paper step size). MetaOptimize: the authors' defaults (η = 1e-3, α0 = 1e-3, γ = 0.9999), no
    sweep. Growth: promote_threshold in {0.001, 0.01, 0.1} and maturity in {100, 1000} [~3 min];
    0.01 and 100 kept.
"""
from ddl import config as config_lib

SGD_STEP_SIZES = (0.003, 0.01, 0.03, 0.1)
GROW = dict(network=dict(hidden=20), growth=dict(initial_units=5, min_units=1))


def name(prefix: str, value: float) -> str:
  """A variant name without dots (config keys cannot hold them): sgd_0p01."""
  return f'{prefix}_{value:g}'.replace('.', 'p')


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
      metaoptimize_network=dict(optimizer=dict(name='metaoptimize'), learning_rate=1e-3),
      metaoptimize_layer=dict(optimizer=dict(name='metaoptimize'), metaoptimize=dict(blocks='layer'),
                              learning_rate=1e-3),
      metaoptimize_weight=dict(optimizer=dict(name='metaoptimize'), metaoptimize=dict(blocks='weight'),
                               learning_rate=1e-3),
      grow=dict(**GROW),
      grow_cbp=dict(**GROW, replacement_rate=1e-4),
      grow_idbd=dict(**GROW, optimizer=dict(name='idbd'), meta_step_size=1e-3, initial_step_size=0.01),
  )
  config.summary_metric = 'error'             # figures/summary.md: first and last bins of the error,
  config.summary_baseline_family = 'sgd_'     # ... each variant against the best fixed step size
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'meta_sweep': meta_sweep})
  return config
