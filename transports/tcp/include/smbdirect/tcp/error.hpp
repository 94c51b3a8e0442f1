// Errors of the TCP emulation transport: MPA connection setup failures, and iWARP protocol
// violations detected in what the peer sent (each also sent to the peer in a Terminate).
//
// Failures that have a verbs equivalent keep using smbdirect::errc so that the engine and
// users see the same error on every transport: no receive posted (receiver_not_ready), a
// message longer than the posted receive (local_length_error / remote_invalid_request), a
// Terminate reporting a bad STag, bounds or rights (remote_access_error). Everything here is
// equivalent to smbdirect::condition::transport_failure.
#pragma once

#include <string>
#include <system_error>

#include "smbdirect/error.hpp"

namespace smbdirect::tcp {

/// iWARP and MPA errors. Values are stable; 0 is never used.
enum class iwarp_errc {
  // --- MPA connection setup (RFC 5044 7.1, RFC 6581); the connection attempt fails. ---
  mpa_bad_key = 1,             ///< The first 16 bytes are not "MPA ID Req Frame" / "MPA ID Rep Frame".
  mpa_markers_requested,       ///< The peer asked for MPA markers (M flag); we never use markers.
  mpa_rejected,                ///< The responder set the R (reject) flag.
  mpa_bad_revision,            ///< MPA revision 0, or a reply revision above the request's.
  mpa_private_data_too_long,   ///< PD_Length above 512 bytes.
  mpa_bad_enhanced_data,       ///< Revision 2 without the 4-byte IRD/ORD header, or no peer-to-peer flag.
  mpa_no_common_rtr,           ///< The peers support no common ready-to-receive (RTR) message.
  mpa_bad_rtr,                 ///< The first FPDU after a revision 2 reply is not the agreed RTR.
  mpa_handshake_timeout,       ///< No complete MPA Request/Reply (or RTR) within options::handshake_timeout.
  // --- The peer broke MPA framing (RFC 5044 4); we send a Terminate and close. ---
  fpdu_truncated,              ///< The TCP stream ended inside an FPDU.
  crc_mismatch,                ///< An FPDU's CRC32c does not match its bytes.
  ulpdu_too_short,             ///< ULPDU_LENGTH is shorter than the DDP header it must hold.
  // --- The peer broke DDP (RFC 5041) or RDMAP (RFC 5040); we send a Terminate and close. ---
  bad_ddp_version,             ///< DDP version (DV) is not 1.
  bad_rdmap_version,           ///< RDMAP version (RV) is not 1.
  bad_opcode,                  ///< An RDMAP opcode that is reserved, or on the wrong queue or DDP model.
  bad_queue_number,            ///< An untagged segment for a queue other than 0, 1 or 2.
  bad_msn,                     ///< An untagged segment's MSN is not the next one expected on its queue.
  bad_message_offset,          ///< An untagged segment's MO does not continue the message in progress.
  invalid_stag,                ///< A tagged segment or RDMA Read Request names an STag that is not valid here.
  base_or_bounds_violation,    ///< A tagged access falls outside the region of its STag.
  access_rights_violation,     ///< The region does not grant the right the access needs.
  read_response_unexpected,    ///< An RDMA Read Response that matches no outstanding RDMA Read Request.
  ird_exceeded,                ///< The peer has more RDMA Read Requests outstanding than our IRD.
  bad_read_request,            ///< An RDMA Read Request message of the wrong length or with a size above 2^31.
  bad_invalidate,              ///< A Send with Invalidate names an STag that cannot be invalidated.
  region_released_during_read, ///< A region was deregistered or invalidated while an RDMA Read Response was sending from it.
  // --- The peer reported an error it found in what we sent. ---
  terminated_by_peer,          ///< The peer sent a Terminate message (other than the mapped cases).
};

namespace detail {

class iwarp_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "smbdirect.iwarp"; }
  std::string message(int ev) const override {
    switch (static_cast<iwarp_errc>(ev)) {
      case iwarp_errc::mpa_bad_key: return "MPA: not an MPA Request/Reply frame (bad key)";
      case iwarp_errc::mpa_markers_requested: return "MPA: peer requested markers, which are not supported";
      case iwarp_errc::mpa_rejected: return "MPA: connection rejected by the responder";
      case iwarp_errc::mpa_bad_revision: return "MPA: unsupported revision";
      case iwarp_errc::mpa_private_data_too_long: return "MPA: private data longer than 512 bytes";
      case iwarp_errc::mpa_bad_enhanced_data: return "MPA: bad RFC 6581 IRD/ORD private data";
      case iwarp_errc::mpa_no_common_rtr: return "MPA: no common ready-to-receive message type";
      case iwarp_errc::mpa_bad_rtr: return "MPA: first FPDU is not the agreed ready-to-receive message";
      case iwarp_errc::mpa_handshake_timeout: return "MPA: connection setup timed out";
      case iwarp_errc::fpdu_truncated: return "MPA: connection closed inside an FPDU";
      case iwarp_errc::crc_mismatch: return "MPA: FPDU CRC32c mismatch";
      case iwarp_errc::ulpdu_too_short: return "MPA: ULPDU too short for its DDP header";
      case iwarp_errc::bad_ddp_version: return "DDP: unsupported version";
      case iwarp_errc::bad_rdmap_version: return "RDMAP: unsupported version";
      case iwarp_errc::bad_opcode: return "RDMAP: unexpected opcode";
      case iwarp_errc::bad_queue_number: return "DDP: invalid queue number";
      case iwarp_errc::bad_msn: return "DDP: invalid message sequence number";
      case iwarp_errc::bad_message_offset: return "DDP: invalid message offset";
      case iwarp_errc::invalid_stag: return "DDP: invalid STag";
      case iwarp_errc::base_or_bounds_violation: return "DDP: access outside the STag's region";
      case iwarp_errc::access_rights_violation: return "RDMAP: access right not granted by the STag";
      case iwarp_errc::read_response_unexpected: return "RDMAP: RDMA Read Response without a matching request";
      case iwarp_errc::ird_exceeded: return "RDMAP: peer exceeded our IRD (outstanding RDMA reads)";
      case iwarp_errc::bad_read_request: return "RDMAP: malformed RDMA Read Request";
      case iwarp_errc::bad_invalidate: return "RDMAP: Send with Invalidate of an STag that cannot be invalidated";
      case iwarp_errc::region_released_during_read: return "a region was released while an RDMA Read Response was sending from it";
      case iwarp_errc::terminated_by_peer: return "RDMAP: the peer terminated the connection";
    }
    return "unknown iWARP error";
  }
  bool equivalent(int, const std::error_condition& cond) const noexcept override {
    return cond == make_error_condition(condition::transport_failure);
  }
};

}  // namespace detail

inline const std::error_category& iwarp_category() noexcept {
  static const detail::iwarp_category_impl instance;
  return instance;
}

inline std::error_code make_error_code(iwarp_errc e) noexcept { return {static_cast<int>(e), iwarp_category()}; }

}  // namespace smbdirect::tcp

template <>
struct std::is_error_code_enum<smbdirect::tcp::iwarp_errc> : std::true_type {};
