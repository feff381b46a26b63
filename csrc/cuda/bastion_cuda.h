// C-style entry points of the CUDA kernels: plain structs, raw device pointers and a cudaStream_t.
// Nothing here throws or touches libtorch; every call returns a BastionStatus (a code plus a static,
// human-readable message), so any host (the pybind11 module, a C++ embedder) can drive them.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "decode_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum BastionStatusCode {
  BASTION_OK = 0,
  BASTION_INVALID_ARGUMENT = 1,  // the arguments describe something the kernels do not support
  BASTION_CUDA_ERROR = 2,        // the CUDA runtime refused the launch (message from cudaGetErrorString)
} BastionStatusCode;

typedef struct BastionStatus {
  BastionStatusCode code;
  const char* message;  // NULL when code == BASTION_OK; otherwise static storage
} BastionStatus;

typedef enum BastionDType { BASTION_DTYPE_FLOAT16 = 1, BASTION_DTYPE_BFLOAT16 = 2 } BastionDType;

// Decode attention: one query token per sequence, over K/V caches laid out
// [num_blocks, block_size, num_kv_heads, head_dim] (contiguous). out is [num_seqs, num_heads,
// head_dim] (contiguous); q rows may be strided (e.g. a view into a fused QKV projection).
typedef struct BastionPagedAttentionArgs {
  void* out;
  const void* q;
  const void* k_cache;
  const void* v_cache;
  const int32_t* block_table;  // [num_seqs, max_blocks_per_seq]
  const int32_t* seq_lens;     // [num_seqs]: tokens in the cache, the new one included
  void* workspace;             // >= plan.workspace_bytes (may be NULL when that is 0)
  size_t workspace_bytes;
  int64_t q_stride_token;  // in elements
  int64_t q_stride_head;   // in elements
  int32_t num_seqs;
  int32_t num_heads;
  int32_t num_kv_heads;
  int32_t head_dim;  // 64 or 128
  int32_t block_size;
  int32_t max_blocks_per_seq;
  int32_t sliding_window;  // attend to the last sliding_window tokens; 0 = whole context
  int32_t num_sms;         // multiprocessor count of the device (input to the split plan)
  float scale;             // softmax scale, usually 1/sqrt(head_dim)
  BastionDType dtype;
} BastionPagedAttentionArgs;

// KV write: copies token i's key/value rows into cache slot slot_mapping[i] (block * block_size +
// offset). Negative slots (padding) are skipped, and so are slots >= num_slots, so a bad mapping
// cannot write outside the cache.
typedef struct BastionReshapeAndCacheArgs {
  const void* key;    // [num_tokens, num_kv_heads, head_dim]
  const void* value;  // same shape
  void* k_cache;      // [num_blocks, block_size, num_kv_heads, head_dim], contiguous
  void* v_cache;
  const int64_t* slot_mapping;  // [num_tokens]
  int64_t key_stride_token;     // in elements
  int64_t key_stride_head;
  int64_t value_stride_token;
  int64_t value_stride_head;
  int64_t num_slots;  // num_blocks * block_size
  int32_t num_tokens;
  int32_t num_kv_heads;
  int32_t head_dim;
  int32_t elem_bytes;  // 2 for fp16/bf16, 4 for fp32: the copy is type-agnostic
} BastionReshapeAndCacheArgs;

// Plan for `args` (splits, workspace size); the same computation the launcher runs.
BastionStatus bastion_paged_attention_plan(const BastionPagedAttentionArgs* args, BastionDecodePlan* plan);
// Asynchronous on `stream`; args->workspace must hold plan.workspace_bytes until the kernels finish.
BastionStatus bastion_paged_attention_decode(const BastionPagedAttentionArgs* args, cudaStream_t stream);
BastionStatus bastion_reshape_and_cache(const BastionReshapeAndCacheArgs* args, cudaStream_t stream);

// Number of usable CUDA devices; 0 when there is no driver or no GPU (never fails).
int bastion_cuda_device_count(void);

#ifdef __cplusplus
}
#endif
