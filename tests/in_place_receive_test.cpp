// Receiving in place (connection::async_receive(received_message&)): a message's payload stays
// in the receive buffers it arrived in, within parameters::lent_receive_buffers, and is copied
// when that budget runs out; lending never changes what the peer is granted ([MS-SMBD] 3.1.5.8,
// 3.1.5.9). A scripted raw peer chooses the fragments.
#include <doctest/doctest.h>

#include "support/server_session.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {

parameters lending(std::uint32_t buffers) {
  parameters p;
  p.lent_receive_buffers = buffers;
  return p;
}

// Our server, negotiated with a raw client that sends the fragments a test picks.
struct fixture : server_session {
  explicit fixture(parameters p) : server_session(p) {}

  /// Sends `message` as fragments of the given payload sizes (which sum to its size).
  void send(const bytes& message, std::initializer_list<std::size_t> fragments) {
    std::size_t at = 0;
    for (std::size_t n : fragments) {
      wire::data_transfer_header h;
      h.credits_requested = 255;
      h.credits_granted = 1;
      h.data_offset = 24;
      h.data_length = static_cast<std::uint32_t>(n);
      h.remaining_data_length = static_cast<std::uint32_t>(message.size() - at - n);
      REQUIRE_FALSE(peer->send(encode_data(h, bytes(message.begin() + at, message.begin() + at + n))));
      at += n;
    }
    REQUIRE(at == message.size());
    d.settle();
  }

  void receive(received_message& m) {
    std::optional<std::error_code> done;
    server->async_receive(m, [&](std::error_code ec, std::size_t) { done = ec; });
    REQUIRE(d.run_until([&] { return done.has_value(); }));
    REQUIRE_FALSE(*done);
  }
};

bytes gather(const received_message& m) {
  bytes out;
  for (const auto& b : m.buffers()) {
    const auto* p = static_cast<const std::byte*>(b.data());
    out.insert(out.end(), p, p + b.size());
  }
  return out;
}

}  // namespace

TEST_CASE("a fragmented message arrives in place: one piece per fragment, no copy") {
  fixture f(lending(8));
  const bytes message = pattern(250, 1);
  f.send(message, {100, 100, 50});
  received_message m;
  f.receive(m);
  CHECK(m.lent());
  CHECK(m.size() == 250);
  REQUIRE(m.buffers().size() == 3);
  CHECK(m.buffers()[2].size() == 50);
  CHECK(gather(m) == message);
  CHECK(f.server->stats().messages_received_in_place == 1);
  CHECK(f.server->stats().lent_messages_copied == 0);
}

TEST_CASE("a message that outgrows the lending budget mid-reassembly is copied, whole") {
  fixture f(lending(2));
  const bytes big = pattern(300, 2);
  f.send(big, {100, 100, 100});
  received_message m;
  f.receive(m);
  CHECK_FALSE(m.lent());
  CHECK(m.buffers().size() == 1);
  CHECK(gather(m) == big);
  CHECK(f.server->stats().lent_messages_copied == 1);
  // The two buffers it had borrowed came back: the next message of two fragments is lent.
  const bytes next = pattern(150, 3);
  f.send(next, {100, 50});
  f.receive(m);
  CHECK(m.lent());
  CHECK(gather(m) == next);
}

TEST_CASE("a held message keeps its buffers until release(); then lending resumes") {
  fixture f(lending(4));
  const bytes a = pattern(300, 4), b = pattern(300, 5), c = pattern(300, 6);
  f.send(a, {100, 100, 100});
  received_message held;
  f.receive(held);
  REQUIRE(held.lent());
  f.send(b, {100, 100, 100});  // only one buffer left to lend: b is copied
  received_message m;
  f.receive(m);
  CHECK_FALSE(m.lent());
  CHECK(gather(m) == b);
  CHECK(gather(held) == a);  // b's arrival did not touch the held buffers
  held.release();
  CHECK(held.empty());
  CHECK(held.buffers().empty());
  f.send(c, {100, 100, 100});
  f.receive(m);
  CHECK(m.lent());
  CHECK(gather(m) == c);
}

