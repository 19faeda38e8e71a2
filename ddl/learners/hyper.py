"""Hyperparameter declarations: each method declares its hyperparameters once, beside its code.

A `Hyper` names a value, its default, its valid range (or choices) and whether it is traced (an
array in the learner state, so a sweep over it is one compiled program) or static (a Python value
in a config section, which shapes the program). Config defaults, validation messages and the
learner's traced state all come from these declarations (`ddl.learners.registry`).
"""
import dataclasses
from typing import Any, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class Hyper:
  """One hyperparameter of a method.

  name: its key: in `config.hparams` when traced (one flat namespace shared by every method, so
    names are unique), in the method's config section when static.
  default: the value a config gets unless it sets one.
  low, high: the valid range (None: unbounded); `open_low` / `open_high` exclude the bound.
  choices: for a static string or bool, the allowed values.
  traced: True for a float a sweep may vary inside one program.
  doc: one line saying what it is.
  """
  name: str
  default: Any
  low: Optional[float] = None
  high: Optional[float] = None
  open_low: bool = False
  open_high: bool = False
  choices: Optional[Sequence[Any]] = None
  traced: bool = True
  doc: str = ''

  def problem(self, value: Any) -> Optional[str]:
    """None if `value` is valid, else what is wrong with it (for a one-line error)."""
    if self.choices is not None:
      return None if value in self.choices else f'{value!r} is not known; use one of {tuple(self.choices)}'
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return f'must be a number, got {value!r}'
    ok = True
    if self.low is not None:
      ok &= value > self.low if self.open_low else value >= self.low
    if self.high is not None:
      ok &= value < self.high if self.open_high else value <= self.high
    return None if ok else f'must be {self.range_text()}, got {value}'

  def range_text(self) -> str:
    parts = []
    if self.low is not None:
      parts.append(f'{">" if self.open_low else ">="} {self.low:g}')
    if self.high is not None:
      parts.append(f'{"<" if self.open_high else "<="} {self.high:g}')
    return ' and '.join(parts) or 'any number'


def traced(hypers: Sequence[Hyper]) -> Tuple[Hyper, ...]:
  return tuple(h for h in hypers if h.traced)


def static(hypers: Sequence[Hyper]) -> Tuple[Hyper, ...]:
  return tuple(h for h in hypers if not h.traced)
