// The only pybind11 translation unit: thin adapters from numpy arrays / raw pointers to the
// plain C++ of csrc/core, csrc/cpu and (optionally) kernels/cuda. No logic lives here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

// ===== BEGIN SECTION core (csrc/core) =====
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

#include "core/scheduler.h"

namespace core_bindings {

namespace bc = bastion::core;
using Int32In = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using Int64In = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// The scheduler plus a lock: step() schedules without the GIL, so add/update/abort from other
// threads must wait for it. step() never takes the GIL while holding the lock, so no deadlock.
struct PyScheduler {
  explicit PyScheduler(const bc::SchedulerConfig& config) : core(config) {}
  bc::Scheduler core;
  std::mutex mutex;
};

// Views of one step's buffers; every array keeps the Scheduler alive through its base object.
struct PyStepOutput {
  py::array req_ids, num_scheduled_tokens, input_ids, positions, slot_mapping, cu_seqlens_q, seq_lens,
      block_table, do_sample, logits_indices, preempted_ids, finished_ids;
  int32_t num_reqs = 0;
  int32_t num_tokens = 0;
};

template <typename T>
py::array view(const T* data, py::ssize_t count, const py::object& owner) {
  return py::array(py::dtype::of<T>(), {count}, {static_cast<py::ssize_t>(sizeof(T))}, data, owner);
}

PyStepOutput make_step_output(const bc::StepOutput& out, const py::object& owner) {
  const py::ssize_t r = out.num_reqs;
  const py::ssize_t width = out.max_blocks_per_seq;
  PyStepOutput py_out;
  py_out.num_reqs = out.num_reqs;
  py_out.num_tokens = out.num_tokens;
  py_out.req_ids = view(out.req_ids.data(), r, owner);
  py_out.num_scheduled_tokens = view(out.num_scheduled_tokens.data(), r, owner);
  py_out.input_ids = view(out.input_ids.data(), out.num_tokens, owner);
  py_out.positions = view(out.positions.data(), out.num_tokens, owner);
  py_out.slot_mapping = view(out.slot_mapping.data(), out.num_tokens, owner);
  py_out.cu_seqlens_q = view(out.cu_seqlens_q.data(), r + 1, owner);
  py_out.seq_lens = view(out.seq_lens.data(), r, owner);
  py_out.block_table = py::array(py::dtype::of<int32_t>(), {r, width},
                                 {width * static_cast<py::ssize_t>(sizeof(int32_t)), py::ssize_t{sizeof(int32_t)}},
                                 out.block_table.data(), owner);
  py_out.do_sample = view(out.do_sample.data(), r, owner);
  py_out.logits_indices = view(out.logits_indices.data(), out.num_sampling, owner);
  py_out.preempted_ids = view(out.preempted_ids.data(), out.num_preempted, owner);
  py_out.finished_ids = view(out.finished_ids.data(), static_cast<py::ssize_t>(out.finished_ids.size()), owner);
  return py_out;
}

int32_t checked_i32(const char* name, int64_t value) {
  if (value < std::numeric_limits<int32_t>::min() || value > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument(std::string(name) + " = " + std::to_string(value) + " does not fit in int32");
  }
  return static_cast<int32_t>(value);
}

template <typename Array>
void require_1d(const char* name, const Array& a) {
  if (a.ndim() != 1) {
    throw std::invalid_argument(std::string(name) + " must be a 1-D array, got " + std::to_string(a.ndim()) + "-D");
  }
}

std::unique_ptr<PyScheduler> make_scheduler(int64_t num_blocks, int64_t block_size, int64_t max_num_seqs,
                                            int64_t max_num_batched_tokens, int64_t max_model_len,
                                            bool enable_prefix_caching, const std::string& policy,
                                            const py::int_& hash_seed, int64_t long_prefill_token_threshold) {
  if (hash_seed < py::int_(0) || hash_seed > py::int_(std::numeric_limits<uint64_t>::max())) {
    throw std::invalid_argument("hash_seed must be in [0, 2**64), got " + py::str(hash_seed).cast<std::string>());
  }
  bc::SchedulerConfig config;
  config.num_blocks = checked_i32("num_blocks", num_blocks);
  config.block_size = checked_i32("block_size", block_size);
  config.max_num_seqs = checked_i32("max_num_seqs", max_num_seqs);
  config.max_num_batched_tokens = checked_i32("max_num_batched_tokens", max_num_batched_tokens);
  config.max_model_len = checked_i32("max_model_len", max_model_len);
  config.enable_prefix_caching = enable_prefix_caching;
  config.policy = bc::parse_policy(policy);
  config.hash_seed = hash_seed.cast<uint64_t>();
  config.long_prefill_token_threshold = checked_i32("long_prefill_token_threshold", long_prefill_token_threshold);
  return std::make_unique<PyScheduler>(config);
}

py::dict stats_dict(const bc::SchedulerStats& s) {
  py::dict d;
  d["num_total_blocks"] = s.num_total_blocks;
  d["num_free_blocks"] = s.num_free_blocks;
  d["num_used_blocks"] = s.num_used_blocks;
  d["num_running"] = s.num_running;
  d["num_waiting"] = s.num_waiting;
  d["prefix_cache_hits"] = s.prefix_cache_hits;
  d["prefix_cache_queries"] = s.prefix_cache_queries;
  d["num_preemptions"] = s.num_preemptions;
  d["kv_cache_usage"] = s.kv_cache_usage;
  return d;
}

// Test-only views of the block pool and the queues (copies, never views).
void bind_debug_views(py::class_<PyScheduler>& cls) {
  cls.def("debug_block_tables", [](PyScheduler& s) {
       std::lock_guard<std::mutex> lock(s.mutex);
       py::dict tables;
       for (const auto& [id, req] : s.core.requests()) {
         if (!req->block_ids.empty()) tables[py::int_(id)] = py::cast(req->block_ids);
       }
       return tables;
     }, "{req_id: [block ids]} of every request holding blocks.")
      .def("debug_ref_counts", [](PyScheduler& s) {
        std::lock_guard<std::mutex> lock(s.mutex);
        const bc::BlockPool& pool = s.core.kv_cache().pool();
        py::array_t<int32_t> refs(pool.num_blocks());
        for (int32_t b = 0; b < pool.num_blocks(); ++b) refs.mutable_at(b) = pool.ref_count(b);
        return refs;
      }, "int32 [num_blocks]: reference count of every block.")
      .def("debug_free_list", [](PyScheduler& s) {
        std::lock_guard<std::mutex> lock(s.mutex);
        return s.core.kv_cache().pool().free_list_order();
      }, "Free block ids from the LRU end (reused next) to the MRU end.")
      .def("debug_cached_blocks", [](PyScheduler& s) {
        std::lock_guard<std::mutex> lock(s.mutex);
        const bc::BlockPool& pool = s.core.kv_cache().pool();
        py::dict cached;
        for (int32_t b = 0; b < pool.num_blocks(); ++b) {
          if (pool.is_cached(b)) cached[py::int_(b)] = py::int_(pool.block_hash(b));
        }
        return cached;
      }, "{block_id: hash} of every block in the prefix-cache index.")
      .def("debug_running_ids", [](PyScheduler& s) {
        std::lock_guard<std::mutex> lock(s.mutex);
        std::vector<int64_t> ids;
        for (const bc::Request* r : s.core.running()) ids.push_back(r->id);
        return ids;
      }, "Running request ids in scheduling order.")
      .def("debug_waiting_ids", [](PyScheduler& s) {
        std::lock_guard<std::mutex> lock(s.mutex);
        std::vector<int64_t> ids;
        for (const bc::Request* r : s.core.waiting().items()) ids.push_back(r->id);
        return ids;
      }, "Waiting request ids from the head of the queue.")
      .def("check_invariants", [](PyScheduler& s) {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.core.check_invariants();
      }, "Raises RuntimeError naming the first broken scheduler invariant.");
}

// Per-request integer queries share one shape: lock, look up, ValueError on unknown ids.
template <typename Getter>
void bind_request_query(py::class_<PyScheduler>& cls, const char* name, Getter getter, const char* doc) {
  cls.def(name, [getter](PyScheduler& s, int64_t req_id) {
    std::lock_guard<std::mutex> lock(s.mutex);
    return (s.core.*getter)(req_id);
  }, py::arg("req_id"), doc);
}

}  // namespace core_bindings

