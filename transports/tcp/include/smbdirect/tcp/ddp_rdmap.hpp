// DDP (RFC 5041) segment headers and RDMAP (RFC 5040) messages: pure encoders and decoders,
// no I/O. One DDP segment is the ULPDU of one MPA FPDU (mpa.hpp).
//
// Byte 0 of every segment is the DDP control field (T, L, reserved, DV = 1); byte 1 belongs
// to RDMAP (RV = 1, reserved, opcode). Tagged segments (RDMA Write, RDMA Read Response) then
// carry STag and Tagged Offset (14 bytes in all); untagged ones carry RsvdULP (the STag to
// invalidate for Send with Invalidate), Queue Number, MSN and Message Offset (18 bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include "smbdirect/tcp/error.hpp"

namespace smbdirect::tcp::wire {

inline constexpr std::size_t tagged_header_size = 14;    ///< bytes. RFC 5041 4.2
inline constexpr std::size_t untagged_header_size = 18;  ///< bytes. RFC 5041 4.3
inline constexpr std::size_t read_request_size = 28;     ///< bytes after the header. RFC 5040 4.4
inline constexpr std::uint8_t ddp_version = 1;           ///< DV. RFC 5041 4.2
inline constexpr std::uint8_t rdmap_version = 1;         ///< RV. RFC 5040 4.2

/// RDMAP opcodes. RFC 5040 4.2
enum class opcode : std::uint8_t {
  rdma_write = 0,
  read_request = 1,
  read_response = 2,
  send = 3,
  send_with_invalidate = 4,
  send_with_se = 5,
  send_with_se_and_invalidate = 6,
  terminate = 7,
};

/// Untagged queues RDMAP uses. RFC 5040 5.1
enum class queue : std::uint32_t { send = 0, read_request = 1, terminate = 2 };

/// A decoded DDP segment header; `payload` views the bytes after it.
struct segment {
  bool tagged = false;
  bool last = false;
  opcode op = opcode::send;
  std::uint32_t stag = 0;             ///< tagged: STag; untagged: the STag to invalidate
  std::uint64_t tagged_offset = 0;    ///< tagged only
  std::uint32_t queue_number = 0;     ///< untagged only
  std::uint32_t msn = 0;              ///< untagged only: message sequence number, from 1
  std::uint32_t message_offset = 0;   ///< untagged only: bytes
  std::span<const std::byte> payload;
};

namespace detail {
inline void put16(std::byte* p, std::uint16_t v) {
  p[0] = std::byte(v >> 8), p[1] = std::byte(v);
}
inline void put32(std::byte* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::byte(v >> (24 - 8 * i));
}
inline void put64(std::byte* p, std::uint64_t v) {
  put32(p, static_cast<std::uint32_t>(v >> 32)), put32(p + 4, static_cast<std::uint32_t>(v));
}
inline std::uint16_t get16(const std::byte* p) { return static_cast<std::uint16_t>((std::to_integer<unsigned>(p[0]) << 8) | std::to_integer<unsigned>(p[1])); }
inline std::uint32_t get32(const std::byte* p) {
  return (std::uint32_t{get16(p)} << 16) | get16(p + 2);
}
inline std::uint64_t get64(const std::byte* p) { return (std::uint64_t{get32(p)} << 32) | get32(p + 4); }
inline std::byte control(bool tagged, bool last) {
  return std::byte((tagged ? 0x80 : 0) | (last ? 0x40 : 0) | ddp_version);
}
inline std::byte rdmap_control(opcode op) { return std::byte((rdmap_version << 6) | static_cast<std::uint8_t>(op)); }
}  // namespace detail

/// Writes a tagged header into `out` (>= 14 bytes); returns 14.
inline std::size_t encode_tagged(std::byte* out, opcode op, bool last, std::uint32_t stag, std::uint64_t tagged_offset) {
  out[0] = detail::control(true, last);
  out[1] = detail::rdmap_control(op);
  detail::put32(out + 2, stag);
  detail::put64(out + 6, tagged_offset);
  return tagged_header_size;
}

/// Writes an untagged header into `out` (>= 18 bytes); returns 18.
inline std::size_t encode_untagged(std::byte* out, opcode op, bool last, queue qn, std::uint32_t msn,
                                   std::uint32_t message_offset, std::uint32_t invalidate_stag = 0) {
  out[0] = detail::control(false, last);
  out[1] = detail::rdmap_control(op);
  detail::put32(out + 2, invalidate_stag);
  detail::put32(out + 6, static_cast<std::uint32_t>(qn));
  detail::put32(out + 10, msn);
  detail::put32(out + 14, message_offset);
  return untagged_header_size;
}

/// Decodes the DDP/RDMAP header of one ULPDU. Errors: ulpdu_too_short, bad_ddp_version,
/// bad_rdmap_version, bad_opcode (reserved opcode, or one used with the wrong DDP model).
inline std::error_code decode_segment(std::span<const std::byte> ulpdu, segment& s) {
  if (ulpdu.size() < tagged_header_size) return iwarp_errc::ulpdu_too_short;
  const auto c = std::to_integer<std::uint8_t>(ulpdu[0]);
  const auto r = std::to_integer<std::uint8_t>(ulpdu[1]);
  if ((c & 3) != ddp_version) return iwarp_errc::bad_ddp_version;
  if ((r >> 6) != rdmap_version) return iwarp_errc::bad_rdmap_version;
  if ((r & 0x0f) > static_cast<std::uint8_t>(opcode::terminate)) return iwarp_errc::bad_opcode;
  s.tagged = (c & 0x80) != 0;
  s.last = (c & 0x40) != 0;
  s.op = static_cast<opcode>(r & 0x0f);
  const bool tagged_op = s.op == opcode::rdma_write || s.op == opcode::read_response;
  if (s.tagged != tagged_op) return iwarp_errc::bad_opcode;
  if (s.tagged) {
    s.stag = detail::get32(ulpdu.data() + 2);
    s.tagged_offset = detail::get64(ulpdu.data() + 6);
    s.payload = ulpdu.subspan(tagged_header_size);
    return {};
  }
  if (ulpdu.size() < untagged_header_size) return iwarp_errc::ulpdu_too_short;
  s.stag = detail::get32(ulpdu.data() + 2);
  s.queue_number = detail::get32(ulpdu.data() + 6);
  s.msn = detail::get32(ulpdu.data() + 10);
  s.message_offset = detail::get32(ulpdu.data() + 14);
  s.payload = ulpdu.subspan(untagged_header_size);
  return {};
}

/// RDMA Read Request message (queue 1). RFC 5040 4.4
struct read_request {
  std::uint32_t sink_stag = 0;
  std::uint64_t sink_tagged_offset = 0;
  std::uint32_t size = 0;  ///< RDMA Read Message Size, bytes
  std::uint32_t source_stag = 0;
  std::uint64_t source_tagged_offset = 0;
};

inline void encode(const read_request& r, std::byte* out) {
  detail::put32(out, r.sink_stag);
  detail::put64(out + 4, r.sink_tagged_offset);
  detail::put32(out + 12, r.size);
  detail::put32(out + 16, r.source_stag);
  detail::put64(out + 20, r.source_tagged_offset);
}

/// Errors: bad_read_request when `payload` is not exactly 28 bytes.
inline std::error_code decode(std::span<const std::byte> payload, read_request& r) {
  if (payload.size() != read_request_size) return iwarp_errc::bad_read_request;
  r.sink_stag = detail::get32(payload.data());
  r.sink_tagged_offset = detail::get64(payload.data() + 4);
  r.size = detail::get32(payload.data() + 12);
  r.source_stag = detail::get32(payload.data() + 16);
  r.source_tagged_offset = detail::get64(payload.data() + 20);
  return {};
}

}  // namespace smbdirect::tcp::wire
