"""Records a small class-incremental-CIFAR CBP (ResGnT) trace for tests/test_cbp_conv_trace.py.

Runs in a PyTorch environment (not collected by pytest):

  python tests/trace_tools/resgnt_trace.py [--out tests/data/trace_cifar_resgnt.npz] [--official-dir DIR]

The network is the original's modified ResNet-18 (lop/nets/torchvision_modified_resnet.py: biased
convs, 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2] with a 1x1 conv + BN downsample,
`kaiming_init_resnet_module` init), built here at widths 1-2-4-8 for 8x8 inputs so the trace is
small. `ResGnT` below restates the original's lop/algos/res_gnt.py (lop_reference.md §2.4) line by
line: the cumulative, never-decayed, never-reset |activation| statistic; width-based accumulated
counts; the utility |W_next| x statistic computed only when a layer replaces; fresh weights
N(0, 2 / fan_in); the replaced channels' BN restored (gamma 1, beta 0, running mean 0, running
var 1); no optimizer-state reset. With --official-dir (a checkout of shibhansh/loss-of-plasticity)
the official class is used instead (same module layout, so its layer enumeration applies). The
step is the incremental-CIFAR experiment's: train-mode BN, logits of the seen classes, cross-entropy
with one-hot targets, SGD lr 0.1, momentum 0.9, weight decay 5e-4, then the CBP step.

Keys: x[t] (NCHW float32), y[t] (one-hot over the seen classes), classes (the seen logits),
loss[t]; p/<param>[t], m/<param>[t] (momentum, zeros before the first step), b/<bn>/<running_mean|
running_var>[t] before step t; cbp/<layer>/{mag, ages, acc}[t] before step t (mag: the cumulative
statistic); rank/<layer>[t]: the utility that ranked the units at step t (before the replaced are
zeroed; NaN where the layer replaced nothing); replaced/<layer>[t]; final/... after the last step.
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


class BasicBlock(nn.Module):
  """torchvision's BasicBlock with biased convs; appends bn1+ReLU and the block output to features."""

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=True)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=True)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x, feature_list=None):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    if feature_list is not None:
      feature_list.append(out)
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
      identity = self.downsample(x)
    out += identity
    out = self.relu(out)
    if feature_list is not None:
      feature_list.append(out)
    return out


class Stage(nn.Sequential):
  def forward(self, x, feature_list=None):
    for block in self:
      x = block(x, feature_list)
    return x


