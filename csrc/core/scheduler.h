// Continuous-batching scheduler (vLLM V1 shape) over the paged KV cache.
//
// One schedule() hands out tokens under a token budget (max_num_batched_tokens) and a sequence
// cap (max_num_seqs). There is no prefill/decode phase: each request closes the gap between its
// computed tokens and its known tokens, so chunked prefills and decodes share a step.
//   1. Running requests first, in order. If their blocks cannot be allocated, preempt by
//      recompute: the newest under fcfs, the worst (priority, arrival) under priority. A victim
//      already scheduled in this step gives its tokens back. Victims are requeued at the head.
//   2. Waiting requests next, only if nothing was preempted: prefix-cache lookup, then admission
//      while blocks, budget and the sequence cap allow (no preemption on behalf of a waiting one).
//   3. Write the flat outputs, advance num_computed_tokens optimistically, index full blocks.
// All buffers are sized at construction; a steady-state step allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/kv_cache_manager.h"
#include "core/request.h"
#include "core/scheduler_config.h"
#include "core/step_output.h"
#include "core/waiting_queue.h"

namespace bastion::core {

struct SchedulerStats {
  int32_t num_total_blocks = 0;
  int32_t num_free_blocks = 0;  // allocatable now, evictable cached blocks included
  int32_t num_used_blocks = 0;
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int64_t prefix_cache_hits = 0;     // tokens
  int64_t prefix_cache_queries = 0;  // tokens
  int64_t num_preemptions = 0;
  double kv_cache_usage = 0.0;  // used / total
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // Queues a request. Throws std::invalid_argument on a duplicate id, an empty prompt, a negative
  // token id, or a prompt longer than the longest sequence the model and the pool can hold.
  void add_request(int64_t id, const int32_t* prompt, int32_t prompt_len, int64_t priority, int64_t cache_salt);

  // Plans one step. The returned buffers stay valid until the next schedule().
  const StepOutput& schedule();

  // sampled[i]: new token of the i-th sampling request of the last step; finished: ids the engine
  // stopped after appending their token (their blocks are freed here). Requests that reach the
  // longest allowed sequence are finished here too (see finished_by_length).
  void update(const int32_t* sampled, int32_t num_sampled, const int64_t* finished, int32_t num_finished);

  // Frees the request's blocks at once; false if the id is unknown or already finished.
  bool abort(int64_t id);

  // Appends tokens that were not sampled (a grammar forces them: jump-forward) to an unfinished
  // request between update() and the next schedule(); its next step computes them with its last
  // sampled token, like a prefill chunk, and samples after the last one. At most the room left
  // below the longest allowed sequence is taken; returns how many were appended. A request that
  // reaches that length is finished here (finished_by_length). Throws std::invalid_argument on an
  // unknown or finished id or a negative token, std::logic_error between step() and update().
  int32_t append_tokens(int64_t id, const int32_t* tokens, int32_t num_tokens);

  // Per-request figures; valid until the step after the request finished. Throw on unknown ids.
  int32_t num_cached_tokens(int64_t id) const { return get(id).num_cached_tokens; }
  int32_t num_preemptions(int64_t id) const { return get(id).num_preemptions; }
  int32_t num_computed_tokens(int64_t id) const { return get(id).num_computed_tokens; }
  int32_t num_tokens(int64_t id) const { return get(id).num_tokens(); }
  bool finished_by_length(int64_t id) const { return get(id).finished_by_length; }

  SchedulerStats stats() const;
  const SchedulerConfig& config() const { return config_; }

  // Throws std::logic_error describing the first broken invariant (budget, caps, ref counts, free
  // list, queue membership). Runs at the end of every schedule() in debug/sanitizer builds.
  void check_invariants() const;

  // Debug views for tests.
  const KVCacheManager& kv_cache() const { return kv_; }
  const std::vector<Request*>& running() const { return running_; }
  const WaitingQueue& waiting() const { return waiting_; }
  const std::unordered_map<int64_t, std::unique_ptr<Request>>& requests() const { return requests_; }

 private:
  struct Scheduled {
    Request* req;
    int32_t num_tokens;
  };

  const Request& get(int64_t id) const;
  int32_t chunk_size(const Request& req, int32_t num_computed, int32_t budget) const;
  void schedule_running(int32_t& budget);
  void schedule_waiting(int32_t& budget);
  size_t pick_victim() const;
  void preempt(size_t running_index, int32_t& budget);
  void mark_scheduled(Request* req, int32_t num_tokens, int32_t& budget);
  void write_outputs();
  void finish(Request& req);
  void report_finished();

  SchedulerConfig config_;
  int32_t max_request_len_;
  KVCacheManager kv_;
  WaitingQueue waiting_;
  std::vector<Request*> running_;
  std::unordered_map<int64_t, std::unique_ptr<Request>> requests_;

  StepOutput out_;
  std::vector<Scheduled> scheduled_;       // this step's plan, capacity max_num_seqs
  std::vector<Request*> sampling_reqs_;    // do_sample requests of the last step, in step order
  int32_t num_pending_samples_ = 0;        // > 0 until update() consumes the last step's samples
  std::vector<int64_t> pending_finished_;  // finished/aborted since the last schedule()

  uint64_t step_ = 0;
  uint64_t next_arrival_ = 0;
  int64_t prefix_hits_ = 0;
  int64_t prefix_queries_ = 0;
  int64_t total_preemptions_ = 0;
};

}  // namespace bastion::core
