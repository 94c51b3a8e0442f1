// Steady state allocates nothing: once a connection has warmed up, sending and receiving
// messages and RDMA operations calls operator new zero times per message, at any message size
// and up to 64 operations in flight, on the loopback and TCP transports and through
// smbdirect::stream. The count includes Asio's handler and coroutine-frame memory (built with
// ASIO_DISABLE_STD_ALIGNED_ALLOC, see BUILD.bazel), which comes from its per-thread recycling
// cache once that is large enough (ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE, set in
// third_party/system/asio.BUILD).
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <functional>
#include <optional>

#include <asio/read.hpp>
#include <asio/write.hpp>

#include "smbdirect/stream.hpp"
#include "smbdirect/tcp.hpp"
#include "support/allocation_hook.hpp"
#include "support/connected_pair.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {

enum class operation { send, rdma_write, rdma_read };

struct workload {
  std::size_t depth = 1;    // operations in flight
  std::size_t size = 100;   // bytes per message or RDMA operation
  operation op = operation::send;
  parameters params{};
  bool in_place = false;  // receive into a received_message (params.lent_receive_buffers lends)
  // Operations before the count starts, then counted, all in one io_context::run() call, as
  // an application runs its io_context: Asio's per-thread cache of recycled handler and
  // coroutine-frame memory lives as long as the call, so it must not end between the two. The
  // warm-up lets the queues, the pool of recycled message buffers and Asio's cache grow to the
  // largest backlog the workload produces.
  std::size_t warm_up = 3000, measured = 1000;
};

const char* name_of(operation op) {
  return op == operation::send ? "send" : op == operation::rdma_write ? "RDMA write" : "RDMA read";
}

/// Counts operations and stops `io` once `count` have finished, remembering allocations::count()
/// when `mark` had: runs then measure the allocations of the operations after the mark.
class tally {
 public:
  tally(asio::io_context& io, std::size_t mark, std::size_t count) : io_(io), mark_(mark), count_(count) {}

  void finished(std::error_code ec) {
    if (ec) failed_ = true;
    if (++finished_ == mark_) at_mark_ = allocations::count();
    if (failed_ || finished_ == count_) io_.stop();
  }
  /// Runs `io` (started operations must call finished()); allocations per operation after the
  /// mark, or nothing on an error or a hang.
  std::optional<double> run() {
    io_.restart();
    io_.run();  // stopped by finished() when done; returns early if work runs out
    if (failed_ || finished_ != count_ || !at_mark_) return std::nullopt;
    return double(allocations::count() - *at_mark_) / double(count_ - mark_);
  }
  bool done() const { return failed_ || finished_ >= count_; }

 private:
  asio::io_context& io_;
  std::size_t mark_, count_, finished_ = 0;
  std::optional<std::uint64_t> at_mark_;
  bool failed_ = false;
};

// Keeps `depth` operations of `w` in flight from `client` (and, for messages, one receive on
// `server`). All its own memory is set up before the first run, so that runs allocate only
// what smbdirect does.
template <class Connection>
class traffic {
 public:
  traffic(asio::io_context& io, Connection& client, Connection& server, const workload& w, registration target)
      : client_(client), server_(server), w_(w), target_(target), sources_(w.depth, bytes(w.size, std::byte{0x5a})),
        tally_(io, w.warm_up, w.warm_up + w.measured) {
    workers_.reserve(w.depth);
    for (std::size_t i = 0; i < w.depth; ++i) workers_.push_back({this, &sources_[i]});
  }

  std::optional<double> run() {
    for (auto& wk : workers_) wk.start();
    if (w_.op == operation::send) receive();
    return tally_.run();
  }

 private:
  struct worker {
    traffic* t;
    bytes* source;
    void start() {
      if (t->started_ == t->w_.warm_up + t->w_.measured) return;
      ++t->started_;
      const auto remote = std::span(&t->target_.descriptor, 1);
      switch (t->w_.op) {
        case operation::send: return t->client_.async_send(asio::buffer(*source), completion{this});
        case operation::rdma_write: return t->client_.async_rdma_write(asio::buffer(*source), remote, completion{this});
        case operation::rdma_read: return t->client_.async_rdma_read(asio::buffer(*source), remote, completion{this});
      }
    }
  };
  struct completion {  // counts the operation (RDMA) or only starts the worker's next one (send)
    worker* w;
    void operator()(std::error_code ec, std::size_t) const {
      if (w->t->w_.op != operation::send || ec) w->t->tally_.finished(ec);
      if (!w->t->tally_.done()) w->start();
    }
  };

