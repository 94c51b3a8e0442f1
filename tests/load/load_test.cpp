// Load: 1,000 concurrent connections over loopback and 256 over the TCP transport (127.0.0.1),
// all on one io_context thread. Each client exchanges echo messages of random sizes with its
// server, then RDMA-writes a random range of the server's registered region, reads it back and
// has the server check its memory. Every byte is verified; every connection must finish (none
// starves the others). Prints memory per idle connection and how finishing times spread.
// Memory is what operator new holds (support/allocation_hook.hpp), Asio's included.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <smbdirect/smbdirect.hpp>
#include <smbdirect/tcp.hpp>

#include "support/allocation_hook.hpp"
#include "support/harness.hpp"

using namespace smbdirect;
using smbdirect::test::bytes;
using smbdirect::test::pattern;
namespace allocations = smbdirect::test::allocations;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

namespace {

constexpr std::size_t region_size = 65536;
constexpr int echo_rounds = 3;
constexpr std::uint32_t max_message = 32768;

// Client -> server messages: a 12-byte head {type, pad[3], seed, length} then, for 'E', the
// body pattern(length, seed). 'E': echo it back. 'V': check region[seed, seed + length) holds
// pattern(length, seed) and answer one byte, 1 if it does.
bytes make_message(char type, std::uint32_t seed, std::uint32_t length) {
  bytes m(12);
  m[0] = std::byte(type);
  std::memcpy(m.data() + 4, &seed, 4);
  std::memcpy(m.data() + 8, &length, 4);
  if (type == 'E') {
    const bytes body = pattern(length, seed);
    m.insert(m.end(), body.begin(), body.end());
  }
  return m;
}

/// Counters shared by every connection of one run (one thread).
struct tally {
  std::size_t finished = 0, failed = 0;
  std::uint64_t verified_bytes = 0;
  std::uint64_t events = 0;                // completions seen by clients, a clock for fairness
  std::vector<std::uint64_t> finished_at;  // `events` when each client finished
  std::error_code first_error;
  void fail(std::error_code ec) {
    ++failed;
    if (!first_error) first_error = ec;
  }
};

template <class Connection>
asio::awaitable<void> serve(Connection& c, tally& t) {
  bytes region(region_size);
  auto [re, reg] = c.register_buffer(asio::buffer(region), access::remote_read_write);
  if (re) co_return t.fail(re);
  bytes descriptor(wire::buffer_descriptor_v1::size), m;
  (void)wire::encode(reg.descriptor, descriptor);
  if (auto [ec, n] = co_await c.async_send(asio::buffer(descriptor), use_tuple); ec) co_return t.fail(ec);
  for (;;) {
    auto [ec, n] = co_await c.async_receive(m, use_tuple);
    if (ec == errc::peer_disconnected) break;  // the client is done
    if (ec) co_return t.fail(ec);
    std::uint32_t seed = 0, length = 0;
    if (m.size() < 12) co_return t.fail(errc::internal_error);
    std::memcpy(&seed, m.data() + 4, 4);
    std::memcpy(&length, m.data() + 8, 4);
    if (m[0] == std::byte('E')) {
      const bytes body = pattern(length, seed);
      if (m.size() != 12 + length || !std::equal(body.begin(), body.end(), m.begin() + 12)) co_return t.fail(errc::internal_error);
      t.verified_bytes += length;
      if (auto [se, sn] = co_await c.async_send(asio::buffer(m), use_tuple); se) co_return t.fail(se);
    } else {
      const bytes expected = pattern(length, seed);
      const bool ok = seed + length <= region.size() && std::equal(expected.begin(), expected.end(), region.begin() + seed);
      if (ok) t.verified_bytes += length;
      const std::array<std::byte, 1> answer{std::byte(ok)};
      if (auto [se, sn] = co_await c.async_send(asio::buffer(answer), use_tuple); se) co_return t.fail(se);
    }
  }
  (void)c.deregister_buffer(reg);
}

template <class Connection>
asio::awaitable<void> drive_client(Connection& c, unsigned seed, tally& t) {
  std::mt19937 rng(seed);
  bytes got;
  auto fail = [&](std::error_code ec) { t.fail(ec ? ec : make_error_code(errc::internal_error)); };
  if (auto [ec, n] = co_await c.async_receive(got, use_tuple); ec || got.size() != wire::buffer_descriptor_v1::size) co_return fail(ec);
  wire::buffer_descriptor_v1 remote;
  (void)wire::decode(got, remote);
  for (int round = 0; round < echo_rounds; ++round) {
    const bytes m = make_message('E', rng(), 1 + rng() % max_message);
    if (auto [ec, n] = co_await c.async_send(asio::buffer(m), use_tuple); ec) co_return fail(ec);
    ++t.events;
    if (auto [ec, n] = co_await c.async_receive(got, use_tuple); ec || got != m) co_return fail(ec);
    ++t.events;
    t.verified_bytes += m.size() - 12;
  }
  // RDMA: write a random range, read it back, and have the server check its memory.
  const std::uint32_t length = 1 + rng() % (region_size / 2), offset = rng() % (region_size - length);
  const bytes data = pattern(length, offset);
  if (auto [ec, n] = co_await c.async_rdma_write(asio::buffer(data), std::span(&remote, 1), use_tuple, offset); ec) co_return fail(ec);
  bytes back(length);
  if (auto [ec, n] = co_await c.async_rdma_read(asio::buffer(back), std::span(&remote, 1), use_tuple, offset); ec || back != data)
    co_return fail(ec);
  t.verified_bytes += length;
  const bytes verify = make_message('V', offset, length);
  if (auto [ec, n] = co_await c.async_send(asio::buffer(verify), use_tuple); ec) co_return fail(ec);
  if (auto [ec, n] = co_await c.async_receive(got, use_tuple); ec || got.size() != 1 || got[0] != std::byte{1}) co_return fail(ec);
  ++t.events;
  if (auto [ec] = co_await c.async_close(use_tuple); ec) co_return fail(ec);
  ++t.finished;
  t.finished_at.push_back(t.events);
}

parameters load_parameters() {
  parameters p;  // 32 receives of 1364 bytes per end instead of 255: 1,000 pairs in ~90 MB
  p.receive_credit_max = 32;
  p.send_credit_target = 32;
  return p;
}

void report(const char* what, std::size_t connections, std::int64_t before, std::int64_t idle, const tally& t) {
  std::vector<std::uint64_t> at = t.finished_at;
  std::sort(at.begin(), at.end());
  const double per_end = static_cast<double>(idle - before) / static_cast<double>(2 * connections);
  std::printf("%s: %zu connections, %zu finished, %llu bytes verified\n", what, connections, t.finished,
              static_cast<unsigned long long>(t.verified_bytes));
  std::printf("  memory per idle connection: %.0f bytes per end (client and server each; %.1f KiB)\n", per_end, per_end / 1024);
  if (!at.empty())
    std::printf("  finishing time in client events: first %llu, median %llu, last %llu of %llu\n",
                static_cast<unsigned long long>(at.front()), static_cast<unsigned long long>(at[at.size() / 2]),
                static_cast<unsigned long long>(at.back()), static_cast<unsigned long long>(t.events));
}

/// Every connection finished with every byte verified, and none was held back until the
/// others were done: the first client finished after at least half of all the work.
void check(const tally& t, std::size_t connections) {
  CHECK(t.failed == 0);
  CHECK(t.first_error == std::error_code{});
  REQUIRE(t.finished == connections);
  CHECK(*std::min_element(t.finished_at.begin(), t.finished_at.end()) > t.events / 2);
}

}  // namespace

