// What the CPU entry points (ops.cpp) hand to the per-norm kernels (linf.cpp, l2.cpp, l1.cpp): one op call
// with the contract already checked, as raw pointers into contiguous (N, D) rows.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace rft::cpu {

enum class Op { kProject, kPgdStep, kApgdStep };

struct Call {
  c10::ScalarType dtype;
  int64_t n, d;
  void* out;  // project, pgd_step: the result; apgd_step: x_next
  void* z;    // apgd_step only
  const void *x_adv, *x_prev, *x, *grad;  // x_prev: apgd_step only; grad: the steps only
  const float *eps, *step;                // (N,)
  const int64_t* keep;                    // (N,), L1 steps only
  float momentum, one_minus_momentum;     // apgd_step only
};

void run_linf(Op op, const Call& call);
void run_l2(Op op, const Call& call);
void run_l1(Op op, const Call& call);

}  // namespace rft::cpu
