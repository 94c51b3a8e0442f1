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
#include <mutex>
#include <condition_variable>
#include <thread>
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

/// Counters shared by every connection of one run; connections may run on several threads.
struct tally {
  std::size_t finished = 0, failed = 0;
  std::uint64_t verified_bytes = 0;
  std::uint64_t events = 0;                // completions seen by clients, a clock for fairness
  std::vector<std::uint64_t> finished_at;  // `events` when each client finished
  std::error_code first_error;
  std::mutex mutex;

  void fail(std::error_code ec) {
    std::lock_guard lock(mutex);
    ++failed;
    if (!first_error) first_error = ec;
    done.notify_all();
  }
  void verified(std::uint64_t n) {
    std::lock_guard lock(mutex);
    verified_bytes += n;
  }
  void event() {
    std::lock_guard lock(mutex);
    ++events;
  }
  void finish() {
    std::lock_guard lock(mutex);
    ++finished;
    finished_at.push_back(events);
    done.notify_all();
  }
  std::size_t ended() {
    std::lock_guard lock(mutex);
    return finished + failed;
  }
  std::size_t failures() {
    std::lock_guard lock(mutex);
    return failed;
  }
  void served() {
    std::lock_guard lock(mutex);
    ++servers_done;
    done.notify_all();
  }
  /// Blocks until `n` clients have ended and `n` servers have stopped serving (threads test).
  bool wait_all(std::size_t n, std::chrono::seconds limit) {
    std::unique_lock lock(mutex);
    return done.wait_for(lock, limit, [&] { return finished + failed >= n && servers_done >= n; });
  }
  std::size_t servers_done = 0;
  std::condition_variable done;
};

template <class Connection>
asio::awaitable<void> serve_messages(Connection& c, tally& t) {
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
      t.verified(length);
      if (auto [se, sn] = co_await c.async_send(asio::buffer(m), use_tuple); se) co_return t.fail(se);
    } else {
      const bytes expected = pattern(length, seed);
      const bool ok = seed + length <= region.size() && std::equal(expected.begin(), expected.end(), region.begin() + seed);
      if (ok) t.verified(length);
      const std::array<std::byte, 1> answer{std::byte(ok)};
      auto [se, sn] = co_await c.async_send(asio::buffer(answer), use_tuple);
      // The client disconnects as soon as it has this answer. As on RDMA hardware, a send
      // whose completion races the peer's disconnect may end unconfirmed (tcp, threads).
      if (se == errc::peer_disconnected) break;
      if (se) co_return t.fail(se);
    }
  }
  (void)c.deregister_buffer(reg);
}

template <class Connection>
asio::awaitable<void> serve(Connection& c, tally& t) {
  co_await serve_messages(c, t);
  t.served();
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
    t.event();
    if (auto [ec, n] = co_await c.async_receive(got, use_tuple); ec || got != m) co_return fail(ec);
    t.event();
    t.verified(m.size() - 12);
  }
  // RDMA: write a random range, read it back, and have the server check its memory.
  const std::uint32_t length = 1 + rng() % (region_size / 2), offset = rng() % (region_size - length);
  const bytes data = pattern(length, offset);
  if (auto [ec, n] = co_await c.async_rdma_write(asio::buffer(data), std::span(&remote, 1), use_tuple, offset); ec) co_return fail(ec);
  bytes back(length);
  if (auto [ec, n] = co_await c.async_rdma_read(asio::buffer(back), std::span(&remote, 1), use_tuple, offset); ec || back != data)
    co_return fail(ec);
  t.verified(length);
  const bytes verify = make_message('V', offset, length);
  if (auto [ec, n] = co_await c.async_send(asio::buffer(verify), use_tuple); ec) co_return fail(ec);
  if (auto [ec, n] = co_await c.async_receive(got, use_tuple); ec || got.size() != 1 || got[0] != std::byte{1}) co_return fail(ec);
  t.event();
  if (auto [ec] = co_await c.async_close(use_tuple); ec) co_return fail(ec);
  t.finish();
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
  if (idle > before)  // measured
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
  REQUIRE(d.run_until([&] { return t.ended() == n; }));
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

using tcp_connection = connection<tcp::queue_pair>;

/// Accepts `n` TCP-transport connections into `out` and hands each to `start` (which begins
/// its passive side). A failed accept counts as a failure and as a server done.
template <class Start>
asio::awaitable<void> accept_tcp(tcp::listener& l, std::size_t n, std::vector<std::unique_ptr<tcp_connection>>& out,
                                 tally& t, Start start) {
  for (std::size_t i = 0; i < n; ++i) {
    auto [ec, qp] = co_await l.accept();
    if (ec) {
      t.served();
      t.fail(ec);
      continue;
    }
    out.push_back(std::make_unique<tcp_connection>(std::move(qp), load_parameters()));
    start(*out.back());
  }
}

