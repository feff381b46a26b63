// Bindings of csrc/cuda.
#include "bindings/bindings.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
#include <string>

#include "cuda/decode_plan.h"
#ifdef BASTION_WITH_CUDA
#include "cuda/bastion_cuda.h"
#endif

namespace cuda_bind {

// The decode split plan is host arithmetic, so it is bound (and testable) in every build.
static py::dict decode_plan(int32_t num_seqs, int32_t num_heads, int32_t num_kv_heads, int32_t head_dim,
                            int32_t block_size, int32_t max_blocks_per_seq, int32_t sliding_window, int32_t num_sms) {
  if (const char* err = bastion_check_decode_shape(num_seqs, num_heads, num_kv_heads, head_dim, block_size,
                                                   max_blocks_per_seq, sliding_window, num_sms))
    throw py::value_error(err);
  const BastionDecodePlan plan = bastion_plan_paged_decode(
      num_seqs, num_heads, num_kv_heads, head_dim,
      bastion_decode_max_context(max_blocks_per_seq, block_size, sliding_window), num_sms);
  py::dict out;
  out["max_group"] = plan.max_group;
  out["head_chunks"] = plan.head_chunks;
  out["num_splits"] = plan.num_splits;
  out["split_tokens"] = plan.split_tokens;
  out["workspace_bytes"] = plan.workspace_bytes;
  return out;
}

#ifdef BASTION_WITH_CUDA
// Bad arguments become ValueError, launch failures RuntimeError.
static void raise_on_error(const BastionStatus& status) {
  if (status.code == BASTION_INVALID_ARGUMENT) throw py::value_error(status.message);
  if (status.code != BASTION_OK) throw std::runtime_error(std::string("CUDA launch failed: ") + status.message);
}

static BastionDType parse_dtype(const std::string& name) {
  if (name == "float16") return BASTION_DTYPE_FLOAT16;
  if (name == "bfloat16") return BASTION_DTYPE_BFLOAT16;
  throw py::value_error("dtype must be 'float16' or 'bfloat16', got '" + name + "'");
}

template <typename P>
static P* as_ptr(uintptr_t address) {
  return reinterpret_cast<P*>(address);
}

static void paged_attention_decode(uintptr_t out, uintptr_t q, uintptr_t k_cache, uintptr_t v_cache,
                                   uintptr_t block_table, uintptr_t seq_lens, uintptr_t workspace,
                                   size_t workspace_bytes, int64_t q_stride_token, int64_t q_stride_head,
                                   int32_t num_seqs, int32_t num_heads, int32_t num_kv_heads, int32_t head_dim,
                                   int32_t block_size, int32_t max_blocks_per_seq, int32_t sliding_window,
                                   int32_t num_sms, float scale, const std::string& dtype, uintptr_t stream) {
  BastionPagedAttentionArgs args{};  // fields assigned by name: the struct order is the C API's business
  args.out = as_ptr<void>(out);
  args.q = as_ptr<const void>(q);
  args.k_cache = as_ptr<const void>(k_cache);
  args.v_cache = as_ptr<const void>(v_cache);
  args.block_table = as_ptr<const int32_t>(block_table);
  args.seq_lens = as_ptr<const int32_t>(seq_lens);
  args.workspace = as_ptr<void>(workspace);
  args.workspace_bytes = workspace_bytes;
  args.q_stride_token = q_stride_token;
  args.q_stride_head = q_stride_head;
  args.num_seqs = num_seqs;
  args.num_heads = num_heads;
  args.num_kv_heads = num_kv_heads;
  args.head_dim = head_dim;
  args.block_size = block_size;
  args.max_blocks_per_seq = max_blocks_per_seq;
  args.sliding_window = sliding_window;
  args.num_sms = num_sms;
  args.scale = scale;
  args.dtype = parse_dtype(dtype);
  raise_on_error(bastion_paged_attention_decode(&args, as_ptr<CUstream_st>(stream)));
}

static void reshape_and_cache(uintptr_t key, uintptr_t value, uintptr_t k_cache, uintptr_t v_cache,
                              uintptr_t slot_mapping, int64_t key_stride_token, int64_t key_stride_head,
                              int64_t value_stride_token, int64_t value_stride_head, int64_t num_slots,
                              int32_t num_tokens, int32_t num_kv_heads, int32_t head_dim, int32_t elem_bytes,
                              uintptr_t stream) {
  BastionReshapeAndCacheArgs args{};
  args.key = as_ptr<const void>(key);
  args.value = as_ptr<const void>(value);
  args.k_cache = as_ptr<void>(k_cache);
  args.v_cache = as_ptr<void>(v_cache);
  args.slot_mapping = as_ptr<const int64_t>(slot_mapping);
  args.key_stride_token = key_stride_token;
  args.key_stride_head = key_stride_head;
  args.value_stride_token = value_stride_token;
  args.value_stride_head = value_stride_head;
  args.num_slots = num_slots;
  args.num_tokens = num_tokens;
  args.num_kv_heads = num_kv_heads;
  args.head_dim = head_dim;
  args.elem_bytes = elem_bytes;
  raise_on_error(bastion_reshape_and_cache(&args, as_ptr<CUstream_st>(stream)));
}
#endif

}  // namespace cuda_bind

