"""Class-incremental CIFAR-100: smoke run through launch/main.py, resume between epochs, the
augmentation, the learning-rate schedule, early stopping, the ResNet-18 and ResGnT's batch-norm
resets, the missing-data error."""
import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import assert_resume_is_identical, cheap_diagnostics, ROOT, load_config, trace_programs
from ddl import config as config_lib
from ddl import metrics
from ddl import nets
from ddl.learners import topology
from ddl import plotting
from ddl import run as run_lib
from ddl.experiments import ClassIncremental
from ddl.experiments import class_incremental as ci
from ddl.learners import Learner
from ddl.learners import cbp as cbp_lib
from ddl.learners import idbd


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.csv')) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow   # test_resume_between_epochs_is_identical runs the experiment; SCR's test the launch
def test_smoke_through_main(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'launch', 'main.py'),
                         f'--config={os.path.join(ROOT, "configs", "cifar100.py")}:smoke',
                         f'--workdir={tmp_path / "w"}'], capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = _rows(tmp_path / 'w')
  steps = lambda v, m: sorted({int(r['step']) for r in rows if r['variant'] == v and r['metric'] == m})
  assert {r['variant'] for r in rows} == {'base', 'head_reset', 'retrained', 'snp', 'cbp'}
  assert steps('base', 'test_accuracy') == list(range(6))      # 3 increments x 2 epochs
  assert steps('cbp', 'dormant_fraction') == [0, 2, 4]         # at increment boundaries
  accuracy = [float(r['value']) for r in rows if r['metric'] in ('test_accuracy', 'val_accuracy')]
  assert all(0 <= a <= 1 for a in accuracy)
  assert sum(float(r['value']) for r in rows if r['variant'] == 'cbp' and r['metric'] == 'replacements') > 0
  for name in ('test_accuracy', 'test_accuracy_minus_retrained', 'dormant_fraction', 'stable_rank_percent'):
    assert os.path.exists(tmp_path / 'w' / 'figures' / f'{name}.png'), name


def test_resume_between_epochs_is_identical(tmp_path):
  """base and cbp: one program (the retrained network's reset is stepped by hand in the tests of the
  `retrained` fixture; its figure is test_figures' baseline test). The evaluator's Hessian and
  plasticity probe are off in the run (they triple the ResNet's compilation; their numbers are tested
  on MLPs in test_diagnostics): their code on the ResNet is traced here."""
  trace_programs(load_config('cifar100', 'smoke,cbp'))
  assert {'hessian_top_eigenvalue', 'plasticity', 'gradient_norm', 'active_fraction'} <= set(trace_programs.evaluated)
  config = cheap_diagnostics(load_config('cifar100', 'smoke,base,cbp'))
  assert_resume_is_identical(config, str(tmp_path / 'whole'), str(tmp_path / 'split'), stop_after_chunks=3, run_whole=True)
  rows = _rows(tmp_path / 'whole')
  steps = lambda v, m: sorted({int(r['step']) for r in rows if r['variant'] == v and r['metric'] == m})
  assert steps('base', 'test_accuracy') == list(range(6))        # 3 increments x 2 epochs
  assert steps('cbp', 'dormant_fraction') == [0, 2, 4]            # at increment boundaries
  for shared in ('active_fraction', 'gradient_norm'):
    assert steps('cbp', shared) == [0, 2, 4, 5], shared           # the evaluator: every 2 epochs and the last
  assert all(0 <= float(r['value']) <= 1 for r in rows if r['metric'] in ('test_accuracy', 'val_accuracy'))
  assert sum(float(r['value']) for r in rows if r['variant'] == 'cbp' and r['metric'] == 'replacements') > 0
  written = plotting.plot_workdir(str(tmp_path / 'whole'))
  assert any(p.endswith('test_accuracy.png') for p in written)


