// Loopback transport: two endpoints of an in-process reliable connected queue pair, with
// the semantics of RC verbs that SMB Direct depends on, a deterministic fault injector, and
// nothing else. Tests run the engine on it; a raw endpoint doubles as a scripted peer.
//
// Semantics (as rdma-core RC with rnr_retry_count 0):
// - Establishment: an endpoint counts as accepted once it posts its first receive (a passive
//   RDMA CM side posts receives before rdma_accept). SENDs posted toward an endpoint that has
//   not yet been accepted wait for that moment, as an active side waits for ESTABLISHED.
// - SEND consumes the peer's oldest posted receive; none posted: the sender's completion is
//   receiver_not_ready and both queue pairs enter the error state.
// - A message longer than that receive buffer: the receiver's completion is
//   local_length_error, the sender's remote_invalid_request; both enter the error state.
// - Delivery is in order; completions come in posting order per endpoint.
// - RDMA read/write check the peer region's token (rkey/STag), bounds and access rights;
//   a violation completes with remote_access_error and both enter the error state.
// - Tokens are random 32-bit values, unique per endpoint; deregistering or a Send with
//   Invalidate revokes one.
// - In the error state, every posted receive and later work request completes with
//   work_request_flushed; poll() returns 0 once everything is drained.
//
// Threading: each endpoint is used from its own executor (a strand or a one-thread
// io_context); the two endpoints may live on different threads.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/post.hpp>

#include "smbdirect/detail/async_event.hpp"
#include "smbdirect/detail/ring_queue.hpp"
#include "smbdirect/error.hpp"
#include "smbdirect/transport.hpp"

namespace smbdirect::loopback {

/// Faults to inject. Operations are counted from 0 over both endpoints, in call order:
/// post_receive, post_send, post_rdma_write, post_rdma_read, register_memory.
struct fault_plan {
  /// The operation with this index is refused: its post_* returns injected_fault.
  std::optional<std::uint64_t> fail_operation;
  /// The operation with this index is accepted, but its work completion reports
  /// injected_fault and both queue pairs enter the error state.
  std::optional<std::uint64_t> fail_completion;
  /// Called for every SEND about to be delivered: `side` 0 for the first endpoint of the
  /// pair, 1 for the second; `index` counts that side's sends from 0; `bytes` is what the
  /// receiver will see and may be modified. Return false to drop the message silently (the
  /// sender's completion still succeeds and the peer's receive stays posted).
  std::function<bool(int side, std::uint64_t index, std::span<std::byte> bytes)> tamper;
};

struct options {
  fault_plan faults;
  /// Seed for the token generator; 0 draws one from std::random_device.
  std::uint64_t token_seed = 0;
};

namespace detail {

struct region {
  std::byte* base = nullptr;
  memory_region mr;
};

struct side_state {
  asio::any_io_executor executor;
  std::unique_ptr<smbdirect::detail::async_event> event;
  smbdirect::detail::ring_queue<std::pair<std::uint64_t, std::span<std::byte>>> receives;
  smbdirect::detail::ring_queue<work_completion> cq;
  std::unordered_map<std::uint32_t, region> regions;  // ours, for the peer to access
  std::uint64_t sends = 0;
  bool endpoint_alive = true;
  bool accepted = false;  // posted a receive: the connection is established toward this side
  bool wake_posted = false;  // a wake-up is queued on `executor`: completions join it
  // SENDs posted toward this side before it was accepted: {wr_id, gather, invalidate}.
  smbdirect::detail::ring_queue<std::tuple<std::uint64_t, std::vector<asio::const_buffer>, std::uint32_t>> early_sends;
  // Flushed by the error state, reported after `cq` as work_request_flushed: our receives, and
  // our SENDs that were waiting for the peer. Kept apart so that entering the error state moves
  // containers (noexcept) and never allocates: disconnect() cannot fail.
  decltype(receives) flushed_receives;
  decltype(early_sends) flushed_sends;
};

class fabric : public std::enable_shared_from_this<fabric> {
 public:
  fabric(asio::any_io_executor a, asio::any_io_executor b, options o) : options_(std::move(o)) {
    side_[0].executor = std::move(a);
    side_[1].executor = std::move(b);
    for (auto& s : side_) s.event = std::make_unique<smbdirect::detail::async_event>(s.executor);
    rng_.seed(options_.token_seed ? options_.token_seed : (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}());
  }

  std::uint64_t operations() const {
    std::lock_guard lock(mutex_);
    return operations_;
  }

