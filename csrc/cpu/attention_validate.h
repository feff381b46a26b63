// Metadata checks for paged attention, run before any thread starts (exceptions must not cross an
// OpenMP region). They read only the small index arrays: O(num_seqs + used block-table entries).
#pragma once

#include "cpu/paged_attention.h"

namespace bastion::cpu {

// Throws std::invalid_argument naming the first inconsistency found.
void validate_attention_args(const PagedAttentionArgs& args);

}  // namespace bastion::cpu
