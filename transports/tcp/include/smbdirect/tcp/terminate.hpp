// RDMAP Terminate messages (RFC 5040 4.8, 7): which layer found an error, its type and code,
// chosen from what went wrong, and the error a Terminate from the peer stands for. Pure.
//
// We send the 4-byte Terminate Control only (Hdrct M/D/R all 0: no copies of the offending
// headers), which RFC 5040 allows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "smbdirect/error.hpp"
#include "smbdirect/tcp/ddp_rdmap.hpp"
#include "smbdirect/tcp/error.hpp"

namespace smbdirect::tcp::wire {

inline constexpr std::size_t terminate_control_size = 4;  ///< bytes. RFC 5040 4.8

/// Layer of a Terminate. RFC 5040 4.8
enum class layer : std::uint8_t { rdmap = 0, ddp = 1, llp = 2 };

// Error types per layer. RFC 5040 7.1-7.3 (RDMAP, DDP), RFC 5044 8 (MPA as the LLP).
inline constexpr std::uint8_t rdmap_protection = 1;        ///< remote protection error
inline constexpr std::uint8_t rdmap_operation = 2;         ///< remote operation error
inline constexpr std::uint8_t ddp_tagged = 1;              ///< tagged buffer error
inline constexpr std::uint8_t ddp_untagged = 2;            ///< untagged buffer error
inline constexpr std::uint8_t llp_error = 0;               ///< MPA: the only type

/// Layer, error type and error code of one Terminate.
struct terminate_info {
  layer where = layer::rdmap;
  std::uint8_t error_type = 0;
  std::uint8_t error_code = 0;
  friend bool operator==(const terminate_info&, const terminate_info&) = default;
};

/// Writes the Terminate Control into `out` (>= 4 bytes); returns its size.
inline std::size_t encode(const terminate_info& t, std::byte* out) {
  out[0] = std::byte((static_cast<std::uint8_t>(t.where) << 4) | (t.error_type & 0x0f));
  out[1] = std::byte(t.error_code);
  out[2] = out[3] = std::byte(0);
  return terminate_control_size;
}

/// Errors: terminated_by_peer when `payload` is shorter than the Terminate Control.
inline std::error_code decode(std::span<const std::byte> payload, terminate_info& t) {
  if (payload.size() < terminate_control_size) return iwarp_errc::terminated_by_peer;
  const auto b0 = std::to_integer<std::uint8_t>(payload[0]);
  t.where = static_cast<layer>(b0 >> 4);
  t.error_type = b0 & 0x0f;
  t.error_code = std::to_integer<std::uint8_t>(payload[1]);
  return {};
}

/// The Terminate that reports `e`, found in a tagged segment (`tagged`) or an untagged one.
/// For STag, bounds and rights errors in an RDMA Read Request use terminate_for_read().
inline terminate_info terminate_for(std::error_code e, bool tagged) {
  if (e == errc::receiver_not_ready) return {layer::ddp, ddp_untagged, 0x02};  // no buffer available
  if (e == errc::local_length_error) return {layer::ddp, ddp_untagged, 0x05};  // message too long
  if (e.category() != iwarp_category()) return {layer::rdmap, rdmap_operation, 0xff};
  switch (static_cast<iwarp_errc>(e.value())) {
    case iwarp_errc::crc_mismatch: return {layer::llp, llp_error, 0x02};
    case iwarp_errc::ulpdu_too_short: return {layer::llp, llp_error, 0x03};  // FPDU start error
    case iwarp_errc::bad_ddp_version: return tagged ? terminate_info{layer::ddp, ddp_tagged, 0x04} : terminate_info{layer::ddp, ddp_untagged, 0x06};
    case iwarp_errc::bad_rdmap_version: return {layer::rdmap, rdmap_operation, 0x05};
    case iwarp_errc::bad_opcode: return {layer::rdmap, rdmap_operation, 0x06};
    case iwarp_errc::bad_queue_number: return {layer::ddp, ddp_untagged, 0x01};
    case iwarp_errc::bad_msn: return {layer::ddp, ddp_untagged, 0x03};
    case iwarp_errc::bad_message_offset: return {layer::ddp, ddp_untagged, 0x04};
    case iwarp_errc::invalid_stag: return {layer::ddp, ddp_tagged, 0x00};
    case iwarp_errc::base_or_bounds_violation: return {layer::ddp, ddp_tagged, 0x01};
    case iwarp_errc::access_rights_violation: return {layer::rdmap, rdmap_protection, 0x02};
    case iwarp_errc::read_response_unexpected: return {layer::ddp, ddp_tagged, 0x00};
    case iwarp_errc::ird_exceeded: return {layer::rdmap, rdmap_operation, 0x07};  // as Linux siw does
    case iwarp_errc::bad_read_request: return {layer::rdmap, rdmap_operation, 0x06};
    case iwarp_errc::bad_invalidate: return {layer::rdmap, rdmap_operation, 0x09};
    default: return {layer::rdmap, rdmap_operation, 0xff};
  }
}

/// The Terminate for an RDMA Read Request whose source STag is invalid, out of bounds or
/// lacks remote read: an RDMAP remote protection error. RFC 5040 7.1
inline terminate_info terminate_for_read(iwarp_errc e) {
  switch (e) {
    case iwarp_errc::invalid_stag: return {layer::rdmap, rdmap_protection, 0x00};
    case iwarp_errc::base_or_bounds_violation: return {layer::rdmap, rdmap_protection, 0x01};
    default: return {layer::rdmap, rdmap_protection, 0x02};
  }
}

/// What a Terminate from the peer means for us: our access broke its rules
/// (remote_access_error), it had no receive posted (receiver_not_ready), our message was too
/// long for it (remote_invalid_request), or anything else (terminated_by_peer).
inline std::error_code error_for(const terminate_info& t) {
  if (t.where == layer::rdmap && t.error_type == rdmap_protection) return errc::remote_access_error;
  if (t.where == layer::ddp && t.error_type == ddp_tagged && t.error_code <= 0x03) return errc::remote_access_error;
  if (t.where == layer::ddp && t.error_type == ddp_untagged && t.error_code == 0x02) return errc::receiver_not_ready;
  if (t.where == layer::ddp && t.error_type == ddp_untagged && t.error_code == 0x05) return errc::remote_invalid_request;
  return iwarp_errc::terminated_by_peer;
}

}  // namespace smbdirect::tcp::wire
