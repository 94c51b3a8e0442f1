// Both ends of one connection in this process, for any transport whose connection manager has
// Listener::open / accept / cancel / port and a connect function (self-tests, demos, benchmarks).
#pragma once

#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>

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

/// Connects; if that fails, cancels the accept waiting for it.
template <class QueuePair, class Listener, class Options, class Connect>
asio::awaitable<std::pair<std::error_code, QueuePair>> connect_or_cancel(Listener& l, std::string address, Options o,
                                                                        Connect connect) {
  auto r = co_await connect(co_await asio::this_coro::executor, address, l.port(), o);
  if (r.first) l.cancel();
  co_return r;
}

/// Listens on `address` and `port`, then accepts and connects at once (RDMA CM needs both
/// sides running together). Errors: as Listener::open, `connect` and Listener::accept.
template <class QueuePair, class Listener, class Options, class Connect>
asio::awaitable<self_connection<QueuePair>> connect_to_self(asio::any_io_executor ex, std::string address,
                                                            std::uint16_t port, Options o, Connect connect) {
  using namespace asio::experimental::awaitable_operators;
  self_connection<QueuePair> out;
  auto [lec, l] = co_await Listener::open(ex, address, port, o);
  if (lec) {
    out.error = lec;
    out.where = "listen";
    co_return out;
  }
  out.port = l->port();
  auto [accepted, connected] =
      co_await (l->accept() && connect_or_cancel<QueuePair>(*l, address, o, connect));
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
