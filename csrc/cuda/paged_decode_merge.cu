// Split-KV merge: each (sequence, query head) combines its splits' fp32 partial outputs, weighting
// split s by 2^(lse_s - max lse). Empty splits carry lse = -inf and weigh nothing.
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>

#include "paged_decode.h"
#include "vec_types.cuh"

namespace bastion::cuda {
namespace {

// Grid (num_heads, num_seqs), one thread per head_dim element.
template <typename T>
__global__ void decode_merge_kernel(T* out, const float* partial, const float* partial_lse, int num_splits) {
  const int head_dim = blockDim.x;
  const int64_t head_row = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
  const float* lse = partial_lse + head_row * num_splits;

  float max_lse = -CUDART_INF_F;
  for (int s = 0; s < num_splits; ++s) max_lse = fmaxf(max_lse, lse[s]);
  const float base = max_lse == -CUDART_INF_F ? 0.f : max_lse;

  float weighted = 0.f;
  float total = 0.f;
  const float* column = partial + head_row * num_splits * head_dim + threadIdx.x;
  for (int s = 0; s < num_splits; ++s) {
    const float w = exp2f(lse[s] - base);
    total += w;
    weighted = fmaf(w, column[static_cast<int64_t>(s) * head_dim], weighted);
  }
  out[head_row * head_dim + threadIdx.x] = Half2Of<T>::from_float(total > 0.f ? weighted / total : 0.f);
}

}  // namespace

template <typename T>
cudaError_t launch_decode_merge(const BastionPagedAttentionArgs& args, const BastionDecodePlan& plan,
                                cudaStream_t stream) {
  const auto* partial = static_cast<const float*>(args.workspace);
  const float* partial_lse =
      partial + static_cast<int64_t>(args.num_seqs) * args.num_heads * plan.num_splits * args.head_dim;
  const dim3 grid(static_cast<unsigned>(args.num_heads), static_cast<unsigned>(args.num_seqs));
  decode_merge_kernel<T><<<grid, args.head_dim, 0, stream>>>(static_cast<T*>(args.out), partial, partial_lse,
                                                             plan.num_splits);
  return cudaGetLastError();
}

template cudaError_t launch_decode_merge<__half>(const BastionPagedAttentionArgs&, const BastionDecodePlan&,
                                                 cudaStream_t);
template cudaError_t launch_decode_merge<__nv_bfloat16>(const BastionPagedAttentionArgs&, const BastionDecodePlan&,
                                                        cudaStream_t);

}  // namespace bastion::cuda
