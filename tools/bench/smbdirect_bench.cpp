// smbdirect_bench: one-way throughput of SMB Direct sends, RDMA writes or RDMA reads between
// two connections in one process, in the spirit of perftest's ib_send_bw / ib_write_bw.
// Units: MB/s = 10^6 bytes per second (perftest's unit), so the numbers compare directly.
//
// usage: smbdirect_bench [--transport loopback|tcp|verbs] [--address IP] [--op send|write|read]
//                        [--size BYTES] [--iterations N] [--depth N] [--max-send-size BYTES]
//                        [--max-receive-size BYTES] [--credits N] [--baseline] [--no-crc]
//
// --baseline then measures the limit of the same bytes in the same run and prints ours as a
// ratio of it: loopback, memcpy of each message from the senders' buffers into one receive
// buffer; tcp, a plain TCP socket on the same address moving messages of the same size.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
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
  std::string transport = "loopback", address, op = "send";
  std::uint64_t size = 65536, iterations = 1000, depth = 16;
  bool baseline = false;
  bool crc = true;  // tcp: ask for MPA CRC32c
  smbdirect::parameters params;
};

void usage() {
  std::printf(
      "usage: smbdirect_bench [options]\n"
      "One-way throughput between two SMB Direct connections in this process. Exit 0 on success.\n"
      "  --transport loopback|tcp|verbs  (default loopback)\n"
      "  --address IP                tcp: address to listen on and connect to (default 127.0.0.1);\n"
      "                              verbs: address of the RDMA device (required)\n"
      "  --op send|write|read        upper-layer messages, RDMA writes or RDMA reads (default send)\n"
      "  --size BYTES                bytes per message or RDMA operation (default 65536)\n"
      "  --iterations N              messages or operations (default 1000)\n"
      "  --depth N                   operations in flight (default 16)\n"
      "  --max-send-size BYTES       MaxSendSize both sides prefer (default 1364)\n"
      "  --max-receive-size BYTES    MaxReceiveSize both sides accept (default 1364)\n"
      "  --credits N                 send credit target and receive credit max (default 255)\n"
      "  --baseline                  also time the limit for the same bytes and print our rate as\n"
      "                              a ratio of it: loopback, memcpy of each message; tcp, a plain\n"
      "                              TCP socket moving messages of --size bytes\n"
      "  --no-crc                    tcp: do not ask for MPA CRC32c (default: ask)\n");
}

bool parse(int argc, char** argv, settings& s) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help") return usage(), std::exit(0), true;
    if (a == "--baseline" || a == "--no-crc") {
      (a == "--baseline" ? s.baseline : s.crc) = a == "--baseline";
      continue;
    }
    if (i + 1 >= argc) return std::fprintf(stderr, "smbdirect_bench: %s needs a value\n", argv[i]), false;
    const char* v = argv[++i];
    char* end = nullptr;
    const auto n = std::strtoull(v, &end, 10);
    const bool number = *v && *end == 0;
    if (a == "--transport") s.transport = v;
    else if (a == "--address") s.address = v;
    else if (a == "--op") s.op = v;
    else if (a == "--size" && number && n > 0 && n <= 0xffffffffu) s.size = n;
    else if (a == "--iterations" && number && n > 0) s.iterations = n;
    else if (a == "--depth" && number && n > 0 && n <= 4096) s.depth = n;
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
  s.params.max_fragmented_size = std::max<std::uint32_t>(s.params.max_fragmented_size, static_cast<std::uint32_t>(s.size));
  s.params.max_read_write_size = std::max<std::uint32_t>(s.params.max_read_write_size, static_cast<std::uint32_t>(s.size));
  s.params.keepalive_interval = smbdirect::milliseconds(0);
  return true;
}

template <class Connection>
asio::awaitable<std::error_code> sender(Connection& c, const settings& s, std::uint64_t first, std::vector<std::byte>& buf) {
  for (std::uint64_t i = first; i < s.iterations; i += s.depth) {
    auto [ec, n] = co_await c.async_send(asio::buffer(buf), use_tuple);
    if (ec) co_return ec;
  }
  co_return std::error_code{};
}

