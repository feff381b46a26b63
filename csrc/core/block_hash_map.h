// Fixed-capacity open-addressing map from block hash to block id.
//
// At most one block per hash is cached and at most num_blocks blocks exist, so the table is sized
// once (a power of two >= 2x the entries) and never allocates afterwards: no heap traffic per step.
// Linear probing with backward-shift deletion keeps probes short without tombstones.
#pragma once

#include <cstdint>
#include <vector>

#include "core/prefix_hash.h"

namespace bastion::core {

class BlockHashMap {
 public:
  explicit BlockHashMap(int32_t max_entries);

  // Block id stored under `hash`, or -1 when absent.
  int32_t find(BlockHash hash) const;
  // Stores hash -> block_id; returns false (and changes nothing) when the hash is already present.
  bool insert(BlockHash hash, int32_t block_id);
  // Removes `hash` when it maps to `block_id` (another block may own the hash; then nothing changes).
  void erase(BlockHash hash, int32_t block_id);
  int32_t size() const { return size_; }

 private:
  uint64_t home_slot(BlockHash hash) const { return hash & mask_; }

  std::vector<BlockHash> keys_;
  std::vector<int32_t> values_;  // -1 marks an empty slot
  uint64_t mask_ = 0;
  int32_t size_ = 0;
};

}  // namespace bastion::core
