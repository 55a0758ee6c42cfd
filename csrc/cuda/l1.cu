// L1 kernels: one block per row, everything in one kernel per op.
//
// Every phase is a K-ary search over float32 bit patterns (common.cuh, the rule of kernels/search.py) of
// at most 8 passes over the row:
// threshold (pgd/apgd): tau = the keep-th largest |g| = the largest float32 tau with
//   count(|g| >= tau) >= keep (|g| compared as uint32 bits, exact); cnt = #{|g| >= tau and g != 0} comes
//   with the search;
// projection: lam = the smallest float32 lam >= 0 with h(lam) <= eps (one pass when h(0) <= eps).
// project:   projection of v = x_adv - x, write pass.
// pgd_step:  threshold, projection of v = x_adv + step * sign(g) * mask / (cnt + 1e-10) - x, write pass.
// apgd_step: threshold, projection 1 (z), projection 2 of w - x (z recomputed per pass), write z and x_next.
// Bad numbers: getv makes v NaN where an input entry is NaN / Inf; a projection whose passes saw one (ORed over
// the block) returns a NaN lam, and a row with a NaN lam or an eps / step that is not finite and > 0 is written
// as NaN (z: x_adv, x, grad; x_next: x_prev as well). The write pass's threads report their check bits
// (common.cuh, report): the row's rule and the x entries' range.
#include "common.cuh"

namespace rft {
namespace cuda {
namespace detail {
namespace {

constexpr int kModeProject = 0;
constexpr int kModePgd = 1;
constexpr int kModeApgd = 2;
constexpr int K = kSearchK;

using FSumK = BlockSum<float, K, kRowBlock>;
using USumK = BlockSum<uint32_t, K, kRowBlock>;

// Room to the box in the direction of v: u = 1 - x if v > 0 else x.
__device__ __forceinline__ float l1_room(float v, float b) { return v > 0.f ? __fsub_rn(1.f, b) : b; }

// sign(v) * clip(|v| - lam, 0, u)  (= sign(v) * max(min(|v| - lam, u), 0) as u >= 0)
__device__ __forceinline__ float l1_delta(float v, float b, float lam) {
  const float m = fmaxf(fminf(__fsub_rn(fabsf(v), lam), l1_room(v, b)), 0.f);
  return v > 0.f ? m : (v < 0.f ? -m : 0.f);
}

// tau (as bits) and cnt of APGD-L1's sparse direction for the row [begin, end): ranks are the bits of |g|
// (compared as integers: exact), pred(r) = #{|g| >= r} >= keep, true at r = 0 (D >= keep).
// cnt = #{|g| >= tau, g != 0}: for tau > 0 the count at tau (lo_count); for tau = 0 (fewer than keep
// nonzero |g|, everything kept) the count at the failed rank 1 = #{g != 0} (fail_count).
template <typename T>
__device__ __forceinline__ void l1_threshold(const T* __restrict__ g, int64_t begin, int64_t end, bool vec_ok,
                                             uint32_t keep, typename USumK::Storage& stk, uint32_t& tau,
                                             float& cnt) {
  constexpr int VEC = VecWidth<T>::value;
  uint32_t lo = 0u, hi = kInfBits;
  uint32_t lo_count = static_cast<uint32_t>(end - begin);
  uint32_t fail_count = 0u;
  kary_search<K, kRowBlock, uint32_t>(
      lo, hi, lo_count, fail_count, stk,
      [&](const uint32_t (&cand)[K], Arr<uint32_t, K>& acc) {
        for_range<VEC, kRowBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
          constexpr int W = decltype(w)::value;
          float gv[W];
          load<W>(g + i, gv);
#pragma unroll
          for (int k = 0; k < W; ++k) {
            const uint32_t ab = __float_as_uint(gv[k]) & kAbsMask;
#pragma unroll
            for (int j = 0; j < K; ++j) acc.v[j] += ab >= cand[j] ? 1u : 0u;
          }
        });
      },
      [&](uint32_t count) { return count >= keep; });
  tau = lo;
  // lo = hi = 0 at the end means rank 1 failed (hi = 1 - 1), so fail_count is #{|g| >= smallest subnormal}.
  cnt = static_cast<float>(lo > 0u ? lo_count : fail_count);
}

// lam of the exact projection of the row's v onto {||d||_1 <= eps} ∩ box: the smallest float32 lam >= 0
// with h(lam) = sum clip(|v| - lam, 0, u) <= eps. Ranks are reversed bits, lam = float(bits(+inf) - r), so
// "largest rank with h <= eps" is "smallest lam": r = 0 is lam = +inf (h = 0, holds), and the first pass
// tests r = bits(+inf), lam = 0 (the ball is inactive when h(0) <= eps: one pass).
// getv(Int<W>, i, v, x) fills the W values of v and x at flat index i (recomputed identically every pass), v NaN
// where an input entry is bad; lam is then NaN (block-uniform), for the whole row.
template <int VEC, typename GetV>
__device__ __forceinline__ float l1_lambda(int64_t begin, int64_t end, bool vec_ok, float eps, GetV&& getv,
                                           typename FSumK::Storage& stk) {
  uint32_t lo = 0u, hi = kInfBits;
  float h_lo = 0.f, h_fail = 0.f;
  bool bad = false;  // this thread saw a NaN v (the search makes at least one pass)
  kary_search<K, kRowBlock, float>(
      lo, hi, h_lo, h_fail, stk,
      [&](const uint32_t (&cand)[K], Arr<float, K>& acc) {
        float lam[K];
#pragma unroll
        for (int j = 0; j < K; ++j) lam[j] = __uint_as_float(kInfBits - cand[j]);
        for_range<VEC, kRowBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
          constexpr int W = decltype(w)::value;
          float v[W], b[W];
          getv(w, i, v, b);
#pragma unroll
          for (int k = 0; k < W; ++k) {
            const float a = fabsf(v[k]);
            const float u = l1_room(v[k], b[k]);
            bad |= is_nan_f(v[k]);
#pragma unroll
            for (int j = 0; j < K; ++j) acc.v[j] += fminf(fmaxf(__fsub_rn(a, lam[j]), 0.f), u);
          }
        });
      },
      [&](float h) { return h <= eps; });
  return poison(__syncthreads_or(bad) == 0, __uint_as_float(kInfBits - lo));
}

