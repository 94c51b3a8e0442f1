// Batched posting on a batching_transport: the fragments of a message that have credits go
// out in one batch (one doorbell on verbs), as do the work requests of one RDMA operation,
// and no batch stays open while the engine waits for credits or completions.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>

#include "support/harness.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {

/// What a recording_transport saw: the posts in each batch, and posts outside any batch.
struct batch_log {
  unsigned depth = 0;
  std::size_t in_batch = 0;
  std::vector<std::size_t> batches;  // posts per closed batch (empty batches included)
  std::size_t outside = 0;
  std::size_t polls_inside = 0;  // poll() called while a batch was open: a batch left open

  void posted() { ++(depth ? in_batch : outside); }
};

/// A loopback endpoint that records batches; posts go straight through (the loopback has no
/// doorbell), so only the engine's bracketing is checked.
class recording_transport {
 public:
  using executor_type = asio::any_io_executor;

  recording_transport(loopback::endpoint e, std::shared_ptr<batch_log> log) : inner_(std::move(e)), log_(std::move(log)) {}

  void begin_batch() {
    if (log_->depth++ == 0) log_->in_batch = 0;
  }
  void end_batch() noexcept {
    if (--log_->depth == 0) log_->batches.push_back(log_->in_batch);
  }

  executor_type get_executor() const { return inner_.get_executor(); }
  std::error_code post_receive(std::uint64_t wr_id, std::span<std::byte> buf) { return inner_.post_receive(wr_id, buf); }
  std::error_code post_send(std::uint64_t wr_id, std::span<const asio::const_buffer> gather, std::uint32_t token = 0) {
    log_->posted();
    return inner_.post_send(wr_id, gather, token);
  }
  std::error_code post_rdma_write(std::uint64_t wr_id, std::span<const asio::const_buffer> local,
                                  std::uint64_t remote_address, std::uint32_t token) {
    log_->posted();
    return inner_.post_rdma_write(wr_id, local, remote_address, token);
  }
  std::error_code post_rdma_read(std::uint64_t wr_id, std::span<const asio::mutable_buffer> local,
                                 std::uint64_t remote_address, std::uint32_t token) {
    log_->posted();
    return inner_.post_rdma_read(wr_id, local, remote_address, token);
  }
  std::pair<std::error_code, memory_region> register_memory(asio::mutable_buffer region, smbdirect::access rights) {
    return inner_.register_memory(region, rights);
  }
  std::error_code deregister_memory(const memory_region& mr) { return inner_.deregister_memory(mr); }
  asio::awaitable<std::size_t> poll(std::span<work_completion> out) {
    if (log_->depth) ++log_->polls_inside;
    return inner_.poll(out);
  }
  void disconnect() { inner_.disconnect(); }
  transport_info info() const { return inner_.info(); }

 private:
  loopback::endpoint inner_;
  std::shared_ptr<batch_log> log_;
};

static_assert(batching_transport<recording_transport>);

// Our client on the recording transport, our server on the plain loopback.
struct fixture {
  driver d;
  std::shared_ptr<batch_log> log = std::make_shared<batch_log>();
  std::optional<connection<recording_transport>> client;
  std::optional<loopback_connection> server;

  explicit fixture(parameters server_params = {}) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    client.emplace(recording_transport(std::move(a), log), parameters{}, &d.clock);
    server.emplace(std::move(b), server_params, &d.clock);
    std::optional<std::error_code> c, s;
    server->async_accept([&](std::error_code ec) { s = ec; });
    client->async_connect([&](std::error_code ec) { c = ec; });
    REQUIRE(d.run_until([&] { return c.has_value() && s.has_value(); }));
    REQUIRE_FALSE(*c);
    REQUIRE_FALSE(*s);
    log->batches.clear();
  }

  /// Sends `message` while the server receives it; returns what arrived.
  bytes send_and_receive(const bytes& message) {
    std::optional<std::error_code> sent, received;
    bytes got;
    server->async_receive(got, [&](std::error_code ec, std::size_t) { received = ec; });
    client->async_send(asio::buffer(message), [&](std::error_code ec, std::size_t) { sent = ec; });
    REQUIRE(d.run_until([&] { return sent.has_value() && received.has_value(); }));
    REQUIRE_FALSE(*sent);
    REQUIRE_FALSE(*received);
    return got;
  }
};

constexpr std::size_t fragment_payload = 1364 - 24;  // default MaxSendSize less the header

}  // namespace

TEST_CASE("the fragments of a message that all have credits go out in one batch") {
  fixture f;  // the server grants 255 credits
  const bytes message = pattern(10 * fragment_payload, 1);
  CHECK(f.send_and_receive(message) == message);
  REQUIRE(f.log->batches.size() == 1);
  CHECK(f.log->batches[0] == 10);
}

TEST_CASE("a sender short of credits closes its batch before it waits, and the message arrives") {
  parameters server;
  server.receive_credit_max = 4;  // the client never holds more than 4 credits
  fixture f(server);
  const bytes message = pattern(40 * fragment_payload, 2);
  CHECK(f.send_and_receive(message) == message);
  const auto& b = f.log->batches;
  CHECK(b.size() >= 10);  // 40 fragments, at most 4 per batch
  CHECK(*std::max_element(b.begin(), b.end()) <= 4);
  CHECK(*std::max_element(b.begin(), b.end()) >= 2);  // credits that came together went out together
  CHECK(std::accumulate(b.begin(), b.end(), std::size_t{0}) == 40);
  CHECK(f.log->polls_inside == 0);  // had a batch stayed open, the grants could not be polled
}

TEST_CASE("the work requests of one RDMA write go out in one batch") {
  fixture f;
  bytes target(3000);
  auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_write);
  REQUIRE_FALSE(ec);
  const bytes a = pattern(1000, 3), b = pattern(1000, 4), c = pattern(1000, 5);
  const std::array pieces{asio::buffer(a), asio::buffer(b), asio::buffer(c)};  // one work request each
  std::optional<std::error_code> done;
  f.client->async_rdma_write(pieces, std::span(&reg.descriptor, 1), [&](std::error_code e, std::size_t) { done = e; });
  REQUIRE(f.d.run_until([&] { return done.has_value(); }));
  REQUIRE_FALSE(*done);
  REQUIRE(f.log->batches.size() == 1);
  CHECK(f.log->batches[0] == 3);
  CHECK(bytes(target.begin(), target.begin() + 1000) == a);
  CHECK(bytes(target.begin() + 1000, target.begin() + 2000) == b);
  CHECK(bytes(target.begin() + 2000, target.end()) == c);
}
