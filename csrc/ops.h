// Kernel contract shared by the CPU (csrc/cpu) and CUDA (csrc/cuda) implementations.
//
// Every image tensor is a 2-D (N, D) contiguous view of one sample per row, in the same dtype
// (float32, bfloat16 or float16); arithmetic is float32. eps and step are float32 (N,) tensors on the
// same device; keep is an int64 (N,) tensor (L1 only: the threshold is the keep-th largest |grad| of the
// row, as AutoAttack's APGD-L1 picks it). Outputs are written into the preallocated out tensors, which
// have the shape and dtype of x_adv. norm: 0 = Linf, 1 = L2, 2 = L1.
#pragma once
#include <torch/extension.h>

namespace rft {

enum Norm : int64_t { kLinf = 0, kL2 = 1, kL1 = 2 };

#define RFT_DECLARE_KERNELS                                                                         \
  void project(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x, const at::Tensor& eps, \
               int64_t norm);                                                                      \
  void pgd_step(at::Tensor out, const at::Tensor& x_adv, const at::Tensor& x,                      \
                const at::Tensor& grad, const at::Tensor& step, const at::Tensor& eps,             \
                int64_t norm, const at::Tensor& keep);                                             \
  void apgd_step(at::Tensor x_next, at::Tensor z, const at::Tensor& x_adv,                         \
                 const at::Tensor& x_prev, const at::Tensor& x, const at::Tensor& grad,            \
                 const at::Tensor& step, const at::Tensor& eps, int64_t norm, double momentum,     \
                 const at::Tensor& keep);

namespace cpu {
RFT_DECLARE_KERNELS

// TRADES KL / objective (CPU only): per row loss = CE [if y] + beta * KL; stats = (lse_c, lse_a, KL).
std::tuple<at::Tensor, at::Tensor> kl_forward(const at::Tensor& logits_adv, const at::Tensor& logits_clean,
                                              const std::optional<at::Tensor>& y, double beta);
void kl_backward(const at::Tensor& weight, const at::Tensor& logits_adv, const at::Tensor& logits_clean,
                 const std::optional<at::Tensor>& y, double beta, const at::Tensor& stats, at::Tensor grad_adv,
                 const std::optional<at::Tensor>& grad_clean);
}  // namespace cpu

#ifdef RFT_WITH_CUDA
namespace cuda {
RFT_DECLARE_KERNELS
}  // namespace cuda
#endif

}  // namespace rft
