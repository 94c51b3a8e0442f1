// Malformed input from a raw TCP peer against a real TCP-emulation server (tcp::listener plus
// connection<tcp::queue_pair>). Each case must end in one specific error on our side, a
// Terminate (or a clean close) on the wire, and a listener that still serves a well-behaved
// client afterwards (the raw peer's socket still open). The raw peer builds its bytes with the
// library's own encoders; where it can, a case first shows the well-formed variant working,
// then breaks exactly one thing. Real time on one thread: every wait has a deadline, none
// sleeps.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <asio.hpp>
#include <doctest/doctest.h>

#include <smbdirect/smbdirect.hpp>
#include <smbdirect/tcp.hpp>

namespace {

using namespace smbdirect;
using namespace std::chrono_literals;
using conn = connection<tcp::queue_pair>;
using bytes = std::vector<std::byte>;
using tcp::iwarp_errc;
namespace mpa = tcp::mpa;
namespace w = tcp::wire;
constexpr auto tuple = asio::experimental::as_tuple(asio::use_awaitable);

std::error_code err(iwarp_errc e) { return make_error_code(e); }

// ------------------------------------------------------------------ wire builders

bytes tagged(w::opcode op, std::uint32_t stag, std::uint64_t to, const bytes& payload = {}) {
  bytes u(w::tagged_header_size);
  w::encode_tagged(u.data(), op, true, stag, to);
  u.insert(u.end(), payload.begin(), payload.end());
  return u;
}

bytes untagged(w::opcode op, w::queue qn, std::uint32_t msn, const bytes& payload) {
  bytes u(w::untagged_header_size);
  w::encode_untagged(u.data(), op, true, qn, msn, 0);
  u.insert(u.end(), payload.begin(), payload.end());
  return u;
}

/// One FPDU around `ulpdu`: ULPDU_LENGTH, ULPDU, zero pad, CRC32c (one bit off if `bad_crc`).
bytes fpdu(const bytes& ulpdu, bool bad_crc = false) {
  bytes f(2);
  w::detail::put16(f.data(), static_cast<std::uint16_t>(ulpdu.size()));
  f.insert(f.end(), ulpdu.begin(), ulpdu.end());
  f.resize(mpa::fpdu_size(ulpdu.size()));
  mpa::seal(f.data(), ulpdu.size());
  if (bad_crc) f[f.size() - 4] ^= std::byte{1};
  return f;
}

/// The MPA Request a well-behaved rev 2 initiator sends: enhanced, peer-to-peer, Write RTR, CRC.
mpa::frame good_request() {
  mpa::frame f;
  f.crc = true, f.revision = 2, f.ird = f.ord = 4, f.rtr.zero_length_write = true;
  return f;
}

/// An SMB Direct Data Transfer Message carrying `text`; grants the server no credits, so it
/// never sends us anything but the Negotiate Response and a Terminate.
bytes data_message(const std::string& text) {
  wire::data_transfer_header h;
  h.credits_requested = 10, h.data_offset = wire::data_transfer_header::payload_offset;
  h.data_length = static_cast<std::uint32_t>(text.size());
  bytes b(h.data_offset + text.size());
  REQUIRE_FALSE(wire::encode(h, b));
  std::memcpy(b.data() + h.data_offset, text.data(), text.size());
  return b;
}

bytes text_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data() + s.size())};
}

// ------------------------------------------------------------------ the server under attack

struct server {
  asio::io_context io;
  std::unique_ptr<tcp::listener> listener;
  std::uint16_t port = 0;
  // The connection the raw peer negotiated with, and its pending receive.
  std::optional<conn> victim;
  std::optional<std::error_code> accepted, received;
  bytes message;

