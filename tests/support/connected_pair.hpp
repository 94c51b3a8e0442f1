// Two engines connected over loopback on one virtual-clock driver.
#pragma once

#include "harness.hpp"

namespace smbdirect::test {

struct connected_pair {
  driver d;
  std::optional<loopback_connection> client, server;

  explicit connected_pair(parameters client_params = {}, parameters server_params = {}, loopback::options o = {}) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor(), std::move(o));
    client.emplace(std::move(a), client_params, &d.clock);
    server.emplace(std::move(b), server_params, &d.clock);
  }

  /// Negotiates both sides; returns {client error, server error}.
  std::pair<std::error_code, std::error_code> negotiate() {
    std::optional<std::error_code> c, s;
    server->async_accept([&](std::error_code ec) { s = ec; });
    client->async_connect([&](std::error_code ec) { c = ec; });
    d.run_until([&] { return c.has_value() && s.has_value(); });
    return {c.value_or(errc::internal_error), s.value_or(errc::internal_error)};
  }
};

}  // namespace smbdirect::test
