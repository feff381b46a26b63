#include "core/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace bastion::core {

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_((validate(config), config)),
      max_request_len_(config.max_request_len()),
      kv_(config.num_blocks, config.block_size, config.enable_prefix_caching, config.hash_seed,
          config.max_blocks_per_seq()),
      waiting_(config.policy),
      out_(config) {
  running_.reserve(config.max_num_seqs);
  scheduled_.reserve(config.max_num_seqs);
  sampling_reqs_.assign(config.max_num_seqs, nullptr);
}

int32_t Scheduler::chunk_size(const Request& req, int32_t num_computed, int32_t budget) const {
  int32_t n = req.num_tokens() - num_computed;
  if (config_.long_prefill_token_threshold > 0) n = std::min(n, config_.long_prefill_token_threshold);
  n = std::min({n, budget, max_request_len_ - num_computed});
  return std::max(n, 0);
}

void Scheduler::mark_scheduled(Request* req, int32_t num_tokens, int32_t& budget) {
  scheduled_.push_back({req, num_tokens});
  req->scheduled_in_step = step_;
  budget -= num_tokens;
}

size_t Scheduler::pick_victim() const {
  if (config_.policy == Policy::kFcfs) return running_.size() - 1;
  size_t worst = 0;
  for (size_t i = 1; i < running_.size(); ++i) {
    if (served_before(*running_[worst], *running_[i])) worst = i;
  }
  return worst;
}

void Scheduler::preempt(size_t running_index, int32_t& budget) {
  Request* victim = running_[running_index];
  running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(running_index));
  if (victim->scheduled_in_step == step_) {
    const auto it = std::find_if(scheduled_.begin(), scheduled_.end(),
                                 [victim](const Scheduled& s) { return s.req == victim; });
    budget += it->num_tokens;
    scheduled_.erase(it);
    victim->scheduled_in_step = 0;
  }
  kv_.free(*victim);
  victim->num_computed_tokens = 0;
  victim->status = RequestStatus::kWaiting;
  ++victim->num_preemptions;
  ++total_preemptions_;
  waiting_.requeue_preempted(victim);
  out_.preempted_ids[out_.num_preempted++] = victim->id;
}

void Scheduler::schedule_running(int32_t& budget) {
  size_t i = 0;
  while (i < running_.size() && budget > 0) {
    Request* req = running_[i];
    const int32_t n = chunk_size(*req, req->num_computed_tokens, budget);
    if (n == 0) {  // nothing new to compute yet: skip, do not block the requests behind it
      ++i;
      continue;
    }
    bool preempted_self = false;
    while (!kv_.allocate_slots(*req, n, 0, 0)) {
      const size_t victim = pick_victim();
      preempted_self = running_[victim] == req;
      if (victim < i) --i;
      preempt(victim, budget);
      if (preempted_self) break;
    }
    if (preempted_self) break;
    mark_scheduled(req, n, budget);
    ++i;
  }
}

void Scheduler::schedule_waiting(int32_t& budget) {
  const int32_t block_size = config_.block_size;
  while (!waiting_.empty() && budget > 0 && static_cast<int32_t>(running_.size()) < config_.max_num_seqs) {
    Request* req = waiting_.front();
    const int32_t num_hit = kv_.find_cached_prefix(*req);
    const int32_t hit_tokens = num_hit * block_size;
    const int32_t n = chunk_size(*req, hit_tokens, budget);
    if (n == 0 || !kv_.allocate_slots(*req, n, num_hit, 0)) break;
    waiting_.pop_front();
    req->status = RequestStatus::kRunning;
    req->num_computed_tokens = hit_tokens;
    req->num_cached_tokens = hit_tokens;
    if (kv_.prefix_caching()) {
      prefix_queries_ += req->num_tokens();
      prefix_hits_ += hit_tokens;
    }
    running_.push_back(req);
    mark_scheduled(req, n, budget);
  }
}

void Scheduler::write_outputs() {
  const int32_t block_size = config_.block_size;
  int32_t num_tokens = 0;
  int32_t num_sampling = 0;
  for (size_t r = 0; r < scheduled_.size(); ++r) {
    Request& req = *scheduled_[r].req;
    const int32_t n = scheduled_[r].num_tokens;
    const int32_t start = req.num_computed_tokens;
    out_.req_ids[r] = req.id;
    out_.num_scheduled_tokens[r] = n;
    out_.cu_seqlens_q[r] = num_tokens;
    for (int32_t k = 0; k < n; ++k) {
      const int32_t pos = start + k;
      out_.input_ids[num_tokens + k] = req.tokens[pos];
      out_.positions[num_tokens + k] = pos;
      out_.slot_mapping[num_tokens + k] =
          static_cast<int64_t>(req.block_ids[pos / block_size]) * block_size + pos % block_size;
    }
    out_.seq_lens[r] = start + n;
    out_.write_block_row(static_cast<int32_t>(r), req.block_ids);
    const bool sample = start + n == req.num_tokens();
    out_.do_sample[r] = sample ? 1 : 0;
    if (sample) {
      out_.logits_indices[num_sampling] = num_tokens + n - 1;
      sampling_reqs_[num_sampling++] = &req;
    }
    num_tokens += n;
    req.num_computed_tokens = start + n;  // optimistic: the model computes them in this step
    kv_.index_full_blocks(req);
  }
  out_.num_reqs = static_cast<int32_t>(scheduled_.size());
  out_.cu_seqlens_q[out_.num_reqs] = num_tokens;
  out_.num_tokens = num_tokens;
  out_.num_sampling = num_sampling;
  num_pending_samples_ = num_sampling;
}

void Scheduler::report_finished() {
  // Requests finished since the last step are reported once, then forgotten.
  out_.finished_ids.swap(pending_finished_);
  pending_finished_.clear();
  for (const int64_t id : out_.finished_ids) requests_.erase(id);
}

const StepOutput& Scheduler::schedule() {
  if (num_pending_samples_ > 0) {
    throw std::logic_error("update() must be called with the " + std::to_string(num_pending_samples_) +
                           " sampled tokens of the last step before the next step()");
  }
  ++step_;
  report_finished();
  scheduled_.clear();
  out_.num_preempted = 0;
  int32_t budget = config_.max_num_batched_tokens;
  schedule_running(budget);
  if (out_.num_preempted == 0) schedule_waiting(budget);
  write_outputs();
#if !defined(NDEBUG) || defined(BASTION_CHECK_INVARIANTS)
  check_invariants();
#endif
  return out_;
}

}  // namespace bastion::core
