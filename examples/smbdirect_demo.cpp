// smbdirect_demo: both ends of an SMB Direct ([MS-SMBD]) connection in one process.
//
// The client and server negotiate, exchange upper-layer messages in both directions at once,
// then the client RDMA-writes a file into memory the server registered and reads it back.
// Every byte is verified. Exit status: 0 verified, 1 error or mismatch, 2 bad usage.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <smbdirect/loopback.hpp>
#include <smbdirect/smbdirect.hpp>
#include <smbdirect/tcp.hpp>
#include <smbdirect/verbs.hpp>

namespace {

using namespace asio::experimental::awaitable_operators;
using clock_type = std::chrono::steady_clock;
using ull = unsigned long long;  // for printf's %llu
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::uint64_t mib = 1024 * 1024;

// ------------------------------------------------------------------------------ options

struct settings {
  std::string transport = "loopback";
  std::string address;  // tcp: default 127.0.0.1; verbs: an address of the RDMA device (both ends use it)
  std::string device;   // verbs: required device name, "" for any
  std::uint64_t port = 0;  // 0: 5445 for tcp; for verbs 445, or 5445 on iWARP
  std::string file;  // empty: generate file_size pseudo-random bytes
  std::uint64_t file_size = 64 * mib;
  std::uint64_t messages = 64;
  std::uint64_t max_message = 1024 * 1024;
  smbdirect::parameters params;
  std::uint64_t keepalive_ms = static_cast<std::uint64_t>(params.keepalive_interval.count());
  bool quiet = false;
};

// A numeric option points into a settings object, so --help reads its default from a
// default-constructed one: the library's defaults stay written only in parameters.hpp.
struct numeric_option {
  std::string_view name, metavar, unit, help;
  std::uint64_t min, max;
  std::variant<std::uint16_t*, std::uint32_t*, std::uint64_t*> target;
};

std::vector<numeric_option> numeric_options(settings& s) {
  constexpr std::uint64_t u16 = 0xffff, u32 = 0xffffffff;
  auto& p = s.params;
  return {
      {"--file-size", "BYTES", "bytes", "size of the generated file (ignored with --file)", 1, u32, &s.file_size},
      {"--messages", "N", "messages", "upper-layer messages sent in each direction", 1, u32, &s.messages},
      {"--max-message", "BYTES", "bytes", "largest message; sizes mix 1 byte up to this, both included", 1, u32,
       &s.max_message},
      {"--send-credits", "N", "credits", "send credit target: credits we ask the peer to grant", 1, u16,
       &p.send_credit_target},
      {"--receive-credits", "N", "credits", "receive credit max: receives posted (credits granted) at once", 1, u16,
       &p.receive_credit_max},
      {"--max-send-size", "BYTES", "bytes", "preferred size of one sent message, 24-byte header included",
       smbdirect::min_receive_size, u32, &p.max_send_size},
      {"--max-receive-size", "BYTES", "bytes", "largest single message accepted (each receive buffer's size)",
       smbdirect::min_receive_size, u32, &p.max_receive_size},
      {"--max-fragmented-size", "BYTES", "bytes", "largest reassembled upper-layer message accepted",
       smbdirect::min_fragmented_size, u32, &p.max_fragmented_size},
      {"--max-read-write-size", "BYTES", "bytes", "most bytes one RDMA read or write may move", 1, u32,
       &p.max_read_write_size},
      {"--keepalive-ms", "MS", "ms", "idle time before a keepalive is sent; 0 disables keepalives", 0, u32,
       &s.keepalive_ms},
      {"--port", "N", "port", "tcp, verbs: port; 0 picks 5445 (tcp, iWARP) or 445 (InfiniBand, RoCE)", 0, u16, &s.port},
  };
}

void print_usage() {
  std::printf(
      "usage: smbdirect_demo [options]\n\n"
      "Runs both ends of an SMB Direct connection in one process: sends messages both ways at once,\n"
      "then RDMA-writes a file into the server's memory and reads it back, verifying every byte.\n"
      "Exit status: 0 verified, 1 error or mismatch, 2 bad usage. Options also accept --name=value.\n\n"
      "  --help                      print this help and exit\n"
      "  --quiet                     print only the final \"verified:\" line and errors; no progress bar\n"
      "  --transport NAME            loopback (in-process), tcp (iWARP's wire format over TCP) or\n"
      "                              verbs (rdma-core; needs --address) (default: loopback)\n"
      "  --address IP                tcp, verbs: IPv4/IPv6 address the server listens on and the client\n"
      "                              connects to; verbs: an address of the RDMA device\n"
      "                              (default for tcp: 127.0.0.1)\n"
      "  --device NAME               verbs: fail unless the address resolves to this device (e.g. rxe0)\n"
      "  --file PATH                 file to move by RDMA, 1 byte to 4 GiB - 1\n"
      "                              (default: generated pseudo-random bytes, see --file-size)\n");
  settings defaults;
  for (const auto& o : numeric_options(defaults)) {
    const std::string flag = std::string(o.name) + " " + std::string(o.metavar);
    const ull value = std::visit([](auto* t) -> ull { return *t; }, o.target);
    std::printf("  %-27s %.*s\n", flag.c_str(), static_cast<int>(o.help.size()), o.help.data());
    std::printf("  %-27s (default: %llu %.*s; range %llu..%llu)\n", "", value, static_cast<int>(o.unit.size()),
                o.unit.data(), ull(o.min), ull(o.max));
  }
}

std::optional<std::uint64_t> parse_number(std::string_view text) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// Returns an error message, or nothing when `s` is ready to use.
std::optional<std::string> parse_args(int argc, char** argv, settings& s, bool& help) {
  auto table = numeric_options(s);
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::optional<std::string_view> value;
    if (const auto eq = arg.find('='); eq != arg.npos) value = arg.substr(eq + 1), arg = arg.substr(0, eq);
    if (arg == "--help" || arg == "--quiet") {
      if (value) return std::string(arg) + " takes no value";
      (arg == "--help" ? help : s.quiet) = true;
      continue;
    }
    const auto numeric = std::find_if(table.begin(), table.end(), [&](const auto& o) { return o.name == arg; });
    const bool text = arg == "--transport" || arg == "--file" || arg == "--address" || arg == "--device";
    if (!text && numeric == table.end())
      return "unknown option " + std::string(arg) + " (see --help)";
    if (!value && i + 1 == argc) return std::string(arg) + " needs a value (see --help)";
    if (!value) value = argv[++i];
    if (arg == "--transport") {
      s.transport = *value;
      if (s.transport != "loopback" && s.transport != "tcp" && s.transport != "verbs")
        return "unknown transport \"" + s.transport + "\" (available: loopback, tcp, verbs)";
    } else if (arg == "--file") {
      s.file = *value;
    } else if (arg == "--address") {
      s.address = *value;
    } else if (arg == "--device") {
      s.device = *value;
    } else {
      const auto v = parse_number(*value);
      if (!v || *v < numeric->min || *v > numeric->max)
        return std::string(arg) + ": \"" + std::string(*value) + "\" is not a number in " +
               std::to_string(numeric->min) + ".." + std::to_string(numeric->max);
      std::visit([v](auto* t) { *t = static_cast<std::remove_pointer_t<decltype(t)>>(*v); }, numeric->target);
    }
  }
  s.params.keepalive_interval = smbdirect::milliseconds(s.keepalive_ms);
  if (s.transport == "verbs" && s.address.empty()) return "--transport verbs needs --address (see --help)";
  if (s.transport == "tcp" && s.address.empty()) s.address = "127.0.0.1";
  // Both ends use these parameters, so the peer's MaxFragmentedSize is ours. A message above it
  // would fail only its send (message_too_large) and leave the receiver waiting.
  if (s.max_message > s.params.max_fragmented_size)
    return "--max-message " + std::to_string(s.max_message) + " exceeds --max-fragmented-size " +
           std::to_string(s.params.max_fragmented_size);
  return std::nullopt;
}

