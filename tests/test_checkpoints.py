"""Checkpoints (ddl.checkpoints) of states that orbax alone cannot write."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ddl import checkpoints
from ddl import config as config_lib
from ddl.devices import Devices


def test_zero_size_arrays_are_saved_and_restored(tmp_path):
  """An MJX state holds zero-size arrays (`act` of a model without actuator activations), which orbax
  refuses to save: a state with one round-trips, keys, values and the empty leaf's shape included."""
  devices = Devices(ml_collections.ConfigDict(dict(platform='', num_devices=0)))
  program = types.SimpleNamespace(variants=['a', 'b'], padded=2)
  state = (dict(act=jnp.zeros((2, 0), jnp.float32), w=jnp.arange(6.0).reshape(2, 3)),
           jax.random.split(jax.random.key(0), 2))
  saver = checkpoints.Checkpoints(str(tmp_path), calls=[2])
  saver.save(1, [program], [state], devices, csv=dict(size=10, crc32=7))
  fresh = jax.tree.map(jnp.zeros_like, state[0]), jax.random.split(jax.random.key(1), 2)
  (restored,), csv = checkpoints.Checkpoints(str(tmp_path), calls=[2]).restore(1, [program], [fresh], devices, 0)
  assert csv == {'size': 10, 'crc32': 7}
  assert restored[0]['act'].shape == (2, 0) and restored[0]['act'].dtype == jnp.float32
  np.testing.assert_array_equal(restored[0]['w'], state[0]['w'])
  np.testing.assert_array_equal(jax.random.key_data(restored[1]), jax.random.key_data(state[1]))


def test_a_state_of_other_fields_is_one_error_naming_the_field_and_the_fix(tmp_path):
  """A checkpoint written by another version of ddl, whose state lacks a field this code's has (as the
  replay's `final_index` after 2026-12-07), is a ConfigError naming that field, not 'damaged'."""
  devices = Devices(ml_collections.ConfigDict(dict(platform='', num_devices=0)))
  program = types.SimpleNamespace(variants=['a', 'b'], padded=2)
  old = (dict(replay=dict(obs=jnp.zeros((2, 3)))),)
  checkpoints.Checkpoints(str(tmp_path), calls=[2]).save(1, [program], [old], devices, csv=dict(size=10, crc32=7))
  new = (dict(replay=dict(obs=jnp.zeros((2, 3)), final_index=jnp.zeros((2, 3), jnp.int32))),)
  with pytest.raises(config_lib.ConfigError, match=r'fields differ.*final_index.*another version of ddl.*--fresh'):
    checkpoints.Checkpoints(str(tmp_path), calls=[2]).restore(1, [program], [new], devices, 0)
