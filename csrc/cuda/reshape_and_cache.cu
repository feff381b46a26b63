// KV write: scatter each token's key/value rows into its cache slot, 16 bytes per thread.
#include <cuda_runtime.h>

#include <cstdint>

#include "bastion_cuda.h"
#include "status.h"

namespace {

constexpr int kCopyThreads = 128;

// One CTA per token. The copy moves raw 16-byte vectors, so it serves every element type whose
// head_dim row is a whole number of vectors.
__global__ void __launch_bounds__(kCopyThreads) reshape_and_cache_kernel(const BastionReshapeAndCacheArgs a) {
  const int64_t token = blockIdx.x;
  const int64_t slot = a.slot_mapping[token];
  if (slot < 0 || slot >= a.num_slots) return;  // -1 marks padding; out-of-range never writes

  const int vecs_per_head = a.head_dim * a.elem_bytes / 16;
  const int vecs = vecs_per_head * a.num_kv_heads;
  const int64_t slot_vecs = static_cast<int64_t>(slot) * vecs;  // cache rows are contiguous
  auto* k_dst = static_cast<uint4*>(a.k_cache) + slot_vecs;
  auto* v_dst = static_cast<uint4*>(a.v_cache) + slot_vecs;
  const auto* key = static_cast<const char*>(a.key);
  const auto* value = static_cast<const char*>(a.value);
  for (int i = threadIdx.x; i < vecs; i += kCopyThreads) {
    const int head = i / vecs_per_head;
    const int64_t within = static_cast<int64_t>(i % vecs_per_head) * 16;
    const int64_t k_src = (token * a.key_stride_token + head * a.key_stride_head) * a.elem_bytes + within;
    const int64_t v_src = (token * a.value_stride_token + head * a.value_stride_head) * a.elem_bytes + within;
    k_dst[i] = *reinterpret_cast<const uint4*>(key + k_src);
    v_dst[i] = *reinterpret_cast<const uint4*>(value + v_src);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

const char* check_args(const BastionReshapeAndCacheArgs* a) {
  if (a == nullptr) return "reshape_and_cache: args is NULL";
  if (a->num_tokens < 0) return "reshape_and_cache: num_tokens must be >= 0";
  if (a->num_kv_heads < 1 || a->head_dim < 1) return "reshape_and_cache: num_kv_heads and head_dim must be >= 1";
  if (a->elem_bytes != 2 && a->elem_bytes != 4) return "reshape_and_cache: elem_bytes must be 2 or 4";
  if ((static_cast<int64_t>(a->head_dim) * a->elem_bytes) % 16 != 0)
    return "reshape_and_cache: head_dim * elem_bytes must be a multiple of 16";
  if (a->num_tokens == 0) return nullptr;
  if (!a->key || !a->value || !a->k_cache || !a->v_cache || !a->slot_mapping)
    return "reshape_and_cache: a tensor pointer is NULL";
  if (!aligned16(a->key) || !aligned16(a->value) || !aligned16(a->k_cache) || !aligned16(a->v_cache))
    return "reshape_and_cache: key, value and caches must be 16-byte aligned";
  const int64_t strides[] = {a->key_stride_token, a->key_stride_head, a->value_stride_token, a->value_stride_head};
  for (const int64_t s : strides)
    if ((s * a->elem_bytes) % 16 != 0) return "reshape_and_cache: key/value strides must be multiples of 16 bytes";
  return nullptr;
}

}  // namespace

extern "C" BastionStatus bastion_reshape_and_cache(const BastionReshapeAndCacheArgs* args, cudaStream_t stream) {
  using namespace bastion::cuda;
  if (const char* err = check_args(args)) return argument_status(err);
  if (args->num_tokens == 0) return ok_status();
  reshape_and_cache_kernel<<<static_cast<unsigned>(args->num_tokens), kCopyThreads, 0, stream>>>(*args);
  return cuda_status(cudaGetLastError());
}
