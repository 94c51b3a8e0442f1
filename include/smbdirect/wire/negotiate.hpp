// Negotiate Request ([MS-SMBD] 2.2.1, 20 bytes) and Negotiate Response (2.2.2, 32 bytes).
//
// Decoding checks only the structure (length); the negotiation rules of 3.1.5.6 / 3.1.5.7
// live in protocol/negotiation.hpp.
#pragma once

#include <cstdint>
#include <span>
#include <system_error>

#include "smbdirect/error.hpp"
#include "smbdirect/wire/little_endian.hpp"

namespace smbdirect::wire {

/// The only SMB Direct protocol version, 1.0. [MS-SMBD] 1.7
inline constexpr std::uint16_t smbdirect_version_1 = 0x0100;
/// NTSTATUS sent in a Negotiate Response when no common version exists. [MS-SMBD] 3.1.5.6
inline constexpr std::uint32_t status_not_supported = 0xC00000BB;
inline constexpr std::uint32_t status_success = 0;

/// Negotiate Request, sent once by the active (client) side. [MS-SMBD] 2.2.1
struct negotiate_request {
  static constexpr std::size_t size = 20;  ///< bytes on the wire

  std::uint16_t min_version = smbdirect_version_1;
  std::uint16_t max_version = smbdirect_version_1;
  std::uint16_t reserved = 0;
  std::uint16_t credits_requested = 0;    ///< sender's SendCreditTarget
  std::uint32_t preferred_send_size = 0;  ///< bytes; sender's MaxSendSize
  std::uint32_t max_receive_size = 0;     ///< bytes; largest single message the sender accepts
  std::uint32_t max_fragmented_size = 0;  ///< bytes; largest reassembled upper-layer message it accepts

  friend bool operator==(const negotiate_request&, const negotiate_request&) = default;
};

/// Negotiate Response, sent once by the passive (server) side. [MS-SMBD] 2.2.2
struct negotiate_response {
  static constexpr std::size_t size = 32;  ///< bytes on the wire

  std::uint16_t min_version = smbdirect_version_1;
  std::uint16_t max_version = smbdirect_version_1;
  std::uint16_t negotiated_version = smbdirect_version_1;
  std::uint16_t reserved = 0;
  std::uint16_t credits_requested = 0;    ///< responder's SendCreditTarget
  std::uint16_t credits_granted = 0;      ///< receives the responder has posted for the requester
  std::uint32_t status = status_success;  ///< NTSTATUS
  std::uint32_t max_read_write_size = 0;  ///< bytes per RDMA read/write operation
  std::uint32_t preferred_send_size = 0;  ///< bytes; responder's MaxSendSize
  std::uint32_t max_receive_size = 0;     ///< bytes
  std::uint32_t max_fragmented_size = 0;  ///< bytes

  friend bool operator==(const negotiate_response&, const negotiate_response&) = default;
};

/// Writes the 20-byte request into out[0, 20). Errors: buffer_too_small.
inline std::error_code encode(const negotiate_request& m, std::span<std::byte> out) noexcept {
  if (out.size() < negotiate_request::size) return errc::buffer_too_small;
  using detail::store_le;
  store_le<std::uint16_t>(out, 0, m.min_version);
  store_le<std::uint16_t>(out, 2, m.max_version);
  store_le<std::uint16_t>(out, 4, m.reserved);
  store_le<std::uint16_t>(out, 6, m.credits_requested);
  store_le<std::uint32_t>(out, 8, m.preferred_send_size);
  store_le<std::uint32_t>(out, 12, m.max_receive_size);
  store_le<std::uint32_t>(out, 16, m.max_fragmented_size);
  return {};
}

/// Reads a request from the first 20 bytes of `in` (extra bytes are ignored, as Windows does).
/// Errors: message_too_short.
inline std::error_code decode(std::span<const std::byte> in, negotiate_request& m) noexcept {
  if (in.size() < negotiate_request::size) return errc::message_too_short;
  using detail::load_le;
  m.min_version = load_le<std::uint16_t>(in, 0);
  m.max_version = load_le<std::uint16_t>(in, 2);
  m.reserved = load_le<std::uint16_t>(in, 4);
  m.credits_requested = load_le<std::uint16_t>(in, 6);
  m.preferred_send_size = load_le<std::uint32_t>(in, 8);
  m.max_receive_size = load_le<std::uint32_t>(in, 12);
  m.max_fragmented_size = load_le<std::uint32_t>(in, 16);
  return {};
}

/// Writes the 32-byte response into out[0, 32). Errors: buffer_too_small.
inline std::error_code encode(const negotiate_response& m, std::span<std::byte> out) noexcept {
  if (out.size() < negotiate_response::size) return errc::buffer_too_small;
  using detail::store_le;
  store_le<std::uint16_t>(out, 0, m.min_version);
  store_le<std::uint16_t>(out, 2, m.max_version);
  store_le<std::uint16_t>(out, 4, m.negotiated_version);
  store_le<std::uint16_t>(out, 6, m.reserved);
  store_le<std::uint16_t>(out, 8, m.credits_requested);
  store_le<std::uint16_t>(out, 10, m.credits_granted);
  store_le<std::uint32_t>(out, 12, m.status);
  store_le<std::uint32_t>(out, 16, m.max_read_write_size);
  store_le<std::uint32_t>(out, 20, m.preferred_send_size);
  store_le<std::uint32_t>(out, 24, m.max_receive_size);
  store_le<std::uint32_t>(out, 28, m.max_fragmented_size);
  return {};
}

/// Reads a response from the first 32 bytes of `in`. Errors: message_too_short.
inline std::error_code decode(std::span<const std::byte> in, negotiate_response& m) noexcept {
  if (in.size() < negotiate_response::size) return errc::message_too_short;
  using detail::load_le;
  m.min_version = load_le<std::uint16_t>(in, 0);
  m.max_version = load_le<std::uint16_t>(in, 2);
  m.negotiated_version = load_le<std::uint16_t>(in, 4);
  m.reserved = load_le<std::uint16_t>(in, 6);
  m.credits_requested = load_le<std::uint16_t>(in, 8);
  m.credits_granted = load_le<std::uint16_t>(in, 10);
  m.status = load_le<std::uint32_t>(in, 12);
  m.max_read_write_size = load_le<std::uint32_t>(in, 16);
  m.preferred_send_size = load_le<std::uint32_t>(in, 20);
  m.max_receive_size = load_le<std::uint32_t>(in, 24);
  m.max_fragmented_size = load_le<std::uint32_t>(in, 28);
  return {};
}

}  // namespace smbdirect::wire