static void bind_core(py::module_& m) {
  using namespace core_bindings;
  py::class_<PyStepOutput>(m, "StepOutput", "One scheduler step as numpy views (valid until the next step()).")
      .def_readonly("req_ids", &PyStepOutput::req_ids)
      .def_readonly("num_scheduled_tokens", &PyStepOutput::num_scheduled_tokens)
      .def_readonly("input_ids", &PyStepOutput::input_ids)
      .def_readonly("positions", &PyStepOutput::positions)
      .def_readonly("slot_mapping", &PyStepOutput::slot_mapping)
      .def_readonly("cu_seqlens_q", &PyStepOutput::cu_seqlens_q)
      .def_readonly("seq_lens", &PyStepOutput::seq_lens)
      .def_readonly("block_table", &PyStepOutput::block_table)
      .def_readonly("do_sample", &PyStepOutput::do_sample)
      .def_readonly("logits_indices", &PyStepOutput::logits_indices)
      .def_readonly("preempted_ids", &PyStepOutput::preempted_ids)
      .def_readonly("finished_ids", &PyStepOutput::finished_ids)
      .def_readonly("num_reqs", &PyStepOutput::num_reqs)
      .def_readonly("num_tokens", &PyStepOutput::num_tokens);

  py::class_<PyScheduler> cls(m, "Scheduler", "Continuous-batching scheduler over a paged KV cache (C++).");
  cls.def(py::init(&make_scheduler), py::arg("num_blocks"), py::arg("block_size"), py::arg("max_num_seqs"),
          py::arg("max_num_batched_tokens"), py::arg("max_model_len"), py::arg("enable_prefix_caching") = true,
          py::arg("policy") = "fcfs", py::arg("hash_seed") = 0, py::arg("long_prefill_token_threshold") = 0)
      .def("add_request", [](PyScheduler& s, int64_t req_id, const Int32In& prompt, int64_t priority,
                             int64_t cache_salt, int64_t lora_id) {
        require_1d("prompt_token_ids", prompt);
        std::lock_guard<std::mutex> lock(s.mutex);
        s.core.add_request(req_id, prompt.data(), static_cast<int32_t>(prompt.size()), priority, cache_salt, lora_id);
      }, py::arg("req_id"), py::arg("prompt_token_ids"), py::arg("priority") = 0, py::arg("cache_salt") = 0,
         py::arg("lora_id") = 0, "Queue a request; ValueError on bad input.")
      .def("step", [](py::object self) {
        auto& s = self.cast<PyScheduler&>();
        const bc::StepOutput* out = nullptr;
        {
          py::gil_scoped_release release;
          std::lock_guard<std::mutex> lock(s.mutex);
          out = &s.core.schedule();
        }
        return make_step_output(*out, self);
      }, "Plan one step (GIL released) and return its StepOutput.")
      .def("update", [](PyScheduler& s, const Int32In& sampled, const Int64In& finished) {
        require_1d("sampled", sampled);
        require_1d("finished", finished);
        std::lock_guard<std::mutex> lock(s.mutex);
        s.core.update(sampled.data(), static_cast<int32_t>(sampled.size()), finished.data(),
                      static_cast<int32_t>(finished.size()));
      }, py::arg("sampled"), py::arg("finished"), "Append the last step's sampled tokens and finish requests.")
      .def("abort", [](PyScheduler& s, int64_t req_id) {
        std::lock_guard<std::mutex> lock(s.mutex);
        return s.core.abort(req_id);
      }, py::arg("req_id"), "Free a request's blocks now; False if unknown or already finished.")
      .def("stats", [](PyScheduler& s) {
        std::lock_guard<std::mutex> lock(s.mutex);
        return stats_dict(s.core.stats());
      }, "Pool, queue and prefix-cache figures as a dict.")
      .def_property_readonly("block_size", [](const PyScheduler& s) { return s.core.config().block_size; })
      .def_property_readonly("num_blocks", [](const PyScheduler& s) { return s.core.config().num_blocks; })
      .def_property_readonly("max_blocks_per_seq",
                             [](const PyScheduler& s) { return s.core.config().max_blocks_per_seq(); });
  bind_request_query(cls, "num_cached_tokens", &bc::Scheduler::num_cached_tokens,
                     "Prefix-cache hit (tokens) of the request's last admission.");
  bind_request_query(cls, "num_preemptions", &bc::Scheduler::num_preemptions, "Times the request was preempted.");
  bind_request_query(cls, "num_computed_tokens", &bc::Scheduler::num_computed_tokens,
                     "Tokens whose KV is computed (or scheduled in the last step).");
  bind_request_query(cls, "num_tokens", &bc::Scheduler::num_tokens, "Prompt plus sampled tokens.");
  bind_request_query(cls, "finished_by_length", &bc::Scheduler::finished_by_length,
                     "True if the scheduler stopped it at the longest allowed sequence.");
  bind_debug_views(cls);
}
// ===== END SECTION core =====