// ------------------------------------------------------------------------------ test data

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer: cheap and well spread
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Message `index` of `count`: the first is 1 byte and the last `max`, so both limits are always
// exercised; the others are log-uniform, so tiny, one-fragment and many-fragment sizes all occur.
std::size_t message_size(int direction, std::uint64_t index, std::uint64_t count, std::uint64_t max) {
  if (index + 1 == count) return max;
  if (index == 0) return 1;
  const std::uint64_t h = mix(index * 2 + static_cast<std::uint64_t>(direction));
  const int bits = static_cast<int>(h % static_cast<std::uint64_t>(std::bit_width(max))) + 1;
  return std::min<std::uint64_t>(max, 1 + (mix(h) >> (64 - bits)));
}

// Content depends on (direction, index, position): a message delivered to the wrong side, out
// of order, or with a fragment lost or shifted fails verification.
void fill_pattern(std::span<std::byte> out, int direction, std::uint64_t index) {
  const std::uint64_t seed = mix(index * 2 + static_cast<std::uint64_t>(direction) + 1);
  std::uint64_t word = 0;
  for (std::size_t pos = 0; pos < out.size(); ++pos) {
    if (pos % 8 == 0) word = mix(seed + pos / 8);
    out[pos] = static_cast<std::byte>(word >> (8 * (pos % 8)));
  }
}

