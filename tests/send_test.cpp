// Sending, [MS-SMBD] 3.1.4.2, 3.1.5.1, 3.1.5.4: fragmentation at the exact boundaries, the
// MaxFragmentedSendSize limit, strict fragment order, and the last-credit rule, observed by a
// scripted raw peer playing the server.
#include <doctest/doctest.h>

#include "support/client_session.hpp"

using namespace smbdirect;
using namespace smbdirect::test;
using namespace std::chrono_literals;

namespace {

struct fixture : client_session {
  using client_session::client_session;

  // Data Transfer Messages the peer got since negotiation (the request is received[0]).
  std::vector<wire::data_transfer_header> headers() {
    peer->drain();
    std::vector<wire::data_transfer_header> out;
    for (std::size_t i = 1; i < peer->received.size(); ++i) {
      wire::data_transfer_message m;
      REQUIRE_FALSE(wire::decode(peer->received[i], m));
      out.push_back(m.header);
    }
    return out;
  }

  std::optional<std::pair<std::error_code, std::size_t>> send(const bytes& message) {
    auto result = std::make_shared<std::optional<std::pair<std::error_code, std::size_t>>>();
    client->async_send(asio::buffer(message), [result](std::error_code ec, std::size_t n) { *result = std::pair{ec, n}; });
    d.settle();
    return *result;
  }

};

}  // namespace

TEST_CASE("the first message after negotiation grants every posted receive (4.1)") {
  fixture f;
  const auto h = f.headers();
  REQUIRE(h.size() == 1);  // nothing to send: an empty grant goes out at once
  CHECK(h[0].credits_granted == 255);
  CHECK(h[0].credits_requested == 255);
  CHECK(h[0].data_length == 0);
  CHECK(f.peer->received[1].size() == 20);
}

TEST_CASE("3.1.5.4: MaxSendSize - 24 bytes of payload fit one message, one more needs two") {
  fixture f;
  const bytes exact = pattern(1340, 1);
  const auto r1 = f.send(exact);
  REQUIRE(r1);
  CHECK_FALSE(r1->first);
  CHECK(r1->second == 1340);
  auto h = f.headers();
  REQUIRE(h.size() == 2);
  CHECK(f.peer->received[2].size() == 1364);
  CHECK(h[1].data_offset == 24);
  CHECK(h[1].data_length == 1340);
  CHECK(h[1].remaining_data_length == 0);

  const bytes over = pattern(1341, 2);
  REQUIRE(f.send(over));
  h = f.headers();
  REQUIRE(h.size() == 4);
  CHECK(h[2].data_length == 1340);
  CHECK(h[2].remaining_data_length == 1);
  CHECK(h[3].data_length == 1);
  CHECK(h[3].remaining_data_length == 0);
  CHECK(f.peer->received[4].size() == 25);
  bytes joined(f.peer->received[3].begin() + 24, f.peer->received[3].end());
  joined.insert(joined.end(), f.peer->received[4].begin() + 24, f.peer->received[4].end());
  CHECK(joined == over);
}

TEST_CASE("3.1.4.2: MaxFragmentedSendSize is accepted, one byte more is a local error") {
  auto rsp = good_response();
  rsp.max_fragmented_size = 131072;
  fixture f(rsp);
  auto ok = f.send(pattern(131072, 3));
  REQUIRE(ok);
  CHECK_FALSE(ok->first);
  CHECK(f.headers().size() == 1 + 98);  // ceil(131072 / 1340)
  auto too_big = f.send(pattern(131073, 4));
  REQUIRE(too_big);
  CHECK(too_big->first == errc::message_too_large);
  CHECK(f.headers().size() == 1 + 98);  // nothing of it was sent
  CHECK_FALSE(f.client->error());       // and the connection is still usable
  auto after = f.send(pattern(10, 5));
  REQUIRE(after);
  CHECK_FALSE(after->first);
}

TEST_CASE("scatter-gather input: pieces are sent in place, or copied when a fragment spans too many") {
  fixture f;
  const bytes whole = pattern(3000, 12);
  std::vector<asio::const_buffer> pieces;
  for (std::size_t at = 0; at < whole.size(); at += 100) pieces.emplace_back(whole.data() + at, 100);
  std::optional<std::error_code> r;
  f.client->async_send(pieces, [&](std::error_code ec, std::size_t n) { r = ec; CHECK(n == 3000); });
  f.d.settle();
  REQUIRE(r == std::error_code{});
  const auto h = f.headers();
  REQUIRE(h.size() == 1 + 3);  // 1340 + 1340 + 320: 14 pieces per full fragment, above the SGE limit
  bytes joined;
  for (std::size_t i = 2; i < f.peer->received.size(); ++i)
    joined.insert(joined.end(), f.peer->received[i].begin() + 24, f.peer->received[i].end());
  CHECK(joined == whole);
}

TEST_CASE("an empty upper-layer message is refused: on the wire it would be a credit-only message") {
  fixture f;
  auto r = f.send({});
  REQUIRE(r);
  CHECK(r->first == errc::empty_message);
  CHECK(f.headers().size() == 1);  // nothing sent
  CHECK_FALSE(f.client->error());
}

