// The engine's two containers: ring_queue (FIFO order across wrap-around and growth) and
// small_vector (inline up to N, then on the heap, same items either way); and the reassembler
// reusing a recycled message's storage in place.
#include <doctest/doctest.h>

#include <asio/buffer.hpp>

#include "smbdirect/detail/inbound_message.hpp"
#include "smbdirect/detail/ring_queue.hpp"
#include "smbdirect/detail/small_vector.hpp"
#include "smbdirect/protocol/reassembler.hpp"

using namespace smbdirect;

TEST_CASE("ring_queue keeps FIFO order while it wraps and grows") {
  detail::ring_queue<int> q;
  int next_in = 0, next_out = 0;
  // Rounds of pushes and pops that leave more behind each time: wraps, then doubles from 8.
  for (int round = 1; round <= 40; ++round) {
    for (int i = 0; i < round + 3; ++i) q.push_back(next_in++);
    CHECK(q.back() == next_in - 1);
    for (int i = 0; i < round; ++i) {
      REQUIRE(!q.empty());
      CHECK(q.front() == next_out++);
      q.pop_front();
    }
  }
  CHECK(q.size() == std::size_t(next_in - next_out));
  while (!q.empty()) {
    CHECK(q.front() == next_out++);
    q.pop_front();
  }
  CHECK(next_out == next_in);
}

TEST_CASE("ring_queue swap exchanges contents") {
  detail::ring_queue<int> a, b;
  a.push_back(1);
  a.push_back(2);
  a.swap(b);
  CHECK(a.empty());
  REQUIRE(b.size() == 2);
  CHECK(b.front() == 1);
}

TEST_CASE("small_vector holds the same items inline and past its inline capacity") {
  for (int n : {0, 1, 3, 4, 5, 20}) {
    detail::small_vector<int, 4> v;
    for (int i = 0; i < n; ++i) v.push_back(i * 7);
    REQUIRE(v.size() == std::size_t(n));
    int expected = 0;
    for (int x : v) CHECK(x == 7 * expected++);
    CHECK(expected == n);
  }
  const char text[] = "abcdef";
  const asio::const_buffer pieces[] = {asio::buffer(text, 2), asio::buffer(text + 2, 4)};
  detail::small_vector<asio::const_buffer, 1> list(std::begin(pieces), std::end(pieces));
  CHECK(asio::buffer_size(list) == 6);
  CHECK(list[1].data() == text + 2);
}

namespace {
wire::data_transfer_header fragment_header(std::uint32_t length, std::uint32_t remaining) {
  wire::data_transfer_header h;
  h.credits_requested = 1;
  h.data_length = length;
  h.remaining_data_length = remaining;
  h.data_offset = 24;
  return h;
}
}  // namespace

TEST_CASE("3.1.5.8: the reassembler places each fragment after the previous ones") {
  protocol::reassembler r(1 << 20);
  protocol::fragment_place place;
  REQUIRE_FALSE(r.on_fragment(fragment_header(100, 80), 100, place));
  CHECK((place.payload && place.first && !place.last));
  CHECK(place.offset == 0);
  CHECK(place.message_size == 180);
  REQUIRE_FALSE(r.on_fragment(fragment_header(0, 0), 0, place));  // credits only, mid-message
  CHECK_FALSE(place.payload);
  REQUIRE_FALSE(r.on_fragment(fragment_header(30, 50), 30, place));
  CHECK((place.payload && !place.first && !place.last));
  CHECK(place.offset == 100);
  REQUIRE_FALSE(r.on_fragment(fragment_header(50, 0), 50, place));
  CHECK((!place.first && place.last));
  CHECK(place.offset == 130);
  CHECK(place.message_size == 180);
  REQUIRE_FALSE(r.on_fragment(fragment_header(7, 0), 7, place));  // the next message
  CHECK((place.first && place.last && place.offset == 0 && place.message_size == 7));
}

TEST_CASE("inbound_message: a copied message is overwritten in place in recycled storage") {
  detail::inbound_message m;
  m.start(150, false);
  const std::byte* storage = m.bytes.data();
  std::vector<std::byte> a(100, std::byte{1}), b(50, std::byte{2});
  m.copy_in(0, a);
  m.copy_in(100, b);
  CHECK(m.bytes[99] == std::byte{1});
  CHECK(m.bytes[100] == std::byte{2});
  m.start(150, false);  // the next message of the same size: same storage, nothing reallocated
  CHECK(m.bytes.data() == storage);
  const std::vector<std::byte> c(150, std::byte{3});
  m.copy_in(0, c);
  CHECK(m.bytes == c);  // every byte of the earlier message replaced
}

TEST_CASE("inbound_message: a lent message keeps its pieces in order and can become a copy") {
  detail::inbound_message m;
  std::vector<std::byte> slot0(40, std::byte{7}), slot1(24, std::byte{9});
  m.start(64, true);
  m.lend(3, slot0);
  m.lend(5, slot1);
  REQUIRE(m.pieces.size() == 2);
  CHECK(m.pieces[1].data() == slot1.data());
  CHECK(m.slots == std::vector<std::uint16_t>{3, 5});
  std::vector<std::uint16_t> returned;
  m.copy_out_of_slots([&](std::uint16_t s) { returned.push_back(s); });
  CHECK(returned == std::vector<std::uint16_t>{3, 5});
  CHECK_FALSE(m.lent);
  CHECK(m.pieces.empty());
  REQUIRE(m.bytes.size() == 64);
  CHECK(m.bytes[39] == std::byte{7});
  CHECK(m.bytes[40] == std::byte{9});
}

TEST_CASE("3.1.5.8: a payload that is not DataLength bytes is refused") {
  protocol::reassembler r(1 << 20);
  wire::data_transfer_header h;
  h.data_length = 10;
  h.data_offset = 24;
  protocol::fragment_place place;
  CHECK(r.on_fragment(h, 9, place) == errc::data_out_of_bounds);
}
