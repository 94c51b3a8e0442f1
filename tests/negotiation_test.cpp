// Negotiation, both roles, against a scripted raw peer: every check of [MS-SMBD] 3.1.5.6 and
// 3.1.5.7 is triggered by the offending bytes, and every computed value is checked.
#include <doctest/doctest.h>

#include "support/harness.hpp"

using namespace smbdirect;
using namespace smbdirect::test;
using namespace std::chrono_literals;

namespace {

// Our connection in the passive role; the raw peer plays the client.
struct passive_fixture {
  driver d;
  std::optional<loopback_connection> server;
  std::optional<raw_peer> peer;
  std::optional<std::error_code> accepted;

  explicit passive_fixture(parameters p = {}) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    server.emplace(std::move(a), p, &d.clock);
    peer.emplace(std::move(b));
    peer->post_receives(4);
    server->async_accept([this](std::error_code ec) { accepted = ec; });
    d.settle();
  }

  std::error_code accept_with(const bytes& request) {
    REQUIRE_FALSE(peer->send(request));
    REQUIRE(d.run_until([&] { return accepted.has_value(); }));
    peer->drain();
    return *accepted;
  }

  wire::negotiate_response response() {
    REQUIRE(peer->received.size() >= 1);
    wire::negotiate_response r;
    REQUIRE_FALSE(wire::decode(peer->received[0], r));
    CHECK(peer->received[0].size() == 32);
    return r;
  }
};

wire::negotiate_request good_request() { return protocol::make_negotiate_request(parameters{}); }

// Our connection in the active role; the raw peer plays the server.
struct active_fixture {
  driver d;
  std::optional<loopback_connection> client;
  std::optional<raw_peer> peer;
  std::optional<std::error_code> connected;

  explicit active_fixture(parameters p = {}) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    client.emplace(std::move(a), p, &d.clock);
    peer.emplace(std::move(b));
    peer->post_receives(300);
    client->async_connect([this](std::error_code ec) { connected = ec; });
    d.settle();
    peer->drain();
  }

  wire::negotiate_request request() {
    REQUIRE(peer->received.size() == 1);
    CHECK(peer->received[0].size() == 20);
    wire::negotiate_request r;
    REQUIRE_FALSE(wire::decode(peer->received[0], r));
    return r;
  }

  std::error_code connect_with(const wire::negotiate_response& rsp) { return connect_with(encode_response(rsp)); }
  std::error_code connect_with(const bytes& rsp) {
    REQUIRE_FALSE(peer->send(rsp));
    REQUIRE(d.run_until([&] { return connected.has_value(); }));
    return *connected;
  }
};

}  // namespace

TEST_CASE("3.1.5.2: the active side sends a 20-byte request from its parameters") {
  parameters p;
  p.send_credit_target = 77;
  p.max_send_size = 1000;
  p.max_receive_size = 2000;
  p.max_fragmented_size = 300000;
  active_fixture f(p);
  const auto r = f.request();
  CHECK(r.min_version == 0x0100);
  CHECK(r.max_version == 0x0100);
  CHECK(r.reserved == 0);
  CHECK(r.credits_requested == 77);
  CHECK(r.preferred_send_size == 1000);
  CHECK(r.max_receive_size == 2000);
  CHECK(r.max_fragmented_size == 300000);
}

TEST_CASE("3.1.5.6: a request shorter than 20 bytes terminates without a response") {
  passive_fixture f;
  bytes req = encode_request(good_request());
  req.resize(19);
  CHECK(f.accept_with(req) == errc::message_too_short);
  CHECK(f.peer->received.empty());
  CHECK(f.server->error() == errc::message_too_short);
}

