// Flat per-step output buffers, preallocated from the scheduler limits and reused every step.
// Python sees them as zero-copy numpy views; a view is valid until the next schedule().
#pragma once

#include <cstdint>
#include <vector>

#include "core/scheduler_config.h"

namespace bastion::core {

struct StepOutput {
  explicit StepOutput(const SchedulerConfig& config);

  int32_t num_reqs = 0;      // R
  int32_t num_tokens = 0;    // T
  int32_t num_sampling = 0;  // S
  int32_t num_preempted = 0;
  int32_t max_blocks_per_seq;  // width of a block_table row

  std::vector<int64_t> req_ids;               // [max_num_seqs]
  std::vector<int32_t> num_scheduled_tokens;  // [max_num_seqs]
  std::vector<int32_t> input_ids;             // [max_num_batched_tokens]
  std::vector<int64_t> positions;             // [max_num_batched_tokens]
  std::vector<int64_t> slot_mapping;          // [max_num_batched_tokens]
  std::vector<int32_t> cu_seqlens_q;          // [max_num_seqs + 1]
  std::vector<int32_t> seq_lens;              // [max_num_seqs]
  std::vector<int32_t> block_table;           // [max_num_seqs * max_blocks_per_seq], zero padded
  std::vector<uint8_t> do_sample;             // [max_num_seqs]
  std::vector<int64_t> logits_indices;        // [max_num_seqs]
  std::vector<int64_t> preempted_ids;         // [max_num_seqs]: each preemption removes a running one
  std::vector<int64_t> finished_ids;          // grows with finishes between two steps (amortised)

  // Writes one block-table row, zeroing only what the row's previous occupant left behind.
  void write_block_row(int32_t row, const std::vector<int32_t>& block_ids);

 private:
  std::vector<int32_t> row_len_;  // ids currently written in each row (the rest is already zero)
};

}  // namespace bastion::core