  void receive() {
    auto next = [this](std::error_code ec, std::size_t) {
      tally_.finished(ec);
      if (!tally_.done()) receive();
    };
    if (w_.in_place) server_.async_receive(in_place_, next);
    else server_.async_receive(message_, next);
  }

  Connection& client_;
  Connection& server_;
  const workload& w_;
  registration target_;
  std::vector<bytes> sources_;
  std::vector<worker> workers_;
  bytes message_;  // its storage circulates through the engine's recycled message buffers
  received_message in_place_;
  std::size_t started_ = 0;
  tally tally_;
};

workload prepared(workload w) {
  w.params.keepalive_interval = milliseconds(0);
  w.params.max_fragmented_size = std::max<std::uint32_t>(w.params.max_fragmented_size, static_cast<std::uint32_t>(w.size));
  w.params.max_read_write_size = std::max<std::uint32_t>(w.params.max_read_write_size, static_cast<std::uint32_t>(w.size));
  return w;
}

// Allocations per operation of `w` between two negotiated connections, once warmed up.
template <class Connection>
double measure(const char* transport, asio::io_context& io, Connection& client, Connection& server, const workload& w) {
  bytes memory(w.size);
  registration target{};
  if (w.op != operation::send) {
    auto [ec, r] = server.register_buffer(asio::buffer(memory), access::remote_read_write);
    REQUIRE_FALSE(ec);
    target = r;
  }
  traffic<Connection> t(io, client, server, w, target);
  const auto per_operation = t.run();
  REQUIRE(per_operation);
  if (w.in_place) CHECK(server.stats().messages_received_in_place == w.warm_up + w.measured);  // all lent
  std::printf("%s: depth %zu, %zu bytes, %s, MaxSendSize %u: %.2f allocations per operation\n", transport, w.depth, w.size,
              name_of(w.op), client.negotiated().max_send_size, *per_operation);
  return *per_operation;
}

double allocations_per_operation(workload w) {
  w = prepared(w);
  connected_pair pair(w.params, w.params);
  REQUIRE(pair.negotiate() == std::pair{std::error_code{}, std::error_code{}});
  return measure("loopback", pair.d.io, *pair.client, *pair.server, w);
}

// The same over the TCP transport, both ends on 127.0.0.1 in this process.
double tcp_allocations_per_operation(workload w) {
  w = prepared(w);
  asio::io_context io;
  std::optional<tcp::self_connection> pair;
  asio::co_spawn(io, tcp::connect_to_self(io.get_executor(), "127.0.0.1", 0),
                 [&](std::exception_ptr, tcp::self_connection c) { pair = std::move(c); });
  io.run();
  REQUIRE(pair);
  REQUIRE_MESSAGE(!pair->error, pair->where << ": " << pair->error.message());
  using tcp_connection = connection<tcp::queue_pair>;
  tcp_connection client(std::move(pair->client), w.params), server(std::move(pair->server), w.params);
  std::optional<std::error_code> connected, accepted;
  server.async_accept([&](std::error_code ec) { accepted = ec; });
  client.async_connect([&](std::error_code ec) { connected = ec; });
  io.restart();
  while (!(connected && accepted) && io.run_one() > 0) {
  }
  REQUIRE(connected == std::error_code{});
  REQUIRE(accepted == std::error_code{});
  return measure("tcp", io, client, server, w);
}

