// The conformance suite over real verbs (rdma_rxe / siw in tools/vm, or a real NIC): both
// ends in this process, connected through RDMA CM on $RDMA_ADDR. Real time here, so each
// wait has a deadline instead of a virtual clock.
//
// Environment: RDMA_ADDR (required: an address of an RDMA device), RDMA_ADDR6 (optional
// IPv6 address), RDMA_DEVICE (optional: the device that address must resolve to).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>
#include <doctest/doctest.h>

#include <smbdirect/smbdirect.hpp>
#include <smbdirect/verbs.hpp>

namespace {

using namespace smbdirect;
using namespace std::chrono_literals;
using conn = connection<verbs::queue_pair>;
using bytes = std::vector<std::byte>;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// SMBDIRECT_TEST_MEMORY_WINDOWS=0 runs the suite with plain memory regions on a device that
// supports windows too.
verbs::options transport_options(const parameters& p, bool busy_poll = false) {
  auto o = verbs::options::for_parameters(p);
  o.memory_windows = env("SMBDIRECT_TEST_MEMORY_WINDOWS") != "0";
  o.busy_poll = busy_poll;
  return o;
}

std::string test_address() {
  const std::string a = env("RDMA_ADDR");
  REQUIRE_MESSAGE(!a.empty(), "set RDMA_ADDR to an address of an RDMA device (tools/vm/run.sh does)");
  return a;
}

bytes pattern(std::size_t n, unsigned seed) {
  bytes b(n);
  std::minstd_rand r(seed + 1);
  for (auto& x : b) x = static_cast<std::byte>(r());
  return b;
}

// Distinct ports per connection: an iWARP listener's TCP port may linger in TIME_WAIT.
std::uint16_t next_port() {
  static std::uint16_t port = static_cast<std::uint16_t>(20000 + std::random_device{}() % 20000);
  return ++port;
}

/// A client and a server connection on one io_context, set up over RDMA CM.
struct verbs_pair {
  asio::io_context io;
  std::unique_ptr<verbs::listener> listener;
  std::optional<conn> client, server;
  std::uint16_t port = 0;
  bool busy_poll = false;  // both ends poll their completion queue instead of sleeping

  bool run_until(const std::function<bool()>& done, std::chrono::seconds limit = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      if (io.stopped()) io.restart();  // it stops whenever it runs out of work
      io.run_one_for(50ms);
    }
    return done();
  }

  std::error_code listen(const std::string& address, verbs::options o = {}) {
    port = next_port();
    std::optional<std::error_code> result;
    asio::co_spawn(io, verbs::listener::open(io.get_executor(), address, port, o),
                   [&](std::exception_ptr, std::pair<std::error_code, std::unique_ptr<verbs::listener>> r) {
                     result = r.first;
                     listener = std::move(r.second);
                   });
    REQUIRE(run_until([&] { return result.has_value(); }));
    return *result;
  }

  /// Connects and negotiates both ends; returns {client error, server error}.
  std::pair<std::error_code, std::error_code> connect(const std::string& address, parameters cp = {},
                                                      parameters sp = {}) {
    if (!listener) REQUIRE_FALSE(listen(address, transport_options(sp, busy_poll)));
    std::optional<std::error_code> c, s;
    asio::co_spawn(io, listener->accept(), [&](std::exception_ptr, std::pair<std::error_code, verbs::queue_pair> r) {
      if (r.first) return void(s = r.first);
      server.emplace(std::move(r.second), sp);
      server->async_accept([&](std::error_code ec) { s = ec; });
    });
    asio::co_spawn(io, verbs::connect(io.get_executor(), address, port, transport_options(cp, busy_poll)),
                   [&](std::exception_ptr, std::pair<std::error_code, verbs::queue_pair> r) {
                     if (r.first) return void(c = r.first);
                     client.emplace(std::move(r.second), cp);
                     client->async_connect([&](std::error_code ec) { c = ec; });
                   });
    REQUIRE(run_until([&] { return c.has_value() && (s.has_value() || *c); }));
    if (*c) listener->cancel();
    run_until([&] { return s.has_value(); }, 5s);
    return {*c, s.value_or(errc::internal_error)};
  }

  void connect_ok(const std::string& address, parameters cp = {}, parameters sp = {}) {
    auto [c, s] = connect(address, cp, sp);
    REQUIRE_MESSAGE(!c, "client: " << c.message());
    REQUIRE_MESSAGE(!s, "server: " << s.message());
  }

