"""The tables of ddl's methods: optimizers, interventions and networks, each with the hyperparameters
it declares once beside its code (`ddl.learners.hyper.Hyper`).

Traced hyperparameters of every method share the flat `config.hparams` namespace (a variant
overrides any of them; one compiled program covers a sweep over them); static ones live in the
method's config section. `ddl.config` builds the defaults and the validation messages from here,
and `ddl.learners.learner` the traced state. Adding a method is one module, one line here, and
its tests.

`needs` says what a network must offer for an intervention to apply: 'units' (a unit topology,
`ddl.learners.topology`: hidden layers), 'head' (named layers it can run from, `nets.MLP.layer_names`),
'grow' (an MLP whose last hidden layer can grow, `ddl.learners.growth.problem`);
the launch stops with one line where an experiment's network lacks it.
"""
import dataclasses
from typing import Dict, Tuple

from ddl import nets
from ddl.learners import cbp
from ddl.learners import idbd
from ddl.learners import growth
from ddl.learners import l2_init
from ddl.learners import metaoptimize
from ddl.learners import obgd
from ddl.learners import redo
from ddl.learners import schedules
from ddl.learners import upgd
from ddl.learners.hyper import Hyper


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  doc: str
  hypers: Tuple[Hyper, ...] = ()
  section: str = ''   # config section of its static hyperparameters
  gate: str = ''      # traced hyperparameter whose value > 0 switches it on (it is in a program only then)
  needs: str = ''     # '' any network, 'units' hidden units, 'head' a network with named layers


LEARNING_RATE = Hyper('learning_rate', 0.01, low=0, open_low=True, doc='step size of every optimizer')

ADAM_MOMENTS = (Hyper('b1', 0.9, low=0, high=1, doc="Adam's first-moment decay"),
                Hyper('b2', 0.999, low=0, high=1, doc="Adam's second-moment decay"))

OPTIMIZERS: Dict[str, Method] = {
    'sgd': Method('sgd', 'PyTorch SGD (dampening 0, no Nesterov)', (
        Hyper('momentum', 0.0, low=0, high=1, open_high=True, traced=False, doc='heavy-ball momentum'),),
        section='optimizer'),
    'adam': Method('adam', 'PyTorch Adam (bias-corrected)', (
        *ADAM_MOMENTS, Hyper('eps', 1e-8, low=0, open_low=True, traced=False, doc="Adam's epsilon")), section='optimizer'),
    'upgd': Method('upgd', 'UPGD (Elsayed & Mahmood 2024): utility-gated, perturbed SGD', upgd.HYPERS,
                   section='upgd'),
    'idbd': Method('idbd', 'IDBD (Sutton 1992): per-weight step sizes exp(beta) meta-learned for a linear unit',
                   idbd.HYPERS, section='idbd'),
    'autostep': Method('autostep', 'Autostep (Mahmood et al. 2012): IDBD normalised, effective step bounded',
                       idbd.HYPERS, section='idbd'),
    'metaoptimize': Method('metaoptimize', 'MetaOptimize-hg (Sharifnassab et al. 2025): AdamW with meta-learned '
                           'step sizes exp(beta) per network, layer or weight (Lion meta update); '
                           'learning_rate is the initial step size',
                           idbd.HYPERS[:1] + ADAM_MOMENTS + metaoptimize.HYPERS, section='metaoptimize'),
    'obgd': Method('obgd', 'ObGD (Elsayed et al. 2024): eligibility-trace steps alpha delta z bounded against '
                   'overshooting; needs a TD error and episode ends per step (experiment stream_ac); '
                   'learning_rate is alpha (1 in the paper); obgd.step_sizes=tidbd: per-weight step sizes '
                   "meta-learned by TIDBD (Kearney et al. 2018) for the critic, from learning_rate",
                   obgd.HYPERS + tuple(h for h in idbd.HYPERS if h.name in ('meta_step_size', 'beta_min', 'beta_max')),
                   section='obgd'),
}

INTERVENTIONS: Dict[str, Method] = {
    'l2': Method('l2', 'coupled L2 (PyTorch weight_decay); also the shrink of S&P',
                 (Hyper('weight_decay', 0.0, low=0, doc='coupled L2 coefficient'),)),
    'snp': Method('snp', 'Shrink & Perturb (Ash & Adams 2020): weight_decay plus N(0, noise_scale^2) per step',
                  (Hyper('noise_scale', 0.0, low=0, doc='std of the noise added to every weight per step'),),
                  gate='noise_scale'),
    'l2_init': Method('l2_init', 'L2 Init (Kumar et al.): loss + l2_init ||theta - theta_0||^2', l2_init.HYPERS,
                      gate='l2_init'),
    'cbp': Method('cbp', 'continual backpropagation (Dohare et al. 2024)', cbp.HYPERS, section='cbp',
                  gate='replacement_rate', needs='units'),
    'redo': Method('redo', 'ReDo (Sokar et al. 2023): reset tau-dormant units (cbp.method=redo)', redo.HYPERS,
                   section='cbp', needs='units'),
    'layer_norm': Method('layer_norm', 'layer normalisation before every activation (Lyle et al. 2023)', (
        Hyper('layer_norm', '', choices=nets.LAYER_NORMS, traced=False, doc="'', 'affine' or 'plain'"),),
        section='network'),
    'reset': Method('reset', 'resets of the last layers or the whole network (Nikishin et al. 2022)',
                    schedules.RESET_HYPERS, section='schedule'),
    'growth': Method('growth', 'a growing last hidden layer: backbone units and a fringe of candidates trained on '
                     'its residual (generate-and-test)', growth.HYPERS, section='growth', needs='grow'),
    'injection': Method('injection', 'plasticity injection (Nikishin et al. 2023)', schedules.INJECTION_HYPERS,
                        section='schedule', needs='head'),
}

NETWORKS = {'mlp': nets.MLP, 'convnet': nets.ConvNet, 'resnet18': nets.ResNet18, 'actor_critic': nets.ActorCritic,
            'stream_actor_critic': nets.StreamActorCritic}

METHODS: Tuple[Method, ...] = tuple(OPTIMIZERS.values()) + tuple(INTERVENTIONS.values())


def traced_hypers() -> Tuple[Hyper, ...]:
  """Every traced hyperparameter (learning rate first), each once."""
  seen = {LEARNING_RATE.name: LEARNING_RATE}
  for method in METHODS:
    for h in method.hypers:
      if h.traced:
        seen.setdefault(h.name, h)
  return tuple(seen.values())


def static_hypers() -> Dict[str, Tuple[Hyper, ...]]:
  """Static hyperparameters by config section."""
  out: Dict[str, Dict[str, Hyper]] = {}
  for method in METHODS:
    for h in method.hypers:
      if not h.traced:
        out.setdefault(method.section, {}).setdefault(h.name, h)
  return {section: tuple(hypers.values()) for section, hypers in out.items()}


HPARAMS: Tuple[str, ...] = tuple(h.name for h in traced_hypers())
GATES: Dict[str, str] = {m.name: m.gate for m in INTERVENTIONS.values() if m.gate}
