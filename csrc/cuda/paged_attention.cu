// C entry points for decode attention: argument checks, the split plan, and the dispatch from
// runtime (dtype, head_dim) to the explicitly instantiated launchers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "bastion_cuda.h"
#include "paged_decode.h"
#include "status.h"

namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// NULL when `a` describes a launch the kernels support, else what is wrong with it.
const char* check_decode_args(const BastionPagedAttentionArgs* a) {
  if (a == nullptr) return "paged_attention: args is NULL";
  if (const char* err = bastion_check_decode_shape(a->num_seqs, a->num_heads, a->num_kv_heads, a->head_dim,
                                                    a->block_size, a->max_blocks_per_seq, a->sliding_window,
                                                    a->num_sms))
    return err;
  if (a->dtype != BASTION_DTYPE_FLOAT16 && a->dtype != BASTION_DTYPE_BFLOAT16)
    return "paged_attention: dtype must be float16 or bfloat16";
  if (a->num_seqs == 0) return nullptr;  // nothing to read: pointers may be anything
  if (!a->out || !a->q || !a->k_cache || !a->v_cache || !a->block_table || !a->seq_lens)
    return "paged_attention: a tensor pointer is NULL";
  if (!aligned16(a->out) || !aligned16(a->q) || !aligned16(a->k_cache) || !aligned16(a->v_cache))
    return "paged_attention: out, q, k_cache and v_cache must be 16-byte aligned";
  if (a->q_stride_token % 8 != 0 || a->q_stride_head % 8 != 0)
    return "paged_attention: q strides must be multiples of 8 elements (16-byte rows)";
  return nullptr;
}

template <int HEAD_DIM>
cudaError_t launch_for_dtype(const BastionPagedAttentionArgs& a, const BastionDecodePlan& plan, cudaStream_t stream) {
  using namespace bastion::cuda;
  return a.dtype == BASTION_DTYPE_BFLOAT16 ? launch_paged_decode<__nv_bfloat16, HEAD_DIM>(a, plan, stream)
                                           : launch_paged_decode<__half, HEAD_DIM>(a, plan, stream);
}

}  // namespace

extern "C" BastionStatus bastion_paged_attention_plan(const BastionPagedAttentionArgs* args,
                                                     BastionDecodePlan* plan) {
  using namespace bastion::cuda;
  if (const char* err = check_decode_args(args)) return argument_status(err);
  if (plan == nullptr) return argument_status("paged_attention: plan is NULL");
  *plan = bastion_plan_paged_decode(args->num_seqs, args->num_heads, args->num_kv_heads, args->head_dim,
                                    bastion_decode_max_context(args->max_blocks_per_seq, args->block_size,
                                                               args->sliding_window),
                                    args->num_sms);
  return ok_status();
}

extern "C" BastionStatus bastion_paged_attention_decode(const BastionPagedAttentionArgs* args, cudaStream_t stream) {
  using namespace bastion::cuda;
  BastionDecodePlan plan;
  const BastionStatus planned = bastion_paged_attention_plan(args, &plan);
  if (planned.code != BASTION_OK || args->num_seqs == 0) return planned;
  if (plan.workspace_bytes > 0 && (args->workspace == nullptr || args->workspace_bytes < plan.workspace_bytes ||
                                   !aligned16(args->workspace)))
    return argument_status("paged_attention: workspace missing, misaligned or smaller than plan.workspace_bytes");
  return cuda_status(args->head_dim == 64 ? launch_for_dtype<64>(*args, plan, stream)
                                          : launch_for_dtype<128>(*args, plan, stream));
}
