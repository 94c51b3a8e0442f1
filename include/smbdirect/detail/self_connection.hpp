// Both ends of one connection in this process, for any transport whose connection manager has
// Listener::open / accept / cancel / port and a connect function (self-tests, demos, benchmarks).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

namespace smbdirect {

/// Both ends of one connection, in this process.
template <class QueuePair>
struct self_connection {
  std::error_code error;   ///< the first failure, empty on success
  const char* where = "";  ///< the failed step: "listen", "connect" or "accept"
  std::uint16_t port = 0;  ///< the port listened on
  QueuePair client, server;
};

namespace detail {

/// Runs `a` on `ex` and returns its result to the calling coroutine's executor.
template <class T>
asio::awaitable<T> run_on(const asio::any_io_executor& ex, asio::awaitable<T> a) {
  co_return co_await asio::co_spawn(ex, std::move(a), asio::use_awaitable);
}

template <class Listener>
asio::awaitable<void> cancel_accept(Listener& l) {
  l.cancel();
  co_return;
}

template <class Listener>
asio::awaitable<void> close_listener(std::unique_ptr<Listener> l) {
  l.reset();
  co_return;
}

/// Connects; if that fails, cancels (on the listener's executor) the accept waiting for it.
template <class QueuePair, class Listener, class Options, class Connect>
asio::awaitable<std::pair<std::error_code, QueuePair>> connect_or_cancel(Listener& l, asio::any_io_executor server,
                                                                        std::string address, Options o,
                                                                        Connect connect) {
  auto r = co_await connect(co_await asio::this_coro::executor, address, l.port(), o);
  if (r.first) co_await run_on(server, cancel_accept(l));
  co_return r;
}

/// Listens on `address` and `port` on `server` (the executor the accepted end runs on), then
/// accepts and connects at once (RDMA CM needs both sides running together); the connecting
/// end runs on the caller's executor. `server` may be another thread's: the listener is used
/// only there. Errors: as Listener::open, `connect` and Listener::accept.
template <class QueuePair, class Listener, class Options, class Connect>
asio::awaitable<self_connection<QueuePair>> connect_to_self(asio::any_io_executor server, std::string address,
                                                            std::uint16_t port, Options o, Connect connect) {
  using namespace asio::experimental::awaitable_operators;
  self_connection<QueuePair> out;
  auto [lec, l] = co_await run_on(server, Listener::open(server, address, port, o));
  if (lec) {
    out.error = lec;
    out.where = "listen";
    co_return out;
  }
  out.port = l->port();
  auto [accepted, connected] =
      co_await (run_on(server, l->accept()) && connect_or_cancel<QueuePair>(*l, server, address, o, connect));
  co_await run_on(server, close_listener(std::move(l)));
  if (connected.first || accepted.first) {
    out.error = connected.first ? connected.first : accepted.first;
    out.where = connected.first ? "connect" : "accept";
    co_return out;
  }
  out.client = std::move(connected.second);
  out.server = std::move(accepted.second);
  co_return out;
}

}  // namespace detail
}  // namespace smbdirect