std::uint64_t count_differences(std::span<const std::byte> a, std::span<const std::byte> b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

// Reads --file, or generates the bytes. Returns an error message on failure.
std::optional<std::string> load_file(const settings& s, std::vector<std::byte>& out) {
  if (s.file.empty()) {
    out.resize(s.file_size);
    std::mt19937_64 rng(2024);  // fixed seed: every run moves the same bytes
    for (std::size_t i = 0; i < out.size(); i += 8) {
      const std::uint64_t r = rng();
      std::memcpy(out.data() + i, &r, std::min<std::size_t>(8, out.size() - i));
    }
    return std::nullopt;
  }
  // The file becomes one registered region, whose length field is 32 bits and must not be 0.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(s.file, ec)) return "\"" + s.file + "\" is missing or not a regular file";
  const std::uintmax_t size = std::filesystem::file_size(s.file, ec);
  if (ec || size == 0 || size > 0xffffffff) return "\"" + s.file + "\" must hold 1 byte to 4 GiB - 1";
  out.resize(static_cast<std::size_t>(size));
  std::ifstream in(s.file, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(size)))
    return "cannot read \"" + s.file + "\"";
  return std::nullopt;
}

double seconds_since(clock_type::time_point start) {
  return std::max(1e-9, std::chrono::duration<double>(clock_type::now() - start).count());
}

// ------------------------------------------------------------------------------ phases

// What a phase coroutine reports; `where` names the failed step when `ec` is set.
struct outcome {
  std::error_code ec;
  std::string where;
  std::uint64_t mismatches = 0;
  std::uint64_t bytes = 0;
  double write_seconds = 0, read_seconds = 0;  // RDMA client only
};

outcome failed(std::error_code ec, std::string where) { return {ec, std::move(where)}; }

// A failed step can leave its connection up (e.g. a refused registration) while the peer waits
// for a message that will never come; closing turns that wait into an error instead of a hang.
template <class Connection>
asio::awaitable<outcome> or_close(Connection& c, asio::awaitable<outcome> step) {
  outcome r = co_await std::move(step);
  if (r.ec) co_await c.async_close(use_tuple);
  co_return r;
}

template <class Connection>
asio::awaitable<outcome> negotiate(Connection& c, bool active) {
  if (active) {
    auto [ec] = co_await c.async_connect(use_tuple);
    co_return failed(ec, "client connect");
  }
  auto [ec] = co_await c.async_accept(use_tuple);
  co_return failed(ec, "server accept");
}

