#include "cpu/attention_validate.h"

#include <stdexcept>
#include <string>

namespace bastion::cpu {

namespace {

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument("paged_attention: " + message); }

}  // namespace

void validate_attention_args(const PagedAttentionArgs& a) {
  if (a.num_kv_heads <= 0 || a.num_heads % a.num_kv_heads != 0) {
    fail("num_heads " + std::to_string(a.num_heads) + " is not a multiple of num_kv_heads " +
         std::to_string(a.num_kv_heads));
  }
  if (a.head_dim <= 0 || a.block_size <= 0) fail("head_dim and block_size must be positive");
  if (a.cu_seqlens_q[0] != 0) fail("cu_seqlens_q[0] must be 0, got " + std::to_string(a.cu_seqlens_q[0]));
  if (a.cu_seqlens_q[a.num_seqs] > a.num_tokens) {
    fail("cu_seqlens_q ends at " + std::to_string(a.cu_seqlens_q[a.num_seqs]) + " but q has only " +
         std::to_string(a.num_tokens) + " tokens");
  }
  for (int s = 0; s < a.num_seqs; ++s) {
    const int64_t num_queries = static_cast<int64_t>(a.cu_seqlens_q[s + 1]) - a.cu_seqlens_q[s];
    const int64_t seq_len = a.seq_lens[s];
    const std::string where = "sequence " + std::to_string(s) + ": ";
    if (num_queries < 0) fail(where + "cu_seqlens_q is decreasing");
    if (seq_len < num_queries) {
      fail(where + "seq_len " + std::to_string(seq_len) + " < its " + std::to_string(num_queries) + " queries");
    }
    const int64_t used_blocks = (seq_len + a.block_size - 1) / a.block_size;
    if (used_blocks > a.max_blocks_per_seq) {
      fail(where + "seq_len " + std::to_string(seq_len) + " needs " + std::to_string(used_blocks) +
           " blocks but block_table has " + std::to_string(a.max_blocks_per_seq) + " columns");
    }
    const int32_t* row = a.block_table + s * a.block_table_stride;
    for (int64_t b = 0; b < used_blocks; ++b) {
      if (row[b] < 0 || row[b] >= a.num_blocks) {
        fail(where + "block_table entry " + std::to_string(row[b]) + " is outside the cache's " +
             std::to_string(a.num_blocks) + " blocks");
      }
    }
  }
}

}  // namespace bastion::cpu