TEST_CASE("lending never withholds a credit: receives posted are the same while buffers are held") {
  fixture lent(lending(16)), copied(lending(0));
  const bytes message = pattern(500, 7);
  received_message held_lent, held_copied;
  for (auto* f : {&lent, &copied}) {
    f->send(message, {100, 100, 100, 100, 100});
    f->receive(f == &lent ? held_lent : held_copied);
  }
  REQUIRE(held_lent.lent());
  REQUIRE_FALSE(held_copied.lent());
  CHECK(lent.server->credits().posted() == copied.server->credits().posted());
  CHECK(lent.server->credits().posted() > 0);
}

TEST_CASE("a vector receive copies a lent message out and gives its buffers back") {
  fixture f(lending(3));
  const bytes a = pattern(300, 8), b = pattern(300, 9);
  f.send(a, {100, 100, 100});
  std::vector<std::byte> out;
  std::optional<std::error_code> done;
  f.server->async_receive(out, [&](std::error_code ec, std::size_t) { done = ec; });
  REQUIRE(f.d.run_until([&] { return done.has_value(); }));
  REQUIRE_FALSE(*done);
  CHECK(out == a);
  f.send(b, {100, 100, 100});  // would be copied if a's three buffers had not come back
  received_message m;
  f.receive(m);
  CHECK(m.lent());
  CHECK(gather(m) == b);
}

TEST_CASE("delivering a message does not disturb the one being reassembled behind it") {
  for (std::uint32_t lent : {0u, 8u}) {
    CAPTURE(lent);
    fixture f(lending(lent));
    const bytes a = pattern(200, 12), b = pattern(300, 13);
    f.send(a, {200});
    wire::data_transfer_header h;  // b's first fragment, before a is read
    h.credits_requested = 255;
    h.data_offset = 24;
    h.data_length = 100;
    h.remaining_data_length = 200;
    REQUIRE_FALSE(f.peer->send(encode_data(h, bytes(b.begin(), b.begin() + 100))));
    f.d.settle();
    received_message m;
    f.receive(m);
    CHECK(gather(m) == a);
    h.data_length = 200;
    h.remaining_data_length = 0;
    REQUIRE_FALSE(f.peer->send(encode_data(h, bytes(b.begin() + 100, b.end()))));
    f.d.settle();
    received_message n;
    f.receive(n);
    CHECK(gather(n) == b);
    CHECK(gather(m) == a);
  }
}

TEST_CASE("a lent message outlives its connection") {
  fixture f(lending(8));
  const bytes message = pattern(200, 10);
  f.send(message, {120, 80});
  received_message m;
  f.receive(m);
  REQUIRE(m.lent());
  f.server.reset();  // terminates and drops the connection
  f.d.settle();
  CHECK(gather(m) == message);
  m.release();
}

TEST_CASE("without lent_receive_buffers, an in-place receive hands over a copy") {
  fixture f{parameters{}};
  const bytes message = pattern(250, 11);
  f.send(message, {100, 150});
  received_message m;
  f.receive(m);
  CHECK_FALSE(m.lent());
  CHECK(gather(m) == message);
  CHECK(f.server->stats().messages_received_in_place == 0);
  CHECK(f.server->stats().lent_messages_copied == 0);
}

TEST_CASE("lent_receive_buffers beyond the 65536 receive buffers a connection can index are refused") {
  driver d;
  auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
  parameters p;
  p.receive_credit_max = 65535;
  p.lent_receive_buffers = 1;
  loopback_connection c(std::move(a), p, &d.clock);
  std::optional<std::error_code> accepted;
  c.async_accept([&](std::error_code ec) { accepted = ec; });
  REQUIRE(d.run_until([&] { return accepted.has_value(); }));
  CHECK(*accepted == errc::invalid_argument);
}
