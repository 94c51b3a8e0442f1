// A wake-up for coroutines on one executor: waiters loop on their condition and call wait();
// notify() wakes them all, hand_off() only the longest waiting one. A wait never misses a
// notify issued before it suspends, because callers check their condition first, on the same
// executor.
//
// Waiters park as receives on an unbuffered Asio channel: notify() cancels them all, and
// hand_off() sends one value, which reaches the first waiter in FIFO order. Unlike a timer that
// never expires, a channel keeps waiters in an intrusive list, so a wait allocates nothing
// beyond its operation_memory: no timer heap that might grow inside Asio's noexcept initiation.
#pragma once

#include <system_error>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/experimental/channel.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "smbdirect/detail/operation_memory.hpp"

namespace smbdirect::detail {

class async_event {
 public:
  explicit async_event(asio::any_io_executor ex) : channel_(std::move(ex)) {}

  /// Suspends until notify() (returns false) or a hand_off() to this waiter (returns true).
  asio::awaitable<bool> wait() {
    std::error_code ec;  // channel_cancelled: notify()
    operation_memory memory;
    ++waiters_;
    struct leave {
      std::size_t& n;
      ~leave() { --n; }
    } on_exit{waiters_};
    (void)co_await channel_.async_receive(memory.bind(asio::redirect_error(asio::use_awaitable, ec)));
    co_return !ec;
  }
  /// Wakes every waiter; costs nothing when there is none (the hot path notifies per completion).
  void notify() {
    if (waiters_ != 0) channel_.cancel();
  }
  /// Wakes the longest waiting coroutine only; false when none is parked. What it is handed
  /// (a lock, say) is the caller's to define.
  bool hand_off() { return waiters_ != 0 && channel_.try_send(std::error_code{}, true); }

 private:
  asio::experimental::channel<void(std::error_code, bool)> channel_;  // (error_code) alone is ambiguous in Asio 1.22
  std::size_t waiters_ = 0;  // coroutines inside wait(), parked or about to park
};

}  // namespace smbdirect::detail
