// The conformance suite for network transports (tcp, verbs): both ends in this process,
// connected through the transport's own connection manager. Real time here, so each wait has
// a deadline instead of a virtual clock.
//
// Include it after defining SMBDIRECT_CONFORMANCE_FABRICS as a comma-separated list of
// fabric types. A fabric names the transport and its connection manager:
//   using queue_pair, listener, options;
//   static std::string address();                      // where both ends meet
//   static options transport_options(const parameters&, bool busy_poll);
//   static asio::awaitable<std::pair<std::error_code, queue_pair>> connect(ex, address, port, options);
//   static std::uint16_t default_port(const std::string& address);  // what port 0 means
//   static bool async_write_errors(const queue_pair&);  // an RDMA Write completes before the
//                                                       // target checks it (iWARP)
//   static bool is_async_access_error(std::error_code); // the error such a write ends with
//   static bool enforces_remote_read_right(const queue_pair&);  // the target refuses an RDMA
//                                                       // Read of memory without remote read
//   static bool is_refused(std::error_code);            // connecting where nothing listens
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>
#include <doctest/doctest.h>

#include <smbdirect/smbdirect.hpp>

namespace smbdirect::conformance {

using namespace std::chrono_literals;
using bytes = std::vector<std::byte>;

inline bytes pattern(std::size_t n, unsigned seed) {
  bytes b(n);
  std::minstd_rand r(seed + 1);
  for (auto& x : b) x = static_cast<std::byte>(r());
  return b;
}

// Distinct ports per connection: an iWARP listener's TCP port may linger in TIME_WAIT. Below
// Linux's ephemeral range (32768 up), where outgoing connections take theirs.
inline std::uint16_t next_port() {
  static std::uint16_t port = static_cast<std::uint16_t>(20000 + std::random_device{}() % 12000);
  return ++port;
}

/// A client and a server connection on one io_context, set up by `Fabric`.
template <class Fabric>
struct network_pair {
  using conn = connection<typename Fabric::queue_pair>;
  asio::io_context io;
  std::unique_ptr<typename Fabric::listener> listener;
  std::optional<conn> client, server;
  std::uint16_t port = 0;
  bool busy_poll = false;  // verbs: both ends poll their completion queue instead of sleeping
  // Transport options for each end; unset: Fabric::transport_options(parameters, busy_poll).
  std::optional<typename Fabric::options> client_options, server_options;

  bool run_until(const std::function<bool()>& done, std::chrono::seconds limit = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      if (io.stopped()) io.restart();  // it stops whenever it runs out of work
      io.run_one_for(50ms);
    }
    return done();
  }

  std::error_code listen(const std::string& address, typename Fabric::options o = {}, std::optional<std::uint16_t> at = {}) {
    std::optional<std::error_code> result;
    // A port we picked may be taken (another test, an outgoing connection's ephemeral port):
    // try the next one.
    for (int attempt = 0; attempt < 20 && (!result || (!at && in_use(*result))); ++attempt) {
      port = at.value_or(next_port());
      result.reset();
      asio::co_spawn(io, Fabric::listener::open(io.get_executor(), address, port, o),
                     [&](std::exception_ptr, std::pair<std::error_code, std::unique_ptr<typename Fabric::listener>> r) {
                       result = r.first;
                       listener = std::move(r.second);
                     });
      REQUIRE(run_until([&] { return result.has_value(); }));
    }
    if (!*result && port == 0) port = listener->port();
    return *result;
  }

  static bool in_use(const std::error_code& ec) {
    return ec == asio::error::address_in_use || ec == std::errc::address_in_use;
  }

