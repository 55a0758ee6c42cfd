// Shared machinery of the CPU kernels: typed row views, the row / chunk / block loops, elementwise helpers
// and the K-ary search over float32 bit patterns behind every exact per-row solve (docs/kernels.md).
//
// Work layout: with enough rows, each thread takes whole rows; otherwise rows run one after another and
// every pass over a row splits into chunks spread over the threads. Within a chunk, data moves in blocks
// of kBlock elements converted to float32 once, so hot loops are plain float loops the compiler vectorizes.
#pragma once

#include <ATen/Dispatch_v2.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"

// Runs the body with scalar_t bound to the dtype of the call (float, BFloat16 or Half).
#define RFT_CPU_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_V2(TYPE, NAME, AT_WRAP(__VA_ARGS__), at::kFloat, at::kBFloat16, at::kHalf)

namespace rft::cpu {

constexpr int64_t kBlock = 1024;         // elements handled in float32 at a time (buffers stay in L1)
constexpr int64_t kChunk = 8 * kBlock;   // unit of work a thread takes within a row
constexpr int kCands = 16;               // candidates per pass of the bit-pattern search (4 | kCands)
constexpr uint32_t kOneBits = 0x3F800000u;  // 1.0f
constexpr uint32_t kInfBits = 0x7F800000u;  // +inf
constexpr int kPrepBufs = 3;             // float buffers a search's prep may fill per block

using Buf = float[kBlock];

// A Call with its pointers typed (row r of each image tensor starts at r * d).
template <class T>
struct Rows {
  int64_t n, d;
  T* out;
  T* z;
  const T *x_adv, *x_prev, *x, *grad;
  const float *eps, *step;
  const int64_t* keep;
  float momentum, one_minus_momentum;
  int32_t* flag;

  explicit Rows(const Call& c)
      : n(c.n), d(c.d), out(static_cast<T*>(c.out)), z(static_cast<T*>(c.z)),
        x_adv(static_cast<const T*>(c.x_adv)), x_prev(static_cast<const T*>(c.x_prev)),
        x(static_cast<const T*>(c.x)), grad(static_cast<const T*>(c.grad)), eps(c.eps), step(c.step),
        keep(c.keep), momentum(c.momentum), one_minus_momentum(c.one_minus_momentum), flag(c.flag) {}
};

// Runs one op of a norm on the call's dtype: project, pgd_step and apgd_step are generic callables taking the
// call's Rows<T> (each norm file's run_* passes its three kernel templates).
template <class Project, class PgdStep, class ApgdStep>
void run_op(Op op, const Call& call, const Project& project, const PgdStep& pgd_step, const ApgdStep& apgd_step) {
  RFT_CPU_DISPATCH(call.dtype, "rft_cpu_kernel", [&] {
    const Rows<scalar_t> rows(call);
    switch (op) {
      case Op::kProject: return project(rows);
      case Op::kPgdStep: return pgd_step(rows);
      case Op::kApgdStep: return apgd_step(rows);
    }
  });
}

// ---------------------------------------------------------------- float views of T blocks

// M input rows' block [begin, begin + n) as float: the rows themselves for float, else converted copies.
template <class T, int M>
struct InBlock {
  Buf buf[M];
  const float* p[M];

  InBlock(const std::array<const T*, M>& rows, int64_t begin, int64_t n) {
    for (int i = 0; i < M; ++i) {
      if constexpr (std::is_same_v<T, float>) {
        p[i] = rows[i] + begin;
      } else {
        const T* src = rows[i] + begin;
        for (int64_t j = 0; j < n; ++j) buf[i][j] = static_cast<float>(src[j]);
        p[i] = buf[i];
      }
    }
  }
  const float* operator[](int i) const { return p[i]; }
};

// An output row's block, computed in float into a stack buffer (which the compiler knows aliases nothing,
// so loops writing it vectorize), then stored by flush().
template <class T>
struct OutBlock {
  Buf p;
  T* dst;
  int64_t n;

  OutBlock(T* row, int64_t begin, int64_t n_) : dst(row + begin), n(n_) {}
  void flush() const {
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(dst, p, n * sizeof(float));
    } else {
      for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(p[j]);
    }
  }
};

// ---------------------------------------------------------------- loops

// row(r, split) for every row; `split` asks the row's passes to spread their chunks over the threads.
// Whole rows go to threads only with at least 4 per thread, which keeps the split of rows balanced.
template <class RowFn>
void for_each_row(int64_t n, const RowFn& row) {
  if (n >= 4 * at::get_num_threads()) {
    at::parallel_for(0, n, 1, [&](int64_t rb, int64_t re) {
      for (int64_t r = rb; r < re; ++r) row(r, false);
    });
  } else {
    for (int64_t r = 0; r < n; ++r) row(r, true);
  }
}

inline int64_t num_chunks(int64_t d) { return (d + kChunk - 1) / kChunk; }

