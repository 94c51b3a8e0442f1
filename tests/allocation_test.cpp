// Steady state allocates nothing: once a connection has warmed up, sending and receiving
// messages and RDMA operations calls operator new zero times per message, at any message size
// and up to 64 operations in flight. The count includes Asio's handler and coroutine-frame
// memory (built with ASIO_DISABLE_STD_ALIGNED_ALLOC, see BUILD.bazel), which comes from its
// per-thread recycling cache once that is large enough (ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE,
// set in third_party/system/asio.BUILD).
#include <doctest/doctest.h>

#include <cstdio>
#include <optional>

#include "support/allocation_hook.hpp"
#include "support/connected_pair.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {

struct workload {
  std::size_t depth = 1;    // operations in flight
  std::size_t size = 100;   // bytes per message or RDMA write
  bool rdma = false;        // RDMA writes instead of messages
  parameters params{};
};

// Keeps `depth` operations of `w` in flight on `pair` (and, for messages, one receive). All
// its own memory is set up before the first run, so that runs allocate only what smbdirect does.
class traffic {
 public:
  traffic(connected_pair& pair, const workload& w, registration target)
      : pair_(pair), w_(w), target_(target), sources_(w.depth, bytes(w.size, std::byte{0x5a})) {
    workers_.reserve(w.depth);
    for (std::size_t i = 0; i < w.depth; ++i) workers_.push_back({this, &sources_[i]});
  }

  /// Runs `warm_up` then `measured` operations in one io_context::run() call, as an
  /// application runs its io_context: Asio's per-thread cache of recycled handler and
  /// coroutine-frame memory lives as long as the call, so it must not end between the two.
  /// Returns the allocations per measured operation, or nothing on an error or a hang.
  std::optional<double> run(std::size_t warm_up, std::size_t measured) {
    count_ = warm_up + measured;
    mark_ = warm_up;
    for (auto& wk : workers_) wk.start();
    if (!w_.rdma) receive();
    pair_.d.io.restart();
    pair_.d.io.run();  // stopped by on_completion() when done; returns early if work runs out
    if (failed_ || sent_ != count_ || finished() != count_ || !at_mark_) return std::nullopt;
    return double(allocations::count() - *at_mark_) / double(count_ - mark_);
  }

 private:
  struct worker {
    traffic* t;
    bytes* source;
    void start() {
      if (t->started_ == t->count_ || t->failed_) return;
      ++t->started_;
      if (t->w_.rdma)
        t->pair_.client->async_rdma_write(asio::buffer(*source), std::span(&t->target_.descriptor, 1), completion{this});
      else
        t->pair_.client->async_send(asio::buffer(*source), completion{this});
    }
  };
  struct completion {  // counts the operation, then starts the worker's next one
    worker* w;
    void operator()(std::error_code ec, std::size_t) const {
      ++w->t->sent_;
      if (ec) w->t->failed_ = true;
      w->start();
      w->t->on_completion();
    }
  };

  std::size_t finished() const { return w_.rdma ? sent_ : received_; }
  void on_completion() {
    if (!at_mark_ && finished() == mark_) at_mark_ = allocations::count();
    if (failed_ || (sent_ == count_ && finished() == count_)) pair_.d.io.stop();
  }

  void receive() {
    if (received_ == count_ || failed_) return;
    pair_.server->async_receive(message_, [this](std::error_code ec, std::size_t) {
      ++received_;
      if (ec) failed_ = true;
      receive();
      on_completion();
    });
  }

  connected_pair& pair_;
  const workload& w_;
  registration target_;
  std::vector<bytes> sources_;
  std::vector<worker> workers_;
  bytes message_;  // its storage circulates through the engine's recycled message buffers
  std::size_t started_ = 0, sent_ = 0, received_ = 0, count_ = 0, mark_ = 0;
  std::optional<std::uint64_t> at_mark_;  // allocations::count() when `mark_` operations finished
  bool failed_ = false;
};

// Allocations per operation once warmed up.
double allocations_per_operation(workload w) {
  w.params.keepalive_interval = milliseconds(0);
  w.params.max_fragmented_size = std::max<std::uint32_t>(w.params.max_fragmented_size, static_cast<std::uint32_t>(w.size));
  w.params.max_read_write_size = std::max<std::uint32_t>(w.params.max_read_write_size, static_cast<std::uint32_t>(w.size));
  connected_pair pair(w.params, w.params);
  REQUIRE(pair.negotiate() == std::pair{std::error_code{}, std::error_code{}});
  bytes memory(w.size);
  registration target{};
  if (w.rdma) {
    auto [ec, r] = pair.server->register_buffer(asio::buffer(memory), access::remote_write);
    REQUIRE_FALSE(ec);
    target = r;
  }
  traffic t(pair, w, target);
  // Warm-up: the queues, the pool of recycled message buffers and Asio's cache grow to the
  // largest backlog this workload produces, then stay.
  const auto per_operation = t.run(3000, 1000);
  REQUIRE(per_operation);
  const double per = *per_operation;
  std::printf("depth %zu, %zu bytes, %s, MaxSendSize %u: %.2f allocations per operation\n", w.depth, w.size,
              w.rdma ? "RDMA write" : "send", pair.client->negotiated().max_send_size, per);
  return per;
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

TEST_CASE("messages that wait for credits allocate nothing") {
  parameters p;
  p.send_credit_target = p.receive_credit_max = 4;  // the senders run out of credits all the time
  CHECK(allocations_per_operation({.depth = 8, .size = 10'000, .params = p}) == 0);
  // 63 senders queued for the send lock: each unlock hands it to one of them.
  CHECK(allocations_per_operation({.depth = 64, .size = 10'000, .params = p}) == 0);
}

TEST_CASE("RDMA writes allocate nothing") {
  CHECK(allocations_per_operation({.depth = 4, .size = 65536, .rdma = true}) == 0);
  CHECK(allocations_per_operation({.depth = 64, .size = 65536, .rdma = true}) == 0);
}
