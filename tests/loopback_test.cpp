// The loopback transport's RC queue pair semantics, used raw.
#include <doctest/doctest.h>

#include "support/harness.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {
struct pair_fixture {
  asio::io_context io;
  std::optional<raw_peer> a, b;
  explicit pair_fixture(loopback::options o = {}) {
    auto [x, y] = loopback::make_pair(io.get_executor(), io.get_executor(), std::move(o));
    a.emplace(std::move(x));
    b.emplace(std::move(y));
  }
};
}  // namespace

TEST_CASE("a send with no posted receive is RNR and both queue pairs enter the error state") {
  pair_fixture f;
  f.a->post_receives(2);
  f.b->post_receives(1);
  CHECK_FALSE(f.a->send(pattern(10, 1)));  // consumes b's only receive
  CHECK_FALSE(f.a->send(pattern(10, 1)));
  f.a->drain();
  f.b->drain();
  REQUIRE(f.a->statuses.size() == 4);
  CHECK_FALSE(f.a->statuses[0]);
  CHECK(f.a->statuses[1] == errc::receiver_not_ready);
  CHECK(f.a->statuses[2] == errc::work_request_flushed);  // a's posted receives
  CHECK(f.a->statuses[3] == errc::work_request_flushed);
  CHECK_FALSE(f.b->send(pattern(1, 1)));
  f.b->drain();
  REQUIRE(f.b->statuses.size() == 2);
  CHECK_FALSE(f.b->statuses[0]);  // the receive of a's first send
  CHECK(f.b->statuses[1] == errc::work_request_flushed);
}

TEST_CASE("SENDs toward a side that has not posted any receive yet wait for it (establishment)") {
  pair_fixture f;
  CHECK_FALSE(f.a->send(pattern(7, 1)));
  f.a->drain();
  CHECK(f.a->statuses.empty());
  f.b->post_receives(1);
  f.a->drain();
  f.b->drain();
  CHECK(f.a->statuses.size() == 1);
  REQUIRE(f.b->received.size() == 1);
  CHECK(f.b->received[0] == pattern(7, 1));
}

TEST_CASE("a message longer than the posted receive is a length error on both sides") {
  pair_fixture f;
  f.b->post_receives(1, 100);
  CHECK_FALSE(f.a->send(pattern(101, 2)));
  f.a->drain();
  f.b->drain();
  CHECK(f.a->statuses.at(0) == errc::remote_invalid_request);
  CHECK(f.b->statuses.at(0) == errc::local_length_error);
}

TEST_CASE("delivery is in order and exact") {
  pair_fixture f;
  f.b->post_receives(10, 100);
  for (unsigned i = 0; i < 10; ++i) CHECK_FALSE(f.a->send(pattern(i * 10, i)));
  f.b->drain();
  REQUIRE(f.b->received.size() == 10);
  for (unsigned i = 0; i < 10; ++i) CHECK(f.b->received[i] == pattern(i * 10, i));
}

TEST_CASE("fault plan: refuse the n-th operation, fail the n-th completion, tamper, drop") {
  SUBCASE("refused post") {
    loopback::options o;
    o.faults.fail_operation = 1;
    pair_fixture f(std::move(o));
    f.b->post_receives(1);                         // operation 0
    CHECK(f.a->send(pattern(4, 3)) == errc::injected_fault);  // operation 1
    CHECK(f.a->endpoint().operations() == 2);
  }
  SUBCASE("failed completion") {
    loopback::options o;
    o.faults.fail_completion = 1;
    pair_fixture f(std::move(o));
    f.b->post_receives(1);
    CHECK_FALSE(f.a->send(pattern(4, 3)));
    f.a->drain();
    CHECK(f.a->statuses.at(0) == errc::injected_fault);
  }
  SUBCASE("corrupt and drop") {
    loopback::options o;
    o.faults.tamper = [](int side, std::uint64_t index, std::span<std::byte> b) {
      if (side == 0 && index == 0) b[0] = std::byte{0xFF};
      return !(side == 0 && index == 1);
    };
    pair_fixture f(std::move(o));
    f.b->post_receives(3);
    CHECK_FALSE(f.a->send(bytes(4)));
    CHECK_FALSE(f.a->send(bytes(4)));
    CHECK_FALSE(f.a->send(bytes(5)));
    f.b->drain();
    REQUIRE(f.b->received.size() == 2);
    CHECK(f.b->received[0][0] == std::byte{0xFF});
    CHECK(f.b->received[1].size() == 5);
  }
}

TEST_CASE("destroying an endpoint flushes the peer") {
  pair_fixture f;
  f.b->post_receives(1);
  f.a.reset();
  f.b->drain();
  CHECK(f.b->statuses.at(0) == errc::work_request_flushed);
}
