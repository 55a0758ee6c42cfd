// L2 kernels.
//
// pgd_step (2 kernels): sums  - per (row, chunk) tile, partial S_gg, S_vg, S_vv -> part[tile][3];
//                       write (kPgdWrite) - every tile reduces its row's partials (same order in every tile, so
//                               every tile gets the same bits), forms c and the scale, writes out.
// apgd_step (3 kernels): sums as above; d2 sums (kApgdNorm) - recompute z, w and d2 = w - x, partial ||d2||^2
//                        -> part2[tile]; write (kApgdWrite) - recompute z and d2, write z and x_next.
// project (1 kernel, one block per row): K-ary search for t over float32 bit patterns (<= 8 passes, the
//   first one tests t = 1), write.
// Bad numbers: a tile with a NaN / Inf entry stores a NaN S_gg (||d2||^2 for x_prev), the projection ORs a
// per-thread flag over the block; either way, or with an eps / step that is not finite and > 0, the whole
// output row is written as NaN. The write passes' threads report their check bits (common.cuh, report): the
// rows' rule, and the x entries' range (the projection: in its search passes, which read every x).
#include "common.cuh"

namespace rft {
namespace cuda {
namespace detail {
namespace {

using Sum1 = BlockSum<float, 1, kTileBlock>;
using Sum3 = BlockSum<float, 3, kTileBlock>;

struct L2Step {
  float c;  // step / (||g|| + 1e-12)
  float s;  // min(eps, n1) / (n1 + 1e-12)
  bool ok;  // the row holds no bad number
};

// Per-row scalars of AutoAttack's L2 step from S_gg, S_vg, S_vv (docs/kernels.md):
// c = step / (sqrt(S_gg) + 1e-12); n1 = sqrt(max(S_vv + 2c S_vg + c^2 S_gg, 0)); s = min(eps, n1) / (n1 + 1e-12).
__device__ __forceinline__ L2Step l2_step_scalars(const Arr<float, 3>& t, float step, float eps) {
  const float gg = t.v[0], vg = t.v[1], vv = t.v[2];
  const float c = __fdiv_rn(step, __fadd_rn(__fsqrt_rn(gg), kL2Tiny));
  // c^2 S_gg as c * (c * S_gg): c can be ~step * 1e12 when g ~ 0; this order cannot overflow to inf * 0.
  const float n1sq = __fadd_rn(__fadd_rn(vv, __fmul_rn(__fmul_rn(2.f, c), vg)), __fmul_rn(c, __fmul_rn(c, gg)));
  const float n1 = __fsqrt_rn(fmaxf(n1sq, 0.f));
  L2Step r;
  r.c = c;
  r.s = __fdiv_rn(fminf(eps, n1), __fadd_rn(n1, kL2Tiny));
  r.ok = !is_nan_f(gg) && positive_f(step) && positive_f(eps);  // S_gg (a sum of squares) is NaN only for a bad entry
  return r;
}

// clamp(x + d1 * s, 0, 1) with d1 = (x_adv - x) + c * g: the pgd_step output / APGD's z.
__device__ __forceinline__ float l2_point(float a, float b, float g, const L2Step& r) {
  const float d1 = __fadd_rn(__fsub_rn(a, b), __fmul_rn(r.c, g));
  return clamp01(__fadd_rn(b, __fmul_rn(d1, r.s)));
}

// min(eps, n) / (n + 1e-12) for n = sqrt(ssq)
__device__ __forceinline__ float l2_scale(float ssq, float eps) {
  const float n = __fsqrt_rn(fmaxf(ssq, 0.f));
  return __fdiv_rn(fminf(eps, n), __fadd_rn(n, kL2Tiny));
}

// The block-wide total of one row's per-chunk partials (part[row][chunk][K]), in a fixed order.
template <int K>
__device__ __forceinline__ Arr<float, K> row_total(const float* __restrict__ part, int64_t row, int64_t chunks,
                                                   typename BlockSum<float, K, kTileBlock>::Storage& st) {
  Arr<float, K> acc = arr_zero<float, K>();
  const float* p = part + row * chunks * K;
  for (int64_t c = threadIdx.x; c < chunks; c += kTileBlock) {
#pragma unroll
    for (int k = 0; k < K; ++k) acc.v[k] += p[c * K + k];
  }
  return BlockSum<float, K, kTileBlock>::all(st, acc);
}

template <typename T>
__global__ void __launch_bounds__(kTileBlock)
    l2_sums_kernel(float* __restrict__ part, const T* __restrict__ xa, const T* __restrict__ x,
                   const T* __restrict__ g, Tiling tl, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
  __shared__ typename Sum3::Storage st;
  for (int64_t tile = blockIdx.x; tile < tl.tiles; tile += gridDim.x) {
    int64_t row, begin, end;
    tile_range(tl, tile, row, begin, end);
    Arr<float, 3> acc = arr_zero<float, 3>();
    bool bad = false;
    for_range<VEC, kTileBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float a[W], b[W], gv[W];
      load<W>(xa + i, a);
      load<W>(x + i, b);
      load<W>(g + i, gv);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const float v = __fsub_rn(a[k], b[k]);
        acc.v[0] += gv[k] * gv[k];
        acc.v[1] += v * gv[k];
        acc.v[2] += v * v;
        bad |= !(finite_f(a[k]) && finite_f(b[k]) && finite_f(gv[k]));
      }
    });
    acc.v[0] = poison(!bad, acc.v[0]);
    const Arr<float, 3> tot = Sum3::to_thread0(st, acc);
    if (threadIdx.x == 0) {
#pragma unroll
      for (int k = 0; k < 3; ++k) part[tile * 3 + k] = tot.v[k];
    }
    __syncthreads();  // st is reused by the next tile
  }
}

// The passes of the steps after l2_sums_kernel, one per PASS: kPgdWrite writes out; kApgdNorm sums ||d2||^2
// (d2 = w - x, APGD's momentum point w of z) per tile into part2; kApgdWrite writes z and x_next. Each pass
// recomputes z (and d2) from the inputs.
enum Pass : int { kPgdWrite, kApgdNorm, kApgdWrite };

template <typename T, int PASS>
__global__ void __launch_bounds__(kTileBlock)
    l2_step_kernel(T* __restrict__ out, T* __restrict__ z_out, const T* __restrict__ xa, const T* __restrict__ xp,
                   const T* __restrict__ x, const T* __restrict__ g, const float* __restrict__ step,
                   const float* __restrict__ eps, const float* __restrict__ part, float* __restrict__ part2,
                   float mom_a, float mom_b, int* __restrict__ flag, Tiling tl, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
  __shared__ typename Sum3::Storage st3;
  __shared__ typename Sum1::Storage st1;
  bool row_bad = false, outside = false;  // the write passes' check bits
  for (int64_t tile = blockIdx.x; tile < tl.tiles; tile += gridDim.x) {
    int64_t row, begin, end;
    tile_range(tl, tile, row, begin, end);
    const float e = eps[row];
    const L2Step r = l2_step_scalars(row_total<3>(part, row, tl.chunks, st3), step[row], e);
    float s2 = 0.f;
    bool next_ok = false;
    if constexpr (PASS == kApgdWrite) {
      const float n2sq = row_total<1>(part2, row, tl.chunks, st1).v[0];
      s2 = l2_scale(n2sq, e);
      next_ok = r.ok && !is_nan_f(n2sq);
    }
    if constexpr (PASS != kApgdNorm) row_bad |= !(PASS == kPgdWrite ? r.ok : next_ok);  // next_ok covers r.ok
    Arr<float, 1> acc = arr_zero<float, 1>();
    bool bad = false;
    for_range<VEC, kTileBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float a[W], p[W], b[W], gv[W];
      load<W>(xa + i, a);
      if constexpr (PASS != kPgdWrite) load<W>(xp + i, p);
      load<W>(x + i, b);
      load<W>(g + i, gv);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        if constexpr (PASS != kApgdNorm) outside |= !in_box(b[k]);
        const float z = l2_point(a[k], b[k], gv[k], r);
        if constexpr (PASS == kPgdWrite) {
          a[k] = poison(r.ok, z);
        } else {
          const float d2 = __fsub_rn(momentum_point(a[k], z, p[k], mom_a, mom_b), b[k]);
          if constexpr (PASS == kApgdNorm) {
            acc.v[0] += d2 * d2;
            bad |= !finite_f(p[k]);
          } else {
            gv[k] = poison(r.ok, z);
            a[k] = poison(next_ok, clamp01(__fadd_rn(b[k], __fmul_rn(d2, s2))));
          }
        }
      }
      if constexpr (PASS == kApgdWrite) store<W>(z_out + i, gv);
      if constexpr (PASS != kApgdNorm) store<W>(out + i, a);
    });
    if constexpr (PASS == kApgdNorm) {
      acc.v[0] = poison(!bad, acc.v[0]);  // ||d2||^2 NaN: a bad x_prev entry
      const Arr<float, 1> tot = Sum1::to_thread0(st1, acc);
      if (threadIdx.x == 0) part2[tile] = tot.v[0];
      __syncthreads();  // st1 is reused by the next tile
    }
  }
  report(flag, row_bad, outside);
}