  explicit server(tcp::options o = {}) {
    std::minstd_rand rng(std::random_device{}());
    for (int i = 0; i < 20 && !listener; ++i) {  // a random port may be taken: try another
      port = static_cast<std::uint16_t>(20000 + rng() % 40000);
      auto [ec, l] = await(tcp::listener::open(io.get_executor(), "127.0.0.1", port, o));
      if (!ec) listener = std::move(l);
    }
    REQUIRE(listener);
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      if (io.stopped()) io.restart();  // it stops whenever it runs out of work
      io.run_one_for(50ms);
    }
    return done();
  }

  /// Runs the io_context until `a` finishes (everything else runs meanwhile); its result.
  template <class T>
  T await(asio::awaitable<T> a) {
    std::optional<T> r;
    asio::co_spawn(io, std::move(a), [&](std::exception_ptr e, T v) {
      if (e) std::rethrow_exception(e);
      r.emplace(std::move(v));
    });
    REQUIRE(run_until([&] { return r.has_value(); }));
    return std::move(*r);
  }

  std::pair<std::error_code, tcp::queue_pair> accept() { return await(listener->accept()); }

  /// Waits for the victim's pending receive; both it and the connection must report `want`.
  void expect_failure(std::error_code want) {
    REQUIRE(run_until([&] { return received.has_value(); }));
    CHECK(*received == want);
    CHECK(victim->error() == want);
  }

  void arm_receive() {
    received.reset();
    victim->async_receive(message, [this](std::error_code ec, std::size_t) { received = ec; });
  }

  /// A well-behaved client connects, negotiates and sends one message that arrives intact.
  void serve_good_client() {
    std::optional<conn> s, c;
    std::optional<std::error_code> se, ce, sent, got;
    asio::co_spawn(io, listener->accept(), [&](std::exception_ptr, std::pair<std::error_code, tcp::queue_pair> r) {
      if (r.first) return void(se = r.first);
      s.emplace(std::move(r.second));
      s->async_accept([&](std::error_code ec) { se = ec; });
    });
    asio::co_spawn(io, tcp::connect(io.get_executor(), "127.0.0.1", port),
                   [&](std::exception_ptr, std::pair<std::error_code, tcp::queue_pair> r) {
                     if (r.first) return void(ce = r.first);
                     c.emplace(std::move(r.second));
                     c->async_connect([&](std::error_code ec) { ce = ec; });
                   });
    REQUIRE(run_until([&] { return se.has_value() && ce.has_value(); }));
    REQUIRE_MESSAGE(!*se, "server: " << se->message());
    REQUIRE_MESSAGE(!*ce, "client: " << ce->message());
    const bytes m = text_bytes("still serving");
    bytes in;
    s->async_receive(in, [&](std::error_code ec, std::size_t) { got = ec; });
    c->async_send(asio::buffer(m), [&](std::error_code ec, std::size_t) { sent = ec; });
    REQUIRE(run_until([&] { return sent.has_value() && got.has_value(); }));
    CHECK_FALSE(*sent);
    CHECK_FALSE(*got);
    CHECK(in == m);
  }
};

// ------------------------------------------------------------------ the raw attacker

struct raw_peer {
  server& srv;
  asio::ip::tcp::socket sock{srv.io};
  std::uint32_t send_msn = 1;  // next MSN on queue 0 (Sends)
  std::uint32_t read_msn = 1;  // next MSN on queue 1 (RDMA Read Requests)

  explicit raw_peer(server& s) : srv(s) {
    auto [ec] = srv.await(sock.async_connect({asio::ip::make_address("127.0.0.1"), srv.port}, tuple));
    REQUIRE_FALSE(ec);
    sock.set_option(asio::ip::tcp::no_delay(true));  // no Nagle wait behind our own RTR
  }

  void write(const bytes& b) {
    auto [ec, n] = srv.await(asio::async_write(sock, asio::buffer(b), tuple));
    REQUIRE_FALSE(ec);
  }
  std::error_code read(std::span<std::byte> b) {
    auto [ec, n] = srv.await(asio::async_read(sock, asio::buffer(b.data(), b.size()), tuple));
    return ec;
  }
  /// True when the server closed its direction cleanly: FIN, no further bytes, no reset.
  bool sees_eof() {
    std::array<std::byte, 64> b;
    auto [ec, n] = srv.await(sock.async_read_some(asio::buffer(b), tuple));
    CHECK_MESSAGE(ec == asio::error::eof, "read " << n << " bytes, " << ec.message());
    return ec == asio::error::eof;
  }

  /// Reads an MPA Reply frame (header and private data).
  mpa::frame read_reply() {
    std::array<std::byte, mpa::frame_header_size> h;
    REQUIRE_FALSE(read(h));
    mpa::frame f;
    std::size_t pd_length = 0;
    REQUIRE_FALSE(mpa::decode_header(h, true, f, pd_length));
    bytes pd(pd_length);
    REQUIRE_FALSE(read(pd));
    REQUIRE_FALSE(mpa::decode_private_data(pd, f));
    return f;
  }

