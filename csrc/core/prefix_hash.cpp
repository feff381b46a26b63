#include "core/prefix_hash.h"

namespace bastion::core {
namespace {

// Odd 64-bit primes with well-spread bits (the constants of the xxh64 family).
constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Scrambles one 64-bit lane before it is folded into the accumulator.
inline uint64_t scramble(uint64_t lane) { return rotl(lane * kPrime2, 31) * kPrime1; }

inline uint64_t fold(uint64_t acc, uint64_t lane) { return rotl(acc ^ scramble(lane), 27) * kPrime1 + kPrime4; }

// Final avalanche so that every input bit affects every output bit (the hash map indexes by low bits).
inline uint64_t avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

}  // namespace

BlockHash chain_seed(uint64_t seed) { return avalanche(seed * kPrime1 + kPrime5); }

BlockHash hash_block(BlockHash parent, const int32_t* tokens, int32_t n, const ExtraKey& extra) {
  uint64_t acc = fold(parent ^ kPrime5, static_cast<uint64_t>(n));
  int32_t i = 0;
  // Two token ids per 64-bit lane: half the multiplies of a per-token loop.
  for (; i + 1 < n; i += 2) {
    const uint64_t lo = static_cast<uint32_t>(tokens[i]);
    const uint64_t hi = static_cast<uint32_t>(tokens[i + 1]);
    acc = fold(acc, lo | (hi << 32));
  }
  if (i < n) acc = fold(acc, static_cast<uint32_t>(tokens[i]) ^ kPrime3);
  acc = fold(acc, static_cast<uint64_t>(extra.cache_salt));
  return avalanche(acc);
}

}  // namespace bastion::core
