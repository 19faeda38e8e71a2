"""Layer normalisation before every activation (Lyle et al. 2023), a network option.

The networks apply it themselves (`ddl.nets.normalize`, their `layer_norm` field): 'affine' is
Flax `LayerNorm` over a layer's units with a learned scale and offset, 'plain' the no-affine
variant over all of a sample's features (streaming RL). ResNet-18 puts it in place of batch norm.
"""
from ddl import nets
from ddl.learners.hyper import Hyper
from ddl.learners.method import Method

METHOD = Method(
    'layer_norm', 'network', 'layer normalisation before every activation (Lyle et al. 2023)',
    (Hyper('layer_norm', '', choices=nets.LAYER_NORMS, traced=False, doc="'', 'affine' or 'plain'"),),
    section='network', active=lambda program: bool(program.setting('network.layer_norm', '')),
    examples=(('layer_norm', dict(network=dict(layer_norm='affine'))),))
