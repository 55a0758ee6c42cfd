// Shared pieces of the CUDA kernels (see docs/kernels.md for the contract and the algorithms).
// Torch-free apart from c10's Half/BFloat16 (see launch.h).
//
// - dtype dispatch over exactly float32 / bfloat16 / float16 (arithmetic is always float32);
// - 16-byte vector loads/stores of a row range, with a scalar head and tail so any D and any offset work;
// - the (row, chunk) tiling of the bandwidth-bound kernels;
// - deterministic block reductions of small arrays (cub::BlockReduce, no atomics);
// - the K-ary search over float32 bit patterns used by the exact L2 / L1 projections and the L1 threshold.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "launch.h"

namespace rft {
namespace cuda {
namespace detail {

// ------------------------------------------------------------------ constants

constexpr float kL2Tiny = 1e-12f;  // AutoAttack: ||.||_2 + 1e-12
constexpr float kL1Tiny = 1e-10f;  // AutoAttack: ||sign(sparse grad)||_1 + 1e-10
constexpr int kSearchK = 16;       // candidates per pass of the K-ary bit-pattern search
constexpr uint32_t kOneBits = 0x3F800000u;  // bits of 1.0f
constexpr uint32_t kInfBits = 0x7F800000u;  // bits of +inf
constexpr uint32_t kAbsMask = 0x7FFFFFFFu;

// ------------------------------------------------------------------ host helpers

// Calls f(T{}) with T the element type of `dtype` (float, c10::BFloat16 or c10::Half).
template <typename F>
inline void dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat:
      f(float{});
      break;
    case DType::kBFloat16:
      f(c10::BFloat16{});
      break;
    case DType::kHalf:
      f(c10::Half{});
      break;
  }
}

template <typename... Ps>
inline bool all_aligned16(const Ps*... ps) {
  return ((reinterpret_cast<uintptr_t>(ps) % 16 == 0) && ...);
}

// ------------------------------------------------------------------ device: element access

template <int V>
using Int = std::integral_constant<int, V>;

template <typename T>
struct VecWidth {
  static constexpr int value = 16 / static_cast<int>(sizeof(T));
};

template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
  T v[W];
};

template <int W, typename T>
__device__ __forceinline__ void load(const T* __restrict__ p, float (&out)[W]) {
  const Pack<T, W> pk = *reinterpret_cast<const Pack<T, W>*>(p);
#pragma unroll
  for (int k = 0; k < W; ++k) out[k] = static_cast<float>(pk.v[k]);
}

template <int W, typename T>
__device__ __forceinline__ void store(T* __restrict__ p, const float (&in)[W]) {
  Pack<T, W> pk;
#pragma unroll
  for (int k = 0; k < W; ++k) pk.v[k] = static_cast<T>(in[k]);
  *reinterpret_cast<Pack<T, W>*>(p) = pk;
}

// Calls f(Int<W>{}, i) for the flat element indices [begin, end), split over the BLOCK threads of the
// block: groups of VEC elements at indices that are multiples of VEC (vec_ok: every base pointer is 16-byte
// aligned, so these are 16-byte aligned addresses), single elements for the head and the tail (or for the
// whole range when !vec_ok). The assignment of elements to threads depends only on (begin, end, vec_ok),
// so per-thread partial sums are reproducible.
template <int VEC, int BLOCK, typename F>
__device__ __forceinline__ void for_range(int64_t begin, int64_t end, bool vec_ok, F&& f) {
  int64_t body_begin = end;
  int64_t body_end = end;
  if (vec_ok) {
    const int64_t up = (begin + VEC - 1) / VEC * VEC;
    body_begin = up < end ? up : end;
    body_end = body_begin + (end - body_begin) / VEC * VEC;
  }
  const int64_t tid = threadIdx.x;
  for (int64_t i = begin + tid; i < body_begin; i += BLOCK) f(Int<1>{}, i);
  for (int64_t i = body_begin + tid * VEC; i < body_end; i += int64_t(BLOCK) * VEC) f(Int<VEC>{}, i);
  for (int64_t i = body_end + tid; i < end; i += BLOCK) f(Int<1>{}, i);
}

