// The waiting queue under both policies.
//   fcfs:     new requests at the back, preempted ones at the head.
//   priority: always ordered by (priority, arrival); a preempted request therefore goes back in
//             front of every later arrival of the same or a worse priority.
#pragma once

#include <cstdint>
#include <deque>

#include "core/request.h"

namespace bastion::core {

enum class Policy : uint8_t { kFcfs, kPriority };

// True when `a` should be served before `b` under the priority policy.
inline bool served_before(const Request& a, const Request& b) {
  return a.priority != b.priority ? a.priority < b.priority : a.arrival < b.arrival;
}

class WaitingQueue {
 public:
  explicit WaitingQueue(Policy policy) : policy_(policy) {}

  void add_new(Request* req);
  void requeue_preempted(Request* req);
  // Removes `req` wherever it sits; false if it is not queued.
  bool remove(const Request* req);

  Request* front() const { return queue_.front(); }
  void pop_front() { queue_.pop_front(); }
  bool empty() const { return queue_.empty(); }
  int32_t size() const { return static_cast<int32_t>(queue_.size()); }
  const std::deque<Request*>& items() const { return queue_; }

 private:
  void insert_in_priority_order(Request* req);

  Policy policy_;
  std::deque<Request*> queue_;
};

}  // namespace bastion::core
