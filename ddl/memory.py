"""Device memory of a launch's compiled programs, and what the device can hold.

XLA's memory analysis of a compiled program gives, per device, its argument, output (and the part
of it aliased to donated arguments), temporary and generated-code bytes. Every program's state
stays on the device between calls, so a launch needs per device: all programs' states, plus the
largest call's own memory (temporaries, outputs not aliased to its arguments, code); the data set
is already on the device when this is checked. Free memory per device: a GPU's or TPU's allocator
limit less what is in use; on CPU the host's available memory (/proc/meminfo). Where XLA or the
device do not say (None), nothing is checked.
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

HEADROOM = 0.9   # share of the free memory a launch plans to fill (fragmentation, the allocator's own)
GIB = 2**30


def analysis(compiled) -> Optional[Dict[str, int]]:
  """{argument, output, alias, temp, code} bytes per device of a compiled program; None where XLA
  gives no memory analysis."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  return dict(argument=m.argument_size_in_bytes, output=m.output_size_in_bytes, alias=m.alias_size_in_bytes,
              temp=m.temp_size_in_bytes, code=m.generated_code_size_in_bytes)


def call_bytes(figures: Dict[str, int]) -> int:
  """What a call allocates beyond its arguments: temporaries, outputs not written into donated
  arguments, and generated code."""
  return figures['temp'] + figures['output'] - figures['alias'] + figures['code']


def nbytes(tree) -> int:
  """Bytes of a tree of arrays or ShapeDtypeStructs (typed PRNG keys as their key data)."""
  def one(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.eval_shape(jax.random.key_data, x)
    return int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return sum(one(x) for x in jax.tree.leaves(tree))


def host_available() -> Optional[int]:
  """The host's available memory in bytes (MemAvailable; else free pages), None where unknown."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None


def free_bytes(device) -> Optional[int]:
  """Memory a launch can still allocate on `device`: the allocator's limit less what is in use
  (GPU, TPU), the host's available memory (CPU), None where unknown; the least over hosts."""
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  if stats.get('bytes_limit'):
    free = stats['bytes_limit'] - stats.get('bytes_in_use', 0)
  elif device.platform == 'cpu':
    free = host_available()
  else:
    free = None
  if jax.process_count() > 1:   # every host must make the same calls
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    free = int(np.min(multihost_utils.process_allgather(np.asarray(-1 if free is None else free, np.int64))))
    free = None if free < 0 else free
  return free


@dataclasses.dataclass
class Footprint:
  """Bytes per device of a launch: `state` (every program's, all calls), `data` (replicated, on the
  device already), `call` (the largest call's own memory, `call_bytes`, with its runs per device;
  None where XLA gives no analysis) and `free` (`free_bytes`, None where unknown)."""
  state: int
  data: int
  call: Optional[int]
  runs_per_device: int
  free: Optional[int]

  @property
  def need(self) -> Optional[int]:
    return None if self.call is None else self.state + self.call

  @property
  def fits(self) -> bool:
    return self.need is None or self.free is None or self.need <= HEADROOM * self.free

  def runs_that_fit(self) -> int:
    """Runs per device per call that fit beside the states, the call's memory taken as linear in
    its runs; 0 when the states alone do not fit."""
    room = HEADROOM * self.free - self.state
    per_run = self.call / self.runs_per_device
    return max(0, int(room // per_run)) if room > 0 else 0

  def describe(self) -> str:
    gib = lambda b: 'unknown' if b is None else f'{b / GIB:.2f} GiB' if b >= GIB / 10 else f'{b / 2**20:.1f} MiB'
    return (f'per device: states of all runs {gib(self.state)}, data {gib(self.data)}, the largest call '
            f'({self.runs_per_device} runs per device) {gib(self.call)} (XLA memory analysis): needs '
            f'{gib(self.need)} of {gib(self.free)} free')


def compile_programs(programs: List[Any], data, devices) -> Tuple[List[Any], Footprint]:
  """Compiles every program's chunk and evaluator (once per function and runs-axis size) from
  abstract states, before any state is allocated, and measures the launch's footprint. Returns the
  programs with their functions replaced by the compiled executables (the calls then compile
  nothing), and the footprint."""
  compiled: Dict[Tuple[int, int], Any] = {}

  def ahead(fn, padded, *args):
    key = (id(fn), padded)
    if key not in compiled:
      compiled[key] = fn.lower(*args).compile()
    return compiled[key]

  result, state_bytes, calls = [], 0, []
  for program in programs:
    shape = jax.eval_shape(program.init)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=devices.runs), shape)
    state_bytes += nbytes(abstract) // devices.count
    run_chunk = ahead(program.run_chunk, program.padded, abstract, data)
    evaluate = None if program.evaluate is None else ahead(program.evaluate, program.padded, abstract[0], data)
    for fn in filter(None, (run_chunk, evaluate)):
      figures = analysis(fn)
      calls.append((None if figures is None else call_bytes(figures), program.padded // devices.count))
    result.append(dataclasses.replace(program, run_chunk=run_chunk, evaluate=evaluate))
  known = [c for c in calls if c[0] is not None]
  call, runs = max(known) if len(known) == len(calls) else (None, max(r for _, r in calls))
  footprint = Footprint(state=state_bytes, data=nbytes(data), call=call, runs_per_device=runs,
                        free=free_bytes(devices.mesh.devices.flat[0]))
  return result, footprint
