// Credit flow between two engines, [MS-SMBD] 3.1.5.1 and 3.1.5.9, over every small credit
// setting: messages get through in each direction without waiting for a grant that never comes,
// and once the upper layers stop sending, the two ends go quiet. Credit-only messages must
// not answer each other forever.
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include "support/connected_pair.hpp"

using namespace smbdirect;
using namespace smbdirect::test;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

namespace {

parameters credits(std::uint16_t send_credit_target, std::uint16_t receive_credit_max) {
  parameters p;
  p.send_credit_target = send_credit_target;
  p.receive_credit_max = receive_credit_max;
  return p;
}

constexpr std::size_t livelock = 100000;  // handlers without time moving: never a real exchange

enum class traffic { client_to_server, server_to_client, both_ways };

struct tally {
  int verified = 0, expected = 0;
  bool failed = false;
};

asio::awaitable<void> send_messages(loopback_connection& from, int count, std::uint32_t seed, tally& t) {
  for (int i = 0; i < count; ++i) {
    const bytes m = pattern(100 + i, seed + i);
    auto [ec, n] = co_await from.async_send(asio::buffer(m), use_tuple);
    t.failed |= ec || n != m.size();
  }
}

asio::awaitable<void> receive_messages(loopback_connection& to, int count, std::uint32_t seed, tally& t) {
  bytes got;
  for (int i = 0; i < count; ++i) {
    auto [ec, n] = co_await to.async_receive(got, use_tuple);
    t.failed |= static_cast<bool>(ec);
    t.verified += !ec && got == pattern(100 + i, seed + i);
  }
}

/// Sends `count` messages as `t` says, each verified; false on any error, stall or livelock.
bool exchange(connected_pair& p, traffic direction, int count, tally& t) {
  auto run = [&](loopback_connection& from, loopback_connection& to, std::uint32_t seed) {
    t.expected += count;
    asio::co_spawn(p.d.io, send_messages(from, count, seed, t), asio::detached);
    asio::co_spawn(p.d.io, receive_messages(to, count, seed, t), asio::detached);
  };
  if (direction != traffic::server_to_client) run(*p.client, *p.server, 1000);
  if (direction != traffic::client_to_server) run(*p.server, *p.client, 2000);
  // Within one keepalive interval: a credit stall would end in credit_grant_timeout first.
  const bool ended = p.d.run_until([&] { return t.failed || t.verified == t.expected; }, std::chrono::seconds(60), livelock);
  return ended && !t.failed && t.verified == t.expected;
}

}  // namespace

TEST_CASE("3.1.5.9: every small credit setting moves messages each way, then goes quiet") {
  const std::uint16_t values[] = {1, 2, 3, 4, 8};
  const char* names[] = {"client to server", "server to client", "both ways"};
  std::vector<std::string> failures;
  int settings = 0;
  for (auto client_target : values)
    for (auto client_max : values)
      for (auto server_target : values)
        for (auto server_max : values)
          for (auto t : {traffic::client_to_server, traffic::server_to_client, traffic::both_ways}) {
            ++settings;
            tally messages;  // outlives the pair: its coroutines refer to it
            connected_pair p(credits(client_target, client_max), credits(server_target, server_max));
            std::optional<std::error_code> c, s;
            p.server->async_accept([&](std::error_code ec) { s = ec; });
            p.client->async_connect([&](std::error_code ec) { c = ec; });
            const std::string setting = "client (" + std::to_string(client_target) + ", " + std::to_string(client_max) +
                                        "), server (" + std::to_string(server_target) + ", " +
                                        std::to_string(server_max) + "), " + names[static_cast<int>(t)] + ": ";
            if (!p.d.run_until([&] { return c && s; }, std::chrono::seconds(60), livelock) || *c || *s) {
              failures.push_back(setting + "negotiation");
              continue;
            }
            if (!exchange(p, t, 12, messages)) {
              failures.push_back(setting + "messages did not get through");
              continue;
            }
            // Nothing left to send: the ends may settle their credits, then must stop talking.
            const auto before = p.client->stats().empty_messages_sent + p.server->stats().empty_messages_sent;
            const bool quiet = p.d.settle_within(livelock);
            const auto after = p.client->stats().empty_messages_sent + p.server->stats().empty_messages_sent;
            if (!quiet || after - before > 4)
              failures.push_back(setting + std::to_string(after - before) + " credit-only messages after the last" +
                                 (quiet ? "" : ", still going"));
          }
  for (const auto& f : failures) MESSAGE(f);
  CHECK(failures.empty());
  CHECK(settings == 5 * 5 * 5 * 5 * 3);
}

TEST_CASE("3.1.5.9: unread messages hold back credits: a fast sender waits, and nothing is lost") {
  parameters sp;
  sp.max_fragmented_size = 131072;  // the receive backlog: one MaxFragmentedRecvSize of messages
  connected_pair p({}, sp);
  REQUIRE(p.negotiate() == std::pair<std::error_code, std::error_code>{});
  constexpr int count = 40;
  std::vector<bytes> messages;
  for (int i = 0; i < count; ++i) messages.push_back(pattern(30000, 50 + i));
  int sent = 0;
  for (const auto& m : messages)
    p.client->async_send(asio::buffer(m), [&](std::error_code ec, std::size_t) { sent += !ec; });
  REQUIRE(p.d.run_until([&] { return sent == count; }, std::chrono::seconds(2), livelock) == false);
  // Nothing read: the server buffered about MaxFragmentedRecvSize, plus what its 255 posted
  // receives hold (255 x 1340 bytes), and the client waits for credits.
  CHECK(sent <= (131072 + 255 * 1340) / 30000 + 2);
  CHECK(p.server->stats().messages_received * 30000 <= 131072 + 30000 + 255 * 1340);
  CHECK(sent < count / 2);
  CHECK_FALSE(p.client->error());
  // Reading releases it all, in order. Well within credit_grant_timeout (5 s).
  int verified = 0;
  bytes got;
  std::function<void()> next = [&] {
    p.server->async_receive(got, [&](std::error_code ec, std::size_t) {
      if (ec) return;
      verified += got == messages[verified];
      if (verified < count) next();
    });
  };
  next();
  REQUIRE(p.d.run_until([&] { return verified == count && sent == count; }, std::chrono::seconds(60), livelock));
  CHECK_FALSE(p.client->error());
  CHECK_FALSE(p.server->error());
}