TEST_CASE("3.1.5.6: a version range without 0x0100 gets STATUS_NOT_SUPPORTED, then the end") {
  passive_fixture f;
  auto req = good_request();
  SUBCASE("range above") { req.min_version = req.max_version = 0x0200; }
  SUBCASE("range below") { req.min_version = req.max_version = 0x0001; }
  CHECK(f.accept_with(encode_request(req)) == errc::unsupported_version);
  const auto r = f.response();
  CHECK(r.status == 0xC00000BB);
  CHECK(r.min_version == 0x0100);
  CHECK(r.max_version == 0x0100);
  CHECK(r.negotiated_version == 0);
  CHECK(r.credits_granted == 0);
  CHECK(r.credits_requested == 0);
  CHECK(r.max_read_write_size == 0);
  CHECK(r.preferred_send_size == 0);
  CHECK(r.max_receive_size == 0);
  CHECK(r.max_fragmented_size == 0);
}

TEST_CASE("3.1.5.6: a range that includes 0x0100 is accepted") {
  passive_fixture f;
  auto req = good_request();
  req.min_version = 0x0001;
  req.max_version = 0x0300;
  CHECK_FALSE(f.accept_with(encode_request(req)));
  CHECK(f.response().negotiated_version == 0x0100);
}

TEST_CASE("3.1.5.6: CreditsRequested 0 terminates without a response") {
  passive_fixture f;
  auto req = good_request();
  req.credits_requested = 0;
  CHECK(f.accept_with(encode_request(req)) == errc::credits_requested_zero);
  CHECK(f.peer->received.empty());
}

TEST_CASE("3.1.5.6: MaxReceiveSize below 128 terminates; 128 is accepted") {
  auto req = good_request();
  req.max_receive_size = 127;
  {
    passive_fixture f;
    CHECK(f.accept_with(encode_request(req)) == errc::max_receive_size_too_small);
    CHECK(f.peer->received.empty());
  }
  req.max_receive_size = 128;
  passive_fixture f;
  CHECK_FALSE(f.accept_with(encode_request(req)));
  CHECK(f.response().preferred_send_size == 128);  // our MaxSendSize = min(1364, 128)
}

TEST_CASE("3.1.5.6: MaxFragmentedSize below 131072 terminates; 131072 is accepted") {
  auto req = good_request();
  req.max_fragmented_size = 131071;
  {
    passive_fixture f;
    CHECK(f.accept_with(encode_request(req)) == errc::max_fragmented_size_too_small);
  }
  req.max_fragmented_size = 131072;
  passive_fixture f;
  CHECK_FALSE(f.accept_with(encode_request(req)));
  CHECK(f.server->negotiated().max_fragmented_send_size == 131072);
}

TEST_CASE("3.1.5.6/3.1.5.3: sizes are clamped crosswise and the response reports them") {
  parameters p;
  p.receive_credit_max = 100;
  p.send_credit_target = 50;
  p.max_read_write_size = 4 << 20;
  p.max_fragmented_size = 2 << 20;
  passive_fixture f(p);
  auto req = good_request();
  req.credits_requested = 200;      // more than our ReceiveCreditMax: we post 100
  req.preferred_send_size = 1000;   // our MaxReceiveSize = min(1364, 1000)
  req.max_receive_size = 600;       // our MaxSendSize = min(1364, 600)
  req.max_fragmented_size = 150000;
  CHECK_FALSE(f.accept_with(encode_request(req)));
  const auto r = f.response();
  CHECK(r.status == 0);
  CHECK(r.negotiated_version == 0x0100);
  CHECK(r.credits_requested == 50);
  CHECK(r.credits_granted == 100);
  CHECK(r.max_read_write_size == (4u << 20));
  CHECK(r.preferred_send_size == 600);
  CHECK(r.max_receive_size == 1000);
  CHECK(r.max_fragmented_size == (2u << 20));
  const auto& n = f.server->negotiated();
  CHECK(n.max_send_size == 600);
  CHECK(n.max_receive_size == 1000);
  CHECK(n.max_fragmented_send_size == 150000);
  CHECK(f.server->credits().send_credits() == 0);  // a request grants nothing
  CHECK(f.server->credits().posted() == 100);
}