// fn(cb, ce) over ranges of chunks covering a row of d elements: one range per thread when `split`.
template <class RangeFn>
void for_chunk_ranges(int64_t d, bool split, const RangeFn& fn) {
  const int64_t nc = num_chunks(d);
  if (split && nc > 1) {
    at::parallel_for(0, nc, 1, fn);
  } else {
    fn(0, nc);
  }
}

// fn(c) for every chunk c of a row of d elements.
template <class ChunkFn>
void for_each_chunk(int64_t d, bool split, const ChunkFn& fn) {
  for_chunk_ranges(d, split, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) fn(c);
  });
}

// fn(begin, n) for the blocks of chunk c.
template <class BlockFn>
void chunk_blocks(int64_t d, int64_t c, const BlockFn& fn) {
  const int64_t end = std::min(d, (c + 1) * kChunk);
  for (int64_t b = c * kChunk; b < end; b += kBlock) fn(b, std::min(kBlock, end - b));
}

// fn(begin, n) over the blocks of a row of d elements.
template <class BlockFn>
void for_each_block(int64_t d, bool split, const BlockFn& fn) {
  for_each_chunk(d, split, [&](int64_t c) { chunk_blocks(d, c, fn); });
}

// W sums over a row: fn(begin, n, acc) adds a block's sums into acc. Chunk partials are added in chunk
// order whether or not the row is split, so a row's result depends neither on the thread count nor on
// the other rows.
template <int W, class BlockFn>
std::array<double, W> sum_row(int64_t d, bool split, const BlockFn& fn) {
  using Sums = std::array<double, W>;
  auto chunk_sum = [&](int64_t c) {
    Sums acc{};
    chunk_blocks(d, c, [&](int64_t b, int64_t n) { fn(b, n, acc.data()); });
    return acc;
  };
  Sums total{};
  auto add = [&](const Sums& part) {
    for (int i = 0; i < W; ++i) total[i] += part[i];
  };
  if (split && num_chunks(d) > 1) {
    std::vector<Sums> parts(num_chunks(d));
    for_each_chunk(d, true, [&](int64_t c) { parts[c] = chunk_sum(c); });
    for (const Sums& part : parts) add(part);
  } else {
    for (int64_t c = 0; c < num_chunks(d); ++c) add(chunk_sum(c));
  }
  return total;
}

// ---------------------------------------------------------------- elementwise helpers

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// c ? a : b as a bit select: GCC keeps a float ?: with arithmetic in it as a branch (-ftrapping-math),
// which stops vectorization.
inline float select(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return float_of((bits_of(a) & m) | (bits_of(b) & ~m));
}

// ---------------------------------------------------------------- bad numbers (docs/kernels.md)
// A NaN / Inf input entry or an eps / step that is not finite and > 0 is never used as a number: the outputs
// it feeds are written as NaN. NaN fails every comparison, which is what makes both tests catch it.

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

inline bool finite(float v) { return std::abs(v) < kInf; }
inline bool positive(float v) { return v > 0.f && v < kInf; }
// v where ok, NaN elsewhere.
inline float poison(bool ok, float v) { return select(ok, v, kNaN); }

// ---------------------------------------------------------------- data checks (docs/kernels.md)
// With Call::flag set, every write pass ORs check bits into *flag, per block and only when one is set:
// kFlagBadNumber when the bad-number rule fired for an output the block wrote, kFlagOutsideBox when an entry of
// x lies outside [0, 1] (or is NaN). The kernels' arithmetic does not change.

constexpr int32_t kFlagBadNumber = 1;
constexpr int32_t kFlagOutsideBox = 2;

// A block's check bits: `bad` (the rule fired for the row) or a NaN / Inf entry of one of `rows` (the rule
// of an elementwise op); an entry of x outside [0, 1].
inline int32_t check_bits(bool bad, std::initializer_list<const float*> rows, const float* x, int64_t n) {
  int32_t nonfinite = 0, outside = 0;
  for (const float* p : rows) {
#pragma omp simd reduction(| : nonfinite)
    for (int64_t j = 0; j < n; ++j) nonfinite |= static_cast<int32_t>(!finite(p[j]));
  }
#pragma omp simd reduction(| : outside)
  for (int64_t j = 0; j < n; ++j) outside |= static_cast<int32_t>(!((x[j] >= 0.f) & (x[j] <= 1.f)));
  return (bad || nonfinite ? kFlagBadNumber : 0) | (outside ? kFlagOutsideBox : 0);
}

// ORs a block's check bits into *flag (threads race on it: one relaxed atomic, only when a bit is set).
inline void report(int32_t* flag, int32_t bits) {
  if (bits) __atomic_fetch_or(flag, bits, __ATOMIC_RELAXED);
}

inline float sign(float v) { return static_cast<float>(v > 0.f) - static_cast<float>(v < 0.f); }
inline float clamp01(float v) { return std::min(std::max(v, 0.f), 1.f); }
inline float sq(float v) { return v * v; }

