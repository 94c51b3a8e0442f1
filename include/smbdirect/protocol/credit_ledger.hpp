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
  /// Receives to post beyond the target before a send (`about_to_send`; at most one past
  /// ReceiveCreditMax, see posted_limit()). 3.1.5.9: with no receive posted, one. Before a send
  /// that spends our last send credit (SendCredits = 1): enough that the message grants at
  /// least 2. It must grant one (3.1.5.1); the second lets the peer answer a peer left without
  /// credits and still hold one, so that two ends with few credits do not trade credit-only
  /// messages forever.
  std::uint16_t extra_receives_wanted(bool about_to_send) const noexcept {
    if (!about_to_send || posted_ >= posted_limit()) return 0;
    const auto room = static_cast<std::uint16_t>(posted_limit() - posted_);
    if (posted_ == 0) return 1;
    if (send_credits_ == 1 && ungranted() < 2) return std::min<std::uint16_t>(2 - ungranted(), room);
    return 0;
  }
  /// Most receives ever posted: ReceiveCreditMax, plus one that 3.1.5.9 obliges us to post
  /// ("MUST ... post at least one receive") when our last send credit must grant.
  std::uint16_t posted_limit() const noexcept {
    return receive_credit_max_ == 0xffff ? receive_credit_max_ : static_cast<std::uint16_t>(receive_credit_max_ + 1);
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

  /// A credit-only message is worth sending (3.1.5.8 step 2, without a grant per message): we
  /// have receives to grant, and either the peer holds no credit (it cannot send at all), or
  /// it holds at most half its target (at least 1) while we hold 3 or more send credits. The
  /// second case never spends our last two credits, so the peer is never left answering a
  /// credit-only message with one of its own: two ends cannot trade them forever.
  bool grant_due() const noexcept {
    if (ungranted() == 0) return false;
    if (peer_credits_ == 0) return true;
    return peer_credits_ <= std::max<std::uint16_t>(1, receive_credit_target_ / 2) && send_credits_ >= 3;
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
