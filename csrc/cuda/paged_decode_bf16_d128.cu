// Explicit instantiation: decode attention for __nv_bfloat16, head_dim 128 (all GQA tile sizes).
#include "paged_decode.cuh"

template cudaError_t bastion::cuda::launch_paged_decode<__nv_bfloat16, 128>(const BastionPagedAttentionArgs&,
                                                                     const BastionDecodePlan&, cudaStream_t);