// APGD's momentum point x_adv + a (z - x_adv) + (1 - a)(x_adv - x_prev), in the reference's order.
inline float heavy_ball(float xa, float z, float xp, float a, float a1) {
  return xa + (z - xa) * a + (xa - xp) * a1;
}

// ---------------------------------------------------------------- bit-pattern search

using Cands = std::array<float, kCands>;

// For the first k candidates c, the row sum of term(buf, j, c) in one pass: prep(begin, n, buf) fills the
// block's float buffers once, then each group of 4 candidates is one vectorized loop over the block (the
// group shares its loads; entries past k are evaluated and ignored).
template <class Prep, class Term>
std::array<double, kCands> sum_per_candidate(int64_t d, bool split, const Cands& cand, int k, const Prep& prep,
                                             const Term& term) {
  return sum_row<kCands>(d, split, [&](int64_t b, int64_t n, double* acc) {
    Buf buf[kPrepBufs];
    prep(b, n, buf);
    for (int i = 0; i < k; i += 4) {
      const float c0 = cand[i], c1 = cand[i + 1], c2 = cand[i + 2], c3 = cand[i + 3];
      float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t j = 0; j < n; ++j) {
        s0 += term(buf, j, c0);
        s1 += term(buf, j, c1);
        s2 += term(buf, j, c2);
        s3 += term(buf, j, c3);
      }
      acc[i] += s0;
      acc[i + 1] += s1;
      acc[i + 2] += s2;
      acc[i + 3] += s3;
    }
  });
}

// One end of a search bracket: a float32 bit pattern and the row sum there (or an estimate of it).
struct End {
  uint32_t bits;
  double sum;
};

// Where to look between lo and hi: the pattern where the sum, linear between the ends, meets target;
// 0 (no guess) when hi is +inf or the sums are equal.
inline uint32_t interpolate(const End& lo, const End& hi, double target) {
  if (hi.bits >= kInfBits || hi.sum == lo.sum) return 0;
  const double frac = std::clamp((target - lo.sum) / (hi.sum - lo.sum), 0.0, 1.0);
  const double lo_v = float_of(lo.bits), hi_v = float_of(hi.bits);
  const uint32_t guess = bits_of(static_cast<float>(lo_v + frac * (hi_v - lo_v)));
  return std::clamp(guess, lo.bits + 1, hi.bits - 1);
}

// Up to kCands increasing patterns strictly inside (lo, hi). Without a guess they spread evenly (the
// bracket shrinks (kCands + 1)-fold); with one, 7 spread evenly (at least 8-fold) and up to 9 sit around
// the guess at distances 0, 1, 16, 256 and 4096, so that a good guess closes the bracket in one pass.
inline int place_candidates(uint32_t lo, uint32_t hi, uint32_t guess, uint32_t* pat) {
  const uint64_t gap = hi - lo;
  const int spread = guess ? 7 : kCands;
  int k = 0;
  for (int i = 1; i <= spread; ++i) pat[k++] = lo + static_cast<uint32_t>(gap * i / (spread + 1));
  if (guess) {
    pat[k++] = guess;
    for (const uint32_t off : {1u, 16u, 256u, 4096u}) {
      if (guess - lo > off) pat[k++] = guess - off;
      if (hi - guess > off) pat[k++] = guess + off;
    }
  }
  std::sort(pat, pat + k);
  k = static_cast<int>(std::unique(pat, pat + k) - pat);
  // Spread points fall on lo when the gap is smaller than the spread.
  const int first = pat[0] == lo ? 1 : 0;
  std::copy(pat + first, pat + k, pat);
  return k - first;
}

// The first float32 bit pattern in (lo, hi] at which holds(sum of term) is true, for a predicate monotone in
// the pattern (non-negative floats order like their bits), false at lo and true at hi (neither evaluated).
// Each pass evaluates up to kCands candidates, placed around the point where the sums, interpolated
// between the bracket's ends, meet target; the placement decides only how many passes it takes.
template <class Prep, class Term, class Holds>
uint32_t search_bits(int64_t d, bool split, End lo, End hi, double target, const Prep& prep, const Term& term,
                     const Holds& holds) {
  uint32_t pat[kCands];
  Cands cand{};
  while (hi.bits - lo.bits > 1) {
    const int k = place_candidates(lo.bits, hi.bits, interpolate(lo, hi, target), pat);
    for (int i = 0; i < k; ++i) cand[i] = float_of(pat[i]);
    const auto s = sum_per_candidate(d, split, cand, k, prep, term);
    int i = 0;
    while (i < k && !holds(s[i])) ++i;
    if (i > 0) lo = {pat[i - 1], s[i - 1]};
    if (i < k) hi = {pat[i], s[i]};
  }
  return hi.bits;
}

}  // namespace rft::cpu
