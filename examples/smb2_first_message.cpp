// smb2_first_message: the server end of an SMB3 client's first exchange over SMB Direct, for
// checking a real client (e.g. Linux cifs.ko: mount -t cifs -o rdma) against smbdirect.
//
// For each accepted connection: SMB Direct negotiation as the passive side ([MS-SMBD] 3.1.5.6),
// the negotiated parameters, then every SMB2 message the client sends (one per SMB Direct
// upper-layer message, [MS-SMB2] 2.1) with its SMB2 header. smbdirect is not an SMB2 server, so
// a NEGOTIATE request is answered with an SMB2 ERROR response, STATUS_NOT_SUPPORTED (the client's
// mount then fails), and anything else ends the connection. Last, how the connection ended.
//
//   smb2_first_message [--transport verbs|tcp] [--address IP] [--port N] [--connections N]
//
// Exit status: 0 when every connection negotiated SMB Direct and began with a well-formed SMB2
// NEGOTIATE request, 1 otherwise (or when --timeout passed first), 2 bad usage.
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>

#include <smbdirect/smbdirect.hpp>
#include <smbdirect/tcp.hpp>
#include <smbdirect/verbs.hpp>

#include "negotiated_report.hpp"
#include "smb2_negotiate.hpp"

namespace {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

struct settings {
  std::string transport = "verbs";
  std::string address;           // empty: every address
  std::uint64_t port = 0;        // 0: 445 over verbs, 5445 on iWARP and over tcp
  std::uint64_t connections = 1; // accept this many, one after the other, then exit
  std::uint64_t timeout_ms = 60000;
};

void print_usage() {
  const settings d;
  std::printf(
      "usage: smb2_first_message [--transport NAME] [--address IP] [--port N] [--connections N]\n"
      "                          [--timeout MS]\n"
      "Accepts SMB Direct connections from an SMB3 client (e.g. Linux cifs.ko, mount -t cifs -o rdma),\n"
      "prints the negotiated SMB Direct parameters and the SMB2 header of each message the client\n"
      "sends, answers an SMB2 NEGOTIATE with STATUS_NOT_SUPPORTED (this is not an SMB2 server), and\n"
      "logs how each connection ended.\n"
      "  --transport NAME  verbs (rdma-core) or tcp (TCP emulation, iWARP framing) (default %s)\n"
      "  --address IP      listen on this address (default: every address; give the RDMA device's\n"
      "                    address for port 0 to find out whether it is iWARP)\n"
      "  --port N          0: 445 over verbs, or 5445 on iWARP and over tcp (default %llu)\n"
      "  --connections N   connections to serve, one after the other (default %llu)\n"
      "  --timeout MS      give up after this long in all (default %llu)\n"
      "  --help            this text\n"
      "Exit status: 0 every connection began with a well-formed SMB2 NEGOTIATE request, 1 otherwise,\n"
      "2 bad usage.\n",
      d.transport.c_str(), static_cast<unsigned long long>(d.port),
      static_cast<unsigned long long>(d.connections), static_cast<unsigned long long>(d.timeout_ms));
}

std::optional<std::string> parse_args(int argc, char** argv, settings& s, bool& help) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      continue;
    }
    if (i + 1 >= argc) return std::string(arg) + " needs a value (see --help)";
    const std::string_view value = argv[++i];
    const auto number = [&](std::uint64_t& out, std::uint64_t low, std::uint64_t high) -> std::optional<std::string> {
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), out);
      if (ec != std::errc{} || end != value.data() + value.size() || out < low || out > high)
        return std::string(arg) + ": '" + std::string(value) + "' is not " + std::to_string(low) + "-" +
               std::to_string(high);
      return std::nullopt;
    };
    if (arg == "--transport") {
      if (value != "verbs" && value != "tcp") return "--transport: '" + std::string(value) + "' is not verbs or tcp";
      s.transport = value;
    } else if (arg == "--address") {
      s.address = value;
    } else if (arg == "--port") {
      if (auto e = number(s.port, 0, 65535)) return e;
    } else if (arg == "--connections") {
      if (auto e = number(s.connections, 1, 1000)) return e;
    } else if (arg == "--timeout") {
      if (auto e = number(s.timeout_ms, 1, 86'400'000)) return e;
    } else {
      return "unknown option " + std::string(arg) + " (see --help)";
    }
  }
  return std::nullopt;
}

