// L2 ops. Steps follow AutoAttack's rescale-then-clip rule: pgd_step reduces then writes (2 passes),
// apgd_step adds a pass for the norm of the momentum point. project is the exact nearest point of
// ball ∩ box, x + clip(t v, -x, 1 - x): one pass for ||v||^2 and f(1); when the ball binds, the
// bit-pattern search for t (1 pass when nothing clips at t, a few otherwise); then the write pass.
// Bad numbers: a NaN / Inf entry makes its sum of squares (S_gg, ||v||^2, ||d2||^2) NaN, which poisons the
// whole output row, as does an eps / step that is not finite and > 0. With a flag, each block of the write pass
// reports its check bits (rows.h): the row's rule and its x entries' range.
#include "cpu/rows.h"

namespace rft::cpu {
namespace {

// min(eps, n) / (n + 1e-12): the factor that brings a perturbation of norm n into the ball.
inline float into_ball(float eps, double norm) {
  const float n = static_cast<float>(norm);
  return std::min(eps, n) / (n + 1e-12f);
}

// A row's step z = clamp(x + (v + c g) s, 0, 1), v = x_adv - x: c = step / ||g||, s rescales into the ball;
// ok: the row holds no bad number (else z is written as NaN).
struct Step {
  float c, s;
  bool ok;
};

inline float step_point(float xa, float x, float g, float c, float s) {
  return clamp01(x + ((xa - x) + c * g) * s);
}

// ||v + c g||^2 = S_vv + 2c S_vg + c^2 S_gg from one reduction pass.
template <class T>
Step l2_step(const std::array<const T*, 3>& rows, float step, float eps, int64_t d, bool split) {
  const auto s = sum_row<3>(d, split, [&](int64_t b, int64_t n, double* acc) {
    const InBlock<T, 3> in(rows, b, n);
    const float *xa = in[0], *x = in[1], *g = in[2];
    float gg = 0.f, vg = 0.f, vv = 0.f;
#pragma omp simd reduction(+ : gg, vg, vv)
    for (int64_t j = 0; j < n; ++j) {
      const float v = xa[j] - x[j];
      gg += poison(finite(xa[j]) & finite(x[j]) & finite(g[j]), g[j] * g[j]);  // NaN: a bad entry
      vg += v * g[j];
      vv += v * v;
    }
    acc[0] += gg;
    acc[1] += vg;
    acc[2] += vv;
  });
  const float c = step / (static_cast<float>(std::sqrt(s[0])) + 1e-12f);
  const double n1 = std::sqrt(std::max(s[2] + 2.0 * c * s[1] + static_cast<double>(c) * c * s[0], 0.0));
  return {c, into_ball(eps, n1), !std::isnan(s[0]) && positive(eps) && positive(step)};
}

template <class T>
void project(const Rows<T>& c) {
  for_each_row(c.n, [&](int64_t r, bool split) {
    const int64_t off = r * c.d;
    const float eps = c.eps[r];
    const double eps2 = static_cast<double>(eps) * eps;
    const std::array<const T*, 2> rows{c.x_adv + off, c.x + off};
    // Block buffers: v = x_adv - x and the box of the perturbation, [-x, 1 - x].
    auto prep = [&](int64_t b, int64_t n, Buf* buf) {
      const InBlock<T, 2> in(rows, b, n);
      const float *xa = in[0], *x = in[1];
      for (int64_t j = 0; j < n; ++j) {
        buf[0][j] = xa[j] - x[j];
        buf[1][j] = -x[j];
        buf[2][j] = 1.f - x[j];
      }
    };
    // f(t) = sum clip(t v, -x, 1 - x)^2, non-decreasing in t.
    auto term = [](const Buf* buf, int64_t j, float t) {
      return sq(std::min(std::max(t * buf[0][j], buf[1][j]), buf[2][j]));
    };
    const auto s = sum_row<2>(c.d, split, [&](int64_t b, int64_t n, double* acc) {
      Buf buf[kPrepBufs];
      prep(b, n, buf);
      float vv = 0.f, f1 = 0.f;
#pragma omp simd reduction(+ : vv, f1)
      for (int64_t j = 0; j < n; ++j) {
        vv += poison(finite(buf[0][j]) & finite(buf[1][j]), sq(buf[0][j]));  // NaN: a bad entry
        f1 += term(buf, j, 1.f);
      }
      acc[0] += vv;
      acc[1] += f1;
    });
    const bool ok = !std::isnan(s[0]) && positive(eps);
    float t = 1.f;
    if (ok && s[1] > eps2) {
      // f(t) <= t^2 ||v||^2 (equal while nothing clips), so t0 = eps / ||v|| is feasible; t = 1 is not.
      const float t0 = std::min(static_cast<float>(eps / std::sqrt(s[0])), float_of(kOneBits - 1));
      const End lo{bits_of(t0), static_cast<double>(t0) * t0 * s[0]}, hi{kOneBits, s[1]};
      t = float_of(search_bits(c.d, split, lo, hi, eps2, prep, term, [&](double f) { return f > eps2; }) - 1);
    }
    for_each_block(c.d, split, [&, t, ok](int64_t b, int64_t n) {
      const InBlock<T, 2> in(rows, b, n);
      OutBlock<T> out(c.out + off, b, n);
      const float *xa = in[0], *x = in[1];
      float* o = out.p;
      for (int64_t j = 0; j < n; ++j) {
        o[j] = poison(ok, x[j] + std::min(std::max(t * (xa[j] - x[j]), -x[j]), 1.f - x[j]));
      }
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
    const Step st = l2_step(rows, c.step[r], c.eps[r], c.d, split);
    for_each_block(c.d, split, [&, st](int64_t b, int64_t n) {
      const InBlock<T, 3> in(rows, b, n);
      OutBlock<T> out(c.out + off, b, n);
      const float *xa = in[0], *x = in[1], *g = in[2];
      float* o = out.p;
      for (int64_t j = 0; j < n; ++j) o[j] = poison(st.ok, step_point(xa[j], x[j], g[j], st.c, st.s));
      if (c.flag) report(c.flag, check_bits(!st.ok, {}, x, n));
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
    const Step st = l2_step<T>({rows[0], rows[1], rows[2]}, c.step[r], eps, c.d, split);
    // Writes z and sums ||w - x||^2 for the momentum point w of the unrounded z.
    const auto n2 = sum_row<1>(c.d, split, [&, st, a, a1](int64_t b, int64_t n, double* acc) {
      const InBlock<T, 4> in(rows, b, n);
      OutBlock<T> z(c.z + off, b, n);
      const float *xa = in[0], *x = in[1], *g = in[2], *xp = in[3];
      float* oz = z.p;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < n; ++j) {
        const float zj = step_point(xa[j], x[j], g[j], st.c, st.s);
        oz[j] = zj;
        s += sq(heavy_ball(xa[j], zj, xp[j], a, a1) - x[j]);
      }
      // Bad numbers outside the sum's loop (its vectorization, and so its rounding, stays as it was): a bad
      // x_prev entry makes ||d2||^2 NaN, a bad row writes a NaN z.
      bool xp_ok = true;
      for (int64_t j = 0; j < n; ++j) xp_ok &= finite(xp[j]);
      if (!st.ok) std::fill(oz, oz + n, kNaN);
      z.flush();
      acc[0] += poison(xp_ok, s);
    });
    const float s2 = into_ball(eps, std::sqrt(n2[0]));
    const bool next_ok = st.ok && !std::isnan(n2[0]);
    for_each_block(c.d, split, [&, st, s2, a, a1, next_ok](int64_t b, int64_t n) {
      const InBlock<T, 4> in(rows, b, n);
      OutBlock<T> out(c.out + off, b, n);
      const float *xa = in[0], *x = in[1], *g = in[2], *xp = in[3];
      float* o = out.p;
      for (int64_t j = 0; j < n; ++j) {
        const float w = heavy_ball(xa[j], step_point(xa[j], x[j], g[j], st.c, st.s), xp[j], a, a1);
        o[j] = poison(next_ok, clamp01(x[j] + (w - x[j]) * s2));
      }
      if (c.flag) report(c.flag, check_bits(!next_ok, {}, x, n));  // next_ok covers z's rule
      out.flush();
    });
  });
}

}  // namespace

void run_l2(Op op, const Call& call) {
  run_op(
      op, call, [](const auto& rows) { project(rows); }, [](const auto& rows) { pgd_step(rows); },
      [](const auto& rows) { apgd_step(rows); });
}

}  // namespace rft::cpu
