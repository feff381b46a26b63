// Paged KV block pool: ref counts, an intrusive LRU free list, and the prefix-cache index.
//
// Block states and the calls that move between them:
//   free          --allocate-->       active   (ref 1; a stale hash is evicted lazily right here)
//   active        --touch-->          active   (ref += 1, a prefix hit shares the block)
//   active        --free_blocks-->    free     (ref reaches 0: appended at the MRU end; a cached
//                                               block keeps its hash and can still be hit)
//   free (cached) --touch-->          active   (removed from the middle of the free list)
// The free list is doubly linked through index arrays with head/tail sentinels, so pop-front,
// append and remove-from-middle are O(1) and nothing is allocated after construction.
#pragma once

#include <cstdint>
#include <vector>

#include "core/block_hash_map.h"
#include "core/prefix_hash.h"

namespace bastion::core {

class BlockPool {
 public:
  BlockPool(int32_t num_blocks, int32_t block_size, bool enable_caching);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  // Blocks that can be allocated now, evictable cached blocks included.
  int32_t num_free() const { return num_free_; }

  // Pops `n` blocks from the LRU end into `out` with ref 1; false (nothing changed) if too few.
  bool allocate(int32_t n, int32_t* out);
  // Adds a reference to a block found by a prefix hit, taking it off the free list if needed.
  void touch(int32_t block_id);
  // Drops one reference per block, walking `ids` backwards so a chain's tail is evicted first.
  void free_blocks(const int32_t* ids, int32_t n);

  // Cached block holding exactly (parent, tokens, extra) under `hash`, or -1. The stored token ids,
  // parent and extra key are compared on every hit, so a 64-bit collision can never alias KV.
  int32_t lookup(BlockHash hash, BlockHash parent, const int32_t* tokens, const ExtraKey& extra) const;
  // Registers a full, active block in the prefix index (no-op if the hash already has a block).
  void cache_block(int32_t block_id, BlockHash hash, BlockHash parent, const int32_t* tokens,
                   const ExtraKey& extra);

  // Debug views (tests and invariant checks).
  int32_t ref_count(int32_t block_id) const { return ref_cnt_[block_id]; }
  bool is_cached(int32_t block_id) const { return cached_[block_id] != 0; }
  BlockHash block_hash(int32_t block_id) const { return hash_[block_id]; }
  // Free-list contents from the LRU end (next to be reused) to the MRU end.
  std::vector<int32_t> free_list_order() const;

 private:
  void unlink(int32_t block_id);
  void append_mru(int32_t block_id);
  void evict_if_cached(int32_t block_id);

  int32_t num_blocks_;
  int32_t block_size_;
  bool enable_caching_;
  int32_t num_free_ = 0;
  int32_t head_;  // sentinel index num_blocks_: head_'s next is the LRU block
  int32_t tail_;  // sentinel index num_blocks_ + 1: tail_'s prev is the MRU block
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  std::vector<int32_t> ref_cnt_;
  std::vector<uint8_t> cached_;
  std::vector<BlockHash> hash_;
  std::vector<BlockHash> parent_hash_;
  std::vector<ExtraKey> extra_;
  std::vector<int32_t> tokens_;  // num_blocks x block_size, the ids a cached block was hashed from
  BlockHashMap index_;
};

}  // namespace bastion::core
