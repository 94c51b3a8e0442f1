// smb2_negotiate: one SMB2 NEGOTIATE, three ways to carry it.
//
// smb2::negotiate<AsyncStream> (smb2_negotiate.hpp) frames a hand-built SMB2 NEGOTIATE request
// the way SMB3 does over TCP ([MS-SMB2] 2.1) and parses the response. This program runs that
// same function over
//   - smbdirect::stream, on an SMB Direct connection over the loopback transport, against an
//     in-process test server that answers with smb2::serve_negotiate (the default), or
//   - asio::ip::tcp::socket, against a real SMB server (--tcp HOST[:PORT], e.g. Samba's smbd).
// With --smbdirect HOST[:PORT] it talks to a real SMB3 server over SMB Direct (verbs or TCP
// emulation, e.g. Linux ksmbd) the way SMB3 does: smb2::negotiate_messages, one SMB2 message per
// upper-layer message, no framing. It then prints the negotiated SMB Direct parameters too.
// Exit status: 0 a valid NEGOTIATE response, 1 an error, 2 bad usage.
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <smbdirect/loopback.hpp>
#include <smbdirect/smbdirect.hpp>
#include <smbdirect/stream.hpp>
#include <smbdirect/tcp.hpp>
#include <smbdirect/verbs.hpp>

#include "negotiated_report.hpp"
#include "smb2_negotiate.hpp"

namespace {

using namespace asio::experimental::awaitable_operators;
using loopback_connection = smbdirect::connection<smbdirect::loopback::endpoint>;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

struct settings {
  std::string host;        // empty: SMB Direct over loopback
  std::string port = "445";
  bool smbdirect = false;  // --smbdirect: host and port name an SMB3 server over SMB Direct
  std::string transport = "verbs";
  std::uint64_t message_id = 0;
  std::uint64_t timeout_ms = 10000;
};

void print_usage() {
  std::printf(
      "usage: smb2_negotiate [--tcp HOST[:PORT] | --smbdirect HOST[:PORT] [--transport NAME]]\n"
      "                      [--message-id N] [--timeout MS]\n"
      "Sends one hand-built SMB2 NEGOTIATE request and prints the server's response.\n"
      "  (default)          over SMB Direct (smbdirect::stream on the loopback transport) to an\n"
      "                     in-process test server that answers up to SMB 3.0.2\n"
      "  --tcp HOST[:PORT]  over TCP to an SMB server (asio::ip::tcp::socket); PORT default 445;\n"
      "                     IPv6 as [ADDR]:PORT\n"
      "  --smbdirect HOST[:PORT]  over SMB Direct to an SMB3 server (e.g. Linux ksmbd), one SMB2\n"
      "                     message per SMB Direct message; PORT default 0: 445 over verbs, or\n"
      "                     5445 on iWARP and over tcp\n"
      "  --transport NAME   for --smbdirect: verbs (rdma-core) or tcp (TCP emulation, iWARP\n"
      "                     framing) (default verbs)\n"
      "  --message-id N     MessageId of the request (default 0; servers expect 0 first)\n"
      "  --timeout MS       give up after this long (default 10000)\n"
      "  --help             this text\n"
      "Exit status: 0 a valid response, 1 an error, 2 bad usage.\n");
}

std::optional<std::string> parse_number(std::string_view text, std::uint64_t& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec != std::errc{} || end != text.data() + text.size()) return "not a number: '" + std::string(text) + "'";
  return std::nullopt;
}

