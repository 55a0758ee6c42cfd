// Linf kernels: one elementwise pass per op (each input read once, each output written once).
// Grid-stride over (row, chunk) tiles so the per-row eps/step are read once per tile, not per element.
// An output entry is NaN where an input entry it reads is NaN / Inf, or its row's eps / step is bad.
#include "common.cuh"

namespace rft {
namespace cuda {
namespace detail {
namespace {

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    linf_project_kernel(T* __restrict__ out, const T* __restrict__ xa, const T* __restrict__ x,
                        const float* __restrict__ eps, Tiling tl, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
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
        a[k] = poison(row_ok && finite_f(a[k]) && finite_f(b[k]), linf_clip(a[k], b[k], e));
      }
      store<W>(out + i, a);
    });
  }
}

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    linf_pgd_kernel(T* __restrict__ out, const T* __restrict__ xa, const T* __restrict__ x,
                    const T* __restrict__ g, const float* __restrict__ step, const float* __restrict__ eps,
                    Tiling tl, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
  for (int64_t tile = blockIdx.x; tile < tl.tiles; tile += gridDim.x) {
    int64_t row, begin, end;
    tile_range(tl, tile, row, begin, end);
    const float e = eps[row];
    const float s = step[row];
    const bool row_ok = positive_f(e) && positive_f(s);
    for_range<VEC, BLOCK>(begin, end, vec_ok, [&](auto w, int64_t i) {
      constexpr int W = decltype(w)::value;
      float a[W], b[W], gv[W];
      load<W>(xa + i, a);
      load<W>(x + i, b);
      load<W>(g + i, gv);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const bool ok = row_ok && finite_f(a[k]) && finite_f(b[k]) && finite_f(gv[k]);
        const float p = __fadd_rn(a[k], __fmul_rn(s, sign_of(gv[k])));
        a[k] = poison(ok, linf_clip(p, b[k], e));
      }
      store<W>(out + i, a);
    });
  }
}

template <typename T, int BLOCK>
__global__ void __launch_bounds__(BLOCK)
    linf_apgd_kernel(T* __restrict__ x_next, T* __restrict__ z_out, const T* __restrict__ xa,
                     const T* __restrict__ xp, const T* __restrict__ x, const T* __restrict__ g,
                     const float* __restrict__ step, const float* __restrict__ eps, float mom_a, float mom_b,
                     Tiling tl, bool vec_ok) {
  constexpr int VEC = VecWidth<T>::value;
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
      load<W>(xp + i, p);
      load<W>(x + i, b);
      load<W>(g + i, gv);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const bool ok = row_ok && finite_f(a[k]) && finite_f(b[k]) && finite_f(gv[k]);
        const float z = linf_clip(__fadd_rn(a[k], __fmul_rn(s, sign_of(gv[k]))), b[k], e);
        const float wk = momentum_point(a[k], z, p[k], mom_a, mom_b);
        gv[k] = poison(ok, z);
        a[k] = poison(ok && finite_f(p[k]), linf_clip(wk, b[k], e));
      }
      store<W>(z_out + i, gv);
      store<W>(x_next + i, a);
    });
  }
}

}  // namespace

void linf_project(const Launch& L, void* out, const void* x_adv, const void* x, const float* eps) {
  const bool vec_ok = all_aligned16(out, x_adv, x);
  dispatch_dtype(L.dtype, [&](auto tag) {
    using T = decltype(tag);
    linf_project_kernel<T, kTileBlock><<<L.tiling.grid, kTileBlock, 0, L.stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x_adv), static_cast<const T*>(x), eps, L.tiling, vec_ok);
  });
}

void linf_pgd_step(const Launch& L, void* out, const void* x_adv, const void* x, const void* grad,
                   const float* step, const float* eps) {
  const bool vec_ok = all_aligned16(out, x_adv, x, grad);
  dispatch_dtype(L.dtype, [&](auto tag) {
    using T = decltype(tag);
    linf_pgd_kernel<T, kTileBlock><<<L.tiling.grid, kTileBlock, 0, L.stream>>>(
        static_cast<T*>(out), static_cast<const T*>(x_adv), static_cast<const T*>(x), static_cast<const T*>(grad),
        step, eps, L.tiling, vec_ok);
  });
}

void linf_apgd_step(const Launch& L, void* x_next, void* z, const void* x_adv, const void* x_prev,
                    const void* x, const void* grad, const float* step, const float* eps, double momentum) {
  const bool vec_ok = all_aligned16(x_next, z, x_adv, x_prev, x, grad);
  const float mom_a = static_cast<float>(momentum);
  const float mom_b = static_cast<float>(1.0 - momentum);
  dispatch_dtype(L.dtype, [&](auto tag) {
    using T = decltype(tag);
    linf_apgd_kernel<T, kTileBlock><<<L.tiling.grid, kTileBlock, 0, L.stream>>>(
        static_cast<T*>(x_next), static_cast<T*>(z), static_cast<const T*>(x_adv), static_cast<const T*>(x_prev),
        static_cast<const T*>(x), static_cast<const T*>(grad), step, eps, mom_a, mom_b, L.tiling, vec_ok);
  });
}

}  // namespace detail
}  // namespace cuda
}  // namespace rft
