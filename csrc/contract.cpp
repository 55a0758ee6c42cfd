// The contract checks of csrc/contract.h, once for both devices.
#include "contract.h"

#include <ATen/MemoryOverlap.h>

#include <initializer_list>

namespace rft {
namespace {

// A contiguous (N, D) tensor of a kernel dtype, with the shape, dtype and device of x_adv.
void check_image(const char* name, const at::Tensor& t, const at::Tensor& x_adv) {
  TORCH_CHECK(t.defined(), name, " is undefined");
  TORCH_CHECK(t.device() == x_adv.device(), name, " is on ", t.device(), ", expected ", x_adv.device(),
              " like x_adv");
  TORCH_CHECK(t.dim() == 2, name, " must be a 2-D (N, D) row view, got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  const auto dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, name,
              " must be float32, bfloat16 or float16, got ", dtype);
  TORCH_CHECK(dtype == x_adv.scalar_type(), name, " has dtype ", dtype, ", expected ", x_adv.scalar_type(),
              " like x_adv");
  TORCH_CHECK(t.sizes() == x_adv.sizes(), name, " has shape ", t.sizes(), ", expected ", x_adv.sizes(),
              " like x_adv");
}

// A contiguous (N,) tensor of `dtype` on the device of x_adv.
void check_per_row(const char* name, const at::Tensor& t, at::ScalarType dtype, const at::Tensor& x_adv) {
  TORCH_CHECK(t.defined(), name, " is undefined");
  TORCH_CHECK(t.device() == x_adv.device(), name, " is on ", t.device(), ", expected ", x_adv.device(),
              " like x_adv");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x_adv.size(0) && t.is_contiguous(), name, " must be a contiguous (",
              x_adv.size(0), ",) tensor, got shape ", t.sizes());
}

// Outputs are written while inputs are still being read (several passes), so they must not share memory.
void check_output(const char* name, const at::Tensor& out, std::initializer_list<const at::Tensor*> others) {
  for (const at::Tensor* t : others) {
    if (!t->defined()) continue;  // project reads no grad
    TORCH_CHECK(at::get_overlap_status(out, *t) == at::MemOverlapStatus::No, name,
                " must not share memory with the other tensors of the call");
  }
}

}  // namespace

void check_contract(const OpArgs& a) {
  TORCH_CHECK(a.norm >= 0 && a.norm < kNumNorms, "norm must be 0 (Linf), 1 (L2) or 2 (L1), got ", a.norm);
  TORCH_CHECK(a.x_adv.defined(), "x_adv is undefined");
  check_image("x_adv", a.x_adv, a.x_adv);
  if (a.flag.defined()) {
    TORCH_CHECK(a.flag.device() == a.x_adv.device() && a.flag.scalar_type() == at::kInt && a.flag.numel() == 1 &&
                    a.flag.is_contiguous(),
                "flag must be None or an int32 (1,) tensor on ", a.x_adv.device(), ", got ", a.flag.scalar_type(),
                " ", a.flag.sizes(), " on ", a.flag.device());
  }
  check_image("x", a.x, a.x_adv);
  check_per_row("eps", a.eps, at::kFloat, a.x_adv);
  if (a.op != Op::kProject) {
    check_image("grad", a.grad, a.x_adv);
    check_per_row("step", a.step, at::kFloat, a.x_adv);
    if (a.norm == kL1) check_per_row("keep", a.keep, at::kLong, a.x_adv);
  }
  if (a.op != Op::kApgdStep) {
    check_image("out", a.out, a.x_adv);
    check_output("out", a.out, {&a.x_adv, &a.x, &a.grad});
    return;
  }
  check_image("x_prev", a.x_prev, a.x_adv);
  check_image("x_next", a.out, a.x_adv);
  check_image("z", a.z, a.x_adv);
  check_output("x_next", a.out, {&a.x_adv, &a.x_prev, &a.x, &a.grad, &a.z});
  check_output("z", a.z, {&a.x_adv, &a.x_prev, &a.x, &a.grad});
  TORCH_CHECK(a.momentum >= 0.0 && a.momentum <= 1.0, "momentum must be in [0, 1], got ", a.momentum);
}

}  // namespace rft