class ResNet(nn.Module):
  """The original's modified ResNet-18 at base width `width` (64 in the paper)."""

  def __init__(self, width=2, num_classes=10):
    super().__init__()
    self.inplanes = width
    self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=True)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.layer1 = self._make_layer(width, 1)
    self.layer2 = self._make_layer(2 * width, 2)
    self.layer3 = self._make_layer(4 * width, 2)
    self.layer4 = self._make_layer(8 * width, 2)
    self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(8 * width, num_classes)

  def _make_layer(self, planes, stride):
    downsample = None
    if stride != 1 or self.inplanes != planes:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=True), nn.BatchNorm2d(planes))
    blocks = [BasicBlock(self.inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
    self.inplanes = planes
    return Stage(*blocks)

  def forward(self, x, feature_list=None):
    x = self.relu(self.bn1(self.conv1(x)))
    if feature_list is not None:
      feature_list.append(x)
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      x = stage(x, feature_list=feature_list)
    if feature_list is not None:
      feature_list.pop(-1)
    x = torch.flatten(self.output_pool(x), 1)
    if feature_list is not None:
      feature_list.append(x)
    return self.fc(x)


def kaiming_init_resnet_module(m):
  """The original's init: convs kaiming normal (fan_in, relu), the fc kaiming normal (linear), zero
  biases, BN 1 / 0."""
  if isinstance(m, (nn.Conv2d, nn.Linear)):
    nn.init.kaiming_normal_(m.weight, nonlinearity='relu' if isinstance(m, nn.Conv2d) else 'linear')
    if m.bias is not None:
      nn.init.constant_(m.bias, 0.0)
  if isinstance(m, nn.BatchNorm2d):
    nn.init.constant_(m.weight, 1.0)
    nn.init.constant_(m.bias, 0.0)


class ResGnT:
  """lop/algos/res_gnt.py restated (its test_features / gen_new_features); `last_rank` keeps the
  utility that ranked each layer's units at the last step (for the trace)."""

  def __init__(self, net, hidden_activation, decay_rate, replacement_rate, util_type, maturity_threshold):
    self.net, self.bn_layers, self.weight_layers = net, [], []
    self._collect(net)
    self.num_hidden_layers = len(self.weight_layers) - 1
    self.replacement_rate, self.decay_rate = replacement_rate, decay_rate
    self.maturity_threshold, self.util_type = maturity_threshold, util_type
    n = [self.weight_layers[i].out_channels for i in range(self.num_hidden_layers)]
    self.util = [torch.zeros(u) for u in n]
    self.ages = [torch.zeros(u) for u in n]
    self.mean_feature_mag = [torch.zeros(u) for u in n]
    self.accumulated_num_features_to_replace = [0 for _ in n]
    gain = nn.init.calculate_gain(hidden_activation)
    self.stds = [gain * math.sqrt(1 / (l.in_channels * l.kernel_size[0] * l.kernel_size[1]))
                 for l in self.weight_layers[:self.num_hidden_layers]]
    self.num_new_features_to_replace = [replacement_rate * u for u in n]
    self.last_rank = [None] * self.num_hidden_layers

  def _collect(self, module):
    """Depth-first over children, skipping every block's downsample branch."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
      self.weight_layers.append(module)
    elif isinstance(module, nn.BatchNorm2d):
      self.bn_layers.append(module)
    else:
      for m in module.children():
        if hasattr(module, 'downsample') and module.downsample == m:
          continue
        self._collect(m)

  @torch.no_grad()
  def test_features(self, features):
    to_replace = [torch.empty(0, dtype=torch.long) for _ in range(self.num_hidden_layers)]
    num = [0] * self.num_hidden_layers
    self.last_rank = [None] * self.num_hidden_layers
    if self.replacement_rate == 0:
      return to_replace, num
    for i in range(self.num_hidden_layers):
      self.ages[i] += 1
      f = features[i]
      self.mean_feature_mag[i] += (1 - self.decay_rate) * f.abs().mean(dim=0 if f.dim() == 2 else (0, 2, 3))
      eligible = torch.where(self.ages[i] > self.maturity_threshold)[0]
      if eligible.shape[0] == 0:
        continue
      self.accumulated_num_features_to_replace[i] += self.num_new_features_to_replace[i]
      k = int(self.accumulated_num_features_to_replace[i])
      self.accumulated_num_features_to_replace[i] -= k
      if k == 0:
        continue
      nxt = self.weight_layers[i + 1]
      out_mag = nxt.weight.data.abs().mean(dim=0 if isinstance(nxt, nn.Linear) else (0, 2, 3))
      if self.util_type == 'weight':
        self.util[i] = out_mag
      elif self.util_type == 'contribution':
        self.util[i] = out_mag * self.mean_feature_mag[i]
      self.last_rank[i] = self.util[i].clone()
      idx = eligible[torch.topk(-self.util[i][eligible], k)[1]]
      self.util[i][idx] = 0
      num[i], to_replace[i] = k, idx
    return to_replace, num

  @torch.no_grad()
  def gen_new_features(self, to_replace, num):
    for i in range(self.num_hidden_layers):
      if num[i] == 0:
        continue
      cur, nxt, bn, idx = self.weight_layers[i], self.weight_layers[i + 1], self.bn_layers[i], to_replace[i]
      cur.weight.data[idx, :] *= 0.0
      cur.weight.data[idx, :] += torch.empty([num[i]] + list(cur.weight.shape[1:])).normal_(std=self.stds[i])
      cur.bias.data[idx] *= 0.0
      nxt.weight.data[:, idx] = 0
      self.ages[i][idx] = 0
      bn.bias[idx] *= 0.0
      bn.weight[idx] *= 0.0
      bn.weight[idx] += 1.0
      bn.running_mean[idx] *= 0.0
      bn.running_var[idx] *= 0.0
      bn.running_var[idx] += 1.0

  def gen_and_test(self, features):
    self.gen_new_features(*self.test_features(features))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', default=os.path.join(HERE, '..', 'data', 'trace_cifar_resgnt.npz'))
  p.add_argument('--official-dir', help='use the official ResGnT from this checkout instead of the restatement')
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--size', type=int, default=8, help='image height and width')
  p.add_argument('--width', type=int, default=1)
  p.add_argument('--replacement-rate', type=float, default=0.17)
  p.add_argument('--maturity', type=int, default=2)
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args()
  gnt_class = ResGnT
  if args.official_dir:
    sys.path.insert(0, os.path.abspath(args.official_dir))
    from lop.algos.res_gnt import ResGnT as gnt_class  # pylint: disable=import-outside-toplevel

  torch.manual_seed(args.seed)
  num_classes, seen = 10, torch.tensor([7, 2, 9, 0, 4])
  net = ResNet(args.width, num_classes)
  net.apply(kaiming_init_resnet_module)
  net.train()
  lr, momentum, wd, decay = 0.1, 0.9, 5e-4, 0.99
  opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
  kwargs = dict(hidden_activation='relu', decay_rate=decay, replacement_rate=args.replacement_rate,
                util_type='contribution', maturity_threshold=args.maturity)
  gnt = gnt_class(net=net, **kwargs) if not args.official_dir else gnt_class(net=net, device=torch.device('cpu'), **kwargs)
  for a in gnt.ages:
    a.fill_(args.maturity)
  names = {id(m): n for n, m in net.named_modules()}
  hidden = [names[id(l)] for l in gnt.weight_layers[:-1]]
  bns = {n: m for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
  rec = {}

  def put(key, value):
    rec.setdefault(key, []).append(np.array(value))

  def snapshot(pre):
    for name, prm in net.named_parameters():
      put(pre + 'p/' + name, prm.detach().numpy())
      buf = opt.state.get(prm, {}).get('momentum_buffer')
      put(pre + 'm/' + name, np.zeros(prm.shape, np.float32) if buf is None else buf.numpy())
    for name, bn in bns.items():
      put('%sb/%s/running_mean' % (pre, name), bn.running_mean.numpy())
      put('%sb/%s/running_var' % (pre, name), bn.running_var.numpy())
    for i, name in enumerate(hidden):
      put('%scbp/%s/mag' % (pre, name), gnt.mean_feature_mag[i].numpy())
      put('%scbp/%s/ages' % (pre, name), gnt.ages[i].numpy().astype(np.int64))
      put('%scbp/%s/acc' % (pre, name), np.float64(gnt.accumulated_num_features_to_replace[i]))

  gen = torch.Generator().manual_seed(args.seed + 1)
  lossf = nn.CrossEntropyLoss(reduction='mean')
  for _ in range(args.steps):
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    y = F.one_hot(torch.randint(0, len(seen), (args.batch,), generator=gen), len(seen)).float()
    put('x', x.numpy())
    put('y', y.numpy())
    snapshot('')
    for prm in net.parameters():
      prm.grad = None
    feats = []
    loss = lossf(net(x, feats)[:, seen], y)
    loss.backward()
    opt.step()
    gnt.gen_and_test(feats)
    put('loss', loss.detach().numpy())
    for i, name in enumerate(hidden):
      replaced = (gnt.ages[i] == 0).numpy()
      put('replaced/' + name, replaced)
      rank = getattr(gnt, 'last_rank', [None] * len(hidden))[i]     # the official class keeps none
      put('rank/' + name, np.full(replaced.shape, np.nan, np.float32) if rank is None else rank.numpy())
  snapshot('final/')
  out = {k: v[0] if k.startswith('final/') else np.stack(v) for k, v in rec.items()}
  out.update(semantics=np.array('ResGnT'), hidden_layers=np.array(hidden), classes=seen.numpy(),
             lr=np.float64(lr), momentum=np.float64(momentum), weight_decay=np.float64(wd),
             replacement_rate=np.float64(args.replacement_rate), maturity_threshold=np.int64(args.maturity),
             decay_rate=np.float64(decay), util_type=np.array('contribution'), width=np.int64(args.width),
             num_classes=np.int64(num_classes), init_std=np.array(gnt.stds[:len(hidden)], np.float64),
             bn_momentum=np.float64(0.1), bn_eps=np.float64(1e-5), seed=np.int64(args.seed))
  np.savez_compressed(args.out, **out)
  per_layer = [int(out['replaced/' + n].sum()) for n in hidden]
  print('trace %s: %d steps, %d bytes, units replaced %d (per layer %s)' % (
      args.out, args.steps, os.path.getsize(args.out), sum(per_layer), per_layer))


if __name__ == '__main__':
  main()
