// L1 ops: AutoAttack's APGD-L1 sparse step and the exact projection onto ball ∩ box.
// Passes per row: the steps first select tau, the keep-th largest |grad|, by radix selection (3 histogram
// passes, which also count the kept signs); the projection sums h(0), then searches its soft threshold
// lam over float32 bit patterns (a few passes); apgd_step searches a second lam for the momentum point.
// Each pass recomputes its values from the inputs block by block; one final pass writes the outputs.
// Bad numbers: the loads make v NaN where an input entry is NaN / Inf; h(0) is then NaN and the row's lam is
// NaN (no search), which poisons the whole output row, as does an eps / step that is not finite and > 0.
// With a flag, each block of the write pass reports its check bits (rows.h): the row's rule, x's range.
#include <mutex>
#include <utility>

#include "cpu/rows.h"

namespace rft::cpu {
namespace {

// Room to the box in the direction of v.
inline float room(float v, float x) { return select(v > 0.f, 1.f - x, x); }

// The projected perturbation sign(v) clip(|v| - lam, 0, room).
inline float l1_delta(float v, float x, float lam) {
  return std::copysign(std::max(std::min(std::abs(v) - lam, room(v, x)), 0.f), v);
}

// lam of the exact projection of a row's v onto {||d||_1 <= eps} ∩ box: h(lam) = sum clip(|v| - lam, 0, room)
// is non-increasing; lam = 0 if h(0) <= eps, else the smallest float32 lam with h(lam) <= eps; NaN for a bad
// row (a NaN v, which makes the min / max of the term and so h(0) NaN, or an eps not finite and > 0).
// load(begin, n, v, x) writes a block's v and x as float.
template <class Load>
float l1_lambda(int64_t d, bool split, float eps, const Load& load) {
  auto prep = [&](int64_t b, int64_t n, Buf* buf) {
    load(b, n, buf[0], buf[1]);
    for (int64_t j = 0; j < n; ++j) {
      const float v = buf[0][j];
      buf[1][j] = room(v, buf[1][j]);
      buf[0][j] = std::abs(v);
    }
  };
  auto term = [](const Buf* buf, int64_t j, float lam) {
    return std::max(std::min(buf[0][j] - lam, buf[1][j]), 0.f);
  };
  const double h0 = sum_per_candidate(d, split, Cands{}, 1, prep, term)[0];
  if (std::isnan(h0) || !positive(eps)) return kNaN;
  if (h0 <= eps) return 0.f;
  return float_of(search_bits(d, split, {0, h0}, {kInfBits, 0.0}, eps, prep, term,
                              [&](double h) { return h <= eps; }));
}

// APGD-L1's step point x_adv + step * (sign(g) [|g| >= tau] / (cnt + 1e-10)), as v = point - x (NaN where an
// input entry is bad).
struct Step {
  float tau, step, inv_cnt;  // inv_cnt = 1 / (cnt + 1e-10)

