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

namespace loom {

/// The ceiling mulUpTo keeps products under.
inline constexpr int64_t kProductLimit = int64_t(1) << 62;

/// a * b for a, b >= 0, or 0 when that would pass kProductLimit; 0 stays 0, so
/// a chain of calls reports an overflow anywhere along it.
constexpr int64_t mulUpTo(int64_t a, int64_t b) {
  return b != 0 && a > kProductLimit / b ? 0 : a * b;
}

} // namespace loom

#endif // LOOM_SUPPORT_CHECKED_H