  /// Sends `msg` from `from` and receives it at `to`; returns the received bytes.
  bytes exchange(conn& from, conn& to, const bytes& msg) {
    std::optional<std::error_code> sent, received;
    bytes got;
    to.async_receive(got, [&](std::error_code ec, std::size_t) { received = ec; });
    from.async_send(asio::buffer(msg), [&](std::error_code ec, std::size_t) { sent = ec; });
    REQUIRE(run_until([&] { return sent.has_value() && received.has_value(); }));
    REQUIRE_MESSAGE(!*sent, sent->message());
    REQUIRE_MESSAGE(!*received, received->message());
    return got;
  }
};

}  // namespace

TEST_CASE("an RDMA device is present and reports its capabilities") {
  const auto devices = verbs::list_devices();
  REQUIRE_MESSAGE(!devices.empty(), "no RDMA device: load rdma_rxe or siw and add a link (tools/vm/run.sh does)");
  for (const auto& d : devices) MESSAGE(verbs::to_string(d));
  if (const auto want = env("RDMA_DEVICE"); !want.empty()) {
    CHECK(std::any_of(devices.begin(), devices.end(), [&](const auto& d) { return d.name == want; }));
  }
  for (const auto& d : devices) {
    CHECK(d.max_qp_wr >= 256);
    CHECK(d.active_mtu >= 256);
    CHECK(d.max_sge >= 1);
  }
}

TEST_CASE("negotiation over RDMA CM settles both sides' parameters") {
  verbs_pair p;
  parameters cp, sp;
  cp.max_send_size = 1024;
  sp.max_receive_size = 2048;
  sp.receive_credit_max = 100;
  p.connect_ok(test_address(), cp, sp);
  const auto& qp = p.client->next_layer();
  if (const auto want = env("RDMA_DEVICE"); !want.empty()) CHECK(qp.device().name == want);
  CHECK(p.client->negotiated().max_send_size == 1024);
  CHECK(p.server->negotiated().max_receive_size == 1024);  // min(ours, the client's PreferredSendSize), 3.1.5.6
  CHECK(p.client->negotiated().initial_send_credits <= 100);
  CHECK(p.client->negotiated().initial_send_credits > 0);
  CHECK(qp.initiator_depth() >= 1);
  MESSAGE("device " << qp.device().name << ", ORD " << qp.initiator_depth() << ", memory windows "
                    << std::string(qp.uses_memory_windows() ? "yes" : "no"));
}

TEST_CASE("messages of every fragment shape travel both ways intact") {
  verbs_pair p;
  p.connect_ok(test_address());
  unsigned seed = 0;
  for (std::size_t size : {std::size_t{1}, std::size_t{1340}, std::size_t{1341}, std::size_t{5000},
                           std::size_t{65536}, std::size_t{1024 * 1024}}) {
    CAPTURE(size);
    const bytes a = pattern(size, ++seed);
    CHECK(p.exchange(*p.client, *p.server, a) == a);
    const bytes b = pattern(size, ++seed);
    CHECK(p.exchange(*p.server, *p.client, b) == b);
  }
  // Many at once, more than the credits: sends queue behind credit grants, nothing is lost.
  constexpr int count = 600;
  std::vector<bytes> sent;
  for (int i = 0; i < count; ++i) sent.push_back(pattern(1 + (i * 977) % 4000, 1000 + i));
  int sends_done = 0;
  for (const auto& m : sent) p.client->async_send(asio::buffer(m), [&](std::error_code ec, std::size_t) {
    CHECK_FALSE(ec);
    ++sends_done;
  });
  for (int i = 0; i < count; ++i) {
    std::optional<std::error_code> r;
    bytes got;
    p.server->async_receive(got, [&](std::error_code ec, std::size_t) { r = ec; });
    REQUIRE(p.run_until([&] { return r.has_value(); }));
    REQUIRE_FALSE(*r);
    REQUIRE(got == sent[static_cast<std::size_t>(i)]);
  }
  REQUIRE(p.run_until([&] { return sends_done == count; }));
}

