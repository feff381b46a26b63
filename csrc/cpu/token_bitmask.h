// Token bitmask for structured outputs: the logits of tokens a grammar forbids become -inf, in place.
#pragma once

#include <cstdint>

namespace bastion::cpu {

// For each r < num_rows, logits row indices[r] (row r when indices is nullptr), stride row_stride
// floats, gets -inf in every column v < vocab whose bit (bitmask[r * num_words + v / 32] >> (v % 32)) & 1
// is 0; columns at or past 32 * num_words are forbidden too. Words that allow all 32 tokens (-1) are
// skipped, so a mostly-open mask costs little more than reading it.
void apply_token_bitmask(float* logits, int64_t row_stride, const int32_t* bitmask, int64_t num_words,
                         const int64_t* indices, int64_t num_rows, int64_t vocab, int num_threads);

}  // namespace bastion::cpu
