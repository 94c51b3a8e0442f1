// Whole sessions between two engines: every completion token kind, close, and a randomized
// property test (fault loops over whole sessions: fault_loop_test.cpp).
#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <thread>

#include <asio/steady_timer.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/use_awaitable.hpp>

#include "support/connected_pair.hpp"

using namespace smbdirect;
using namespace smbdirect::test;
using namespace std::chrono_literals;
using asio::experimental::as_tuple;
constexpr auto use_tuple = as_tuple(asio::use_awaitable);

TEST_CASE("completion tokens: callback, use_awaitable, deferred") {
  connected_pair p;
  REQUIRE(p.negotiate() == std::pair<std::error_code, std::error_code>{});
  const bytes m = pattern(5000, 1);
  bytes got1, got2, got3;
  int steps = 0;
  // callback
  p.client->async_send(asio::buffer(m), [&](std::error_code ec, std::size_t n) { steps += !ec && n == 5000; });
  p.server->async_receive(got1, [&](std::error_code ec, std::size_t) { steps += !ec; });
  REQUIRE(p.d.run_until([&] { return steps == 2; }));
  // use_awaitable
  asio::co_spawn(p.d.io, [&]() -> asio::awaitable<void> {
    auto [ec, n] = co_await p.client->async_send(asio::buffer(m), use_tuple);
    steps += !ec;
    auto [ec2, n2] = co_await p.server->async_receive(got2, use_tuple);
    steps += !ec2;
  }, asio::detached);
  REQUIRE(p.d.run_until([&] { return steps == 4; }));
  // deferred: nothing starts until the deferred operation is invoked
  auto op = p.server->async_receive(got3, asio::experimental::deferred);
  p.client->async_send(asio::buffer(m), [&](std::error_code, std::size_t) { ++steps; });
  p.d.settle();
  CHECK(got3.empty());
  std::move(op)([&](std::error_code ec, std::size_t) { steps += !ec; });
  REQUIRE(p.d.run_until([&] { return steps == 6; }));
  CHECK(got1 == m);
  CHECK(got2 == m);
  CHECK(got3 == m);
}

TEST_CASE("connect may start before accept: the first send waits for the passive side") {
  connected_pair p;
  std::optional<std::error_code> c, s;
  p.client->async_connect([&](std::error_code ec) { c = ec; });
  p.d.settle();
  p.server->async_accept([&](std::error_code ec) { s = ec; });
  REQUIRE(p.d.run_until([&] { return c.has_value() && s.has_value(); }));
  CHECK(*c == std::error_code{});
  CHECK(*s == std::error_code{});
}

TEST_CASE("close: pending sends finish first, the peer sees peer_disconnected") {
  connected_pair p;
  REQUIRE(p.negotiate() == std::pair<std::error_code, std::error_code>{});
  const bytes m = pattern(200000, 2);
  std::optional<std::error_code> sent, closed, received_after;
  bytes got;
  p.client->async_send(asio::buffer(m), [&](std::error_code ec, std::size_t) { sent = ec; });
  p.client->async_close([&](std::error_code ec) { closed = ec; });
  REQUIRE(p.d.run_until([&] { return closed.has_value(); }));
  CHECK(sent == std::error_code{});
  CHECK(closed == std::error_code{});
  p.server->async_receive(got, [&](std::error_code ec, std::size_t) { CHECK_FALSE(ec); });
  p.d.settle();
  CHECK(got == m);  // delivered before the disconnect is reported
  p.server->async_receive(got, [&](std::error_code ec, std::size_t) { received_after = ec; });
  REQUIRE(p.d.run_until([&] { return received_after.has_value(); }));
  CHECK(received_after == errc::peer_disconnected);
  CHECK(p.client->error() == errc::connection_closed);
}

