// Data Transfer Message header ([MS-SMBD] 2.2.3): 20 bytes without payload, 24 with
// (the 4-byte Padding puts the payload at the 8-aligned DataOffset 24, 3.1.5.4).
#pragma once

#include <cstdint>
#include <span>
#include <system_error>

#include "smbdirect/error.hpp"
#include "smbdirect/wire/little_endian.hpp"

namespace smbdirect::wire {

/// Flags bit: the receiver must answer promptly (keepalive). [MS-SMBD] 2.2.3
inline constexpr std::uint16_t smb_direct_response_requested = 0x0001;

/// Data Transfer Message header fields. [MS-SMBD] 2.2.3
struct data_transfer_header {
  static constexpr std::size_t min_size = 20;     ///< bytes of a message with no payload
  static constexpr std::size_t payload_offset = 24;  ///< DataOffset we send, and the header size with payload

  std::uint16_t credits_requested = 0;
  std::uint16_t credits_granted = 0;
  std::uint16_t flags = 0;
  std::uint16_t reserved = 0;
  std::uint32_t remaining_data_length = 0;  ///< bytes of this upper-layer message in later fragments
  std::uint32_t data_offset = 0;            ///< bytes from message start to payload; 0 without payload
  std::uint32_t data_length = 0;            ///< payload bytes in this message

  friend bool operator==(const data_transfer_header&, const data_transfer_header&) = default;
};

/// A decoded message: header plus a view of its payload inside the received bytes.
struct data_transfer_message {
  data_transfer_header header;
  std::span<const std::byte> payload;
};

/// Size of the header we emit for a payload of `data_length` bytes: 20 or 24.
constexpr std::size_t header_size_for(std::uint32_t data_length) noexcept {
  return data_length == 0 ? data_transfer_header::min_size : data_transfer_header::payload_offset;
}

/// Writes the header into `out`: 20 bytes if h.data_length == 0, else 24 (Padding zeroed).
/// The caller sets data_offset (0 or 24). Errors: buffer_too_small.
inline std::error_code encode(const data_transfer_header& h, std::span<std::byte> out) noexcept {
  const std::size_t n = header_size_for(h.data_length);
  if (out.size() < n) return errc::buffer_too_small;
  using detail::store_le;
  store_le<std::uint16_t>(out, 0, h.credits_requested);
  store_le<std::uint16_t>(out, 2, h.credits_granted);
  store_le<std::uint16_t>(out, 4, h.flags);
  store_le<std::uint16_t>(out, 6, h.reserved);
  store_le<std::uint32_t>(out, 8, h.remaining_data_length);
  store_le<std::uint32_t>(out, 12, h.data_offset);
  store_le<std::uint32_t>(out, 16, h.data_length);
  if (n == data_transfer_header::payload_offset) store_le<std::uint32_t>(out, 20, 0);
  return {};
}

/// Decodes a received message (`in` is exactly the bytes the receive completion reported)
/// with the structural checks of [MS-SMBD] 3.1.5.8, in this order:
/// message_too_short (< 20 bytes), data_offset_misaligned (DataOffset % 8 != 0),
/// data_offset_in_header (DataLength > 0 and DataOffset < 24),
/// data_out_of_bounds (DataOffset + DataLength > bytes received, computed without overflow).
/// Credit and reassembly checks follow (protocol/credit_ledger.hpp, protocol/reassembler.hpp).
inline std::error_code decode(std::span<const std::byte> in, data_transfer_message& m) noexcept {
  if (in.size() < data_transfer_header::min_size) return errc::message_too_short;
  using detail::load_le;
  auto& h = m.header;
  h.credits_requested = load_le<std::uint16_t>(in, 0);
  h.credits_granted = load_le<std::uint16_t>(in, 2);
  h.flags = load_le<std::uint16_t>(in, 4);
  h.reserved = load_le<std::uint16_t>(in, 6);
  h.remaining_data_length = load_le<std::uint32_t>(in, 8);
  h.data_offset = load_le<std::uint32_t>(in, 12);
  h.data_length = load_le<std::uint32_t>(in, 16);
  if (h.data_offset % 8 != 0) return errc::data_offset_misaligned;
  if (h.data_length > 0 && h.data_offset < data_transfer_header::payload_offset) return errc::data_offset_in_header;
  if (std::uint64_t{h.data_offset} + h.data_length > in.size()) return errc::data_out_of_bounds;
  m.payload = h.data_length == 0 ? std::span<const std::byte>{} : in.subspan(h.data_offset, h.data_length);
  return {};
}

}  // namespace smbdirect::wire
