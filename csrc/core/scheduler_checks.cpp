// Scheduler::check_invariants: the properties every step must leave behind. Cheap enough for
// debug and sanitizer builds (O(blocks + requests)), skipped in release steps; tests call it directly.
#include <stdexcept>
#include <string>
#include <vector>

#include "core/scheduler.h"  // IWYU pragma: associated

namespace bastion::core {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::logic_error("scheduler invariant broken: " + what);
}

}  // namespace

void Scheduler::check_invariants() const {
  require(out_.num_tokens <= config_.max_num_batched_tokens, "step exceeds max_num_batched_tokens");
  require(out_.num_reqs <= config_.max_num_seqs, "step exceeds max_num_seqs");
  require(static_cast<int32_t>(running_.size()) <= config_.max_num_seqs, "running exceeds max_num_seqs");

  const BlockPool& pool = kv_.pool();
  std::vector<int32_t> refs(pool.num_blocks(), 0);
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  for (const auto& [id, req] : requests_) {
    const std::string who = "request " + std::to_string(id) + ": ";
    if (req->status == RequestStatus::kFinished) {
      require(req->block_ids.empty(), who + "finished but still holds blocks");
      continue;
    }
    num_running += req->status == RequestStatus::kRunning;
    num_waiting += req->status == RequestStatus::kWaiting;
    if (req->status == RequestStatus::kWaiting) require(req->block_ids.empty(), who + "waiting with blocks");
    require(req->num_computed_tokens <= req->num_tokens(), who + "computed more tokens than it has");
    require(req->num_computed_tokens <= max_request_len_, who + "computed past the longest allowed sequence");
    require(static_cast<int64_t>(req->block_ids.size()) * config_.block_size >= req->num_computed_tokens,
            who + "computed tokens without slots");
    for (const int32_t b : req->block_ids) ++refs[b];
  }
  require(num_running == static_cast<int32_t>(running_.size()), "running list disagrees with request states");
  require(num_waiting == waiting_.size(), "waiting queue disagrees with request states");

  int32_t num_unreferenced = 0;
  for (int32_t b = 0; b < pool.num_blocks(); ++b) {
    require(refs[b] == pool.ref_count(b), "block " + std::to_string(b) + " has ref count " +
                                              std::to_string(pool.ref_count(b)) + " but " +
                                              std::to_string(refs[b]) + " holders");
    num_unreferenced += refs[b] == 0;
  }
  require(num_unreferenced == pool.num_free(), "free list length differs from unreferenced blocks");
}

}  // namespace bastion::core
