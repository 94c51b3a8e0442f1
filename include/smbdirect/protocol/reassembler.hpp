// Fragment reassembly, pure: [MS-SMBD] 3.1.5.8 steps 6, 7 and 9, plus the size check that
// precedes them. It decides where each fragment's payload belongs in the upper-layer message;
// the engine stores the bytes (copied, or left in the receive buffer they arrived in). The
// total size is checked against MaxFragmentedRecvSize on the first fragment, before any
// memory is reserved for the message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <system_error>

#include "smbdirect/error.hpp"
#include "smbdirect/wire/data_transfer.hpp"

namespace smbdirect::protocol {

/// Where one fragment's payload goes.
struct fragment_place {
  bool payload = false;            ///< false: an empty message (credits or keepalive only)
  bool first = false;              ///< first fragment: message_size is the whole message
  bool last = false;               ///< the message is complete with this payload
  std::uint32_t offset = 0;        ///< bytes of the message before this payload
  std::uint32_t message_size = 0;  ///< bytes of the whole message
};

class reassembler {
 public:
  explicit reassembler(std::uint32_t max_fragmented_recv_size = 0) noexcept : max_(max_fragmented_recv_size) {}

  /// Places one validated Data Transfer Message whose payload is `payload_size` bytes.
  /// An empty message (DataLength 0, RemainingDataLength 0) carries only credits or a
  /// keepalive: it never touches reassembly, even mid-sequence (Linux before 6.18 sends such
  /// messages between fragments). Errors: data_out_of_bounds (payload_size is not DataLength),
  /// fragmented_message_too_large, remaining_length_mismatch (a continuation whose
  /// RemainingDataLength is not the previous value minus DataLength), empty_fragment
  /// (DataLength 0 with RemainingDataLength > 0).
  std::error_code on_fragment(const wire::data_transfer_header& h, std::size_t payload_size, fragment_place& place) {
    place = {};
    if (h.data_length == 0) {
      if (h.remaining_data_length != 0) return errc::empty_fragment;
      return {};
    }
    if (payload_size != h.data_length) return errc::data_out_of_bounds;  // not what wire::decode gives
    if (std::uint64_t{h.data_length} + h.remaining_data_length > max_) return errc::fragmented_message_too_large;
    if (!in_progress_) {
      size_ = h.data_length + h.remaining_data_length;  // <= max_, so no overflow
      in_progress_ = true;
      place.first = true;
    } else if (h.data_length > remaining_ || remaining_ - h.data_length != h.remaining_data_length) {
      return errc::remaining_length_mismatch;
    }
    place.payload = true;
    place.message_size = size_;
    place.offset = place.first ? 0 : size_ - remaining_;
    remaining_ = h.remaining_data_length;
    place.last = remaining_ == 0;
    if (place.last) in_progress_ = false;
    return {};
  }

  bool in_progress() const noexcept { return in_progress_; }
  /// Bytes of the current message still expected.
  std::uint32_t remaining() const noexcept { return remaining_; }

 private:
  std::uint32_t max_;
  std::uint32_t size_ = 0;       // bytes of the current message
  std::uint32_t remaining_ = 0;  // of it, still expected
  bool in_progress_ = false;
};

}  // namespace smbdirect::protocol