// Through smbdirect::stream: each message written as its Direct TCP transport header and body
// (two buffers, one asio::async_write) and read whole with one asio::async_read.
double stream_allocations_per_message(std::size_t size) {
  const workload w = prepared({});
  connected_pair pair(w.params, w.params);
  REQUIRE(pair.negotiate() == std::pair{std::error_code{}, std::error_code{}});
  stream<loopback::endpoint> writer(std::move(*pair.client)), reader(std::move(*pair.server));
  const std::array header{std::byte{0}, static_cast<std::byte>(size >> 16), static_cast<std::byte>(size >> 8),
                          static_cast<std::byte>(size)};
  const bytes body(size, std::byte{0x5a});
  const std::array message{asio::buffer(header), asio::buffer(body)};  // two const_buffers
  bytes in(header.size() + size);
  tally count(pair.d.io, w.warm_up, w.warm_up + w.measured);
  std::size_t written = 0;
  std::function<void()> write_next = [&] {
    if (written++ == w.warm_up + w.measured) return;
    asio::async_write(writer, message, [&](std::error_code ec, std::size_t) {
      if (ec) count.finished(ec);
      if (!count.done()) write_next();
    });
  };
  std::function<void()> read_next = [&] {
    asio::async_read(reader, asio::buffer(in), [&](std::error_code ec, std::size_t) {
      count.finished(ec);
      if (!count.done()) read_next();
    });
  };
  write_next();
  read_next();
  const auto per_message = count.run();
  REQUIRE(per_message);
  std::printf("stream: %zu bytes: %.2f allocations per message\n", size, *per_message);
  return *per_message;
}

}  // namespace

TEST_CASE("a small message, one at a time, allocates nothing") {
  CHECK(allocations_per_operation({.depth = 1, .size = 100}) == 0);
}

TEST_CASE("small messages, 16 in flight, allocate nothing") {
  CHECK(allocations_per_operation({.depth = 16, .size = 100}) == 0);
}

TEST_CASE("a 1 MiB message of 783 fragments allocates nothing") {
  CHECK(allocations_per_operation({.depth = 4, .size = 1 << 20}) == 0);
}

TEST_CASE("messages received in place, in lent receive buffers, allocate nothing") {
  parameters p;
  p.lent_receive_buffers = 2 * 783;  // two 1 MiB messages of 1,340-byte fragments
  CHECK(allocations_per_operation({.depth = 1, .size = 100, .params = p, .in_place = true}) == 0);
  CHECK(allocations_per_operation({.depth = 4, .size = 1 << 20, .params = p, .in_place = true}) == 0);
}

TEST_CASE("messages that wait for credits allocate nothing") {
  parameters p;
  p.send_credit_target = p.receive_credit_max = 4;  // the senders run out of credits all the time
  CHECK(allocations_per_operation({.depth = 8, .size = 10'000, .params = p}) == 0);
  // 63 senders queued for the send lock: each unlock hands it to one of them.
  CHECK(allocations_per_operation({.depth = 64, .size = 10'000, .params = p}) == 0);
}

TEST_CASE("RDMA writes and reads allocate nothing") {
  CHECK(allocations_per_operation({.depth = 4, .size = 65536, .op = operation::rdma_read}) == 0);
  CHECK(allocations_per_operation({.depth = 4, .size = 65536, .op = operation::rdma_write}) == 0);
  CHECK(allocations_per_operation({.depth = 64, .size = 65536, .op = operation::rdma_write}) == 0);
}

// Over a real socket the receive backlog depends on timing: a backlog of unread messages
// larger than any before it takes new storage for the extra messages (up to
// MaxFragmentedRecvSize, then the peer waits for credits). So these workloads keep the
// backlog bounded: one small message in flight, or messages of 1 MiB (the limit holds one).
TEST_CASE("the TCP transport allocates nothing per message or RDMA operation") {
  CHECK(tcp_allocations_per_operation({.depth = 1, .size = 100}) == 0);
  // Fewer: 4 GB through CRC32c and the kernel would take minutes under TSan.
  CHECK(tcp_allocations_per_operation({.depth = 4, .size = 1 << 20, .warm_up = 300, .measured = 100}) == 0);
  CHECK(tcp_allocations_per_operation({.depth = 64, .size = 65536, .op = operation::rdma_write}) == 0);
  CHECK(tcp_allocations_per_operation({.depth = 4, .size = 65536, .op = operation::rdma_read}) == 0);
}

TEST_CASE("messages through smbdirect::stream allocate nothing") {
  CHECK(stream_allocations_per_message(100) == 0);
  CHECK(stream_allocations_per_message(100'000) == 0);
}
