// Receiving Data Transfer Messages, [MS-SMBD] 3.1.5.8: every validity check triggered by a
// scripted raw peer, reassembly, and the MaxFragmentedRecvSize bound.
#include <doctest/doctest.h>

#include "support/server_session.hpp"

using namespace smbdirect;
using namespace smbdirect::test;
using namespace std::chrono_literals;

namespace {

// Our server, negotiated with a raw client that then sends whatever a test wants.
struct fixture : server_session {
  std::vector<bytes> delivered;
  std::optional<std::error_code> receive_error;
  bytes message;

  explicit fixture(parameters p = {}) : server_session(p) {
    peer->drain();
    peer->received.clear();
    receive_next();
  }

  void receive_next() {
    server->async_receive(message, [this](std::error_code ec, std::size_t) {
      if (ec) {
        receive_error = ec;
        return;
      }
      delivered.push_back(message);
      receive_next();
    });
  }

  void send(const bytes& b) {
    REQUIRE_FALSE(peer->send(b));
    d.settle();
  }

  static wire::data_transfer_header header(std::uint32_t length, std::uint32_t remaining = 0) {
    wire::data_transfer_header h;
    h.credits_requested = 255;
    h.credits_granted = 10;
    h.remaining_data_length = remaining;
    h.data_offset = length ? 24 : 0;
    h.data_length = length;
    return h;
  }

  std::error_code terminated() {
    d.settle();
    return server->error();
  }
};

}  // namespace

TEST_CASE("3.1.5.8: a valid message is delivered whole") {
  fixture f;
  f.send(encode_data(fixture::header(5), pattern(5, 1)));
  REQUIRE(f.delivered.size() == 1);
  CHECK(f.delivered[0] == pattern(5, 1));
  CHECK_FALSE(f.server->error());
  CHECK(f.server->credits().send_credits() == 10);
}

TEST_CASE("3.1.5.8: message shorter than 20 bytes terminates") {
  fixture f;
  bytes b = encode_data(fixture::header(0));
  b.resize(19);
  f.send(b);
  CHECK(f.terminated() == errc::message_too_short);
  CHECK(*f.receive_error == errc::message_too_short);
}

TEST_CASE("3.1.5.8: CreditsRequested 0 terminates") {
  fixture f;
  auto h = fixture::header(4);
  h.credits_requested = 0;
  f.send(encode_data(h, pattern(4, 2)));
  CHECK(f.terminated() == errc::credits_requested_zero);
  CHECK(f.delivered.empty());
}

TEST_CASE("3.1.5.8: DataOffset not 8-byte aligned terminates (24 +- 1)") {
  fixture f;
  auto h = fixture::header(4);
  SUBCASE("25") { h.data_offset = 25; }
  SUBCASE("23") { h.data_offset = 23; }
  f.send(encode_data(h, pattern(4, 3), 40));
  CHECK(f.terminated() == errc::data_offset_misaligned);
  CHECK(f.delivered.empty());
}

TEST_CASE("3.1.5.8: payload overlapping the header terminates") {
  fixture f;
  auto h = fixture::header(4);
  h.data_offset = 16;
  f.send(encode_data(h, pattern(4, 3), 40));
  CHECK(f.terminated() == errc::data_offset_in_header);
}

TEST_CASE("3.1.5.8: DataOffset + DataLength beyond the message terminates") {
  fixture f;
  auto h = fixture::header(10);
  bytes b = encode_data(h, pattern(10, 4));
  b.resize(b.size() - 1);  // one byte short of DataOffset + DataLength
  f.send(b);
  CHECK(f.terminated() == errc::data_out_of_bounds);
  CHECK(f.delivered.empty());
}

TEST_CASE("3.1.5.8: DataLength + RemainingDataLength above MaxFragmentedRecvSize terminates") {
  parameters p;
  p.max_fragmented_size = 200000;
  fixture f(p);
  SUBCASE("one byte over, first fragment") {
    f.send(encode_data(fixture::header(1000, 199001), pattern(1000, 5)));
    CHECK(f.terminated() == errc::fragmented_message_too_large);
  }
  SUBCASE("exactly the maximum is accepted") {
    f.send(encode_data(fixture::header(1000, 199000), pattern(1000, 5)));
    CHECK_FALSE(f.terminated());
  }
  SUBCASE("a remaining length near 4 GiB is refused before any allocation") {
    f.send(encode_data(fixture::header(1000, 0xFFFFFFFFu), pattern(1000, 5)));
    CHECK(f.terminated() == errc::fragmented_message_too_large);
  }
}

TEST_CASE("3.1.5.8: reassembly of fragments into one message") {
  fixture f;
  const bytes whole = pattern(3000, 6);
  f.send(encode_data(fixture::header(1340, 1660), bytes(whole.begin(), whole.begin() + 1340)));
  f.send(encode_data(fixture::header(1340, 320), bytes(whole.begin() + 1340, whole.begin() + 2680)));
  CHECK(f.delivered.empty());
  f.send(encode_data(fixture::header(320, 0), bytes(whole.begin() + 2680, whole.end())));
  REQUIRE(f.delivered.size() == 1);
  CHECK(f.delivered[0] == whole);
  CHECK(f.server->stats().fragments_received == 3);
}

