// TRADES KL / objective on CPU (docs/kernels.md, "TRADES KL / objective kernels"): rows in parallel; per
// row one max pass and one exp pass over C (the row stays in cache between them), math in float32 with
// double accumulators; backward one pass writing both gradients.
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "cpu/rows.h"
#include "ops.h"

namespace rft::cpu {
namespace {

void check_logits(const at::Tensor& la, const at::Tensor& lc, const std::optional<at::Tensor>& y) {
  TORCH_CHECK(la.dim() == 2 && lc.sizes() == la.sizes(), "rft_fast kl: logits must both be (N, C), got ",
              la.sizes(), " and ", lc.sizes());
  TORCH_CHECK(la.device().is_cpu() && lc.device().is_cpu(), "rft_fast kl: the C++ kernel takes CPU tensors");
  TORCH_CHECK(la.scalar_type() == lc.scalar_type(), "rft_fast kl: logits dtypes differ");
  TORCH_CHECK(la.stride(1) == 1 && lc.stride(1) == 1, "rft_fast kl: logits rows must be contiguous");
  if (y.has_value()) {
    TORCH_CHECK(y->scalar_type() == at::kLong && y->dim() == 1 && y->size(0) == la.size(0) && y->is_contiguous(),
                "rft_fast kl: y must be a contiguous int64 (N,) tensor");
  }
}

// No entry of the row is NaN / Inf (the check of a flagged call; the row is in cache after row_stats).
template <class T>
bool row_finite(const T* p, int64_t c) {
  int32_t bad = 0;
  for (int64_t j = 0; j < c; ++j) bad |= static_cast<int32_t>(!finite(static_cast<float>(p[j])));
  return !bad;
}

struct RowStats {
  float lse_c, lse_a, kl;
};

template <class T>
RowStats row_stats(const T* lc, const T* la, int64_t c) {
  float m_c = -std::numeric_limits<float>::infinity(), m_a = m_c;
  for (int64_t j = 0; j < c; ++j) {
    m_c = std::max(m_c, static_cast<float>(lc[j]));
    m_a = std::max(m_a, static_cast<float>(la[j]));
  }
  double s_c = 0, s_a = 0, t = 0;
  for (int64_t j = 0; j < c; ++j) {
    const float dc = static_cast<float>(lc[j]) - m_c, da = static_cast<float>(la[j]) - m_a;
    const float ec = std::exp(dc);
    s_c += ec;
    s_a += std::exp(da);
    t += static_cast<double>(ec) * (dc - da);  // sum e^{lc - m_c} ((lc - m_c) - (la - m_a))
  }
  const double log_s_c = std::log(s_c), log_s_a = std::log(s_a);
  // KL = sum p_c (log p_c - log p_a) = t / s_c - log s_c + log s_a: the large maxima cancel exactly.
  return {static_cast<float>(m_c + log_s_c), static_cast<float>(m_a + log_s_a),
          static_cast<float>(t / s_c - log_s_c + log_s_a)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> kl_forward(const at::Tensor& logits_adv, const at::Tensor& logits_clean,
                                              const std::optional<at::Tensor>& y, double beta,
                                              const std::optional<at::Tensor>& flag) {
  check_logits(logits_adv, logits_clean, y);
  if (flag.has_value()) {
    TORCH_CHECK(flag->is_cpu() && flag->scalar_type() == at::kInt && flag->numel() == 1,
                "rft_fast kl: flag must be None or an int32 (1,) CPU tensor");
  }
  int32_t* flag_p = flag.has_value() ? flag->mutable_data_ptr<int32_t>() : nullptr;
  const int64_t n = logits_adv.size(0), c = logits_adv.size(1);
  auto loss = at::empty({n}, logits_adv.options().dtype(at::kFloat));
  auto stats = at::empty({n, 3}, logits_adv.options().dtype(at::kFloat));
  const int64_t* labels = y.has_value() ? y->const_data_ptr<int64_t>() : nullptr;
  RFT_CPU_DISPATCH(logits_adv.scalar_type(), "rft_kl_forward", [&] {
    const scalar_t* la = logits_adv.const_data_ptr<scalar_t>();
    const scalar_t* lc = logits_clean.const_data_ptr<scalar_t>();
    float* out = loss.mutable_data_ptr<float>();
    float* st = stats.mutable_data_ptr<float>();
    const int64_t sa = logits_adv.stride(0), sc = logits_clean.stride(0);
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const RowStats r = row_stats(lc + i * sc, la + i * sa, c);
        if (flag_p) report(flag_p, row_finite(lc + i * sc, c) && row_finite(la + i * sa, c) ? 0 : kFlagBadNumber);
        const float ce = labels ? r.lse_c - static_cast<float>(lc[i * sc + labels[i]]) : 0.f;
        out[i] = ce + static_cast<float>(beta) * r.kl;
        st[3 * i] = r.lse_c;
        st[3 * i + 1] = r.lse_a;
        st[3 * i + 2] = r.kl;
      }
    });
  });
  return {loss, stats};
}

void kl_backward(const at::Tensor& weight, const at::Tensor& logits_adv, const at::Tensor& logits_clean,
                 const std::optional<at::Tensor>& y, double beta, const at::Tensor& stats, at::Tensor grad_adv,
                 const std::optional<at::Tensor>& grad_clean) {
  check_logits(logits_adv, logits_clean, y);
  const int64_t n = logits_adv.size(0), c = logits_adv.size(1);
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.numel() == n && weight.is_contiguous(),
              "rft_fast kl: weight must be float32 (N,)");
  TORCH_CHECK(stats.scalar_type() == at::kFloat && stats.sizes() == at::IntArrayRef({n, 3}) && stats.is_contiguous(),
              "rft_fast kl: stats must be float32 (N, 3)");
  TORCH_CHECK(grad_adv.sizes() == logits_adv.sizes() && grad_adv.is_contiguous() &&
                  grad_adv.scalar_type() == logits_adv.scalar_type(),
              "rft_fast kl: grad_adv must be a contiguous (N, C) tensor in the logits' dtype");
  if (grad_clean.has_value()) {
    TORCH_CHECK(grad_clean->sizes() == logits_adv.sizes() && grad_clean->is_contiguous() &&
                    grad_clean->scalar_type() == logits_adv.scalar_type(),
                "rft_fast kl: grad_clean must be a contiguous (N, C) tensor in the logits' dtype");
  }
  const int64_t* labels = y.has_value() ? y->const_data_ptr<int64_t>() : nullptr;
  const float b = static_cast<float>(beta);
  RFT_CPU_DISPATCH(logits_adv.scalar_type(), "rft_kl_backward", [&] {
    const scalar_t* la = logits_adv.const_data_ptr<scalar_t>();
    const scalar_t* lc = logits_clean.const_data_ptr<scalar_t>();
    const float* w = weight.const_data_ptr<float>();
    const float* st = stats.const_data_ptr<float>();
    scalar_t* ga = grad_adv.mutable_data_ptr<scalar_t>();
    scalar_t* gc = grad_clean.has_value() ? grad_clean->mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t sa = logits_adv.stride(0), sc = logits_clean.stride(0);
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float lse_c = st[3 * i], lse_a = st[3 * i + 1], kl = st[3 * i + 2], wi = w[i];
        const scalar_t* lci = lc + i * sc;
        const scalar_t* lai = la + i * sa;
        for (int64_t j = 0; j < c; ++j) {
          const float log_pc = static_cast<float>(lci[j]) - lse_c, log_pa = static_cast<float>(lai[j]) - lse_a;
          const float pc = std::exp(log_pc), pa = std::exp(log_pa);
          ga[i * c + j] = static_cast<scalar_t>(wi * b * (pa - pc));
          if (gc) {
            float g = b * pc * ((log_pc - log_pa) - kl);
            if (labels) g += pc - (j == labels[i] ? 1.f : 0.f);
            gc[i * c + j] = static_cast<scalar_t>(wi * g);
          }
        }
      }
    });
  });
}

}  // namespace rft::cpu
