// smbdirect_bench: throughput of SMB Direct sends, RDMA writes or RDMA reads, one way or both,
// between the two ends of a connection in one process, on one thread or two, in the spirit of
// perftest's ib_send_bw / ib_write_bw.
// Units: MB/s = 10^6 bytes per second (perftest's unit), so the numbers compare directly.
//
// usage: smbdirect_bench [--transport loopback|tcp|verbs] [--address IP] [--op send|write|read]
//                        [--size BYTES | --sweep MIN:MAX] [--iterations N | --duration SECONDS]
//                        [--depth N] [--max-send-size BYTES] [--max-receive-size BYTES]
//                        [--credits N] [--direction one-way|both] [--threads 1|2]
//                        [--receive copy|in-place] [--lent-buffers N]
//                        [--baseline] [--no-crc] [--no-register] [--busy-poll]
//                        [--format table|csv|json]
//
// --baseline then measures the limit of the same bytes in the same run and prints ours as a
// ratio of it: loopback, memcpy of each message from the senders' buffers into one receive
// buffer; tcp, a plain TCP socket on the same address moving messages of the same size.
// --sweep runs every power of two from MIN to MAX, each size on a new connection, with a
// progress bar on stderr when it is a terminal.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
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
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

struct settings {
  std::string transport = "loopback", address, op = "send", format = "table", direction = "one-way";
  std::string receive = "copy";                 // or "in-place": received_message, lent buffers
  std::optional<std::uint64_t> lent_buffers;    // --lent-buffers; else chosen per size
  std::uint64_t size = 65536, iterations = 1000, depth = 16;
  std::vector<std::uint64_t> sizes;  // --sweep (empty: just `size`)
  double duration = 0;               // seconds per size; 0: use `iterations`
  int threads = 0;                   // 2: the server end on a second thread; 0: per transport
  bool baseline = false;
  bool crc = true;  // tcp: ask for MPA CRC32c
  bool register_buffers = true;  // the workers' buffers, with access::local (--no-register)
  bool busy_poll = false;        // verbs: options::busy_poll
  smbdirect::parameters params;
  int ways() const { return direction == "both" ? 2 : 1; }
};

/// One measurement: ours, and the baseline's time for the same bytes when --baseline.
struct result {
  std::uint64_t size = 0, iterations = 0;  // iterations per direction
  int ways = 1;                             // 2: both directions at once
  std::uint32_t max_send_size = 0;          // negotiated
  double seconds = 0;
  std::optional<double> baseline_seconds;
  std::uint64_t in_place = 0;  // of the timed messages, those received in lent buffers
  double bytes() const { return double(size) * double(iterations) * ways; }
};

void usage() {
  std::printf(
      "usage: smbdirect_bench [options]\n"
      "Throughput between two SMB Direct connections in this process. Exit 0 on success.\n"
      "  --transport loopback|tcp|verbs  (default loopback)\n"
      "  --address IP                tcp: address to listen on and connect to (default 127.0.0.1);\n"
      "                              verbs: address of the RDMA device (required)\n"
      "  --op send|write|read        upper-layer messages, RDMA writes or RDMA reads (default send)\n"
      "  --size BYTES                bytes per message or RDMA operation (default 65536)\n"
      "  --sweep MIN:MAX             every power of two from MIN to MAX bytes instead of --size,\n"
      "                              each on a new connection (progress bar on a terminal)\n"
      "  --iterations N              messages or operations per size (default 1000)\n"
      "  --duration SECONDS          instead of --iterations: about this long per size (the count\n"
      "                              comes from a short pilot run)\n"
      "  --depth N                   operations in flight (default 16)\n"
      "  --max-send-size BYTES       MaxSendSize both sides prefer (default 1364)\n"
      "  --max-receive-size BYTES    MaxReceiveSize both sides accept (default 1364)\n"
      "  --credits N                 send credit target and receive credit max (default 255)\n"
      "  --direction one-way|both    client to server only, or both ways at once, each way with\n"
      "                              --depth in flight (default one-way); rates count both ways\n"
      "  --threads 1|2               2: the server end runs on a second thread, as perftest's two\n"
      "                              processes do (default 2 for verbs, else 1); the tcp baseline\n"
      "                              then reads on the second thread too\n"
      "  --receive copy|in-place     send: receive each message into a vector (copied), or in place\n"
      "                              with a received_message (its receive buffers lent, no copy)\n"
      "                              (default copy)\n"
      "  --lent-buffers N            in-place: parameters::lent_receive_buffers (default: enough\n"
      "                              for two messages of --size bytes)\n"
      "  --baseline                  also time the limit for the same bytes and print our rate as\n"
      "                              a ratio of it: loopback, memcpy of each message; tcp, a plain\n"
      "                              TCP socket moving messages of --size bytes\n"
      "  --no-crc                    tcp: do not ask for MPA CRC32c (default: ask)\n"
      "  --no-register               do not register the senders' and RDMA workers' buffers (by\n"
      "                              default they are, once, with access::local, as perftest\n"
      "                              registers its buffers): verbs then copies each SEND into its\n"
      "                              send buffers and registers each RDMA operation's memory\n"
      "  --busy-poll                 verbs: poll the completion queues instead of sleeping on\n"
      "                              their completion channels (perftest polls unless given -e)\n"
      "  --format table|csv|json     output (default table); MB/s = 10^6 bytes per second\n");
}

