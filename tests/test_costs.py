"""Flops and bytes by kind of instruction from XLA's optimized HLO (ddl.costs)."""
import jax
import jax.numpy as jnp
import numpy as np

from ddl import costs


def test_conv_and_dot_in_a_scan_are_counted_per_trip_and_shares_sum_to_one():
  def step(carry, _):
    x, kernel, w = carry
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    z = jnp.tanh(y.reshape(4, -1) @ w)
    return (x + z.sum(), kernel, w), z.sum()

  run = lambda x, kernel, w: jax.lax.scan(step, (x, kernel, w), None, length=7)
  args = (np.ones((4, 8, 8, 3), np.float32), np.ones((3, 3, 3, 5), np.float32), np.ones((320, 16), np.float32))
  result = costs.breakdown(jax.jit(run).lower(*args).compile().as_text())
  flops = result['flops']
  assert flops['conv'] == 7 * 2 * (4 * 8 * 8 * 5) * (3 * 3 * 3)     # 7 trips x 2 x outputs x kernel per output
  assert flops['dot'] == 7 * 2 * (4 * 16) * 320
  assert 0 < flops['other'] < flops['dot'] and result['unknown_trip_loops'] == 0
  for share in (result['flop_share'], result['byte_share']):
    assert share['conv'] > 0 and share['dot'] > 0 and share['other'] > 0
    np.testing.assert_allclose(sum(share.values()), 1.0)


def test_no_convolutions_and_a_loop_of_unknown_length_counted_once():
  def run(a, n):
    return jax.lax.while_loop(lambda c: c[1] < n, lambda c: (jnp.exp(c[0] @ c[0]), c[1] + 1), (a, 0))[0]
  result = costs.breakdown(jax.jit(run).lower(np.ones((8, 8), np.float32), 3).compile().as_text())
  assert result['flops']['conv'] == 0 and result['flops']['dot'] == 2 * 8 * 8 * 8
  assert result['flop_share']['other'] > 0 and result['unknown_trip_loops'] == 1


def test_library_calls_count_their_result_not_their_scratch_workspace():
  # as XLA's GPU backend writes a vmapped convolution (cuDNN) and a matmul (cuBLAS): a tuple of the
  # result and a scratch buffer, which must not count as output elements
  hlo = '''HloModule gpu_like

ENTRY %main (p0: f32[4,16,16,24], p1: f32[5,5,3,256], p2: f32[64,320], p3: f32[320,16]) -> f32[4,16,16,256] {
  %p0 = f32[4,16,16,24]{3,2,1,0} parameter(0)
  %p1 = f32[5,5,3,256]{3,2,1,0} parameter(1)
  %p2 = f32[64,320]{1,0} parameter(2)
  %p3 = f32[320,16]{1,0} parameter(3)
  %cudnn-conv.1 = (f32[4,16,16,256]{3,2,1,0}, u8[67108864]{0}) custom-call(f32[4,16,16,24]{3,2,1,0} %p0, f32[5,5,3,256]{3,2,1,0} %p1), window={size=5x5 pad=2_2x2_2}, dim_labels=b01f_01io->b01f, feature_group_count=8, custom_call_target="__cudnn$convForward"
  %gemm.1 = (f32[64,16]{1,0}, s8[4194304]{0}) custom-call(f32[64,320]{1,0} %p2, f32[320,16]{1,0} %p3), custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}
  ROOT %get-tuple-element.1 = f32[4,16,16,256]{3,2,1,0} get-tuple-element((f32[4,16,16,256]{3,2,1,0}, u8[67108864]{0}) %cudnn-conv.1), index=0
}
'''
  flops = costs.breakdown(hlo)['flops']
  assert flops['conv'] == 2 * (4 * 16 * 16 * 256) * (5 * 5 * 3)   # 8 groups of 3 input channels each
  assert flops['dot'] == 2 * (64 * 16) * 320