// Flat element range of one (row, chunk) tile.
__device__ __forceinline__ void tile_range(const Tiling& t, int64_t tile, int64_t& row, int64_t& begin,
                                           int64_t& end) {
  row = tile / t.chunks;
  const int64_t c = tile - row * t.chunks;
  const int64_t off = c * t.chunk;
  const int64_t len = t.D - off < t.chunk ? t.D - off : t.chunk;
  begin = row * t.D + off;
  end = begin + len;
}

// ------------------------------------------------------------------ device: shared element formulas
// The _rn intrinsics keep the rounding sequence of the eager reference (no FMA contraction, exact IEEE
// division and square root even under --use_fast_math), and make the same formula give the same bits in
// every kernel that recomputes it.

__device__ __forceinline__ float clamp01(float v) { return fminf(fmaxf(v, 0.f), 1.f); }

// Bad numbers (docs/kernels.md): a NaN / Inf input entry or an eps / step that is not finite and > 0 is never
// used as a number; the outputs it feeds are written as NaN (fminf / fmaxf would drop a NaN, so the kernels
// poison explicitly). Tested on the bits, which no fast-math flag (-ftz included) changes.
__device__ __forceinline__ bool finite_f(float v) { return (__float_as_uint(v) & kAbsMask) < kInfBits; }
__device__ __forceinline__ bool is_nan_f(float v) { return (__float_as_uint(v) & kAbsMask) > kInfBits; }
__device__ __forceinline__ bool positive_f(float v) {
  const int32_t b = __float_as_int(v);
  return b > 0 && b < static_cast<int32_t>(kInfBits);
}
// v where ok, NaN elsewhere.
__device__ __forceinline__ float poison(bool ok, float v) { return ok ? v : __uint_as_float(0x7FC00000u); }

// Data checks (docs/kernels.md): with Call::flag set, each thread ORs its check bits into *flag at the end of the
// kernel, with an atomic only when one is set: kFlagBadNumber when the bad-number rule fired for an output it
// wrote, kFlagOutsideBox when an x entry it read lies outside [0, 1]. The arithmetic does not change.
constexpr int kFlagBadNumber = 1;
constexpr int kFlagOutsideBox = 2;

// v in [0, 1], from the bits (a subnormal -ftz would flush is still negative): -0 or a non-negative
// pattern up to that of 1 (NaN is outside).
__device__ __forceinline__ bool in_box(float v) {
  const uint32_t u = __float_as_uint(v);
  return u <= kOneBits || u == 0x80000000u;
}

__device__ __forceinline__ void report(int* flag, bool bad, bool outside) {
  const int bits = (bad ? kFlagBadNumber : 0) | (outside ? kFlagOutsideBox : 0);
  if (flag != nullptr && bits != 0) atomicOr(flag, bits);
}

// torch.sign for non-NaN v, from the bits: exact for subnormals too (compares would flush them to zero
// under --use_fast_math's -ftz, unlike torch), and consistent with the bitwise |g| >= tau mask of L1.
__device__ __forceinline__ float sign_of(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & kAbsMask) == 0u ? 0.f : ((u >> 31) != 0u ? -1.f : 1.f);
}

// clamp(min(max(p, x - eps), x + eps), 0, 1)
__device__ __forceinline__ float linf_clip(float p, float x, float eps) {
  return clamp01(fminf(fmaxf(p, __fsub_rn(x, eps)), __fadd_rn(x, eps)));
}

// x_adv + a (z - x_adv) + (1 - a)(x_adv - x_prev), with b = 1 - a
__device__ __forceinline__ float momentum_point(float xa, float z, float xp, float a, float b) {
  return __fadd_rn(__fadd_rn(xa, __fmul_rn(__fsub_rn(z, xa), a)), __fmul_rn(__fsub_rn(xa, xp), b));
}

// ------------------------------------------------------------------ device: block reductions

template <typename T, int K>
struct Arr {
  T v[K];
};

template <typename T, int K>
__device__ __forceinline__ Arr<T, K> arr_zero() {
  Arr<T, K> a;
#pragma unroll
  for (int k = 0; k < K; ++k) a.v[k] = T(0);
  return a;
}