TEST_CASE("limits: a Negotiate Request with every field at its largest wire value is bounded by our parameters") {
  passive_fixture f;  // defaults: ReceiveCreditMax 255, MaxSendSize/MaxReceiveSize 1364, MaxReadWriteSize 1 MiB
  auto req = good_request();
  req.credits_requested = 0xffff;
  req.preferred_send_size = 0xffffffff;
  req.max_receive_size = 0xffffffff;
  req.max_fragmented_size = 0xffffffff;
  CHECK_FALSE(f.accept_with(encode_request(req)));
  const auto r = f.response();
  CHECK(r.credits_granted == 255);  // receives posted: ours, not the peer's 65535
  CHECK(r.max_receive_size == 1364);
  CHECK(r.preferred_send_size == 1364);
  CHECK(r.max_read_write_size == (1u << 20));
  const auto& n = f.server->negotiated();
  CHECK(n.receive_credit_target == 255);
  CHECK(n.max_send_size == 1364);
  CHECK(n.max_receive_size == 1364);
  CHECK(n.max_fragmented_recv_size == (1u << 20));  // what we reassemble stays ours
  CHECK(f.server->credits().posted() == 255);
  // The peer's own offer is kept as received, before any of our limits.
  CHECK(n.peer.credits_requested == 0xffff);
  CHECK(n.peer.credits_granted == 0);
  CHECK(n.peer.preferred_send_size == 0xffffffff);
  CHECK(n.peer.max_receive_size == 0xffffffff);
  CHECK(n.peer.max_fragmented_size == 0xffffffff);
  CHECK(n.peer.max_read_write_size == 0);
}

TEST_CASE("limits: a Negotiate Response with every field at its largest wire value is bounded by our parameters") {
  active_fixture f;
  auto rsp = good_response(0xffff, 0xffff);
  rsp.preferred_send_size = 1364;  // above our MaxReceiveSize is refused (3.1.5.7), tested below
  rsp.max_receive_size = 0xffffffff;
  rsp.max_fragmented_size = 0xffffffff;
  rsp.max_read_write_size = 0xffffffff;
  CHECK_FALSE(f.connect_with(rsp));
  const auto& n = f.client->negotiated();
  CHECK(n.max_send_size == 1364);
  CHECK(n.max_read_write_size == (1u << 20));
  CHECK(n.max_fragmented_recv_size == (1u << 20));
  CHECK(n.receive_credit_target == 255);
  CHECK(f.client->credits().posted() == 255);
  CHECK(f.client->credits().send_credits() >= 0xfffe);  // minus the grant sent after negotiation;
  // a count, not memory: outstanding sends are bounded by our send_credit_target + 2 slots
}

TEST_CASE("3.1.5.6: PreferredSendSize below 128 still gives MaxReceiveSize 128") {
  passive_fixture f;
  auto req = good_request();
  req.preferred_send_size = 0;
  CHECK_FALSE(f.accept_with(encode_request(req)));
  CHECK(f.response().max_receive_size == 128);
}

TEST_CASE("negotiation timer: the passive side gives up after negotiate_timeout") {
  parameters p;
  p.negotiate_timeout = 2000ms;
  passive_fixture f(p);
  f.d.advance(1999ms);
  CHECK_FALSE(f.accepted.has_value());
  REQUIRE(f.d.run_until([&] { return f.accepted.has_value(); }));
  CHECK(*f.accepted == errc::negotiate_timeout);
}