bool parse(int argc, char** argv, settings& s) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help") return usage(), std::exit(0), true;
    if (a == "--baseline" || a == "--busy-poll") {
      (a == "--baseline" ? s.baseline : s.busy_poll) = true;
      continue;
    }
    if (a == "--no-crc" || a == "--no-register") {
      (a == "--no-crc" ? s.crc : s.register_buffers) = false;
      continue;
    }
    if (i + 1 >= argc) return std::fprintf(stderr, "smbdirect_bench: %s needs a value\n", argv[i]), false;
    const char* v = argv[++i];
    char* end = nullptr;
    const auto n = std::strtoull(v, &end, 10);
    const bool number = *v && *end == 0;
    if (a == "--sweep") {
      char* colon = nullptr;
      const auto low = std::strtoull(v, &colon, 10);
      const auto high = *colon == ':' ? std::strtoull(colon + 1, &end, 10) : 0;
      if (*colon != ':' || *end || low == 0 || high < low || high > 0xffffffffu)
        return std::fprintf(stderr, "smbdirect_bench: --sweep needs MIN:MAX, 1 <= MIN <= MAX < 4 GiB\n"), false;
      s.sizes.clear();
      for (std::uint64_t z = low; z <= high; z *= 2) s.sizes.push_back(z);
      continue;
    }
    if (a == "--duration") {
      s.duration = std::strtod(v, &end);
      if (*end || !(s.duration > 0 && s.duration <= 3600))
        return std::fprintf(stderr, "smbdirect_bench: --duration needs seconds, more than 0, at most 3600\n"), false;
      continue;
    }
    if (a == "--transport") s.transport = v;
    else if (a == "--format" && (std::string_view(v) == "table" || std::string_view(v) == "csv" || std::string_view(v) == "json"))
      s.format = v;
    else if (a == "--address") s.address = v;
    else if (a == "--op") s.op = v;
    else if (a == "--receive" && (std::string_view(v) == "copy" || std::string_view(v) == "in-place")) s.receive = v;
    else if (a == "--lent-buffers" && number && n <= 65535) s.lent_buffers = n;
    else if (a == "--direction" && (std::string_view(v) == "one-way" || std::string_view(v) == "both")) s.direction = v;
    else if (a == "--size" && number && n > 0 && n <= 0xffffffffu) s.size = n;
    else if (a == "--iterations" && number && n > 0) s.iterations = n;
    else if (a == "--depth" && number && n > 0 && n <= 4096) s.depth = n;
    else if (a == "--threads" && number && (n == 1 || n == 2)) s.threads = static_cast<int>(n);
    else if (a == "--max-send-size" && number && n >= 128 && n <= 0xffffffffu) s.params.max_send_size = static_cast<std::uint32_t>(n);
    else if (a == "--max-receive-size" && number && n >= 128 && n <= 0xffffffffu) s.params.max_receive_size = static_cast<std::uint32_t>(n);
    else if (a == "--credits" && number && n > 0 && n <= 0xffff)
      s.params.send_credit_target = s.params.receive_credit_max = static_cast<std::uint16_t>(n);
    else return std::fprintf(stderr, "smbdirect_bench: bad option %s %s (see --help)\n", argv[i - 1], v), false;
  }
  if (s.transport != "loopback" && s.transport != "tcp" && s.transport != "verbs")
    return std::fprintf(stderr, "smbdirect_bench: unknown transport %s\n", s.transport.c_str()), false;
  if (s.baseline && s.transport == "verbs")
    return std::fprintf(stderr, "smbdirect_bench: --baseline: for verbs run perftest (ib_send_bw, ib_write_bw) on the device\n"), false;
  if (s.transport == "tcp" && s.address.empty()) s.address = "127.0.0.1";
  if (s.transport == "verbs" && s.address.empty()) return std::fprintf(stderr, "smbdirect_bench: verbs needs --address\n"), false;
  if (s.op != "send" && s.op != "write" && s.op != "read") return std::fprintf(stderr, "smbdirect_bench: unknown --op\n"), false;
  if (s.sizes.empty()) s.sizes.push_back(s.size);
  if (s.threads == 0) s.threads = s.transport == "verbs" ? 2 : 1;
  s.params.keepalive_interval = smbdirect::milliseconds(0);
  return true;
}