TEST_CASE("load: 1,000 loopback connections at once, random messages and RDMA, every byte verified") {
  constexpr std::size_t n = 1000;
  test::driver d;
  tally t;
  const std::int64_t before = allocations::bytes_in_use();
  std::vector<std::unique_ptr<test::loopback_connection>> clients, servers;
  int negotiated = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    clients.push_back(std::make_unique<test::loopback_connection>(std::move(a), load_parameters(), &d.clock));
    servers.push_back(std::make_unique<test::loopback_connection>(std::move(b), load_parameters(), &d.clock));
    clients.back()->async_connect([&](std::error_code ec) { negotiated += !ec; });
    servers.back()->async_accept([&](std::error_code ec) { negotiated += !ec; });
  }
  REQUIRE(d.run_until([&] { return negotiated == static_cast<int>(2 * n); }));
  const std::int64_t idle = allocations::bytes_in_use();
  for (std::size_t i = 0; i < n; ++i) {
    asio::co_spawn(d.io, serve(*servers[i], t), asio::detached);
    asio::co_spawn(d.io, drive_client(*clients[i], static_cast<unsigned>(i), t), asio::detached);
  }
  REQUIRE(d.run_until([&] { return t.finished + t.failed == n; }));
  report("loopback", n, before, idle, t);
  check(t, n);
}