TEST_CASE("3.1.5.7: a valid response connects with the crossed minimums") {
  parameters p;
  p.max_read_write_size = 8 << 20;
  active_fixture f(p);
  auto rsp = good_response(17, 33);
  rsp.preferred_send_size = 1000;
  rsp.max_receive_size = 700;
  rsp.max_fragmented_size = 200000;
  rsp.max_read_write_size = 1 << 20;
  CHECK_FALSE(f.connect_with(rsp));
  const auto& n = f.client->negotiated();
  CHECK(n.max_receive_size == 1000);
  CHECK(n.max_send_size == 700);
  CHECK(n.max_fragmented_send_size == 200000);
  CHECK(n.max_read_write_size == (1u << 20));
  CHECK(n.receive_credit_target == 33);
  CHECK(f.client->credits().send_credits() <= 17);
  CHECK(f.client->credits().posted() == 33);
  CHECK(n.peer.credits_requested == 33);
  CHECK(n.peer.credits_granted == 17);
  CHECK(n.peer.preferred_send_size == 1000);
  CHECK(n.peer.max_receive_size == 700);
  CHECK(n.peer.max_fragmented_size == 200000);
  CHECK(n.peer.max_read_write_size == (1u << 20));
}

TEST_CASE("3.1.5.7: every check terminates with its own error") {
  auto rsp = good_response();
  std::error_code expected;
  bytes raw;
  SUBCASE("shorter than 32 bytes") {
    raw = encode_response(rsp);
    raw.resize(31);
    expected = errc::message_too_short;
  }
  SUBCASE("NegotiatedVersion not 0x0100") {
    rsp.negotiated_version = 0x0101;
    expected = errc::negotiated_version_mismatch;
  }
  SUBCASE("MaxReceiveSize below 128") {
    rsp.max_receive_size = 127;
    expected = errc::max_receive_size_too_small;
  }
  SUBCASE("MaxFragmentedSize below 131072") {
    rsp.max_fragmented_size = 131071;
    expected = errc::max_fragmented_size_too_small;
  }
  SUBCASE("CreditsGranted 0") {
    rsp.credits_granted = 0;
    expected = errc::credits_granted_zero;
  }
  SUBCASE("CreditsRequested 0") {
    rsp.credits_requested = 0;
    expected = errc::credits_requested_zero;
  }
  SUBCASE("PreferredSendSize above our MaxReceiveSize") {
    rsp.preferred_send_size = 1365;
    expected = errc::preferred_send_size_too_large;
  }
  SUBCASE("Status not STATUS_SUCCESS") {
    rsp = protocol::make_failure_response(wire::status_not_supported);
    expected = errc::negotiate_rejected;
  }
  active_fixture f;
  const std::error_code got = raw.empty() ? f.connect_with(rsp) : f.connect_with(raw);
  CHECK(got == expected);
  CHECK(f.client->error() == expected);
  CHECK_FALSE(f.client->is_connected());
}

TEST_CASE("3.1.5.7: boundary values are accepted") {
  active_fixture f;
  auto rsp = good_response(1, 1);
  rsp.max_receive_size = 128;
  rsp.max_fragmented_size = 131072;
  rsp.preferred_send_size = 1364;
  CHECK_FALSE(f.connect_with(rsp));
  CHECK(f.client->negotiated().max_send_size == 128);
}

TEST_CASE("negotiation timer: the active side gives up after 5 s by default") {
  active_fixture f;
  f.d.advance(4999ms);
  CHECK_FALSE(f.connected.has_value());
  REQUIRE(f.d.run_until([&] { return f.connected.has_value(); }));
  CHECK(*f.connected == errc::negotiate_timeout);
  CHECK(f.d.clock.now() - time_point(std::chrono::hours(1)) == 5000ms);
}

TEST_CASE("invalid local parameters fail before anything is sent") {
  parameters p;
  p.max_fragmented_size = 1000;
  driver d;
  auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
  loopback_connection c(std::move(a), p, &d.clock);
  std::optional<std::error_code> r;
  c.async_connect([&](std::error_code ec) { r = ec; });
  REQUIRE(d.run_until([&] { return r.has_value(); }));
  CHECK(*r == errc::invalid_argument);
}