/// `s` for one size: the message may be as large as the size, and so may one RDMA operation.
settings for_size(settings s, std::uint64_t size) {
  s.size = size;
  s.params.max_fragmented_size = std::max<std::uint32_t>(s.params.max_fragmented_size, static_cast<std::uint32_t>(size));
  s.params.max_read_write_size = std::max<std::uint32_t>(s.params.max_read_write_size, static_cast<std::uint32_t>(size));
  if (s.receive == "in-place") {
    // Two messages: one the receiver holds, the next arriving. Fragments carry up to
    // MaxSendSize - 24 bytes (both sides offer the same sizes).
    const std::uint64_t per_fragment = std::min(s.params.max_send_size, s.params.max_receive_size) - 24;
    const std::uint64_t wanted = s.lent_buffers.value_or(2 * ((size + per_fragment - 1) / per_fragment));
    s.params.lent_receive_buffers = static_cast<std::uint32_t>(std::min<std::uint64_t>(wanted, 65535 - s.params.receive_credit_max));
  }
  return s;
}

template <class Connection>
asio::awaitable<std::error_code> sender(Connection& c, const settings& s, std::uint64_t first, std::vector<std::byte>& buf) {
  for (std::uint64_t i = first; i < s.iterations; i += s.depth) {
    auto [ec, n] = co_await c.async_send(asio::buffer(buf), use_tuple);
    if (ec) co_return ec;
  }
  co_return std::error_code{};
}

/// Receives every message, into `Message`: a std::vector<std::byte> or a received_message.
template <class Message, class Connection>
asio::awaitable<std::error_code> receiver(Connection& c, const settings& s) {
  Message m;
  for (std::uint64_t i = 0; i < s.iterations; ++i) {
    auto [ec, n] = co_await c.async_receive(m, use_tuple);
    if (ec) co_return ec;
    if (n != s.size) co_return make_error_code(smbdirect::errc::internal_error);
  }
  co_return std::error_code{};
}

template <class Connection>
asio::awaitable<std::error_code> rdma_worker(Connection& c, const settings& s, std::uint64_t first,
                                             std::vector<std::byte>& local, smbdirect::wire::buffer_descriptor_v1 remote) {
  for (std::uint64_t i = first; i < s.iterations; i += s.depth) {
    auto r = std::span(&remote, 1);
    std::tuple<std::error_code, std::size_t> done;
    if (s.op == "write") {
      done = co_await c.async_rdma_write(asio::buffer(local), r, use_tuple);
    } else {
      done = co_await c.async_rdma_read(asio::buffer(local), r, use_tuple);
    }
    if (std::get<0>(done)) co_return std::get<0>(done);
  }
  co_return std::error_code{};
}

