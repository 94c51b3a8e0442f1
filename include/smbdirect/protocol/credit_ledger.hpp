// Credit accounting for one connection, pure: [MS-SMBD] 3.1.5.1 (spending send credits,
// the last-credit rule), 3.1.5.8 steps 1, 3, 5 (receive side) and 3.1.5.9 (posting receives
// and granting them).
//
// The spec's ReceiveCredits counts posted receives, and its grants are "newly posted". We keep
// two counters instead: receives posted at the transport, and credits the peer holds (granted
// and not yet used). Posted-but-ungranted receives are granted on our next send; this is how
// the initiator's first message grants the receives it posted during negotiation (4.1).
#pragma once

#include <algorithm>
#include <cstdint>
#include <system_error>

#include "smbdirect/error.hpp"

namespace smbdirect::protocol {

class credit_ledger {
 public:
  credit_ledger() = default;

  /// receive_credit_max: receives we may post at most; receive_credit_target: the peer's
  /// CreditsRequested (capped at max); send_credit_target: what we ask for; send_credits: the
  /// initial grant from negotiation (0 on the passive side).
  credit_ledger(std::uint16_t receive_credit_max, std::uint16_t receive_credit_target,
                std::uint16_t send_credit_target, std::uint16_t send_credits) noexcept
      : receive_credit_max_(receive_credit_max),
        receive_credit_target_(std::min(receive_credit_target, receive_credit_max)),
        send_credit_target_(send_credit_target),
        send_credits_(send_credits) {}

  // --- Receive side ---

  /// Receives to post now to reach the target (3.1.5.9 c). The caller posts them and calls
  /// on_posted for each success.
  std::uint16_t receives_wanted() const noexcept {
    return posted_ >= receive_credit_target_ ? 0 : static_cast<std::uint16_t>(receive_credit_target_ - posted_);
  }
  /// When a grant is due but nothing is ungranted (the peer holds 0 credits, or we are on our
  /// last send credit): true if one more receive may be posted beyond the target (3.1.5.9 b).
  bool needs_extra_receive(bool sending_message) const noexcept {
    if (ungranted() > 0 || posted_ >= receive_credit_max_) return false;
    return peer_credits_ == 0 || (send_credits_ == 1 && sending_message);
  }
  void on_posted() noexcept { ++posted_; }

  /// A message arrived (3.1.5.8 steps 1, 3, 5). Errors: peer_exceeded_credits (the peer held no
  /// credit), credits_requested_zero, credits_overflow (SendCredits would pass 65535).
  std::error_code on_message_received(std::uint16_t credits_requested, std::uint16_t credits_granted) noexcept {
    if (peer_credits_ == 0 || posted_ == 0) return errc::peer_exceeded_credits;
    if (credits_requested == 0) return errc::credits_requested_zero;
    if (std::uint32_t{send_credits_} + credits_granted > 0xffff) return errc::credits_overflow;
    --peer_credits_;
    --posted_;
    receive_credit_target_ = std::min(credits_requested, receive_credit_max_);
    send_credits_ = static_cast<std::uint16_t>(send_credits_ + credits_granted);
    return {};
  }

  /// The negotiate response granted the peer all `n` receives posted so far (absolute count).
  void on_negotiate_grant(std::uint16_t n) noexcept { peer_credits_ = n; }

  // --- Send side ---

  /// Whether a message may go out now under 3.1.5.1: a send credit exists, and the last
  /// credit is kept for a message that grants credits.
  bool can_send() const noexcept {
    if (send_credits_ == 0) return false;
    return send_credits_ > 1 || ungranted() > 0;
  }

  /// Spends one send credit for an outgoing message and returns its CreditsGranted: every
  /// posted-but-ungranted receive. Precondition: can_send().
  std::uint16_t on_send() noexcept {
    --send_credits_;
    const std::uint16_t grant = ungranted();
    peer_credits_ = static_cast<std::uint16_t>(peer_credits_ + grant);
    return grant;
  }

  /// A credit-only message is worth sending: the peer has used half of its target or all of
  /// its credits, and we have receives to grant (3.1.5.8 step 2, without a grant per message).
  bool grant_due() const noexcept {
    return ungranted() > 0 && (peer_credits_ == 0 || peer_credits_ <= receive_credit_target_ / 2);
  }

  std::uint16_t send_credits() const noexcept { return send_credits_; }
  std::uint16_t send_credit_target() const noexcept { return send_credit_target_; }
  std::uint16_t peer_credits() const noexcept { return peer_credits_; }
  std::uint16_t posted() const noexcept { return posted_; }
  std::uint16_t receive_credit_target() const noexcept { return receive_credit_target_; }
  std::uint16_t ungranted() const noexcept { return static_cast<std::uint16_t>(posted_ - peer_credits_); }

 private:
  std::uint16_t receive_credit_max_ = 0;
  std::uint16_t receive_credit_target_ = 0;
  std::uint16_t send_credit_target_ = 0;
  std::uint16_t send_credits_ = 0;  // SendCredits
  std::uint16_t posted_ = 0;        // receives posted at the transport
  std::uint16_t peer_credits_ = 0;  // credits the peer holds; <= posted_
};

}  // namespace smbdirect::protocol
