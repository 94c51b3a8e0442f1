// A broadcast wake-up for coroutines on one executor: waiters loop on their condition and
// call wait(); notify() wakes them all. A timer that never expires does the waiting, so no
// extra machinery is needed and a wait never misses a notify issued before it suspends
// (callers check their condition first, on the same executor).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/redirect_error.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace smbdirect::detail {

class async_event {
 public:
  explicit async_event(asio::any_io_executor ex) : timer_(std::move(ex), asio::steady_timer::time_point::max()) {}

  asio::awaitable<void> wait() {
    std::error_code ec;  // operation_aborted is the normal wake-up
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  void notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

}  // namespace smbdirect::detail
