"""Records a small continual-ImageNet CBP (ConvGnT) trace for tests/test_cbp_conv_trace.py.

Runs in a PyTorch environment (not collected by pytest):

  python tests/trace_tools/convgnt_trace.py [--reference DIR] [--out tests/data/trace_imagenet_cbp.npz]

The training step and the CBP step are `torch_reference.py`'s (shared/bench/, an independent
PyTorch re-implementation of the original's ConvGnT, checked bit-identical against it): its
`ConvNetCBP` on a narrow copy of its `SmallConvNet` (same layers, kernels, pooling and channel-major
flatten into fc1, widths 4-6-8 / 8-8), SGD with momentum 0.9, cross-entropy, util
'adaptable_contribution', a high replacement rate and maturity 2 so that units of every layer are
replaced within the few recorded steps. Inputs are uint8 images (stored as such, fed as x / 255).
The file has `torch_reference.py --trace`'s keys (see its TRACE_LAYOUT) plus 'x_uint8'.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class TinyConvNet(nn.Module):
  """torch_reference.SmallConvNet with narrow layers: conv5x5 -> pool -> conv3x3 -> pool -> conv3x3 ->
  pool -> fc -> fc -> fc(out), ReLU, PyTorch default init, 32x32x3 inputs."""

  def __init__(self, widths=(4, 6, 8), dense=(8, 8), num_classes=2):
    super().__init__()
    self.conv1 = nn.Conv2d(3, widths[0], 5)
    self.conv2 = nn.Conv2d(widths[0], widths[1], 3)
    self.conv3 = nn.Conv2d(widths[1], widths[2], 3)
    self.spatial_out = 4
    self.fc1 = nn.Linear(widths[2] * self.spatial_out, dense[0])
    self.fc2 = nn.Linear(dense[0], dense[1])
    self.fc3 = nn.Linear(dense[1], num_classes)

  def weight_layers(self):
    return [self.conv1, self.conv2, self.conv3, self.fc1, self.fc2, self.fc3]

  def forward(self, x):
    h1 = F.max_pool2d(F.relu(self.conv1(x)), 2)
    h2 = F.max_pool2d(F.relu(self.conv2(h1)), 2)
    h3 = F.max_pool2d(F.relu(self.conv3(h2)), 2).reshape(x.shape[0], -1)    # channel-major flatten
    h4 = F.relu(self.fc1(h3))
    h5 = F.relu(self.fc2(h4))
    return self.fc3(h5), [h1, h2, h3, h4, h5]


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  shared = [os.path.join(HERE, *['..'] * up, 'shared', 'bench') for up in (3, 4)]    # beside the repo
  p.add_argument('--reference', default=next((d for d in shared if os.path.exists(d)), shared[0]),
                 help='folder of torch_reference.py (default: shared/bench beside the repository)')
  p.add_argument('--out', default=os.path.join(HERE, '..', 'data', 'trace_imagenet_cbp.npz'))
  p.add_argument('--steps', type=int, default=12)
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--replacement-rate', type=float, default=0.13)
  p.add_argument('--maturity', type=int, default=2)
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args()
  sys.path.insert(0, os.path.abspath(args.reference))
  import torch_reference as ref   # pylint: disable=import-outside-toplevel

  torch.manual_seed(args.seed)
  net = TinyConvNet()
  util_type, decay, lr, momentum = 'adaptable_contribution', 0.99, 0.01, 0.9
  cbp = ref.ConvNetCBP(net.weight_layers(), args.replacement_rate, args.maturity, decay, util_type,
                       spatial_out=net.spatial_out)
  ref.pre_age(cbp, args.maturity)
  opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
  names = {id(m): n for n, m in net.named_modules()}
  layers = [names[id(l)] for l in net.weight_layers()]
  hidden = layers[:-1]
  rec = {}

  def put(key, value):
    rec.setdefault(key, []).append(np.array(value))

  def snapshot(pre):
    for name, prm in net.named_parameters():
      layer, kind = name.rsplit('.', 1)
      put('%sp/%s/%s' % (pre, layer, kind), prm.detach().numpy())
      buf = opt.state.get(prm, {}).get('momentum_buffer')
      put('%sm/%s/%s' % (pre, layer, kind), np.zeros(prm.shape, np.float32) if buf is None else buf.numpy())
    for i, name in enumerate(hidden):
      for attr in ('util', 'bc_util', 'ages', 'mean_act', 'mean_abs_act'):
        v = getattr(cbp, attr)[i].numpy()
        put('%scbp/%s/%s' % (pre, name, attr), v.astype(np.int64) if attr == 'ages' else v)
      put('%scbp/%s/acc' % (pre, name), np.float64(cbp.acc[i]))

  gen = torch.Generator().manual_seed(args.seed + 1)
  for _ in range(args.steps):
    x8 = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 2, (args.batch,), generator=gen)
    put('x_uint8', x8.numpy())
    put('y', y.numpy())
    snapshot('')
    opt.zero_grad(set_to_none=True)
    out, feats = net(x8.float() / 255)
    loss = F.cross_entropy(out, y)
    loss.backward()
    opt.step()
    cbp.step(feats)
    put('loss', loss.detach().numpy())
    for i, name in enumerate(hidden):
      put('replaced/' + name, (cbp.ages[i] == 0).numpy())
  snapshot('final/')
  out = {k: v[0] if k.startswith('final/') else np.stack(v) for k, v in rec.items()}
  f64 = np.float64
  out.update(
      workload=np.array('imagenet'), semantics=np.array('ConvGnT'), loss_type=np.array('cross_entropy'),
      activation=np.array('relu'), layers=np.array(layers), hidden_layers=np.array(hidden),
      lr=f64(lr), momentum=f64(momentum), weight_decay=f64(0.0), replacement_rate=f64(args.replacement_rate),
      maturity_threshold=np.int64(args.maturity), decay_rate=f64(decay),
      util_type=np.int64(ref.UTIL_TYPES.index(util_type)), util_types=np.array(ref.UTIL_TYPES),
      accumulate=np.int64(1), init_bound=np.array(cbp.bounds, f64), spatial_out=np.int64(net.spatial_out),
      pixel_scale=f64(1 / 255), seed=np.int64(args.seed), pre_aged=np.int64(1), batch=np.int64(args.batch),
      steps=np.int64(args.steps), layout=np.array(ref.TRACE_LAYOUT + (
          "x_uint8[t]: the batch as uint8 NCHW pixels, fed as float32(x) / 255 (no 'x' key)",)))
  np.savez_compressed(args.out, **out)
  masks = np.concatenate([out['replaced/' + n] for n in hidden], axis=1)
  print('trace %s: %d steps, %d bytes, units replaced %d (per layer %s)' % (
      args.out, args.steps, os.path.getsize(args.out), masks.sum(),
      [int(out['replaced/' + n].sum()) for n in hidden]))


if __name__ == '__main__':
  main()
