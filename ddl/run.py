"""The run loop, once for every experiment.

Each group of variants (see `ddl.config.groups`) is one jitted, vmapped program over its
variants x seeds, the runs axis sharded over all devices (padded to a multiple of them; the
padding is dropped from every output). The host loop advances every group by one chunk per call,
runs the group's evaluator (`evaluate`, its own program) every `diagnostics_every` chunks and after
the last, appends the values to `metrics.csv` (long form: variant,seed,step,metric,value), logs
progress and W&B curves, and checkpoints with orbax. A run whose state turns NaN/inf is frozen
on the device and marked (metric `nonfinite`); the others go on. Relaunching into the same workdir
resumes from the last checkpoint; metrics.csv is cut back to that checkpoint, so it ends identical
to an uninterrupted run's. SIGTERM/SIGINT checkpoint after the current chunk and stop.

Settings left AUTO get the platform's choice first (`ddl.platform_defaults`), and before the first
chunk the programs are compiled and their memory checked against the device's (`ddl.memory`):
runs_per_call left AUTO splits the runs into calls that fit; otherwise one line says what fits.

The pieces live beside this loop: `ddl.devices` (mesh, CPU split, hosts, platform),
`ddl.programs` (the compiled programs, fitting them to memory, out-of-memory message),
`ddl.workdir`, `ddl.writers` (metrics.csv, W&B, progress), `ddl.checkpoints` and `ddl.preemption`.
"""
import os
from typing import Any, Dict, Optional

import jax
import numpy as np
from absl import logging

from ddl import checkpoints as checkpoints_lib
from ddl import config as config_lib
from ddl import devices as devices_lib
from ddl import experiments
from ddl import platform_defaults
from ddl import plotting
from ddl import programs as programs_lib
from ddl import workdir as workdir_lib
from ddl import writers
# Re-exported: what launch/, tests and notebooks reach through `ddl.run`.
from ddl.devices import Devices, split_cpu  # pylint: disable=unused-import
from ddl.preemption import Interrupted, Signals
from ddl.programs import Program, calls_size  # pylint: disable=unused-import
from ddl.workdir import OUTPUTS, prepare_workdir  # pylint: disable=unused-import
from ddl.writers import METRICS_HEADER  # pylint: disable=unused-import


