"""Throughput, memory and where the work goes, per compiled chunk: one JSON line per program (group
of variants) and one for all of them together.

  python launch/benchmark.py --workload=scr --seeds=30 [--variant=cbp] [--chunks=3]
  python launch/benchmark.py --workload=cifar100 --seeds=1 --memory [--choices=gpu]
  python launch/benchmark.py --read_metrics_rows=10000000   # reading metrics.csv for figures instead

Fields: workload, variant (a group of variants: one program), seeds, runs (variants x seeds),
runs_per_call (runs in one call, padded to the devices: vmapped on each device, or one per device
with `cpu_devices`; the group's slices run one after another, as in the run loop), examples_per_sec
(all runs together, steady state, after one untimed chunk), step_cost_vs_bp (with --interventions:
seconds per run and chunk relative to plain backprop's), compile_sec (compilation of init, chunk
and evaluator + the untimed chunk), device_mb (memory one call needs by XLA's accounting:
arguments, outputs, temporaries; the whole state when runs_per_call is all runs), state_mb (the
group's states, all calls, per device), peak_rss_mb (of this process so far), flop_share and
byte_share (the chunk's flops and memory traffic in convolutions, matmuls and the rest, from its
optimized HLO: `ddl.costs`), gflop_per_example and unknown_trip_loops (loops of data-dependent
length, counted once in those figures), backend; for an experiment with an evaluator
(`evaluate`, run every `diagnostics_every` chunks): evaluate_sec (one evaluator call over all runs,
after an untimed warm-up call) and evaluate_share (the evaluator's cost per chunk, amortised over
`diagnostics_every` chunks, over the chunk's time plus that: the goal is at most 0.05); null
without one. With --read_metrics_rows=N: one line with rows, file_mb, write_sec and read_sec of
`ddl.plotting.read_metrics` on a synthetic metrics.csv of N rows (5 variants x 30 seeds x 10
metrics x N/1500 steps) in a temporary folder.

--memory compiles without running: per group, the states and the largest call's own memory
(`ddl.memory`) at --seeds and twice that, and their projection to --project_seeds (default 30)
seeds, linear in the runs (states exactly; a call's memory as a + b x runs through the two
measured sizes); the `all` line adds up what a launch of all variants needs per device (all states,
the largest call and the data). Settings left AUTO take this platform's choices
(`ddl.platform_defaults`), or those of --choices=gpu (then `cpu_devices` is off: it is CPU only),
which projects a GPU's memory from this machine's XLA analysis (the GPU compiler's may differ).
"""
import ast
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ddl import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import devices as devices_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import costs  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import experiments  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import memory  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import plotting  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import platform_defaults  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import programs as programs_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ddl import writers  # pylint: disable=g-import-not-at-top,wrong-import-position

# workload: (config file, overrides that keep the network and batch but make chunks short and the
# data synthetic, so that the measurement needs no data set and ends in minutes)
WORKLOADS = {
    'scr': ('slowly_changing_regression', {}),
    'imagenet': ('imagenet', {'data.source': 'mock', 'data.num_classes': 10, 'epochs': 5}),
    'permuted_mnist': ('permuted_mnist', {'data.source': 'mock', 'data.mock_examples': 60_000,
                                          'examples_per_task': 2_000}),
    'permuted_digits': ('permuted_digits', {}),
    'random_labels': ('random_label_digits', {}),
    # PPO on Ant: full networks, 2048-step rollouts, 10 x 16 minibatches; a chunk = 2 PPO updates
    # (4096 environment steps per seed); examples = environment steps including learning.
    'ant': ('ant', {'updates_per_chunk': 2}),
    # stream AC on Ant: one env per seed, one ObGD step per env step; a chunk = 2000 steps per seed.
    # --env_alone adds a line: the env alone, as many copies as seeds, random actions (same refills).
    'stream_ant': ('stream_ant', {'steps_per_chunk': 2_000}),
    # one increment of 5 classes: a chunk is an epoch of the first increment (25 steps of 90, then
    # test and validation of 750 images); later increments scale the steps by the increment number
    'cifar100': ('cifar100', {'data.source': 'mock', 'data.num_classes': 5}),
    # off-policy at replay ratio 1 (one update per step from the first chunk on: a short warm-up);
    # examples = environment (agent) steps including learning. --env_alone: the env alone, random actions.
    'dmc': ('dmc_plasticity', {'steps_per_chunk': 1_000, 'replay.warmup': 256, 'drqv2.exploration_steps': 256,
                               'variants': {'rr_1': {'replay_ratio': 1.0}}}),
    'minatar': ('minatar_replay_ratio', {'steps_per_chunk': 1_000, 'replay.warmup': 512,
                                         'variants': {'rr_1': {'replay_ratio': 1.0}}}),
    # DrQ(ε) on Atari (Pong, the `atari` preset: Dopamine's network, random shift and intensity) at replay ratio 1
    'atari': ('minatar_replay_ratio:atari', {'steps_per_chunk': 1_000, 'replay.warmup': 512, 'dqn.eval_episodes': 0,
                                            'variants': {'rr_1': {'replay_ratio': 1.0, 'augment': 1.0}}}),
}

