// What file_transfer_client and file_transfer_server share: their options, the messages they
// exchange inside SMB Direct, and the file's checksum (CRC-64 from ISA-L, crc64_ecma_refl).
//
// The exchange, one upper-layer message per line:
//   client -> server  offer     size: the file's size
//   server -> client  upload    region: a buffer of `size` bytes, registered for RDMA write only
//                     (the client writes the file into it)
//   client -> server  written   crc: the file's CRC-64, sent once every RDMA write completed
//   server -> client  download  region: the same buffer, registered again for RDMA read only;
//                     crc: the CRC-64 of what the server received (the client reads it back)
//   client -> server  done      crc: the CRC-64 of what the client read back
// Each message is 40 bytes, integers little-endian: u32 step, 4 zero bytes, u64 size, u64 crc,
// and a Buffer Descriptor V1 ([MS-SMBD] 2.2.3.1; zeros when there is no region).
#pragma once

#include <isa-l/crc64.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include <smbdirect/smbdirect.hpp>

namespace file_transfer {

constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// ------------------------------------------------------------------------------ options

struct options {
  std::string transport = "tcp";      // tcp or verbs
  std::string address = "127.0.0.1";  // the server listens here; the client connects here
  std::uint16_t port = 0;             // 0: SMB Direct's port for the transport
  std::string output;                 // where to save the file at the end (empty: nowhere)
  std::string file;                   // the client's file to send
};

/// How a program describes itself in --help.
struct usage {
  const char* program;
  const char* synopsis;     // after the program's name
  const char* description;  // one line
  const char* output;       // what --output saves
  bool takes_file;          // one FILE argument is required (the client)
};

inline void print_help(const usage& u) {
  const options d;
  std::printf("usage: %s %s\n%s\n", u.program, u.synopsis, u.description);
  std::printf(
      "  --help            print this help and exit\n"
      "  --transport NAME  tcp (TCP emulation) or verbs (rdma-core) (default: %s)\n"
      "  --address IP      the server's address (default: %s)\n"
      "  --port N          0 picks SMB Direct's port: 5445 over tcp; over verbs 445, or 5445 on\n"
      "                    iWARP (default: %u)\n"
      "  --output FILE     save %s (default: do not save)\n",
      d.transport.c_str(), d.address.c_str(), unsigned(d.port), u.output);
}

// Returns an error message, or nothing when `o` is ready.
inline std::optional<std::string> parse_args(int argc, char** argv, bool takes_file, options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (!arg.starts_with("-")) {
      if (!takes_file || !o.file.empty()) return "unexpected argument " + std::string(arg);
      o.file = arg;
      continue;
    }
    if (i + 1 == argc) return std::string(arg) + " needs a value";
    const std::string value = argv[++i];
    if (arg == "--transport" && (value == "tcp" || value == "verbs")) {
      o.transport = value;
    } else if (arg == "--address") {
      o.address = value;
    } else if (arg == "--output") {
      o.output = value;
    } else if (arg == "--port") {
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), o.port);
      if (ec != std::errc{} || end != value.data() + value.size()) return "--port: \"" + value + "\" is not 0-65535";
    } else {
      return "bad option " + std::string(arg) + " " + value + " (see --help)";
    }
  }
  if (takes_file && o.file.empty()) return "which FILE? (see --help)";
  return std::nullopt;
}

/// Parses the command line into `o`. After --help or a usage error (which it prints) it returns
/// the exit status, 0 or 2; nothing when the program should run.
inline std::optional<int> parse(int argc, char** argv, const usage& u, options& o) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) != "--help") continue;
    print_help(u);
    return 0;
  }
  if (auto problem = parse_args(argc, argv, u.takes_file, o)) {
    std::fprintf(stderr, "%s: %s\n", u.program, problem->c_str());
    return 2;
  }
  return std::nullopt;
}

// ------------------------------------------------------------------------------ messages

enum class step : std::uint32_t { offer = 1, upload, written, download, done };

struct message {
  step kind{};
  std::uint64_t size = 0;
  std::uint64_t crc = 0;
  smbdirect::wire::buffer_descriptor_v1 region{};
};

constexpr std::size_t message_size = 40;

template <class T>
void put_le(std::span<std::byte> out, std::size_t at, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i) out[at + i] = static_cast<std::byte>(v >> (8 * i));
}

template <class T>
T get_le(std::span<const std::byte> in, std::size_t at) {
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(std::to_integer<T>(in[at + i]) << (8 * i));
  return v;
}

template <class Connection>
asio::awaitable<std::error_code> send(Connection& c, message m) {
  std::array<std::byte, message_size> bytes{};
  put_le(bytes, 0, static_cast<std::uint32_t>(m.kind));
  put_le(bytes, 8, m.size);
  put_le(bytes, 16, m.crc);
  (void)smbdirect::wire::encode(m.region, std::span(bytes).subspan(24));  // 16 bytes: always fits
  auto [ec, n] = co_await c.async_send(asio::buffer(bytes), use_tuple);
  co_return ec;
}

/// Receives the next message, which must be the `expected` step. Error: std::errc::protocol_error
/// for anything else.
template <class Connection>
asio::awaitable<std::pair<std::error_code, message>> receive(Connection& c, step expected) {
  std::vector<std::byte> bytes;
  auto [ec, n] = co_await c.async_receive(bytes, use_tuple);
  message m;
  if (ec) co_return std::pair{ec, m};
  if (bytes.size() != message_size || get_le<std::uint32_t>(bytes, 0) != static_cast<std::uint32_t>(expected))
    co_return std::pair{std::make_error_code(std::errc::protocol_error), m};
  m.kind = expected;
  m.size = get_le<std::uint64_t>(bytes, 8);
  m.crc = get_le<std::uint64_t>(bytes, 16);
  (void)smbdirect::wire::decode(std::span(bytes).subspan(24), m.region);  // 16 bytes: always there
  co_return std::pair{std::error_code{}, m};
}

// ------------------------------------------------------------------------------ files

inline std::uint64_t crc64(std::span<const std::byte> bytes) {
  return crc64_ecma_refl(0, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

/// Saves `bytes` to `path` (nothing for an empty path); false on failure.
inline bool save(const std::string& path, std::span<const std::byte> bytes) {
  if (path.empty()) return true;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out.flush());
}

/// Prints "<who>: error: <step>: <message>" and returns exit status 1.
inline int fail(const char* who, const std::string& step, std::error_code ec = {}) {
  std::fprintf(stderr, "%s: error: %s%s%s\n", who, step.c_str(), ec ? ": " : "", ec ? ec.message().c_str() : "");
  return 1;
}

}  // namespace file_transfer