template <class Connection>
asio::awaitable<outcome> send_messages(Connection& c, std::string who, int direction, const settings& s) {
  std::vector<std::byte> message;
  outcome r;
  for (std::uint64_t i = 0; i < s.messages; ++i) {
    message.resize(message_size(direction, i, s.messages, s.max_message));
    fill_pattern(message, direction, i);
    auto [ec, n] = co_await c.async_send(asio::buffer(message), use_tuple);
    if (ec) co_return failed(ec, who + " send");
    r.bytes += n;
  }
  co_return r;
}

template <class Connection>
asio::awaitable<outcome> receive_messages(Connection& c, std::string who, int direction, const settings& s) {
  std::vector<std::byte> message, expected;
  outcome r;
  for (std::uint64_t i = 0; i < s.messages; ++i) {
    auto [ec, n] = co_await c.async_receive(message, use_tuple);
    if (ec) co_return failed(ec, who + " receive");
    expected.resize(message_size(direction, i, s.messages, s.max_message));
    fill_pattern(expected, direction, i);
    if (count_differences(message, expected) != 0) ++r.mismatches;
  }
  co_return r;
}

// Redraws one stderr line whenever the whole percentage changes.
struct progress_bar {
  bool enabled;
  const char* label;
  std::uint64_t total;
  int shown = -1;
  void update(std::uint64_t done) {
    const int percent = static_cast<int>(done * 100 / total);
    if (!enabled || percent == shown) return;
    shown = percent;
    const auto filled = static_cast<std::size_t>(percent * 40 / 100);
    const std::string bar = std::string(filled, '#') + std::string(40 - filled, '.');
    std::fprintf(stderr, "\r%-10s [%s] %3d%%%s", label, bar.c_str(), percent, done == total ? "\n" : "");
  }
};

// Moves `local` to (Write) or from the peer's region in chunks of at most the negotiated
// MaxReadWriteSize, each addressed by its offset into the one remote descriptor.
template <bool Write, class Connection, class Bytes>
asio::awaitable<std::error_code> rdma_transfer(Connection& c, Bytes local,
                                               const smbdirect::wire::buffer_descriptor_v1& remote, progress_bar bar) {
  const std::size_t chunk = c.negotiated().max_read_write_size;
  for (std::size_t offset = 0; offset < local.size(); offset += chunk) {
    const auto part = asio::buffer(local.data() + offset, std::min(chunk, local.size() - offset));
    std::tuple<std::error_code, std::size_t> done;
    if constexpr (Write) done = co_await c.async_rdma_write(part, std::span(&remote, 1), use_tuple, offset);
    if constexpr (!Write) done = co_await c.async_rdma_read(part, std::span(&remote, 1), use_tuple, offset);
    if (auto ec = std::get<0>(done)) co_return ec;
    bar.update(offset + std::get<1>(done));
  }
  co_return std::error_code{};
}

// Client: learn where the server's buffer is, write the file there, read it back, compare.
template <class Connection>
asio::awaitable<outcome> rdma_client(Connection& c, std::span<const std::byte> file, bool show_progress) {
  std::vector<std::byte> message;
  if (auto [ec, n] = co_await c.async_receive(message, use_tuple); ec)
    co_return failed(ec, "client receive descriptor");
  smbdirect::wire::buffer_descriptor_v1 remote;
  if (auto ec = smbdirect::wire::decode(message, remote)) co_return failed(ec, "client decode descriptor");

  outcome r;
  auto start = clock_type::now();
  if (auto ec = co_await rdma_transfer<true, Connection>(c, file, remote, {show_progress, "RDMA write", file.size()}))
    co_return failed(ec, "client RDMA write");
  r.write_seconds = seconds_since(start);

  std::vector<std::byte> back(file.size());
  start = clock_type::now();
  if (auto ec = co_await rdma_transfer<false, Connection>(c, std::span(back), remote, {show_progress, "RDMA read", file.size()}))
    co_return failed(ec, "client RDMA read");
  r.read_seconds = seconds_since(start);
  r.mismatches = count_differences(file, back);

  // The server keeps its buffer registered until we say we are done with it.
  const std::array done{std::byte{'d'}, std::byte{'o'}, std::byte{'n'}, std::byte{'e'}};
  if (auto [ec, n] = co_await c.async_send(asio::buffer(done), use_tuple); ec) co_return failed(ec, "client send done");
  co_return r;
}

