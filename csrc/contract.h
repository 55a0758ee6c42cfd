// The kernel contract shared by the CPU (csrc/cpu) and CUDA (csrc/cuda) implementations (docs/kernels.md),
// checked once, in csrc/contract.cpp, before bindings.cpp hands a call to either device.
//
// Every image tensor is a 2-D (N, D) contiguous view of one sample per row, in the same dtype (float32, bfloat16
// or float16) and on the same device; arithmetic is float32. eps and step are float32 (N,) tensors on that
// device; keep is an int64 (N,) tensor (L1 steps only: the threshold is the keep-th largest |grad| of the row,
// as AutoAttack's APGD-L1 picks it). Outputs are written into the preallocated out tensors, which have the
// shape and dtype of x_adv and share no memory with the inputs. norm: 0 = Linf, 1 = L2, 2 = L1.
// flag (optional): an int32 (1,) tensor on that device; with it every kernel ORs the data-check bits into it
// (1: the bad-number rule fired, 2: an x entry outside [0, 1]; docs/kernels.md, "Data checks").
#pragma once
#include <torch/extension.h>

#include "op_kind.h"

namespace rft {

// One op call as it arrives from Python. Tensors an op does not take stay undefined (project: grad, step,
// keep, x_prev, z; pgd_step: x_prev, z; keep unless norm is L1).
struct OpArgs {
  Op op;
  int64_t norm;
  at::Tensor out;  // project, pgd_step: the result; apgd_step: x_next
  at::Tensor z;    // apgd_step
  at::Tensor x_adv, x_prev, x, grad;
  at::Tensor eps, step, keep;
  double momentum = 1.0;  // apgd_step
  at::Tensor flag;        // int32 (1,): the kernels OR the data-check bits into it (undefined: no checks)
};

// Raises a c10::Error naming the argument unless `a` obeys the contract (shapes, dtypes, devices, layout,
// no shared memory between an output and the other tensors, momentum in [0, 1], the flag int32 (1,)). Reads no tensor's values:
// an eps / step that is not finite and > 0 makes its row's outputs NaN on every device (docs/kernels.md).
void check_contract(const OpArgs& a);

}  // namespace rft
