// Fragmentation of one upper-layer message, pure: [MS-SMBD] 3.1.5.4. Every fragment but the
// last carries MaxSendSize - 24 payload bytes at DataOffset 24; RemainingDataLength counts the
// bytes after this fragment.
#pragma once

#include <cstdint>
#include <system_error>

#include "smbdirect/error.hpp"
#include "smbdirect/wire/data_transfer.hpp"

namespace smbdirect::protocol {

struct fragment {
  std::uint32_t offset = 0;     ///< first payload byte, within the upper-layer message
  std::uint32_t length = 0;     ///< DataLength
  std::uint32_t remaining = 0;  ///< RemainingDataLength
};

class fragmenter {
 public:
  /// Errors: message_too_large (total > MaxFragmentedSendSize, 3.1.4.2), empty_message (0
  /// bytes: on the wire it would be a credit-only message, which the peer does not deliver),
  /// invalid_argument (max_send_size leaves no room for payload).
  static std::error_code check(std::size_t total, std::uint32_t max_send_size,
                               std::uint32_t max_fragmented_send_size) noexcept {
    if (total == 0) return errc::empty_message;
    if (total > max_fragmented_send_size) return errc::message_too_large;
    if (max_send_size <= wire::data_transfer_header::payload_offset) return errc::invalid_argument;
    return {};
  }

  fragmenter(std::uint32_t total, std::uint32_t max_send_size) noexcept
      : total_(total), per_fragment_(max_send_size - static_cast<std::uint32_t>(wire::data_transfer_header::payload_offset)) {}

  /// Number of messages the upper-layer message takes; total > 0.
  std::uint32_t count() const noexcept { return (total_ + per_fragment_ - 1) / per_fragment_; }

  /// The i-th fragment, 0 <= i < count().
  fragment at(std::uint32_t i) const noexcept {
    fragment f;
    f.offset = i * per_fragment_;
    f.length = total_ - f.offset < per_fragment_ ? total_ - f.offset : per_fragment_;
    f.remaining = total_ - f.offset - f.length;
    return f;
  }

 private:
  std::uint32_t total_;
  std::uint32_t per_fragment_;
};

}  // namespace smbdirect::protocol
