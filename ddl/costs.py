"""Where a compiled program's work goes: flops and memory traffic by kind of instruction
(convolution, matmul, other), read from XLA's optimized HLO (`compiled.as_text()`).

XLA's own cost analysis gives totals only. Here every instruction counts once per execution: the
bodies of loops with a known trip count (XLA annotates `lax.scan`'s and `fori_loop`'s) times that
count (a loop whose count XLA does not know, e.g. of data-dependent length, counts once and is
reported in `unknown_trip_loops`). Flops: a dot 2 x output elements x contracted size; a
convolution 2 x output elements x kernel elements per output feature (also for library calls:
cuBLAS, cuDNN, oneDNN, recognised by target name, whose scratch workspace output is not counted as
output elements; a grouped or batch-grouped convolution is counted
as an ungrouped one of the same kernel); any other computing instruction one flop per output
element (a reduction: per input element). Bytes: operands plus output of each instruction outside
fusions, a fusion counted as what it contains (one holding a convolution is convolution traffic).
These are instruction counts, not timings: a proxy for where a step's time goes (on CPU XLA's
convolutions run far below its matmuls' rate per flop). Convolutions computed as patches times a
matrix (`network.conv='patches'`) are matmuls here.
"""
import re
from typing import Dict, List, Tuple

KINDS = ('conv', 'dot', 'other')
_BYTES = {'pred': 1, 's4': 1, 'u4': 1, 's8': 1, 'u8': 1, 'f8e4m3fn': 1, 'f8e5m2': 1, 's16': 2, 'u16': 2,
          'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
# instructions that move no data of their own (control flow, tuples, views) or only name their inputs
_FREE = {'parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast', 'while', 'call', 'conditional',
         'after-all', 'partition-id', 'replica-id', 'iota', 'opt-barrier', 'add-dependency'}
# instructions that compute nothing (data movement only): no flops
_MOVES = _FREE | {'broadcast', 'reshape', 'transpose', 'copy', 'slice', 'dynamic-slice', 'dynamic-update-slice',
                  'concatenate', 'pad', 'reverse', 'gather', 'scatter', 'fusion', 'custom-call', 'convert',
                  'copy-start', 'copy-done', 'bitcast-convert', 'rng-bit-generator', 'rng-get-and-update-state',
                  'all-gather', 'all-to-all', 'collective-permute', 'send', 'recv', 'infeed', 'outfeed'}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$')
_ARRAY = re.compile(r'\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]')


def _arrays(type_text: str) -> List[Tuple[str, List[int]]]:
  return [(d, [int(n) for n in dims.split(',') if n]) for d, dims in _ARRAY.findall(type_text) if d in _BYTES]


def _elements(type_text: str) -> int:
  return sum(_prod(dims) for _, dims in _arrays(type_text))


def _nbytes(type_text: str) -> int:
  return sum(_prod(dims) * _BYTES[d] for d, dims in _arrays(type_text))


def _prod(values) -> int:
  result = 1
  for v in values:
    result *= v
  return result


def _split_operands(rest: str) -> Tuple[str, str]:
  """The operand list of an instruction's text after its opening parenthesis, and the attributes."""
  depth = 1
  for i, ch in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(ch, 0)
    if depth == 0:
      return rest[:i], rest[i + 1:]
  return rest, ''


def _parse(text: str):
  """[(computation name, is entry, [instruction dicts])] in the text's order."""
  computations, current = [], None
  for line in text.splitlines():
    header = re.match(r'^(ENTRY\s+)?%([\w.\-]+) .*\{\s*$', line)
    if header and not line.startswith(' '):
      current = (header.group(2), bool(header.group(1)), [])
      computations.append(current)
      continue
    match = _INSTRUCTION.match(line) if current is not None else None
    if match:
      name, type_text, opcode, rest = match.groups()
      operands, attributes = _split_operands(rest)
      current[2].append(dict(name=name, type=type_text, opcode=opcode, attributes=attributes,
                             operands=re.findall(r'%([\w.\-]+)', operands)))
  return computations


def _callees(instruction) -> List[Tuple[str, int, bool]]:
  """(computation, executions per execution of the instruction, fused) of what an instruction runs;
  reductions' scalar combiners are left out (their work is counted on the reduction)."""
  a, opcode = instruction['attributes'], instruction['opcode']
  if opcode == 'while':
    trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', a)
    return [(re.search(r'body=%([\w.\-]+)', a).group(1), int(trips.group(1)) if trips else 1, False)]
  if opcode == 'fusion':
    return [(re.search(r'calls=%([\w.\-]+)', a).group(1), 1, True)]
  if opcode in ('call', 'async-start'):
    return [(n, 1, False) for n in re.findall(r'(?:to_apply|calls)=%([\w.\-]+)', a)]
  if opcode == 'conditional':
    return [(n, 1, False) for n in re.findall(r'%([\w.\-]+)', ' '.join(
        re.findall(r'(?:branch_computations=\{[^}]*\}|true_computation=%[\w.\-]+|false_computation=%[\w.\-]+)', a)))]
  return []


def _kind(instruction) -> str:
  opcode = instruction['opcode']
  if opcode == 'convolution':
    return 'conv'
  if opcode == 'dot':
    return 'dot'
  if opcode == 'custom-call':
    target = (re.search(r'custom_call_target="([^"]*)"', instruction['attributes']) or [None, ''])[1].lower()
    if 'conv' in target:
      return 'conv'
    if any(k in target for k in ('gemm', 'matmul', 'dot')):
      return 'dot'
  return 'other'


def _flops(instruction, types: Dict[str, str]) -> int:
  kind, out = _kind(instruction), _elements(instruction['type'])
  if kind != 'other':   # a library call returns (result, scratch workspace): only the result counts
    out = _prod(_arrays(instruction['type'])[0][1]) if _arrays(instruction['type']) else 0
  operand = lambda i: _arrays(types.get(instruction['operands'][i], ''))[0][1] if len(instruction['operands']) > i \
      and _arrays(types.get(instruction['operands'][i], '')) else []
  a = instruction['attributes']
  if kind == 'dot':
    found = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', a)
    if found is None:   # a library call: its backend config names the dimensions
      found = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', a)
    dims = [int(d) for d in re.findall(r'\d+', found.group(1))] if found else []
    lhs = operand(0)
    return 2 * out * _prod(lhs[d] for d in dims if d < len(lhs))
  if kind == 'conv':
    labels = re.search(r'dim_labels=\w+_(\w+)->', a)
    kernel = operand(1)
    if not labels or not kernel:
      return 2 * out
    return 2 * out * _prod(kernel) // max(1, kernel[labels.group(1).index('o')])
  if instruction['opcode'] in _MOVES:
    return 0
  if instruction['opcode'] in ('reduce', 'reduce-window', 'all-reduce', 'reduce-scatter'):
    return _elements(types.get(instruction['operands'][0], '')) if instruction['operands'] else out
  return out


def breakdown(hlo_text: str) -> Dict[str, Dict[str, float]]:
  """{'flops': {kind: n}, 'bytes': {kind: n}, 'flop_share': {kind: x}, 'byte_share': {kind: x},
  'unknown_trip_loops': n} of an optimized HLO module's text (`compiled.as_text()`), kinds `KINDS`;
  shares sum to 1."""
  computations = _parse(hlo_text)
  by_name = {name: instructions for name, _, instructions in computations}
  runs = {name: (1 if entry else 0) for name, entry, _ in computations}
  fused = set()
  for name, _, instructions in reversed(computations):   # callers come after their callees in the text
    for instruction in instructions:
      for callee, times, is_fused in _callees(instruction):
        runs[callee] = runs.get(callee, 0) + runs[name] * times
        if is_fused:
          fused.add(callee)

  def contains(name: str) -> str:
    kinds = {_kind(i) for i in by_name.get(name, [])}
    kinds |= {contains(c) for i in by_name.get(name, []) for c, _, f in _callees(i) if f}
    return next((k for k in KINDS if k in kinds), 'other')

  flops, traffic = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
  for name, _, instructions in computations:
    types = {i['name']: i['type'] for i in instructions}
    for instruction in instructions:
      flops[_kind(instruction)] += runs[name] * _flops(instruction, types)
      if name in fused or instruction['opcode'] in _FREE:
        continue
      kind = contains(_callees(instruction)[0][0]) if instruction['opcode'] == 'fusion' else _kind(instruction)
      moved = _nbytes(instruction['type']) + sum(_nbytes(types.get(o, '')) for o in instruction['operands'])
      traffic[kind] += runs[name] * moved
  share = lambda d: {k: (v / sum(d.values()) if sum(d.values()) else 0.0) for k, v in d.items()}
  unknown = sum(1 for name, _, instructions in computations if runs[name] for i in instructions
                if i['opcode'] == 'while' and '"known_trip_count"' not in i['attributes'])
  return {'flops': flops, 'bytes': traffic, 'flop_share': share(flops), 'byte_share': share(traffic),
          'unknown_trip_loops': unknown}

