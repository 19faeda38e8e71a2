"""CReLU, concatenated ReLU (Shang et al. 2016), against loss of plasticity (Abbas et al. 2023,
"Loss of Plasticity in Continual Deep Reinforcement Learning"), an activation of every network.

    CReLU(x) = [ReLU(x), ReLU(-x)]   concatenated on the units axis (channels in NHWC maps)

so a layer of n units gives 2n features and the next layer reads 2n inputs: every unit passes
gradient on one side or the other, so none goes dead. The layer widths (`network.hidden`, the
ConvNet's widths) count pre-activation units, as in Abbas et al.; halve them to keep the parameter
count of the ReLU network. The features that CBP, ReDo and the diagnostics read are the 2n
post-activation values; unit k's two halves are rows k and n + k of the next kernel, which CBP's
topology reads as two positions of one unit (`cbp._consumer_rows`), so a replaced unit's outgoing
weights are zeroed in both halves. Initialisation uses ReLU's gain. On ResNet-18 it is the
activation inside each block (`ddl.nets.ResNet18`).
"""
import math

import jax
import jax.numpy as jnp

from ddl.learners.method import Method, selected


def crelu(x: jax.Array) -> jax.Array:
  """[relu(x), relu(-x)] on the last axis."""
  return jnp.concatenate([jax.nn.relu(x), jax.nn.relu(-x)], axis=-1)


METHOD = Method(
    'crelu', 'network', 'CReLU (Abbas et al. 2023): [relu(x), relu(-x)] as the activation, twice the features',
    section='network', active=selected('network.activation', 'crelu'), activation=crelu, gain=math.sqrt(2.0),
    examples=(('crelu', dict(network=dict(activation='crelu'))),))