  float v(float xa, float x, float g) const {
    const float v = xa + step * select(std::abs(g) >= tau, sign(g) * inv_cnt, 0.f) - x;
    return poison(finite(xa) & finite(x) & finite(g), v);
  }
};

// Counts of the `width` bits at `shift` of the |g| bit patterns whose bits above them equal prefix.
template <class T>
std::vector<int64_t> histogram(const T* grad, int64_t d, bool split, int shift, int width, uint32_t prefix) {
  const uint32_t mask = (1u << width) - 1;
  std::vector<int64_t> hist(mask + 1, 0);
  std::mutex merge;
  for_chunk_ranges(d, split, [&](int64_t cb, int64_t ce) {
    std::vector<uint32_t> local(mask + 1, 0);
    for (int64_t c = cb; c < ce; ++c) {
      chunk_blocks(d, c, [&](int64_t b, int64_t n) {
        const InBlock<T, 1> in({grad}, b, n);
        for (int64_t j = 0; j < n; ++j) {
          const uint32_t key = bits_of(std::abs(in[0][j]));
          if ((key >> (shift + width)) == prefix) ++local[(key >> shift) & mask];
        }
      });
    }
    const std::lock_guard<std::mutex> lock(merge);
    for (uint32_t i = 0; i <= mask; ++i) hist[i] += local[i];
  });
  return hist;
}

// The step with tau = the keep-th largest |g| of the row, exactly, by radix selection over the bit
// patterns of |g| (non-negative floats order like their bits: histograms of bits 30-20, 19-10, 9-0), and
// cnt = #{|g| >= tau, g != 0} from the same counts.
template <class T>
Step l1_step(const T* grad, int64_t keep, float step, int64_t d, bool split) {
  uint32_t prefix = 0;  // the bits of tau selected so far
  int64_t rank = keep, above = 0, equal = 0;
  for (const auto& [shift, width] : {std::pair{20, 11}, std::pair{10, 10}, std::pair{0, 10}}) {
    const auto hist = histogram(grad, d, split, shift, width, prefix);
    int64_t bin = static_cast<int64_t>(hist.size()) - 1;
    while (hist[bin] < rank) {
      rank -= hist[bin];
      above += hist[bin];
      --bin;
    }
    prefix = (prefix << width) | static_cast<uint32_t>(bin);
    equal = hist[bin];
  }
  const float tau = float_of(prefix);
  const int64_t cnt = above + (tau > 0.f ? equal : 0);
  return {tau, step, 1.f / (static_cast<float>(cnt) + 1e-10f)};
}

// lam of the projection of the step point, from the rows of x_adv, x and grad.
template <class T>
float step_lambda(const std::array<const T*, 3>& rows, const Step& st, float eps, int64_t d, bool split) {
  return l1_lambda(d, split, eps, [&, st](int64_t b, int64_t n, float* v, float* x) {
    const InBlock<T, 3> in(rows, b, n);
    for (int64_t j = 0; j < n; ++j) {
      v[j] = st.v(in[0][j], in[1][j], in[2][j]);
      x[j] = in[1][j];
    }
  });
}

template <class T>
void project(const Rows<T>& c) {
  for_each_row(c.n, [&](int64_t r, bool split) {
    const int64_t off = r * c.d;
    const std::array<const T*, 2> rows{c.x_adv + off, c.x + off};
    const float lam = l1_lambda(c.d, split, c.eps[r], [&](int64_t b, int64_t n, float* v, float* x) {
      const InBlock<T, 2> in(rows, b, n);
      for (int64_t j = 0; j < n; ++j) {
        v[j] = poison(finite(in[0][j]) & finite(in[1][j]), in[0][j] - in[1][j]);
        x[j] = in[1][j];
      }
    });
    const bool ok = !std::isnan(lam);
    for_each_block(c.d, split, [&, lam, ok](int64_t b, int64_t n) {
      const InBlock<T, 2> in(rows, b, n);
      OutBlock<T> out(c.out + off, b, n);
      const float *xa = in[0], *x = in[1];
      float* o = out.p;
      for (int64_t j = 0; j < n; ++j) o[j] = poison(ok, x[j] + l1_delta(xa[j] - x[j], x[j], lam));
      if (c.flag) report(c.flag, check_bits(!ok, {}, x, n));
      out.flush();
    });
  });
}

template <class T>
void pgd_step(const Rows<T>& c) {
  for_each_row(c.n, [&](int64_t r, bool split) {
    const int64_t off = r * c.d;
    const std::array<const T*, 3> rows{c.x_adv + off, c.x + off, c.grad + off};
    const Step st = l1_step(rows[2], c.keep[r], c.step[r], c.d, split);
    const float lam = step_lambda(rows, st, c.eps[r], c.d, split);
    const bool ok = !std::isnan(lam) && positive(st.step);
    for_each_block(c.d, split, [&, st, lam, ok](int64_t b, int64_t n) {
      const InBlock<T, 3> in(rows, b, n);
      OutBlock<T> out(c.out + off, b, n);
      const float *xa = in[0], *x = in[1], *g = in[2];
      float* o = out.p;
      for (int64_t j = 0; j < n; ++j) o[j] = poison(ok, x[j] + l1_delta(st.v(xa[j], x[j], g[j]), x[j], lam));
      if (c.flag) report(c.flag, check_bits(!ok, {}, x, n));
      out.flush();
    });
  });
}

template <class T>
void apgd_step(const Rows<T>& c) {
  const float a = c.momentum, a1 = c.one_minus_momentum;
  for_each_row(c.n, [&](int64_t r, bool split) {
    const int64_t off = r * c.d;
    const float eps = c.eps[r];
    const std::array<const T*, 4> rows{c.x_adv + off, c.x + off, c.grad + off, c.x_prev + off};
    const Step st = l1_step(rows[2], c.keep[r], c.step[r], c.d, split);
    const float lam = step_lambda<T>({rows[0], rows[1], rows[2]}, st, eps, c.d, split);
    // v of the momentum point w (from the unrounded z = x + delta) with z itself.
    const bool z_ok = !std::isnan(lam) && positive(st.step);
    auto momentum_v = [=](float xa, float x, float g, float xp, float& z) {
      z = poison(z_ok, x + l1_delta(st.v(xa, x, g), x, lam));
      return poison(finite(xp), heavy_ball(xa, z, xp, a, a1) - x);
    };
    const float lam2 = l1_lambda(c.d, split, eps, [&, momentum_v](int64_t b, int64_t n, float* v, float* x) {
      const InBlock<T, 4> in(rows, b, n);
      for (int64_t j = 0; j < n; ++j) {
        float z;
        v[j] = momentum_v(in[0][j], in[1][j], in[2][j], in[3][j], z);
        x[j] = in[1][j];
      }
    });
    const bool next_ok = z_ok && !std::isnan(lam2);
    for_each_block(c.d, split, [&, lam2, momentum_v, next_ok](int64_t b, int64_t n) {
      const InBlock<T, 4> in(rows, b, n);
      OutBlock<T> next(c.out + off, b, n), z(c.z + off, b, n);
      const float *xa = in[0], *x = in[1], *g = in[2], *xp = in[3];
      float *o = next.p, *oz = z.p;
      for (int64_t j = 0; j < n; ++j) {
        const float v = momentum_v(xa[j], x[j], g[j], xp[j], oz[j]);
        o[j] = poison(next_ok, x[j] + l1_delta(v, x[j], lam2));
      }
      if (c.flag) report(c.flag, check_bits(!next_ok, {}, x, n));  // next_ok covers z's rule
      next.flush();
      z.flush();
    });
  });
}

}  // namespace

void run_l1(Op op, const Call& call) {
  run_op(
      op, call, [](const auto& rows) { project(rows); }, [](const auto& rows) { pgd_step(rows); },
      [](const auto& rows) { apgd_step(rows); });
}

}  // namespace rft::cpu
