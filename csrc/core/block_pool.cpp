#include "core/block_pool.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace bastion::core {

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size, bool enable_caching)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      enable_caching_(enable_caching),
      head_(num_blocks),
      tail_(num_blocks + 1),
      prev_(num_blocks + 2, -1),
      next_(num_blocks + 2, -1),
      ref_cnt_(num_blocks, 0),
      cached_(num_blocks, 0),
      hash_(num_blocks, 0),
      parent_hash_(enable_caching ? num_blocks : 0, 0),
      extra_(enable_caching ? num_blocks : 0),
      tokens_(enable_caching ? static_cast<size_t>(num_blocks) * block_size : 0, 0),
      index_(enable_caching ? num_blocks : 0) {
  next_[head_] = tail_;
  prev_[tail_] = head_;
  // The list starts in block-id order, so a fresh pool hands out 0, 1, 2, ...
  for (int32_t id = 0; id < num_blocks; ++id) append_mru(id);
}

void BlockPool::unlink(int32_t block_id) {
  next_[prev_[block_id]] = next_[block_id];
  prev_[next_[block_id]] = prev_[block_id];
  prev_[block_id] = next_[block_id] = -1;
  --num_free_;
}

void BlockPool::append_mru(int32_t block_id) {
  const int32_t last = prev_[tail_];
  next_[last] = block_id;
  prev_[block_id] = last;
  next_[block_id] = tail_;
  prev_[tail_] = block_id;
  ++num_free_;
}

void BlockPool::evict_if_cached(int32_t block_id) {
  if (!cached_[block_id]) return;
  index_.erase(hash_[block_id], block_id);
  cached_[block_id] = 0;
  hash_[block_id] = 0;
}

bool BlockPool::allocate(int32_t n, int32_t* out) {
  if (n > num_free_) return false;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t id = next_[head_];
    unlink(id);
    evict_if_cached(id);  // lazy eviction: the hash survived the free until this reuse
    ref_cnt_[id] = 1;
    out[i] = id;
  }
  return true;
}

void BlockPool::touch(int32_t block_id) {
  if (ref_cnt_[block_id] == 0) unlink(block_id);
  ++ref_cnt_[block_id];
}

void BlockPool::free_blocks(const int32_t* ids, int32_t n) {
  for (int32_t i = n - 1; i >= 0; --i) {
    const int32_t id = ids[i];
    if (ref_cnt_[id] <= 0) throw std::logic_error("block " + std::to_string(id) + " freed twice");
    if (--ref_cnt_[id] == 0) append_mru(id);
  }
}

int32_t BlockPool::lookup(BlockHash hash, BlockHash parent, const int32_t* tokens,
                          const ExtraKey& extra) const {
  if (!enable_caching_) return -1;
  const int32_t id = index_.find(hash);
  if (id < 0) return -1;
  const int32_t* stored = tokens_.data() + static_cast<size_t>(id) * block_size_;
  const bool same = parent_hash_[id] == parent && extra_[id] == extra &&
                    std::equal(stored, stored + block_size_, tokens);
  return same ? id : -1;
}

void BlockPool::cache_block(int32_t block_id, BlockHash hash, BlockHash parent, const int32_t* tokens,
                            const ExtraKey& extra) {
  if (!enable_caching_ || cached_[block_id]) return;
  if (!index_.insert(hash, block_id)) return;  // an identical block is already indexed
  cached_[block_id] = 1;
  hash_[block_id] = hash;
  parent_hash_[block_id] = parent;
  extra_[block_id] = extra;
  std::copy(tokens, tokens + block_size_, tokens_.begin() + static_cast<size_t>(block_id) * block_size_);
}

std::vector<int32_t> BlockPool::free_list_order() const {
  std::vector<int32_t> order;
  order.reserve(num_free_);
  for (int32_t id = next_[head_]; id != tail_; id = next_[id]) order.push_back(id);
  return order;
}

}  // namespace bastion::core
