"""Sutton (1992) "Adapting bias by gradient descent" (AAAI-92), Figures 3 and 4: LMS vs IDBD
(and Autostep, Mahmood et al. 2012) on the tracking task (ddl.experiments.tracking).

20 inputs ~ N(0, 1); target Σ s_i x_i over the first five (s_i = ±1, per seed), weight 0 on the
other fifteen; one of the five signs flips at random every 20 examples. A linear unit with no bias,
started at w = 0, learns online on ½ δ². One program per optimizer: seeds x LMS step sizes (sgd,
traced learning_rate), seeds x IDBD meta step sizes θ, seeds x Autostep meta step sizes μ (traced
meta_step_size; α0 = 0.05 for both).

  python launch/main.py --config=configs/idbd_tracking.py --workdir=/tmp/idbd        # Figure 3
  python launch/main.py --config=configs/idbd_tracking.py:fig4 --workdir=/tmp/idbd4  # Figure 4
  python launch/main.py --config=configs/idbd_tracking.py:smoke                      # tests

Default: 30 seeds, 30 000 examples, error in bins of 1 000; the asymptotic error is the MSE over
examples 20 000-30 000 (Sutton's protocol). Figures: figures/sutton1992_fig3.png (asymptotic
error vs α and vs θ/μ, the paper's LMS ≈ 3.5 at α ≈ 0.04 and IDBD ≈ 1.5 marked) and
figures/sutton1992_fig4.png (step sizes of the relevant/irrelevant inputs over time, the paper's
0.13 and < 0.007 marked), besides the per-metric figures.

Paper (as restated in beyond_reference.md §a.1, not re-checked against the PDF): best LMS
α ≈ 0.04, MSE ≈ 3.5; IDBD MSE ≈ 1.5 over a broad range of θ; θ = 0.001, α0 = 0.05, 250 000
examples: relevant α ≈ 0.13, irrelevant < 0.007.

Measured (2026-11-30, a 2-core CPU shared with other jobs):
  python launch/main.py --config=configs/idbd_tracking.py --workdir=/tmp/idbd_default
    49 s wall (30 chunks in 43 s; 780 runs: 30 seeds x 26 variants, 3 programs).
    Asymptotic error (MSE over examples 20 000-30 000, mean ± s.e. over 30 seeds):
    LMS   α:  0.005 4.43 | 0.01 4.04 | 0.02 3.58 | 0.03 3.39 ± 0.01 | 0.04 3.41 ± 0.01 | 0.05 3.64 |
              0.06 4.22 | 0.07 5.51 | 0.08 9.33 | 0.09 82.6   -> best α 0.03-0.04, MSE 3.39-3.41
              (paper: α ≈ 0.04, 3.5)
    IDBD  θ:  1e-4 3.16 | 2e-4 2.84 | 5e-4 2.34 | 1e-3 2.04 | 2e-3 1.82 | 5e-3 1.62 | 1e-2 1.54 ± 0.01 |
              2e-2 4.7 (2 of 30 seeds diverged, the mean is over the other 28)
              (paper: ≈ 1.5 over a broad range of θ; here ≤ 1.8 for θ in [0.002, 0.01]; small θ has
              not finished adapting by 20 000 examples from α0 = 0.05)
    Autostep μ: 1e-4 3.62 | 2e-4 3.58 | 5e-4 3.48 | 1e-3 3.31 | 2e-3 3.00 | 5e-3 2.52 | 1e-2 2.27 |
              2e-2 2.15 (not in Sutton's paper)
  The same sweep run to 250 000 examples, the error over the last 10 000 (2026-12-06, 2 min 11 s):
    python launch/main.py --config=configs/idbd_tracking.py --config.num_examples=250000 \
        --config.asymptotic_from=240000 --workdir=/tmp/idbd250
    IDBD  θ:  1e-4 2.05 | 2e-4 1.83 | 5e-4 1.62 | 1e-3 1.52 | 2e-3 1.46 | 5e-3 1.42 | 1e-2 1.42 (± 0.004-0.005) |
              2e-2 diverges (11 of 30 seeds)
    LMS unchanged (best α 0.03, 3.38): its error is stationary. So the IDBD curve does flatten at
    ~1.4-1.5 over θ in [5e-4, 1e-2] once the step sizes have adapted, the paper's "≈ 1.5 over a
    broad range of θ"; at 20 000 examples the small θ have not (1e-3: 2.04 there, 1.52 here).
  The protocol: the default is the one the faithful replication states for Fig. 3
  (j-klawson/alberta-framework, examples/The Alberta Plan/Step1/sutton1992_experiment1.py: "run
  each algorithm for 20,000 examples ... then another 10,000 ... average MSE over those 10,000",
  α0 = 0.05, θ on a linear axis 0-0.02 as the paper's figure); no copy of the paper's own text
  was found to check it against (2026-12-06). On that axis the paper's flat stretch is θ >= ~0.002,
  where this default gives 1.82-1.54, and the 250 000-example run 1.46-1.42: the claim holds with
  either run length, the value 1.5 best matched by the longer one.
  python launch/main.py --config=configs/idbd_tracking.py:fig4 --workdir=/tmp/idbd4
    37 s wall (50 chunks in 32 s). After 250 000 examples (mean over 30 seeds):
    IDBD θ = 0.001, α0 = 0.05: relevant α 0.130 (paper ≈ 0.13), irrelevant α 0.0076, still falling
      (paper: < 0.007, heading to 0); asymptotic error over the last 10 000 examples 1.53.
    Autostep μ = 0.01: relevant α 0.041, irrelevant α 4.5e-5 = e^-10 (the β clip binds);
      error 2.34. Autostep's α ← α / max(Σ α x², 1) shrinks the stored step sizes whenever an
      example's Σ α x² exceeds 1 (heavy χ² tails): a numpy loop of the same equations (one seed,
      100 000 examples, μ = 0.01) gives relevant α 0.031 with it (M > 1 on 0.075 % of examples)
      and 0.129 without it, IDBD's value.
"""
from ddl import config as config_lib