// ===== BEGIN SECTION cpu (csrc/cpu) =====
#include <cstdint>

#include "cpu/attention_plan.h"
#include "cpu/cache_write.h"
#include "cpu/elementwise.h"
#include "cpu/paged_attention.h"
#include "cpu/quant_gemv.h"

namespace {

// Python passes tensor.data_ptr() ints; the wrapper (bastion/ops/cpu_backend.py) has already
// checked dtype (fp32), device (cpu) and that the innermost dim is contiguous.
template <typename T>
T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

bastion::cpu::PagedCache as_cache(std::uintptr_t data, int64_t block_stride, int64_t slot_stride, int64_t head_stride) {
  return {as_ptr<const float>(data), block_stride, slot_stride, head_stride};
}

}  // namespace

static void bind_cpu(py::module_& m) {
  namespace cpu = bastion::cpu;
  py::module_ sub = m.def_submodule("cpu", "fp32 CPU kernels on raw tensor pointers (see bastion.ops.cpu_backend)");
  sub.def(
      "paged_attention",
      [](std::uintptr_t q, int64_t q_ts, int64_t q_hs, std::uintptr_t out, int64_t out_ts, int64_t out_hs,
         std::uintptr_t k, int64_t k_bs, int64_t k_ss, int64_t k_hs, std::uintptr_t v, int64_t v_bs, int64_t v_ss,
         int64_t v_hs, std::uintptr_t block_table, int64_t block_table_stride, std::uintptr_t seq_lens,
         std::uintptr_t cu_seqlens_q, int64_t num_tokens, int num_seqs, int num_heads, int num_kv_heads, int head_dim,
         int block_size, int max_blocks_per_seq, int64_t num_blocks, float scale, int sliding_window, int threads) {
        const cpu::PagedAttentionArgs args{as_ptr<const float>(q), q_ts, q_hs, as_ptr<float>(out), out_ts, out_hs,
                                           as_cache(k, k_bs, k_ss, k_hs), as_cache(v, v_bs, v_ss, v_hs),
                                           as_ptr<const int32_t>(block_table), block_table_stride,
                                           as_ptr<const int32_t>(seq_lens), as_ptr<const int32_t>(cu_seqlens_q),
                                           num_tokens, num_seqs, num_heads, num_kv_heads, head_dim, block_size,
                                           max_blocks_per_seq, num_blocks, scale, sliding_window};
        py::gil_scoped_release release;
        cpu::paged_attention(args, threads);
      },
      "Paged attention over fp32 NHD caches; pointers are tensor.data_ptr() ints, strides in elements.");
  sub.def(
      "reshape_and_cache",
      [](std::uintptr_t key, int64_t key_ts, int64_t key_hs, std::uintptr_t value, int64_t value_ts,
         int64_t value_hs, std::uintptr_t k_cache, int64_t k_bs, int64_t k_ss, int64_t k_hs, std::uintptr_t v_cache,
         int64_t v_bs, int64_t v_ss, int64_t v_hs, std::uintptr_t slot_mapping, int64_t num_tokens,
         int num_kv_heads, int head_dim, int block_size, int64_t num_blocks, int threads) {
        const cpu::KvWriteArgs args{as_ptr<const float>(key), key_ts, key_hs, as_ptr<const float>(value), value_ts,
                                    value_hs, {as_ptr<float>(k_cache), k_bs, k_ss, k_hs},
                                    {as_ptr<float>(v_cache), v_bs, v_ss, v_hs}, as_ptr<const int64_t>(slot_mapping),
                                    num_tokens, num_kv_heads, head_dim, block_size, num_blocks};
        py::gil_scoped_release release;
        cpu::reshape_and_cache(args, threads);
      },
      "Write K/V rows into their cache slots (int64 slot_mapping, -1 = skip).");
  sub.def(
      "rms_norm",
      [](std::uintptr_t x, std::uintptr_t weight, std::uintptr_t residual_in, std::uintptr_t residual_out,
         std::uintptr_t out, int64_t rows, int hidden, float eps, int threads) {
        py::gil_scoped_release release;
        cpu::rms_norm(as_ptr<const float>(x), as_ptr<const float>(weight), as_ptr<const float>(residual_in),
                      as_ptr<float>(residual_out), as_ptr<float>(out), rows, hidden, eps, threads);
      },
      "RMSNorm of contiguous fp32 rows; with residual_in (0 = none), residual_out = x + residual_in is normalised.");
  sub.def(
      "silu_and_mul",
      [](std::uintptr_t x, std::uintptr_t out, int64_t rows, int d, int threads) {
        py::gil_scoped_release release;
        cpu::silu_and_mul(as_ptr<const float>(x), as_ptr<float>(out), rows, d, threads);
      },
      "silu(x[:, :d]) * x[:, d:] for contiguous fp32 x [rows, 2d].");
  sub.def(
      "quant_matmul",
      [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t y, int64_t M, int64_t N, int64_t K, int ggml_type,
         int threads) {
        const auto type = static_cast<cpu::QuantType>(ggml_type);
        if (cpu::quant_block_bytes(type) == 0) throw std::invalid_argument("quant_matmul: unsupported ggml type");
        if (K % cpu::kQuantBlock != 0) throw std::invalid_argument("quant_matmul: K must be a multiple of 32");
        py::gil_scoped_release release;
        cpu::quant_matmul(as_ptr<const float>(x), as_ptr<const uint8_t>(w), as_ptr<float>(y), M, N, K, type, threads);
      },
      "y[M, N] = x[M, K] @ W^T for fp32 x/y and W rows of GGUF blocks (ggml type 3 = Q4_1, 8 = Q8_0).");
  sub.def(
      "attention_plan",
      [](py::array_t<int32_t, py::array::c_style | py::array::forcecast> seq_lens,
         py::array_t<int32_t, py::array::c_style | py::array::forcecast> cu_seqlens_q, int num_kv_heads,
         int group_size, int sliding_window, int threads) {
        if (cu_seqlens_q.size() != seq_lens.size() + 1) throw std::invalid_argument("cu_seqlens_q needs num_seqs + 1 entries");
        cpu::AttentionPlanOptions options;
        options.num_threads = threads;
        const cpu::AttentionPlan plan =
            cpu::plan_attention(seq_lens.data(), cu_seqlens_q.data(), static_cast<int>(seq_lens.size()), num_kv_heads,
                                group_size, sliding_window, options);
        py::list items;
        for (const auto& it : plan.items) {
          items.append(py::make_tuple(it.seq, it.kv_head_begin, it.kv_head_end, it.q_begin, it.q_end, it.kv_begin,
                                      it.kv_end, it.partial));
        }
        py::dict result;
        result["items"] = items;
        result["num_merges"] = plan.merges.size();
        result["num_partials"] = plan.num_partials;
        return result;
      },
      "The work items paged_attention would run: (seq, kv_head_begin, kv_head_end, q_begin, q_end, kv_begin, "
      "kv_end, partial).");
}
// ===== END SECTION cpu =====

