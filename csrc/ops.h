// The device sides behind the one binding file: each runs a call that already obeys the contract
// (csrc/contract.h, checked once in bindings.cpp) and has at least one element.
#pragma once
#include <torch/extension.h>

#include "contract.h"

namespace rft {

namespace cpu {
void run(const OpArgs& a);

// TRADES KL / objective (CPU only): per row loss = CE [if y] + beta * KL; stats = (lse_c, lse_a, KL).
// flag (optional int32 (1,)): kl_forward ORs 1 into it when a logit is NaN / Inf.
std::tuple<at::Tensor, at::Tensor> kl_forward(const at::Tensor& logits_adv, const at::Tensor& logits_clean,
                                              const std::optional<at::Tensor>& y, double beta,
                                              const std::optional<at::Tensor>& flag);
void kl_backward(const at::Tensor& weight, const at::Tensor& logits_adv, const at::Tensor& logits_clean,
                 const std::optional<at::Tensor>& y, double beta, const at::Tensor& stats, at::Tensor grad_adv,
                 const std::optional<at::Tensor>& grad_clean);
}  // namespace cpu

#ifdef RFT_WITH_CUDA
namespace cuda {
void run(const OpArgs& a);
}  // namespace cuda
#endif

}  // namespace rft