template <class Connection>
asio::awaitable<std::error_code> receiver(Connection& c, const settings& s) {
  std::vector<std::byte> m;
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

template <class Connection>
asio::awaitable<std::error_code> all_workers(Connection& client, Connection& server, const settings& s,
                                             std::vector<std::byte>& target) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<std::vector<std::byte>> buffers(s.depth, std::vector<std::byte>(s.size, std::byte{0x5a}));
  smbdirect::registration reg;
  if (s.op != "send") {
    auto [ec, r] = server.register_buffer(asio::buffer(target), smbdirect::access::remote_read_write);
    if (ec) co_return ec;
    reg = r;
  }
  // Each worker is its own coroutine; count them down and keep the first error.
  std::error_code first;
  std::uint64_t running = s.depth + (s.op == "send" ? 1 : 0);
  asio::steady_timer done(ex, asio::steady_timer::time_point::max());
  auto finish = [&](std::exception_ptr, std::error_code ec) {
    if (ec && !first) first = ec;
    if (--running == 0) done.cancel();
  };
  for (std::uint64_t w = 0; w < s.depth; ++w) {
    if (s.op == "send")
      asio::co_spawn(ex, sender(client, s, w, buffers[w]), finish);
    else
      asio::co_spawn(ex, rdma_worker(client, s, w, buffers[w], reg.descriptor), finish);
  }
  if (s.op == "send") asio::co_spawn(ex, receiver(server, s), finish);
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

void print_rate(const settings& s, const char* transport, const char* op, std::uint32_t max_send_size, double seconds) {
  const double bytes = static_cast<double>(s.size) * static_cast<double>(s.iterations);
  std::printf("%-6s %-8s size %8llu B  iterations %7llu  depth %4llu  MaxSendSize %6u: %10.2f MB/s %10.0f ops/s\n",
              transport, op, static_cast<unsigned long long>(s.size), static_cast<unsigned long long>(s.iterations),
              static_cast<unsigned long long>(s.depth), max_send_size, bytes / seconds / 1e6,
              static_cast<double>(s.iterations) / seconds);
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
/// turn, as the senders do) into one destination buffer (as the receiver reuses its vector).
double plain_memcpy(const settings& s) {
  std::vector<std::vector<std::byte>> sources(s.depth, std::vector<std::byte>(s.size, std::byte{0x5a}));
  std::vector<std::byte> destination(s.size);
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < s.iterations; ++i) {
    std::memcpy(destination.data(), sources[i % s.depth].data(), s.size);
    asm volatile("" : : "r"(destination.data()) : "memory");  // the copy must happen
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Seconds the plain TCP transfer took, or a negative value on error.
asio::awaitable<double> plain_tcp(const settings& s) {
  auto ex = co_await asio::this_coro::executor;
  asio::ip::tcp::acceptor acceptor(ex, {asio::ip::make_address(s.address), 0});
  asio::ip::tcp::socket a(ex), b(ex);
  auto [ce] = co_await a.async_connect(acceptor.local_endpoint(), use_tuple);
  auto [ae, accepted] = co_await acceptor.async_accept(use_tuple);
  if (ce || ae) co_return -1;
  b = std::move(accepted);
  a.set_option(asio::ip::tcp::no_delay(true));
  const auto start = std::chrono::steady_clock::now();
  auto [we, re] = co_await (socket_writer(a, s) && socket_reader(b, s));
  if (we || re) co_return -1;
  co_return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <class Connection>
// `target` is the server's registered memory. It outlives both connections: over iWARP and TCP
// an RDMA Write completes before the target has placed it.
asio::awaitable<int> run(const settings& s, Connection& client, Connection& server, std::vector<std::byte>& target) {
  auto [a, c] = co_await (negotiate(server, false) && negotiate(client, true));
  if (a || c) {
    std::fprintf(stderr, "error: negotiate: client %s, server %s\n", c.message().c_str(), a.message().c_str());
    co_return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  const std::error_code ec = co_await all_workers(client, server, s, target);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (ec) {
    std::fprintf(stderr, "error: %s: %s\n", s.op.c_str(), ec.message().c_str());
    co_return 1;
  }
  print_rate(s, s.transport.c_str(), s.op.c_str(), client.negotiated().max_send_size, seconds);
  co_await client.async_close(use_tuple);
  if (s.baseline && s.transport == "loopback") {
    const double plain = plain_memcpy(s);
    print_rate(s, "memcpy", "copy", 0, plain);
    std::printf("ratio to memcpy: %.2f\n", plain / seconds);
  } else if (s.baseline) {
    const double plain = co_await plain_tcp(s);
    if (plain < 0) {
      std::fprintf(stderr, "error: plain TCP baseline failed\n");
      co_return 1;
    }
    print_rate(s, "socket", "write", 0, plain);
    std::printf("ratio to the plain TCP socket: %.2f\n", plain / seconds);
  }
  co_return 0;
}

// Both ends of one connection in this process (tcp::self_connection, verbs::self_connection).
template <class SelfConnection>
asio::awaitable<int> run_pair(const settings& s, SelfConnection pair) {
  if (pair.error) {
    std::fprintf(stderr, "error: %s on %s: %s\n", pair.where, s.address.c_str(), pair.error.message().c_str());
    co_return 1;
  }
  std::vector<std::byte> target(s.size);
  using connection = smbdirect::connection<decltype(pair.client)>;
  connection client(std::move(pair.client), s.params), server(std::move(pair.server), s.params);
  co_return co_await run(s, client, server, target);
}

asio::awaitable<int> run_tcp(const settings& s) {
  smbdirect::tcp::options o;
  o.crc = s.crc;
  co_return co_await run_pair(s, co_await smbdirect::tcp::connect_to_self(co_await asio::this_coro::executor, s.address, 0, o));
}

asio::awaitable<int> run_verbs(const settings& s) {
  co_return co_await run_pair(s, co_await smbdirect::verbs::connect_to_self(co_await asio::this_coro::executor, s.address, 0,
                                                                           smbdirect::verbs::options::for_parameters(s.params)));
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  if (!parse(argc, argv, s)) return 2;
  asio::io_context io;
  int status = 1;
  auto finish = [&](std::exception_ptr e, int r) {
    status = e ? 1 : r;
    io.stop();
  };
  if (s.transport == "verbs" || s.transport == "tcp") {
    if (s.transport == "verbs") {
      asio::co_spawn(io, run_verbs(s), finish);
    } else {
      asio::co_spawn(io, run_tcp(s), finish);
    }
    io.run();
    return status;
  }
  std::vector<std::byte> target(s.size);
  using connection = smbdirect::connection<smbdirect::loopback::endpoint>;
  auto [a, b] = smbdirect::loopback::make_pair(io.get_executor(), io.get_executor());
  connection client(std::move(a), s.params), server(std::move(b), s.params);
  asio::co_spawn(io, run(s, client, server, target), finish);
  io.run();
  return status;
}
