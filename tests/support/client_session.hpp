// Our connection in the active role, negotiated against a scripted raw peer playing the server.
#pragma once

#include "harness.hpp"

namespace smbdirect::test {

struct client_session {
  driver d;
  std::optional<loopback_connection> client;
  std::optional<raw_peer> peer;

  explicit client_session(wire::negotiate_response rsp = good_response(), parameters p = {}) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    client.emplace(std::move(a), p, &d.clock);
    peer.emplace(std::move(b));
    peer->post_receives(300);
    std::optional<std::error_code> connected;
    client->async_connect([&](std::error_code ec) { connected = ec; });
    d.settle();
    REQUIRE_FALSE(peer->send(encode_response(rsp)));
    REQUIRE(d.run_until([&] { return connected.has_value(); }));
    REQUIRE_FALSE(*connected);
    d.settle();
    peer->drain();
  }

  /// The raw server sends an empty message granting `credits_granted`.
  void peer_sends(std::uint16_t credits_granted, std::uint16_t flags = 0) {
    wire::data_transfer_header h;
    h.credits_requested = 255;
    h.credits_granted = credits_granted;
    h.flags = flags;
    REQUIRE_FALSE(peer->send(encode_data(h)));
    d.settle();
  }
};

}  // namespace smbdirect::test
