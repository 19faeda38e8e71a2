"""Every `python launch/...` command in README.md and docs/*.md parses: its flags are ones the script
defines (absl), its `--config=configs/X.py[:args]` names a config file whose `get_config(args)`
succeeds, and each `--config.a.b=v` (or launch/benchmark.py's `--override=a.b=v`) names an
existing config key. Nothing is run: the flags are parsed in this process, as the scripts do.

Placeholders a command uses on purpose (`W`, `WORKDIR`, `DIR`, `<...>`, `$VAR`, `...`, optional
`[--flag]`) are accepted as values: the flag is still checked, its value is not."""
import copy
import glob
import importlib.util
import os
import re
import shlex
import sys
from typing import List, Optional, Tuple

import pytest
from absl import flags

from conftest import ROOT, load_config

DOCS = ['README.md', *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs', '*.md')))]
SCRIPTS = ('main', 'plot', 'benchmark')


def _load(script: str):
  name = f'launch_{script}'   # the name tests/test_bad_inputs.py imports launch/main.py under
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'launch', f'{script}.py'))
  module = importlib.util.module_from_spec(spec)
  sys.modules.setdefault(name, module)   # absl files the flags it defines under this name
  spec.loader.exec_module(module)
  return module


MODULES = {}


def _module(script: str):
  if script not in MODULES:
    MODULES[script] = _load(script)
  return MODULES[script]


# --- Extraction ---------------------------------------------------------------------------------

FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', re.M | re.S)
INLINE = re.compile(r'`([^`]+)`')


def commands_in(text: str) -> List[str]:
  """The `python launch/...` commands of a markdown text: in fenced code blocks (backslash
  continuations joined, `# comments` dropped) and in inline code spans (which may wrap lines)."""
  found = []
  for block in FENCE.findall(text):
    for line in block.replace('\\\n', ' ').splitlines():
      for part in line.split(' #', 1)[0].split('&&'):   # e.g. `pip install -e . && python launch/main.py`
        if part.strip().startswith('python launch/'):
          found.append(' '.join(part.split()))
  for span in INLINE.findall(FENCE.sub('', text)):
    span = ' '.join(span.split())
    if span.startswith('python launch/'):
      found.append(span)
  return found


def all_commands() -> List[Tuple[str, str]]:
  out = []
  for doc in DOCS:
    with open(os.path.join(ROOT, doc), encoding='utf-8') as f:
      out.extend((doc, c) for c in commands_in(f.read()))
  return out


# --- Checking -----------------------------------------------------------------------------------

def is_placeholder(value: str) -> bool:
  return (re.fullmatch(r'[A-Z][A-Z0-9_]*', value) is not None or value.startswith(('$', '<')) or
          '...' in value)


def _tokens(command: str) -> Tuple[str, List[str]]:
  words = shlex.split(command)
  assert words[0] == 'python' and words[1].startswith('launch/'), command
  script = words[1][len('launch/'):]
  assert script.endswith('.py') and script[:-3] in SCRIPTS, f'no such launch script: launch/{script}'
  args = []
  for w in words[2:]:
    if w == '...':
      continue
    if w.startswith('[') and w.endswith(']'):   # an optional flag, e.g. [--choices=gpu]
      w = w[1:-1]
    args.append(w)
  return script[:-3], args


def _has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split('.'):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return False
  return True


def _check_main(args: List[str]) -> None:
  main = _module('main')
  kept, placeholders = [], []
  for a in args:
    name, eq, value = a.partition('=')
    if name.startswith('--config.') and eq and is_placeholder(value):
      placeholders.append(name[len('--config.'):])   # its key is checked below, not its value
    elif name == '--workdir' and eq and is_placeholder(value):
      kept.append('--workdir=/nonexistent/placeholder')
    else:
      kept.append(a)
  for a in kept:
    if a.startswith('--config='):
      path = a[len('--config='):].split(':', 1)[0]
      assert os.path.isfile(os.path.join(ROOT, path)), f'no such config file: {path}'
  argv = ['launch/main.py', *kept]
  flag_values = flags.FlagValues()
  main.define_flags(flag_values, argv)
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    rest = main.parse(argv, flag_values)   # loads the config file (get_config) and applies overrides
  except main.config_lib.ConfigError as e:
    raise AssertionError(str(e)) from None
  finally:
    os.chdir(cwd)
  assert rest == ['launch/main.py'], f'arguments launch/main.py does not take: {rest[1:]}'
  for key in placeholders:
    assert _has_key(flag_values.config, key), f'unknown config key {key!r}'


def _script_flags(script: str) -> flags.FlagValues:
  """The flags launch/<script>.py defines, copied onto flags of their own (the global FLAGS stay
  untouched)."""
  module = _module(script)
  own = flags.FLAGS.flags_by_module_dict().get(module.__name__, [])
  assert own, f'launch/{script}.py defines no flags'
  flag_values = flags.FlagValues()
  for flag in own:
    flag_values[flag.name] = copy.deepcopy(flag)
  return flag_values


