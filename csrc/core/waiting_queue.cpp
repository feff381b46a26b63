#include "core/waiting_queue.h"

#include <algorithm>

namespace bastion::core {

void WaitingQueue::insert_in_priority_order(Request* req) {
  const auto pos = std::upper_bound(queue_.begin(), queue_.end(), req,
                                    [](const Request* a, const Request* b) { return served_before(*a, *b); });
  queue_.insert(pos, req);
}

void WaitingQueue::add_new(Request* req) {
  if (policy_ == Policy::kPriority) {
    insert_in_priority_order(req);
  } else {
    queue_.push_back(req);
  }
}

void WaitingQueue::requeue_preempted(Request* req) {
  if (policy_ == Policy::kPriority) {
    insert_in_priority_order(req);
  } else {
    queue_.push_front(req);
  }
}

bool WaitingQueue::remove(const Request* req) {
  const auto it = std::find(queue_.begin(), queue_.end(), req);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

}  // namespace bastion::core
