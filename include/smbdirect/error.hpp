// smbdirect error codes: one std::error_category for everything the library reports.
//
// Every value has one documented meaning. Peer-caused values end the connection (the
// connection reports the first such error to every pending and later operation); local
// values fail only the operation that caused them unless noted.
#pragma once

#include <string>
#include <system_error>

namespace smbdirect {

/// Error values of the "smbdirect" category. Values are stable; 0 is never used.
enum class errc {
  // --- Peer sent bytes that violate [MS-SMBD]; the connection is terminated. ---
  message_too_short = 1,          ///< Fewer bytes than the structure needs (20 request / 32 response / 20 data). 3.1.5.6-8
  unsupported_version,            ///< Negotiate Request's [MinVersion, MaxVersion] excludes 0x0100. 3.1.5.6
  negotiated_version_mismatch,    ///< Negotiate Response's NegotiatedVersion is not 0x0100. 3.1.5.7
  negotiate_rejected,             ///< Negotiate Response carries a nonzero Status (e.g. STATUS_NOT_SUPPORTED). 3.1.5.7
  credits_requested_zero,         ///< CreditsRequested is 0 in a negotiate or data message. 3.1.5.6-8
  credits_granted_zero,           ///< Negotiate Response's CreditsGranted is 0. 3.1.5.7
  max_receive_size_too_small,     ///< Peer's MaxReceiveSize < 128 bytes. 3.1.5.6-7
  max_fragmented_size_too_small,  ///< Peer's MaxFragmentedSize < 131072 bytes. 3.1.5.6-7
  preferred_send_size_too_large,  ///< Response's PreferredSendSize exceeds our MaxReceiveSize. 3.1.5.7
  data_offset_misaligned,         ///< DataOffset is not a multiple of 8. 3.1.5.8
  data_offset_in_header,          ///< DataLength > 0 but DataOffset < 24 (payload would overlap the header). 3.1.5.8
  data_out_of_bounds,             ///< DataOffset + DataLength exceeds the received byte count. 3.1.5.8
  fragmented_message_too_large,   ///< DataLength + RemainingDataLength exceeds MaxFragmentedRecvSize. 3.1.5.8
  remaining_length_mismatch,      ///< A continuation fragment's RemainingDataLength does not equal the previous one minus this DataLength. 3.1.5.8
  empty_fragment,                 ///< A fragment with DataLength 0 while a message is being reassembled (it cannot advance it). 3.1.5.8
  peer_exceeded_credits,          ///< The peer sent a message while holding no receive credit from us. 3.1.5.9
  credits_overflow,               ///< The peer granted more send credits than 65535 in total. 3.1.5.9
  // --- Timers; the connection is terminated. ---
  negotiate_timeout,              ///< No (valid) negotiate message within parameters::negotiate_timeout. 3.1.2.1
  keepalive_timeout,              ///< No reply to SMB_DIRECT_RESPONSE_REQUESTED within parameters::keepalive_timeout. 3.1.2.2
  credit_grant_timeout,           ///< The peer left us with no usable send credit for parameters::credit_grant_timeout. 3.1.5.9
  // --- Transport (queue pair / work completion) failures; the connection is terminated. ---
  receiver_not_ready,             ///< A send found no posted receive at the peer (RNR, rnr_retry_count 0).
  local_length_error,             ///< A received message was larger than the posted receive buffer.
  remote_invalid_request,         ///< The peer rejected our send (its receive buffer was too small) or RDMA request.
  remote_access_error,            ///< An RDMA read/write used a bad token (rkey/STag), bounds or access right at the peer.
  work_request_flushed,           ///< A work request was flushed because the queue pair entered the error state.
  peer_disconnected,              ///< The peer disconnected (RDMA disconnect); there is no close message in [MS-SMBD].
  transport_failure,              ///< Any other transport or work completion error.
  injected_fault,                 ///< A fault injected by a test transport (loopback fault_plan).
  // --- Local usage errors; only the operation fails. ---
  message_too_large,              ///< Upper-layer message exceeds MaxFragmentedSendSize. 3.1.4.2
  empty_message,                  ///< Upper-layer message of 0 bytes: on the wire it is a credit-only message. 3.1.5.4
  buffer_too_small,               ///< An encode target span is smaller than the structure.
  invalid_argument,               ///< An argument is out of its documented range.
  rdma_too_large,                 ///< An RDMA read/write exceeds MaxReadWriteSize or the descriptors' total length.
  invalid_token,                  ///< Deregister/invalidate of a token that is not registered.
  not_connected,                  ///< Operation needs a negotiated connection (connect/accept first).
  already_connected,              ///< connect/accept called twice.
  connection_closed,              ///< The connection was closed locally; pending operations end with this.
  operation_in_progress,          ///< Another receive is already pending (one at a time).
  internal_error,                 ///< A bug inside smbdirect: an invariant broke, or an exception other than std::bad_alloc escaped.
  // --- Added later; appended so that the values above stay stable. ---
  peer_disconnected_mid_message,  ///< The peer disconnected while a fragmented message was partly received (RemainingDataLength > 0); the partial message is discarded. Transport group. 3.1.5.8
  stream_header_invalid,          ///< smbdirect::stream: a written 4-byte header's first byte is not zero ([MS-SMB2] 2.1); nothing of that message is sent.
  stream_message_incomplete,      ///< smbdirect::stream: closed while a framed message was partly written; none of it was sent.
  stream_message_too_large,       ///< smbdirect::stream: a received message is longer than a 4-byte header can state (16 MiB - 1 bytes); it is discarded.
  out_of_memory,                  ///< An allocation failed (std::bad_alloc). While starting an operation: nothing started, the connection stays up. After it started: the connection is terminated. Local-failure group.
  timer_failed,                   ///< The system timer behind the protocol timers reported an error; the connection is terminated. Local-failure group.
  too_many_descriptors,           ///< An RDMA read/write names more Buffer Descriptor V1 entries than parameters::max_rdma_descriptors; the connection stays up.
};

/// The largest errc value, for code that walks them all.
inline constexpr errc last_errc = errc::too_many_descriptors;

/// Coarse groups of errc values, for `ec == smbdirect::condition::timeout` style tests.
enum class condition {
  protocol_violation = 1,  ///< The peer broke [MS-SMBD].
  timeout,                 ///< One of the protocol timers expired.
  transport_failure,       ///< The queue pair or its completions failed.
  local_error,             ///< The caller passed something invalid or the connection is closed.
  local_failure,           ///< smbdirect could not go on: memory ran out or a system timer failed.
};

namespace detail {

class error_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "smbdirect"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::message_too_short: return "message shorter than its [MS-SMBD] structure";
      case errc::unsupported_version: return "peer's version range excludes SMB Direct 1.0 (0x0100)";
      case errc::negotiated_version_mismatch: return "negotiate response NegotiatedVersion is not 0x0100";
      case errc::negotiate_rejected: return "peer rejected negotiation (nonzero Status)";
      case errc::credits_requested_zero: return "peer requested 0 credits";
      case errc::credits_granted_zero: return "negotiate response granted 0 credits";
      case errc::max_receive_size_too_small: return "peer MaxReceiveSize below 128 bytes";
      case errc::max_fragmented_size_too_small: return "peer MaxFragmentedSize below 131072 bytes";
      case errc::preferred_send_size_too_large: return "peer PreferredSendSize above our MaxReceiveSize";
      case errc::data_offset_misaligned: return "DataOffset not 8-byte aligned";
      case errc::data_offset_in_header: return "DataOffset points inside the 24-byte header";
      case errc::data_out_of_bounds: return "DataOffset + DataLength beyond the received bytes";
      case errc::fragmented_message_too_large: return "DataLength + RemainingDataLength above MaxFragmentedRecvSize";
      case errc::remaining_length_mismatch: return "RemainingDataLength inconsistent with the previous fragment";
      case errc::empty_fragment: return "empty fragment inside a fragmented message";
      case errc::peer_exceeded_credits: return "peer sent without a receive credit";
      case errc::credits_overflow: return "peer granted more than 65535 send credits";
      case errc::negotiate_timeout: return "negotiation timed out";
      case errc::keepalive_timeout: return "peer did not answer a keepalive in time";
      case errc::credit_grant_timeout: return "peer granted no send credits in time";
      case errc::receiver_not_ready: return "receiver not ready: no receive posted at the peer (RNR)";
      case errc::local_length_error: return "local length error: message larger than the posted receive";
      case errc::remote_invalid_request: return "remote invalid request";
      case errc::remote_access_error: return "remote access error: bad token, bounds or access rights";
      case errc::work_request_flushed: return "work request flushed: queue pair in error state";
      case errc::peer_disconnected: return "peer disconnected";
      case errc::transport_failure: return "transport failure";
      case errc::injected_fault: return "injected fault";
      case errc::message_too_large: return "message larger than MaxFragmentedSendSize";
      case errc::empty_message: return "an upper-layer message needs at least 1 byte";
      case errc::buffer_too_small: return "buffer too small for the structure";
      case errc::invalid_argument: return "invalid argument";
      case errc::rdma_too_large: return "RDMA transfer larger than MaxReadWriteSize or the descriptors";
      case errc::invalid_token: return "token is not registered";
      case errc::not_connected: return "not connected";
      case errc::already_connected: return "already connected";
      case errc::connection_closed: return "connection closed";
      case errc::operation_in_progress: return "another operation of this kind is in progress";
      case errc::internal_error: return "internal error";
      case errc::peer_disconnected_mid_message: return "peer disconnected in the middle of a fragmented message";
      case errc::stream_header_invalid: return "stream header's first byte is not zero ([MS-SMB2] 2.1)";
      case errc::stream_message_incomplete: return "stream closed in the middle of a written message; none of it was sent";
      case errc::stream_message_too_large: return "received message longer than a stream header can state (16 MiB - 1)";
      case errc::out_of_memory: return "out of memory: an allocation failed";
      case errc::timer_failed: return "the system timer failed, the connection was terminated";
      case errc::too_many_descriptors: return "more buffer descriptors than parameters::max_rdma_descriptors";
    }
    return "unknown smbdirect error";
  }

  bool equivalent(int ev, const std::error_condition& cond) const noexcept override;
};