// Server: expose a buffer of the file's size (known out of band here; an SMB2 WRITE request
// would carry it) for the client's RDMA, then check what landed in it.
template <class Connection>
asio::awaitable<outcome> rdma_server(Connection& c, std::span<const std::byte> file) {
  std::vector<std::byte> target(file.size());
  auto [rec, reg] = c.register_buffer(asio::buffer(target), smbdirect::access::remote_read_write);
  if (rec) co_return failed(rec, "server register_buffer");
  std::array<std::byte, smbdirect::wire::buffer_descriptor_v1::size> descriptor;
  if (auto ec = smbdirect::wire::encode(reg.descriptor, descriptor)) co_return failed(ec, "server encode descriptor");
  if (auto [ec, n] = co_await c.async_send(asio::buffer(descriptor), use_tuple); ec)
    co_return failed(ec, "server send descriptor");
  std::vector<std::byte> message;
  if (auto [ec, n] = co_await c.async_receive(message, use_tuple); ec) co_return failed(ec, "server receive done");
  if (auto ec = c.deregister_buffer(reg)) co_return failed(ec, "server deregister_buffer");
  // Checked here too: the client's read-back alone cannot tell a lost write from a lost read.
  outcome r;
  r.mismatches = count_differences(target, file);
  co_return r;
}

// ------------------------------------------------------------------------------ report

void row(const char* name, ull client, ull server) { std::printf("  %-28s %14llu %14llu\n", name, client, server); }

void print_negotiated(const smbdirect::negotiated_parameters& c, const smbdirect::negotiated_parameters& s) {
  std::printf("%-30s %14s %14s\n", "negotiated", "client", "server");
  row("max_send_size", c.max_send_size, s.max_send_size);
  row("max_receive_size", c.max_receive_size, s.max_receive_size);
  row("max_fragmented_send_size", c.max_fragmented_send_size, s.max_fragmented_send_size);
  row("max_fragmented_recv_size", c.max_fragmented_recv_size, s.max_fragmented_recv_size);
  row("max_read_write_size", c.max_read_write_size, s.max_read_write_size);
  row("initial send credits", c.initial_send_credits, s.initial_send_credits);
  row("send credit target", c.send_credit_target, s.send_credit_target);
  row("receive credit target", c.receive_credit_target, s.receive_credit_target);
  row("receive credit max", c.receive_credit_max, s.receive_credit_max);
}

void print_stats(const smbdirect::statistics& c, const smbdirect::statistics& s) {
  std::printf("%-30s %14s %14s\n", "statistics", "client", "server");
  row("messages sent", c.messages_sent, s.messages_sent);
  row("messages received", c.messages_received, s.messages_received);
  row("fragments sent", c.fragments_sent, s.fragments_sent);
  row("fragments received", c.fragments_received, s.fragments_received);
  row("bytes sent", c.bytes_sent, s.bytes_sent);
  row("bytes received", c.bytes_received, s.bytes_received);
  row("empty messages sent", c.empty_messages_sent, s.empty_messages_sent);
  row("empty messages received", c.empty_messages_received, s.empty_messages_received);
  row("credits granted", c.credits_granted, s.credits_granted);
  row("credits received", c.credits_received, s.credits_received);
  row("keepalives sent", c.keepalives_sent, s.keepalives_sent);
  row("keepalives received", c.keepalives_received, s.keepalives_received);
  row("RDMA writes", c.rdma_writes, s.rdma_writes);
  row("RDMA reads", c.rdma_reads, s.rdma_reads);
  row("RDMA bytes written", c.rdma_bytes_written, s.rdma_bytes_written);
  row("RDMA bytes read", c.rdma_bytes_read, s.rdma_bytes_read);
  row("errors", c.errors, s.errors);
}

