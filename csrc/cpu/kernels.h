// The CPU side's one call struct: what ops.cpp hands to the per-norm kernels (linf.cpp, l2.cpp, l1.cpp), a call
// with the contract already checked (csrc/contract.h), as raw pointers into contiguous (N, D) rows.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "op_kind.h"

namespace rft::cpu {

struct Call {
  c10::ScalarType dtype;
  int64_t n, d;
  void* out;  // project, pgd_step: the result; apgd_step: x_next
  void* z;    // apgd_step only
  const void *x_adv, *x_prev, *x, *grad;  // x_prev: apgd_step only; grad: the steps only
  const float *eps, *step;                // (N,)
  const int64_t* keep;                    // (N,), L1 steps only
  float momentum, one_minus_momentum;     // apgd_step only
  int32_t* flag;                          // the data-check bits are ORed into *flag (nullptr: no checks)
};

// One per norm, the same signature (ops.cpp's table): run `op` on the call's dtype.
void run_linf(Op op, const Call& call);
void run_l2(Op op, const Call& call);
void run_l1(Op op, const Call& call);

}  // namespace rft::cpu