  /// Reads one FPDU into `f`, checks its CRC and decodes its DDP segment (`seg` views `f`).
  void read_fpdu(bytes& f, w::segment& seg) {
    f.assign(2, std::byte{0});
    REQUIRE_FALSE(read(f));
    const std::size_t ulpdu = w::detail::get16(f.data());
    f.resize(mpa::fpdu_size(ulpdu));
    REQUIRE_FALSE(read(std::span(f).subspan(2)));
    CHECK(mpa::crc_matches(f.data(), ulpdu));
    REQUIRE_FALSE(w::decode_segment({f.data() + 2, ulpdu}, seg));
  }

  /// The server's last words: one Terminate FPDU reporting `want`, then a clean close.
  void expect_terminate(w::terminate_info want) {
    bytes f;
    w::segment seg;
    read_fpdu(f, seg);
    REQUIRE(seg.op == w::opcode::terminate);
    CHECK(seg.queue_number == 2);
    CHECK(seg.msn == 1);
    w::terminate_info t;
    REQUIRE_FALSE(w::decode(seg.payload, t));
    CHECK_MESSAGE(t == want, "got layer " << int(t.where) << ", type " << int(t.error_type) << ", code "
                                            << int(t.error_code));
    CHECK(sees_eof());
  }

  /// MPA setup, the RTR, and SMB Direct negotiation with the server's connection, which is
  /// left with a receive pending (it completes with the connection's terminal error).
  void open_session() {
    write(mpa::encode(good_request()));
    const mpa::frame reply = read_reply();
    REQUIRE_FALSE(reply.reject);
    REQUIRE(reply.crc);
    REQUIRE(reply.rtr.zero_length_write);
    write(fpdu(tagged(w::opcode::rdma_write, 0, 0)));  // the zero-length RDMA Write RTR
    auto [ec, qp] = srv.accept();
    REQUIRE_MESSAGE(!ec, ec.message());
    srv.victim.emplace(std::move(qp));
    srv.victim->async_accept([this](std::error_code e) { srv.accepted = e; });

    wire::negotiate_request req;
    req.credits_requested = 10, req.preferred_send_size = req.max_receive_size = 1364;
    req.max_fragmented_size = 1048576;
    bytes nb(wire::negotiate_request::size);
    REQUIRE_FALSE(wire::encode(req, nb));
    write(send_fpdu(nb));
    bytes f;
    w::segment seg;
    read_fpdu(f, seg);
    REQUIRE(seg.op == w::opcode::send);
    wire::negotiate_response resp;
    REQUIRE_FALSE(wire::decode(seg.payload, resp));
    CHECK(resp.status == wire::status_success);
    REQUIRE(srv.run_until([&] { return srv.accepted.has_value(); }));
    REQUIRE_FALSE(*srv.accepted);
    srv.arm_receive();
  }

  /// A Send of `payload` on queue 0 with the next MSN.
  bytes send_fpdu(const bytes& payload, bool bad_crc = false) {
    return fpdu(untagged(w::opcode::send, w::queue::send, send_msn++, payload), bad_crc);
  }

  /// An RDMA Read Request for `size` bytes at the start of `source`, with the next MSN.
  bytes read_request_fpdu(const wire::buffer_descriptor_v1& source, std::uint32_t size, std::uint32_t sink_stag = 0x5151) {
    bytes body(w::read_request_size);
    w::encode(w::read_request{sink_stag, 0, size, source.token, source.offset}, body.data());
    return fpdu(untagged(w::opcode::read_request, w::queue::read_request, read_msn++, body));
  }

  /// Reads one RDMA Read Response FPDU and returns its payload; it must answer `sink_stag`
  /// in one piece.
  bytes read_response(std::uint32_t sink_stag = 0x5151) {
    bytes f;
    w::segment seg;
    read_fpdu(f, seg);
    REQUIRE(seg.op == w::opcode::read_response);
    CHECK(seg.stag == sink_stag);
    CHECK(seg.last);
    return {seg.payload.begin(), seg.payload.end()};
  }

  /// Sends a good data message and sees the server deliver it: the framing is right.
  void deliver(const std::string& text) {
    write(send_fpdu(data_message(text)));
    REQUIRE(srv.run_until([&] { return srv.received.has_value(); }));
    REQUIRE_FALSE(*srv.received);
    CHECK(srv.message == text_bytes(text));
    srv.arm_receive();
  }
};

}  // namespace