std::optional<std::string> parse_args(int argc, char** argv, settings& s, bool& help) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      continue;
    }
    if (arg != "--tcp" && arg != "--smbdirect" && arg != "--transport" && arg != "--message-id" && arg != "--timeout")
      return "unknown option " + std::string(arg);
    if (i + 1 >= argc) return std::string(arg) + " needs a value";
    const std::string_view value = argv[++i];
    if (arg == "--transport") {
      if (value != "verbs" && value != "tcp") return "--transport: '" + std::string(value) + "' is not verbs or tcp";
      s.transport = value;
    } else if (arg == "--message-id") {
      if (auto e = parse_number(value, s.message_id)) return "--message-id: " + *e;
    } else if (arg == "--timeout") {
      if (auto e = parse_number(value, s.timeout_ms)) return "--timeout: " + *e;
      if (s.timeout_ms == 0) return "--timeout must be at least 1 ms";
    }
    if (arg != "--tcp" && arg != "--smbdirect") continue;
    s.smbdirect = arg == "--smbdirect";
    s.port = s.smbdirect ? "0" : settings{}.port;  // unless HOST:PORT says otherwise
    if (value.starts_with('[')) {  // [v6]:port
      const auto close = value.find(']');
      if (close == std::string_view::npos) return std::string(arg) + ": missing ']' in " + std::string(value);
      s.host = value.substr(1, close - 1);
      if (close + 1 < value.size()) {
        if (value[close + 1] != ':') return std::string(arg) + ": expected ':' after ']' in " + std::string(value);
        s.port = value.substr(close + 2);
      }
    } else {
      const auto colon = value.rfind(':');
      const bool v6 = colon != std::string_view::npos && value.find(':') != colon;  // bare IPv6
      s.host = v6 || colon == std::string_view::npos ? value : value.substr(0, colon);
      if (!v6 && colon != std::string_view::npos) s.port = value.substr(colon + 1);
    }
    if (s.host.empty() || s.port.empty()) return std::string(arg) + " needs HOST[:PORT]";
  }
  if (s.smbdirect) {
    std::uint64_t port = 0;
    if (parse_number(s.port, port) || port > 65535) return "--smbdirect: port '" + s.port + "' is not 0-65535";
  }
  return std::nullopt;
}

int report(const char* how, const std::pair<std::error_code, smb2::negotiate_response>& r) {
  if (r.first && r.first != smb2::errc::nt_status) {
    std::fprintf(stderr, "error: %s: %s [%s:%d]\n", how, r.first.message().c_str(), r.first.category().name(),
                 r.first.value());
    return 1;
  }
  std::printf("SMB2 NEGOTIATE response (%s):\n%s", how, smb2::to_string(r.second).c_str());
  if (r.first) {
    std::fprintf(stderr, "error: the server refused the NEGOTIATE: NT status 0x%08X\n", unsigned(r.second.status));
    return 1;
  }
  return 0;
}

// ------------------------------------------------------------------------------ over TCP

asio::awaitable<int> run_tcp(settings s) {
  asio::ip::tcp::resolver resolver(co_await asio::this_coro::executor);
  auto [rec, endpoints] = co_await resolver.async_resolve(s.host, s.port, use_tuple);
  if (rec) {
    std::fprintf(stderr, "error: resolving %s port %s: %s\n", s.host.c_str(), s.port.c_str(), rec.message().c_str());
    co_return 1;
  }
  asio::ip::tcp::socket socket(co_await asio::this_coro::executor);
  auto [cec, peer] = co_await asio::async_connect(socket, endpoints, use_tuple);
  if (cec) {
    std::fprintf(stderr, "error: connecting to %s port %s: %s\n", s.host.c_str(), s.port.c_str(), cec.message().c_str());
    co_return 1;
  }
  std::printf("connected over TCP to %s port %u\n", peer.address().to_string().c_str(), unsigned(peer.port()));
  const auto result = co_await smb2::negotiate(socket, s.message_id);
  co_return report("TCP, Direct TCP transport framing", result);
}

// ------------------------------------------------------------------------------ to an SMB3 server over SMB Direct

template <class QueuePair>
asio::awaitable<int> negotiate_with_server(std::pair<std::error_code, QueuePair> connected, settings s) {
  auto& [ec, qp] = connected;
  if (ec) {
    std::fprintf(stderr, "error: connecting to %s port %s over %s: %s\n", s.host.c_str(), s.port.c_str(),
                 s.transport.c_str(), ec.message().c_str());
    co_return 1;
  }
  const smbdirect::parameters ours;
  smbdirect::connection<QueuePair> c(std::move(qp), ours);
  if (auto [cec] = co_await c.async_connect(use_tuple); cec) {
    std::fprintf(stderr, "error: SMB Direct negotiation with %s: %s\n", s.host.c_str(), cec.message().c_str());
    co_return 1;
  }
  examples::print_negotiated(s.transport.c_str(), "Negotiate Response", ours, c.negotiated());
  const auto result = co_await smb2::negotiate_messages(c, s.message_id);
  // SMB Direct has no close message: the server sees a disconnect.
  auto [close_ec] = co_await c.async_close(use_tuple);
  const int status = report("SMB Direct, one SMB2 message per upper-layer message", result);
  if (close_ec && close_ec != smbdirect::errc::peer_disconnected) {
    std::fprintf(stderr, "error: close: %s\n", close_ec.message().c_str());
    co_return 1;
  }
  co_return status;
}

