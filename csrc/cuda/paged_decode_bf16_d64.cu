// Explicit instantiation: decode attention for __nv_bfloat16, head_dim 64 (all GQA tile sizes).
#include "paged_decode.cuh"

template cudaError_t bastion::cuda::launch_paged_decode<__nv_bfloat16, 64>(const BastionPagedAttentionArgs&,
                                                                     const BastionDecodePlan&, cudaStream_t);