TEST_CASE("property: random sizes and credit settings, both directions at once, every byte verified") {
  std::mt19937 rng(20261121);
  for (int round = 0; round < 12; ++round) {
    CAPTURE(round);
    parameters cp, sp;
    cp.send_credit_target = static_cast<std::uint16_t>(1 + rng() % 20);
    cp.receive_credit_max = static_cast<std::uint16_t>(1 + rng() % 20);
    sp.send_credit_target = static_cast<std::uint16_t>(1 + rng() % 20);
    sp.receive_credit_max = static_cast<std::uint16_t>(1 + rng() % 20);
    cp.max_send_size = 128 + rng() % 1500;
    sp.max_receive_size = 128 + rng() % 1500;
    sp.max_send_size = 128 + rng() % 1500;
    cp.max_receive_size = std::max<std::uint32_t>(128 + rng() % 1500, sp.max_send_size);
    connected_pair p(cp, sp);
    REQUIRE(p.negotiate() == std::pair<std::error_code, std::error_code>{});
    constexpr int count = 40;
    std::vector<bytes> to_server, to_client;
    for (int i = 0; i < count; ++i) {
      const auto size = [&] { return 1 + (rng() % 4 == 0 ? rng() % 131072 : rng() % 3000); };
      to_server.push_back(pattern(size(), rng()));
      to_client.push_back(pattern(size(), rng()));
    }
    int verified = 0, sent = 0;
    auto sender = [&](loopback_connection& c, std::vector<bytes>& msgs) -> asio::awaitable<void> {
      for (auto& m : msgs) {
        auto [ec, n] = co_await c.async_send(asio::buffer(m), use_tuple);
        REQUIRE_FALSE(ec);
        ++sent;
      }
    };
    auto receiver = [&](loopback_connection& c, std::vector<bytes>& msgs) -> asio::awaitable<void> {
      bytes got;
      for (auto& m : msgs) {
        auto [ec, n] = co_await c.async_receive(got, use_tuple);
        REQUIRE_FALSE(ec);
        verified += got == m;
      }
    };
    asio::co_spawn(p.d.io, sender(*p.client, to_server), asio::detached);
    asio::co_spawn(p.d.io, sender(*p.server, to_client), asio::detached);
    asio::co_spawn(p.d.io, receiver(*p.server, to_server), asio::detached);
    asio::co_spawn(p.d.io, receiver(*p.client, to_client), asio::detached);
    REQUIRE(p.d.run_until([&] { return verified == 2 * count; }, std::chrono::seconds(60)));
    CHECK(sent == 2 * count);
    CHECK_FALSE(p.client->error());
    CHECK_FALSE(p.server->error());
  }
}

TEST_CASE("threads: each end on its own io_context thread, real clock, messages both ways") {
  asio::io_context client_io, server_io;
  auto [a, b] = loopback::make_pair(client_io.get_executor(), server_io.get_executor());
  loopback_connection client(std::move(a)), server(std::move(b));
  constexpr int count = 200;
  std::atomic<int> verified = 0;
  auto run = [&](loopback_connection& c, bool active, unsigned out_seed, unsigned in_seed) -> asio::awaitable<void> {
    std::error_code nec;  // (GCC 12 miscompiles co_await on a ?: of two awaitables)
    if (active) {
      std::tie(nec) = co_await c.async_connect(use_tuple);
    } else {
      std::tie(nec) = co_await c.async_accept(use_tuple);
    }
    CHECK_FALSE(nec);
    auto ex = co_await asio::this_coro::executor;
    int sent = 0;
    asio::co_spawn(ex, [&c, &sent, out_seed]() -> asio::awaitable<void> {
      for (int i = 0; i < count; ++i) {
        const bytes m = pattern(1 + static_cast<std::size_t>(i) * 97 % 5000, out_seed + i);
        auto [ec, n] = co_await c.async_send(asio::buffer(m), use_tuple);
        if (!ec) ++sent;
      }
    }, asio::detached);
    bytes got;
    for (int i = 0; i < count; ++i) {
      auto [ec, n] = co_await c.async_receive(got, use_tuple);
      if (ec) break;
      verified += got == pattern(1 + static_cast<std::size_t>(i) * 97 % 5000, in_seed + i);
    }
    asio::steady_timer t(ex);
    while (sent < count) {  // let our own sends finish before closing
      t.expires_after(std::chrono::milliseconds(1));
      co_await t.async_wait(use_tuple);
    }
    if (active) {
      // The server closes first once it has everything; wait for its disconnect to arrive.
      auto [ec, n] = co_await c.async_receive(got, use_tuple);
      CHECK(ec == errc::peer_disconnected);
    } else {
      co_await c.async_close(use_tuple);
    }
  };
  asio::co_spawn(client_io, run(client, true, 1000, 5000), asio::detached);
  asio::co_spawn(server_io, run(server, false, 5000, 1000), asio::detached);
  std::thread server_thread([&] { server_io.run(); });
  client_io.run();
  server_thread.join();
  CHECK(verified == 2 * count);
}