def _check_script(script: str, args: List[str]) -> None:
  flag_values = _script_flags(script)
  kept = []
  for a in args:
    name, eq, value = a.partition('=')
    if name.startswith('--') and not (eq and is_placeholder(value)):
      kept.append(a)
    elif name.startswith('--'):   # a placeholder value: the flag must still exist
      bare = name[2:]
      assert bare in flag_values, f'launch/{script}.py has no flag --{bare}'
    else:
      kept.append(a)
  try:
    rest = flag_values(['launch/' + script + '.py', *kept])
  except flags.Error as e:
    raise AssertionError(f'launch/{script}.py: {e}') from None
  if script == 'benchmark':
    assert rest == ['launch/benchmark.py'], f'arguments launch/benchmark.py does not take: {rest[1:]}'
    workload = None if any(a.startswith('--workload=') and a not in kept for a in args) else flag_values.workload
    if flag_values.override and workload is not None:
      name, _ = _module('benchmark').WORKLOADS[workload]
      config = load_config(name, flag_values.config_arg)
      for item in flag_values.override:
        key = item.split('=', 1)[0]
        assert _has_key(config, key), f'--override={item}: unknown config key {key!r} of configs/{name}.py'


def check(command: str) -> None:
  """Raises AssertionError naming what does not parse in `command`."""
  script, args = _tokens(command)
  if script == 'main':
    _check_main(args)
  else:
    _check_script(script, args)


# --- Tests --------------------------------------------------------------------------------------

COMMANDS = all_commands()


def test_docs_have_commands():
  docs = {doc for doc, _ in COMMANDS}
  assert 'README.md' in docs and len(COMMANDS) >= 20, COMMANDS
  scripts = {_tokens(c)[0] for _, c in COMMANDS}
  assert scripts == set(SCRIPTS), scripts


@pytest.mark.parametrize('doc,command', COMMANDS, ids=[f'{d}:{c[:60]}' for d, c in COMMANDS])
def test_command_parses(doc, command):
  try:
    check(command)
  except AssertionError as e:
    pytest.fail(f'{doc}: `{command}` does not parse: {e}')


def test_extraction():
  text = ('a `python launch/main.py\n--config=configs/ant.py` b `pip install`\n'
          '```bash\npython launch/plot.py A B \\\n    --together  # comment\nls\npip install -e . && python launch/main.py\n```\n')
  assert commands_in(text) == ['python launch/plot.py A B --together', 'python launch/main.py',
                               'python launch/main.py --config=configs/ant.py']


@pytest.mark.parametrize('command,says', [
    ('python launch/main.py --config=configs/slowly_changing_regresion.py', 'no such config file'),
    ('python launch/main.py --config=configs/slowly_changing_regression.py:smok', 'smok'),
    ('python launch/main.py --config=configs/slowly_changing_regression.py --config.num_sedes=3', 'num_sedes'),
    ('python launch/main.py --config=configs/permuted_digits.py --config.hparams.learnin_rate=0.1', 'learnin_rate'),
    ('python launch/main.py --config=configs/ant.py --config.env.friction.fil=F', 'env.friction.fil'),
    ('python launch/main.py --wrkdir=/tmp/x', 'wrkdir'),
    ('python launch/main.py --nofrsh', 'nofrsh'),
    ('python launch/plot.py A B --togther', 'togther'),
    ('python launch/plot.py A --out=DIR --outt=DIR', 'outt'),
    ('python launch/benchmark.py --workload=scrr', 'scrr'),
    ('python launch/benchmark.py --workload=scr --seed=3', 'seed'),
    ('python launch/benchmark.py --workload=ant --override=ppo.rollout_stepz=256', 'ppo.rollout_stepz'),
    ('python launch/other.py', 'no such launch script'),
])
def test_checker_rejects_bad_commands(command, says):
  with pytest.raises(AssertionError, match=re.escape(says)):
    check(command)


@pytest.mark.parametrize('command', [
    'python launch/main.py --nofresh --workdir=WORKDIR',
    'python launch/main.py --config=configs/ant.py --config.env.friction.file=F',
    'python launch/plot.py A B --notogether',
    'python launch/benchmark.py --workload=W --seeds=1 --memory [--choices=gpu]',
])
def test_checker_accepts_placeholders_and_negated_booleans(command):
  check(command)


def _anchors(path: str) -> set:
  """GitHub's anchors of a markdown file's headings."""
  with open(path, encoding='utf-8') as f:
    text = FENCE.sub('', f.read())
  return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-') for h in re.findall(r'^#+ (.*)$', text, re.M)}


def test_local_links_resolve():
  """Every relative link of README.md and docs/*.md (figures, pages, #anchors) points at something."""
  bad = []
  for doc in DOCS:
    with open(os.path.join(ROOT, doc), encoding='utf-8') as f:
      text = FENCE.sub('', f.read())
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
      if re.match(r'[a-z]+:', target):
        continue
      path, _, anchor = target.partition('#')
      full = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path)) if path else os.path.join(ROOT, doc)
      if not os.path.exists(full) or (anchor and full.endswith('.md') and anchor not in _anchors(full)):
        bad.append(f'{doc}: {target}')
  assert not bad, bad


def test_benchmark_config_error_is_one_line_and_exit_2():
  """launch/benchmark.py refuses a bad config as main.py does: one `error:` line on stderr, exit status 2."""
  import subprocess  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, os.path.join('launch', 'benchmark.py'), '--workload=scr', '--seeds=1',
                         '--override=num_examples=0'], capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, 'PYTHONPATH': ROOT}, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and 'num_examples' in errors[0], proc.stderr[-2000:]
