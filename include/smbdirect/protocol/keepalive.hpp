// Idle connection timer and keepalive state, pure: [MS-SMBD] 3.1.2.2, 3.1.5.1 step 6,
// 3.1.5.5, 3.1.6.2. Time is an argument; the caller sleeps until next_deadline().
#pragma once

#include <chrono>

namespace smbdirect::protocol {

class keepalive {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;

  /// KeepaliveRequested of 3.1.1.1.
  enum class state { none, pending, sent };
  enum class action { nothing, send_keepalive, terminate };

  keepalive() = default;
  /// interval 0 disables keepalives; response_timeout bounds the wait for a reply.
  keepalive(duration interval, duration response_timeout, time_point now) noexcept
      : interval_(interval), response_timeout_(response_timeout), deadline_(now + interval) {}

  /// Any message received (3.1.5.5): the peer is alive.
  void on_receive(time_point now) noexcept {
    state_ = state::none;
    deadline_ = now + interval_;
  }

  /// Called when `now` reaches next_deadline() (3.1.6.2): first expiry asks for a keepalive
  /// (state pending); expiry while a keepalive is pending or sent means no reply: terminate.
  action on_timer(time_point now) noexcept {
    if (!enabled() || now < deadline_) return action::nothing;
    if (state_ != state::none) return action::terminate;
    state_ = state::pending;
    deadline_ = now + response_timeout_;
    return action::send_keepalive;
  }

  /// An outgoing message is being built: true if it must carry SMB_DIRECT_RESPONSE_REQUESTED
  /// (3.1.5.1 step 6). The response deadline counts from this send.
  bool take_response_requested(time_point now) noexcept {
    if (state_ != state::pending) return false;
    state_ = state::sent;
    deadline_ = now + response_timeout_;
    return true;
  }

  bool enabled() const noexcept { return interval_.count() > 0; }
  time_point next_deadline() const noexcept { return enabled() ? deadline_ : time_point::max(); }
  state current() const noexcept { return state_; }

 private:
  duration interval_{};
  duration response_timeout_{};
  time_point deadline_{};
  state state_ = state::none;
};

}  // namespace smbdirect::protocol
