// Torch-free interface between the host entry points (csrc/cuda/entry.cpp, compiled by the C++ compiler)
// and the kernel files (csrc/cuda/*.cu, compiled by nvcc). Keeping ATen out of the .cu files keeps their
// compile time down (nvcc parses every header once for the host and once per GPU architecture).
//
// Pointers are the raw data of (N, D) contiguous rows of `dtype` (images) or of float32 / int64 (N,)
// vectors (eps, step, keep). The launchers only enqueue kernels on `stream`; the caller checks for launch
// errors (C10_CUDA_KERNEL_LAUNCH_CHECK) and has already validated the contract and set the device.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

namespace rft {
namespace cuda {
namespace detail {

enum class DType : int { kFloat = 0, kBFloat16 = 1, kHalf = 2 };

inline int dtype_size(DType t) { return t == DType::kFloat ? 4 : 2; }

constexpr int kTileBlock = 256;  // threads of the bandwidth-bound (row, chunk) tile kernels
constexpr int kRowBlock = 256;   // threads of the one-block-per-row search kernels (8 warps)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A row of D elements split into `chunks` chunks of `chunk` elements (the last one shorter); tile =
// row * chunks + chunk index. chunk is a multiple of the vector width (16 bytes), so every chunk of a row
// starts at the same offset modulo the vector width as the row itself.
struct Tiling {
  int64_t D;
  int64_t chunk;
  int64_t chunks;
  int64_t tiles;
  unsigned grid;  // blocks launched; the tile loops are grid-stride
};

inline Tiling make_tiling(int64_t N, int64_t D, DType dtype, int sms) {
  const int64_t vec = 16 / dtype_size(dtype);
  const int64_t unit = int64_t(kTileBlock) * vec;       // one 16-byte vector per thread
  const int64_t target_tiles = int64_t(sms) * 16;       // two waves of 8 resident 256-thread blocks
  int64_t chunk = ceil_div(ceil_div(N * D, target_tiles), unit) * unit;
  chunk = std::min(std::max(chunk, unit), unit * 8);    // 1 to 8 vectors per thread
  Tiling t;
  t.D = D;
  t.chunk = chunk;
  t.chunks = ceil_div(D, chunk);
  t.tiles = N * t.chunks;
  t.grid = static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(t.tiles, int64_t(sms) * 64)));
  return t;
}

// Floats of scratch the L2 steps need: S_gg, S_vg, S_vv per tile (+ ||d2||^2 per tile for apgd).
inline int64_t l2_workspace_floats(const Tiling& t, bool apgd) { return t.tiles * (apgd ? 4 : 3); }

struct Launch {
  DType dtype;
  int64_t N;
  int64_t D;
  Tiling tiling;  // used by the Linf and L2-step kernels
  cudaStream_t stream;
};

void linf_project(const Launch& L, void* out, const void* x_adv, const void* x, const float* eps);
void linf_pgd_step(const Launch& L, void* out, const void* x_adv, const void* x, const void* grad,
                   const float* step, const float* eps);
void linf_apgd_step(const Launch& L, void* x_next, void* z, const void* x_adv, const void* x_prev,
                    const void* x, const void* grad, const float* step, const float* eps, double momentum);

void l2_project(const Launch& L, void* out, const void* x_adv, const void* x, const float* eps);
void l2_pgd_step(const Launch& L, void* out, const void* x_adv, const void* x, const void* grad,
                 const float* step, const float* eps, float* workspace);
void l2_apgd_step(const Launch& L, void* x_next, void* z, const void* x_adv, const void* x_prev,
                  const void* x, const void* grad, const float* step, const float* eps, double momentum,
                  float* workspace);

void l1_project(const Launch& L, void* out, const void* x_adv, const void* x, const float* eps);
void l1_pgd_step(const Launch& L, void* out, const void* x_adv, const void* x, const void* grad,
                 const float* step, const float* eps, const int64_t* keep);
void l1_apgd_step(const Launch& L, void* x_next, void* z, const void* x_adv, const void* x_prev,
                  const void* x, const void* grad, const float* step, const float* eps, double momentum,
                  const int64_t* keep);

}  // namespace detail
}  // namespace cuda
}  // namespace rft