template <typename T, int MODE>
__global__ void __launch_bounds__(kRowBlock)
    l1_kernel(T* __restrict__ out, T* __restrict__ z_out, const T* __restrict__ xa, const T* __restrict__ xp,
              const T* __restrict__ x, const T* __restrict__ g, const float* __restrict__ step,
              const float* __restrict__ eps, const int64_t* __restrict__ keep, int* __restrict__ flag, int64_t D,
              float mom_a, float mom_b, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
  __shared__ typename FSumK::Storage stk;
  const int64_t row = blockIdx.x;
  const int64_t begin = row * D;
  const int64_t end = begin + D;
  const float e = eps[row];
  const bool row_ok = positive_f(e) && (MODE == kModeProject || positive_f(step[row]));

  // The sparse step: p = x_adv + sign(g) * mask * a_step, a_step = step * (1 / (cnt + 1e-10)) (the
  // rounding of AutoAttack's step * (sign / (cnt + 1e-10)), as sign is 0 or +-1).
  uint32_t tau = 0u;
  float a_step = 0.f;
  if constexpr (MODE != kModeProject) {
    __shared__ typename USumK::Storage suk;
    int64_t kp = keep[row];
    kp = kp < 1 ? 1 : (kp > D ? D : kp);
    float cnt = 0.f;
    l1_threshold<T>(g, begin, end, vec_ok, static_cast<uint32_t>(kp), suk, tau, cnt);
    a_step = __fmul_rn(step[row], __fdiv_rn(1.f, __fadd_rn(cnt, kL1Tiny)));
  }
  // v = p - x of the first projection (for project: v = x_adv - x)
  auto v_first = [&](float a, float b, float gk) {
    if constexpr (MODE == kModeProject) {
      return __fsub_rn(a, b);
    } else {
      const float s = (__float_as_uint(gk) & kAbsMask) >= tau ? sign_of(gk) : 0.f;
      return __fsub_rn(__fadd_rn(a, s * a_step), b);
    }
  };
  auto getv1 = [&](auto w, int64_t i, auto& v, auto& b) {
    constexpr int W = decltype(w)::value;
    float a[W], gv[W];
    load<W>(xa + i, a);
    load<W>(x + i, b);
    if constexpr (MODE == kModeProject) {
#pragma unroll
      for (int k = 0; k < W; ++k) gv[k] = 0.f;
    } else {
      load<W>(g + i, gv);
    }
#pragma unroll
    for (int k = 0; k < W; ++k) {
      v[k] = poison(finite_f(a[k]) && finite_f(b[k]) && finite_f(gv[k]), v_first(a[k], b[k], gv[k]));
    }
  };
  const float lam1 = l1_lambda<VEC>(begin, end, vec_ok, e, getv1, stk);
  const bool ok1 = row_ok && !is_nan_f(lam1);  // block-uniform
  bool outside = false;                         // an x entry of the write pass outside [0, 1]

  if constexpr (MODE != kModeApgd) {
    for_range<VEC, kRowBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float v[W], b[W];
      getv1(w, i, v, b);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        outside |= !in_box(b[k]);
        v[k] = poison(ok1, __fadd_rn(b[k], l1_delta(v[k], b[k], lam1)));
      }
      store<W>(out + i, v);
    });
    report(flag, !ok1, outside);
  } else {
    // z = x + delta1; v2 = x_adv + a (z - x_adv) + (1 - a)(x_adv - x_prev) - x
    auto point = [&](auto w, int64_t i, auto& z, auto& v2, auto& b) {
      constexpr int W = decltype(w)::value;
      float a[W], p[W], gv[W];
      load<W>(xa + i, a);
      load<W>(xp + i, p);
      load<W>(x + i, b);
      load<W>(g + i, gv);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        z[k] = poison(ok1, __fadd_rn(b[k], l1_delta(v_first(a[k], b[k], gv[k]), b[k], lam1)));
        v2[k] = poison(finite_f(p[k]), __fsub_rn(momentum_point(a[k], z[k], p[k], mom_a, mom_b), b[k]));
      }
    };
    auto getv2 = [&](auto w, int64_t i, auto& v, auto& b) {
      constexpr int W = decltype(w)::value;
      float z[W];
      point(w, i, z, v, b);
    };
    const float lam2 = l1_lambda<VEC>(begin, end, vec_ok, e, getv2, stk);
    const bool ok2 = ok1 && !is_nan_f(lam2);  // block-uniform
    for_range<VEC, kRowBlock>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float z[W], v[W], b[W];
      point(w, i, z, v, b);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        outside |= !in_box(b[k]);
        v[k] = poison(ok2, __fadd_rn(b[k], l1_delta(v[k], b[k], lam2)));
      }
      store<W>(z_out + i, z);
      store<W>(out + i, v);
    });
    report(flag, !ok2, outside);  // ok2 covers ok1
  }
}

template <int MODE>
void launch_l1(const Call& c) {
  const bool vec_ok = all_aligned16(c.out, c.z, c.x_adv, c.x_prev, c.x, c.grad);  // nullptr is aligned
  const float mom_a = static_cast<float>(c.momentum);
  const float mom_b = static_cast<float>(1.0 - c.momentum);
  dispatch_dtype(c.dtype, [&](auto tag) {
    using T = decltype(tag);
    l1_kernel<T, MODE><<<static_cast<unsigned>(c.N), kRowBlock, 0, c.stream>>>(
        static_cast<T*>(c.out), static_cast<T*>(c.z), static_cast<const T*>(c.x_adv),
        static_cast<const T*>(c.x_prev), static_cast<const T*>(c.x), static_cast<const T*>(c.grad), c.step, c.eps,
        c.keep, c.flag, c.D, mom_a, mom_b, vec_ok);
  });
}

}  // namespace

void l1_run(Op op, const Call& c) {
  switch (op) {
    case Op::kProject:
      return launch_l1<kModeProject>(c);
    case Op::kPgdStep:
      return launch_l1<kModePgd>(c);
    case Op::kApgdStep:
      return launch_l1<kModeApgd>(c);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace rft