/// Where the two ends run: the client on the calling coroutine's executor, the server on
/// `server` (a second thread's with --threads 2). Each end is used only on its own executor.
struct ends {
  asio::any_io_executor client, server;
  /// Stops the second thread and waits for it, so that the server end may then be destroyed
  /// here; does nothing with one thread.
  std::function<void()> stop_server = [] {};
};

using smbdirect::detail::run_on;  // runs an awaitable on the other end's executor

template <class Connection>
asio::awaitable<std::pair<std::error_code, smbdirect::registration>> register_target(
    Connection& c, asio::mutable_buffer b, smbdirect::access rights = smbdirect::access::remote_read_write) {
  co_return c.register_buffer(b, rights);
}

/// RDMA ops: `targets` (`size` bytes per direction) registered for the peer's access, the
/// server's memory first, then for both directions the client's. Registered once per
/// connection and never revoked while it runs: over iWARP and TCP an RDMA Write completes
/// before the target has placed it.
template <class Connection>
asio::awaitable<std::pair<std::error_code, std::vector<smbdirect::wire::buffer_descriptor_v1>>> register_targets(
    Connection& client, Connection& server, ends on, const settings& s, std::vector<std::byte>& targets) {
  std::vector<smbdirect::wire::buffer_descriptor_v1> descriptors;
  for (int way = 0; way < s.ways() && s.op != "send"; ++way) {
    auto [ec, r] = co_await run_on(way == 0 ? on.server : on.client,
                                   register_target(way == 0 ? server : client,
                                                   asio::buffer(targets.data() + way * s.size, s.size)));
    if (ec) co_return std::pair{ec, descriptors};
    descriptors.push_back(r.descriptor);
  }
  co_return std::pair{std::error_code{}, std::move(descriptors)};
}

/// The workers' buffers, each registered with access::local on the end that sends from it
/// (or RDMA-reads into it), when s.register_buffers. They stay registered until the
/// connections close.
template <class Connection>
asio::awaitable<std::error_code> register_sources(Connection& client, Connection& server, ends on, const settings& s,
                                                  std::vector<std::vector<std::byte>>& buffers) {
  for (int way = 0; way < s.ways() && s.register_buffers; ++way)
    for (std::uint64_t w = 0; w < s.depth; ++w) {
      auto [ec, r] = co_await run_on(way == 0 ? on.client : on.server,
                                     register_target(way == 0 ? client : server,
                                                     asio::buffer(buffers[way * s.depth + w]), smbdirect::access::local));
      if (ec) co_return ec;
    }
  co_return std::error_code{};
}

/// Runs the senders (and receivers) or RDMA workers of every direction, each on its end's
/// executor, worker w of direction `way` on buffers[way * depth + w]; `targets` are the
/// descriptors from register_targets().
template <class Connection>
asio::awaitable<std::error_code> all_workers(Connection& client, Connection& server, ends on, const settings& s,
                                             const std::vector<smbdirect::wire::buffer_descriptor_v1>& targets,
                                             std::vector<std::vector<std::byte>>& buffers) {
  auto ex = co_await asio::this_coro::executor;
  // Each worker is its own coroutine; count them down (here, on this executor) and keep the
  // first error.
  std::error_code first;
  std::uint64_t running = (s.depth + (s.op == "send" ? 1 : 0)) * s.ways();
  asio::steady_timer done(ex, asio::steady_timer::time_point::max());
  auto finish = asio::bind_executor(ex, [&](std::exception_ptr, std::error_code ec) {
    if (ec && !first) first = ec;
    if (--running == 0) done.cancel();
  });
  for (int way = 0; way < s.ways(); ++way) {
    Connection& from = way == 0 ? client : server;
    Connection& to = way == 0 ? server : client;
    const auto& from_ex = way == 0 ? on.client : on.server;
    for (std::uint64_t w = 0; w < s.depth; ++w) {
      auto& buffer = buffers[way * s.depth + w];
      if (s.op == "send")
        asio::co_spawn(from_ex, sender(from, s, w, buffer), finish);
      else
        asio::co_spawn(from_ex, rdma_worker(from, s, w, buffer, targets[way]), finish);
    }
    if (s.op != "send") continue;
    const auto& to_ex = way == 0 ? on.server : on.client;
    if (s.receive == "in-place") asio::co_spawn(to_ex, receiver<smbdirect::received_message>(to, s), finish);
    else asio::co_spawn(to_ex, receiver<std::vector<std::byte>>(to, s), finish);
  }
  co_await done.async_wait(use_tuple);
  co_return first;
}

