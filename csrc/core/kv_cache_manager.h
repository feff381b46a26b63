// Per-request block tables on top of the BlockPool: prefix lookup, slot allocation, freeing.
//
// Layout of a request's block table after allocate_slots (B = block_size):
//
//   | prefix-hit blocks | blocks already held | new blocks                        |
//   |<- num_hit*B ----->|<- computed tokens -->|<- n new tokens + lookahead ---->|
//
// Only FULL blocks are hashed and indexed, and only once the step that computes them has been
// committed (index_full_blocks), so a request preempted inside a step never leaves a block in the
// index whose KV was never written.
#pragma once

#include <cstdint>
#include <vector>

#include "core/block_pool.h"
#include "core/request.h"

namespace bastion::core {

class KVCacheManager {
 public:
  KVCacheManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching, uint64_t hash_seed,
                 int32_t max_blocks_per_seq);

  // Longest verified cached prefix of `req`'s tokens, in full blocks, never the whole sequence (at
  // least one token is left to compute so the request can sample). The hit block ids are kept for
  // the allocate_slots call that follows; returns the number of hit blocks.
  int32_t find_cached_prefix(Request& req);

  // Makes room for `num_new_tokens` (+ `lookahead`) more tokens after the request's computed ones,
  // first taking the `num_hit_blocks` blocks of the preceding find_cached_prefix. False, with nothing
  // changed, when the pool cannot supply the blocks.
  bool allocate_slots(Request& req, int32_t num_new_tokens, int32_t num_hit_blocks, int32_t lookahead);

  // Hashes and indexes every full block covered by the request's computed tokens.
  void index_full_blocks(Request& req);

  // Releases every block of the request in reverse order (tail of the chain evicted first).
  void free(Request& req);

  int32_t blocks_needed(int32_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }
  int32_t block_size() const { return block_size_; }
  bool prefix_caching() const { return enable_prefix_caching_; }
  const BlockPool& pool() const { return pool_; }

 private:
  // Extends req.block_hashes to cover its first `num_full_blocks` blocks.
  void extend_hash_chain(Request& req, int32_t num_full_blocks);
  BlockHash parent_of(const Request& req, int32_t block_index) const {
    return block_index == 0 ? seed_hash_ : req.block_hashes[block_index - 1];
  }

  BlockPool pool_;
  int32_t block_size_;
  bool enable_prefix_caching_;
  BlockHash seed_hash_;
  std::vector<int32_t> hit_blocks_;  // scratch filled by find_cached_prefix, max_blocks_per_seq long
  std::vector<int32_t> new_blocks_;  // scratch for freshly allocated ids, max_blocks_per_seq long
};

}  // namespace bastion::core