flags.DEFINE_enum('workload', 'scr', sorted(WORKLOADS), 'Experiment to measure.')
flags.DEFINE_integer('seeds', 30, 'Seeds per variant (vmapped).')
flags.DEFINE_string('variant', '', 'Comma-separated variants (default: all of the config).')
flags.DEFINE_integer('chunks', 3, 'Timed chunks per program.')
flags.DEFINE_string('config_arg', '', 'Extra config argument, e.g. a preset such as smoke.')
flags.DEFINE_bool('fuse_variants', None, 'One program for all variants of a structure (default: the platform\'s '
                  'choice, ddl.platform_defaults).')
flags.DEFINE_string('choices', '', "Platform whose choices fill the settings left AUTO (ddl.platform_defaults): "
                    "'' this one; e.g. 'gpu' to project a GPU's memory with --memory.")
flags.DEFINE_bool('memory', False, 'Compile only: the memory of each group at --seeds and twice that, and its '
                  'projection to --project_seeds seeds.')
flags.DEFINE_integer('project_seeds', 30, 'Seeds per variant of the --memory projection.')
flags.DEFINE_multi_string('override', [], 'Config override key=value (Python literal), e.g. network.conv=lax.')
flags.DEFINE_bool('env_alone', False, 'ant, stream_ant, dmc, minatar, atari: also time the env alone at --seeds copies '
                  '(random actions, resets as the experiment) and report env_steps_per_sec and learning/env-alone ratio.')
flags.DEFINE_bool('host_rollout', False, 'ant on env.backend=mujoco: instead of learning, time PPO\'s acting (one rollout '
                  'of the policy on MuJoCo C) as the experiment runs it, compiled with the host step as a callback, '
                  'against the rollout loop on the host with the policy jitted, alternately --chunks times.')
flags.DEFINE_enum('peer', '', ['', 'brax_ppo'], "Instead of the workload's variants: 'brax_ppo' (--workload=ant): ddl's "
                  "PPO on Brax's Ant against Brax's own ppo.train with the same work per update, alternately.")
flags.DEFINE_bool('interventions', False, 'Replace the variants by one per intervention and learner of the toolkit '
                  '(and plain backprop) and report each one\'s step cost relative to plain backprop (SGD).')
flags.DEFINE_integer('read_metrics_rows', 0, 'Instead of a workload: seconds to read a synthetic metrics.csv of this '
                     'many rows with ddl.plotting.read_metrics (the figures\' and notebooks\' reader).')

def intervention_variants():
  """For --interventions: plain backprop ('bp') and one variant per example of every registered
  method (`Method.examples`), each a program of its own; coupled L2 is left out: it is a traced point
  of plain backprop's program (the same cost), and so is the default optimizer."""
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl.learners import method as method_lib  # pylint: disable=g-import-not-at-top
  from ddl.learners import registry  # pylint: disable=g-import-not-at-top
  out = {'bp': {}}
  for method in registry.all_methods():
    if method.active is not method_lib.always and method.name != config_lib.DEFAULT_OPTIMIZER:
      out.update(method.variants())
  return out


