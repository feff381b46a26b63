#include "core/block_hash_map.h"

namespace bastion::core {

BlockHashMap::BlockHashMap(int32_t max_entries) {
  uint64_t capacity = 8;
  while (capacity < 2 * static_cast<uint64_t>(max_entries)) capacity <<= 1;
  keys_.assign(capacity, 0);
  values_.assign(capacity, -1);
  mask_ = capacity - 1;
}

int32_t BlockHashMap::find(BlockHash hash) const {
  for (uint64_t slot = home_slot(hash);; slot = (slot + 1) & mask_) {
    if (values_[slot] < 0) return -1;
    if (keys_[slot] == hash) return values_[slot];
  }
}

bool BlockHashMap::insert(BlockHash hash, int32_t block_id) {
  uint64_t slot = home_slot(hash);
  for (; values_[slot] >= 0; slot = (slot + 1) & mask_) {
    if (keys_[slot] == hash) return false;
  }
  keys_[slot] = hash;
  values_[slot] = block_id;
  ++size_;
  return true;
}

void BlockHashMap::erase(BlockHash hash, int32_t block_id) {
  uint64_t hole = home_slot(hash);
  for (;; hole = (hole + 1) & mask_) {
    if (values_[hole] < 0) return;
    if (keys_[hole] == hash) break;
  }
  if (values_[hole] != block_id) return;
  values_[hole] = -1;
  --size_;
  // Backward shift: pull later entries of the probe run into the hole unless their home slot lies
  // cyclically in (hole, probe], where moving them would put them before their home.
  for (uint64_t probe = (hole + 1) & mask_; values_[probe] >= 0; probe = (probe + 1) & mask_) {
    const uint64_t home = home_slot(keys_[probe]);
    const bool home_in_gap = hole <= probe ? (hole < home && home <= probe) : (hole < home || home <= probe);
    if (home_in_gap) continue;
    keys_[hole] = keys_[probe];
    values_[hole] = values_[probe];
    values_[probe] = -1;
    hole = probe;
  }
}

}  // namespace bastion::core
