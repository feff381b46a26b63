// Prefix-cache block hashing: a 64-bit hash chain over FULL blocks of token ids.
//
//   hash_0 = H(chain_seed(seed), tokens[0:B),  extra)
//   hash_i = H(hash_{i-1},       tokens[iB:(i+1)B), extra)
//
// The extra key carries the cache salt (tenant isolation: two salts never share a block). The seed is deterministic and configurable so hashes are stable across processes
// (vLLM's random default surprises people who ship KV events or a shared cache).
#pragma once

#include <cstdint>

namespace bastion::core {

using BlockHash = uint64_t;

// Everything besides the tokens and the parent that must match for two blocks to share KV.
struct ExtraKey {
  int64_t cache_salt = 0;

  bool operator==(const ExtraKey& other) const { return cache_salt == other.cache_salt; }
};

// The parent hash of the first block of every chain, derived from a user-visible seed.
BlockHash chain_seed(uint64_t seed);

// H(parent, tokens[0:n), extra): an xxhash-style multiply/rotate mix with a final avalanche.
BlockHash hash_block(BlockHash parent, const int32_t* tokens, int32_t n, const ExtraKey& extra);

}  // namespace bastion::core