TEST_CASE("load: memory per idle connection with the default parameters (255 receive credits)") {
  constexpr std::size_t n = 100;
  test::driver d;
  const std::int64_t before = allocations::bytes_in_use();
  std::vector<std::unique_ptr<test::loopback_connection>> ends;
  int negotiated = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    ends.push_back(std::make_unique<test::loopback_connection>(std::move(a), parameters{}, &d.clock));
    ends.back()->async_connect([&](std::error_code ec) { negotiated += !ec; });
    ends.push_back(std::make_unique<test::loopback_connection>(std::move(b), parameters{}, &d.clock));
    ends.back()->async_accept([&](std::error_code ec) { negotiated += !ec; });
  }
  REQUIRE(d.run_until([&] { return negotiated == static_cast<int>(2 * n); }));
  const double per_end = static_cast<double>(allocations::bytes_in_use() - before) / (2 * n);
  std::printf("defaults: memory per idle connection: %.0f bytes per end (%.1f KiB; receive buffers 255 x 1364 = %u)\n",
              per_end, per_end / 1024, 255u * 1364u);
  // The receive buffers dominate; anything far above them is a leak or a per-connection waste.
  CHECK(per_end >= 255.0 * 1364);
  CHECK(per_end < 255.0 * 1364 + 65536);
}

namespace {

asio::awaitable<void> accept_all(tcp::listener& l, std::size_t n, std::vector<std::unique_ptr<connection<tcp::queue_pair>>>& out,
                                 int& negotiated, tally& t) {
  for (std::size_t i = 0; i < n; ++i) {
    auto [ec, qp] = co_await l.accept();
    if (ec) co_return t.fail(ec);
    out.push_back(std::make_unique<connection<tcp::queue_pair>>(std::move(qp), load_parameters()));
    out.back()->async_accept([&negotiated, &t](std::error_code e) { e ? t.fail(e) : void(++negotiated); });
  }
}

asio::awaitable<void> connect_one(std::uint16_t port, std::unique_ptr<connection<tcp::queue_pair>>& out, int& negotiated, tally& t) {
  auto [ec, qp] = co_await tcp::connect(co_await asio::this_coro::executor, "127.0.0.1", port);
  if (ec) co_return t.fail(ec);
  out = std::make_unique<connection<tcp::queue_pair>>(std::move(qp), load_parameters());
  auto [nec] = co_await out->async_connect(use_tuple);
  nec ? t.fail(nec) : void(++negotiated);
}

asio::awaitable<void> open_listener(std::unique_ptr<tcp::listener>& out, std::error_code& error) {
  tcp::options o;
  o.listen_backlog = 512;
  auto [ec, l] = co_await tcp::listener::open(co_await asio::this_coro::executor, "127.0.0.1", 0, o);
  error = ec;
  out = std::move(l);
}

}  // namespace

TEST_CASE("load: 256 TCP-transport connections at once over 127.0.0.1, random messages and RDMA, every byte verified") {
  constexpr std::size_t n = 256;
  asio::io_context io;
  tally t;
  const std::int64_t before = allocations::bytes_in_use();
  std::unique_ptr<tcp::listener> listener;
  std::error_code listen_error;
  asio::co_spawn(io, open_listener(listener, listen_error), asio::detached);
  while (!listener && !listen_error && io.run_one() > 0) {
  }
  REQUIRE_MESSAGE(!listen_error, listen_error.message());
  std::vector<std::unique_ptr<connection<tcp::queue_pair>>> clients(n), servers;
  int negotiated = 0;
  asio::co_spawn(io, accept_all(*listener, n, servers, negotiated, t), asio::detached);
  for (std::size_t i = 0; i < n; ++i) asio::co_spawn(io, connect_one(listener->port(), clients[i], negotiated, t), asio::detached);
  while (negotiated + static_cast<int>(t.failed) < static_cast<int>(2 * n) && io.run_one() > 0) {
  }
  REQUIRE_MESSAGE(t.failed == 0, t.first_error.message());
  REQUIRE(negotiated == static_cast<int>(2 * n));
  while (io.poll() > 0) {  // let the grants that follow negotiation settle before measuring
  }
  const std::int64_t idle = allocations::bytes_in_use();
  for (std::size_t i = 0; i < n; ++i) {
    asio::co_spawn(io, serve(*servers[i], t), asio::detached);
    asio::co_spawn(io, drive_client(*clients[i], static_cast<unsigned>(i), t), asio::detached);
  }
  while (t.finished + t.failed < n && io.run_one() > 0) {
  }
  report("tcp", n, before, idle, t);
  check(t, n);
}