// Exact projection onto the L2 ball ∩ box, one block per row: out = x + clip(t v, -x, 1 - x) with t the
// largest float32 in [0, 1] with f(t) = sum clip(t v, -x, 1 - x)^2 <= eps^2 (t = 1: out = clamp(x_adv, 0, 1)).
// At most 8 search passes (the first one tests t = 1) and the write pass.
template <typename T>
__global__ void __launch_bounds__(kRowBlock)
    l2_project_kernel(T* __restrict__ out, const T* __restrict__ xa, const T* __restrict__ x,
                      const float* __restrict__ eps, int* __restrict__ flag, int64_t D, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
  constexpr int K = kSearchK;
  using RowSumK = BlockSum<float, K, kRowBlock>;
  __shared__ typename RowSumK::Storage stk;
  const int64_t row = blockIdx.x;
  const int64_t begin = row * D;
  const int64_t end = begin + D;
  const float e = eps[row];
  const float e2 = __fmul_rn(e, e);

  // Ranks: the bits of t in [0, 1]; f(0) = 0 <= eps^2 holds at lo = 0.
  uint32_t t_lo = 0u, t_hi = kOneBits;
  float f_lo = 0.f, f_fail = 0.f;
  bool bad = false;      // this thread read a NaN / Inf entry (the search makes at least one pass)
  bool outside = false;  // ... or an x entry outside [0, 1]
  kary_search<K, kRowBlock, float>(
      t_lo, t_hi, f_lo, f_fail, stk,
      [&](const uint32_t (&cand)[K], Arr<float, K>& acc) {
        float t[K];
#pragma unroll
        for (int j = 0; j < K; ++j) t[j] = __uint_as_float(cand[j]);
        for_range<VEC, kRowBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
          constexpr int W = decltype(w)::value;
          float a[W], b[W];
          load<W>(xa + i, a);
          load<W>(x + i, b);
#pragma unroll
          for (int k = 0; k < W; ++k) {
            const float v = __fsub_rn(a[k], b[k]);
            const float lo = -b[k];
            const float hi = __fsub_rn(1.f, b[k]);
            bad |= !(finite_f(a[k]) && finite_f(b[k]));
            outside |= !in_box(b[k]);
#pragma unroll
            for (int j = 0; j < K; ++j) {
              const float c = fminf(fmaxf(__fmul_rn(t[j], v), lo), hi);
              acc.v[j] += c * c;
            }
          }
        });
      },
      [&](float f) { return f <= e2; });
  const bool ok = __syncthreads_or(bad) == 0 && positive_f(e);  // block-uniform
  report(flag, !ok, outside);

  if (t_lo == kOneBits) {  // inside the ball (block-uniform branch)
    for_range<VEC, kRowBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float a[W];
      load<W>(xa + i, a);
#pragma unroll
      for (int k = 0; k < W; ++k) a[k] = poison(ok, clamp01(a[k]));
      store<W>(out + i, a);
    });
    return;
  }
  const float t = __uint_as_float(t_lo);
  for_range<VEC, kRowBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
    constexpr int W = decltype(w)::value;
    float a[W], b[W];
    load<W>(xa + i, a);
    load<W>(x + i, b);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float d = fminf(fmaxf(__fmul_rn(t, __fsub_rn(a[k], b[k])), -b[k]), __fsub_rn(1.f, b[k]));
      a[k] = poison(ok, __fadd_rn(b[k], d));
    }
    store<W>(out + i, a);
  });
}

