// Request lifecycle of the Scheduler: admission, per-step updates, finish/abort, statistics.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/scheduler.h"  // IWYU pragma: associated

namespace bastion::core {

const Request& Scheduler::get(int64_t id) const {
  const auto it = requests_.find(id);
  if (it == requests_.end()) throw std::invalid_argument("unknown request id " + std::to_string(id));
  return *it->second;
}

void Scheduler::add_request(int64_t id, const int32_t* prompt, int32_t prompt_len, int64_t priority,
                            int64_t cache_salt) {
  const std::string who = "request " + std::to_string(id) + ": ";
  if (const auto it = requests_.find(id); it != requests_.end()) {
    throw std::invalid_argument(who + (it->second->status == RequestStatus::kFinished
                                           ? "id is still being reported as finished; reuse it after the next step()"
                                           : "id is already in use"));
  }
  if (prompt_len <= 0) throw std::invalid_argument(who + "prompt_token_ids is empty");
  if (prompt_len > max_request_len_) {
    throw std::invalid_argument(who + "prompt of " + std::to_string(prompt_len) +
                                " tokens can never fit: the limit is " + std::to_string(max_request_len_) +
                                " tokens (max_model_len=" + std::to_string(config_.max_model_len) +
                                ", KV pool=" + std::to_string(config_.num_blocks) + " blocks x " +
                                std::to_string(config_.block_size) + ")");
  }
  for (int32_t i = 0; i < prompt_len; ++i) {
    if (prompt[i] < 0) {
      throw std::invalid_argument(who + "prompt_token_ids[" + std::to_string(i) + "] = " +
                                  std::to_string(prompt[i]) + " is negative");
    }
  }
  auto req = std::make_unique<Request>();
  req->id = id;
  req->priority = priority;
  req->arrival = next_arrival_++;
  req->extra = ExtraKey{cache_salt};
  req->tokens.reserve(std::min(max_request_len_, prompt_len + 256));
  req->tokens.assign(prompt, prompt + prompt_len);
  req->num_prompt_tokens = prompt_len;
  req->block_ids.reserve(config_.max_blocks_per_seq());
  req->block_hashes.reserve(config_.max_blocks_per_seq());
  waiting_.add_new(req.get());
  requests_.emplace(id, std::move(req));
}

void Scheduler::finish(Request& req) {
  if (req.status == RequestStatus::kFinished) return;
  if (req.status == RequestStatus::kWaiting) waiting_.remove(&req);
  kv_.free(req);
  req.status = RequestStatus::kFinished;
  pending_finished_.push_back(req.id);
}

void Scheduler::update(const int32_t* sampled, int32_t num_sampled, const int64_t* finished,
                       int32_t num_finished) {
  // Validate everything before changing anything, so a bad call leaves the state intact.
  if (num_sampled != num_pending_samples_) {
    throw std::invalid_argument("sampled has " + std::to_string(num_sampled) + " tokens but the last step has " +
                                std::to_string(num_pending_samples_) + " requests with do_sample=1");
  }
  for (int32_t i = 0; i < num_sampled; ++i) {
    if (sampled[i] < 0) {
      throw std::invalid_argument("sampled[" + std::to_string(i) + "] = " + std::to_string(sampled[i]) +
                                  " is not a valid token id");
    }
  }
  for (int32_t j = 0; j < num_finished; ++j) get(finished[j]);
  for (int32_t i = 0; i < num_sampled; ++i) {
    Request& req = *sampling_reqs_[i];
    if (req.status == RequestStatus::kRunning) req.tokens.push_back(sampled[i]);
  }
  for (int32_t j = 0; j < num_finished; ++j) finish(*requests_.at(finished[j]));
  for (int32_t i = 0; i < num_sampled; ++i) {
    Request& req = *sampling_reqs_[i];
    if (req.status == RequestStatus::kRunning && req.num_tokens() >= max_request_len_) {
      req.finished_by_length = true;
      finish(req);
    }
  }
  num_pending_samples_ = 0;
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [](const Request* r) { return r->status == RequestStatus::kFinished; }),
                 running_.end());
}

int32_t Scheduler::append_tokens(int64_t id, const int32_t* tokens, int32_t num_tokens) {
  const std::string who = "request " + std::to_string(id) + ": ";
  if (num_pending_samples_ > 0) {
    throw std::logic_error(who + "append_tokens() between step() and update(): call update() first");
  }
  const auto it = requests_.find(id);
  if (it == requests_.end()) throw std::invalid_argument("unknown request id " + std::to_string(id));
  Request& req = *it->second;
  if (req.status == RequestStatus::kFinished) throw std::invalid_argument(who + "is finished");
  for (int32_t i = 0; i < num_tokens; ++i) {
    if (tokens[i] < 0) {
      throw std::invalid_argument(who + "tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) +
                                  " is not a valid token id");
    }
  }
  const int32_t n = std::max(0, std::min(num_tokens, max_request_len_ - req.num_tokens()));
  req.tokens.insert(req.tokens.end(), tokens, tokens + n);
  if (req.num_tokens() >= max_request_len_) {
    if (req.status == RequestStatus::kRunning) running_.erase(std::find(running_.begin(), running_.end(), &req));
    req.finished_by_length = true;
    finish(req);
  }
  return n;
}

bool Scheduler::abort(int64_t id) {
  const auto it = requests_.find(id);
  if (it == requests_.end() || it->second->status == RequestStatus::kFinished) return false;
  Request* req = it->second.get();
  if (req->status == RequestStatus::kRunning) running_.erase(std::find(running_.begin(), running_.end(), req));
  finish(*req);
  return true;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.num_total_blocks = config_.num_blocks;
  s.num_free_blocks = kv_.pool().num_free();
  s.num_used_blocks = s.num_total_blocks - s.num_free_blocks;
  s.num_running = static_cast<int32_t>(running_.size());
  s.num_waiting = waiting_.size();
  s.prefix_cache_hits = prefix_hits_;
  s.prefix_cache_queries = prefix_queries_;
  s.num_preemptions = total_preemptions_;
  s.kv_cache_usage = static_cast<double>(s.num_used_blocks) / s.num_total_blocks;
  return s;
}

}  // namespace bastion::core