TEST_CASE("3.1.5.8: a disconnect halfway through a fragmented message is reported as such") {
  fixture f;
  f.send(encode_data(fixture::header(1000, 500), pattern(1000, 9)));
  SUBCASE("mid-message") {
    f.peer->endpoint().disconnect();
    f.d.settle();
    CHECK(f.receive_error == errc::peer_disconnected_mid_message);
    CHECK(f.delivered.empty());  // never a short message
    CHECK(std::error_code(errc::peer_disconnected_mid_message) == condition::transport_failure);
  }
  SUBCASE("after the last fragment: a plain disconnect") {
    f.send(encode_data(fixture::header(500, 0), pattern(500, 10)));
    f.peer->endpoint().disconnect();
    f.d.settle();
    CHECK(f.delivered.size() == 1);
    CHECK(f.receive_error == errc::peer_disconnected);
  }
}

TEST_CASE("3.1.5.8: a continuation with an inconsistent RemainingDataLength terminates") {
  fixture f;
  f.send(encode_data(fixture::header(100, 200), pattern(100, 7)));
  SUBCASE("too much remaining") { f.send(encode_data(fixture::header(100, 150), pattern(100, 8))); }
  SUBCASE("ends early") { f.send(encode_data(fixture::header(100, 0), pattern(100, 8))); }
  SUBCASE("overruns") { f.send(encode_data(fixture::header(300, 0), pattern(300, 8))); }
  CHECK(f.terminated() == errc::remaining_length_mismatch);
  CHECK(f.delivered.empty());
}

TEST_CASE("3.1.5.8: an empty message between fragments carries credits only") {
  fixture f;
  f.send(encode_data(fixture::header(100, 100), pattern(100, 9)));
  f.send(encode_data(fixture::header(0)));
  f.send(encode_data(fixture::header(100, 0), pattern(100, 10)));
  CHECK_FALSE(f.terminated());
  REQUIRE(f.delivered.size() == 1);
  CHECK(f.delivered[0].size() == 200);
}

TEST_CASE("3.1.5.8: DataLength 0 with RemainingDataLength > 0 terminates") {
  fixture f;
  f.send(encode_data(fixture::header(0, 100)));
  CHECK(f.terminated() == errc::empty_fragment);
}

TEST_CASE("3.1.5.9: a peer that sends beyond its credits is terminated") {
  fixture f;
  const auto granted = f.server->credits().peer_credits();
  REQUIRE(granted == 255);
  // The raw peer is granted 255 receives; the server reposts each as it is consumed, but a
  // grant travels only on a message the server sends, and it has no send credits yet.
  auto h = fixture::header(1);
  h.credits_granted = 0;
  for (int i = 0; i < 255; ++i) REQUIRE_FALSE(f.peer->send(encode_data(h, pattern(1, 1))));
  f.d.settle();
  CHECK_FALSE(f.server->error());
  CHECK(f.server->credits().peer_credits() == 0);
  f.send(encode_data(h, pattern(1, 1)));
  CHECK(f.terminated() == errc::peer_exceeded_credits);
  CHECK(f.delivered.size() == 255);
}

TEST_CASE("3.1.5.9: granting past 65535 send credits terminates") {
  fixture f;
  auto h = fixture::header(0);
  h.credits_granted = 65535;
  f.send(encode_data(h));
  CHECK_FALSE(f.terminated());
  h.credits_granted = 1;
  f.send(encode_data(h));
  CHECK(f.terminated() == errc::credits_overflow);
}

TEST_CASE("limits: CreditsRequested 65535 in Data Transfer Messages never posts more than ReceiveCreditMax") {
  parameters p;
  p.receive_credit_max = 16;
  fixture f(p);
  auto h = fixture::header(3);
  h.credits_requested = 0xffff;
  for (int i = 0; i < 40; ++i) {
    f.send(encode_data(h, pattern(3, i)));
    CHECK(f.server->credits().receive_credit_target() == 16);
    CHECK(f.server->credits().posted() <= 16);
    CHECK(f.server->credits().peer_credits() <= 16);
  }
  CHECK(f.delivered.size() == 40);
  CHECK_FALSE(f.server->error());
}

TEST_CASE("a message larger than MaxReceiveSize is a transport length error") {
  fixture f;
  f.send(encode_data(fixture::header(1341), pattern(1341, 11)));  // 1365 bytes > 1364
  CHECK(f.terminated() == errc::local_length_error);
}

TEST_CASE("one receive at a time") {
  fixture f;  // its receive is pending
  std::optional<std::error_code> second;
  bytes other;
  f.server->async_receive(other, [&](std::error_code ec, std::size_t) { second = ec; });
  f.d.settle();
  CHECK(second == errc::operation_in_progress);
}

TEST_CASE("3.1.5.8: RESPONSE_REQUESTED gets a prompt reply that does not itself request one") {
  fixture f;
  auto h = fixture::header(0);
  h.flags = wire::smb_direct_response_requested;
  f.send(encode_data(h));
  f.peer->drain();
  REQUIRE(f.peer->received.size() == 1);
  wire::data_transfer_message m;
  REQUIRE_FALSE(wire::decode(f.peer->received[0], m));
  CHECK(f.peer->received[0].size() == 20);
  CHECK(m.header.flags == 0);
  CHECK(m.header.credits_requested == 255);
  CHECK(f.server->stats().keepalives_received == 1);
}
