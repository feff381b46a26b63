// State of one sequence inside the core. Python refers to it only by its int64 id.
#pragma once

#include <cstdint>
#include <vector>

#include "core/prefix_hash.h"

namespace bastion::core {

enum class RequestStatus : uint8_t { kWaiting, kRunning, kFinished };

struct Request {
  int64_t id = 0;
  int64_t priority = 0;      // lower is served first
  uint64_t arrival = 0;      // admission order, the tie-breaker of every policy
  ExtraKey extra;            // cache salt: part of every block hash
  RequestStatus status = RequestStatus::kWaiting;

  std::vector<int32_t> tokens;  // prompt followed by the sampled tokens
  int32_t num_prompt_tokens = 0;
  int32_t num_computed_tokens = 0;  // tokens whose KV is (or, after this step, will be) in the cache

  std::vector<int32_t> block_ids;       // this request's block table, append-only while running
  std::vector<BlockHash> block_hashes;  // hash chain of its full blocks, computed lazily and kept
  int32_t num_indexed_blocks = 0;       // leading blocks already registered in the prefix index

  int32_t num_cached_tokens = 0;  // prefix-cache hit of the last admission
  int32_t num_preemptions = 0;
  uint64_t scheduled_in_step = 0;  // step counter value when last scheduled (0 = never)
  bool finished_by_length = false;  // stopped by the scheduler at the longest allowed sequence

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
};

}  // namespace bastion::core