LMS_STEP_SIZES = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09)   # LMS diverges near 2/20 = 0.1
META_STEP_SIZES = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2)


name = config_lib.variant_name


def smoke(config):
  """Seconds: 2 seeds, 2 LMS + 2 IDBD + 1 Autostep variants, 3 bins of 200 examples."""
  config.num_seeds = 2
  config.num_examples = 600
  config.chunk_size = 200
  config.asymptotic_from = 400
  config.checkpoint_every = 2
  config.figure_step_sizes = []
  config.variants = {name('lms', a): dict(learning_rate=a) for a in (0.01, 0.04)}
  config.variants.update({name('idbd', t): dict(meta_step_size=t, optimizer=dict(name='idbd')) for t in (1e-3, 1e-2)})
  config.variants[name('autostep', 1e-2)] = dict(meta_step_size=1e-2, optimizer=dict(name='autostep'))


def fig4(config):
  """Sutton's Figure 4: IDBD with θ = 0.001, α0 = 0.05 over 250 000 examples (and Autostep μ = 0.01)."""
  config.num_examples = 250_000
  config.chunk_size = 5_000
  config.asymptotic_from = 240_000
  config.variants = {
      name('idbd', 1e-3): dict(meta_step_size=1e-3, optimizer=dict(name='idbd')),
      name('autostep', 1e-2): dict(meta_step_size=1e-2, optimizer=dict(name='autostep')),
  }


def get_config(arg: str = ''):
  config = config_lib.base_config()
  config.experiment = 'tracking'
  config.num_seeds = 30
  config.num_examples = 30_000
  config.chunk_size = 1_000          # examples per jitted call = one bin of the error curve
  config.asymptotic_from = 20_000    # Figure 3's asymptotic error: the bins after this many examples
  config.checkpoint_every = 10
  config.figure_step_sizes = [name('idbd', 1e-3), name('autostep', 1e-2)]   # Figure 4's curves ([]: all)
  config.data = dict(num_inputs=20, num_relevant=5, flip_period=20)
  config.network.update(bias=False, weight_init='zeros')   # Sutton's linear unit: no bias, w = 0
  config.optimizer.name = 'sgd'
  config.hparams.meta_step_size = 1e-3
  config.hparams.initial_step_size = 0.05
  config.variants = {name('lms', a): dict(learning_rate=a) for a in LMS_STEP_SIZES}
  for opt in ('idbd', 'autostep'):
    config.variants.update({name(opt, t): dict(meta_step_size=t, optimizer=dict(name=opt)) for t in META_STEP_SIZES})
  config_lib.apply_config_arg(config, arg, {'smoke': smoke, 'fig4': fig4})
  return config
