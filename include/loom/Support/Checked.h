//===- Checked.h - products of user-given sizes that cannot overflow -*- C++ -*-===//
//
// Degrees come from the command line (up to 2^24 each), spec files and plan
// files; their products are formed with mulUpTo, which gives 0 instead of
// wrapping around. Callers that validated each factor >= 1 read 0 as "larger
// than anything real".
//
//===----------------------------------------------------------------------===//
#ifndef LOOM_SUPPORT_CHECKED_H
#define LOOM_SUPPORT_CHECKED_H

#include <cstdint>
#include <initializer_list>
#include <string>

namespace loom {

/// The ceiling mulUpTo keeps products under.
inline constexpr int64_t kProductLimit = int64_t(1) << 62;

/// a * b for a, b >= 0, or 0 when that would pass kProductLimit; 0 stays 0, so
/// a chain of calls reports an overflow anywhere along it.
constexpr int64_t mulUpTo(int64_t a, int64_t b) {
  return b != 0 && a > kProductLimit / b ? 0 : a * b;
}

/// The product of `factors` through mulUpTo: 0 past kProductLimit.
constexpr int64_t productUpTo(std::initializer_list<int64_t> factors) {
  int64_t product = 1;
  for (int64_t f : factors)
    product = mulUpTo(product, f);
  return product;
}

/// A product for messages: its digits, or "more than 2^62" for mulUpTo's 0.
inline std::string productText(int64_t product) {
  return product > 0 ? std::to_string(product) : "more than " + std::to_string(kProductLimit);
}

} // namespace loom

#endif // LOOM_SUPPORT_CHECKED_H
