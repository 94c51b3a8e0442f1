// Fragment reassembly, pure: [MS-SMBD] 3.1.5.8 steps 6, 7 and 9, plus the size check that
// precedes them. The total size is checked against MaxFragmentedRecvSize on the first
// fragment, before any memory is reserved for the message.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <system_error>
#include <vector>

#include "smbdirect/error.hpp"
#include "smbdirect/wire/data_transfer.hpp"

namespace smbdirect::protocol {

class reassembler {
 public:
  explicit reassembler(std::uint32_t max_fragmented_recv_size = 0) noexcept : max_(max_fragmented_recv_size) {}

  /// Feeds one validated Data Transfer Message. On a completed upper-layer message returns
  /// true and moves it into `out` (whose old storage, and size, is recycled for the next message).
  /// An empty message (DataLength 0, RemainingDataLength 0) carries only credits or a
  /// keepalive: it never touches reassembly, even mid-sequence (Linux before 6.18 sends such
  /// messages between fragments). Errors: fragmented_message_too_large,
  /// remaining_length_mismatch (a continuation whose RemainingDataLength is not the previous
  /// value minus DataLength), empty_fragment (DataLength 0 with RemainingDataLength > 0).
  std::error_code on_fragment(const wire::data_transfer_header& h, std::span<const std::byte> payload,
                              std::vector<std::byte>& out, bool& complete) {
    complete = false;
    if (h.data_length == 0) {
      if (h.remaining_data_length != 0) return errc::empty_fragment;
      return {};
    }
    if (payload.size() != h.data_length) return errc::data_out_of_bounds;  // not what wire::decode gives
    if (std::uint64_t{h.data_length} + h.remaining_data_length > max_) return errc::fragmented_message_too_large;
    if (!in_progress_) {
      // Sized once for the whole message. Storage recycled from an earlier message of the same
      // size is overwritten in place: only growth is zero-filled, so each byte is written once.
      buffer_.resize(std::size_t{h.data_length} + h.remaining_data_length);
      filled_ = 0;
      in_progress_ = true;
    } else if (h.data_length > remaining_ || remaining_ - h.data_length != h.remaining_data_length) {
      return errc::remaining_length_mismatch;
    }
    std::memcpy(buffer_.data() + filled_, payload.data(), payload.size());
    filled_ += payload.size();
    remaining_ = h.remaining_data_length;
    if (remaining_ == 0) {
      in_progress_ = false;
      out.swap(buffer_);
      complete = true;
    }
    return {};
  }

  bool in_progress() const noexcept { return in_progress_; }
  /// Bytes of the current message still expected.
  std::uint32_t remaining() const noexcept { return remaining_; }

 private:
  std::uint32_t max_;
  std::uint32_t remaining_ = 0;
  std::size_t filled_ = 0;  // bytes of buffer_ written so far
  bool in_progress_ = false;
  std::vector<std::byte> buffer_;
};

}  // namespace smbdirect::protocol