def test_augmentation_keeps_shapes_and_values_and_differs_across_seeds():
  images = ci.normalize(jax.random.randint(jax.random.PRNGKey(0), (8, 32, 32, 3), 0, 256).astype(jnp.uint8),
                        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  augment = jax.jit(ci.augment)                              # jitted: compiles faster than op by op
  a = augment(jax.random.PRNGKey(1), images)
  b = augment(jax.random.PRNGKey(2), images)
  assert a.shape == images.shape and a.dtype == images.dtype
  allowed = np.append(np.unique(np.asarray(images)), 0.0)     # pixels are moved or filled with 0, never mixed
  assert np.isin(np.asarray(a), allowed).all()
  assert not np.array_equal(a, b)
  assert not np.array_equal(a[0], a[1])                      # per example
  # with no padding and no rotation only the flip is left
  plain = np.asarray(jax.jit(jax.vmap(lambda k, x: ci.augment_one(k, x, pad=0, max_degrees=0.0)))(
      jax.random.split(jax.random.PRNGKey(3), 8), images))
  for x, y in zip(np.asarray(images), plain):
    assert np.array_equal(x, y) or np.array_equal(x[:, ::-1], y)
  # a crop after reflect padding keeps a 24x24 window of the flipped or unflipped image, shifted by <= 4
  cropped = np.asarray(jax.jit(lambda k, x: ci.augment_one(k, x, max_degrees=0.0))(jax.random.PRNGKey(4), images[0]))
  x = np.asarray(images[0])
  assert any(np.array_equal(cropped[4:28, 4:28], src[4 + dy:28 + dy, 4 + dx:28 + dx])
             for src in (x, x[:, ::-1]) for dy in range(-4, 5) for dx in range(-4, 5))


def test_learning_rate_schedule_per_increment():
  factors = [float(ci.lr_factor(jnp.asarray(e), (60, 120, 160), 0.2)) for e in (0, 59, 60, 119, 120, 159, 160, 199)]
  np.testing.assert_allclose(factors, [1, 1, 0.2, 0.2, 0.04, 0.04, 0.008, 0.008], rtol=1e-6)
  # the factor scales the step: lr 0.1 with factor 0.5 is lr 0.05
  config = load_config('cifar100', 'smoke,base')
  learner = Learner.of(nets.MLP(hidden=(4,), outputs=3), 'cross_entropy', ('l2', config.optimizer.name), config=config)
  x, y = jnp.ones((5, 2)), jnp.arange(5) % 3
  hparams = dict(config.hparams)
  state = learner.init(jax.random.PRNGKey(0), x, hparams)
  halved = learner.step(state, x, y, jax.random.PRNGKey(1), lr_factor=0.5)[0]
  lower = learner.step(state.replace(hparams={**state.hparams, 'learning_rate': jnp.asarray(0.05)}), x, y,
                       jax.random.PRNGKey(1))[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), halved.params, lower.params)


@pytest.fixture(scope='module')
def retrained():
  """The 'retrained' smoke experiment (network reset at every increment), its data, and its jitted
  init and chunk: one compilation for the tests that step it by hand."""
  config = load_config('cifar100', 'smoke,retrained')
  group = config_lib.groups(config)[0]
  assert group.config.increment_reset == 'network'
  experiment = ClassIncremental(group.config, group)
  data = jax.device_put(ClassIncremental.load_data(config))
  state = jax.jit(experiment.init)(jax.random.PRNGKey(0), group.hparams[0], 0)
  return experiment, data, state, jax.jit(experiment.run_chunk)


