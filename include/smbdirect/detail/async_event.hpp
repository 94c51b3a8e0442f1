// A broadcast wake-up for coroutines on one executor: waiters loop on their condition and
// call wait(); notify() wakes them all. A wait never misses a notify issued before it suspends,
// because callers check their condition first, on the same executor.
//
// Waiters park as receives on an Asio channel that nothing ever sends to; notify() cancels
// them all. Unlike a timer that never expires, a channel keeps waiters in an intrusive list,
// so a wait allocates nothing beyond its operation_memory: no timer heap that might grow
// inside Asio's noexcept initiation.
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

  asio::awaitable<void> wait() {
    std::error_code ec;  // channel_cancelled is the normal wake-up
    operation_memory memory;
    ++waiters_;
    struct leave {
      std::size_t& n;
      ~leave() { --n; }
    } on_exit{waiters_};
    (void)co_await channel_.async_receive(memory.bind(asio::redirect_error(asio::use_awaitable, ec)));
  }
  /// Wakes every waiter; costs nothing when there is none (the hot path notifies per completion).
  void notify() {
    if (waiters_ != 0) channel_.cancel();
  }

 private:
  asio::experimental::channel<void(std::error_code, bool)> channel_;  // (error_code) alone is ambiguous in Asio 1.22
  std::size_t waiters_ = 0;  // coroutines inside wait(), parked or about to park
};

}  // namespace smbdirect::detail
