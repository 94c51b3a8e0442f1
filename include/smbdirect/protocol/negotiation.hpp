// Negotiation rules, pure functions: [MS-SMBD] 3.1.5.2 (request), 3.1.5.3 (response),
// 3.1.5.6 (passive side receives the request), 3.1.5.7 (active side receives the response).
// No I/O and no clock: callers pass bytes in and get decisions out.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <system_error>

#include "smbdirect/error.hpp"
#include "smbdirect/parameters.hpp"
#include "smbdirect/wire/negotiate.hpp"

namespace smbdirect::protocol {

/// Checks our own parameters against the floors the peer will enforce.
/// Errors: invalid_argument (credits 0, sizes below 128 / 131072, MaxSendSize <= 24,
/// MaxReadWriteSize 0, a zero negotiate timeout).
inline std::error_code validate(const parameters& p) noexcept {
  if (p.send_credit_target == 0 || p.receive_credit_max == 0) return errc::invalid_argument;
  if (p.max_receive_size < min_receive_size || p.max_send_size < min_receive_size) return errc::invalid_argument;
  if (p.max_fragmented_size < min_fragmented_size || p.max_read_write_size == 0) return errc::invalid_argument;
  if (p.negotiate_timeout.count() <= 0 || p.keepalive_interval.count() < 0) return errc::invalid_argument;
  if (p.keepalive_timeout.count() <= 0 || p.credit_grant_timeout.count() <= 0) return errc::invalid_argument;
  if (p.max_rdma_descriptors == 0) return errc::invalid_argument;
  if (std::uint64_t{p.receive_credit_max} + 1 + p.lent_receive_buffers > 65536) return errc::invalid_argument;
  return {};
}

/// The active side's Negotiate Request. [MS-SMBD] 3.1.5.2
constexpr wire::negotiate_request make_negotiate_request(const parameters& p) noexcept {
  wire::negotiate_request r;
  r.credits_requested = p.send_credit_target;
  r.preferred_send_size = p.max_send_size;
  r.max_receive_size = p.max_receive_size;
  r.max_fragmented_size = p.max_fragmented_size;
  return r;
}

/// Outcome of a received Negotiate Request on the passive side. [MS-SMBD] 3.1.5.6
struct request_decision {
  std::error_code error;           ///< set: negotiation failed
  bool send_failure_response = false;  ///< error is unsupported_version: answer with STATUS_NOT_SUPPORTED first
  negotiated_parameters negotiated;    ///< valid when !error
};

/// Applies every check and computation of [MS-SMBD] 3.1.5.6 in the spec's order:
/// message_too_short; unsupported_version (range excludes 0x0100, a failure response is due);
/// credits_requested_zero; max_receive_size_too_small; max_fragmented_size_too_small.
/// Then MaxReceiveSize = max(128, min(ours, peer PreferredSendSize)) (a PreferredSendSize of 0
/// thus becomes 128, as Windows does), MaxSendSize = min(ours, peer MaxReceiveSize),
/// MaxFragmentedSendSize = peer MaxFragmentedSize, ReceiveCreditTarget = CreditsRequested
/// capped at our ReceiveCreditMax. SendCredits stay 0: a request grants none.
inline request_decision on_negotiate_request(const parameters& p, std::span<const std::byte> bytes) noexcept {
  request_decision d;
  wire::negotiate_request req;
  if (auto ec = wire::decode(bytes, req)) return d.error = ec, d;
  if (req.min_version > wire::smbdirect_version_1 || req.max_version < wire::smbdirect_version_1) {
    d.error = errc::unsupported_version;
    d.send_failure_response = true;
    return d;
  }
  if (req.credits_requested == 0) return d.error = errc::credits_requested_zero, d;
  if (req.max_receive_size < min_receive_size) return d.error = errc::max_receive_size_too_small, d;
  if (req.max_fragmented_size < min_fragmented_size) return d.error = errc::max_fragmented_size_too_small, d;

  auto& n = d.negotiated;
  n.max_receive_size = std::max(min_receive_size, std::min(p.max_receive_size, req.preferred_send_size));
  n.max_send_size = std::min(p.max_send_size, req.max_receive_size);
  n.max_fragmented_send_size = req.max_fragmented_size;
  n.max_fragmented_recv_size = p.max_fragmented_size;
  n.max_read_write_size = p.max_read_write_size;
  n.send_credit_target = p.send_credit_target;
  n.receive_credit_max = p.receive_credit_max;
  n.receive_credit_target = std::min(req.credits_requested, p.receive_credit_max);
  n.initial_send_credits = 0;
  n.peer = {.credits_requested = req.credits_requested,
            .preferred_send_size = req.preferred_send_size,
            .max_receive_size = req.max_receive_size,
            .max_fragmented_size = req.max_fragmented_size};
  return d;
}

/// The passive side's successful response; `credits_granted` is the number of receives
/// posted for the peer (an absolute count). [MS-SMBD] 3.1.5.3
constexpr wire::negotiate_response make_negotiate_response(const negotiated_parameters& n,
                                                           std::uint16_t credits_granted) noexcept {
  wire::negotiate_response r;
  r.credits_requested = n.send_credit_target;
  r.credits_granted = credits_granted;
  r.status = wire::status_success;
  r.max_read_write_size = n.max_read_write_size;
  r.preferred_send_size = n.max_send_size;
  r.max_receive_size = n.max_receive_size;
  r.max_fragmented_size = n.max_fragmented_recv_size;
  return r;
}

/// A failure response: versions 0x0100, the status, every other field 0. [MS-SMBD] 3.1.5.3
constexpr wire::negotiate_response make_failure_response(std::uint32_t status) noexcept {
  wire::negotiate_response r{};
  r.negotiated_version = 0;
  r.status = status;
  return r;
}

/// Outcome of a received Negotiate Response on the active side. [MS-SMBD] 3.1.5.7
struct response_decision {
  std::error_code error;
  negotiated_parameters negotiated;  ///< valid when !error
};

/// Applies every check of [MS-SMBD] 3.1.5.7: message_too_short; negotiate_rejected (Status
/// != 0, checked first after the length so a failure response reports its status rather than
/// its zeroed fields); negotiated_version_mismatch; credits_granted_zero; credits_requested_zero;
/// max_receive_size_too_small; max_fragmented_size_too_small; preferred_send_size_too_large
/// (PreferredSendSize > our MaxReceiveSize). Then computes the crossed minimums and
/// SendCredits = CreditsGranted.
inline response_decision on_negotiate_response(const parameters& p, std::span<const std::byte> bytes,
                                               std::uint32_t* status_out = nullptr) noexcept {
  response_decision d;
  wire::negotiate_response rsp;
  if (auto ec = wire::decode(bytes, rsp)) return d.error = ec, d;
  if (status_out) *status_out = rsp.status;
  if (rsp.status != wire::status_success) return d.error = errc::negotiate_rejected, d;
  if (rsp.negotiated_version != wire::smbdirect_version_1) return d.error = errc::negotiated_version_mismatch, d;
  if (rsp.credits_granted == 0) return d.error = errc::credits_granted_zero, d;
  if (rsp.credits_requested == 0) return d.error = errc::credits_requested_zero, d;
  if (rsp.max_receive_size < min_receive_size) return d.error = errc::max_receive_size_too_small, d;
  if (rsp.max_fragmented_size < min_fragmented_size) return d.error = errc::max_fragmented_size_too_small, d;
  if (rsp.preferred_send_size > p.max_receive_size) return d.error = errc::preferred_send_size_too_large, d;

  auto& n = d.negotiated;
  n.max_receive_size = std::max(min_receive_size, std::min(p.max_receive_size, rsp.preferred_send_size));
  n.max_send_size = std::min(p.max_send_size, rsp.max_receive_size);
  n.max_read_write_size = std::min(p.max_read_write_size, rsp.max_read_write_size);
  n.max_fragmented_send_size = rsp.max_fragmented_size;
  n.max_fragmented_recv_size = p.max_fragmented_size;
  n.send_credit_target = p.send_credit_target;
  n.receive_credit_max = p.receive_credit_max;
  n.receive_credit_target = std::min(rsp.credits_requested, p.receive_credit_max);
  n.initial_send_credits = rsp.credits_granted;
  n.peer = {.credits_requested = rsp.credits_requested,
            .credits_granted = rsp.credits_granted,
            .preferred_send_size = rsp.preferred_send_size,
            .max_receive_size = rsp.max_receive_size,
            .max_fragmented_size = rsp.max_fragmented_size,
            .max_read_write_size = rsp.max_read_write_size};
  return d;
}

}  // namespace smbdirect::protocol
