// Buffer Descriptor V1 ([MS-SMBD] 2.2.3.1): 16 bytes naming registered memory the peer may
// access by RDMA read or write. Arrays of them travel inside upper-layer messages (SMB2
// READ/WRITE channel info); SMB Direct itself only defines the encoding.
#pragma once

#include <cstdint>
#include <span>
#include <system_error>

#include "smbdirect/error.hpp"
#include "smbdirect/wire/little_endian.hpp"

namespace smbdirect::wire {

/// One registered memory segment. [MS-SMBD] 2.2.3.1
struct buffer_descriptor_v1 {
  static constexpr std::size_t size = 16;  ///< bytes on the wire

  std::uint64_t offset = 0;  ///< remote address (iova) of the first byte
  std::uint32_t token = 0;   ///< rkey / STag
  std::uint32_t length = 0;  ///< bytes

  friend bool operator==(const buffer_descriptor_v1&, const buffer_descriptor_v1&) = default;
};

/// Writes 16 bytes. Errors: buffer_too_small.
inline std::error_code encode(const buffer_descriptor_v1& d, std::span<std::byte> out) noexcept {
  if (out.size() < buffer_descriptor_v1::size) return errc::buffer_too_small;
  detail::store_le<std::uint64_t>(out, 0, d.offset);
  detail::store_le<std::uint32_t>(out, 8, d.token);
  detail::store_le<std::uint32_t>(out, 12, d.length);
  return {};
}

/// Reads 16 bytes. Errors: message_too_short.
inline std::error_code decode(std::span<const std::byte> in, buffer_descriptor_v1& d) noexcept {
  if (in.size() < buffer_descriptor_v1::size) return errc::message_too_short;
  d.offset = detail::load_le<std::uint64_t>(in, 0);
  d.token = detail::load_le<std::uint32_t>(in, 8);
  d.length = detail::load_le<std::uint32_t>(in, 12);
  return {};
}

}  // namespace smbdirect::wire
