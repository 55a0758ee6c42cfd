// What a kernel call computes: the norm and the op. Torch-free, so that the CUDA kernel files (csrc/cuda/*.cu,
// compiled by nvcc without ATen, launch.h) share the names with the host side (contract.h).
#pragma once

#include <cstdint>

namespace rft {

enum Norm : int64_t { kLinf = 0, kL2 = 1, kL1 = 2 };
constexpr int64_t kNumNorms = 3;

enum class Op { kProject, kPgdStep, kApgdStep };

}  // namespace rft
