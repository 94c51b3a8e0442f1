// MPA (RFC 5044) over TCP: the connection setup frames, with RFC 6581's enhanced connection
// establishment (revision 2), and the framing of FPDUs. Pure: no I/O.
//
// Setup: the initiator sends an MPA Request frame, the responder an MPA Reply frame; both are
// a 16-byte key, a flags byte (M markers, C CRC, R reject), the revision and PD_Length, then
// private data. In revision 2 the private data starts with IRD/ORD and the ready-to-receive
// (RTR) choice; SMB Direct carries nothing else there (its negotiation runs over Sends).
//
// FPDU: ULPDU_LENGTH (2 bytes, big-endian), the ULPDU (one DDP segment), zero padding to a
// multiple of 4 bytes, then the CRC32c of everything before it (all zero when CRC is off).
// Markers are never used.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <system_error>
#include <vector>

#include <isa-l/crc.h>

#include "smbdirect/tcp/ddp_rdmap.hpp"
#include "smbdirect/tcp/error.hpp"

namespace smbdirect::tcp::mpa {

inline constexpr std::size_t key_size = 16;
inline constexpr std::size_t frame_header_size = 20;        ///< key, flags, revision, PD_Length
inline constexpr std::size_t max_private_data = 512;        ///< bytes. RFC 5044 7.1
inline constexpr std::size_t enhanced_data_size = 4;        ///< IRD/ORD word. RFC 6581 9.1
inline constexpr std::uint16_t max_ird_ord = 0x3fff;        ///< 14 bits each. RFC 6581 9.1
inline constexpr std::size_t max_ulpdu = 0xffff;            ///< bytes, ULPDU_LENGTH's range
inline constexpr std::size_t fpdu_overhead = 2 + 3 + 4;     ///< length, worst-case pad, CRC
inline constexpr char request_key[] = "MPA ID Req Frame";
inline constexpr char reply_key[] = "MPA ID Rep Frame";

/// Ready-to-receive messages an enhanced (revision 2) peer may send or accept. RFC 6581 9.1
struct rtr_types {
  bool zero_length_send = false;
  bool zero_length_write = false;
  bool zero_length_read = false;
  bool any() const { return zero_length_send || zero_length_write || zero_length_read; }
};

/// An MPA Request or Reply frame.
struct frame {
  bool reply = false;
  bool markers = false;   ///< M: the sender wants markers in what it receives
  bool crc = false;       ///< C: the sender wants CRC32c (used when either side sets it)
  bool reject = false;    ///< R: the responder refuses the connection (replies only)
  std::uint8_t revision = 2;
  bool enhanced = true;   ///< S: revision 2 private data starts with the IRD/ORD word
  // RFC 6581 enhanced data (present when revision >= 2 and enhanced):
  bool peer_to_peer = true;  ///< A: an RTR message opens the connection
  std::uint16_t ird = 0;  ///< RDMA Read Requests the sender accepts at once
  std::uint16_t ord = 0;  ///< RDMA Read Requests the sender issues at once
  rtr_types rtr;          ///< request: types the initiator can send; reply: the one chosen
  std::vector<std::byte> private_data;  ///< after the enhanced data; unused by SMB Direct
};

// Flags byte (byte 16). RFC 5044 7.1, RFC 6581 9.1
inline constexpr std::uint8_t flag_markers = 0x80, flag_crc = 0x40, flag_reject = 0x20, flag_enhanced = 0x10;
// RFC 6581 9.1 flag bits in the IRD word and in the ORD word (big-endian 16-bit each).
inline constexpr std::uint16_t flag_peer_to_peer = 0x8000;   // IRD word: A
inline constexpr std::uint16_t flag_zero_length = 0x4000;    // IRD word: B (zero-length Send)
inline constexpr std::uint16_t flag_write_rtr = 0x8000;      // ORD word: C
inline constexpr std::uint16_t flag_read_rtr = 0x4000;       // ORD word: D

inline bool has_enhanced_data(const frame& f) { return f.revision >= 2 && f.enhanced; }

/// The frame's bytes (header plus private data).
inline std::vector<std::byte> encode(const frame& f) {
  const std::size_t pd = (has_enhanced_data(f) ? enhanced_data_size : 0) + f.private_data.size();
  std::vector<std::byte> out(frame_header_size + pd);
  std::memcpy(out.data(), f.reply ? reply_key : request_key, key_size);
  out[16] = std::byte((f.markers ? flag_markers : 0) | (f.crc ? flag_crc : 0) | (f.reject ? flag_reject : 0) |
                      (has_enhanced_data(f) ? flag_enhanced : 0));
  out[17] = std::byte(f.revision);
  wire::detail::put16(out.data() + 18, static_cast<std::uint16_t>(pd));
  std::byte* p = out.data() + frame_header_size;
  if (has_enhanced_data(f)) {
    wire::detail::put16(p, static_cast<std::uint16_t>((f.peer_to_peer ? flag_peer_to_peer : 0) |
                                                      (f.rtr.zero_length_send ? flag_zero_length : 0) |
                                                      (f.ird & max_ird_ord)));
    wire::detail::put16(p + 2, static_cast<std::uint16_t>((f.rtr.zero_length_write ? flag_write_rtr : 0) |
                                                          (f.rtr.zero_length_read ? flag_read_rtr : 0) |
                                                          (f.ord & max_ird_ord)));
    p += enhanced_data_size;
  }
  if (!f.private_data.empty()) std::memcpy(p, f.private_data.data(), f.private_data.size());
  return out;
}

/// Decodes the 20-byte header; returns PD_Length through `pd_length`. Errors: mpa_bad_key,
/// mpa_private_data_too_long, mpa_bad_revision (0).
inline std::error_code decode_header(std::span<const std::byte, frame_header_size> h, bool reply, frame& f,
                                     std::size_t& pd_length) {
  if (std::memcmp(h.data(), reply ? reply_key : request_key, key_size) != 0) return iwarp_errc::mpa_bad_key;
  const auto flags = std::to_integer<std::uint8_t>(h[16]);
  f.reply = reply;
  f.markers = flags & flag_markers;
  f.crc = flags & flag_crc;
  f.reject = flags & flag_reject;
  f.enhanced = flags & flag_enhanced;
  f.revision = std::to_integer<std::uint8_t>(h[17]);
  pd_length = wire::detail::get16(h.data() + 18);
  if (pd_length > max_private_data) return iwarp_errc::mpa_private_data_too_long;
  if (f.revision == 0) return iwarp_errc::mpa_bad_revision;
  return {};
}

/// Decodes the private data of a frame whose header decode_header() accepted. Errors:
/// mpa_bad_enhanced_data (revision 2 with fewer than 4 bytes).
inline std::error_code decode_private_data(std::span<const std::byte> pd, frame& f) {
  f.peer_to_peer = false;
  if (has_enhanced_data(f) && !f.reject) {
    if (pd.size() < enhanced_data_size) return iwarp_errc::mpa_bad_enhanced_data;
    const std::uint16_t ird = wire::detail::get16(pd.data()), ord = wire::detail::get16(pd.data() + 2);
    f.peer_to_peer = ird & flag_peer_to_peer;
    f.rtr.zero_length_send = ird & flag_zero_length;
    f.rtr.zero_length_write = ord & flag_write_rtr;
    f.rtr.zero_length_read = ord & flag_read_rtr;
    f.ird = ird & max_ird_ord;
    f.ord = ord & max_ird_ord;
    pd = pd.subspan(enhanced_data_size);
  }
  f.private_data.assign(pd.begin(), pd.end());
  return {};
}

// ------------------------------------------------------------------------- FPDU framing

/// Zero bytes after a ULPDU of `ulpdu_length` bytes, so that the FPDU (2 + ULPDU + pad) is a
/// multiple of 4 before the CRC. RFC 5044 4.1
constexpr std::size_t pad_for(std::size_t ulpdu_length) { return (4 - (2 + ulpdu_length) % 4) % 4; }

/// Bytes of a whole FPDU carrying `ulpdu_length` bytes of ULPDU.
constexpr std::size_t fpdu_size(std::size_t ulpdu_length) { return 2 + ulpdu_length + pad_for(ulpdu_length) + 4; }

/// CRC32c (iSCSI polynomial, RFC 3385) computed in pieces: start(), update() per piece,
/// value() for the field. ISA-L's crc32_iscsi picks the fastest instructions at run time.
class crc32c {
 public:
  void update(const void* data, std::size_t n) {
    state_ = crc32_iscsi(static_cast<unsigned char*>(const_cast<void*>(data)), static_cast<int>(n), state_);
  }
  std::uint32_t value() const { return ~state_; }

