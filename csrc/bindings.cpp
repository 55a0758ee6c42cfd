// The one binding file: each op checks the contract once (csrc/contract.h), then runs on the device of x_adv.
#include "ops.h"

namespace {

#ifdef RFT_WITH_CUDA
constexpr bool kHasCuda = true;
#else
constexpr bool kHasCuda = false;
#endif

void run(const rft::OpArgs& a) {
  rft::check_contract(a);
  const at::Tensor& x_adv = a.x_adv;
  TORCH_CHECK(x_adv.is_cpu() || (kHasCuda && x_adv.is_cuda()),
              kHasCuda ? "rft_fast._C runs on CPU and CUDA tensors, got one on "
                       : "rft_fast._C was built without CUDA kernels; got a tensor on ",
              x_adv.device());
  if (x_adv.numel() == 0) return;
#ifdef RFT_WITH_CUDA
  if (x_adv.is_cuda()) return rft::cuda::run(a);
#endif
  rft::cpu::run(a);
}

at::Tensor flag_or_undefined(const std::optional<at::Tensor>& flag) { return flag.value_or(at::Tensor()); }

void project(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps,
             int64_t norm, const std::optional<at::Tensor>& flag) {
  rft::OpArgs a{rft::Op::kProject, norm};
  a.flag = flag_or_undefined(flag);
  a.out = out;
  a.x_adv = x_adv;
  a.x = x;
  a.eps = eps;
  run(a);
}

void pgd_step(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& grad,
              const at::Tensor& step, const at::Tensor& eps, int64_t norm, const at::Tensor& keep,
              const std::optional<at::Tensor>& flag) {
  rft::OpArgs a{rft::Op::kPgdStep, norm};
  a.flag = flag_or_undefined(flag);
  a.out = out;
  a.x_adv = x_adv;
  a.x = x;
  a.grad = grad;
  a.step = step;
  a.eps = eps;
  a.keep = keep;
  run(a);
}

void apgd_step(at::Tensor x_next, at::Tensor z, const at::Tensor& x_adv, const at::Tensor& x_prev,
               const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step,
               const at::Tensor& eps, int64_t norm, double momentum, const at::Tensor& keep,
               const std::optional<at::Tensor>& flag) {
  rft::OpArgs a{rft::Op::kApgdStep, norm};
  a.flag = flag_or_undefined(flag);
  a.out = x_next;
  a.z = z;
  a.x_adv = x_adv;
  a.x_prev = x_prev;
  a.x = x;
  a.grad = grad;
  a.step = step;
  a.eps = eps;
  a.keep = keep;
  a.momentum = momentum;
  run(a);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rft-fast C++/CUDA kernels (see csrc/contract.h and docs/kernels.md for the contract)";
  m.attr("has_cuda") = kHasCuda;
  // Every op's last argument: flag, None or an int32 (1,) tensor the kernels OR their data-check bits into.
  m.def("project", &project, "projection onto the Lp ball intersected with [0,1]^d (writes out)");
  m.def("pgd_step", &pgd_step, "projected ascent step (writes out)");
  m.def("apgd_step", &apgd_step, "APGD momentum step (writes x_next and z)");
  m.def("kl_forward", &rft::cpu::kl_forward, "TRADES objective per row and (lse_c, lse_a, KL) stats (CPU)");
  m.def("kl_backward", &rft::cpu::kl_backward, "TRADES objective gradients for both logits (CPU)");
}
