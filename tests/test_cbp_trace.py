"""Replays recorded PyTorch CBP (GnT) traces step by step with teacher forcing.

The traces (`tests/data/trace_*_cbp.npz`) were written by `torch_reference.py --trace`, an
independent PyTorch re-implementation of the original GnT code (Dohare et al.). For every step t we
take the parameters and CBP state stored *before* step t, run one step of ours (forward, plain SGD,
then `ddl.learners.cbp`), and check that

  * we pick the same units to re-initialise (exactly, or differing only among mature units whose
    bias-corrected utility is bit-equal to the k-th smallest: torch.topk breaks such ties, e.g.
    dead units at utility 0, in an unspecified order);
  * our CBP state after the step (utility, mean activation, ages, replacement accumulator) and our
    parameters after the step equal the stored ones at t+1, except the fresh input weights of
    replaced units (random: checked to lie within +-init_bound), and replaced units have zero bias
    and zero outgoing weights.

SCR (20-5-1, MSE, Bernoulli count mode) replays the recorded Bernoulli draws through
`continual_backprop(...).update(..., draws=...)`; MNIST (784-16-16-16-10, cross-entropy,
accumulate mode) additionally runs `Learner.step` and checks it matches the direct path.

The step compiles at the LLVM level of real runs, not the suite's (`trace_replay.jit`); its inputs
are numpy arrays, its key is drawn inside it.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trace_replay import assert_close, jit, load, only_jitted_programs, same_up_to_ties
from ddl import config as config_lib
from ddl import nets
from ddl.learners import cbp as cbp_lib
from ddl.learners import learner as learner_lib

TRACES = ('trace_scr_cbp.npz', 'trace_mnist_cbp.npz')

# Tolerance of the float64 accumulator (ours is float32).
ACC_ATOL = 1e-5


def ours(layer: str) -> str:
  """Trace layer name -> our parameter / features name."""
  return 'output' if layer == 'out' else layer.replace('hidden.', 'hidden_')


class Replay:
  """Our learner, built from a trace's hyper-parameters, and the jitted per-step function."""

  def __init__(self, T):
    self.T = T
    self.N = len(T['x'])
    self.layers = [str(s) for s in T['layers']]
    self.hidden = [str(s) for s in T['hidden_layers']]
    assert str(T['semantics']) == 'GnT'
    assert float(T['momentum']) == 0 and float(T['weight_decay']) == 0, 'plain SGD only'
    widths = {T['p/%s/weight' % h].shape[1] for h in self.hidden}
    assert len(widths) == 1, widths
    self.accumulate = bool(T['accumulate'])
    self.util_type = str(T['util_types'][int(T['util_type'])])
    self.loss = {'mse': 'mse', 'cross_entropy': 'cross_entropy'}[str(T['loss_type'])]
    assert str(T['activation']) == 'relu'
    network = nets.MLP(hidden=(widths.pop(),) * len(self.hidden),
                       outputs=T['p/out/weight'].shape[1], activation='relu', weight_init='kaiming')
    config = config_lib.base_config()
    config.optimizer.update(name='sgd', momentum=0.0, eps=1e-8)
    config.cbp.update(
        util_type=self.util_type, count_mode='accumulate' if self.accumulate else 'bernoulli',
        count_base='eligible', reset_optimizer_state=False, next_bias_correction=False)
    self.learner = learner_lib.Learner.of(network, self.loss, ('l2', 'sgd', 'cbp'), config=config,
                                          replacement_rate=float(T['replacement_rate']))
    assert self.learner.replaces_units
    hp = dict(learning_rate=float(T['lr']), weight_decay=0.0,
              replacement_rate=float(T['replacement_rate']),
              maturity_threshold=float(T['maturity_threshold']), decay_rate=float(T['decay_rate']))
    self.hparams = {k: np.float32(v) for k, v in hp.items()}
    assert set(self.hparams) == {n for n, _ in self.learner.traced}
    self.step = jit(self._step)

  # --- trace <-> ours ---

  def at(self, key, t):
    """Stored value of `key` before step t (t == N: after the last step)."""
    return self.T[key][t] if t < self.N else self.T['final/' + key]

  def params(self, t):
    return {ours(l): {'kernel': self.at('p/%s/weight' % l, t).T,
                      'bias': self.at('p/%s/bias' % l, t)} for l in self.layers}

  def cbp_state(self, t):
    return cbp_lib.CBPState(layers={ours(h): cbp_lib.LayerState(
        utility=self.at('cbp/%s/util' % h, t),
        mean_activation=self.at('cbp/%s/mean_act' % h, t),
        ages=self.at('cbp/%s/ages' % h, t).astype(np.int32),
        accumulated=np.float32(self.at('cbp/%s/acc' % h, t))) for h in self.hidden})

  def draws(self, t):
    if self.accumulate:
      return None
    return {ours(h): self.T['draw/' + h][t].astype(np.float32) for h in self.hidden}

  # --- one step of ours ---

  def _step(self, params, cbp_state, x, y, draws, t):
    learner, hp = self.learner, self.hparams
    key = jax.random.fold_in(jax.random.key(1234), t)

    def objective(p):
      output, features = learner.apply(p, x)
      return learner_lib.loss_fn(learner.loss, output, y), features

    (loss, features), grads = jax.value_and_grad(objective, has_aux=True)(params)
    optimizer = learner.make_optimizer(hp)
    opt_state = optimizer.init(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    sgd_params = optax.apply_updates(params, updates)
    make_cbp = learner.hooks['cbp'].transform
    new_params, _, new_state, info = make_cbp(hp).update(
        sgd_params, opt_state, cbp_state, features, key, draws=draws)
    # The same CBP step with replacement rate 0: the pre-reset running utility, from which the
    # bias-corrected utility that ranked the units (for judging ties).
    _, _, stats, _ = make_cbp(dict(hp, replacement_rate=jnp.zeros((), jnp.float32))).update(
        sgd_params, opt_state, cbp_state, features, key, draws=draws)
    decay = hp['decay_rate']
    bc = {name: s.utility / (1.0 - decay ** s.ages.astype(jnp.float32)) for name, s in stats.layers.items()}
    out = dict(loss=loss, params=new_params, state=new_state, replaced=info.replaced,
               num_replaced=info.num_replaced, bc=bc, sgd_params=sgd_params)
    if draws is None:   # the Learner draws its own Bernoulli samples: only comparable without draws
      lstate = learner_lib.LearnerState(params=params, opt_state=optimizer.init(params), hparams=hp,
                                        methods={'cbp': cbp_state})
      lstate, lout = learner.step(lstate, x, y, key)
      out['learner'] = dict(params=lstate.params, state=lstate.methods['cbp'], loss=lout.loss,
                            num_replaced=lout.num_replaced)
    return out


@pytest.mark.parametrize('name', TRACES)
@only_jitted_programs()
def test_cbp_matches_torch_trace(name):
  start = time.time()
  T = load(name)
  r = Replay(T)
  bounds = [float(b) for b in T['init_bound']]
  assert len(bounds) == len(r.hidden)
  mt = int(T['maturity_threshold'])
  n_ours = n_trace = 0
  ties = []
  for t in range(r.N):
    out = jax.device_get(r.step(r.params(t), r.cbp_state(t), T['x'][t],
                                T['y'][t].astype(np.int32) if r.loss == 'cross_entropy' else T['y'][t],
                                r.draws(t), t))
    msg = '%s step %d' % (name, t)
    assert_close(out['loss'], T['loss'][t], msg + ' loss', rtol=1e-5, atol=1e-6)

    # 1. the chosen units
    skip = {}        # units whose choice differs by a tie: state and weights not comparable
    for i, h in enumerate(r.hidden):
      n = ours(h)
      mask, ref = np.asarray(out['replaced'][n]), T['replaced/' + h][t]
      mature = T['cbp/%s/ages' % h][t] + 1 > mt
      bc = np.asarray(out['bc'][n])
      # our ranking utility is the reference's (its stored bc_util at t+1 is the pre-reset value)
      assert_close(bc, r.at('cbp/%s/bc_util' % h, t + 1), msg + ' %s bias-corrected utility' % h,
                   rtol=1e-5, atol=1e-6)
      agree, tie = same_up_to_ties(mask, ref, bc, mature)
      assert agree, ('%s %s: replaced ours %s, trace %s; bias-corrected utility %s, mature %s' % (
          msg, h, np.flatnonzero(mask), np.flatnonzero(ref), bc, mature))
      if tie:
        ties.append((t, h, np.flatnonzero(mask).tolist(), np.flatnonzero(ref).tolist(),
                     float(np.sort(bc[mature])[int(ref.sum()) - 1])))
      skip[n] = mask ^ ref
      n_ours += int(mask.sum())
      n_trace += int(ref.sum())
      # ages == 0 after the step marks exactly the replaced units (the Learner path's only record)
      np.testing.assert_array_equal(np.asarray(out['state'].layers[n].ages) == 0, mask, err_msg=msg)
    assert int(out['num_replaced']) == sum(int(out['replaced'][ours(h)].sum()) for h in r.hidden)

    # 2. the CBP state after the step
    for h in r.hidden:
      n, s = ours(h), out['state'].layers[ours(h)]
      keep = ~skip[n]
      assert_close(s.utility, r.at('cbp/%s/util' % h, t + 1), msg + ' %s utility' % h, where=keep)
      assert_close(s.mean_activation, r.at('cbp/%s/mean_act' % h, t + 1), msg + ' %s mean_act' % h,
                   where=keep)
      np.testing.assert_array_equal(np.asarray(s.ages)[keep], r.at('cbp/%s/ages' % h, t + 1)[keep],
                                    err_msg=msg + ' %s ages' % h)
      assert s.ages.dtype == np.int32
      assert_close(s.accumulated, r.at('cbp/%s/acc' % h, t + 1), msg + ' %s acc' % h, rtol=0, atol=ACC_ATOL)

    # 3. the parameters after the step
    for j, l in enumerate(r.layers):
      p, sgd = out['params'][ours(l)], out['sgd_params'][ours(l)]
      W_ref, b_ref = r.at('p/%s/weight' % l, t + 1).T, r.at('p/%s/bias' % l, t + 1)
      kernel, bias = np.asarray(p['kernel']), np.asarray(p['bias'])
      col_keep = np.ones(kernel.shape[1], bool)     # units (columns) of this layer comparable
      row_keep = np.ones(kernel.shape[0], bool)     # inputs (rows) of this layer comparable
      fresh = np.zeros(kernel.shape[1], bool)       # our replaced units of this layer
      if j < len(r.hidden):
        h = r.hidden[j]
        mask, ref = np.asarray(out['replaced'][ours(h)]), T['replaced/' + h][t]
        fresh = mask
        col_keep = ~(mask | ref)                    # fresh input weights: random, not comparable
        b = bounds[j]
        assert b == pytest.approx(np.sqrt(2.0) * np.sqrt(3.0 / kernel.shape[0]), rel=1e-6)
        assert np.all(np.abs(kernel[:, mask]) <= np.float32(b)), msg + ' %s fresh weights out of bound' % h
        assert np.all(np.abs(W_ref[:, ref]) <= np.float32(b)), msg + ' trace fresh weights out of bound'
        assert not np.any(kernel[:, mask] == np.asarray(sgd['kernel'])[:, mask]), msg + ' not re-drawn'
        assert np.all(bias[mask] == 0), msg + ' %s bias of replaced units' % h
        assert np.all(b_ref[ref] == 0)
        # bias: compare everywhere except units whose choice differs by a tie
        assert_close(bias, b_ref, msg + ' %s bias' % l, where=~skip[ours(h)])
      else:
        assert_close(bias, b_ref, msg + ' %s bias' % l)
      if j > 0:                                     # rows read from the previous hidden layer
        prev = ours(r.hidden[j - 1])
        mask = np.asarray(out['replaced'][prev])
        # zero, except where the reading unit is itself replaced in this step: the previous
        # layer's reset zeroes the row, then this layer's reset draws the unit's whole input
        # column afresh (the original resets the layers in this order too)
        assert np.all(kernel[np.ix_(mask, ~fresh)] == 0), msg + ' %s outgoing weights of replaced units' % l
        ref_prev = T['replaced/' + r.hidden[j - 1]][t]
        ref_fresh = T['replaced/' + r.hidden[j]][t] if j < len(r.hidden) else fresh
        assert np.all(W_ref[np.ix_(ref_prev, ~ref_fresh)] == 0)
        row_keep = ~skip[prev]
      assert_close(kernel[np.ix_(row_keep, col_keep)], W_ref[np.ix_(row_keep, col_keep)],
                   msg + ' %s kernel' % l)

    # 4. the Learner's own step (accumulate mode: no draws to replay) is the same step
    if 'learner' in out:
      lo = out['learner']
      assert int(lo['num_replaced']) == int(out['num_replaced'])
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=msg),
                   (lo['params'], lo['state'], lo['loss']), (out['params'], out['state'], out['loss']))

  print('\n%s: %d steps, units replaced ours %d / trace %d, ties %d %s, %.1fs' % (
      name, r.N, n_ours, n_trace, len(ties), ties, time.time() - start))
  assert n_trace > 0, 'the trace has no replacements: the test would pass vacuously'
  assert n_ours == n_trace
