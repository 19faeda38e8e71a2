"""The registry of ddl's methods: one table per kind, one line per method. Each method is declared
once in its own module (`ddl.learners.method.Method`); nothing else in ddl names it.

Adding a method is one module, one line here, and its tests (docs/adding_a_method.md). The order of
the tables, and of the lines in a table, is the order in which the learner composes the methods
(`ddl.learners.method`): gradient terms before the optimizer, update terms after it, unit
transforms after the step, boundary transforms at chunk starts; agent settings are read by
off-policy experiments, not composed. `register` adds a method at run
time (a method defined in a notebook or a test).
"""
import contextlib
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from ddl.learners import cbp
from ddl.learners import crelu
from ddl.learners import growth
from ddl.learners import idbd
from ddl.learners import l2_init
from ddl.learners import layer_norm
from ddl.learners import metaoptimize
from ddl.learners import obgd
from ddl.learners import optimizers
from ddl.learners import parseval
from ddl.learners import redo
from ddl.learners import schedules
from ddl.learners import spectral_norm
from ddl.learners import trac
from ddl.learners import upgd
from ddl.learners.hyper import Hyper
from ddl.learners.method import Method, Program
from ddl.rl import agent

NETWORK_OPTIONS: Dict[str, Method] = {
    'layer_norm': layer_norm.METHOD,
    'crelu': crelu.METHOD,
    'spectral_norm': spectral_norm.METHOD,
}
GRADIENT_TERMS: Dict[str, Method] = {
    'l2_init': l2_init.METHOD,
    'l2': optimizers.L2,
    'parseval': parseval.METHOD,
}
OPTIMIZERS: Dict[str, Method] = {
    'sgd': optimizers.SGD,
    'adam': optimizers.ADAM,
    'upgd': upgd.METHOD,
    'idbd': idbd.IDBD,
    'autostep': idbd.AUTOSTEP,
    'metaoptimize': metaoptimize.METHOD,
    'obgd': obgd.METHOD,
}
WRAPPERS: Dict[str, Method] = {
    'trac': trac.METHOD,
}
UPDATE_TERMS: Dict[str, Method] = {
    'snp': optimizers.SNP,
}
UNIT_TRANSFORMS: Dict[str, Method] = {
    'cbp': cbp.METHOD,
    'redo': redo.METHOD,
    'growth': growth.METHOD,
}
BOUNDARY_TRANSFORMS: Dict[str, Method] = {
    'reset': schedules.RESET,
    'injection': schedules.INJECTION,
}
AGENT_SETTINGS: Dict[str, Method] = {
    'replay_ratio': agent.REPLAY_RATIO,
    'arr': agent.ARR,
    'augment': agent.AUGMENT,
    'priming': agent.PRIMING,
}

TABLES: Tuple[Dict[str, Method], ...] = (NETWORK_OPTIONS, GRADIENT_TERMS, OPTIMIZERS, WRAPPERS, UPDATE_TERMS,
                                        UNIT_TRANSFORMS, BOUNDARY_TRANSFORMS, AGENT_SETTINGS)
TABLE_OF_KIND = {'network': NETWORK_OPTIONS, 'gradient': GRADIENT_TERMS, 'optimizer': OPTIMIZERS,
                 'wrapper': WRAPPERS, 'update': UPDATE_TERMS, 'unit': UNIT_TRANSFORMS, 'boundary': BOUNDARY_TRANSFORMS,
                 'agent': AGENT_SETTINGS}
LEARNING_RATE: Hyper = optimizers.LEARNING_RATE


def all_methods() -> Tuple[Method, ...]:
  """Every registered method, in composition order."""
  return tuple(m for table in TABLES for m in table.values())


def get(name: str) -> Method:
  for table in TABLES:
    if name in table:
      return table[name]
  raise KeyError(f'method {name!r} is not registered; registered: {names()}.')


def names() -> Tuple[str, ...]:
  return tuple(m.name for m in all_methods())


def resolve(method_names: Iterable[str]) -> List[Method]:
  return [get(n) for n in method_names]


def ordered(methods: Iterable[Method]) -> Tuple[Method, ...]:
  """`methods` in composition order."""
  wanted = {m.name for m in methods}
  return tuple(m for m in all_methods() if m.name in wanted)


def active(config, hparams: Sequence[Mapping[str, float]]) -> Tuple[Method, ...]:
  """The methods a program of these variants (one static config, their traced values) holds."""
  program = Program(config, hparams)
  return tuple(m for m in all_methods() if m.active(program))


def traced_hypers(methods: Iterable[Method] = None) -> Tuple[Hyper, ...]:
  """The traced hyperparameters (learning rate first, each once) of `methods` (default: all)."""
  seen = {LEARNING_RATE.name: LEARNING_RATE}
  for method in all_methods() if methods is None else methods:
    for h in method.traced:
      seen.setdefault(h.name, h)
  return tuple(seen.values())


def static_hypers() -> Dict[str, Tuple[Hyper, ...]]:
  """Static hyperparameters of every method by config section, each once."""
  out: Dict[str, Dict[str, Hyper]] = {}
  for method in all_methods():
    for h in method.static:
      out.setdefault(method.section, {}).setdefault(h.name, h)
  return {section: tuple(hypers.values()) for section, hypers in out.items()}


def hparam_names() -> Tuple[str, ...]:
  return tuple(h.name for h in traced_hypers())


def _check_unique(method: Method) -> None:
  if method.name in names():
    raise ValueError(f'method {method.name!r} is registered already; choose another name.')
  taken = {h.name: (m.name, h) for m in all_methods() for h in m.traced}
  for h in method.traced:
    if h.name in taken and taken[h.name][1] is not h:
      raise ValueError(f'method {method.name}: traced hyperparameter {h.name!r} is declared by {taken[h.name][0]} '
                       'already (traced names share config.hparams); choose another name, or share that '
                       'declaration (the same Hyper object) if it is the same quantity.')


def register(method: Method) -> None:
  """Adds `method` to the table of its kind (after the others: composed last among its kind)."""
  _check_unique(method)
  TABLE_OF_KIND[method.kind][method.name] = method


def unregister(name: str) -> None:
  for table in TABLES:
    table.pop(name, None)


@contextlib.contextmanager
def registered(*methods: Method):
  """Registers `methods` for the duration of a `with` block (tests, notebooks)."""
  for method in methods:
    register(method)
  try:
    yield
  finally:
    for method in methods:
      unregister(method.name)