  bool fault_hit_live_pair() const {
    std::lock_guard lock(mutex_);
    return fault_hit_live_;
  }

  std::error_code post_receive(int me, std::uint64_t wr_id, std::span<std::byte> buf) {
    std::lock_guard lock(mutex_);
    const auto op = begin_operation();
    if (op.refused) return errc::injected_fault;
    if (op.fail) return fail_locked(me, {wr_id, work_opcode::receive, errc::injected_fault});
    if (error_) return complete_locked(me, {wr_id, work_opcode::receive, errc::work_request_flushed});
    side_[me].receives.emplace_back(wr_id, buf);
    side_[me].accepted = true;
    while (!side_[me].early_sends.empty() && !error_) {  // the peer's SENDs that waited for us
      auto [id, gather, invalidate] = std::move(side_[me].early_sends.front());
      side_[me].early_sends.pop_front();
      deliver_locked(1 - me, id, gather, invalidate);
    }
    return {};
  }

  std::error_code post_send(int me, std::uint64_t wr_id, std::span<const asio::const_buffer> gather,
                            std::uint32_t invalidate) {
    std::lock_guard lock(mutex_);
    const auto op = begin_operation();
    if (op.refused) return errc::injected_fault;
    if (op.fail) return fail_locked(me, {wr_id, work_opcode::send, errc::injected_fault});
    if (error_) return complete_locked(me, {wr_id, work_opcode::send, errc::work_request_flushed});
    if (!side_[1 - me].accepted) {
      side_[1 - me].early_sends.emplace_back(wr_id, std::vector<asio::const_buffer>(gather.begin(), gather.end()), invalidate);
      return {};
    }
    return deliver_locked(me, wr_id, gather, invalidate);
  }

  std::error_code deliver_locked(int me, std::uint64_t wr_id, std::span<const asio::const_buffer> gather,
                                 std::uint32_t invalidate) {
    auto& peer = side_[1 - me];
    if (peer.receives.empty()) return fail_locked(me, {wr_id, work_opcode::send, errc::receiver_not_ready});
    const auto [recv_id, recv_buf] = peer.receives.front();
    const std::size_t total = asio::buffer_size(gather);
    if (total > recv_buf.size()) {
      peer.receives.pop_front();
      peer.cq.push_back({recv_id, work_opcode::receive, errc::local_length_error});
      return fail_locked(me, {wr_id, work_opcode::send, errc::remote_invalid_request});
    }
    asio::buffer_copy(asio::buffer(recv_buf.data(), total), gather);
    const std::uint64_t index = side_[me].sends++;
    if (options_.faults.tamper && !options_.faults.tamper(me, index, recv_buf.first(total))) {
      return complete_locked(me, {wr_id, work_opcode::send, {}});  // dropped in flight
    }
    work_completion rc{recv_id, work_opcode::receive, {}, static_cast<std::uint32_t>(total)};
    if (invalidate != 0) {
      // Only a region the peer may access can be invalidated by it (not an access::local one).
      const auto it = peer.regions.find(invalidate);
      if (it == peer.regions.end() || it->second.mr.rights == access::local) {
        peer.receives.pop_front();
        peer.cq.push_back({recv_id, work_opcode::receive, errc::remote_invalid_request});
        return fail_locked(me, {wr_id, work_opcode::send, errc::remote_invalid_request});
      }
      peer.regions.erase(it);
      rc.invalidated_token = invalidate;
    }
    peer.receives.pop_front();
    peer.cq.push_back(rc);
    notify_locked(1 - me);
    return complete_locked(me, {wr_id, work_opcode::send, {}});
  }

  template <class Buffers>
  std::error_code post_rdma(int me, std::uint64_t wr_id, work_opcode opcode, const Buffers& local,
                            std::uint64_t remote_address, std::uint32_t token) {
    std::lock_guard lock(mutex_);
    const auto op = begin_operation();
    if (op.refused) return errc::injected_fault;
    if (op.fail) return fail_locked(me, {wr_id, opcode, errc::injected_fault});
    if (error_) return complete_locked(me, {wr_id, opcode, errc::work_request_flushed});
    const std::size_t total = asio::buffer_size(local);
    const access needed = opcode == work_opcode::rdma_write ? access::remote_write : access::remote_read;
    auto& regions = side_[1 - me].regions;
    const auto it = regions.find(token);
    if (it == regions.end() || !allows(it->second.mr.rights, needed) || remote_address < it->second.mr.address ||
        remote_address - it->second.mr.address > it->second.mr.length ||
        total > it->second.mr.length - (remote_address - it->second.mr.address)) {
      return fail_locked(me, {wr_id, opcode, errc::remote_access_error});
    }
    std::byte* remote = it->second.base + (remote_address - it->second.mr.address);
    if constexpr (std::is_same_v<Buffers, std::span<const asio::const_buffer>>) {
      asio::buffer_copy(asio::buffer(remote, total), local);
    } else {
      asio::buffer_copy(local, asio::buffer(static_cast<const std::byte*>(remote), total));
    }
    return complete_locked(me, {wr_id, opcode, {}});
  }