template <typename T, int K>
struct ArrAdd {
  __device__ __forceinline__ Arr<T, K> operator()(const Arr<T, K>& a, const Arr<T, K>& b) const {
    Arr<T, K> r;
#pragma unroll
    for (int k = 0; k < K; ++k) r.v[k] = a.v[k] + b.v[k];
    return r;
  }
};

// Elementwise sum of an Arr<T, K> over the block, in a fixed order (deterministic).
template <typename T, int K, int BLOCK>
struct BlockSum {
  using Reduce = cub::BlockReduce<Arr<T, K>, BLOCK>;
  struct Storage {
    typename Reduce::TempStorage temp;
    Arr<T, K> total;
  };
  // The total in thread 0 only; the caller must __syncthreads() before `s` is used again.
  __device__ __forceinline__ static Arr<T, K> to_thread0(Storage& s, const Arr<T, K>& x) {
    return Reduce(s.temp).Reduce(x, ArrAdd<T, K>());
  }
  // The total in every thread; `s` may be reused as soon as this returns.
  __device__ __forceinline__ static Arr<T, K> all(Storage& s, const Arr<T, K>& x) {
    const Arr<T, K> t = Reduce(s.temp).Reduce(x, ArrAdd<T, K>());
    if (threadIdx.x == 0) s.total = t;
    __syncthreads();
    const Arr<T, K> r = s.total;
    __syncthreads();
    return r;
  }
};

// ------------------------------------------------------------------ device: K-ary bit-pattern search
// The largest key ("rank") in the closed bracket [lo, hi] where a monotone predicate holds (true up to some
// key, false above it); the same rule as the Triton kernels (kernels/search.py). Ranks are float32 bit
// patterns (non-negative floats order like their uint32 bits), possibly reversed by the caller.
// On entry pred(lo) must hold (it is never evaluated); hi is unknown and is tested in the first pass, so a
// search whose answer is hi (the constraint is inactive) ends after one pass.
// A pass tests the K candidates r_j = lo + ceil((hi - lo) j / K), j = 1..K (lo < r_1 <= ... <= r_K = hi,
// repeats once hi - lo < K): eval(cand, acc) adds this thread's share of the per-candidate statistic to acc,
// pred(total) decides a candidate from its block total. Then lo = the last passing candidate before the
// first failing one r_m (or lo), hi = r_m - 1 (or hi): the bracket shrinks to at most ceil((hi - lo) / K) - 1,
// so a 31-bit range takes 8 passes for K = 16. Totals ride along: lo_total is the total at lo (kept from
// the caller until a candidate passes), fail_total the total at the last failing candidate, i.e. at hi + 1
// (kept from the caller until a candidate fails). Every thread holds the same values (block-uniform).
template <int K, int BLOCK, typename Acc, typename Eval, typename Pred>
__device__ __forceinline__ void kary_search(uint32_t& lo, uint32_t& hi, Acc& lo_total, Acc& fail_total,
                                            typename BlockSum<Acc, K, BLOCK>::Storage& st, Eval&& eval,
                                            Pred&& pred) {
  while (lo < hi) {
    const uint64_t gap = hi - lo;
    uint32_t cand[K];
#pragma unroll
    for (int j = 0; j < K; ++j) {
      cand[j] = lo + static_cast<uint32_t>((gap * uint64_t(j + 1) + uint64_t(K - 1)) / uint64_t(K));
    }
    Arr<Acc, K> acc = arr_zero<Acc, K>();
    eval(cand, acc);
    const Arr<Acc, K> tot = BlockSum<Acc, K, BLOCK>::all(st, acc);
    uint32_t new_lo = lo;
    uint32_t new_hi = hi;
    bool failed = false;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      if (!failed) {
        if (pred(tot.v[j])) {
          new_lo = cand[j];
          lo_total = tot.v[j];
        } else {
          // cand[j] > new_lo: an equal earlier candidate would have failed too (same key, same total).
          new_hi = cand[j] - 1u;
          fail_total = tot.v[j];
          failed = true;
        }
      }
    }
    lo = new_lo;
    hi = new_hi;
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace rft
