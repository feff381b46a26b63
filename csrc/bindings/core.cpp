// Bindings of csrc/core.
#include "bindings/bindings.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
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

void bastion_bindings::bind_core(py::module_& m) {
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
                             int64_t cache_salt) {
        require_1d("prompt_token_ids", prompt);
        std::lock_guard<std::mutex> lock(s.mutex);
        s.core.add_request(req_id, prompt.data(), static_cast<int32_t>(prompt.size()), priority, cache_salt);
      }, py::arg("req_id"), py::arg("prompt_token_ids"), py::arg("priority") = 0, py::arg("cache_salt") = 0,
         "Queue a request; ValueError on bad input.")
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
      .def("append_tokens", [](PyScheduler& s, int64_t req_id, const Int32In& tokens) {
        require_1d("tokens", tokens);
        std::lock_guard<std::mutex> lock(s.mutex);
        return s.core.append_tokens(req_id, tokens.data(), static_cast<int32_t>(tokens.size()));
      }, py::arg("req_id"), py::arg("tokens"),
         "Append unsampled (grammar-forced) tokens after update(); returns how many fit. ValueError on bad input.")
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
