// Explicit instantiation: decode attention for __half, head_dim 64 (all GQA tile sizes).
#include "paged_decode.cuh"

template cudaError_t bastion::cuda::launch_paged_decode<__half, 64>(const BastionPagedAttentionArgs&,
                                                                     const BastionDecodePlan&, cudaStream_t);
