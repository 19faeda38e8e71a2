"""The devices a launch runs on: the CPU split, multi-host start-up, the platform check and the mesh
that every program's runs axis is sharded over (data replicated)."""
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ddl import config as config_lib


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


class Devices:
  """The mesh that the runs axis is sharded over: all visible devices (or the first
  `config.num_devices`), one mesh axis 'runs'; data is replicated."""

  def __init__(self, config):
    devices = jax.devices(config.platform or None)
    if config.num_devices:
      devices = devices[:config.num_devices]
    self.mesh = jax.sharding.Mesh(np.asarray(devices), ('runs',))
    self.runs = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec('runs'))
    self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self.count = len(devices)
    self.platform = devices[0].platform

  def put(self, tree, sharding):
    """Global arrays from host values every process holds (works on one or several hosts)."""
    def one(x):
      x = np.asarray(x)
      return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(one, tree)

  # Checkpoints hold the real runs only, so a run can resume on another number of devices.
  # Host copies: no device holds all runs at once.
  # Typed PRNG key arrays travel as their raw key data (NumPy and orbax hold plain arrays);
  # `rewrap` restores them from a template state.
  def unpad(self, tree, runs: int):
    data = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)
    return jax.tree.map(lambda x: np.asarray(x)[:runs], self.get(data))

  def unpadded_target(self, tree, runs: int):
    def one(x):
      x = jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x
      return jax.ShapeDtypeStruct((runs,) + x.shape[1:], x.dtype, sharding=self.replicated)
    return jax.tree.map(one, tree)

  @staticmethod
  def rewrap(tree, template):
    return jax.tree.map(lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
                        tree, template)

  def pad(self, tree, size: int):
    """Pads the runs axis to `size` with copies of the last run, sharded over the devices."""
    def one(x):
      return jnp.concatenate([x, jnp.repeat(x[-1:], size - x.shape[0], axis=0)]) if size > x.shape[0] else x
    return jax.jit(lambda t: jax.tree.map(one, t), out_shardings=self.runs)(tree)

  def get(self, tree):
    """Host copies of (possibly multi-host) global arrays."""
    if jax.process_count() == 1:
      return jax.device_get(tree)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return multihost_utils.process_allgather(tree, tiled=True)


def split_cpu(config) -> None:
  """Splits the host CPU into `config.cpu_devices` JAX devices (at most `num_seeds`, so that a
  variant's seeds need no padding); must run before JAX starts its backends (a process that already
  started them keeps its devices, with a warning)."""
  count = min(config.cpu_devices, config.num_seeds)
  if count <= 0:
    return
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:
    if len(jax.devices('cpu')) != count:
      logging.warning('cpu_devices=%d: JAX started with %d CPU device(s) in this process already; keeping them.',
                      count, len(jax.devices('cpu')))


def initialize_distributed(config) -> None:
  """jax.distributed.initialize for multi-host runs when `config.distributed.initialize` (empty
  fields are auto-detected from the cluster environment, e.g. SLURM)."""
  dist = config.distributed
  if not dist.initialize or jax.distributed.is_initialized():
    return
  jax.distributed.initialize(
      coordinator_address=dist.coordinator_address or None,
      num_processes=dist.num_processes if dist.num_processes > 0 else None,
      process_id=dist.process_id if dist.process_id >= 0 else None)


def check_platform(config) -> None:
  """`config.platform` ('' = JAX's default) names the devices the run uses; they and `num_devices`
  must exist."""
  try:
    available = jax.devices(config.platform or None)
  except RuntimeError:
    raise config_lib.ConfigError(
        f'platform: the config asks for {config.platform!r} but JAX sees only {jax.default_backend()!r} devices '
        f'({jax.devices()[0].device_kind}); install the accelerator\'s JAX (e.g. pip install -e ".[cuda12]" for '
        "NVIDIA GPUs), check that the device is visible (nvidia-smi, CUDA_VISIBLE_DEVICES), or set "
        "--config.platform='' to run on what is there.") from None
  if config.num_devices > len(available):
    raise config_lib.ConfigError(
        f'num_devices: {config.num_devices} asked for but JAX sees {len(available)} {available[0].platform} '
        'device(s); set --config.num_devices=0 to use all of them.')


def start(config) -> None:
  """What must happen before JAX starts its backends and before any device is used: the CPU split,
  jax.distributed on several hosts, then the check that the asked-for devices exist."""
  split_cpu(config)
  initialize_distributed(config)
  check_platform(config)


def sync_hosts(name: str) -> None:
  """A barrier across hosts (nothing on one host)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
