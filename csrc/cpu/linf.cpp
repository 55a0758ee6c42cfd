// Linf ops: elementwise, one pass reading each input once and writing each output once. An output entry is
// NaN where an input entry it reads is NaN / Inf, or its row's eps / step is not finite and > 0. With a flag,
// each block reports its check bits (rows.h).
#include "cpu/rows.h"

namespace rft::cpu {
namespace {

inline float linf_clip(float p, float x, float eps) {
  return clamp01(std::min(std::max(p, x - eps), x + eps));
}

template <class T>
void project(const Rows<T>& c) {
  for_each_row(c.n, [&](int64_t r, bool split) {
    const int64_t off = r * c.d;
    const float eps = c.eps[r];
    const bool row_ok = positive(eps);
    for_each_block(c.d, split, [&, eps, row_ok](int64_t b, int64_t n) {
      const InBlock<T, 2> in({c.x_adv + off, c.x + off}, b, n);
      OutBlock<T> out(c.out + off, b, n);
      const float *xa = in[0], *x = in[1];
      float* o = out.p;
      for (int64_t j = 0; j < n; ++j) {
        o[j] = poison(row_ok & finite(xa[j]) & finite(x[j]), linf_clip(xa[j], x[j], eps));
      }
      if (c.flag) report(c.flag, check_bits(!row_ok, {xa, x}, x, n));
      out.flush();
    });
  });
}

template <class T>
void pgd_step(const Rows<T>& c) {
  for_each_row(c.n, [&](int64_t r, bool split) {
    const int64_t off = r * c.d;
    const float eps = c.eps[r], step = c.step[r];
    const bool row_ok = positive(eps) & positive(step);
    for_each_block(c.d, split, [&, eps, step, row_ok](int64_t b, int64_t n) {
      const InBlock<T, 3> in({c.x_adv + off, c.x + off, c.grad + off}, b, n);
      OutBlock<T> out(c.out + off, b, n);
      const float *xa = in[0], *x = in[1], *g = in[2];
      float* o = out.p;
      for (int64_t j = 0; j < n; ++j) {
        const bool ok = row_ok & finite(xa[j]) & finite(x[j]) & finite(g[j]);
        o[j] = poison(ok, linf_clip(xa[j] + step * sign(g[j]), x[j], eps));
      }
      if (c.flag) report(c.flag, check_bits(!row_ok, {xa, x, g}, x, n));
      out.flush();
    });
  });
}

template <class T>
void apgd_step(const Rows<T>& c) {
  for_each_row(c.n, [&](int64_t r, bool split) {
    const int64_t off = r * c.d;
    const float eps = c.eps[r], step = c.step[r], a = c.momentum, a1 = c.one_minus_momentum;
    const bool row_ok = positive(eps) & positive(step);
    for_each_block(c.d, split, [&, eps, step, a, a1, row_ok](int64_t b, int64_t n) {
      const InBlock<T, 4> in({c.x_adv + off, c.x + off, c.grad + off, c.x_prev + off}, b, n);
      OutBlock<T> next(c.out + off, b, n), z(c.z + off, b, n);
      const float *xa = in[0], *x = in[1], *g = in[2], *xp = in[3];
      float *o = next.p, *oz = z.p;
      for (int64_t j = 0; j < n; ++j) {
        const float zj = linf_clip(xa[j] + step * sign(g[j]), x[j], eps);
        const bool ok = row_ok & finite(xa[j]) & finite(x[j]) & finite(g[j]);
        oz[j] = poison(ok, zj);
        o[j] = poison(ok & finite(xp[j]), linf_clip(heavy_ball(xa[j], zj, xp[j], a, a1), x[j], eps));
      }
      if (c.flag) report(c.flag, check_bits(!row_ok, {xa, x, g, xp}, x, n));  // x_next's rule covers z's
      next.flush();
      z.flush();
    });
  });
}

}  // namespace

void run_linf(Op op, const Call& call) {
  run_op(
      op, call, [](const auto& rows) { project(rows); }, [](const auto& rows) { pgd_step(rows); },
      [](const auto& rows) { apgd_step(rows); });
}

}  // namespace rft::cpu