void print_rate(const char* phase, std::uint64_t bytes, double seconds) {
  std::printf("%-21s %9llu bytes in %.3f s: %.1f MiB/s\n", phase, ull(bytes), seconds,
              static_cast<double>(bytes) / mib / seconds);
}

// Prints every failed step (the root cause and its echo at the peer); true if there was one.
bool any_failed(std::initializer_list<const outcome*> steps) {
  bool any = false;
  for (const outcome* o : steps) {
    if (!o->ec) continue;
    std::fprintf(stderr, "error: %s: %s\n", o->where.c_str(), o->ec.message().c_str());
    any = true;
  }
  return any;
}

// ------------------------------------------------------------------------------ main flow

template <class Connection>
asio::awaitable<int> run(const settings& s, std::span<const std::byte> file, Connection& client, Connection& server) {
  const bool verbose = !s.quiet;
  // Accept first: it posts the server's first receive, and a Negotiate Request arriving before
  // that fails with receiver_not_ready, as on RDMA hardware (rnr_retry_count 0).
  auto [accepted, connected] = co_await (negotiate(server, false) && negotiate(client, true));
  if (any_failed({&accepted, &connected})) co_return 1;
  if (verbose) print_negotiated(client.negotiated(), server.negotiated());

  // Both directions at once: each side sends while it receives.
  auto start = clock_type::now();
  auto [c_sent, c_got, s_sent, s_got] =
      co_await (or_close(client, send_messages(client, "client", 0, s)) &&
                or_close(client, receive_messages(client, "client", 1, s)) &&
                or_close(server, send_messages(server, "server", 1, s)) &&
                or_close(server, receive_messages(server, "server", 0, s)));
  const double message_seconds = seconds_since(start);
  if (any_failed({&c_sent, &c_got, &s_sent, &s_got})) co_return 1;

  const bool show_progress = verbose && ::isatty(2);
  auto [rdma, exposed] = co_await (or_close(client, rdma_client(client, file, show_progress)) &&
                                   or_close(server, rdma_server(server, file)));
  if (any_failed({&rdma, &exposed})) co_return 1;

  if (verbose) {
    print_rate("messages, both ways:", c_sent.bytes + s_sent.bytes, message_seconds);
    print_rate("RDMA write:", file.size(), rdma.write_seconds);
    print_rate("RDMA read:", file.size(), rdma.read_seconds);
    print_stats(client.stats(), server.stats());
  }
  if (c_got.mismatches || s_got.mismatches || rdma.mismatches || exposed.mismatches) {
    std::fprintf(stderr,
                 "error: verification failed: %llu messages differ, %llu bytes read back differ, "
                 "%llu bytes in the server's buffer differ\n",
                 ull(c_got.mismatches + s_got.mismatches), ull(rdma.mismatches), ull(exposed.mismatches));
    co_return 1;
  }
  std::printf("verified: %llu messages each way, %zu bytes by RDMA write and read back\n", ull(s.messages),
              file.size());

  auto [client_closed] = co_await client.async_close(use_tuple);
  // SMB Direct has no close message: the server may already have seen the client disconnect.
  auto [server_closed] = co_await server.async_close(use_tuple);
  if (server_closed == smbdirect::errc::peer_disconnected) server_closed = {};
  const outcome c_close = failed(client_closed, "client close"), s_close = failed(server_closed, "server close");
  co_return any_failed({&c_close, &s_close}) ? 1 : 0;
}

