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

#include "op_kind.h"

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

// The CUDA side's one call struct: a checked call's raw pointers (absent tensors: nullptr), its sizes, tiling and
// stream, and the float scratch the norm asked for (NormKernels::workspace_floats).
struct Call {
  DType dtype;
  int64_t N;
  int64_t D;
  Tiling tiling;  // used by the Linf and L2-step kernels
  cudaStream_t stream;
  void* out;  // project, pgd_step: the result; apgd_step: x_next
  void* z;    // apgd_step
  const void *x_adv, *x_prev, *x, *grad;
  const float *eps, *step;
  const int64_t* keep;  // L1 steps
  double momentum;      // apgd_step
  float* workspace;
  int32_t* flag;        // the data-check bits are ORed into *flag (nullptr: no checks; common.cuh, report)
};

// What each norm's kernel file exports, one signature for all (entry.cpp's table, indexed by Norm).
struct NormKernels {
  int64_t (*workspace_floats)(Op op, const Tiling& t);
  void (*run)(Op op, const Call& c);
};

inline int64_t no_workspace(Op, const Tiling&) { return 0; }
// S_gg, S_vg, S_vv per tile for the L2 steps (+ ||d2||^2 per tile for apgd).
inline int64_t l2_workspace_floats(Op op, const Tiling& t) {
  return op == Op::kProject ? 0 : t.tiles * (op == Op::kApgdStep ? 4 : 3);
}

void linf_run(Op op, const Call& c);
void l2_run(Op op, const Call& c);
void l1_run(Op op, const Call& c);

}  // namespace detail
}  // namespace cuda
}  // namespace rft
