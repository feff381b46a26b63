// Scheduler limits, validated once at construction.
#pragma once

#include <cstdint>
#include <string>

#include "core/waiting_queue.h"

namespace bastion::core {

struct SchedulerConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t max_num_seqs = 256;
  int32_t max_num_batched_tokens = 8192;
  int32_t max_model_len = 8192;
  bool enable_prefix_caching = true;
  Policy policy = Policy::kFcfs;
  uint64_t hash_seed = 0;
  int32_t long_prefill_token_threshold = 0;  // 0 = no per-request cap on a prefill chunk

  // Longest sequence a request may reach: the model limit, or the whole pool if that is smaller.
  int32_t max_request_len() const;
  // Width of a block-table row: blocks of the longest possible request.
  int32_t max_blocks_per_seq() const;
};

// Throws std::invalid_argument naming the first bad field.
void validate(const SchedulerConfig& config);

// "fcfs" | "priority" -> Policy; throws std::invalid_argument on anything else.
Policy parse_policy(const std::string& name);

}  // namespace bastion::core