  /// Connects and negotiates both ends; returns {client error, server error}.
  std::pair<std::error_code, std::error_code> connect(const std::string& address, parameters cp = {},
                                                      parameters sp = {}) {
    if (!listener) REQUIRE_FALSE(listen(address, server_options.value_or(Fabric::transport_options(sp, busy_poll))));
    std::optional<std::error_code> c, s;
    asio::co_spawn(io, listener->accept(), [&](std::exception_ptr, std::pair<std::error_code, typename Fabric::queue_pair> r) {
      if (r.first) return void(s = r.first);
      server.emplace(std::move(r.second), sp);
      server->async_accept([&](std::error_code ec) { s = ec; });
    });
    asio::co_spawn(io, Fabric::connect(io.get_executor(), address, port,
                                       client_options.value_or(Fabric::transport_options(cp, busy_poll))),
                   [&](std::exception_ptr, std::pair<std::error_code, typename Fabric::queue_pair> r) {
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

// clang-format off
TEST_CASE_TEMPLATE("negotiation settles both sides' parameters", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  parameters cp, sp;
  cp.max_send_size = 1024;
  sp.max_receive_size = 2048;
  sp.receive_credit_max = 100;
  p.connect_ok(Fabric::address(), cp, sp);
  CHECK(p.client->negotiated().max_send_size == 1024);
  CHECK(p.server->negotiated().max_receive_size == 1024);  // min(ours, the client's PreferredSendSize), 3.1.5.6
  CHECK(p.client->negotiated().initial_send_credits <= 100);
  CHECK(p.client->negotiated().initial_send_credits > 0);
}

TEST_CASE_TEMPLATE("messages of every fragment shape travel both ways intact", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  p.connect_ok(Fabric::address());
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

TEST_CASE_TEMPLATE("RDMA write and read across two descriptors, with an offset", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  p.connect_ok(Fabric::address());
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
  // An RDMA Write may complete at the initiator before the target placed it (iWARP): a message
  // sent after it arrives after it, so exchange one before looking.
  const bytes after = pattern(10, 8);
  CHECK(p.exchange(*p.client, *p.server, after) == after);
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

TEST_CASE_TEMPLATE("many RDMA reads at once stay within ORD and all complete", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  p.connect_ok(Fabric::address());
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

TEST_CASE_TEMPLATE("a bad token, a deregistered region, a missing right and bounds fail the RDMA access", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  // 0 wrong token, 1 deregistered, 2 write to read-only: RDMA Writes. 3 one byte past the
  // end, 4 read from write-only: RDMA Reads, which every transport fails at the initiator.
  bytes region(65536), data = pattern(4096, 9);
  for (int c = 0; c < 5; ++c) {
    CAPTURE(c);
    network_pair<Fabric> p;
    p.connect_ok(Fabric::address());
    const access rights = c == 2 ? access::remote_read : c == 4 ? access::remote_write : access::remote_read_write;
    auto [e, reg] = p.server->register_buffer(asio::buffer(region), rights);
    REQUIRE_FALSE(e);
    auto d = reg.descriptor;
    if (c == 0) d.token ^= 0x5a5a5a00u;
    if (c == 1) REQUIRE_FALSE(p.server->deregister_buffer(reg));
    if (c == 3) d.offset += region.size() - data.size() + 1;
    std::optional<std::error_code> w;
    bytes back(data.size());
    if (c < 3) {
      p.client->async_rdma_write(asio::buffer(data), std::span(&d, 1), [&](std::error_code ec, std::size_t) { w = ec; });
    } else {
      p.client->async_rdma_read(asio::buffer(back), std::span(&d, 1), [&](std::error_code ec, std::size_t) { w = ec; });
    }
    REQUIRE(p.run_until([&] { return w.has_value(); }));
    if (c == 4 && !Fabric::enforces_remote_read_right(p.server->next_layer())) {
      MESSAGE("this device serves RDMA Reads from memory registered without the remote read right");
      CHECK(*w == std::error_code{});
      continue;
    }
    if (c < 3 && Fabric::async_write_errors(p.client->next_layer())) {
      // The write completes once on the wire; the target's Terminate then ends the connection.
      CHECK((!*w || *w == errc::remote_access_error));
      REQUIRE(p.run_until([&] { return !p.client->is_connected(); }));
      CHECK_MESSAGE(Fabric::is_async_access_error(p.client->error()), p.client->error().message());
    } else {
      CHECK_MESSAGE((*w == errc::remote_access_error || (c >= 3 && Fabric::is_async_access_error(*w))), w->message());
      CHECK_FALSE(p.client->is_connected());
    }
    CHECK(std::all_of(region.begin(), region.end(), [](std::byte b) { return b == std::byte{0}; }));
    // The server learns the connection is gone.
    std::optional<std::error_code> r;
    bytes got;
    p.server->async_receive(got, [&](std::error_code ec, std::size_t) { r = ec; });
    REQUIRE(p.run_until([&] { return r.has_value(); }));
    CHECK(*r == condition::transport_failure);
  }
}

TEST_CASE_TEMPLATE("close: the peer sees peer_disconnected and the listener keeps accepting", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  p.connect_ok(Fabric::address());
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
  p.connect_ok(Fabric::address());
  const bytes m = pattern(3000, 11);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
}

TEST_CASE_TEMPLATE("connecting where nothing listens is refused", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  std::optional<std::error_code> c;
  asio::co_spawn(p.io, Fabric::connect(p.io.get_executor(), Fabric::address(), next_port(), {}),
                 [&](std::exception_ptr, std::pair<std::error_code, typename Fabric::queue_pair> r) { c = r.first; });
  REQUIRE(p.run_until([&] { return c.has_value(); }, 30s));
  CAPTURE(c->message());
  CHECK(Fabric::is_refused(*c));
}

TEST_CASE_TEMPLATE("registrations revoke their tokens", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  p.connect_ok(Fabric::address());
  bytes region(8192);
  auto [e1, r1] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(e1);
  REQUIRE_FALSE(p.server->deregister_buffer(r1));
  CHECK(p.server->deregister_buffer(r1) == errc::invalid_token);
  auto [e2, r2] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(e2);
  const bytes data = pattern(8192, 5);
  std::optional<std::error_code> w;
  p.client->async_rdma_write(asio::buffer(data), std::span(&r2.descriptor, 1), [&](std::error_code ec, std::size_t) { w = ec; });
  REQUIRE(p.run_until([&] { return w.has_value(); }));
  REQUIRE_MESSAGE(!*w, w->message());
  const bytes after = pattern(10, 6);
  CHECK(p.exchange(*p.client, *p.server, after) == after);
  CHECK(region == data);
}

TEST_CASE_TEMPLATE("access::local memory is sent from and RDMA'd in place, and grants the peer nothing", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  p.connect_ok(Fabric::address());
  bytes source = pattern(1 << 20, 21), sink(1 << 20), unregistered = pattern(3000, 22);
  auto [es, src] = p.client->register_buffer(asio::buffer(source), access::local);
  auto [ek, snk] = p.client->register_buffer(asio::buffer(sink), access::local);
  REQUIRE_FALSE(es);
  REQUIRE_FALSE(ek);
  // Sends `buffers` (a ConstBufferSequence) from the client; what the server received.
  auto transfer = [&](const auto& buffers) {
    std::optional<std::error_code> sent, received;
    bytes got;
    p.server->async_receive(got, [&](std::error_code ec, std::size_t) { received = ec; });
    p.client->async_send(buffers, [&](std::error_code ec, std::size_t) { sent = ec; });
    REQUIRE(p.run_until([&] { return sent.has_value() && received.has_value(); }));
    REQUIRE_MESSAGE(!*sent, sent->message());
    REQUIRE_MESSAGE(!*received, received->message());
    return got;
  };
  auto concat = [](const std::vector<asio::const_buffer>& pieces) {
    bytes all;
    for (const auto& b : pieces)
      all.insert(all.end(), static_cast<const std::byte*>(b.data()), static_cast<const std::byte*>(b.data()) + b.size());
    return all;
  };
  // One fragment and many, from registered memory (verbs: in place).
  for (std::size_t size : {std::size_t{300}, std::size_t{(1 << 20) - 7}}) {
    const std::vector<asio::const_buffer> one{asio::buffer(source.data() + 7, size)};
    CHECK(transfer(one) == concat(one));
  }
  // Registered and unregistered pieces (verbs: the first in place, the second copied); then
  // seven pieces in one fragment, more scatter-gather entries than some devices take (siw:
  // 6), so verbs copies it all.
  const std::vector<asio::const_buffer> mixed{asio::buffer(source.data(), 500), asio::buffer(unregistered),
                                              asio::buffer(source.data() + 9000, 2500)};
  CHECK(transfer(mixed) == concat(mixed));
  std::vector<asio::const_buffer> seven;
  for (std::size_t i = 0; i < 7; ++i)
    seven.push_back(i % 2 ? asio::buffer(unregistered.data() + i * 300, 300) : asio::buffer(source.data() + i * 1000, 300));
  CHECK(transfer(seven) == concat(seven));
  // Deregistered, the memory is still sent (copied); a registration of other memory then
  // serves sends in its turn.
  const std::vector<asio::const_buffer> head{asio::buffer(source.data(), 5000)};
  REQUIRE_FALSE(p.client->deregister_buffer(src));
  CHECK(transfer(head) == concat(head));
  bytes other = pattern(5000, 24);
  auto [eo, oth] = p.client->register_buffer(asio::buffer(other), access::local);
  REQUIRE_FALSE(eo);
  const std::vector<asio::const_buffer> from_other{asio::buffer(other)};
  CHECK(transfer(from_other) == other);
  REQUIRE_FALSE(p.client->deregister_buffer(oth));
  auto [es2, src2] = p.client->register_buffer(asio::buffer(source), access::local);
  REQUIRE_FALSE(es2);

  // RDMA write from it and read into it.
  bytes region(1 << 20);
  auto [er, reg] = p.server->register_buffer(asio::buffer(region), access::remote_read_write);
  REQUIRE_FALSE(er);
  std::optional<std::error_code> w, r;
  p.client->async_rdma_write(asio::buffer(source), std::span(&reg.descriptor, 1), [&](std::error_code ec, std::size_t) { w = ec; });
  REQUIRE(p.run_until([&] { return w.has_value(); }));
  REQUIRE_MESSAGE(!*w, w->message());
  p.client->async_rdma_read(asio::buffer(sink), std::span(&reg.descriptor, 1), [&](std::error_code ec, std::size_t) { r = ec; });
  REQUIRE(p.run_until([&] { return r.has_value(); }));
  REQUIRE_MESSAGE(!*r, r->message());
  CHECK(sink == source);
  CHECK(region == source);

  // The peer may not write into it: the access fails and ends the connection.
  const bytes data = pattern(4096, 23);
  std::optional<std::error_code> pw;
  p.server->async_rdma_write(asio::buffer(data), std::span(&src2.descriptor, 1), [&](std::error_code ec, std::size_t) { pw = ec; });
  REQUIRE(p.run_until([&] { return pw.has_value(); }));
  if (Fabric::async_write_errors(p.server->next_layer())) {
    CHECK_MESSAGE((!*pw || *pw == errc::remote_access_error || Fabric::is_async_access_error(*pw)), pw->message());
    REQUIRE(p.run_until([&] { return !p.server->is_connected(); }));
  } else {
    CHECK_MESSAGE(*pw == errc::remote_access_error, pw->message());
  }
  CHECK(std::equal(source.begin(), source.begin() + 4096, pattern(1 << 20, 21).begin()));
}

TEST_CASE_TEMPLATE("port 0 listens on SMB Direct's port for the transport", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  const auto ec = p.listen(Fabric::address(), {}, 0);
  REQUIRE_MESSAGE(!ec, ec.message());
  CHECK(p.listener->port() == Fabric::default_port(Fabric::address()));
  p.port = p.listener->port();
  p.connect_ok(Fabric::address());
  const bytes m = pattern(2000, 23);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
}

TEST_CASE_TEMPLATE("stream: Direct TCP framed messages both ways, then eof", Fabric, SMBDIRECT_CONFORMANCE_FABRICS) {
  network_pair<Fabric> p;
  p.connect_ok(Fabric::address());
  using stream_type = stream<typename Fabric::queue_pair>;
  stream_type client(std::move(*p.client)), server(std::move(*p.server));
  const auto framed = [](const bytes& body) {
    const auto n = body.size();
    bytes b{std::byte{0}, static_cast<std::byte>(n >> 16), static_cast<std::byte>(n >> 8), static_cast<std::byte>(n)};
    b.insert(b.end(), body.begin(), body.end());
    return b;
  };
  // Three messages in one write, the middle one fragmented (70000 bytes); the answer split
  // between its header and its body.
  const bytes a = pattern(100, 30), b = pattern(70000, 31), c = pattern(1, 32), answer = pattern(5000, 33);
  bytes request = framed(a);
  for (const auto* m : {&b, &c}) {
    const bytes f = framed(*m);
    request.insert(request.end(), f.begin(), f.end());
  }
  const bytes reply = framed(answer);
  std::optional<std::error_code> wrote, read, replied, got_reply;
  bytes at_server(request.size()), at_client(reply.size());
  asio::async_write(client, asio::buffer(request), [&](std::error_code ec, std::size_t) { wrote = ec; });
  asio::async_read(server, asio::buffer(at_server), [&](std::error_code ec, std::size_t) { read = ec; });
  REQUIRE(p.run_until([&] { return wrote && read; }));
  CHECK_FALSE(*wrote);
  CHECK_FALSE(*read);
  CHECK(at_server == request);
  const std::array<asio::const_buffer, 2> parts{asio::buffer(reply.data(), 4), asio::buffer(reply.data() + 4, reply.size() - 4)};
  asio::async_write(server, parts, [&](std::error_code ec, std::size_t) { replied = ec; });
  asio::async_read(client, asio::buffer(at_client), [&](std::error_code ec, std::size_t) { got_reply = ec; });
  REQUIRE(p.run_until([&] { return replied && got_reply; }));
  CHECK_FALSE(*replied);
  CHECK(at_client == reply);
  CHECK(server.next_layer().stats().messages_received == 3);

  std::optional<std::error_code> closed, end;
  bytes one(1);
  asio::async_read(server, asio::buffer(one), [&](std::error_code ec, std::size_t) { end = ec; });
  client.async_close([&](std::error_code ec) { closed = ec; });
  REQUIRE(p.run_until([&] { return closed && end; }));
  CHECK_FALSE(*closed);
  CHECK(*end == asio::error::eof);
}
// clang-format on

}  // namespace smbdirect::conformance