TEST_CASE("RDMA write and read across two descriptors, with an offset") {
  verbs_pair p;
  p.connect_ok(test_address());
  bytes region_a(300000), region_b(500000);
  auto [ea, ra] = p.server->register_buffer(asio::buffer(region_a), access::remote_read_write);
  auto [eb, rb] = p.server->register_buffer(asio::buffer(region_b), access::remote_read_write);
  REQUIRE_FALSE(ea);
  REQUIRE_FALSE(eb);
  const std::vector<wire::buffer_descriptor_v1> remote{ra.descriptor, rb.descriptor};
  const std::size_t offset = 1000, length = 700000;
  const bytes data = pattern(length, 7);
  std::optional<std::error_code> w;
  p.client->async_rdma_write(asio::buffer(data), remote, [&](std::error_code ec, std::size_t) { w = ec; }, offset);
  REQUIRE(p.run_until([&] { return w.has_value(); }));
  REQUIRE_MESSAGE(!*w, w->message());
  CHECK(std::equal(data.begin(), data.begin() + 299000, region_a.begin() + offset));
  CHECK(std::equal(data.begin() + 299000, data.end(), region_b.begin()));

  bytes back(length);
  std::optional<std::error_code> r;
  p.client->async_rdma_read(asio::buffer(back), remote, [&](std::error_code ec, std::size_t) { r = ec; }, offset);
  REQUIRE(p.run_until([&] { return r.has_value(); }));
  REQUIRE_MESSAGE(!*r, r->message());
  CHECK(back == data);
  CHECK(p.client->stats().rdma_bytes_written == length);
  CHECK(p.client->stats().rdma_bytes_read == length);
}

TEST_CASE("many RDMA reads at once stay within ORD and all complete") {
  verbs_pair p;
  p.connect_ok(test_address());
  bytes region = pattern(1 << 20, 3);
  auto [e, reg] = p.server->register_buffer(asio::buffer(region), access::remote_read);
  REQUIRE_FALSE(e);
  constexpr int reads = 64;
  std::vector<bytes> sinks(reads, bytes(16384));
  int done = 0;
  const std::vector<wire::buffer_descriptor_v1> remote{reg.descriptor};
  for (int i = 0; i < reads; ++i)
    p.client->async_rdma_read(asio::buffer(sinks[static_cast<std::size_t>(i)]), remote,
                              [&](std::error_code ec, std::size_t) { CHECK_FALSE(ec); ++done; },
                              static_cast<std::uint64_t>(i) * 16384);
  REQUIRE(p.run_until([&] { return done == reads; }));
  for (int i = 0; i < reads; ++i)
    CHECK(std::equal(sinks[static_cast<std::size_t>(i)].begin(), sinks[static_cast<std::size_t>(i)].end(),
                     region.begin() + i * 16384));
}

TEST_CASE("a bad token, a deregistered region and a missing right fail with remote_access_error") {
  bytes region(65536), data = pattern(4096, 9);
  for (int c = 0; c < 3; ++c) {
    CAPTURE(c);
    verbs_pair p;
    p.connect_ok(test_address());
    auto [e, reg] = p.server->register_buffer(asio::buffer(region), c == 2 ? access::remote_read : access::remote_read_write);
    REQUIRE_FALSE(e);
    auto d = reg.descriptor;
    if (c == 0) d.token ^= 0x5a5a5a00u;
    if (c == 1) REQUIRE_FALSE(p.server->deregister_buffer(reg));
    std::optional<std::error_code> w;
    p.client->async_rdma_write(asio::buffer(data), std::span(&d, 1), [&](std::error_code ec, std::size_t) { w = ec; });
    REQUIRE(p.run_until([&] { return w.has_value(); }));
    if (p.client->next_layer().device().iwarp) {
      // iWARP completes an RDMA Write once it is on the wire; the target's Terminate then
      // ends the connection.
      CHECK((!*w || *w == errc::remote_access_error));
      REQUIRE(p.run_until([&] { return !p.client->is_connected(); }));
      CHECK(p.client->error() == condition::transport_failure);
    } else {
      CHECK(*w == errc::remote_access_error);
      CHECK_FALSE(p.client->is_connected());
    }
    // The server learns the connection is gone.
    std::optional<std::error_code> r;
    bytes got;
    p.server->async_receive(got, [&](std::error_code ec, std::size_t) { r = ec; });
    REQUIRE(p.run_until([&] { return r.has_value(); }));
    CHECK(*r == condition::transport_failure);
  }
}

TEST_CASE("close: the peer sees peer_disconnected and the listener keeps accepting") {
  verbs_pair p;
  p.connect_ok(test_address());
  std::optional<std::error_code> r, closed;
  bytes got;
  p.server->async_receive(got, [&](std::error_code ec, std::size_t) { r = ec; });
  p.client->async_close([&](std::error_code ec) { closed = ec; });
  REQUIRE(p.run_until([&] { return r.has_value() && closed.has_value(); }));
  CHECK_FALSE(*closed);
  CHECK(*r == errc::peer_disconnected);

  // Same listener, a second connection.
  p.client.reset();
  p.server.reset();
  p.connect_ok(test_address());
  const bytes m = pattern(3000, 11);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
}

