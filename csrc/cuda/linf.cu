// Linf kernels: one elementwise pass per op (each input read once, each output written once); pgd_step and
// apgd_step are one kernel, the APGD template flag adding the momentum point.
// Grid-stride over (row, chunk) tiles so the per-row eps/step are read once per tile, not per element.
// An output entry is NaN where an input entry it reads is NaN / Inf, or its row's eps / step is bad. Each
// thread reports its check bits at the end (common.cuh, report).
#include "common.cuh"

namespace rft {
namespace cuda {
namespace detail {
namespace {

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    linf_project_kernel(T* __restrict__ out, const T* __restrict__ xa, const T* __restrict__ x,
                        const float* __restrict__ eps, int* __restrict__ flag, Tiling tl, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
  bool bad = false, outside = false;
  for (int64_t tile = blockIdx.x; tile < tl.tiles; tile += gridDim.x) {
    int64_t row, begin, end;
    tile_range(tl, tile, row, begin, end);
    const float e = eps[row];
    const bool row_ok = positive_f(e);
    for_range<VEC, BLOCK>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float a[W], b[W];
      load<W>(xa + i, a);
      load<W>(x + i, b);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const bool ok = row_ok && finite_f(a[k]) && finite_f(b[k]);
        bad |= !ok;
        outside |= !in_box(b[k]);
        a[k] = poison(ok, linf_clip(a[k], b[k], e));
      }
      store<W>(out + i, a);
    });
  }
  report(flag, bad, outside);
}

// out = clip(x_adv + step sign(g)) (APGD: z); APGD: x_next = clip(x_adv + a (z - x_adv) + (1 - a)(x_adv - x_prev)).
template <typename T, int BLOCK, bool APGD>
__global__ void __launch_bounds__(BLOCK)
    linf_step_kernel(T* __restrict__ out, T* __restrict__ x_next, const T* __restrict__ xa,
                     const T* __restrict__ xp, const T* __restrict__ x, const T* __restrict__ g,
                     const float* __restrict__ step, const float* __restrict__ eps, float mom_a, float mom_b,
                     int* __restrict__ flag, Tiling tl, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
  bool bad = false, outside = false;
  for (int64_t tile = blockIdx.x; tile < tl.tiles; tile += gridDim.x) {
    int64_t row, begin, end;
    tile_range(tl, tile, row, begin, end);
    const float e = eps[row];
    const float s = step[row];
    const bool row_ok = positive_f(e) && positive_f(s);
    for_range<VEC, BLOCK>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float a[W], p[W], b[W], gv[W];
      load<W>(xa + i, a);
      if constexpr (APGD) load<W>(xp + i, p);
      load<W>(x + i, b);
      load<W>(g + i, gv);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const bool ok = row_ok && finite_f(a[k]) && finite_f(b[k]) && finite_f(gv[k]);
        const float z = linf_clip(__fadd_rn(a[k], __fmul_rn(s, sign_of(gv[k]))), b[k], e);
        if constexpr (APGD) {
          a[k] = poison(ok && finite_f(p[k]), linf_clip(momentum_point(a[k], z, p[k], mom_a, mom_b), b[k], e));
          bad |= !finite_f(p[k]);  // x_next's rule
        }
        bad |= !ok;
        outside |= !in_box(b[k]);
        gv[k] = poison(ok, z);
      }
      store<W>(out + i, gv);
      if constexpr (APGD) store<W>(x_next + i, a);
    });
  }
  report(flag, bad, outside);
}

template <bool APGD>
void launch_step(const Call& c) {
  const bool vec_ok = all_aligned16(c.out, c.z, c.x_adv, c.x_prev, c.x, c.grad);  // nullptr is aligned
  const float mom_a = static_cast<float>(c.momentum);
  const float mom_b = static_cast<float>(1.0 - c.momentum);
  // apgd_step: z is the step, out is x_next.
  void* step_out = APGD ? c.z : c.out;
  dispatch_dtype(c.dtype, [&](auto tag) {
    using T = decltype(tag);
    linf_step_kernel<T, kTileBlock, APGD><<<c.tiling.grid, kTileBlock, 0, c.stream>>>(
        static_cast<T*>(step_out), static_cast<T*>(c.out), static_cast<const T*>(c.x_adv),
        static_cast<const T*>(c.x_prev), static_cast<const T*>(c.x), static_cast<const T*>(c.grad), c.step, c.eps,
        mom_a, mom_b, c.flag, c.tiling, vec_ok);
  });
}

}  // namespace

void linf_run(Op op, const Call& c) {
  switch (op) {
    case Op::kProject: {
      const bool vec_ok = all_aligned16(c.out, c.x_adv, c.x);
      dispatch_dtype(c.dtype, [&](auto tag) {
        using T = decltype(tag);
        linf_project_kernel<T, kTileBlock><<<c.tiling.grid, kTileBlock, 0, c.stream>>>(
            static_cast<T*>(c.out), static_cast<const T*>(c.x_adv), static_cast<const T*>(c.x), c.eps, c.flag,
            c.tiling, vec_ok);
      });
      return;
    }
    case Op::kPgdStep:
      return launch_step<false>(c);
    case Op::kApgdStep:
      return launch_step<true>(c);
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace rft
