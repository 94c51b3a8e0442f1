// Our connection in the passive role, negotiated against a scripted raw peer playing the client
// (which asks for the default parameters and has 64 receives posted).
#pragma once

#include "harness.hpp"

namespace smbdirect::test {

struct server_session {
  driver d;
  std::optional<loopback_connection> server;
  std::optional<raw_peer> peer;

  explicit server_session(parameters p = {}) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    server.emplace(std::move(a), p, &d.clock);
    peer.emplace(std::move(b));
    peer->post_receives(64);
    std::optional<std::error_code> accepted;
    server->async_accept([&](std::error_code ec) { accepted = ec; });
    d.settle();
    REQUIRE_FALSE(peer->send(encode_request(protocol::make_negotiate_request(parameters{}))));
    REQUIRE(d.run_until([&] { return accepted.has_value(); }));
    REQUIRE_FALSE(*accepted);
  }
};

}  // namespace smbdirect::test