  std::pair<std::error_code, memory_region> register_memory(int me, asio::mutable_buffer buf, access rights) {
    std::lock_guard lock(mutex_);
    const auto op = begin_operation();
    if (op.refused || op.fail) return {errc::injected_fault, {}};
    if (buf.size() > 0xffffffffu) return {errc::invalid_argument, {}};
    auto& regions = side_[me].regions;
    std::uint32_t token = 0;
    while (token == 0 || regions.contains(token)) token = static_cast<std::uint32_t>(rng_());
    region r{static_cast<std::byte*>(buf.data()),
             {reinterpret_cast<std::uint64_t>(buf.data()), token, static_cast<std::uint32_t>(buf.size()), rights}};
    regions.emplace(token, r);
    return {{}, r.mr};
  }

  std::error_code deregister_memory(int me, const memory_region& mr) {
    std::lock_guard lock(mutex_);
    return side_[me].regions.erase(mr.token) ? std::error_code{} : make_error_code(errc::invalid_token);
  }

  /// Moves up to out.size() completions; nullopt when none is ready yet.
  std::optional<std::size_t> take_completions(int me, std::span<work_completion> out) {
    std::lock_guard lock(mutex_);
    auto& side = side_[me];
    auto& cq = side.cq;
    if (cq.empty() && side.flushed_sends.empty() && side.flushed_receives.empty()) {
      if (error_) return 0;
      return std::nullopt;
    }
    std::size_t n = 0;
    while (n < out.size() && !cq.empty()) {
      out[n++] = cq.front();
      cq.pop_front();
    }
    while (n < out.size() && !side.flushed_sends.empty()) {
      out[n++] = {std::get<0>(side.flushed_sends.front()), work_opcode::send, errc::work_request_flushed};
      side.flushed_sends.pop_front();
    }
    while (n < out.size() && !side.flushed_receives.empty()) {
      out[n++] = {side.flushed_receives.front().first, work_opcode::receive, errc::work_request_flushed};
      side.flushed_receives.pop_front();
    }
    return n;
  }

  smbdirect::detail::async_event& event(int me) { return *side_[me].event; }
  const asio::any_io_executor& executor(int me) const { return side_[me].executor; }

  void disconnect() {
    std::lock_guard lock(mutex_);
    enter_error_locked();
  }

  void endpoint_closed(int me) {
    std::lock_guard lock(mutex_);
    side_[me].endpoint_alive = false;
    enter_error_locked();
  }

 private:
  struct operation {
    bool refused = false;
    bool fail = false;
  };

  operation begin_operation() {
    const std::uint64_t n = operations_++;
    const operation op{options_.faults.fail_operation == n, options_.faults.fail_completion == n};
    if ((op.refused || op.fail) && !error_) fault_hit_live_ = true;
    return op;
  }

  std::error_code complete_locked(int me, work_completion wc) {
    side_[me].cq.push_back(std::move(wc));
    notify_locked(me);
    return {};
  }

  // A work completion error: the queue pair and its peer enter the error state.
  std::error_code fail_locked(int me, work_completion wc) {
    side_[me].cq.push_back(std::move(wc));
    enter_error_locked();
    return {};
  }

  /// Flushes every outstanding work request without allocating (the wake-ups are posted).
  /// Once in the error state nothing is queued on receives or early_sends again (posts
  /// complete at once), so they move only once.
  void enter_error_locked() {
    error_ = true;
    for (int s = 0; s < 2; ++s) {
      if (side_[1 - s].flushed_sends.empty()) side_[1 - s].flushed_sends.swap(side_[s].early_sends);
      if (side_[s].flushed_receives.empty()) side_[s].flushed_receives.swap(side_[s].receives);
      side_[s].regions.clear();
    }
    for (int s = 0; s < 2; ++s) notify_locked(s);
  }

