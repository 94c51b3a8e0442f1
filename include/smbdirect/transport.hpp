// The transport concept: what the engine needs from an RDMA-like reliable connected queue
// pair. It mirrors verbs: post work requests now, learn their fate later from a completion
// queue. Every transport (loopback, tcp, verbs) models it; the engine is written once over it.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>

namespace smbdirect {

/// Rights a registered region grants the peer (ibv_access_flags' REMOTE_READ / REMOTE_WRITE).
/// Registrations also serve this side's own work requests (verbs: with their lkey): memory
/// one covers is sent from and RDMA-written from in place, without a copy into the send
/// buffers or a registration per work request. An RDMA-read sink needs a registration with
/// local write access: remote_write or local (on iWARP: remote_write without a window).
enum class access : std::uint8_t {
  none = 0,  ///< not a valid registration (invalid_argument)
  remote_read = 1,   ///< the peer may RDMA-read from it
  remote_write = 2,  ///< the peer may RDMA-write into it
  remote_read_write = 3,
  /// The peer may do nothing with it: memory registered only for this side's own sends and
  /// RDMA reads and writes, as perftest registers its buffers once.
  local = 4,
};
constexpr bool allows(access granted, access needed) noexcept {
  return (static_cast<std::uint8_t>(granted) & static_cast<std::uint8_t>(needed)) == static_cast<std::uint8_t>(needed);
}
/// One of remote_read, remote_write, remote_read_write, local.
constexpr bool valid_registration_rights(access rights) noexcept {
  return rights != access::none && static_cast<std::uint8_t>(rights) <= static_cast<std::uint8_t>(access::local);
}

/// A region registered with the transport (for remote access, or access::local).
struct memory_region {
  std::uint64_t address = 0;  ///< what the peer puts in Buffer Descriptor V1 Offset
  std::uint32_t token = 0;    ///< rkey / STag (access::local: a key of ours, useless to the peer)
  std::uint32_t length = 0;   ///< bytes
  access rights = access::none;
};

/// What a work completion reports (ibv_wc_opcode).
enum class work_opcode : std::uint8_t { send, receive, rdma_write, rdma_read };

/// One completion queue entry (ibv_wc). `status` is empty on success, else an errc value such as
/// receiver_not_ready, local_length_error, remote_access_error or work_request_flushed.
struct work_completion {
  std::uint64_t wr_id = 0;
  work_opcode opcode = work_opcode::send;
  std::error_code status;
  std::uint32_t byte_len = 0;  ///< bytes received (receive completions only)
  std::uint32_t invalidated_token = 0;  ///< receive of a Send with Invalidate: the token it revoked
};

/// Static facts about a transport instance, for logs and the example's output.
struct transport_info {
  std::string name;                       ///< e.g. "loopback", "rxe0"
  std::uint32_t max_send_sge = 0;         ///< scatter-gather entries per send
  std::uint32_t max_message_size = 0;     ///< bytes per single send
  std::uint32_t max_rdma_size = 0;        ///< bytes per RDMA read/write work request
};

/// Most scatter-gather entries the engine puts in one send work request: the header plus
/// the payload pieces of one fragment.
inline constexpr std::size_t max_send_sge = 8;

// clang-format off
/// A reliable connected queue pair plus its completion queue and memory registration.
/// Posting functions return an error only when the work request was not accepted (nothing
/// will complete for it); otherwise exactly one work_completion reports its fate, in posting
/// order per queue. Buffers handed to post_* stay owned by the caller and must stay valid
/// until that completion. poll() waits until at least one completion is ready, fills `out`,
/// and returns how many; it returns 0 once the queue pair is disconnected and every
/// outstanding work request has completed (flushed).
template <class T>
concept transport = requires(T& t, std::uint64_t wr_id, std::span<std::byte> recv_buf,
                             std::span<const asio::const_buffer> gather,
                             std::span<const asio::mutable_buffer> scatter, std::uint64_t remote_address,
                             std::uint32_t token, asio::mutable_buffer region, access rights,
                             const memory_region& mr, std::span<work_completion> out) {
  { t.get_executor() } -> std::convertible_to<asio::any_io_executor>;
  { t.post_receive(wr_id, recv_buf) } -> std::same_as<std::error_code>;
  /// A SEND (or SEND with Invalidate of `token` when token != 0) gathering `gather`.
  { t.post_send(wr_id, gather, token) } -> std::same_as<std::error_code>;
  { t.post_rdma_write(wr_id, gather, remote_address, token) } -> std::same_as<std::error_code>;
  { t.post_rdma_read(wr_id, scatter, remote_address, token) } -> std::same_as<std::error_code>;
  { t.register_memory(region, rights) } -> std::same_as<std::pair<std::error_code, memory_region>>;
  { t.deregister_memory(mr) } -> std::same_as<std::error_code>;
  { t.poll(out) } -> std::same_as<asio::awaitable<std::size_t>>;
  { t.disconnect() } -> std::same_as<void>;
  { t.info() } -> std::convertible_to<transport_info>;
};

/// Optional: a transport that pays per posting call (verbs: every ibv_post_send rings a
/// doorbell, a system call on rxe and siw) may batch. Between begin_batch() and the matching
/// end_batch() (they nest), post_send and post_rdma_* queue their work requests; end_batch()
/// posts them in order as chained lists, one doorbell each, and never throws. A queued work
/// request counts as accepted: if its chained post fails, its work completion reports the
/// error. The engine never keeps a batch open across a suspension, so nothing waits unposted.
template <class T>
concept batching_transport = transport<T> && requires(T& t) {
  { t.begin_batch() } -> std::same_as<void>;
  { t.end_batch() } noexcept -> std::same_as<void>;
};

/// Optional: a transport whose receive work requests must land in memory of its own (verbs:
/// memory registered for local write) lends the engine that memory for its receive buffers.
/// receive_memory(bytes) returns `bytes` bytes, valid and unmoved as long as the transport
/// lives, or an empty span when it cannot (the engine then uses memory of its own, and the
/// transport copies each receive into it). Receives posted inside the span land in place: no
/// copy. Called once, before the first post_receive.
template <class T>
concept receive_memory_transport = transport<T> && requires(T& t, std::size_t bytes) {
  { t.receive_memory(bytes) } -> std::same_as<std::span<std::byte>>;
};
// clang-format on

}  // namespace smbdirect