def test_early_stopping_restores_the_best_state(retrained):
  experiment, data, state, run_chunk = retrained
  first, values = run_chunk(state, data)                       # epoch 0 of 2: no restore
  assert float(first.best_val) == float(values['val_accuracy'])
  rigged = first.replace(best_val=jnp.full_like(first.best_val, 2.0))   # epoch 0's state stays the best
  last, _ = run_chunk(rigged, data)                            # epoch 1 ends the increment: restored
  jax.tree.map(np.testing.assert_array_equal, last.learner.params, first.learner.params)
  jax.tree.map(np.testing.assert_array_equal, last.learner.batch_stats, first.learner.batch_stats)
  assert float(last.best_val) == -1.0 and int(last.epoch) == 2
  momentum = lambda s: idbd.find_state(s.learner.opt_state, optax.TraceState).trace['fc']['kernel']
  assert not np.array_equal(momentum(last), momentum(first))   # momentum not rolled back


def test_diagnostics_are_taken_on_the_model_before_the_increment_reset(retrained):
  """The original's post-run analysis measures the model saved at an increment's end (restored,
  before its head/network reset) on 1 000 images of the classes of the increment being entered."""
  experiment, data, state, run_chunk = retrained
  for _ in range(2):                                           # increment 0 (2 epochs), restored at its end
    state, _ = run_chunk(state, data)
  before = state.learner.params                                # what the original saved: not reset yet
  fresh = jax.jit(experiment.learner.network.init)(nets.rbg_key(jax.random.fold_in(state.reset_key, 0)),
                                                   jnp.zeros((1, 32, 32, 3)))['params']
  assert not np.isclose(float(metrics.weight_magnitude(before)), float(metrics.weight_magnitude(fresh)))
  after, values = run_chunk(state, data)                       # epoch 2: diagnostics, then the reset
  np.testing.assert_allclose(values['weight_magnitude'], metrics.weight_magnitude(before), rtol=1e-6)
  order = experiment.order(state)
  per = experiment.config.classes_per_increment
  probe, _ = jax.jit(experiment.probe)(data['train'], order, jnp.asarray(per), jnp.asarray(2 * per),
                                       jax.random.fold_in(state.epoch_key, -1 - state.epoch))
  expected = jax.jit(experiment.diagnostics)(state.learner, probe)   # jitted: compiles faster than op by op
  for name in ('dormant_fraction', 'stable_rank', 'effective_rank'):
    np.testing.assert_allclose(values[name], expected[name], rtol=1e-5, err_msg=name)
  # and the epoch trained from the re-initialised network: one epoch moves the weights far less than
  # the distance between two initialisations
  distance = lambda a, b: sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert distance(after.learner.params, fresh) < 0.1 * distance(after.learner.params, before)