TEST_CASE("3.1.5.1, 3.1.5.9: the last credit goes on a message that grants, with a receive posted past ReceiveCreditMax") {
  parameters p;
  p.receive_credit_max = 1;  // its one receive is already granted to the peer
  fixture f(good_response(2, 1), p);
  CHECK(f.headers().size() == 1);  // the grant of our single receive used one of 2 credits
  CHECK(f.client->credits().send_credits() == 1);
  CHECK(f.client->credits().posted() == 1);
  auto result = std::make_shared<std::optional<std::error_code>>();
  const bytes m = pattern(10, 6);
  f.client->async_send(asio::buffer(m), [result](std::error_code ec, std::size_t) { *result = ec; });
  f.d.settle();
  REQUIRE(result->has_value());
  CHECK_FALSE(**result);
  const auto h = f.headers();
  REQUIRE(h.size() == 2);
  CHECK(h[1].credits_granted == 1);  // the receive posted for it: 3.1.5.9 "MUST ... post at least one"
  CHECK(h[1].data_length == 10);
  CHECK(f.client->credits().posted() == 2);
  CHECK(f.client->credits().send_credits() == 0);
}

TEST_CASE("3.1.5.1: with every receive posted and granted, the last credit is kept for a message that grants") {
  // Pure ledger. ReceiveCreditMax 1: at most 2 receives posted, one of them only for a send
  // that spends the last credit.
  protocol::credit_ledger l(1, 1, 8, 3);
  l.on_posted();
  CHECK(l.extra_receives_wanted(true) == 0);  // SendCredits 3: no extra needed
  CHECK(l.extra_receives_wanted(false) == 0);
  CHECK(l.on_send() == 1);
  CHECK(l.send_credits() == 2);
  CHECK(l.extra_receives_wanted(true) == 0);
  CHECK(l.on_send() == 0);
  CHECK(l.send_credits() == 1);
  CHECK(l.extra_receives_wanted(false) == 0);  // only before a send
  CHECK(l.extra_receives_wanted(true) == 1);   // toward a grant of 2, one past the max at most
  l.on_posted();
  CHECK(l.extra_receives_wanted(true) == 0);  // at ReceiveCreditMax + 1
  CHECK(l.can_send());
  CHECK(l.on_send() == 1);
  CHECK_FALSE(l.can_send());  // no credit
  REQUIRE_FALSE(l.on_message_received(8, 2));  // the peer grants 2 and uses one of our receives
  CHECK(l.on_send() == 0);   // posted 1, granted 1: nothing new to grant
  CHECK(l.send_credits() == 1);
  CHECK(l.extra_receives_wanted(true) == 1);
  l.on_posted();
  CHECK(l.on_send() == 1);  // the last credit grants the extra receive
  REQUIRE_FALSE(l.on_message_received(8, 1));
  l.on_posted();  // both receives posted and granted again
  CHECK(l.on_send() == 1);
  REQUIRE_FALSE(l.on_message_received(8, 2));
  CHECK(l.send_credits() == 2);
  // Every receive the limit allows is posted and held by the peer: the last credit waits.
  l.on_posted();
  CHECK(l.on_send() == 1);
  CHECK(l.posted() == 2);
  CHECK(l.peer_credits() == 2);
  CHECK(l.send_credits() == 1);
  CHECK(l.extra_receives_wanted(true) == 0);
  CHECK_FALSE(l.can_send());
}

TEST_CASE("3.1.5.9: left without credits past credit_grant_timeout, the connection ends") {
  fixture f(good_response(1, 1));
  CHECK(f.client->credits().send_credits() == 0);  // the initial grant used the only credit
  auto result = std::make_shared<std::optional<std::error_code>>();
  const bytes m = pattern(10, 7);
  f.client->async_send(asio::buffer(m), [result](std::error_code ec, std::size_t) { *result = ec; });
  f.d.settle();  // the send starts waiting for a credit now
  f.d.advance(4999ms);
  CHECK_FALSE(result->has_value());
  REQUIRE(f.d.run_until([&] { return result->has_value(); }, std::chrono::seconds(1)));
  CHECK(**result == errc::credit_grant_timeout);
  CHECK(f.client->error() == errc::credit_grant_timeout);
}

TEST_CASE("3.1.5.4: fragments are never interleaved with other messages or empty messages") {
  fixture f(good_response(4, 255));
  CHECK(f.client->credits().send_credits() == 3);  // one went on the initial grant
  const bytes a = pattern(1340 * 5, 8), b = pattern(1340 * 2, 9);
  int done = 0;
  f.client->async_send(asio::buffer(a), [&](std::error_code ec, std::size_t) { done += !ec; });
  f.client->async_send(asio::buffer(b), [&](std::error_code ec, std::size_t) { done += !ec; });
  f.d.settle();
  CHECK(f.headers().size() == 1 + 3);  // three fragments, the last granting an extra receive
  f.peer_sends(0, wire::smb_direct_response_requested);  // asks for a reply mid-message
  CHECK(f.headers().size() == 1 + 3);  // no credit for the reply yet
  f.peer_sends(10);
  REQUIRE(done == 2);
  const auto h = f.headers();
  REQUIRE(h.size() == 1 + 7);
  const std::uint32_t a_remaining[] = {5360, 4020, 2680, 1340, 0}, b_remaining[] = {1340, 0};
  for (int i = 0; i < 5; ++i) CHECK(h[1 + i].remaining_data_length == a_remaining[i]);
  for (int i = 0; i < 2; ++i) CHECK(h[6 + i].remaining_data_length == b_remaining[i]);
  for (std::size_t i = 1; i < h.size(); ++i) CHECK(h[i].data_length > 0);
  CHECK(h[3].credits_granted == 1);  // the receive posted past ReceiveCreditMax for the last credit
  CHECK(h[4].flags == 0);  // the reply rides on fragment 4, and never requests a reply itself
}

TEST_CASE("send before negotiation is refused") {
  driver d;
  auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
  loopback_connection c(std::move(a), {}, &d.clock);
  std::optional<std::error_code> r;
  const bytes m(3);
  c.async_send(asio::buffer(m), [&](std::error_code ec, std::size_t) { r = ec; });
  d.settle();
  CHECK(r == errc::not_connected);
}