TEST_CASE("truncated FPDU: the stream ends inside an FPDU -> fpdu_truncated, clean close") {
  server srv;
  raw_peer p(srv);
  p.open_session();
  const bytes f = p.send_fpdu(data_message("cut short"));
  p.write(bytes(f.begin(), f.begin() + 10));  // the length says more follows
  p.sock.shutdown(asio::ip::tcp::socket::shutdown_send);
  srv.expect_failure(err(iwarp_errc::fpdu_truncated));
  CHECK(p.sees_eof());  // nothing left to Terminate: the peer is gone
  srv.serve_good_client();
}

TEST_CASE("bad CRC -> crc_mismatch, Terminate LLP/MPA 0x02") {
  server srv;
  raw_peer p(srv);
  p.open_session();
  p.deliver("good");
  p.write(p.send_fpdu(data_message("bad"), true));
  srv.expect_failure(err(iwarp_errc::crc_mismatch));
  p.expect_terminate({w::layer::llp, w::llp_error, 0x02});
  srv.serve_good_client();
}

TEST_CASE("bad DDP version -> bad_ddp_version, Terminate DDP untagged 0x06") {
  server srv;
  raw_peer p(srv);
  p.open_session();
  p.deliver("good");
  bytes u = untagged(w::opcode::send, w::queue::send, p.send_msn++, data_message("DV 2"));
  u[0] = (u[0] & std::byte{0xfc}) | std::byte{2};  // DV = 2; CRC still right
  p.write(fpdu(u));
  srv.expect_failure(err(iwarp_errc::bad_ddp_version));
  p.expect_terminate({w::layer::ddp, w::ddp_untagged, 0x06});
  srv.serve_good_client();
}

TEST_CASE("RDMA Write past the end of a region -> base_or_bounds_violation, Terminate DDP tagged 0x01") {
  server srv;
  raw_peer p(srv);
  p.open_session();
  bytes region(64, std::byte{0});
  auto [ec, reg] = srv.victim->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(ec);
  const auto& d = reg.descriptor;
  // The last 8 bytes of the region: placed.
  p.write(fpdu(tagged(w::opcode::rdma_write, d.token, d.offset + 56, bytes(8, std::byte{0x5a}))));
  REQUIRE(srv.run_until([&] { return region[63] == std::byte{0x5a}; }));
  // 16 bytes from the same place: 8 beyond the end. Nothing may be placed.
  p.write(fpdu(tagged(w::opcode::rdma_write, d.token, d.offset + 56, bytes(16, std::byte{0xa5}))));
  srv.expect_failure(err(iwarp_errc::base_or_bounds_violation));
  p.expect_terminate({w::layer::ddp, w::ddp_tagged, 0x01});
  CHECK(std::count(region.begin(), region.end(), std::byte{0}) == 56);
  CHECK(std::count(region.begin(), region.end(), std::byte{0x5a}) == 8);
  srv.serve_good_client();
}

TEST_CASE("RDMA Read Request for a deregistered STag -> invalid_stag, Terminate RDMAP protection 0x00") {
  server srv;
  raw_peer p(srv);
  p.open_session();
  bytes region(16);
  for (std::size_t i = 0; i < region.size(); ++i) region[i] = std::byte(i + 1);
  auto [ec, reg] = srv.victim->register_buffer(asio::buffer(region), access::remote_read);
  REQUIRE_FALSE(ec);
  // While registered, the server answers with the region's bytes.
  p.write(p.read_request_fpdu(reg.descriptor, 16));
  CHECK(p.read_response() == region);
  // Deregistered, the same request names an STag that is no longer valid.
  REQUIRE_FALSE(srv.victim->deregister_buffer(reg));
  p.write(p.read_request_fpdu(reg.descriptor, 16));
  srv.expect_failure(err(iwarp_errc::invalid_stag));
  p.expect_terminate({w::layer::rdmap, w::rdmap_protection, 0x00});
  srv.serve_good_client();
}