// Over verbs and tcp both ends still live in this process: two ends of one RDMA CM or TCP
// connection. `describe` prints what the transport settled.
template <class SelfConnection, class Describe>
asio::awaitable<int> run_pair(const settings& s, std::span<const std::byte> file, SelfConnection pair, Describe describe) {
  if (pair.error) {
    std::fprintf(stderr, "error: %s on %s port %u: %s\n", pair.where, s.address.c_str(), unsigned(pair.port),
                 pair.error.message().c_str());
    co_return 1;
  }
  if (!s.quiet) describe(pair);
  using connection = smbdirect::connection<decltype(pair.client)>;
  connection client(std::move(pair.client), s.params), server(std::move(pair.server), s.params);
  co_return co_await run(s, file, client, server);
}

void describe_verbs(const smbdirect::verbs::self_connection& pair) {
  const auto& qp = pair.client;
  std::printf("device: %s\nport %u, ORD %u, memory windows: %s\n", smbdirect::verbs::to_string(qp.device()).c_str(),
              unsigned(pair.port), qp.initiator_depth(), qp.uses_memory_windows() ? "yes" : "no");
}

void describe_tcp(const smbdirect::tcp::self_connection& pair) {
  const auto& m = pair.client.settings();
  std::printf("port %u, MPA revision %u, CRC32c %s, IRD %u, ORD %u\n", unsigned(pair.port), unsigned(m.revision),
              m.crc ? "on" : "off", unsigned(m.ird), unsigned(m.ord));
}

asio::awaitable<int> run_verbs(const settings& s, std::span<const std::byte> file) {
  auto o = smbdirect::verbs::options::for_parameters(s.params);
  o.device = s.device;
  co_return co_await run_pair(s, file,
                              co_await smbdirect::verbs::connect_to_self(co_await asio::this_coro::executor, s.address,
                                                                         static_cast<std::uint16_t>(s.port), o),
                              describe_verbs);
}

asio::awaitable<int> run_tcp(const settings& s, std::span<const std::byte> file) {
  co_return co_await run_pair(s, file,
                              co_await smbdirect::tcp::connect_to_self(co_await asio::this_coro::executor, s.address,
                                                                       static_cast<std::uint16_t>(s.port)),
                              describe_tcp);
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  bool help = false;
  std::vector<std::byte> file;
  auto problem = parse_args(argc, argv, s, help);
  if (!problem && help) {
    print_usage();
    return 0;
  }
  if (!problem) problem = load_file(s, file);
  if (problem) {
    std::fprintf(stderr, "smbdirect_demo: %s\n", problem->c_str());
    return 2;
  }
  if (!s.quiet) {
    std::printf("transport: %s, %llu messages each way of 1 to %llu bytes\n", s.transport.c_str(), ull(s.messages),
                ull(s.max_message));
    if (!s.file.empty())
      std::printf("file: %s, %zu bytes\n", s.file.c_str(), file.size());
    else if (s.file_size % mib == 0)
      std::printf("file: generated %llu MiB of pseudo-random bytes\n", ull(s.file_size / mib));
    else
      std::printf("file: generated %llu pseudo-random bytes\n", ull(s.file_size));
  }

  asio::io_context io;
  int status = 1;
  auto finish = [&](std::exception_ptr thrown, int result) {
    if (thrown) std::fprintf(stderr, "error: internal: unexpected exception\n");
    status = thrown ? 1 : result;
    io.stop();  // after an early return the connections are still up and would keep io.run() going
  };
  if (s.transport == "verbs" || s.transport == "tcp") {
    if (s.transport == "verbs") {
      asio::co_spawn(io, run_verbs(s, file), finish);
    } else {
      asio::co_spawn(io, run_tcp(s, file), finish);
    }
    io.run();
    return status;
  }
  using connection = smbdirect::connection<smbdirect::loopback::endpoint>;
  auto [a, b] = smbdirect::loopback::make_pair(io.get_executor(), io.get_executor());
  connection client(std::move(a), s.params), server(std::move(b), s.params);
  asio::co_spawn(io, run(s, file, client, server), finish);
  io.run();
  return status;
}