template <class Connection>
asio::awaitable<std::error_code> negotiate(Connection& c, bool active) {
  if (active) {
    auto [ec] = co_await c.async_connect(use_tuple);
    co_return ec;
  }
  auto [ec] = co_await c.async_accept(use_tuple);
  co_return ec;
}

// Plain TCP: iterations x size bytes written by one socket and read by another, in messages of
// `size` bytes (one write per message, no framing), on the loopback path the tcp transport uses.
asio::awaitable<std::error_code> socket_writer(asio::ip::tcp::socket& s, const settings& o) {
  std::vector<std::byte> buf(o.size, std::byte{0x5a});
  for (std::uint64_t i = 0; i < o.iterations; ++i) {
    auto [ec, n] = co_await asio::async_write(s, asio::buffer(buf), use_tuple);
    if (ec) co_return ec;
  }
  co_return std::error_code{};
}

asio::awaitable<std::error_code> socket_reader(asio::ip::tcp::socket& s, const settings& o) {
  std::vector<std::byte> buf(o.size);
  for (std::uint64_t i = 0; i < o.iterations; ++i) {
    auto [ec, n] = co_await asio::async_read(s, asio::buffer(buf), use_tuple);
    if (ec) co_return ec;
  }
  co_return std::error_code{};
}

/// Seconds that memcpy takes to move the same messages from `depth` source buffers (taken in
/// turn, as the senders do) into one destination buffer (as the receiver reuses its vector),
/// for each direction. The best of three runs: the baseline is the limit, so noise that slows
/// one run must not flatter our ratio.
double plain_memcpy(const settings& s) {
  std::vector<std::vector<std::byte>> sources(s.depth, std::vector<std::byte>(s.size, std::byte{0x5a}));
  std::vector<std::byte> destination(s.size);
  double best = 0;
  for (int run = 0; run < 3; ++run) {
    const auto start = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < s.iterations * s.ways(); ++i) {
      std::memcpy(destination.data(), sources[i % s.depth].data(), s.size);
      asm volatile("" : : "r"(destination.data()) : "memory");  // the copy must happen
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (run == 0 || seconds < best) best = seconds;
  }
  return best;
}