// One connection, from SMB Direct negotiation to its end. True when it negotiated and its first
// message was a well-formed SMB2 NEGOTIATE request.
template <class QueuePair>
asio::awaitable<bool> serve(QueuePair qp, const settings& s, std::uint64_t number) {
  const smbdirect::parameters ours;
  smbdirect::connection<QueuePair> c(std::move(qp), ours);
  if (auto [ec] = co_await c.async_accept(use_tuple); ec) {
    std::printf("connection %llu: SMB Direct negotiation failed: %s\n", static_cast<unsigned long long>(number),
                ec.message().c_str());
    co_return false;
  }
  examples::print_negotiated(s.transport.c_str(), "Negotiate Request", ours, c.negotiated());
  bool good = false;
  for (std::uint64_t n = 1;; ++n) {
    std::vector<std::byte> m;
    auto [rec, size] = co_await c.async_receive(m, use_tuple);
    if (rec) {
      std::printf("connection %llu: %s after %llu SMB2 message(s): %s\n", static_cast<unsigned long long>(number),
                  rec == smbdirect::errc::peer_disconnected ? "closed by the client" : "ended",
                  static_cast<unsigned long long>(n - 1), rec.message().c_str());
      break;
    }
    std::printf("connection %llu: SMB2 message %llu, %zu bytes: %s\n", static_cast<unsigned long long>(number),
                static_cast<unsigned long long>(n), m.size(), smb2::describe_header(m).c_str());
    smb2::negotiate_request_info request;
    if (auto pec = smb2::parse_negotiate_request(m, request)) {
      std::printf("connection %llu: not an SMB2 NEGOTIATE request (%s): closing\n",
                  static_cast<unsigned long long>(number), pec.message().c_str());
      auto [cec] = co_await c.async_close(use_tuple);
      std::printf("connection %llu: closed by us%s%s\n", static_cast<unsigned long long>(number), cec ? ": " : "",
                  cec ? cec.message().c_str() : "");
      break;
    }
    good = good || n == 1;
    std::string dialects;
    for (const auto d : request.dialects) dialects += (dialects.empty() ? "" : ", ") + smb2::dialect_name(d);
    std::printf("connection %llu: NEGOTIATE request offers %s\n", static_cast<unsigned long long>(number),
                dialects.c_str());
    const auto answer = smb2::make_error_response(request.message_id, smb2::status_not_supported);
    auto [sec, sent] = co_await c.async_send(asio::buffer(answer), use_tuple);
    std::printf("connection %llu: answered STATUS_NOT_SUPPORTED (0x%08X)%s%s\n",
                static_cast<unsigned long long>(number), unsigned(smb2::status_not_supported), sec ? ": " : "",
                sec ? sec.message().c_str() : "");
    std::fflush(stdout);
  }
  std::fflush(stdout);
  co_return good;
}

template <class Listener>
asio::awaitable<int> listen_and_serve(settings s) {
  auto ex = co_await asio::this_coro::executor;
  auto [lec, listener] = co_await Listener::open(ex, s.address, static_cast<std::uint16_t>(s.port));
  if (lec) {
    std::fprintf(stderr, "error: listening on %s port %llu (%s): %s\n", s.address.empty() ? "every address" : s.address.c_str(),
                 static_cast<unsigned long long>(s.port), s.transport.c_str(), lec.message().c_str());
    co_return 1;
  }
  std::printf("listening on %s port %u (%s)\n", s.address.empty() ? "every address" : s.address.c_str(),
              unsigned(listener->port()), s.transport.c_str());
  std::fflush(stdout);  // a script waits for this line
  int status = 0;
  for (std::uint64_t i = 1; i <= s.connections; ++i) {
    auto [aec, qp] = co_await listener->accept();
    if (aec) {
      std::fprintf(stderr, "error: accept: %s\n", aec.message().c_str());
      co_return 1;
    }
    std::printf("connection %llu: accepted\n", static_cast<unsigned long long>(i));
    if (!co_await serve(std::move(qp), s, i)) status = 1;
  }
  co_return status;
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  bool help = false;
  if (auto problem = parse_args(argc, argv, s, help)) {
    std::fprintf(stderr, "smb2_first_message: %s\n", problem->c_str());
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
  if (s.transport == "verbs")
    asio::co_spawn(io, listen_and_serve<smbdirect::verbs::listener>(s), finish);
  else
    asio::co_spawn(io, listen_and_serve<smbdirect::tcp::listener>(s), finish);
  asio::steady_timer deadline(io, std::chrono::milliseconds(s.timeout_ms));
  deadline.async_wait([&](std::error_code ec) {
    if (ec) return;
    std::fprintf(stderr, "error: not done within %llu ms (--timeout)\n", static_cast<unsigned long long>(s.timeout_ms));
    status = 1;
    io.stop();
  });
  io.run();
  return status;
}
