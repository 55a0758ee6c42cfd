// The one binding file: dispatches each op to the CPU or CUDA implementation by device.
#include "ops.h"

namespace {

#ifdef RFT_WITH_CUDA
constexpr bool kHasCuda = true;
#define RFT_DISPATCH(fn, ref, ...)                                              \
  do {                                                                          \
    if ((ref).is_cuda()) {                                                      \
      rft::cuda::fn(__VA_ARGS__);                                               \
    } else {                                                                    \
      rft::cpu::fn(__VA_ARGS__);                                                \
    }                                                                           \
  } while (0)
#else
constexpr bool kHasCuda = false;
#define RFT_DISPATCH(fn, ref, ...)                                              \
  do {                                                                          \
    TORCH_CHECK(!(ref).is_cuda(), "rft_fast._C was built without CUDA kernels"); \
    rft::cpu::fn(__VA_ARGS__);                                                  \
  } while (0)
#endif

void project(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps,
             int64_t norm) {
  RFT_DISPATCH(project, x_adv, out, x_adv, x, eps, norm);
}

void pgd_step(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& grad,
              const at::Tensor& step, const at::Tensor& eps, int64_t norm, const at::Tensor& keep) {
  RFT_DISPATCH(pgd_step, x_adv, out, x_adv, x, grad, step, eps, norm, keep);
}

void apgd_step(at::Tensor x_next, at::Tensor z, const at::Tensor& x_adv, const at::Tensor& x_prev,
               const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step,
               const at::Tensor& eps, int64_t norm, double momentum, const at::Tensor& keep) {
  RFT_DISPATCH(apgd_step, x_adv, x_next, z, x_adv, x_prev, x, grad, step, eps, norm, momentum,
               keep);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rft-fast C++/CUDA kernels (see csrc/ops.h for the contract)";
  m.attr("has_cuda") = kHasCuda;
  m.def("project", &project, "projection onto the Lp ball intersected with [0,1]^d (writes out)");
  m.def("pgd_step", &pgd_step, "projected ascent step (writes out)");
  m.def("apgd_step", &apgd_step, "APGD momentum step (writes x_next and z)");
  m.def("kl_forward", &rft::cpu::kl_forward, "TRADES objective per row and (lse_c, lse_a, KL) stats (CPU)");
  m.def("kl_backward", &rft::cpu::kl_backward, "TRADES objective gradients for both logits (CPU)");
}