TEST_CASE("connecting where nothing listens is rejected") {
  verbs_pair p;
  std::optional<std::error_code> c;
  asio::co_spawn(p.io, verbs::connect(p.io.get_executor(), test_address(), next_port()),
                 [&](std::exception_ptr, std::pair<std::error_code, verbs::queue_pair> r) { c = r.first; });
  REQUIRE(p.run_until([&] { return c.has_value(); }, 30s));
  CAPTURE(c->message());
  CHECK((*c == verbs::cm_errc::connection_rejected || *c == verbs::cm_errc::peer_unreachable));
  CHECK(*c == condition::transport_failure);
}

TEST_CASE("a wrong device name is refused before connecting") {
  verbs_pair p;
  REQUIRE_FALSE(p.listen(test_address()));
  verbs::options o;
  o.device = "no-such-device";
  std::optional<std::error_code> c;
  asio::co_spawn(p.io, verbs::connect(p.io.get_executor(), test_address(), p.port, o),
                 [&](std::exception_ptr, std::pair<std::error_code, verbs::queue_pair> r) { c = r.first; });
  REQUIRE(p.run_until([&] { return c.has_value(); }));
  CHECK(*c == verbs::cm_errc::no_matching_device);
}

TEST_CASE("registrations revoke their tokens; memory windows give each registration its own") {
  verbs_pair p;
  p.connect_ok(test_address());
  bytes region(8192);
  auto [e1, r1] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(e1);
  REQUIRE_FALSE(p.server->deregister_buffer(r1));
  CHECK(p.server->deregister_buffer(r1) == errc::invalid_token);
  auto [e2, r2] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(e2);
  if (p.server->next_layer().uses_memory_windows()) CHECK(r2.descriptor.token != r1.descriptor.token);
  const bytes data = pattern(8192, 5);
  std::optional<std::error_code> w;
  p.client->async_rdma_write(asio::buffer(data), std::span(&r2.descriptor, 1), [&](std::error_code ec, std::size_t) { w = ec; });
  REQUIRE(p.run_until([&] { return w.has_value(); }));
  REQUIRE_MESSAGE(!*w, w->message());
  CHECK(region == data);
}

TEST_CASE("IPv6") {
  const std::string a6 = env("RDMA_ADDR6");
  if (a6.empty()) {
    MESSAGE("RDMA_ADDR6 not set: IPv6 not tested");
    return;
  }
  verbs_pair p;
  p.connect_ok(a6);
  const bytes m = pattern(70000, 13);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
}

TEST_CASE("busy-poll mode moves messages and RDMA like the event-driven mode") {
  verbs_pair p;
  p.busy_poll = true;
  p.connect_ok(test_address());
  const bytes m = pattern(100000, 21);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
  bytes region(65536);
  auto [e, reg] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(e);
  const bytes data = pattern(region.size(), 22);
  std::optional<std::error_code> w;
  p.client->async_rdma_write(asio::buffer(data), std::span(&reg.descriptor, 1), [&](std::error_code ec, std::size_t) { w = ec; });
  REQUIRE(p.run_until([&] { return w.has_value(); }));
  REQUIRE_FALSE(*w);
  CHECK(region == data);
}

TEST_CASE("port 0 listens on SMB Direct's port: 445 over InfiniBand and RoCE, 5445 over iWARP") {
  verbs_pair p;
  std::optional<std::error_code> result;
  asio::co_spawn(p.io, verbs::listener::open(p.io.get_executor(), test_address(), 0),
                 [&](std::exception_ptr, std::pair<std::error_code, std::unique_ptr<verbs::listener>> r) {
                   result = r.first;
                   p.listener = std::move(r.second);
                 });
  REQUIRE(p.run_until([&] { return result.has_value(); }));
  REQUIRE_MESSAGE(!*result, result->message());
  const auto devices = verbs::list_devices();
  const bool iwarp = std::any_of(devices.begin(), devices.end(), [](const auto& d) { return d.iwarp; });
  CHECK(p.listener->port() == (iwarp ? verbs::iwarp_port : verbs::ib_port));
  p.port = p.listener->port();
  p.connect_ok(test_address());
  const bytes m = pattern(2000, 23);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
}