class condition_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "smbdirect.condition"; }
  std::string message(int ev) const override {
    switch (static_cast<condition>(ev)) {
      case condition::protocol_violation: return "protocol violation by the peer";
      case condition::timeout: return "protocol timer expired";
      case condition::transport_failure: return "transport failure";
      case condition::local_error: return "local error";
      case condition::local_failure: return "local resource failure";
    }
    return "unknown smbdirect condition";
  }
};

}  // namespace detail

inline const std::error_category& error_category() noexcept {
  static const detail::error_category_impl instance;
  return instance;
}

inline const std::error_category& condition_category() noexcept {
  static const detail::condition_category_impl instance;
  return instance;
}

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

inline std::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

/// The coarse group an errc value belongs to.
constexpr condition condition_of(errc e) noexcept {
  if (e == errc::peer_disconnected_mid_message) return condition::transport_failure;
  if (e == errc::out_of_memory || e == errc::timer_failed) return condition::local_failure;
  if (e <= errc::credits_overflow) return condition::protocol_violation;
  if (e <= errc::credit_grant_timeout) return condition::timeout;
  if (e <= errc::injected_fault) return condition::transport_failure;
  return condition::local_error;
}

inline bool detail::error_category_impl::equivalent(int ev, const std::error_condition& cond) const noexcept {
  return cond.category() == condition_category() &&
         cond.value() == static_cast<int>(condition_of(static_cast<errc>(ev)));
}

}  // namespace smbdirect

template <>
struct std::is_error_code_enum<smbdirect::errc> : std::true_type {};
template <>
struct std::is_error_condition_enum<smbdirect::condition> : std::true_type {};