def applicable(config):
  """The config with only the variants whose methods apply to its experiment (a method that does
  not, e.g. an optimizer that needs a TD error on a supervised task, is left out with a log line)."""
  import copy  # pylint: disable=g-import-not-at-top
  from ddl import config as config_lib  # pylint: disable=g-import-not-at-top
  from ddl import experiments  # pylint: disable=g-import-not-at-top
  from ddl import platform_defaults  # pylint: disable=g-import-not-at-top
  keep = {}
  for name, variant in config.variants.items():
    one = copy.deepcopy(config)
    one.variants = {name: variant.to_dict()}
    try:
      config_lib.validate(platform_defaults.resolve(one), experiments.get(one.experiment))
    except config_lib.ConfigError as e:
      logging.info('--interventions: %s left out: %s', name, e)
      continue
    keep[name] = variant.to_dict()
  config.variants = keep
  return config


def _set(config, key, value):
  *parents, leaf = key.split('.')
  for parent in parents:
    config = config[parent]
  config[leaf] = value


def _config():
  import importlib.util  # pylint: disable=g-import-not-at-top
  name, overrides = WORKLOADS[flags.FLAGS.workload]
  name, _, preset = name.partition(':')       # 'file:preset': the workload's preset of the config file
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  variant = '' if flags.FLAGS.interventions else flags.FLAGS.variant
  config = module.get_config(','.join(filter(None, [preset, flags.FLAGS.config_arg, variant])))
  if flags.FLAGS.interventions:
    config.variants = {k: v for k, v in intervention_variants().items()
                       if not flags.FLAGS.variant or k in flags.FLAGS.variant.split(',')}
  config.num_seeds = flags.FLAGS.seeds
  if flags.FLAGS.fuse_variants is not None:
    config.fuse_variants = flags.FLAGS.fuse_variants
  if flags.FLAGS.choices not in ('', 'cpu'):
    config.cpu_devices = 0     # CPU only: not on the platform whose choices are projected
  for key, value in overrides.items():
    _set(config, key, value)
  for item in flags.FLAGS.override:
    key, value = item.split('=', 1)
    _set(config, key, ast.literal_eval(value) if value[:1] in '0123456789-.[(\'"TF' else value)
  for name in config.variants:   # time every variant on the same number of chunks
    if 'num_tasks' in config.variants[name]:
      with config.variants[name].unlocked():
        del config.variants[name]['num_tasks']
  return applicable(config) if flags.FLAGS.interventions else config


def _line(config, variant, runs, per_call, examples, seconds, compile_sec, device_mb, evaluate_sec, evaluate_share,
          **extra):
  import jax  # pylint: disable=g-import-not-at-top
  rounded = lambda x, digits: None if x is None else round(x, digits)
  return json.dumps(dict(
      workload=flags.FLAGS.workload, variant=variant, seeds=config.num_seeds, runs=runs, runs_per_call=per_call,
      examples_per_sec=round(examples / seconds, 1), compile_sec=round(compile_sec, 2),
      device_mb=round(device_mb, 1), peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      evaluate_sec=rounded(evaluate_sec, 4), evaluate_share=rounded(evaluate_share, 4), **extra,
      backend=jax.default_backend()))


def _evaluate_sec(programs, states, data):
  """Seconds of one evaluator call over all slices of a group (run one after another, as in the run
  loop), after an untimed warm-up call (which compiles it); None without an evaluator."""
  import jax  # pylint: disable=g-import-not-at-top
  if programs[0].evaluate is None:
    return None
  jax.block_until_ready([p.evaluate(s[0], data) for p, s in zip(programs, states)])
  began = time.time()
  jax.block_until_ready([p.evaluate(s[0], data) for p, s in zip(programs, states)])
  return time.time() - began


def _device_mb(compiled) -> float:
  """Device memory one call needs by XLA's own accounting: arguments, outputs and temporaries."""
  figures = memory.analysis(compiled)
  return float('nan') if figures is None else (figures['argument'] + memory.call_bytes(figures)) / 2**20