void bastion_bindings::bind_cuda(py::module_& m) {
  // with_cuda / cuda_device_count sit at top level for bastion.cuda_available(); the kernels live in
  // the `cuda` submodule, as the CPU kernels live in `cpu`.
  py::module_ cuda = m.def_submodule("cuda", "CUDA kernels (csrc/cuda) on raw device pointers");
  cuda.def("decode_plan", &cuda_bind::decode_plan, py::kw_only(), py::arg("num_seqs"), py::arg("num_heads"),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("block_size"), py::arg("max_blocks_per_seq"),
           py::arg("sliding_window"), py::arg("num_sms"),
           "Split-KV plan of the CUDA decode kernel: max_group, head_chunks, num_splits, split_tokens, "
           "workspace_bytes. Raises ValueError for shapes the kernel does not support.");
#ifdef BASTION_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("cuda_archs") = BASTION_CUDA_ARCHS;  // CMake's list, e.g. "90a" or "80;90a"
  m.def("cuda_device_count", &bastion_cuda_device_count, "Usable CUDA devices; 0 without a driver or GPU.");
  cuda.def("paged_attention_decode", &cuda_bind::paged_attention_decode, py::kw_only(), py::arg("out"),
           py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("block_table"), py::arg("seq_lens"),
           py::arg("workspace"), py::arg("workspace_bytes"), py::arg("q_stride_token"), py::arg("q_stride_head"),
           py::arg("num_seqs"), py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("head_dim"),
           py::arg("block_size"), py::arg("max_blocks_per_seq"), py::arg("sliding_window"), py::arg("num_sms"),
           py::arg("scale"), py::arg("dtype"), py::arg("stream"),
           "Launch paged decode attention on device pointers (async on `stream`).");
  cuda.def("reshape_and_cache", &cuda_bind::reshape_and_cache, py::kw_only(), py::arg("key"), py::arg("value"),
           py::arg("k_cache"), py::arg("v_cache"), py::arg("slot_mapping"), py::arg("key_stride_token"),
           py::arg("key_stride_head"), py::arg("value_stride_token"), py::arg("value_stride_head"),
           py::arg("num_slots"), py::arg("num_tokens"), py::arg("num_kv_heads"), py::arg("head_dim"),
           py::arg("elem_bytes"), py::arg("stream"),
           "Launch the KV-cache write on device pointers (async on `stream`); slots < 0 are skipped.");
#else
  m.attr("with_cuda") = false;
  m.def("cuda_device_count", []() { return 0; }, "Always 0: this build has no CUDA kernels.");
#endif
}
