// Test support: a single-threaded io_context driven on a virtual clock, a scripted raw peer
// that speaks bytes directly on a loopback endpoint, and message builders.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <system_error>
#include <vector>

#include <asio/io_context.hpp>

#include "smbdirect/connection.hpp"
#include "smbdirect/loopback.hpp"
#include "smbdirect/wire/data_transfer.hpp"
#include "smbdirect/wire/negotiate.hpp"

namespace smbdirect::test {

using bytes = std::vector<std::byte>;
using loopback_connection = connection<loopback::endpoint>;

/// Runs handlers until nothing is ready, then jumps the virtual clock to the next timer,
/// until `done()` holds. Returns false if nothing can make progress (a hang) or `limit` of
/// virtual time passes first. Never sleeps.
struct driver {
  virtual_clock clock;  // outlives io: coroutine frames destroyed with io may hold timers on it
  asio::io_context io;

  /// With `max_handlers`, a livelock (more than that many handlers without time moving) also
  /// returns false instead of spinning.
  bool run_until(const std::function<bool()>& done, std::chrono::seconds limit = std::chrono::seconds(3600),
                 std::optional<std::size_t> max_handlers = std::nullopt) {
    const time_point end = clock.now() + limit;
    for (;;) {
      if (!max_handlers) settle();
      else if (!settle_within(*max_handlers)) return false;
      if (done()) return true;
      if (clock.next_deadline() > end || !clock.advance_to_next()) return done();
    }
  }
  /// Runs until idle without moving time.
  void settle() {
    io.restart();
    while (io.poll() > 0) {
    }
  }
  /// Like settle(), but runs at most `max_handlers` handlers; false if work was still ready
  /// then (a livelock: handlers that keep making more work without time moving).
  bool settle_within(std::size_t max_handlers) {
    io.restart();
    for (std::size_t i = 0; i < max_handlers; ++i)
      if (io.poll_one() == 0) return true;
    return false;
  }
  void advance(std::chrono::milliseconds d) {
    clock.advance(d);
    settle();
  }
};

/// A peer that writes raw bytes: it can send what a correct implementation never would.
class raw_peer {
 public:
  explicit raw_peer(loopback::endpoint ep) : ep_(std::move(ep)) {}

  void post_receives(std::size_t n, std::size_t size = 65536) {
    for (std::size_t i = 0; i < n; ++i) {
      buffers_.emplace_back(size);
      (void)ep_.post_receive(buffers_.size() - 1, buffers_.back());
    }
  }

  /// Posts a SEND of `b` (kept alive here). Returns the post error, if any.
  std::error_code send(bytes b) {
    sent_.push_back(std::move(b));
    const asio::const_buffer g(sent_.back().data(), sent_.back().size());
    return ep_.post_send(1000000 + sent_.size(), std::span(&g, 1));
  }

  /// Collects completions: successful receives into `received`, every status into `statuses`.
  void drain() {
    std::array<work_completion, 64> wcs;
    while (std::size_t n = ep_.try_poll(wcs)) {
      for (std::size_t i = 0; i < n; ++i) {
        const auto& wc = wcs[i];
        statuses.push_back(wc.status);
        if (wc.opcode == work_opcode::receive && !wc.status) {
          const auto& buf = buffers_[wc.wr_id];
          received.emplace_back(buf.begin(), buf.begin() + wc.byte_len);
        }
      }
    }
  }

  loopback::endpoint& endpoint() { return ep_; }

  std::vector<bytes> received;
  std::vector<std::error_code> statuses;

 private:
  loopback::endpoint ep_;
  std::deque<bytes> buffers_;
  std::deque<bytes> sent_;
};

inline bytes encode_request(const wire::negotiate_request& r) {
  bytes b(wire::negotiate_request::size);
  (void)wire::encode(r, b);
  return b;
}

inline bytes encode_response(const wire::negotiate_response& r) {
  bytes b(wire::negotiate_response::size);
  (void)wire::encode(r, b);
  return b;
}

/// A Data Transfer Message: header fields as given, payload at DataOffset (zero padding).
inline bytes encode_data(const wire::data_transfer_header& h, const bytes& payload = {}, std::size_t total_size = 0) {
  const std::size_t at = h.data_offset ? h.data_offset : wire::header_size_for(static_cast<std::uint32_t>(payload.size()));
  bytes b(std::max(total_size, at + payload.size()));
  (void)wire::encode(h, b);
  std::copy(payload.begin(), payload.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
  return b;
}

/// A valid negotiate response for a request built from `client` parameters.
inline wire::negotiate_response good_response(std::uint16_t credits_granted = 255, std::uint16_t credits_requested = 255) {
  wire::negotiate_response r;
  r.credits_requested = credits_requested;
  r.credits_granted = credits_granted;
  r.max_read_write_size = 1048576;
  r.preferred_send_size = 1364;
  r.max_receive_size = 1364;
  r.max_fragmented_size = 1048576;
  return r;
}

inline bytes pattern(std::size_t n, unsigned seed) {
  bytes b(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& v : b) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    v = static_cast<std::byte>(x);
  }
  return b;
}

}  // namespace smbdirect::test