// ===== BEGIN SECTION cuda (kernels/cuda) =====
#include <string>

#include "../kernels/cuda/decode_plan.h"
#ifdef BASTION_WITH_CUDA
#include "../kernels/cuda/bastion_cuda.h"
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

static void bind_cuda(py::module_& m) {
  // with_cuda / cuda_device_count sit at top level for bastion.cuda_available(); the kernels live in
  // the `cuda` submodule, as the CPU kernels live in `cpu`.
  py::module_ cuda = m.def_submodule("cuda", "CUDA kernels (kernels/cuda) on raw device pointers");
  cuda.def("decode_plan", &cuda_bind::decode_plan, py::kw_only(), py::arg("num_seqs"), py::arg("num_heads"),
           py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("block_size"), py::arg("max_blocks_per_seq"),
           py::arg("sliding_window"), py::arg("num_sms"),
           "Split-KV plan of the CUDA decode kernel: max_group, head_chunks, num_splits, split_tokens, "
           "workspace_bytes. Raises ValueError for shapes the kernel does not support.");
#ifdef BASTION_WITH_CUDA
  m.attr("with_cuda") = true;
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
// ===== END SECTION cuda =====

PYBIND11_MODULE(_core, m) {
  m.doc() = "bastion native core: scheduler, paged KV cache manager, CPU kernels";
  bind_core(m);
  bind_cpu(m);
  bind_cuda(m);
}
