#include "core/scheduler_config.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace bastion::core {
namespace {

void require_positive(const char* field, int64_t value) {
  if (value <= 0) {
    throw std::invalid_argument(std::string(field) + " must be > 0, got " + std::to_string(value));
  }
}

}  // namespace

int32_t SchedulerConfig::max_request_len() const {
  const int64_t pool_tokens = static_cast<int64_t>(num_blocks) * block_size;
  return static_cast<int32_t>(std::min<int64_t>(max_model_len, pool_tokens));
}

int32_t SchedulerConfig::max_blocks_per_seq() const { return (max_request_len() + block_size - 1) / block_size; }

void validate(const SchedulerConfig& config) {
  require_positive("num_blocks", config.num_blocks);
  require_positive("block_size", config.block_size);
  require_positive("max_num_seqs", config.max_num_seqs);
  require_positive("max_num_batched_tokens", config.max_num_batched_tokens);
  require_positive("max_model_len", config.max_model_len);
  if (config.long_prefill_token_threshold < 0) {
    throw std::invalid_argument("long_prefill_token_threshold must be >= 0, got " +
                                std::to_string(config.long_prefill_token_threshold));
  }
  if (static_cast<int64_t>(config.num_blocks) * config.block_size > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("num_blocks * block_size must fit in int32 slot indices");
  }
}

Policy parse_policy(const std::string& name) {
  if (name == "fcfs") return Policy::kFcfs;
  if (name == "priority") return Policy::kPriority;
  throw std::invalid_argument("policy must be 'fcfs' or 'priority', got '" + name + "'");
}

}  // namespace bastion::core