def run(config, workdir: str, *, stop_after_chunks: Optional[int] = None, figures: bool = True,
        fresh: bool = False, built: Optional[Dict[Any, Any]] = None) -> Dict[str, Any]:
  """Runs (or resumes) an experiment into `workdir`. `stop_after_chunks` ends the launch early
  after that many chunks of this launch (with a checkpoint), as an interruption would; `fresh`
  deletes a previous run's outputs first; `built`: a dict in which launches of one process share
  their built programs (`ddl.programs.fitted`: a relaunch of the same config compiles nothing).
  SIGTERM/SIGINT end the launch after the current chunk with a checkpoint (raises Interrupted).
  Returns a summary: chunks done, seconds (and those of the evaluator), examples per second,
  non-finite runs."""
  devices_lib.start(config)                  # before anything touches the backend
  config = platform_defaults.resolve(config)   # the platform's choice for each setting left AUTO
  config_lib.validate(config, experiments.get(config.experiment))
  lead = jax.process_index() == 0            # multi-host: only process 0 writes files (orbax syncs itself)
  workdir = os.path.abspath(workdir)
  created = prepare_workdir(workdir, config, fresh) if lead else False
  devices_lib.sync_hosts('ddl: workdir ready')
  devices = Devices(config)
  with workdir_lib.removed_if_refused(workdir, created):    # no data set, out of memory: no new workdir left
    data = programs_lib.load_data(config, devices)          # once, before any compilation
    programs, memory_line = programs_lib.fitted(config, devices, data, checkpoints_lib.saved_calls(workdir), built)
    states = [programs_lib.call(p.init, p, devices) for p in programs]
  num_chunks = max(p.experiment.num_chunks for p in programs)   # groups may stop earlier
  checkpoints = checkpoints_lib.Checkpoints(workdir, calls=[len(p.variants) for p in programs])
  metrics_csv = writers.MetricsCsv(workdir, lead)
  start = checkpoints.latest() or 0
  if start:
    states, csv = checkpoints.restore(start, programs, states, devices, config.cpu_devices)
    metrics_csv.cut(**csv)
    logging.info('Resumed %s at chunk %d/%d.', workdir, start, num_chunks)
  elif lead:
    metrics_csv.create()
    workdir_lib.write_config(workdir, config)
  logging.info(memory_line)
  _log_layout(programs, devices)
  alive = [np.asarray(devices.get(s[1]))[:len(p.variants)] for p, s in zip(programs, states)]
  wandb = writers.Wandb(config, workdir, lead=lead)
  end = num_chunks if stop_after_chunks is None else min(num_chunks, start + stop_after_chunks)
  progress = writers.Progress(start, end, num_chunks, evaluator=any(p.evaluate is not None for p in programs))
  with metrics_csv, Signals() as signals:
    try:
      for chunk in range(start, end):
        step = programs[0].experiment.chunk_step(chunk)
        collected, examples = writers.Collected(), 0
        for i, program in enumerate(programs):
          if chunk >= program.experiment.num_chunks:
            continue
          states[i], values, now_alive = _advance(program, states[i], data, chunk, devices, progress)
          metrics_csv.mark_nonfinite(program, alive[i] & ~now_alive, chunk, _first_step(programs, chunk), step)
          alive[i] = now_alive
          metrics_csv.write(program, step, values, keep=alive[i])
          collected.add(program, values, keep=alive[i])
          examples += program.experiment.examples_per_chunk * int(alive[i].sum())
        metrics_csv.flush()
        dead = sum(int((~a).sum()) for a in alive)
        wandb.log(step, {**collected.summaries([v for p in programs for v in p.variants]),
                         **progress.chunk_done(chunk, step, examples, dead)})
        stop = signals.received(devices)
        if (chunk + 1) % config.checkpoint_every == 0 or chunk + 1 == end or stop is not None:
          checkpoints.save(chunk + 1, programs, states, devices, csv=metrics_csv.sync())
        if stop is not None and chunk + 1 < end:
          raise Interrupted(chunk + 1, num_chunks, stop)
    except BaseException as e:
      wandb.finish(exit_code=1)
      if isinstance(e, config_lib.ConfigError) and start == 0 and checkpoints.latest() is None and lead:
        workdir_lib.remove_outputs(workdir, created)   # e.g. out of memory in the first chunk: nothing half-written
      raise
  wandb.finish()
  if figures and end == num_chunks and lead:
    plotting.plot_workdir(workdir)
    experiments.figures(workdir)   # an experiment's own figures (e.g. a paper's, its numbers marked)
  return progress.summary(nonfinite_runs=sum(int((~a).sum()) for a in alive))


def _advance(program: Program, state, data, chunk: int, devices: Devices, progress: writers.Progress):
  """One chunk of one program, then its evaluator when it is due (timed apart): the new state, the
  values to log ({metric: (real runs,)} on the host) and which real runs are still alive."""
  state, values = programs_lib.call(program.run_chunk, program, devices, state, data)
  values, alive = devices.get((values, state[1]))
  every = getattr(program.experiment, 'metric_every', {})
  values = {m: v for m, v in values.items() if chunk % every.get(m, 1) == 0}
  if program.evaluates(chunk):
    with progress.evaluating():
      values.update(devices.get(programs_lib.call(program.evaluate, program, devices, state[0], data)))
  return state, programs_lib.host_values(program, values), np.asarray(alive)[:len(program.variants)]


def _first_step(programs, chunk: int) -> int:
  """The step a chunk starts at (for the log)."""
  return programs[0].experiment.chunk_step(chunk - 1) if chunk else 0


def _log_layout(programs, devices: Devices) -> None:
  logging.info('%d runs in %d call(s) per chunk, over %d device(s) (%d padding runs).',
               sum(len(p.variants) for p in programs), len(programs), devices.count,
               sum(p.padded - len(p.variants) for p in programs))
