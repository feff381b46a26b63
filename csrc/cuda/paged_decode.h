// Host-side declarations shared by the decode-attention TUs. Each (dtype, head_dim) launcher is
// defined in paged_decode.cuh and explicitly instantiated in its own small .cu file, so adding a
// configuration recompiles one TU and the dispatcher (paged_attention.cu) never sees kernel code.
#pragma once

#include <cuda_runtime_api.h>

#include "bastion_cuda.h"

namespace bastion::cuda {

// Launches the split kernel (and the merge when plan.num_splits > 1) for one configuration.
template <typename T, int HEAD_DIM>
cudaError_t launch_paged_decode(const BastionPagedAttentionArgs& args, const BastionDecodePlan& plan,
                                cudaStream_t stream);

// Combines the fp32 partial outputs of the splits into `out` (T), weighting each by its LSE.
template <typename T>
cudaError_t launch_decode_merge(const BastionPagedAttentionArgs& args, const BastionDecodePlan& plan,
                                cudaStream_t stream);

}  // namespace bastion::cuda
