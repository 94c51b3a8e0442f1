// smbdirect::stream: Direct TCP transport framing ([MS-SMB2] 2.1) over upper-layer messages.
// The client writes through a stream; the server reads plain connection messages (or a stream)
// so each test sees exactly which messages went over the connection.
#include <doctest/doctest.h>

#include <random>

#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/streambuf.hpp>
#include <asio/write.hpp>

#include "smbdirect/stream.hpp"
#include "support/connected_pair.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {

using loopback_stream = stream<loopback::endpoint>;

bytes framed(const bytes& body) {
  const auto n = body.size();
  bytes b{std::byte{0}, static_cast<std::byte>(n >> 16), static_cast<std::byte>(n >> 8), static_cast<std::byte>(n)};
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

bytes concat(std::initializer_list<bytes> parts) {
  bytes all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

struct write_result {
  std::error_code ec;
  std::size_t bytes = 0;
};

// A negotiated pair: the client end behind a stream, the server end a plain connection whose
// received messages are collected in `messages`.
struct fixture {
  connected_pair p;
  std::optional<loopback_stream> client;
  std::vector<bytes> messages;
  std::optional<std::error_code> server_error;
  bytes incoming;

  explicit fixture(parameters client_params = {}, parameters server_params = {}) : p(client_params, server_params) {
    const auto [c, s] = p.negotiate();
    REQUIRE_FALSE(c);
    REQUIRE_FALSE(s);
    client.emplace(std::move(*p.client));
    receive_next();
  }

  void receive_next() {
    p.server->async_receive(incoming, [this](std::error_code ec, std::size_t) {
      if (ec) {
        server_error = ec;
        return;
      }
      messages.push_back(incoming);
      receive_next();
    });
  }

  /// One async_write_some of `b` (as one buffer), run to completion.
  write_result write_some(const bytes& b) {
    std::optional<write_result> r;
    client->async_write_some(asio::buffer(b), [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
    REQUIRE(p.d.run_until([&] { return r.has_value(); }));
    return *r;
  }

  /// One asio::async_write per `chunk` bytes of `b`.
  write_result write_in_chunks(const bytes& b, std::size_t chunk) {
    write_result total;
    for (std::size_t at = 0; at < b.size() && !total.ec; at += chunk) {
      std::optional<write_result> r;
      asio::async_write(*client, asio::buffer(b.data() + at, std::min(chunk, b.size() - at)),
                        [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
      REQUIRE(p.d.run_until([&] { return r.has_value(); }));
      total.ec = r->ec;
      total.bytes += r->bytes;
    }
    return total;
  }
};

// A server end behind a stream; the client end sends plain messages.
struct reader_fixture {
  connected_pair p;
  std::optional<loopback_stream> server;

  explicit reader_fixture(parameters client_params = {}, parameters server_params = {})
      : p(client_params, server_params) {
    const auto [c, s] = p.negotiate();
    REQUIRE_FALSE(c);
    REQUIRE_FALSE(s);
    server.emplace(std::move(*p.server));
  }

  void send(const bytes& b) {
    std::optional<std::error_code> r;
    p.client->async_send(asio::buffer(b), [&](std::error_code ec, std::size_t) { r = ec; });
    REQUIRE(p.d.run_until([&] { return r.has_value(); }));
    REQUIRE_FALSE(*r);
  }

  write_result read(asio::mutable_buffer into) {
    std::optional<write_result> r;
    asio::async_read(*server, into, [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
    REQUIRE(p.d.run_until([&] { return r.has_value(); }));
    return *r;
  }

  write_result read_some(asio::mutable_buffer into) {
    std::optional<write_result> r;
    server->async_read_some(into, [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
    REQUIRE(p.d.run_until([&] { return r.has_value(); }));
    return *r;
  }
};

}  // namespace

// --------------------------------------------------------------------------- writing

TEST_CASE("write: header and body in one write become one upper-layer message") {
  fixture f;
  const bytes body = pattern(3000, 1);  // > MaxSendSize 1364: fragmented on the connection
  const auto r = f.write_some(framed(body));
  CHECK_FALSE(r.ec);
  CHECK(r.bytes == 3004);
  REQUIRE(f.messages.size() == 1);
  CHECK(f.messages[0] == body);
  CHECK(f.p.server->stats().fragments_received == 3);
}

TEST_CASE("write: one byte at a time sends nothing until the last byte") {
  fixture f;
  const bytes body = pattern(2000, 2);
  const bytes all = framed(body);
  for (std::size_t i = 0; i + 1 < all.size(); ++i) {
    const auto r = f.write_some(bytes{all[i]});
    REQUIRE_FALSE(r.ec);
    REQUIRE(r.bytes == 1);
  }
  CHECK(f.client->next_layer().stats().messages_sent == 0);
  CHECK(f.messages.empty());
  CHECK(f.write_some(bytes{all.back()}).bytes == 1);
  REQUIRE(f.messages.size() == 1);
  CHECK(f.messages[0] == body);
}

TEST_CASE("write: header split from body, and the header itself split") {
  fixture f;
  const bytes a = pattern(100, 3), b = pattern(5000, 4);
  SUBCASE("header alone, then body") {
    const bytes all = framed(a);
    CHECK(f.write_some(bytes(all.begin(), all.begin() + 4)).bytes == 4);
    CHECK(f.write_some(a).bytes == a.size());
  }
  SUBCASE("2 + 2 header bytes, then the body in uneven pieces") {
    const bytes all = framed(a);
    CHECK(f.write_some(bytes(all.begin(), all.begin() + 2)).bytes == 2);
    CHECK(f.write_some(bytes(all.begin() + 2, all.begin() + 4)).bytes == 2);
    CHECK(f.write_some(bytes(all.begin() + 4, all.begin() + 41)).bytes == 37);
    CHECK(f.messages.empty());
    CHECK(f.write_some(bytes(all.begin() + 41, all.end())).bytes == 63);
  }
  SUBCASE("asio::async_write in chunks of 7 bytes across two messages") {
    const bytes all = concat({framed(a), framed(b)});
    const auto r = f.write_in_chunks(all, 7);
    CHECK_FALSE(r.ec);
    CHECK(r.bytes == all.size());
    REQUIRE(f.messages.size() == 2);
    CHECK(f.messages[1] == b);
  }
  REQUIRE_FALSE(f.messages.empty());
  CHECK(f.messages[0] == a);
}

TEST_CASE("write: many messages in one write, and one ending mid-write") {
  fixture f;
  const bytes a = pattern(10, 5), b = pattern(1500, 6), c = pattern(1, 7), d = pattern(700, 8);
  const bytes fd = framed(d);
  const bytes first = concat({framed(a), framed(b), framed(c), bytes(fd.begin(), fd.begin() + 300)});
  const auto r = f.write_some(first);
  CHECK_FALSE(r.ec);
  CHECK(r.bytes == first.size());
  REQUIRE(f.messages.size() == 3);
  CHECK(f.messages[0] == a);
  CHECK(f.messages[1] == b);
  CHECK(f.messages[2] == c);
  CHECK(f.write_some(bytes(fd.begin() + 300, fd.end())).bytes == fd.size() - 300);
  REQUIRE(f.messages.size() == 4);
  CHECK(f.messages[3] == d);
}

TEST_CASE("write: a buffer sequence, as asio::async_write passes one, with empty pieces") {
  fixture f;
  const bytes body = pattern(4000, 9);
  const bytes all = framed(body);
  const bytes head(all.begin(), all.begin() + 4);
  const std::array<asio::const_buffer, 5> pieces{asio::buffer(head.data(), 1), asio::const_buffer(), asio::buffer(head.data() + 1, 3),
                                                 asio::buffer(body.data(), 1000), asio::buffer(body.data() + 1000, 3000)};
  std::optional<write_result> r;
  asio::async_write(*f.client, pieces, [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
  REQUIRE(f.p.d.run_until([&] { return r.has_value(); }));
  CHECK_FALSE(r->ec);
  CHECK(r->bytes == 4004);
  REQUIRE(f.messages.size() == 1);
  CHECK(f.messages[0] == body);
}

TEST_CASE("write: random messages cut at random points arrive whole and in order") {
  fixture f;
  std::minstd_rand rng(20261121);
  for (int round = 0; round < 20; ++round) {
    std::vector<bytes> sent;
    bytes all;
    for (int i = 0; i < 10; ++i) {
      sent.push_back(pattern(1 + rng() % 5000, static_cast<unsigned>(round * 100 + i)));
      const bytes one = framed(sent.back());
      all.insert(all.end(), one.begin(), one.end());
    }
    f.messages.clear();
    std::size_t at = 0;
    while (at < all.size()) {
      const std::size_t n = std::min<std::size_t>(all.size() - at, 1 + rng() % (rng() % 2 ? 8 : 6000));
      const auto r = f.write_some(bytes(all.begin() + at, all.begin() + at + n));
      REQUIRE_FALSE(r.ec);
      REQUIRE(r.bytes == n);
      at += n;
    }
    REQUIRE(f.messages == sent);
  }
}

TEST_CASE("write: a bad header fails the write and sends nothing of its message") {
  parameters server;
  server.max_fragmented_size = 200000;  // the client's MaxFragmentedSendSize
  fixture f({}, server);
  const bytes good = pattern(50, 10);
  bytes bad;
  std::error_code expected;
  SUBCASE("first byte not zero (a NetBIOS session message type)") {
    bad = framed(pattern(20, 11));
    bad[0] = std::byte{0x85};
    expected = errc::stream_header_invalid;
  }
  SUBCASE("length above the negotiated MaxFragmentedSize") {
    bad = framed(pattern(200001, 12));
    expected = errc::message_too_large;
  }
  SUBCASE("length exactly MaxFragmentedSize is fine") {
    bad = framed(pattern(200000, 13));
  }
  SUBCASE("length 0") {
    bad = framed({});
    expected = errc::empty_message;
  }
  const auto r = f.write_some(concat({framed(good), bad}));
  CHECK(r.ec == expected);
  if (expected) {
    CHECK(r.bytes == good.size() + 4);  // only the good message was consumed
    REQUIRE(f.messages.size() == 1);
    CHECK(f.messages[0] == good);
    CHECK(f.client->next_layer().is_connected());
    // The writer expects a new header again.
    CHECK_FALSE(f.write_some(framed(good)).ec);
    CHECK(f.messages.size() == 2);
  } else {
    CHECK(r.bytes == good.size() + 4 + bad.size());
    CHECK(f.messages.size() == 2);
  }
}

TEST_CASE("write: a bad header completed by a later write sends nothing") {
  fixture f;
  CHECK(f.write_some(bytes{std::byte{1}, std::byte{0}}).bytes == 2);
  const auto r = f.write_some(bytes{std::byte{0}, std::byte{8}, std::byte{1}});
  CHECK(r.ec == errc::stream_header_invalid);
  CHECK(r.bytes == 0);
  CHECK(f.messages.empty());
}

TEST_CASE("write: before negotiation, not_connected") {
  connected_pair p;
  loopback_stream s(std::move(*p.client));
  std::optional<write_result> r;
  const bytes b = framed(pattern(10, 14));
  s.async_write_some(asio::buffer(b), [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
  REQUIRE(p.d.run_until([&] { return r.has_value(); }));
  CHECK(r->ec == errc::not_connected);
  CHECK(r->bytes == 0);
}

TEST_CASE("write: a second write while one is pending is refused") {
  fixture f;
  const bytes a = framed(pattern(100, 15));
  std::optional<write_result> r1, r2;
  f.client->async_write_some(asio::buffer(a), [&](std::error_code ec, std::size_t n) { r1 = write_result{ec, n}; });
  f.client->async_write_some(asio::buffer(a), [&](std::error_code ec, std::size_t n) { r2 = write_result{ec, n}; });
  REQUIRE(f.p.d.run_until([&] { return r1 && r2; }));
  CHECK_FALSE(r1->ec);
  CHECK(r2->ec == errc::operation_in_progress);
  CHECK(f.messages.size() == 1);
}

TEST_CASE("close in the middle of a written message: reported, and the peer sees no short message") {
  fixture f;
  const bytes all = framed(pattern(1000, 16));
  CHECK(f.write_some(bytes(all.begin(), all.begin() + 500)).bytes == 500);
  std::optional<std::error_code> closed;
  f.client->async_close([&](std::error_code ec) { closed = ec; });
  REQUIRE(f.p.d.run_until([&] { return closed && f.server_error; }));
  CHECK(*closed == errc::stream_message_incomplete);
  CHECK(f.messages.empty());
  CHECK(*f.server_error == errc::peer_disconnected);
}

TEST_CASE("close between messages succeeds; the stream's reader then sees eof") {
  connected_pair p;
  REQUIRE_FALSE(p.negotiate().first);
  loopback_stream client(std::move(*p.client)), server(std::move(*p.server));
  const bytes all = framed(pattern(300, 17));
  std::optional<write_result> w;
  asio::async_write(client, asio::buffer(all), [&](std::error_code ec, std::size_t n) { w = write_result{ec, n}; });
  std::optional<std::error_code> closed;
  REQUIRE(p.d.run_until([&] { return w.has_value(); }));
  client.async_close([&](std::error_code ec) { closed = ec; });
  REQUIRE(p.d.run_until([&] { return closed.has_value(); }));
  CHECK_FALSE(*closed);
  bytes got(all.size() + 1);
  std::optional<write_result> r;
  asio::async_read(server, asio::buffer(got), [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
  REQUIRE(p.d.run_until([&] { return r.has_value(); }));
  CHECK(r->ec == asio::error::eof);
  CHECK(r->bytes == all.size());
  CHECK(bytes(got.begin(), got.end() - 1) == all);
}

// --------------------------------------------------------------------------- reading

TEST_CASE("read: each message arrives as its 4-byte header, then its bytes") {
  reader_fixture f;
  const bytes a = pattern(3000, 20), b = pattern(70000, 21);  // b: above 64 KiB, length needs 3 bytes
  f.send(a);
  f.send(b);
  bytes head(4);
  REQUIRE(f.read(asio::buffer(head)).bytes == 4);
  const bytes fa = framed(a);
  CHECK(head == bytes(fa.begin(), fa.begin() + 4));
  bytes body(a.size());
  REQUIRE(f.read(asio::buffer(body)).bytes == a.size());
  CHECK(body == a);
  bytes whole(b.size() + 4);
  REQUIRE(f.read(asio::buffer(whole)).bytes == whole.size());
  CHECK(whole == framed(b));
}

TEST_CASE("read: partial reads never lose or merge bytes") {
  reader_fixture f;
  const bytes a = pattern(10, 22), b = pattern(20, 23);
  f.send(a);
  f.send(b);
  SUBCASE("3-byte reads see the header split and stop at the message boundary") {
    bytes got, piece(3);
    std::vector<std::size_t> sizes;
    while (got.size() < 38) {
      const auto r = f.read_some(asio::buffer(piece));
      REQUIRE_FALSE(r.ec);
      sizes.push_back(r.bytes);
      got.insert(got.end(), piece.begin(), piece.begin() + static_cast<std::ptrdiff_t>(r.bytes));
    }
    CHECK(got == concat({framed(a), framed(b)}));
    CHECK(sizes[4] == 2);  // 14 bytes of the first message: 3+3+3+3+2, never into the next
  }
  SUBCASE("one async_read for both messages") {
    bytes got(38);
    CHECK(f.read(asio::buffer(got)).bytes == 38);
    CHECK(got == concat({framed(a), framed(b)}));
  }
  SUBCASE("a zero-sized read completes at once with 0 bytes") {
    CHECK(f.read_some(asio::mutable_buffer()).bytes == 0);
    bytes got(14);
    CHECK(f.read(asio::buffer(got)).bytes == 14);
    CHECK(got == framed(a));
  }
}

TEST_CASE("read: async_read_until works through the stream") {
  reader_fixture f;
  const std::string text = "NEGOTIATE\r\nrest";
  f.send(bytes(reinterpret_cast<const std::byte*>(text.data()), reinterpret_cast<const std::byte*>(text.data()) + text.size()));
  asio::streambuf sb;
  std::optional<write_result> r;
  asio::async_read_until(*f.server, sb, "\r\n", [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
  REQUIRE(f.p.d.run_until([&] { return r.has_value(); }));
  CHECK_FALSE(r->ec);
  CHECK(r->bytes == 4 + 11);
  std::string line(asio::buffers_begin(sb.data()) + 4, asio::buffers_begin(sb.data()) + static_cast<std::ptrdiff_t>(r->bytes));
  CHECK(line == "NEGOTIATE\r\n");
}

TEST_CASE("read: the peer disconnecting after messages: all of them, then eof") {
  reader_fixture f;
  const bytes a = pattern(2000, 24);
  f.send(a);
  std::optional<std::error_code> closed;
  f.p.client->async_close([&](std::error_code ec) { closed = ec; });
  REQUIRE(f.p.d.run_until([&] { return closed.has_value(); }));
  bytes head(4);
  CHECK(f.read(asio::buffer(head)).bytes == 4);  // read half, the rest after the disconnect
  bytes rest(a.size() + 10);
  const auto r = f.read(asio::buffer(rest));
  CHECK(r.ec == asio::error::eof);
  CHECK(r.bytes == a.size());
  CHECK(bytes(rest.begin(), rest.begin() + 2000) == a);
}

TEST_CASE("read: a message longer than a header can state is refused, not truncated") {
  parameters client, server;
  client.max_send_size = 65536;
  server.max_receive_size = 65536;
  server.max_fragmented_size = 17 * 1024 * 1024;
  reader_fixture f(client, server);
  const bytes big(max_stream_message_size + 1, std::byte{7});
  const bytes small = pattern(5, 25);
  f.send(big);
  f.send(small);
  bytes head(4);
  CHECK(f.read(asio::buffer(head)).ec == errc::stream_message_too_large);
  // The next message is delivered normally.
  bytes got(9);
  CHECK(f.read(asio::buffer(got)).bytes == 9);
  CHECK(got == framed(small));
}

TEST_CASE("destroying or replacing the stream completes pending operations with connection_closed") {
  connected_pair other;  // outlives f: its connection may end up in f.server
  reader_fixture f;
  std::optional<write_result> r, w;
  bytes got(10);
  const bytes message = framed(pattern(10, 27));
  f.server->async_read_some(asio::buffer(got), [&](std::error_code ec, std::size_t n) { r = write_result{ec, n}; });
  f.p.d.settle();
  CHECK_FALSE(r.has_value());
  // A write that has not started running yet.
  f.server->async_write_some(asio::buffer(message), [&](std::error_code ec, std::size_t n) { w = write_result{ec, n}; });
  SUBCASE("destroyed") { f.server.reset(); }
  SUBCASE("move-assigned over") {
    REQUIRE_FALSE(other.negotiate().first);
    *f.server = loopback_stream(std::move(*other.server));
  }
  REQUIRE(f.p.d.run_until([&] { return r && w; }));
  CHECK(r->ec == errc::connection_closed);
  CHECK(w->ec == errc::connection_closed);
  CHECK(w->bytes == 0);
}

TEST_CASE("next_layer: RDMA on the connection under the stream") {
  connected_pair p;
  REQUIRE_FALSE(p.negotiate().first);
  loopback_stream client(std::move(*p.client));
  bytes target(4096);
  auto [ec, reg] = p.server->register_buffer(asio::buffer(target), access::remote_write);
  REQUIRE_FALSE(ec);
  const bytes data = pattern(4096, 26);
  std::optional<write_result> r;
  client.next_layer().async_rdma_write(asio::buffer(data), std::span(&reg.descriptor, 1),
                                       [&](std::error_code e, std::size_t n) { r = write_result{e, n}; });
  REQUIRE(p.d.run_until([&] { return r.has_value(); }));
  CHECK_FALSE(r->ec);
  CHECK(target == data);
}
