// The CPU side: a checked call (csrc/contract.h) as raw pointers into its rows, to the norm's kernels.
#include "ops.h"

#include "cpu/kernels.h"

namespace rft::cpu {
namespace {

// The kernels of each norm, indexed by Norm.
constexpr void (*kRun[kNumNorms])(Op, const Call&) = {run_linf, run_l2, run_l1};

// keep (read on the host, once there is something to compute). eps / step are not read: a value that is not
// finite and > 0 makes its row's outputs NaN, as on every backend (docs/kernels.md).
void check_keep(const at::Tensor& keep, int64_t d) {
  const int64_t* p = keep.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < keep.numel(); ++i) {
    TORCH_CHECK(p[i] >= 1 && p[i] <= d, "keep[", i, "] must be in [1, ", d, "], got ", p[i]);
  }
}

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

}  // namespace

void run(const OpArgs& a) {
  const bool l1_step = a.norm == kL1 && a.op != Op::kProject;
  if (l1_step) check_keep(a.keep, a.x_adv.size(1));
  Call c{};
  c.dtype = a.x_adv.scalar_type();
  c.n = a.x_adv.size(0);
  c.d = a.x_adv.size(1);
  c.out = a.out.data_ptr();
  c.z = a.z.defined() ? a.z.data_ptr() : nullptr;
  c.x_adv = a.x_adv.const_data_ptr();
  c.x_prev = data_or_null(a.x_prev);
  c.x = a.x.const_data_ptr();
  c.grad = data_or_null(a.grad);
  c.eps = a.eps.const_data_ptr<float>();
  c.step = a.step.defined() ? a.step.const_data_ptr<float>() : nullptr;
  c.keep = l1_step ? a.keep.const_data_ptr<int64_t>() : nullptr;
  c.momentum = static_cast<float>(a.momentum);
  c.one_minus_momentum = static_cast<float>(1.0 - a.momentum);
  c.flag = a.flag.defined() ? a.flag.mutable_data_ptr<int32_t>() : nullptr;
  kRun[a.norm](a.op, c);
}

}  // namespace rft::cpu
