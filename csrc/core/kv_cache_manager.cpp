#include "core/kv_cache_manager.h"

#include <algorithm>

namespace bastion::core {

KVCacheManager::KVCacheManager(int32_t num_blocks, int32_t block_size, bool enable_prefix_caching,
                               uint64_t hash_seed, int32_t max_blocks_per_seq)
    : pool_(num_blocks, block_size, enable_prefix_caching),
      block_size_(block_size),
      enable_prefix_caching_(enable_prefix_caching),
      seed_hash_(chain_seed(hash_seed)),
      hit_blocks_(max_blocks_per_seq, 0),
      new_blocks_(max_blocks_per_seq, 0) {}

void KVCacheManager::extend_hash_chain(Request& req, int32_t num_full_blocks) {
  for (auto i = static_cast<int32_t>(req.block_hashes.size()); i < num_full_blocks; ++i) {
    const int32_t* block_tokens = req.tokens.data() + static_cast<size_t>(i) * block_size_;
    req.block_hashes.push_back(hash_block(parent_of(req, i), block_tokens, block_size_, req.extra));
  }
}

int32_t KVCacheManager::find_cached_prefix(Request& req) {
  if (!enable_prefix_caching_) return 0;
  // (num_tokens - 1) / B: a hit may cover every full block except one ending at the last token.
  const int32_t max_hit = (req.num_tokens() - 1) / block_size_;
  extend_hash_chain(req, max_hit);
  int32_t num_hit = 0;
  for (; num_hit < max_hit; ++num_hit) {
    const int32_t* block_tokens = req.tokens.data() + static_cast<size_t>(num_hit) * block_size_;
    const int32_t id = pool_.lookup(req.block_hashes[num_hit], parent_of(req, num_hit), block_tokens, req.extra);
    if (id < 0) break;
    hit_blocks_[num_hit] = id;
  }
  return num_hit;
}

bool KVCacheManager::allocate_slots(Request& req, int32_t num_new_tokens, int32_t num_hit_blocks,
                                    int32_t lookahead) {
  const int32_t total_tokens = req.num_computed_tokens + num_hit_blocks * block_size_ + num_new_tokens + lookahead;
  const auto held = static_cast<int32_t>(req.block_ids.size());
  const int32_t num_new_blocks = std::max(0, blocks_needed(total_tokens) - held - num_hit_blocks);
  // A hit block with no other user sits on the free list: taking it costs a free block too.
  int32_t evictable_hits = 0;
  for (int32_t i = 0; i < num_hit_blocks; ++i) evictable_hits += pool_.ref_count(hit_blocks_[i]) == 0;
  if (num_new_blocks + evictable_hits > pool_.num_free()) return false;

  for (int32_t i = 0; i < num_hit_blocks; ++i) {
    pool_.touch(hit_blocks_[i]);
    req.block_ids.push_back(hit_blocks_[i]);
  }
  req.num_indexed_blocks = std::max(req.num_indexed_blocks, num_hit_blocks);
  pool_.allocate(num_new_blocks, new_blocks_.data());
  req.block_ids.insert(req.block_ids.end(), new_blocks_.begin(), new_blocks_.begin() + num_new_blocks);
  return true;
}

void KVCacheManager::index_full_blocks(Request& req) {
  if (!enable_prefix_caching_) return;
  const int32_t num_full = std::min(req.num_computed_tokens, req.num_tokens()) / block_size_;
  if (num_full <= req.num_indexed_blocks) return;
  extend_hash_chain(req, num_full);
  for (int32_t i = req.num_indexed_blocks; i < num_full; ++i) {
    const int32_t* block_tokens = req.tokens.data() + static_cast<size_t>(i) * block_size_;
    pool_.cache_block(req.block_ids[i], req.block_hashes[i], parent_of(req, i), block_tokens, req.extra);
  }
  req.num_indexed_blocks = num_full;
}

void KVCacheManager::free(Request& req) {
  pool_.free_blocks(req.block_ids.data(), static_cast<int32_t>(req.block_ids.size()));
  req.block_ids.clear();
  req.num_indexed_blocks = 0;
}

}  // namespace bastion::core