asio::awaitable<int> run_smbdirect_server(settings s) {
  auto ex = co_await asio::this_coro::executor;
  const auto port = static_cast<std::uint16_t>(std::stoul(s.port));  // checked by parse_args
  if (s.transport == "verbs") co_return co_await negotiate_with_server(co_await smbdirect::verbs::connect(ex, s.host, port), s);
  co_return co_await negotiate_with_server(co_await smbdirect::tcp::connect(ex, s.host, port), s);
}

// ------------------------------------------------------------------------------ over SMB Direct (loopback)

// Our test server: SMB Direct negotiation, then one SMB2 NEGOTIATE answered through a stream.
asio::awaitable<std::error_code> run_server(loopback_connection c) {
  auto [aec] = co_await c.async_accept(use_tuple);
  if (aec) co_return aec;
  smbdirect::stream<smbdirect::loopback::endpoint> s(std::move(c));
  if (auto ec = co_await smb2::serve_negotiate(s)) co_return ec;
  // The client closes next; its disconnect reads as eof here, as on a socket.
  std::array<std::byte, 1> more;
  auto [rec, n] = co_await s.async_read_some(asio::buffer(more), use_tuple);
  if (rec == asio::error::eof) co_return std::error_code{};
  co_return rec ? rec : std::make_error_code(std::errc::protocol_error);  // bytes after the NEGOTIATE
}

asio::awaitable<int> run_client(loopback_connection c, std::uint64_t message_id) {
  auto [cec] = co_await c.async_connect(use_tuple);
  if (cec) {
    std::fprintf(stderr, "error: SMB Direct negotiation: %s\n", cec.message().c_str());
    co_return 1;
  }
  examples::print_negotiated("the loopback transport", "Negotiate Response", smbdirect::parameters{}, c.negotiated());
  smbdirect::stream<smbdirect::loopback::endpoint> s(std::move(c));
  const auto result = co_await smb2::negotiate(s, message_id);
  auto [close_ec] = co_await s.async_close(use_tuple);
  const int status = report("SMB Direct, one upper-layer message each way", result);
  if (close_ec) {
    std::fprintf(stderr, "error: close: %s\n", close_ec.message().c_str());
    co_return 1;
  }
  co_return status;
}

asio::awaitable<int> run_smbdirect(settings s) {
  auto ex = co_await asio::this_coro::executor;
  auto [a, b] = smbdirect::loopback::make_pair(ex, ex);
  auto [status, server_ec] = co_await (run_client(loopback_connection(std::move(a)), s.message_id) &&
                                       run_server(loopback_connection(std::move(b))));
  if (server_ec) {
    std::fprintf(stderr, "error: test server: %s\n", server_ec.message().c_str());
    co_return 1;
  }
  std::printf("test server: answered the NEGOTIATE and saw the client close\n");
  co_return status;
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  bool help = false;
  if (auto problem = parse_args(argc, argv, s, help)) {
    std::fprintf(stderr, "smb2_negotiate: %s (--help for usage)\n", problem->c_str());
    return 2;
  }
  if (help) {
    print_usage();
    return 0;
  }
  asio::io_context io;
  int status = 1;
  auto finish = [&](std::exception_ptr e, int result) {
    if (e) std::fprintf(stderr, "error: internal: unexpected exception\n");
    status = e ? 1 : result;
    io.stop();
  };
  if (s.host.empty()) {
    asio::co_spawn(io, run_smbdirect(s), finish);
  } else if (s.smbdirect) {
    asio::co_spawn(io, run_smbdirect_server(s), finish);
  } else {
    asio::co_spawn(io, run_tcp(s), finish);
  }
  asio::steady_timer deadline(io, std::chrono::milliseconds(s.timeout_ms));
  deadline.async_wait([&](std::error_code ec) {
    if (ec) return;
    std::fprintf(stderr, "error: no answer within %llu ms (--timeout)\n", static_cast<unsigned long long>(s.timeout_ms));
    status = 1;
    io.stop();
  });
  io.run();
  return status;
}
