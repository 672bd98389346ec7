//===- Crc32.cpp - the zip CRC-32 by carry-less multiplication ------------===//
//
// Folding (Gopal et al., "Fast CRC Computation for Generic Polynomials Using
// PCLMULQDQ Instruction", Intel, 2009): four 128-bit accumulators each absorb the
// next 16 bytes after being multiplied by x^(512+32) and x^(512-32+32) mod P (the
// pair k1, k2 below, for the reflected polynomial), which moves them 64 bytes along
// the message; then they are folded into one with the 128-bit constants k3, k4, the
// 128 bits reduced to 64 with k5, and a Barrett reduction (P' and mu) gives 32 bits.
// Lengths below 64 and the tail below 16 bytes go to LLVM's table CRC.
//
// CPUs with VPCLMULQDQ and AVX-512 run the same folding four lanes to a 512-bit
// register and four registers at once: each lane moves 256 bytes a step, so its
// constants are x^(2048+32) and x^(2048-32) mod P; the four registers are then
// folded into one (64 bytes apart, the 128-bit code's k1, k2) and its lanes handed
// to the 128-bit code's final steps. The constants are x^e mod P bit-reflected and
// shifted left by one, as Gopal et al. derive them.
//
//===----------------------------------------------------------------------===//
#include "loom/Checkpoint/Crc32.h"

#include "llvm/Support/CRC.h"

#include <algorithm>
#include <thread>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LOOM_CRC_CLMUL 1
#endif

using namespace loom::ckpt;

#ifdef LOOM_CRC_CLMUL
namespace {
// Bit-reflected constants for P(x) = 0x104C11DB7: x^(4*128+32), x^(4*128-32) mod P;
// x^(128+32), x^(128-32) mod P; x^64 mod P; P' and mu = floor(x^64 / P).
alignas(16) const uint64_t kFold4[2] = {0x0154442bd4, 0x01c6e41596};
alignas(16) const uint64_t kFold1[2] = {0x01751997d0, 0x00ccaa009e};
alignas(16) const uint64_t kTo64[2] = {0x0163cd6124, 0};
alignas(16) const uint64_t kBarrett[2] = {0x01db710641, 0x01f7011641};

/// x * k: the low half times k's low half, xored with the high half times k's high.
__attribute__((target("pclmul,sse4.1"))) inline __m128i fold(__m128i x, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

alignas(16) const uint64_t kFold16[2] = {0x011542778a, 0x01322d1430};

/// foldBlocks's four 128-bit accumulators, 64 bytes of message apart.
struct Lanes {
  __m128i x1, x2, x3, x4;
};

__attribute__((target("avx512f,vpclmulqdq"))) inline __m512i fold512(__m512i x, __m512i k) {
  return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00),
                          _mm512_clmulepi64_epi128(x, k, 0x11));
}

/// Lanes after at least 256 bytes, 256 a step then 64; `p` and `size` advance.
__attribute__((target("avx512f,vpclmulqdq,sse4.1"))) Lanes foldWide(uint32_t state,
                                                                   const uint8_t *&p,
                                                                   size_t &size) {
  // (Macros, not lambdas: GCC does not give a lambda its function's target.)
#define load(at) _mm512_loadu_si512(at)
#define constant(pair)                                                                             \
  _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i *>(pair)))
  __m512i z0 = _mm512_xor_si512(load(p), _mm512_zextsi128_si512(_mm_cvtsi32_si128(int(state))));
  __m512i z1 = load(p + 64), z2 = load(p + 128), z3 = load(p + 192);
  p += 256;
  size -= 256;
  __m512i k = constant(kFold16);
  for (; size >= 256; p += 256, size -= 256) {
    z0 = _mm512_xor_si512(fold512(z0, k), load(p));
    z1 = _mm512_xor_si512(fold512(z1, k), load(p + 64));
    z2 = _mm512_xor_si512(fold512(z2, k), load(p + 128));
    z3 = _mm512_xor_si512(fold512(z3, k), load(p + 192));
  }
  k = constant(kFold4);
  z0 = _mm512_xor_si512(fold512(z0, k), z1);
  z0 = _mm512_xor_si512(fold512(z0, k), z2);
  z0 = _mm512_xor_si512(fold512(z0, k), z3);
  for (; size >= 64; p += 64, size -= 64)
    z0 = _mm512_xor_si512(fold512(z0, k), load(p));
#undef load
#undef constant
  return {_mm512_extracti32x4_epi32(z0, 0), _mm512_extracti32x4_epi32(z0, 1),
          _mm512_extracti32x4_epi32(z0, 2), _mm512_extracti32x4_epi32(z0, 3)};
}

bool hasWideClmul() {
  static const bool supported = __builtin_cpu_supports("avx512f") &&
                                __builtin_cpu_supports("vpclmulqdq") &&
                                __builtin_cpu_supports("sse4.1");
  return supported;
}

