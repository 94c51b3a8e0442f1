// One upper-layer message being reassembled or waiting to be read. Its payload is either
// copied into `bytes` or left in the receive buffers it arrived in ("lent": one piece per
// fragment, in order). The engine decides which and owns the receive buffers; this only
// keeps the pieces. Its vectors are recycled from message to message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <asio/buffer.hpp>

namespace smbdirect::detail {

struct inbound_message {
  std::vector<std::byte> bytes;             // copied: size bytes
  std::vector<asio::const_buffer> pieces;   // lent: the payload in order
  std::vector<std::uint16_t> slots;         // lent: the receive buffer holding each piece
  std::size_t size = 0;                     // bytes of the whole message
  bool lent = false;

  /// Starts a message of `message_size` bytes. A copied one is sized now, once: storage
  /// recycled from a message of the same size is overwritten in place (only growth is
  /// zero-filled). May throw std::bad_alloc.
  void start(std::size_t message_size, bool lend) {
    size = message_size;
    lent = lend;
    pieces.clear();
    slots.clear();
    if (!lend) bytes.resize(message_size);
  }

  /// Copies a payload to `offset` bytes into a copied message.
  void copy_in(std::size_t offset, std::span<const std::byte> payload) noexcept {
    std::memcpy(bytes.data() + offset, payload.data(), payload.size());
  }

  /// Adds a payload left in receive buffer `slot`. May throw std::bad_alloc (growth only).
  void lend(std::uint16_t slot, std::span<const std::byte> payload) {
    pieces.emplace_back(payload.data(), payload.size());
    slots.push_back(slot);
  }

  /// Turns a lent message into a copied one: copies its pieces and returns the slots that
  /// held them through `give_back(slot)`. May throw std::bad_alloc before anything changes.
  template <class GiveBack>
  void copy_out_of_slots(GiveBack&& give_back) {
    bytes.resize(size);
    std::size_t at = 0;
    for (const auto& p : pieces) {
      std::memcpy(bytes.data() + at, p.data(), p.size());
      at += p.size();
    }
    for (auto s : slots) give_back(s);
    pieces.clear();
    slots.clear();
    lent = false;
  }
};

}  // namespace smbdirect::detail
