#include "core/step_output.h"

#include <algorithm>

namespace bastion::core {

StepOutput::StepOutput(const SchedulerConfig& config)
    : max_blocks_per_seq(config.max_blocks_per_seq()),
      req_ids(config.max_num_seqs),
      num_scheduled_tokens(config.max_num_seqs),
      input_ids(config.max_num_batched_tokens),
      positions(config.max_num_batched_tokens),
      slot_mapping(config.max_num_batched_tokens),
      cu_seqlens_q(config.max_num_seqs + 1),
      seq_lens(config.max_num_seqs),
      block_table(static_cast<size_t>(config.max_num_seqs) * max_blocks_per_seq, 0),
      do_sample(config.max_num_seqs),
      logits_indices(config.max_num_seqs),
      preempted_ids(config.max_num_seqs),
      row_len_(config.max_num_seqs, 0) {}

void StepOutput::write_block_row(int32_t row, const std::vector<int32_t>& block_ids) {
  int32_t* dst = block_table.data() + static_cast<size_t>(row) * max_blocks_per_seq;
  const auto len = static_cast<int32_t>(block_ids.size());
  std::copy(block_ids.begin(), block_ids.end(), dst);
  if (row_len_[row] > len) std::fill(dst + len, dst + row_len_[row], 0);
  row_len_[row] = len;
}

}  // namespace bastion::core
