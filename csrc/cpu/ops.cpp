// CPU entry points: check the kernel contract (csrc/ops.h, docs/KERNELS.md), then hand the rows to the
// per-norm kernels.
#include "ops.h"

#include <ATen/MemoryOverlap.h>

#include <cmath>
#include <initializer_list>

#include "cpu/kernels.h"

namespace rft::cpu {
namespace {

void check_norm(int64_t norm) {
  TORCH_CHECK(norm == kLinf || norm == kL2 || norm == kL1, "norm must be 0 (Linf), 1 (L2) or 2 (L1), got ",
              norm);
}

// A contiguous (N, D) CPU tensor of a kernel dtype, with the shape and dtype of x_adv.
void check_image(const char* name, const at::Tensor& t, const at::Tensor& x_adv) {
  TORCH_CHECK(t.defined(), name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got one on ", t.device());
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

// A contiguous (N,) CPU tensor of `dtype`.
void check_per_row(const char* name, const at::Tensor& t, at::ScalarType dtype, int64_t n) {
  TORCH_CHECK(t.defined() && t.device().is_cpu(), name, " must be a defined CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n && t.is_contiguous(), name, " must be a contiguous (", n,
              ",) tensor, got shape ", t.sizes());
}

void check_keep(const at::Tensor& keep, int64_t d) {
  const int64_t* p = keep.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < keep.numel(); ++i) {
    TORCH_CHECK(p[i] >= 1 && p[i] <= d, "keep[", i, "] must be in [1, ", d, "], got ", p[i]);
  }
}

// Outputs are written while inputs are still being read (several passes), so they must not share memory.
void check_output(const char* name, const at::Tensor& out, std::initializer_list<const at::Tensor*> others) {
  for (const at::Tensor* t : others) {
    TORCH_CHECK(at::get_overlap_status(out, *t) == at::MemOverlapStatus::No, name,
                " must not share memory with the other tensors of the call");
  }
}

// The fields every op fills; the caller adds its own.
Call base_call(const at::Tensor& out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps) {
  Call c{};
  c.dtype = x_adv.scalar_type();
  c.n = x_adv.size(0);
  c.d = x_adv.size(1);
  c.out = out.data_ptr();
  c.x_adv = x_adv.const_data_ptr();
  c.x = x.const_data_ptr();
  c.eps = eps.const_data_ptr<float>();
  return c;
}

void run(int64_t norm, Op op, const Call& call) {
  if (norm == kLinf) {
    run_linf(op, call);
  } else if (norm == kL2) {
    run_l2(op, call);
  } else {
    run_l1(op, call);
  }
}

// x_adv, x and eps, which every op takes.
void check_common(int64_t norm, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps) {
  check_norm(norm);
  check_image("x_adv", x_adv, x_adv);
  check_image("x", x, x_adv);
  check_per_row("eps", eps, at::kFloat, x_adv.size(0));
}

void check_step_inputs(int64_t norm, const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& step,
                       const at::Tensor& keep) {
  check_image("grad", grad, x_adv);
  check_per_row("step", step, at::kFloat, x_adv.size(0));
  if (norm == kL1) check_per_row("keep", keep, at::kLong, x_adv.size(0));
}

// keep (read only once there is something to compute). eps / step are not checked: a value that is not finite
// and > 0 makes its row's outputs NaN, as on every backend (docs/KERNELS.md).
void check_step_values(int64_t norm, const at::Tensor& x_adv, const at::Tensor& keep) {
  if (norm == kL1) check_keep(keep, x_adv.size(1));
}

}  // namespace

void project(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps,
             int64_t norm) {
  check_common(norm, x_adv, x, eps);
  check_image("out", out, x_adv);
  check_output("out", out, {&x_adv, &x});
  if (x_adv.numel() == 0) return;
  run(norm, Op::kProject, base_call(out, x_adv, x, eps));
}

void pgd_step(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& grad,
              const at::Tensor& step, const at::Tensor& eps, int64_t norm, const at::Tensor& keep) {
  check_common(norm, x_adv, x, eps);
  check_step_inputs(norm, x_adv, grad, step, keep);
  check_image("out", out, x_adv);
  check_output("out", out, {&x_adv, &x, &grad});
  if (x_adv.numel() == 0) return;
  check_step_values(norm, x_adv, keep);
  Call c = base_call(out, x_adv, x, eps);
  c.grad = grad.const_data_ptr();
  c.step = step.const_data_ptr<float>();
  c.keep = norm == kL1 ? keep.const_data_ptr<int64_t>() : nullptr;
  run(norm, Op::kPgdStep, c);
}

void apgd_step(at::Tensor x_next, at::Tensor z, const at::Tensor& x_adv, const at::Tensor& x_prev,
               const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step, const at::Tensor& eps,
               int64_t norm, double momentum, const at::Tensor& keep) {
  check_common(norm, x_adv, x, eps);
  check_step_inputs(norm, x_adv, grad, step, keep);
  check_image("x_prev", x_prev, x_adv);
  check_image("x_next", x_next, x_adv);
  check_image("z", z, x_adv);
  check_output("x_next", x_next, {&x_adv, &x_prev, &x, &grad, &z});
  check_output("z", z, {&x_adv, &x_prev, &x, &grad});
  TORCH_CHECK(momentum >= 0.0 && momentum <= 1.0, "momentum must be in [0, 1], got ", momentum);
  if (x_adv.numel() == 0) return;
  check_step_values(norm, x_adv, keep);
  Call c = base_call(x_next, x_adv, x, eps);
  c.z = z.data_ptr();
  c.x_prev = x_prev.const_data_ptr();
  c.grad = grad.const_data_ptr();
  c.step = step.const_data_ptr<float>();
  c.keep = norm == kL1 ? keep.const_data_ptr<int64_t>() : nullptr;
  c.momentum = static_cast<float>(momentum);
  c.one_minus_momentum = static_cast<float>(1.0 - momentum);
  run(norm, Op::kApgdStep, c);
}

}  // namespace rft::cpu
