// smbdirect::received_message: an upper-layer message received in place, its bytes left in
// the receive buffers they arrived in (no copy), or copied when lending was not possible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include <asio/buffer.hpp>

namespace smbdirect {

namespace detail {
/// What takes lent receive buffers back: the connection's engine.
class receive_lender {
 public:
  /// Returns receive buffers (by slot index) for reuse. Runs on the connection's executor.
  virtual void give_back(std::span<const std::uint16_t> slots) noexcept = 0;

 protected:
  ~receive_lender() = default;
};
template <class Transport>
class engine;
}  // namespace detail

/// A whole upper-layer message from connection::async_receive(received_message&, token).
///
/// A *lent* message is the payload of each Data Transfer Message where the transport placed
/// it: one piece per fragment, in order ([MS-SMBD] 3.1.5.8), read with no copy. While it is
/// held, its receive buffers are out of use (parameters::lent_receive_buffers bounds how many
/// may be); release() or destruction gives them back. A message that could not be lent (the
/// budget was used up, or it is 0) arrives copied, as a single piece; the API is the same.
///
/// Reuse one object for successive receives: its storage is recycled (no allocation per
/// message in steady state). Receiving into it releases what it held first. Like every
/// connection call, release and destruction must run on the connection's executor. A lent
/// message may outlive its connection object: it keeps the connection's engine and transport
/// (ended, but not yet freed) alive until released, so release it before the io_context
/// it runs on is destroyed.
class received_message {
 public:
  received_message() = default;
  received_message(received_message&& o) noexcept { swap(o); }
  received_message& operator=(received_message&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  ~received_message() { release(); }

  /// Bytes of the whole message.
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  /// True when the bytes are in lent receive buffers (zero-copy), false when copied.
  bool lent() const noexcept { return !slots_.empty(); }
  /// The message as a ConstBufferSequence, in order (one piece per fragment when lent).
  std::span<const asio::const_buffer> buffers() const noexcept { return pieces_; }

  /// Gives the receive buffers back to the connection and empties the message. Idempotent.
  void release() noexcept {
    if (lender_ && !slots_.empty()) lender_->give_back(slots_);
    lender_.reset();
    slots_.clear();
    pieces_.clear();
    size_ = 0;
  }

 private:
  template <class Transport>
  friend class detail::engine;

  void swap(received_message& o) noexcept {
    bytes_.swap(o.bytes_);
    pieces_.swap(o.pieces_);
    slots_.swap(o.slots_);
    std::swap(size_, o.size_);
    lender_.swap(o.lender_);
  }

  std::vector<std::byte> bytes_;            // a copied message's bytes
  std::vector<asio::const_buffer> pieces_;  // the message, in order
  std::vector<std::uint16_t> slots_;        // a lent message: the receive buffer of each piece
  std::size_t size_ = 0;
  std::shared_ptr<detail::receive_lender> lender_;
};

}  // namespace smbdirect