def test_probes_draw_the_entering_and_the_seen_classes():
  """The chunk's probe: the entering increment's classes (the paper's diagnostics); the evaluator's:
  every class seen so far."""
  config = load_config('cifar100', 'smoke,base')
  group = config_lib.groups(config)[0]
  experiment = ClassIncremental(group.config, group)
  d = config.data
  per_class = d.val_per_class + d.train_per_class
  # every image is filled with its (class, index) code, so a probe image names its source
  code = np.arange(d.num_classes * per_class).reshape(d.num_classes, per_class)
  train = jnp.asarray(np.broadcast_to(np.stack([code // 256, code % 256, code * 0], -1)[:, :, None, None, :],
                                      (d.num_classes, per_class, 32, 32, 3)).astype(np.uint8))
  order = jnp.asarray([4, 1, 5, 0, 3, 2])
  source = lambda probe: probe[:, 0, 0, 0].astype(int) * 256 + probe[:, 0, 0, 1]
  probe, classes = map(np.asarray, experiment.probe(train, order, 2, 4, jax.random.PRNGKey(3)))
  assert probe.shape == (config.probe_size, 32, 32, 3)
  assert set((source(probe) // per_class).tolist()) == {5, 0}   # increment 1's classes, order[2:4]
  np.testing.assert_array_equal(source(probe) // per_class, classes)
  assert len(set(source(probe).tolist())) == config.probe_size  # drawn without replacement
  assert (source(probe) % per_class < d.val_per_class).any()    # validation images included
  other, _ = experiment.probe(train, order, 2, 4, jax.random.PRNGKey(4))
  assert not np.array_equal(other, probe)                       # a random draw
  hparams = {k: jnp.float32(v) for k, v in group.hparams[0].items()}
  state = experiment.init(jax.random.PRNGKey(0), hparams, 0).replace(epoch=jnp.asarray(3))
  assert int(experiment.seen_after(state)) == 4                 # epochs 0-1: 2 classes, 2-3: 4 classes
  probe, _ = experiment.probe(train, order, 0, experiment.seen_after(state), jax.random.PRNGKey(5))
  assert set((source(np.asarray(probe)) // per_class).tolist()) == {4, 1, 5, 0}


def test_resnet18_size_topology_and_convolutions():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  shapes = jax.eval_shape(nets.ResNet18().init, jax.random.PRNGKey(0), x)
  assert sum(np.prod(p.shape) for p in jax.tree.leaves(shapes['params'])) == 11_224_932   # 11.22 M + conv biases
  layers = topology.unit_layers(nets.ResNet18())
  assert len(layers) == 17
  assert sum(shapes['params'][l.kernel[0]]['kernel'].shape[-1] for l in layers) == 3904
  assert layers[2].consumer == ('block1_conv1', 'kernel') and layers[-1].consumer == ('fc', 'kernel')
  assert not any('down' in '/'.join(p) for l in layers for p in (l.kernel, l.consumer) + l.norm_ones)
  ten = topology.unit_layers(nets.ResNet18(blocks_per_stage=1))     # the smoke's ResNet-10
  assert [l.kernel[0] for l in ten] == ['stem'] + [f'block{i}_{c}' for i in range(4) for c in ('conv1', 'conv2')]
  assert [l.consumer[0] for l in ten] == [l.kernel[0] for l in ten[1:]] + ['fc']
  small = nets.ResNet18(width=4, outputs=6)
  variables = jax.jit(small.init)(jax.random.PRNGKey(1), x)   # jitted: compiles faster than op by op
  out_p, feats = jax.jit(small.apply)(variables, x)
  out_l, _ = jax.jit(nets.ResNet18(width=4, outputs=6, conv='lax').apply)(variables, x)
  np.testing.assert_allclose(out_p, out_l, rtol=1e-4, atol=1e-4)
  assert feats['block7_out'].shape == (2, 32) and feats['block6_out'].shape == (2, 4, 4, 32)
  kernel = variables['params']['block2_conv1']['kernel']    # He normal: std sqrt(2 / fan_in)
  assert abs(float(kernel.std()) - np.sqrt(2 / (3 * 3 * 4))) < 0.1


def test_cbp_in_the_resnet_resets_bn_statistics_of_chosen_channels_only():
  config = load_config('cifar100', 'smoke,cbp')
  network = nets.ResNet18(width=4, outputs=6, conv='lax', blocks_per_stage=1)   # every kind of layer and join
  make = lambda rate: Learner.of(network, 'cross_entropy', ('l2', config.optimizer.name) + (('cbp',) if rate else ()),
                                 config=config, replacement_rate=rate)
  hparams = {**dict(config.hparams), 'replacement_rate': 0.3, 'maturity_threshold': 0.0}
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 32, 32, 3))
  y = jnp.arange(6)
  state = jax.jit(make(0.3).init)(jax.random.PRNGKey(1), x, hparams)   # jitted: compiles faster than op by op
  with_cbp, out = jax.jit(make(0.3).step)(state, x, y, jax.random.PRNGKey(2))
  no_cbp = make(0.0)   # the same step without CBP: no CBP state, no CBP hyperparameters
  without, _ = jax.jit(no_cbp.step)(state.replace(methods={}, hparams={n: state.hparams[n] for n, _ in no_cbp.traced}),
                                    x, y, jax.random.PRNGKey(2))
  assert int(out.num_replaced) > 0
  changed = {}
  for layer in topology.unit_layers(network):
    bn = layer.norm_ones[0][0]
    stats, plain = with_cbp.batch_stats[bn], without.batch_stats[bn]
    mask = (np.asarray(stats['mean']) != np.asarray(plain['mean'])) | (np.asarray(stats['var']) != np.asarray(plain['var']))
    np.testing.assert_array_equal(np.asarray(stats['mean'])[mask], 0.0)
    np.testing.assert_array_equal(np.asarray(stats['var'])[mask], 1.0)
    np.testing.assert_array_equal(np.asarray(with_cbp.params[bn]['scale'])[mask], 1.0)
    np.testing.assert_array_equal(np.asarray(with_cbp.params[bn]['bias'])[mask], 0.0)
    kernel = np.asarray(with_cbp.params[layer.kernel[0]]['kernel'])
    assert (kernel[..., mask] != np.asarray(without.params[layer.kernel[0]]['kernel'])[..., mask]).all()   # fresh
    changed[layer.kernel[0]] = mask
  for layer in topology.unit_layers(network):       # outgoing weights zeroed (except into units reset themselves)
    consumer = np.asarray(with_cbp.params[layer.consumer[0]]['kernel'])[..., changed[layer.kernel[0]], :]
    assert np.all(consumer[..., ~changed.get(layer.consumer[0], np.zeros(consumer.shape[-1], bool))] == 0)
  reset_channels = sum(m.sum() for m in changed.values())
  assert reset_channels == int(out.num_replaced)
  for name in with_cbp.batch_stats:                                       # the downsample BN is not touched
    if 'down' in name:
      jax.tree.map(np.testing.assert_array_equal, with_cbp.batch_stats[name], without.batch_stats[name])


def test_cumulative_statistic_is_not_reset_nor_decayed():
  layer = topology.unit_layers(nets.ResNet18(width=4))[-1]       # the pooled 32 -> fc layer
  params = {'block7_conv2': {'kernel': jnp.ones((3, 3, 32, 32)), 'bias': jnp.zeros(32)},
            'fc': {'kernel': jnp.ones((32, 5)), 'bias': jnp.zeros(5)}}
  transform = cbp_lib.continual_backprop((layer,), replacement_rate=1.0, maturity_threshold=0, decay_rate=0.9,
                                         count_base='width', count_mode='accumulate', utility_statistic='cumulative')
  state = transform.init(params)
  h = jnp.tile(jnp.arange(32.0), (4, 1))
  for _ in range(2):
    _, _, state, info = transform.update(params, None, state, {layer.features: h}, jax.random.PRNGKey(0))
  assert int(info.num_replaced) > 0
  np.testing.assert_allclose(state.layers[layer.features].utility, 2 * 0.1 * np.arange(32.0), rtol=1e-6)
  with pytest.raises(ValueError, match='cumulative'):
    cbp_lib.continual_backprop((layer,), replacement_rate=1.0, maturity_threshold=0, util_type='adaptation',
                               utility_statistic='cumulative')


def test_missing_data_and_bad_settings_are_one_clear_error(tmp_path):
  config = load_config('cifar100', 'smoke,base')
  config.data.source = 'tfds'
  config.data.num_classes = 100
  config.classes_per_increment = 5
  config.batch_size = 15
  config.data.data_dir = str(tmp_path / 'nothing')
  config.data.cache_dir = ''
  with pytest.raises(config_lib.ConfigError, match='cifar100'):
    run_lib.run(config, str(tmp_path / 'w'))
  config = load_config('cifar100', 'smoke,base')
  config.increment_reset = 'all'
  with pytest.raises(config_lib.ConfigError, match='increment_reset'):
    config_lib.validate(config, ClassIncremental)
  config = load_config('cifar100', 'smoke,base')
  config.batch_size = 7
  with pytest.raises(config_lib.ConfigError, match='batch_size'):
    config_lib.validate(config, ClassIncremental)
