// Time for the engine. The connection reads "now" and sleeps through an engine_timer, which
// runs either on the real steady clock or on a virtual_clock that tests advance by hand, so
// every timeout is testable in microseconds and nothing sleeps.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <system_error>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/error.hpp>
#include <asio/redirect_error.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "smbdirect/detail/async_event.hpp"
#include "smbdirect/detail/operation_memory.hpp"
#include "smbdirect/error.hpp"

namespace smbdirect {

using time_point = std::chrono::steady_clock::time_point;

/// A manually advanced clock. Not thread-safe: use it from one thread (tests).
class virtual_clock {
 public:
  time_point now() const noexcept { return now_; }

  /// Earliest pending deadline, or time_point::max() when nothing waits.
  time_point next_deadline() const noexcept {
    const waiter* w = earliest();
    return w ? w->due : time_point::max();
  }

  /// Moves time to `t` (never backwards) and wakes every timer due by then.
  void advance_to(time_point t) {
    if (t > now_) now_ = t;
    for (waiter* w = earliest(); w && w->due <= now_; w = earliest()) {
      remove(w);
      w->fire();
    }
  }
  void advance(std::chrono::steady_clock::duration d) { advance_to(now_ + d); }

  /// Jumps to the next deadline; false if no timer is pending.
  bool advance_to_next() {
    if (waiters_.empty()) return false;
    advance_to(next_deadline());
    return true;
  }

  std::size_t pending() const noexcept { return waiters_.size(); }

  /// Timer waits started on this clock so far, over every engine_timer (for fault loops).
  std::uint64_t waits() const noexcept { return waits_; }
  /// Fault injection: the wait with this index (counted from 0 as waits() counts) ends at once
  /// with errc::injected_fault, as a failing system timer would end with its error.
  std::optional<std::uint64_t> fail_wait;

 private:
  friend class engine_timer;
  struct waiter {
    virtual void fire() = 0;
    time_point due{};
  };
  // A handful of timers per connection: a vector scanned for the earliest keeps its storage,
  // so waits allocate nothing once it has grown (a multimap allocates a node per wait).
  void add(time_point t, waiter* w) {
    w->due = t;
    waiters_.push_back(w);
  }
  void remove(waiter* w) noexcept { std::erase(waiters_, w); }
  /// The waiter due first; among equal deadlines the one registered first.
  waiter* earliest() const noexcept {
    waiter* best = nullptr;
    for (waiter* w : waiters_)
      if (!best || w->due < best->due) best = w;
    return best;
  }

  bool next_wait_fails() noexcept { return fail_wait == waits_++; }

  time_point now_{std::chrono::hours(1)};  // not 0, so "now - interval" stays positive
  std::vector<waiter*> waiters_;
  std::uint64_t waits_ = 0;
};

/// One-shot sleeper for the engine. With a virtual_clock it sleeps on that clock.
class engine_timer : private virtual_clock::waiter {
 public:
  engine_timer(asio::any_io_executor ex, virtual_clock* clock)
      : clock_(clock), timer_(ex), wake_(ex) {}
  engine_timer(const engine_timer&) = delete;
  engine_timer& operator=(const engine_timer&) = delete;
  ~engine_timer() { unregister(); }

  time_point now() const noexcept { return clock_ ? clock_->now() : std::chrono::steady_clock::now(); }

  /// Sleeps until `deadline` (time_point::max(): until cancel()). Returns {} when the deadline
  /// was reached, asio::error::operation_aborted when cancel() interrupted it, any other error
  /// when the timer itself failed (errc::injected_fault under virtual_clock::fail_wait).
  asio::awaitable<std::error_code> wait_until(time_point deadline) {
    if (clock_) {
      if (clock_->next_wait_fails()) co_return errc::injected_fault;
      if (deadline <= clock_->now()) co_return std::error_code{};
      fired_ = false;
      if (deadline != time_point::max()) {  // "forever" is not a deadline to jump to
        clock_->add(deadline, this);
        registered_ = true;
      }
      co_await wake_.wait();
      unregister();
      co_return fired_ ? std::error_code{} : make_error_code(asio::error::operation_aborted);
    }
    timer_.expires_at(deadline);
    std::error_code ec;
    detail::operation_memory memory;  // the wait cannot fail to allocate inside Asio's noexcept initiation
    co_await timer_.async_wait(memory.bind(asio::redirect_error(asio::use_awaitable, ec)));
    co_return ec;
  }

  void cancel() { clock_ ? wake_.notify() : void(timer_.cancel()); }

 private:
  void fire() override {
    registered_ = false;
    fired_ = true;
    wake_.notify();
  }
  void unregister() {
    if (registered_) clock_->remove(this);
    registered_ = false;
  }

  virtual_clock* clock_;
  asio::steady_timer timer_;    // real time
  detail::async_event wake_;    // virtual time: fire() and cancel() wake the waiter
  bool registered_ = false;
  bool fired_ = false;
};

}  // namespace smbdirect