/// Connects a TCP-transport client to `port` and negotiates; false (counted in `t`) if either fails.
asio::awaitable<bool> connect_tcp(std::uint16_t port, std::unique_ptr<tcp_connection>& out, tally& t) {
  auto [ec, qp] = co_await tcp::connect(co_await asio::this_coro::executor, "127.0.0.1", port);
  if (ec) {
    t.fail(ec);
    co_return false;
  }
  out = std::make_unique<tcp_connection>(std::move(qp), load_parameters());
  auto [nec] = co_await out->async_connect(use_tuple);
  if (nec) t.fail(nec);
  co_return !nec;
}

asio::awaitable<void> connect_one(std::uint16_t port, std::unique_ptr<tcp_connection>& out, int& negotiated, tally& t) {
  const bool connected = co_await connect_tcp(port, out, t);  // not inside if (): GCC 12 miscompiles that
  if (connected) ++negotiated;
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
  std::vector<std::unique_ptr<tcp_connection>> clients(n), servers;
  int negotiated = 0;
  auto accept = [&negotiated, &t](tcp_connection& c) {
    c.async_accept([&negotiated, &t](std::error_code e) { e ? t.fail(e) : void(++negotiated); });
  };
  asio::co_spawn(io, accept_tcp(*listener, n, servers, t, accept), asio::detached);
  for (std::size_t i = 0; i < n; ++i) asio::co_spawn(io, connect_one(listener->port(), clients[i], negotiated, t), asio::detached);
  while (negotiated + static_cast<int>(t.failures()) < static_cast<int>(2 * n) && io.run_one() > 0) {
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
  while (t.ended() < n && io.run_one() > 0) {
  }
  report("tcp", n, before, idle, t);
  check(t, n);
}

namespace {

template <class Connection>
asio::awaitable<void> accept_and_serve(Connection& c, tally& t) {
  if (auto [ec] = co_await c.async_accept(use_tuple); ec) {
    t.served();
    co_return t.fail(ec);
  }
  co_await serve(c, t);
}

template <class Connection>
asio::awaitable<void> connect_and_drive(Connection& c, unsigned seed, tally& t) {
  if (auto [ec] = co_await c.async_connect(use_tuple); ec) co_return t.fail(ec);
  co_await drive_client(c, seed, t);
}

asio::awaitable<void> connect_tcp_and_drive(std::uint16_t port, std::unique_ptr<tcp_connection>& out, unsigned seed,
                                            tally& t) {
  const bool connected = co_await connect_tcp(port, out, t);
  if (connected) co_await drive_client(*out, seed, t);
}

}  // namespace

// The threading rule (docs/design.md): a connection runs on its transport's executor, so with
// one strand per connection many threads may run one io_context. Run under --config=tsan.
TEST_CASE("threads: 200 loopback and 32 TCP connections on their own strands of one io_context run by 4 threads") {
  constexpr std::size_t loopback_pairs = 200, tcp_pairs = 32;
  asio::io_context io(4);
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&io] { io.run(); });
  tally t;

  std::vector<std::unique_ptr<test::loopback_connection>> loopback_ends;
  for (std::size_t i = 0; i < loopback_pairs; ++i) {
    auto [a, b] = loopback::make_pair(asio::make_strand(io), asio::make_strand(io));
    auto& client = *loopback_ends.emplace_back(std::make_unique<test::loopback_connection>(std::move(a), load_parameters()));
    auto& server = *loopback_ends.emplace_back(std::make_unique<test::loopback_connection>(std::move(b), load_parameters()));
    asio::co_spawn(server.get_executor(), accept_and_serve(server, t), asio::detached);
    asio::co_spawn(client.get_executor(), connect_and_drive(client, static_cast<unsigned>(i), t), asio::detached);
  }

  const auto listener_strand = asio::make_strand(io);
  tcp::options o;
  o.listen_backlog = 64;
  auto [listen_error, listener] =
      asio::co_spawn(listener_strand, tcp::listener::open(listener_strand, "127.0.0.1", 0, o), asio::use_future).get();
  REQUIRE_MESSAGE(!listen_error, listen_error.message());
  std::vector<std::unique_ptr<tcp_connection>> tcp_clients(tcp_pairs), tcp_servers;
  auto serve_on_own_strand = [&t](tcp_connection& c) {
    asio::co_spawn(c.get_executor(), accept_and_serve(c, t), asio::detached);
  };
  asio::co_spawn(listener_strand, accept_tcp(*listener, tcp_pairs, tcp_servers, t, serve_on_own_strand), asio::detached);
  for (std::size_t i = 0; i < tcp_pairs; ++i)
    asio::co_spawn(asio::make_strand(io), connect_tcp_and_drive(listener->port(), tcp_clients[i], static_cast<unsigned>(i), t),
                   asio::detached);

  const bool ended = t.wait_all(loopback_pairs + tcp_pairs, std::chrono::seconds(300));  // a hang guard, not a timing
  io.stop();
  for (auto& th : threads) th.join();
  REQUIRE(ended);
  report("threads", loopback_pairs + tcp_pairs, 0, 0, t);
  CHECK(t.failed == 0);
  CHECK(t.first_error == std::error_code{});
  CHECK(t.finished == loopback_pairs + tcp_pairs);
}
