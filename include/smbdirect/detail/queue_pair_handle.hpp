// The handle a network transport (tcp, verbs) gives its users: move-only, it forwards the
// transport concept's calls to a shared State that the transport's coroutines keep alive
// while they finish. Destroying or replacing a handle calls State::release().
//
// State provides: executor(), post_receive, post_send, post_rdma_write, post_rdma_read,
// register_memory, deregister_memory, poll, disconnect, info and release, with the
// signatures of smbdirect::transport.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>

#include "smbdirect/transport.hpp"

namespace smbdirect::detail {

template <class State>
class queue_pair_handle {
 public:
  using executor_type = asio::any_io_executor;

  queue_pair_handle() = default;
  explicit queue_pair_handle(std::shared_ptr<State> s) : state_(std::move(s)) {}
  queue_pair_handle(queue_pair_handle&&) noexcept = default;
  queue_pair_handle& operator=(queue_pair_handle&& o) noexcept {
    if (this != &o) {
      if (state_) state_->release();
      state_ = std::move(o.state_);
    }
    return *this;
  }
  ~queue_pair_handle() {
    if (state_) state_->release();
  }

  executor_type get_executor() const { return state_->executor(); }

  std::error_code post_receive(std::uint64_t wr_id, std::span<std::byte> buf) { return state_->post_receive(wr_id, buf); }
  std::error_code post_send(std::uint64_t wr_id, std::span<const asio::const_buffer> gather, std::uint32_t invalidate_token = 0) {
    return state_->post_send(wr_id, gather, invalidate_token);
  }
  std::error_code post_rdma_write(std::uint64_t wr_id, std::span<const asio::const_buffer> local,
                                  std::uint64_t remote_address, std::uint32_t token) {
    return state_->post_rdma_write(wr_id, local, remote_address, token);
  }
  std::error_code post_rdma_read(std::uint64_t wr_id, std::span<const asio::mutable_buffer> local,
                                 std::uint64_t remote_address, std::uint32_t token) {
    return state_->post_rdma_read(wr_id, local, remote_address, token);
  }
  std::pair<std::error_code, memory_region> register_memory(asio::mutable_buffer region, access rights) {
    return state_->register_memory(region, rights);
  }
  std::error_code deregister_memory(const memory_region& mr) { return state_->deregister_memory(mr); }
  asio::awaitable<std::size_t> poll(std::span<work_completion> out) { return state_->poll(out); }
  void disconnect() {
    if (state_) state_->disconnect();
  }
  transport_info info() const { return state_->info(); }

 protected:
  std::shared_ptr<State> state_;
};

}  // namespace smbdirect::detail