/// Seconds the plain TCP transfer took, or a negative value on error. Socket `a` is the
/// client's, `b` (accepted) the server's, used on their ends' executors.
asio::awaitable<double> plain_tcp(const settings& s, ends on) {
  asio::ip::tcp::acceptor acceptor(on.client, {asio::ip::make_address(s.address), 0});
  asio::ip::tcp::socket a(on.client);
  auto [ce] = co_await a.async_connect(acceptor.local_endpoint(), use_tuple);
  auto [ae, b] = co_await acceptor.async_accept(on.server, use_tuple);
  if (ce || ae) co_return -1;
  a.set_option(asio::ip::tcp::no_delay(true));
  const auto start = std::chrono::steady_clock::now();
  if (s.ways() == 2) {  // both ways at once on the one full-duplex connection
    auto [we, re, we2, re2] = co_await (socket_writer(a, s) && run_on(on.server, socket_reader(b, s)) &&
                                        run_on(on.server, socket_writer(b, s)) && socket_reader(a, s));
    if (we || re || we2 || re2) co_return -1;
  } else {
    auto [we, re] = co_await (socket_writer(a, s) && run_on(on.server, socket_reader(b, s)));
    if (we || re) co_return -1;
  }
  co_return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// plain_tcp() in the shape run_threads() runs.
asio::awaitable<int> plain_tcp_into(const settings& s, ends on, double& seconds) {
  seconds = co_await plain_tcp(s, on);
  co_return 0;
}

/// The memory a run registers: `target` (register_targets()) and the workers' `sources`
/// (register_sources()). Its owner creates it before both connections, so it outlives them:
/// a registration must stay valid until deregistered or its connection is gone, and over
/// iWARP and TCP an RDMA Write completes before the target has placed it.
struct bench_memory {
  explicit bench_memory(const settings& s)
      : target(s.size * s.ways()), sources(s.depth * s.ways(), std::vector<std::byte>(s.size, std::byte{0x5a})) {}
  std::vector<std::byte> target;
  std::vector<std::vector<std::byte>> sources;
};

/// Negotiates, warms up, then times the workers; fills `out`.
template <class Connection>
asio::awaitable<int> run(const settings& s, Connection& client, Connection& server, ends on, bench_memory& memory,
                         result& out) {
  auto [a, c] = co_await (run_on(on.server, negotiate(server, false)) && negotiate(client, true));
  if (a || c) {
    std::fprintf(stderr, "error: negotiate: client %s, server %s\n", c.message().c_str(), a.message().c_str());
    co_return 1;
  }
  // Warm-up, not timed: the engine's queues and recycled message buffers grow to their working
  // size, and their pages are touched, before the clock starts; so are the workers' buffers,
  // which both runs share (the memcpy baseline does not time its allocations either).
  settings warm = s;
  warm.iterations = std::min<std::uint64_t>(s.iterations, 4 * s.depth);
  auto& buffers = memory.sources;
  auto [ec, descriptors] = co_await register_targets(client, server, on, s, memory.target);
  if (!ec) ec = co_await register_sources(client, server, on, s, buffers);
  if (!ec) ec = co_await all_workers(client, server, on, warm, descriptors, buffers);
  const auto in_place_before = client.stats().messages_received_in_place + server.stats().messages_received_in_place;
  const auto start = std::chrono::steady_clock::now();
  if (!ec) ec = co_await all_workers(client, server, on, s, descriptors, buffers);
  out = {.size = s.size, .iterations = s.iterations, .ways = s.ways(), .max_send_size = client.negotiated().max_send_size,
         .seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
         .baseline_seconds = std::nullopt,
         .in_place = client.stats().messages_received_in_place + server.stats().messages_received_in_place - in_place_before};
  if (ec) {
    std::fprintf(stderr, "error: %s of %llu bytes: %s\n", s.op.c_str(), static_cast<unsigned long long>(s.size),
                 ec.message().c_str());
    co_return 1;
  }
  co_await client.async_close(use_tuple);
  co_return 0;
}

// Both ends of one connection in this process (tcp::self_connection, verbs::self_connection).
template <class SelfConnection>
asio::awaitable<int> run_pair(const settings& s, ends on, SelfConnection pair, result& out) {
  if (pair.error) {
    std::fprintf(stderr, "error: %s on %s: %s\n", pair.where, s.address.c_str(), pair.error.message().c_str());
    co_return 1;
  }
  bench_memory memory(s);
  using connection = smbdirect::connection<decltype(pair.client)>;
  connection client(std::move(pair.client), s.params), server(std::move(pair.server), s.params);
  const int status = co_await run(s, client, server, on, memory, out);
  on.stop_server();  // before `server` is destroyed here
  co_return status;
}

asio::awaitable<int> run_tcp(const settings& s, ends on, result& out) {
  smbdirect::tcp::options o;
  o.crc = s.crc;
  co_return co_await run_pair(s, on, co_await smbdirect::tcp::connect_to_self(on.server, s.address, 0, o), out);
}

asio::awaitable<int> run_verbs(const settings& s, ends on, result& out) {
  auto o = smbdirect::verbs::options::for_parameters(s.params);
  o.busy_poll = s.busy_poll;
  co_return co_await run_pair(s, on, co_await smbdirect::verbs::connect_to_self(on.server, s.address, 0, o), out);
}

/// The second thread of --threads 2: runs `io` from start() until stop().
class second_thread {
 public:
  explicit second_thread(asio::io_context& io) : io_(io) {}
  second_thread(const second_thread&) = delete;
  second_thread& operator=(const second_thread&) = delete;
  ~second_thread() { stop(); }
  void start() {
    thread_ = std::thread([this] {
      auto busy = asio::make_work_guard(io_);  // idle between requests from the main thread
      io_.run();
    });
  }
  void stop() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  asio::io_context& io_;
  std::thread thread_;
};

/// Runs `main(ends)` on `io` on this thread and, with --threads 2, the server end's work on
/// `server_io` on a second thread meanwhile. Both are done or abandoned when this returns.
template <class Main>
int run_threads(const settings& s, asio::io_context& io, asio::io_context& server_io, Main main) {
  second_thread second(server_io);
  ends on{io.get_executor(), io.get_executor()};
  if (s.threads == 2) {
    on.server = server_io.get_executor();
    on.stop_server = [&second] { second.stop(); };
    second.start();
  }
  int status = 1;
  asio::co_spawn(io, main(on), [&](std::exception_ptr e, int r) {
    status = e ? 1 : r;
    io.stop();
  });
  io.run();
  return status;
}

/// One size on a new connection (new io_contexts). Exit status 0 or 1.
int measure(const settings& s, result& out) {
  asio::io_context io, server_io;
  bench_memory memory(s);
  using loopback_connection = smbdirect::connection<smbdirect::loopback::endpoint>;
  std::optional<loopback_connection> client, server;
  int status = 1;
  if (s.transport == "verbs") {
    status = run_threads(s, io, server_io, [&](ends on) { return run_verbs(s, on, out); });
  } else if (s.transport == "tcp") {
    status = run_threads(s, io, server_io, [&](ends on) { return run_tcp(s, on, out); });
  } else {
    status = run_threads(s, io, server_io, [&](ends on) {
      auto [a, b] = smbdirect::loopback::make_pair(on.client, on.server);
      client.emplace(std::move(a), s.params);
      server.emplace(std::move(b), s.params);
      return run(s, *client, *server, on, memory, out);
    });
  }
  if (status != 0 || !s.baseline) return status;
  if (s.transport == "loopback") {
    out.baseline_seconds = plain_memcpy(s);
    return 0;
  }
  asio::io_context base_io, base_server_io;
  double plain = -1;
  run_threads(s, base_io, base_server_io, [&](ends on) { return plain_tcp_into(s, on, plain); });
  if (plain < 0) {
    std::fprintf(stderr, "error: plain TCP baseline failed\n");
    return 1;
  }
  out.baseline_seconds = plain;
  return 0;
}

// ------------------------------------------------------------------------------ output

const char* baseline_name(const settings& s) { return s.transport == "loopback" ? "memcpy" : "socket"; }

void print_header(const settings& s) {
  if (s.format == "csv") {
    std::printf("transport,op,direction,size_bytes,iterations,depth,max_send_size,seconds,mb_per_s,ops_per_s%s,receive,"
                "in_place_messages\n",
                s.baseline ? ",baseline,baseline_seconds,baseline_mb_per_s,ratio" : "");
  } else if (s.format == "json") {
    std::printf("[");
  }
}

void print_result(const settings& s, const result& r, bool first) {
  const double mbps = r.bytes() / r.seconds / 1e6, ops = double(r.iterations) * r.ways / r.seconds;
  const auto size = static_cast<unsigned long long>(r.size), iterations = static_cast<unsigned long long>(r.iterations),
             depth = static_cast<unsigned long long>(s.depth);
  if (s.format == "csv") {
    std::printf("%s,%s,%s,%llu,%llu,%llu,%u,%.6f,%.2f,%.0f", s.transport.c_str(), s.op.c_str(), s.direction.c_str(), size,
                iterations, depth,
                r.max_send_size, r.seconds, mbps, ops);
    if (r.baseline_seconds)
      std::printf(",%s,%.6f,%.2f,%.3f", baseline_name(s), *r.baseline_seconds, r.bytes() / *r.baseline_seconds / 1e6,
                  *r.baseline_seconds / r.seconds);
    std::printf(",%s,%llu\n", s.receive.c_str(), static_cast<unsigned long long>(r.in_place));
  } else if (s.format == "json") {
    std::printf("%s\n  {\"transport\": \"%s\", \"op\": \"%s\", \"direction\": \"%s\", \"size_bytes\": %llu, "
                "\"iterations\": %llu, \"depth\": %llu, \"max_send_size\": %u, \"seconds\": %.6f, \"mb_per_s\": %.2f, "
                "\"ops_per_s\": %.0f",
                first ? "" : ",", s.transport.c_str(), s.op.c_str(), s.direction.c_str(), size, iterations, depth,
                r.max_send_size, r.seconds, mbps, ops);
    if (r.baseline_seconds)
      std::printf(", \"baseline\": \"%s\", \"baseline_seconds\": %.6f, \"baseline_mb_per_s\": %.2f, \"ratio\": %.3f",
                  baseline_name(s), *r.baseline_seconds, r.bytes() / *r.baseline_seconds / 1e6,
                  *r.baseline_seconds / r.seconds);
    std::printf(", \"receive\": \"%s\", \"in_place_messages\": %llu}", s.receive.c_str(),
                static_cast<unsigned long long>(r.in_place));
  } else {
    std::printf("%-8s %-5s %-7s size %8llu B  iterations %7llu  depth %4llu  MaxSendSize %6u: %10.2f MB/s %10.0f ops/s",
                s.transport.c_str(), s.op.c_str(), s.direction.c_str(), size, iterations, depth, r.max_send_size, mbps,
                ops);
    if (r.baseline_seconds)
      std::printf("  | %s %10.2f MB/s, ratio %.2f", baseline_name(s), r.bytes() / *r.baseline_seconds / 1e6,
                  *r.baseline_seconds / r.seconds);
    if (s.receive == "in-place" && s.op == "send")
      std::printf("  | in place %.0f%%", 100.0 * double(r.in_place) / (double(r.iterations) * r.ways));
    std::printf("\n");
  }
  std::fflush(stdout);
}

void print_footer(const settings& s) {
  if (s.format == "json") std::printf("\n]\n");
}

/// "[#####     ] 3/8 sizes, now 65536 B" on stderr, redrawn in place; only on a terminal.
void progress(const settings& s, std::size_t done, std::uint64_t now) {
  if (s.sizes.size() < 2 || !isatty(STDERR_FILENO)) return;
  constexpr std::size_t width = 30;
  const std::size_t filled = done * width / s.sizes.size();
  std::fprintf(stderr, "\r[%s%s] %zu/%zu sizes", std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(),
               done, s.sizes.size());
  if (done < s.sizes.size())
    std::fprintf(stderr, ", now %llu B ", static_cast<unsigned long long>(now));
  else
    std::fprintf(stderr, "%20s\r%60s\r", "", "");  // done: clear the line
  std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  if (!parse(argc, argv, s)) return 2;
  print_header(s);
  for (std::size_t i = 0; i < s.sizes.size(); ++i) {
    progress(s, i, s.sizes[i]);
    settings one = for_size(s, s.sizes[i]);
    result r;
    if (s.duration > 0) {  // pilot: at least `depth` operations and 1 MB
      one.baseline = false;
      one.iterations = std::max<std::uint64_t>(one.depth, (1'000'000 + one.size - 1) / one.size);
      if (measure(one, r) != 0) return 1;
      one.iterations = std::max<std::uint64_t>(one.depth, static_cast<std::uint64_t>(s.duration * double(r.iterations) / r.seconds));
      one.baseline = s.baseline;
    }
    if (measure(one, r) != 0) return 1;
    if (s.format == "table" && isatty(STDERR_FILENO) && s.sizes.size() > 1) std::fprintf(stderr, "\r%60s\r", "");
    print_result(s, r, i == 0);
  }
  progress(s, s.sizes.size(), 0);
  print_footer(s);
  return 0;
}