TEST_CASE("RDMA Read Request for write-only memory -> access_rights_violation, Terminate RDMAP protection 0x02") {
  server srv;
  raw_peer p(srv);
  p.open_session();
  bytes readable(16, std::byte{0x11}), writable(16, std::byte{0x22});
  auto [ec1, r] = srv.victim->register_buffer(asio::buffer(readable), access::remote_read);
  auto [ec2, wo] = srv.victim->register_buffer(asio::buffer(writable), access::remote_write);
  REQUIRE_FALSE(ec1);
  REQUIRE_FALSE(ec2);
  p.write(p.read_request_fpdu(r.descriptor, 16));
  CHECK(p.read_response() == readable);
  // Same request, but for the region the peer may only write: nothing of it may be sent.
  p.write(p.read_request_fpdu(wo.descriptor, 16));
  srv.expect_failure(err(iwarp_errc::access_rights_violation));
  p.expect_terminate({w::layer::rdmap, w::rdmap_protection, 0x02});
  srv.serve_good_client();
}

TEST_CASE("more RDMA Read Requests than our IRD -> ird_exceeded, Terminate RDMAP operation 0x07") {
  tcp::options o;
  o.ird = 2;
  server srv(o);
  raw_peer p(srv);
  p.open_session();
  REQUIRE(srv.victim->next_layer().settings().ird == 2);
  bytes region(32);
  for (std::size_t i = 0; i < region.size(); ++i) region[i] = std::byte(i);
  auto [ec, reg] = srv.victim->register_buffer(asio::buffer(region), access::remote_read);
  REQUIRE_FALSE(ec);
  auto requests = [&](int n) {
    bytes b;
    for (int i = 0; i < n; ++i) {
      const bytes f = p.read_request_fpdu(reg.descriptor, 32, 0x100 + i);
      b.insert(b.end(), f.begin(), f.end());
    }
    return b;
  };
  // IRD requests in one write: all answered, in order.
  p.write(requests(2));
  CHECK(p.read_response(0x100) == region);
  CHECK(p.read_response(0x101) == region);
  // IRD + 1 in one write: the server reads them all before it can answer any, so the third
  // finds both slots taken. No response may go out after the Terminate is decided.
  p.write(requests(3));
  srv.expect_failure(err(iwarp_errc::ird_exceeded));
  p.expect_terminate({w::layer::rdmap, w::rdmap_operation, 0x07});
  srv.serve_good_client();
}

TEST_CASE("MPA Request asking for markers -> Reply with R, close; accept() reports mpa_markers_requested") {
  server srv;
  raw_peer p(srv);
  mpa::frame req = good_request();
  req.markers = true;
  p.write(mpa::encode(req));
  const mpa::frame reply = p.read_reply();
  CHECK(reply.reject);
  CHECK_FALSE(reply.markers);
  CHECK(p.sees_eof());
  CHECK(srv.accept().first == err(iwarp_errc::mpa_markers_requested));
  srv.serve_good_client();
}

TEST_CASE("MPA Request with a bad key -> close without a Reply; accept() reports mpa_bad_key") {
  server srv;
  raw_peer p(srv);
  mpa::frame req = good_request();
  req.revision = 1;  // no private data: the server reads all 20 bytes, so it closes with FIN
  bytes b = mpa::encode(req);
  REQUIRE(b.size() == mpa::frame_header_size);
  b[4] = std::byte{'X'};  // "MPA XD Req Frame"
  p.write(b);
  CHECK(p.sees_eof());
  CHECK(srv.accept().first == err(iwarp_errc::mpa_bad_key));
  srv.serve_good_client();
}

TEST_CASE("first FPDU is not the agreed RTR -> close; accept() reports mpa_bad_rtr") {
  server srv;
  raw_peer p(srv);
  p.write(mpa::encode(good_request()));
  REQUIRE_FALSE(p.read_reply().reject);
  p.write(fpdu(tagged(w::opcode::read_response, 0, 0)));  // RTR-sized, wrong opcode
  CHECK(p.sees_eof());
  CHECK(srv.accept().first == err(iwarp_errc::mpa_bad_rtr));
  srv.serve_good_client();
}

TEST_CASE("silent peer -> mpa_handshake_timeout, while other clients are served meanwhile") {
  tcp::options o;
  o.handshake_timeout = 300ms;
  server srv(o);
  raw_peer p(srv);  // connects, then says nothing
  const auto start = std::chrono::steady_clock::now();
  srv.serve_good_client();  // its setup finishes long before the silent one times out
  CHECK(srv.accept().first == err(iwarp_errc::mpa_handshake_timeout));
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  CHECK(p.sees_eof());
  srv.serve_good_client();
}
