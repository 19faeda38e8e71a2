"""Helpers for replaying recorded PyTorch CBP traces (tests/data/trace_*.npz) with teacher forcing:
loading, tie-aware comparison of replaced-unit masks, and the comparison of a step's parameters
with the recorded ones around the units whose input weights were drawn afresh; the compilation of
the replays' programs at the level of real runs."""
import contextlib
import logging
import os
import threading

import jax
import numpy as np
from flax import traverse_util

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
RTOL, ATOL = 1e-5, 1e-6

# The replays are the proof that ours replays the original step by step: their programs compile as in
# real runs, at XLA's default LLVM level (2), not at the level 0 that conftest sets for the rest of the
# suite (where some float32 sums round differently). Every program of a replay is made by `jit`; its
# inputs are built in numpy, not with jnp or jax.random (an op run eagerly is a program of its own,
# compiled at the suite's level), which `only_jitted_programs` checks.
COMPILER_OPTIONS = {'xla_backend_optimization_level': 2}
_JITTED = set()


def jit(fn, **kwargs):
  """`jax.jit(fn)` compiled at the level of real runs (COMPILER_OPTIONS)."""
  _JITTED.add('jit(%s)' % fn.__name__)
  return jax.jit(fn, compiler_options=COMPILER_OPTIONS, **kwargs)


class _Compiles(logging.Handler):
  """Collects the names of the programs that this thread asks XLA to compile (JAX logs each at DEBUG
  level; threads a test left running are not the replay's)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.names, self.thread = [], threading.get_ident()

  def emit(self, record):
    if record.thread == self.thread and str(record.msg).startswith('Compiling %s') and record.args:
      self.names.append(str(record.args[0]))


@contextlib.contextmanager
def only_jitted_programs():
  """Fails if a program other than those of `jit` is compiled in the block (an op run eagerly would be
  compiled at the suite's level 0), or if none of those is (JAX no longer logs compiles as read here).
  An eager program compiled earlier in the process is not compiled again: running a replay alone shows
  all of its programs."""
  logger = logging.getLogger('jax._src.interpreters.pxla')
  handler, level = _Compiles(), logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.DEBUG)
  try:
    yield
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  others = sorted(set(handler.names) - _JITTED)
  assert not others, 'programs compiled outside trace_replay.jit (at the suite\'s level): %s' % others
  assert set(handler.names) & _JITTED, 'no trace_replay.jit program compiled: %s' % handler.names


def load(name):
  """A trace as a dict of numpy arrays (numpy only, no pickle)."""
  with np.load(os.path.join(DATA, name), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def same_up_to_ties(mask, ref, rank, mature):
  """(agree, tie): masks equal, or both pick the k mature units of lowest `rank` with the choice
  differing only among units whose rank is bit-equal to the k-th smallest (torch.topk breaks such
  ties, e.g. dead units at utility 0, in an unspecified order)."""
  if np.array_equal(mask, ref):
    return True, False
  k = int(ref.sum())
  if int(mask.sum()) != k or k == 0 or ((mask | ref) & ~mature).any():
    return False, False
  vk = np.sort(rank[mature])[k - 1]
  below, equal = mature & (rank < vk), mature & (rank == vk)
  ok = all(not (below & ~m).any() and not (m & ~(below | equal)).any() for m in (mask, ref))
  return ok, ok


def assert_close(actual, expected, what, rtol=RTOL, atol=ATOL, where=None):
  """allclose where given."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  if where is not None:
    actual, expected = actual[where], expected[where]
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def unit_mask(kernel_shape, mask, axis):
  """`mask` over a layer's units broadcast to a kernel: axis 'out' (the kernel's last axis: the units
  it makes) or 'in' (the units it reads, as `ddl.learners.cbp` lays a consumer: (taps or positions,
  units, outputs))."""
  if axis == 'out':
    return np.broadcast_to(mask, kernel_shape)
  rows = np.broadcast_to(mask[None, :, None], (int(np.prod(kernel_shape[:-1])) // mask.size, mask.size,
                                               kernel_shape[-1]))
  return rows.reshape(kernel_shape)


def compare_step(unit_layers, params, expected, ours, refs, bounds, msg, extra=None, rtol=RTOL, atol=ATOL):
  """Checks one step's parameters (ours, after SGD and the reset) against the recorded ones
  (`expected`, both in our layout) with the replaced units `ours` / `refs` (per features name):
  fresh input weights lie in +-bound (per features name) and are not compared; a replaced unit's
  bias is 0 and its outgoing weights are 0 (except where the reading unit is itself fresh); where
  the two picks differ (ties) nothing of those units is compared; everything else is equal to
  float tolerance. `extra`: (path, features, value) entries set for replaced units (norm layers)."""
  flat, want = traverse_util.flatten_dict(params), traverse_util.flatten_dict(expected)
  assert set(flat) == set(want), (sorted(flat), sorted(want))
  skip = {path: np.zeros(np.shape(v), bool) for path, v in want.items()}
  for layer in unit_layers:
    mine, ref = ours[layer.features], refs[layer.features]
    shape = np.shape(want[layer.kernel])
    kernel, ref_kernel = np.asarray(flat[layer.kernel]), want[layer.kernel]
    fresh, ref_fresh = unit_mask(shape, mine, 'out'), unit_mask(shape, ref, 'out')
    bound = np.float32(bounds[layer.features])
    assert np.all(np.abs(kernel[fresh]) <= bound), msg + ' %s: fresh weights out of bound' % layer.features
    assert np.all(np.abs(ref_kernel[ref_fresh]) <= bound), msg + ' trace fresh weights out of bound'
    skip[layer.kernel] |= fresh | ref_fresh
    if layer.bias is not None:
      assert np.all(np.asarray(flat[layer.bias])[mine] == 0), msg + ' %s: bias of replaced units' % layer.features
      assert np.all(want[layer.bias][ref] == 0)
      skip[layer.bias] |= mine ^ ref
    for consumer in layer.consumers:
      cshape = np.shape(want[consumer])
      consumer_fresh = next((unit_mask(cshape, ours[l.features], 'out') for l in unit_layers if l.kernel == consumer),
                            np.zeros(cshape, bool))
      rows = unit_mask(cshape, mine, 'in')
      assert np.all(np.asarray(flat[consumer])[rows & ~consumer_fresh] == 0), (
          msg + ' %s: outgoing weights of replaced units' % layer.features)
      skip[consumer] |= unit_mask(cshape, mine ^ ref, 'in')
  for path, features, value in extra or ():
    if path in flat:
      assert np.all(np.asarray(flat[path])[ours[features]] == value), msg + ' %s reset' % '/'.join(path)
      skip[path] |= ours[features] ^ refs[features]
  for path in sorted(want):
    assert_close(flat[path], want[path], msg + ' ' + '/'.join(path), rtol, atol, where=~skip[path])