template <int PASS>
void launch_pass(const Call& c, const float* part3, float* part1, bool vec_ok) {
  const float mom_a = static_cast<float>(c.momentum);
  const float mom_b = static_cast<float>(1.0 - c.momentum);
  dispatch_dtype(c.dtype, [&](auto tag) {
    using T = decltype(tag);
    l2_step_kernel<T, PASS><<<c.tiling.grid, kTileBlock, 0, c.stream>>>(
        static_cast<T*>(c.out), static_cast<T*>(c.z), static_cast<const T*>(c.x_adv),
        static_cast<const T*>(c.x_prev), static_cast<const T*>(c.x), static_cast<const T*>(c.grad), c.step, c.eps,
        part3, part1, mom_a, mom_b, c.flag, c.tiling, vec_ok);
  });
}

}  // namespace

void l2_run(Op op, const Call& c) {
  const bool vec_ok = all_aligned16(c.out, c.z, c.x_adv, c.x_prev, c.x, c.grad);  // nullptr is aligned
  if (op == Op::kProject) {
    dispatch_dtype(c.dtype, [&](auto tag) {
      using T = decltype(tag);
      l2_project_kernel<T><<<static_cast<unsigned>(c.N), kRowBlock, 0, c.stream>>>(
          static_cast<T*>(c.out), static_cast<const T*>(c.x_adv), static_cast<const T*>(c.x), c.eps, c.flag, c.D,
          vec_ok);
    });
    return;
  }
  float* part3 = c.workspace;                    // [tiles][3]: S_gg, S_vg, S_vv
  float* part1 = c.workspace + c.tiling.tiles * 3;  // [tiles]: ||d2||^2 (apgd_step)
  dispatch_dtype(c.dtype, [&](auto tag) {
    using T = decltype(tag);
    l2_sums_kernel<T><<<c.tiling.grid, kTileBlock, 0, c.stream>>>(
        part3, static_cast<const T*>(c.x_adv), static_cast<const T*>(c.x), static_cast<const T*>(c.grad), c.tiling,
        vec_ok);
  });
  if (op == Op::kPgdStep) return launch_pass<kPgdWrite>(c, part3, part1, vec_ok);
  launch_pass<kApgdNorm>(c, part3, part1, vec_ok);
  launch_pass<kApgdWrite>(c, part3, part1, vec_ok);
}

}  // namespace detail
}  // namespace cuda
}  // namespace rft