def _work(compiled, examples: int):
  """flop_share, byte_share (ddl.costs) and GFLOP per example of a compiled chunk."""
  b = costs.breakdown(compiled.as_text())
  shares = {k: {kind: round(v, 3) for kind, v in b[k].items()} for k in ('flop_share', 'byte_share')}
  return dict(**shares, gflop_per_example=round(sum(b['flops'].values()) / examples / 1e9, 4),
              unknown_trip_loops=b['unknown_trip_loops'])


def _groups(programs):
  """{group name: its programs (slices run one after another, as in the run loop)}."""
  groups = {}
  for program in programs:
    groups.setdefault(program.group.name, []).append(program)
  return groups


def _memory_report(config, devices, data):
  """--memory: per group, the states and the largest call's memory at --seeds and twice that, and the
  projection to --project_seeds seeds; then what a launch of all groups needs per device."""
  mb, gb = lambda b: round(b / 2**20, 1), lambda b: round(b / 2**30, 2)
  sizes = (flags.FLAGS.seeds, 2 * flags.FLAGS.seeds)
  measured = {}   # group: its Footprint at each size
  for seeds in sizes:
    config.num_seeds = seeds
    for name, programs in _groups(programs_lib.build(config, devices)).items():
      measured.setdefault(name, []).append(memory.compile_programs(programs, data, devices)[1])
  target = flags.FLAGS.project_seeds
  state_total, calls = 0.0, []   # calls: (projected largest call, one run's call) per group
  for name, (small, large) in measured.items():
    grows = large.runs_per_device > small.runs_per_device   # not with cpu_devices: one run per device per call
    slope = (large.call - small.call) / (large.runs_per_device - small.runs_per_device) if grows else 0.0
    runs_target = small.runs_per_device / sizes[0] * target if grows else small.runs_per_device
    state = small.state / sizes[0] * target
    call = small.call + slope * (runs_target - small.runs_per_device)
    state_total += state
    calls.append((call, small.call - slope * (small.runs_per_device - 1)))
    print(json.dumps(dict(
        workload=flags.FLAGS.workload, variant=name, choices=flags.FLAGS.choices or 'this platform',
        conv=config.get('network', {}).get('conv'),
        measured=[dict(seeds=s, runs_per_device=fp.runs_per_device, state_mb=mb(fp.state), call_mb=mb(fp.call))
                  for s, fp in zip(sizes, (small, large))],
        projected=dict(seeds=target, runs_per_device=round(runs_target), state_mb=mb(state), call_mb=mb(call)),
        data_mb=mb(small.data), backend=_backend())), flush=True)
  data_bytes = next(iter(measured.values()))[0].data
  print(json.dumps(dict(
      workload=flags.FLAGS.workload, variant='all', projected_seeds=target,
      states_gb=gb(state_total), largest_call_gb=gb(max(c for c, _ in calls)), data_gb=gb(data_bytes),
      need_gb=gb(state_total + max(c for c, _ in calls) + data_bytes),
      need_one_run_per_call_gb=gb(state_total + max(c for _, c in calls) + data_bytes),
      backend=_backend())), flush=True)


def _backend() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.default_backend()