 private:
  std::uint32_t state_ = 0xffffffffu;
};

/// Writes the CRC field: the CRC32c value least significant byte first, as iSCSI does
/// (RFC 3385; Linux siw and Wireshark agree).
inline void put_crc(std::byte* out, std::uint32_t crc) {
  for (int i = 0; i < 4; ++i) out[i] = std::byte(crc >> (8 * i));
}
inline std::uint32_t get_crc(const std::byte* in) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(in[i]);
  return v;
}

/// Fills the CRC field of the contiguous FPDU at `fpdu` carrying `ulpdu_length` bytes.
inline void seal(std::byte* fpdu, std::size_t ulpdu_length) {
  crc32c c;
  const std::size_t covered = 2 + ulpdu_length + pad_for(ulpdu_length);
  c.update(fpdu, covered);
  put_crc(fpdu + covered, c.value());
}

/// Whether the CRC field of the contiguous FPDU at `fpdu` matches its bytes.
inline bool crc_matches(const std::byte* fpdu, std::size_t ulpdu_length) {
  crc32c c;
  const std::size_t covered = 2 + ulpdu_length + pad_for(ulpdu_length);
  c.update(fpdu, covered);
  return c.value() == get_crc(fpdu + covered);
}

}  // namespace smbdirect::tcp::mpa
