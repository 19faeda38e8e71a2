"""Which kernels make and read each network's replaceable units: the topology that CBP, ReDo and the
unit diagnostics need, declared per network here, outside `ddl.nets`.

`unit_layers(network)` gives the network's `UnitLayer`s in forward order; a network with no hidden
units (the linear baseline) gives (). A norm layer after a unit layer (layer norm, batch norm) is
listed so that a replaced unit's scale and offset (and running statistics) are restored.
"""
import dataclasses
from typing import Tuple

from ddl import nets
from ddl.learners.cbp import UnitLayer


def _chain(names, norms, init, prefix=()) -> Tuple[UnitLayer, ...]:
  """Layers in sequence, each read by the next: names[i] makes units read by names[i + 1]."""
  return tuple(
      UnitLayer(features='/'.join(prefix + (name,)), kernel=prefix + (name, 'kernel'), bias=prefix + (name, 'bias'),
                consumers=(prefix + (after, 'kernel'),), consumer_biases=(prefix + (after, 'bias'),), init=init,
                norm_ones=(prefix + (norm, 'scale'),), norm_zeros=(prefix + (norm, 'bias'),))
      for name, norm, after in zip(names[:-1], norms, names[1:]))


def _mlp(network: nets.MLP, prefix=()) -> Tuple[UnitLayer, ...]:
  names = network.layer_names()
  norms = [f'norm_{i}' for i in range(len(network.hidden))]
  return _chain(names, norms, nets.initializer(network.weight_init, network.activation), prefix)


def _convnet(network: nets.ConvNet) -> Tuple[UnitLayer, ...]:
  """Each layer read by the next; with `dueling` the last hidden layer also by the value layer."""
  names = network.layer_names()
  init = nets.initializer(network.weight_init)
  layers = _chain(names, [f'{name}_norm' for name in names[:-1]], init)
  if network.dueling and layers:
    last = layers[-1]
    layers = layers[:-1] + (dataclasses.replace(last, consumers=last.consumers + (('value', 'kernel'),),
                                                consumer_biases=last.consumer_biases + (('value', 'bias'),)),)
  return layers


def _actor_critic(network) -> Tuple[UnitLayer, ...]:
  policy, value = network.mlps(parent=None)
  return _mlp(policy, ('policy',)) + _mlp(value, ('value',))


def _drq_actor(network: nets.DrQActor) -> Tuple[UnitLayer, ...]:
  """The policy's hidden layers (the trunk, a tanh layer under layer norm, is not replaced)."""
  names = network.layer_names()[1:]
  norms = [f'norm_{i}' for i in range(len(network.hidden))]
  return _chain(names, norms, nets.initializer(network.weight_init, network.activation))


def _drq_critic(network: nets.DrQCritic) -> Tuple[UnitLayer, ...]:
  return _mlp(network.head(), ('q1',)) + _mlp(network.head(), ('q2',))


def _drq_encoder(network: nets.DrQEncoder) -> Tuple[UnitLayer, ...]:
  """The encoder's conv channels, each read by the next conv; the last conv's channels are read by the
  critic and the actor, outside the module, so they are not replaced (the module's units end there)."""
  names = network.layer_names()
  return _chain(names, [f'{name}_norm' for name in names[:-1]], nets.orthogonal(2.0 ** 0.5))


def _resnet18(network: nets.ResNet18) -> Tuple[UnitLayer, ...]:
  """ResGnT's 17 hidden layers: layer i (conv + its norm) feeds weight layer i + 1; a block's conv2
  feeds the next block's conv1 (the last one feeds fc); the downsample branch is not touched, and
  the skip path keeps carrying a reset conv2 channel (lop_reference.md §2.4)."""
  layers = [('stem', 'stem', 'stem_bn')]
  for i in range(len(network.blocks())):
    layers += [(f'block{i}_conv1', f'block{i}_conv1', f'block{i}_bn1'),
               (f'block{i}_out', f'block{i}_conv2', f'block{i}_bn2')]
  consumers = [conv for _, conv, _ in layers[1:]] + ['fc']
  return tuple(
      UnitLayer(features=feature, kernel=(conv, 'kernel'), bias=(conv, 'bias'), consumers=((after, 'kernel'),),
                consumer_biases=((after, 'bias'),), init=nets.he_normal(), norm_ones=((bn, 'scale'), (bn, 'var')),
                norm_zeros=((bn, 'bias'), (bn, 'mean')))
      for (feature, conv, bn), after in zip(layers, consumers))


TOPOLOGIES = {nets.MLP: _mlp, nets.ConvNet: _convnet, nets.ActorCritic: _actor_critic,
              nets.StreamActorCritic: _actor_critic, nets.ResNet18: _resnet18,
              nets.DrQActor: _drq_actor, nets.DrQCritic: _drq_critic,
              nets.DrQEncoder: _drq_encoder}


def unit_layers(network) -> Tuple[UnitLayer, ...]:
  """The replaceable unit layers of `network`, in forward order. A network of one's own may declare
  them itself with a `unit_layers()` method."""
  if hasattr(network, 'unit_layers'):
    return tuple(network.unit_layers())
  for cls, topology in TOPOLOGIES.items():
    if isinstance(network, cls):
      return topology(network)
  raise TypeError(f'{type(network).__name__} has no unit topology: declare one in ddl.learners.topology.TOPOLOGIES '
                  'or give the network a unit_layers() method.')