def _read_metrics_line(rows: int) -> str:
  """Writes a metrics.csv of `rows` rows (5 variants x 30 seeds x 10 metrics per step) to a temporary
  folder and times `read_metrics` on it."""
  variants, seeds, metrics = [f'v{i}' for i in range(5)], range(30), [f'metric{i}' for i in range(10)]
  per_step = len(variants) * len(seeds) * len(metrics)
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, 'metrics.csv')
    began = time.time()
    with open(path, 'w') as f:
      f.write(writers.METRICS_HEADER)
      for step in range(-(-rows // per_step)):
        cells = [(v, s, m) for m in metrics for v in variants for s in seeds][:rows - step * per_step]
        f.writelines(f'{v},{s},{step * 100},{m},{x!r}\n' for (v, s, m), x in zip(cells, rng.random(len(cells)).tolist()))
    write_sec, file_mb = time.time() - began, os.path.getsize(path) / 2**20
    began = time.time()
    table = plotting.read_metrics(path, with_seeds=True)
    read_sec = time.time() - began
  assert sum(int(np.sum(~np.isnan(v))) for _, v, _ in table.values()) == rows
  return json.dumps(dict(workload='read_metrics', rows=rows, file_mb=round(file_mb, 1), write_sec=round(write_sec, 2),
                         read_sec=round(read_sec, 2), rows_per_sec=round(rows / read_sec),
                         peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)))


def _random_rollout(config):
  """(init(key) -> env state, chunk(state, key) -> state, steps): the experiment's environment alone for
  one chunk of its steps (PPO: its rollouts' steps) under uniform random actions, resets as the experiment's."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  e = config.env
  if config.experiment == 'drqv2':    # dm_control on MJX: one reset draw per run, action repeat inside a step
    from ddl.rl import dmc  # pylint: disable=g-import-not-at-top
    env = dmc.from_config(config)
    def chunk(state, key):
      def one(state, t):
        action = jax.random.uniform(jax.random.fold_in(key, t), (env.action_size,), minval=-1)
        return env.step(state, action)[0], None
      return jax.lax.scan(one, state, jnp.arange(config.steps_per_chunk))[0]
    return lambda key: env.reset(key)[0], chunk, config.steps_per_chunk
  if config.experiment == 'dqn':      # gymnax (MinAtar) or Atari: its step resets at episode ends
    from ddl.experiments import dqn as dqn_experiment  # pylint: disable=g-import-not-at-top
    env, params = dqn_experiment.make_env(e)
    def chunk(state, key):
      def one(state, t):
        action_key, step_key = jax.random.split(jax.random.fold_in(key, t))
        action = jax.random.randint(action_key, (), 0, env.num_actions)
        return env.step(step_key, state, action, params)[1], None
      return jax.lax.scan(one, state, jnp.arange(config.steps_per_chunk))[0]
    return lambda key: env.reset(key, params)[1], chunk, config.steps_per_chunk
  # the Ant (PPO, stream AC): refills every env.refill_every steps for model brax (PPO: every rollout)
  from ddl.rl import env as env_lib  # pylint: disable=g-import-not-at-top
  steps = config.get('steps_per_chunk') or config.ppo.rollout_steps * config.updates_per_chunk
  env, block = env_lib.from_config(e), e.get('refill_every') or config.get('ppo', {}).get('rollout_steps', steps)
  schedule = jnp.full((1,), e.friction.value, jnp.float32)
  def chunk(state, key):
    def one_block(state, b):
      state = env.refill(state, jax.random.fold_in(key, -1 - b), schedule)
      def one(state, t):
        action_key, reset_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, b), t))
        action = jax.random.uniform(action_key, (env.action_size,), minval=-1)
        return env.step(state, action, reset_key, b * block + t + 1, schedule)[0], None
      return jax.lax.scan(one, state, jnp.arange(block))[0], None
    return jax.lax.scan(one_block, state, jnp.arange(steps // block))[0]
  return lambda key: env.reset(key, schedule), chunk, steps


def _env_alone(config, devices, examples_per_sec):
  """The experiment's env stepped alone: `seeds` vmapped copies sharded over the learning run's devices
  (so both use the same cores), uniform random actions, resets as the experiment's (`_random_rollout`);
  a JSON line with its steps/s (all copies) and the ratio of `examples_per_sec` (the learning run's) to it."""
  import jax  # pylint: disable=g-import-not-at-top
  init, run, steps = _random_rollout(config)
  seeds = config.num_seeds
  keys = jax.device_put(jax.random.split(jax.random.PRNGKey(0), seeds), devices.runs)
  chunk = jax.jit(jax.vmap(run), out_shardings=devices.runs)
  began = time.time()
  state = jax.block_until_ready(chunk(jax.jit(jax.vmap(init), out_shardings=devices.runs)(keys), keys))
  compile_sec = time.time() - began
  began = time.time()
  for _ in range(flags.FLAGS.chunks):
    state = chunk(state, keys)
  jax.block_until_ready(state)
  rate = seeds * steps * flags.FLAGS.chunks / (time.time() - began)
  print(json.dumps(dict(workload=flags.FLAGS.workload, variant='env_alone', seeds=seeds, env_steps_per_sec=round(rate, 1),
                        learning_vs_env_alone=round(examples_per_sec / rate, 3), compile_sec=round(compile_sec, 2),
                        backend=jax.default_backend())), flush=True)


def _acting_in_program_vs_on_host(config):
  """--host_rollout: one PPO rollout of `ppo.rollout_steps` steps for `num_seeds` runs on MuJoCo C, two ways:
  as the experiment runs it (`ddl.rl.ppo.rollout` compiled, the host step a callback inside it), and with
  the loop on the host (the policy jitted and called once per step, the same `Simulator` step and next
  start, the trajectory stacked and put on the device for the update). Alternately `--chunks` times;
  a JSON line with each one's env steps/s (all runs) and their ratio."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ddl.experiments import ppo as ppo_experiment  # pylint: disable=g-import-not-at-top
  from ddl.rl import env as env_lib  # pylint: disable=g-import-not-at-top
  from ddl.rl import ppo  # pylint: disable=g-import-not-at-top
  env = env_lib.from_config(config.env)
  if env.backend != 'mujoco':
    raise app.UsageError('--host_rollout measures the Ant on MuJoCo C: add --override=env.backend=mujoco')
  network = ppo_experiment.PPO.make_network(config, env.action_size)
  seeds, steps = config.num_seeds, config.ppo.rollout_steps
  keys = jax.random.split(jax.random.PRNGKey(0), seeds)
  params = jax.vmap(lambda k: network.init(k, jnp.zeros((1, env.observation_size)))['params'])(keys)
  schedule = jnp.full((1,), config.env.friction.value, jnp.float32)
  env_state = jax.vmap(lambda k: jax.vmap(env.reset, (0, None))(k[None], schedule))(keys)
  obs = jax.vmap(jax.vmap(env.observation))(env_state)
  in_program = jax.jit(jax.vmap(lambda p, s, o, k: ppo.rollout(env, network, p, s, o, k, 0, schedule, steps)[:3]))

  sim, layout = env.env.sim, env.env.sim.layout
  act = jax.jit(jax.vmap(lambda p, o, k: network.policy_mean(p, o[None])[0] + jnp.exp(p['log_std']) * jax.random.normal(
      k, (env.action_size,))))   # one observation per run, as a batch of one
  rng = np.random.default_rng(0)
  noise = lambda: (sim.model.qpos0 + rng.uniform(-0.1, 0.1, (seeds, layout.nq)),   # gymnasium's reset noise
                   0.1 * rng.standard_normal((seeds, layout.nv)))
  host_state, host_obs = sim.reset(*noise(), np.ones(seeds))
  friction, episode_step = np.full(seeds, config.env.friction.value), np.zeros(seeds, int)

  def on_host(key):
    nonlocal host_state, host_obs, episode_step
    trajectory = []
    for t in range(steps):
      observed = host_obs.astype(np.float32)
      action = np.asarray(act(params, observed, jax.random.split(jax.random.fold_in(key, t), seeds)), np.float64)
      episode_step = episode_step + 1
      time_up = episode_step >= config.env.episode_length
      _, _, host_state, host_obs, reward, terminated = sim.step_and_start(host_state, action, friction, *noise(),
                                                                         time_up)
      episode_step = np.where(terminated | time_up, 0, episode_step)
      trajectory.append((observed, action.astype(np.float32), reward.astype(np.float32), terminated | time_up))
    return jax.device_put([np.stack(x, 1) for x in zip(*trajectory)])

  jax.block_until_ready((in_program(params, env_state, obs, keys), on_host(keys[0])))   # compile both
  seconds = {'in_program': 0.0, 'on_host': 0.0}
  for i in range(flags.FLAGS.chunks):
    began = time.time()
    env_state, obs, _ = jax.block_until_ready(in_program(params, env_state, obs, jax.vmap(jax.random.fold_in, (0, None))(keys, i)))
    seconds['in_program'] += time.time() - began
    began = time.time()
    jax.block_until_ready(on_host(jax.random.fold_in(keys[0], i)))
    seconds['on_host'] += time.time() - began
  rate = {k: seeds * steps * flags.FLAGS.chunks / v for k, v in seconds.items()}
  print(json.dumps(dict(workload=flags.FLAGS.workload, variant='acting', seeds=seeds, threads=sim.threads,
                        in_program_steps_per_sec=round(rate['in_program'], 1),
                        on_host_steps_per_sec=round(rate['on_host'], 1),
                        on_host_vs_in_program=round(rate['on_host'] / rate['in_program'], 3),
                        backend=jax.default_backend())), flush=True)


def _peer_brax_ppo(config, devices, data):
  """--peer=brax_ppo: ddl's PPO (the config's first variant, `num_seeds` agents with one Ant each, one
  update per chunk) against Brax's own `ppo.train` on the same Ant with the same work per update: one agent
  over `num_seeds` envs, each env's rollout of `ppo.rollout_steps` as `ppo.minibatches` unrolls, then
  `ppo.epochs` x `ppo.minibatches` minibatch steps of num_seeds x rollout_steps / minibatches samples (ddl:
  rollout_steps / minibatches per agent), the same ReLU MLPs and a Gaussian policy with a state-independent
  log std. One timed ddl chunk runs between every two of Brax's training epochs (from its progress_fn), so
  the two alternate in one sitting; Brax's first epoch (its compilation) and ddl's first chunk are untimed.
  One JSON line: both env steps/s (all envs, learning included) and ddl / brax."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from brax import envs  # pylint: disable=g-import-not-at-top
  from brax.training.agents.ppo import networks as ppo_networks  # pylint: disable=g-import-not-at-top
  from brax.training.agents.ppo import train as brax_ppo  # pylint: disable=g-import-not-at-top
  if config.experiment != 'ppo' or config.env.model != 'brax':
    raise app.UsageError("--peer=brax_ppo compares PPO on Brax's Ant: --workload=ant --override=env.model=brax "
                         '--override=env.backend=mjx')
  if not hasattr(jax, 'device_put_replicated'):   # Brax 0.14.2 calls it; jax 0.10 removed it (one device here)
    jax.device_put_replicated = lambda x, devices: jax.tree.map(
        lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)
  programs, _ = memory.compile_programs(next(iter(_groups(programs_lib.build(config, devices)).values()))[:1],
                                        data, devices)
  program = programs[0]
  state = jax.block_until_ready(program.run_chunk(program.init(), data)[0])
  ddl_seconds, brax_rates = [], []

  def between_epochs(step, metrics):
    nonlocal state
    brax_rates.append(float(metrics['training/sps']))
    began = time.time()
    state = jax.block_until_ready(program.run_chunk(state, data)[0])
    ddl_seconds.append(time.time() - began)

  p, seeds, timed = config.ppo, config.num_seeds, flags.FLAGS.chunks
  per_update = seeds * p.rollout_steps
  network_factory = functools.partial(
      ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=tuple(config.network.hidden),
      value_hidden_layer_sizes=tuple(config.network.hidden), activation=jax.nn.relu, distribution_type='normal',
      noise_std_type='log', init_noise_std=1.0)
  brax_ppo.train(
      envs.get_environment('ant', backend=config.env.backend), num_timesteps=(timed + 1) * per_update,
      num_evals=timed + 2, run_evals=False, num_envs=seeds, episode_length=config.env.episode_length,
      unroll_length=p.rollout_steps // p.minibatches, batch_size=seeds, num_minibatches=p.minibatches,
      num_updates_per_batch=p.epochs, learning_rate=float(config.hparams.learning_rate), discounting=p.gamma,
      gae_lambda=p.lam, clipping_epsilon=p.clip, normalize_advantage=p.normalise_advantages,
      entropy_cost=0.0, network_factory=network_factory, progress_fn=between_epochs, seed=0)
  ddl_rate = per_update * len(ddl_seconds[1:]) / sum(ddl_seconds[1:])
  brax_rate = float(np.mean(brax_rates[1:]))
  print(json.dumps(dict(workload=flags.FLAGS.workload, variant=program.group.name, peer='brax_ppo', seeds=seeds,
                        env_backend=config.env.backend, ddl_steps_per_sec=round(ddl_rate, 1),
                        brax_steps_per_sec=round(brax_rate, 1), ddl_vs_brax=round(ddl_rate / brax_rate, 3),
                        timed_updates=len(ddl_seconds) - 1, backend=jax.default_backend())), flush=True)


def main(argv):
  """The measurement the flags ask for; a config error is one line `error: ...` on stderr, exit 2 (as main.py)."""
  del argv
  try:
    _measure()
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def _measure():
  if flags.FLAGS.read_metrics_rows > 0:
    print(_read_metrics_line(flags.FLAGS.read_metrics_rows), flush=True)
    return
  import jax  # pylint: disable=g-import-not-at-top
  config = _config()
  devices_lib.split_cpu(config)
  config = platform_defaults.resolve(config, flags.FLAGS.choices or None)
  config_lib.validate(config, experiments.get(config.experiment))
  devices = devices_lib.Devices(config)   # the runs axis sharded over the devices, as in the run loop
  data = programs_lib.load_data(config, devices)
  if flags.FLAGS.peer:
    _peer_brax_ppo(config, devices, data)
    return
  if flags.FLAGS.host_rollout:
    _acting_in_program_vs_on_host(config)
    return
  if flags.FLAGS.memory:
    _memory_report(config, devices, data)
    return
  total_examples, total_seconds, total_compile, total_runs, peak_mb = 0, 0.0, 0.0, 0, 0.0
  total_evaluate_sec, total_amortised = None, 0.0   # the evaluators' calls and cost per chunk, all groups
  bp_seconds_per_run = None   # --interventions: one run's chunk time of plain backprop, the first group
  groups = _groups(programs_lib.build(config, devices))
  for name, programs in sorted(groups.items(), key=lambda item: item[0] != 'bp'):   # bp first: the baseline
    began = time.time()
    programs, footprint = memory.compile_programs(programs, data, devices)   # slices of one size share one
    states = [p.init() for p in programs]
    states = [p.run_chunk(s, data)[0] for p, s in zip(programs, states)]
    jax.block_until_ready(states)
    compile_sec = time.time() - began
    began = time.time()
    for _ in range(flags.FLAGS.chunks):
      for i, program in enumerate(programs):
        states[i], values = program.run_chunk(states[i], data)
    jax.block_until_ready((states, values))
    seconds = time.time() - began
    runs = sum(len(p.variants) for p in programs)
    examples = programs[0].experiment.examples_per_chunk * runs * flags.FLAGS.chunks
    device_mb = max(_device_mb(p.run_chunk) for p in programs)
    evaluate_sec = _evaluate_sec(programs, states, data)
    per_chunk = seconds / flags.FLAGS.chunks
    amortised = None if evaluate_sec is None else evaluate_sec / programs[0].diagnostics_every
    share = None if amortised is None else amortised / (per_chunk + amortised)
    if evaluate_sec is not None:
      total_evaluate_sec, total_amortised = (total_evaluate_sec or 0.0) + evaluate_sec, total_amortised + amortised
    total_examples, total_seconds, total_compile, total_runs = (
        total_examples + examples, total_seconds + seconds, total_compile + compile_sec, total_runs + runs)
    peak_mb = max(peak_mb, device_mb)
    extra = dict(state_mb=round(footprint.state / 2**20, 1),
                 **_work(programs[0].run_chunk,   # one device's program
                       programs[0].experiment.examples_per_chunk * programs[0].padded // devices.count))
    if flags.FLAGS.interventions:
      bp_seconds_per_run = bp_seconds_per_run or seconds / runs
      extra['step_cost_vs_bp'] = round(seconds / runs / bp_seconds_per_run, 2)
    print(_line(config, name, runs, max(p.padded for p in programs), examples, seconds, compile_sec, device_mb,
                evaluate_sec, share, **extra), flush=True)
  if len(groups) > 1:
    per_chunk = total_seconds / flags.FLAGS.chunks
    share = None if total_evaluate_sec is None else total_amortised / (per_chunk + total_amortised)
    print(_line(config, 'all', total_runs, None, total_examples, total_seconds, total_compile, peak_mb,
                total_evaluate_sec, share), flush=True)
  if flags.FLAGS.env_alone:
    _env_alone(config, devices, total_examples / total_seconds)   # all groups: the harmonic mean of their rates


if __name__ == '__main__':
  app.run(main)
