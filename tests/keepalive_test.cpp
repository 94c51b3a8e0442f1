// Idle connection timer and keepalives, [MS-SMBD] 3.1.2.2, 3.1.5.1 step 6, 3.1.6.2, all on
// the virtual clock: minutes of protocol time run in microseconds.
#include <doctest/doctest.h>

#include "support/client_session.hpp"

using namespace smbdirect;
using namespace smbdirect::test;
using namespace std::chrono_literals;

namespace {

// Our client, negotiated with a raw server that answers keepalives only when told to.
struct fixture : client_session {
  std::size_t seen = 0;

  explicit fixture(parameters p = {}) : client_session(good_response(), p) {
    next_messages();  // the request and the initial grant
  }

  std::vector<wire::data_transfer_header> next_messages() {
    peer->drain();
    std::vector<wire::data_transfer_header> out;
    for (; seen < peer->received.size(); ++seen) {
      wire::data_transfer_message m;
      if (!wire::decode(peer->received[seen], m)) out.push_back(m.header);
    }
    return out;
  }

  void reply() { peer_sends(1); }
};

}  // namespace

TEST_CASE("3.1.2.2: after KeepaliveInterval idle, a 20-byte message asks for a response") {
  fixture f;
  f.d.advance(119999ms);
  CHECK(f.next_messages().empty());
  f.d.advance(1ms);
  const auto m = f.next_messages();
  REQUIRE(m.size() == 1);
  CHECK(m[0].flags == wire::smb_direct_response_requested);
  CHECK(m[0].data_length == 0);
  CHECK(f.client->stats().keepalives_sent == 1);
}

TEST_CASE("3.1.6.2: no reply within keepalive_timeout terminates") {
  fixture f;
  f.d.advance(120000ms);
  f.d.advance(4999ms);
  CHECK_FALSE(f.client->error());
  f.d.advance(1ms);
  CHECK(f.client->error() == errc::keepalive_timeout);
}

TEST_CASE("3.1.5.5: any received message resets the idle timer and the keepalive state") {
  fixture f;
  f.d.advance(120000ms);
  REQUIRE(f.next_messages().size() == 1);
  f.d.advance(3000ms);
  f.reply();
  f.d.advance(119999ms);
  CHECK_FALSE(f.client->error());
  CHECK(f.next_messages().empty());
  f.d.advance(1ms);  // 120 s after the reply
  const auto m = f.next_messages();
  REQUIRE(m.size() == 1);
  CHECK(m[0].flags == wire::smb_direct_response_requested);
}

TEST_CASE("traffic keeps the idle timer from firing") {
  fixture f;
  for (int i = 0; i < 10; ++i) {
    f.d.advance(100000ms);
    f.reply();
  }
  CHECK(f.next_messages().empty());
  CHECK(f.client->stats().keepalives_sent == 0);
}

TEST_CASE("configurable interval and timeout; interval 0 disables keepalives") {
  parameters p;
  SUBCASE("short") {
    p.keepalive_interval = 1000ms;
    p.keepalive_timeout = 200ms;
    fixture f(p);
    f.d.advance(1000ms);
    CHECK(f.next_messages().size() == 1);
    f.d.advance(200ms);
    CHECK(f.client->error() == errc::keepalive_timeout);
  }
  SUBCASE("disabled") {
    p.keepalive_interval = 0ms;
    fixture f(p);
    f.d.advance(3600000ms);
    CHECK(f.next_messages().empty());
    CHECK_FALSE(f.client->error());
  }
}

TEST_CASE("two engines stay connected through hours of idle time") {
  driver d;
  auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
  loopback_connection client(std::move(a), {}, &d.clock), server(std::move(b), {}, &d.clock);
  int ok = 0;
  server.async_accept([&](std::error_code ec) { ok += !ec; });
  client.async_connect([&](std::error_code ec) { ok += !ec; });
  REQUIRE(d.run_until([&] { return ok == 2; }));
  d.run_until([] { return false; }, std::chrono::hours(3));
  CHECK_FALSE(client.error());
  CHECK_FALSE(server.error());
  CHECK(client.stats().keepalives_sent + server.stats().keepalives_sent >= 80);
  CHECK(client.stats().keepalives_received + server.stats().keepalives_received >= 80);
}
