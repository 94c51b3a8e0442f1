// The engine's two containers: ring_queue (FIFO order across wrap-around and growth) and
// small_vector (inline up to N, then on the heap, same items either way); and the reassembler
// reusing a recycled message's storage in place.
#include <doctest/doctest.h>

#include <asio/buffer.hpp>

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

TEST_CASE("3.1.5.8: reassembly writes into recycled storage of the same size in place") {
  protocol::reassembler r(1 << 20);
  auto fragment = [](std::uint32_t remaining, std::vector<std::byte>& payload) {
    wire::data_transfer_header h;
    h.credits_requested = 1;
    h.data_length = static_cast<std::uint32_t>(payload.size());
    h.remaining_data_length = remaining;
    h.data_offset = 24;
    return h;
  };
  std::vector<std::byte> first(100, std::byte{1}), second(50, std::byte{2});
  std::vector<std::byte> out;
  bool complete = false;
  REQUIRE_FALSE(r.on_fragment(fragment(50, first), first, out, complete));
  CHECK_FALSE(complete);
  REQUIRE_FALSE(r.on_fragment(fragment(0, second), second, out, complete));
  REQUIRE(complete);
  REQUIRE(out.size() == 150);
  CHECK(out[99] == std::byte{1});
  CHECK(out[100] == std::byte{2});

  // The caller hands the storage back, as the engine does after async_receive: the next
  // message of the same size lands in it, every byte overwritten, nothing reallocated.
  std::vector<std::byte> recycled(150, std::byte{0xee});
  const std::byte* storage = recycled.data();
  std::vector<std::byte> third(150, std::byte{3});
  REQUIRE_FALSE(r.on_fragment(fragment(0, third), third, recycled, complete));  // out's storage goes in
  REQUIRE(complete);
  CHECK(recycled == third);
  std::vector<std::byte> fourth(150, std::byte{4});
  REQUIRE_FALSE(r.on_fragment(fragment(0, fourth), fourth, out, complete));
  REQUIRE(complete);
  CHECK(out == fourth);
  CHECK(out.data() == storage);  // the storage recycled above, reused in place
}

TEST_CASE("3.1.5.8: a payload that is not DataLength bytes is refused") {
  protocol::reassembler r(1 << 20);
  wire::data_transfer_header h;
  h.data_length = 10;
  h.data_offset = 24;
  std::vector<std::byte> payload(9), out;
  bool complete = false;
  CHECK(r.on_fragment(h, payload, out, complete) == errc::data_out_of_bounds);
}