/// The CRC state (inverted, as the folding wants it) after `size` bytes, size a
/// multiple of 16 and at least 64.
__attribute__((target("pclmul,sse4.1"))) uint32_t foldBlocks(uint32_t state, const uint8_t *p,
                                                             size_t size) {
  auto load = [](const uint8_t *at) { return _mm_loadu_si128(reinterpret_cast<const __m128i *>(at)); };
  __m128i k = _mm_load_si128(reinterpret_cast<const __m128i *>(kFold4));
  __m128i x1, x2, x3, x4;
  if (size >= 256 && hasWideClmul()) {
    Lanes lanes = foldWide(state, p, size);
    x1 = lanes.x1, x2 = lanes.x2, x3 = lanes.x3, x4 = lanes.x4;
  } else {
    x1 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(int(state)));
    x2 = load(p + 16), x3 = load(p + 32), x4 = load(p + 48);
    p += 64;
    size -= 64;
  }
  for (; size >= 64; p += 64, size -= 64) {
    x1 = _mm_xor_si128(fold(x1, k), load(p));
    x2 = _mm_xor_si128(fold(x2, k), load(p + 16));
    x3 = _mm_xor_si128(fold(x3, k), load(p + 32));
    x4 = _mm_xor_si128(fold(x4, k), load(p + 48));
  }
  k = _mm_load_si128(reinterpret_cast<const __m128i *>(kFold1));
  x1 = _mm_xor_si128(fold(x1, k), x2);
  x1 = _mm_xor_si128(fold(x1, k), x3);
  x1 = _mm_xor_si128(fold(x1, k), x4);
  for (; size >= 16; p += 16, size -= 16)
    x1 = _mm_xor_si128(fold(x1, k), load(p));

  // 128 -> 64 bits: the low half times k4, added to the high half.
  const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
  x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(x1, k, 0x10));
  // 64 -> 32 bits ahead of the reduction: the low 32 bits times x^64 mod P.
  __m128i k5 = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(kTo64));
  x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5, 0x00),
                     _mm_srli_si128(x1, 4));
  // Barrett: q = (low 32 bits * mu) mod x^32, remainder = x + q * P'.
  __m128i poly = _mm_load_si128(reinterpret_cast<const __m128i *>(kBarrett));
  __m128i q = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10), low32);
  x1 = _mm_xor_si128(x1, _mm_clmulepi64_si128(q, poly, 0x00));
  return uint32_t(_mm_extract_epi32(x1, 1));
}

bool hasClmul() {
  static const bool supported = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return supported;
}
} // namespace
#endif

bool loom::ckpt::zipCrc32IsAccelerated() {
#ifdef LOOM_CRC_CLMUL
  return hasClmul();
#else
  return false;
#endif
}

uint32_t loom::ckpt::zipCrc32(uint32_t crc, llvm::ArrayRef<uint8_t> data) {
#ifdef LOOM_CRC_CLMUL
  if (data.size() >= 64 && hasClmul()) {
    size_t blocks = data.size() & ~size_t(15);
    crc = ~foldBlocks(~crc, data.data(), blocks);
    data = data.drop_front(blocks);
  }
#endif
  return data.empty() ? crc : llvm::crc32(crc, data);
}

namespace {
constexpr uint32_t kReflectedPoly = 0xedb88320;

/// a * b modulo P, both reflected (bit 31 is x^0).
uint32_t multiplyModP(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = 1u << 31; bit; bit >>= 1) {
    if (a & bit)
      product ^= b;
    b = (b & 1) ? (b >> 1) ^ kReflectedPoly : b >> 1;
  }
  return product;
}

/// x^(8 n) modulo P, reflected, by squaring.
uint32_t xPowerBytes(uint64_t n) {
  uint32_t result = 1u << 31;   // x^0
  uint32_t square = 1u << 23;   // x^8
  for (; n; n >>= 1) {
    if (n & 1)
      result = multiplyModP(square, result);
    square = multiplyModP(square, square);
  }
  return result;
}
} // namespace

uint32_t loom::ckpt::zipCrc32Combine(uint32_t crcA, uint32_t crcB, uint64_t lengthB) {
  return multiplyModP(xPowerBytes(lengthB), crcA) ^ crcB;
}

uint32_t loom::ckpt::zipCrc32Parallel(llvm::ArrayRef<uint8_t> data, unsigned threads,
                                      llvm::function_ref<void(llvm::ArrayRef<uint8_t>)> prepare) {
  threads = std::max(1u, std::min<unsigned>(threads, unsigned(data.size() >> 20)));
  size_t part = threads <= 1 ? data.size() : (data.size() / threads + 63) & ~size_t(63);
  auto partOf = [&](unsigned t) {
    llvm::ArrayRef<uint8_t> rest = data.drop_front(std::min(data.size(), t * part));
    return t + 1 == threads ? rest : rest.take_front(part);
  };
  std::vector<uint32_t> crcs(threads);
  auto check = [&](unsigned t) {
    llvm::ArrayRef<uint8_t> bytes = partOf(t);
    if (prepare)
      prepare(bytes);
    crcs[t] = zipCrc32(0, bytes);
  };
  std::vector<std::thread> workers;
  for (unsigned t = 1; t < threads; ++t)
    workers.emplace_back(check, t);
  check(0);
  for (std::thread &w : workers)
    w.join();
  uint32_t crc = crcs[0];
  for (unsigned t = 1; t < threads; ++t)
    crc = zipCrc32Combine(crc, crcs[t], partOf(t).size());
  return crc;
}