  void notify_locked(int s) {
    if (!side_[s].endpoint_alive || side_[s].wake_posted) return;  // one wake-up per batch
    // Weak: a wake-up queued on one side's io_context must not keep the fabric (and the other
    // side's timer) alive past the endpoints, or past the other io_context.
    asio::post(side_[s].executor, [weak = weak_from_this(), s] {
      if (auto self = weak.lock()) {
        {
          std::lock_guard lock(self->mutex_);
          self->side_[s].wake_posted = false;  // what completes from now on needs a new wake-up
        }
        self->side_[s].event->notify();
      }
    });
    side_[s].wake_posted = true;  // after the post, which may throw; its handler waits for our lock
  }

  mutable std::mutex mutex_;
  options options_;
  side_state side_[2];
  std::uint64_t operations_ = 0;
  bool error_ = false;
  bool fault_hit_live_ = false;
  std::mt19937_64 rng_;
};

}  // namespace detail

/// One end of a loopback queue pair. Models smbdirect::transport. Movable, not copyable;
/// destroying it disconnects the pair.
class endpoint {
 public:
  using executor_type = asio::any_io_executor;

  endpoint(std::shared_ptr<detail::fabric> f, int side) : fabric_(std::move(f)), side_(side) {}
  endpoint(endpoint&& o) noexcept : fabric_(std::move(o.fabric_)), side_(o.side_) {}
  endpoint& operator=(endpoint&& o) noexcept {
    if (this != &o) {
      close();
      fabric_ = std::move(o.fabric_);
      side_ = o.side_;
    }
    return *this;
  }
  ~endpoint() { close(); }

  executor_type get_executor() const { return fabric_->executor(side_); }

  std::error_code post_receive(std::uint64_t wr_id, std::span<std::byte> buf) {
    return fabric_->post_receive(side_, wr_id, buf);
  }
  std::error_code post_send(std::uint64_t wr_id, std::span<const asio::const_buffer> gather, std::uint32_t invalidate_token = 0) {
    return fabric_->post_send(side_, wr_id, gather, invalidate_token);
  }
  std::error_code post_rdma_write(std::uint64_t wr_id, std::span<const asio::const_buffer> local,
                                  std::uint64_t remote_address, std::uint32_t token) {
    return fabric_->post_rdma(side_, wr_id, work_opcode::rdma_write, local, remote_address, token);
  }
  std::error_code post_rdma_read(std::uint64_t wr_id, std::span<const asio::mutable_buffer> local,
                                 std::uint64_t remote_address, std::uint32_t token) {
    return fabric_->post_rdma(side_, wr_id, work_opcode::rdma_read, local, remote_address, token);
  }
  std::pair<std::error_code, memory_region> register_memory(asio::mutable_buffer region, access rights) {
    return fabric_->register_memory(side_, region, rights);
  }
  std::error_code deregister_memory(const memory_region& mr) { return fabric_->deregister_memory(side_, mr); }

  asio::awaitable<std::size_t> poll(std::span<work_completion> out) {
    auto f = fabric_;  // the endpoint may be moved while we wait
    for (;;) {
      if (auto n = f->take_completions(side_, out)) co_return *n;
      co_await f->event(side_).wait();
    }
  }

  /// Non-blocking poll (ibv_poll_cq): completions ready now, 0 if none. For scripted peers.
  std::size_t try_poll(std::span<work_completion> out) { return fabric_->take_completions(side_, out).value_or(0); }

  /// Both queue pairs enter the error state; outstanding work is flushed.
  void disconnect() {
    if (fabric_) fabric_->disconnect();
  }

  transport_info info() const { return {"loopback", static_cast<std::uint32_t>(max_send_sge), 0xffffffffu, 0xffffffffu}; }

  /// Operations counted so far over both endpoints (for fault loops).
  std::uint64_t operations() const { return fabric_->operations(); }
  /// Whether the planned fault fired while the queue pairs were still up (a fault on a pair
  /// already in the error state changes nothing).
  bool fault_hit_live_pair() const { return fabric_->fault_hit_live_pair(); }

 private:
  void close() {
    if (fabric_) fabric_->endpoint_closed(side_);
  }

  std::shared_ptr<detail::fabric> fabric_;
  int side_ = 0;
};

static_assert(transport<endpoint>);

/// A connected pair: first runs on `a`, second on `b` (they may be the same executor).
inline std::pair<endpoint, endpoint> make_pair(asio::any_io_executor a, asio::any_io_executor b, options o = {}) {
  auto f = std::make_shared<detail::fabric>(std::move(a), std::move(b), std::move(o));
  return {endpoint(f, 0), endpoint(f, 1)};
}

}  // namespace smbdirect::loopback
