// smbdirect::stream: an SMB Direct connection behind a socket-like byte stream, so SMB3 code
// written for TCP runs unchanged over SMB Direct.
//
// Over TCP, SMB3 frames each message with the Direct TCP transport header ([MS-SMB2] 2.1): one
// zero byte, then the message length as 3 bytes big-endian. Over SMB Direct one SMB3 message is
// one upper-layer message and has no header ([MS-SMBD] 3.1.4.2, 3.1.5.8). The stream converts:
//   writing  header + bytes (split across any number of writes)  ->  one upper-layer message
//   reading  one upper-layer message  ->  its header + its bytes
// It models Asio's AsyncReadStream and AsyncWriteStream, so asio::async_read, async_write,
// async_read_until and every completion token work. RDMA read/write and buffer registration
// stay on the connection: next_layer().
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>

#include "smbdirect/connection.hpp"
#include "smbdirect/error.hpp"

namespace smbdirect {

/// Bytes in a Direct TCP transport header. [MS-SMB2] 2.1
inline constexpr std::size_t stream_header_size = 4;
/// The largest message length a header can state: 3 bytes, 16 MiB - 1 bytes. [MS-SMB2] 2.1
inline constexpr std::uint32_t max_stream_message_size = 0xFFFFFF;

/// A byte stream over one negotiated connection (see the file comment).
///
/// Writing (async_write_some, completion `void(std::error_code, std::size_t bytes)`):
///  - A complete header is checked before any of its message is sent. Errors, with nothing of
///    that message sent: stream_header_invalid (first byte not 0), empty_message (length 0),
///    message_too_large (length above the negotiated MaxFragmentedSize, i.e. the peer's
///    max_fragmented_send_size). `bytes` then counts only the bytes before the rejected
///    header in this write, and the next write starts a new header.
///  - A message whose bytes all arrive in one write is sent straight from the caller's buffers
///    (no copy); a message spread over writes is staged until its last byte arrives. The write
///    completes once every message it completed has been sent.
///  - Other errors are the connection's (e.g. not_connected, peer_disconnected).
/// Reading (async_read_some, same signature): delivers each received message as its header
///  followed by its bytes, never a short message. The end of the connection reads as
///  asio::error::eof when the peer disconnected between messages; otherwise the connection's
///  error (e.g. peer_disconnected_mid_message, connection_closed). A received message longer
///  than max_stream_message_size is discarded with stream_message_too_large.
/// One read and one write may be pending at a time (operation_in_progress otherwise), as with
/// a socket. Operations keep the stream's state alive; destroying the stream ends the
/// connection and completes pending operations with connection_closed.
template <transport Transport>
class stream {
 public:
  using executor_type = asio::any_io_executor;
  using next_layer_type = connection<Transport>;

  /// Takes a connection that has completed async_connect or async_accept.
  explicit stream(next_layer_type connection) : state_(std::make_shared<state>(std::move(connection))) {}

  stream(stream&&) noexcept = default;
  stream& operator=(stream&& other) noexcept {
    if (this != &other) {
      end();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ~stream() { end(); }

  executor_type get_executor() const { return state_->executor; }

  /// The connection, for RDMA read/write, buffer registration, negotiated() and stats().
  next_layer_type& next_layer() noexcept { return *state_->link; }
  const next_layer_type& next_layer() const noexcept { return *state_->link; }

  template <class MutableBufferSequence, class Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    // The buffer list (inline up to 8 buffers, so no allocation per read) is built inside
    // launch(), which turns a failed allocation into out_of_memory: Asio's composed operations
    // call this from a noexcept initiation.
    return detail::launch(state_, std::forward<Token>(token), [buffers](state& s) {
      return s.read_some(detail::to_list<MutableBufferSequence, asio::mutable_buffer>(buffers));
    });
  }

  template <class ConstBufferSequence, class Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return detail::launch(state_, std::forward<Token>(token), [buffers](state& s) {
      return s.write_some(detail::to_list<ConstBufferSequence, asio::const_buffer>(buffers));
    });
  }

  /// Closes the connection (connection::async_close: sends already accepted complete first).
  /// Completion `void(std::error_code)`. Errors: stream_message_incomplete if a message was
  /// partly written (none of it is sent; the connection is closed all the same), else the
  /// connection's close error.
  template <class Token>
  auto async_close(Token&& token) {
    return detail::launch(state_, std::forward<Token>(token), [](state& s) { return s.close(); });
  }

 private:
  using result = std::pair<std::error_code, std::size_t>;

  /// Ends the connection; pending operations complete with connection_closed.
  void end() noexcept {
    if (state_) state_->link.reset();
  }

  static constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

  /// Walks a buffer sequence byte range by byte range.
  class cursor {
   public:
    explicit cursor(std::span<const asio::const_buffer> pieces) : pieces_(pieces) {
      for (const auto& p : pieces) left_ += p.size();
    }
    std::size_t remaining() const noexcept { return left_; }
    /// Copies up to `n` bytes to `out`; returns how many.
    std::size_t copy_to(std::byte* out, std::size_t n) {
      std::size_t done = 0;
      while (done < n && left_ > 0) {
        const auto piece = current();
        const std::size_t k = std::min(n - done, piece.size());
        std::copy_n(static_cast<const std::byte*>(piece.data()), k, out + done);
        advance(k);
        done += k;
      }
      return done;
    }
    /// The next `n` bytes (n <= remaining()) as buffers into the caller's memory.
    void take(std::size_t n, std::vector<asio::const_buffer>& out) {
      out.clear();
      while (n > 0) {
        const auto piece = current();
        const std::size_t k = std::min(n, piece.size());
        out.emplace_back(piece.data(), k);
        advance(k);
        n -= k;
      }
    }

   private:
    asio::const_buffer current() {
      while (pieces_[index_].size() == offset_) ++index_, offset_ = 0;  // skip empty pieces
      return asio::buffer(pieces_[index_] + offset_);
    }
    void advance(std::size_t k) {
      offset_ += k;
      left_ -= k;
    }
    std::span<const asio::const_buffer> pieces_;
    std::size_t index_ = 0, offset_ = 0, left_ = 0;
  };

  struct state {
    explicit state(next_layer_type c) : executor(c.get_executor()), link(std::move(c)) {}

    executor_type get_executor() const { return executor; }

    /// An operation ended with an exception (std::bad_alloc): the stream's own state may be
    /// half updated, so the connection ends with `ec` (see detail::launch).
    void terminate(std::error_code ec) {
      if (link) link->abort(ec);
    }

    asio::awaitable<result> write_some(detail::buffer_list<asio::const_buffer> pieces) {
      if (writing) co_return result{errc::operation_in_progress, 0};
      writing = true;
      const auto r = co_await write_messages(pieces);
      writing = false;
      co_return r;
    }

    asio::awaitable<result> write_messages(std::span<const asio::const_buffer> pieces) {
      if (auto ec = usable()) co_return result{ec, 0};
      cursor in(pieces);
      std::size_t consumed = 0;
      while (in.remaining() > 0) {
        if (header_bytes < stream_header_size) {
          const std::size_t n = in.copy_to(header.data() + header_bytes, stream_header_size - header_bytes);
          header_bytes += n;
          if (header_bytes < stream_header_size) {
            consumed += n;
            break;
          }
          if (auto ec = accept_header()) {
            header_bytes = 0;
            co_return result{ec, consumed};
          }
          consumed += n;
        }
        if (staged.empty() && in.remaining() >= body_left) {  // the whole message is here: no copy
          const std::size_t length = body_left;
          in.take(length, parts);
          if (auto ec = co_await send(parts)) co_return result{ec, consumed};
          consumed += length;
          continue;
        }
        const std::size_t n = std::min(in.remaining(), body_left);
        const std::size_t old = staged.size();
        staged.resize(old + n);
        in.copy_to(staged.data() + old, n);
        consumed += n;
        body_left -= n;
        if (body_left == 0) {
          parts.assign(1, asio::buffer(staged));
          if (auto ec = co_await send(parts)) co_return result{ec, consumed};
        }
      }
      co_return result{std::error_code{}, consumed};
    }

    /// [MS-SMB2] 2.1: a zero byte, then the length in 3 bytes big-endian.
    std::error_code accept_header() {
      if (!link) return errc::connection_closed;
      if (header[0] != std::byte{0}) return errc::stream_header_invalid;
      const std::uint32_t length = std::to_integer<std::uint32_t>(header[1]) << 16 |
                                   std::to_integer<std::uint32_t>(header[2]) << 8 |
                                   std::to_integer<std::uint32_t>(header[3]);
      if (length == 0) return errc::empty_message;
      if (length > link->negotiated().max_fragmented_send_size) return errc::message_too_large;
      body_left = length;
      staged.clear();
      staged.reserve(length);
      return {};
    }

    /// Sends one whole message; the writer then expects the next header.
    asio::awaitable<std::error_code> send(const std::vector<asio::const_buffer>& bytes) {
      header_bytes = 0;
      body_left = 0;
      staged.clear();
      if (!link) co_return errc::connection_closed;
      auto [ec, n] = co_await link->async_send(bytes, use_tuple);
      co_return ec;
    }

    asio::awaitable<result> read_some(detail::buffer_list<asio::mutable_buffer> pieces) {
      if (reading) co_return result{errc::operation_in_progress, 0};
      if (asio::buffer_size(pieces) == 0) co_return result{std::error_code{}, 0};
      reading = true;
      std::error_code ec;
      if (read_offset == stream_header_size + received.size()) ec = co_await next_message();
      reading = false;
      if (ec) co_return result{ec, 0};
      std::size_t copied = 0;
      for (const auto& piece : pieces) {
        auto* out = static_cast<std::byte*>(piece.data());
        std::size_t room = piece.size();
        while (room > 0 && read_offset < stream_header_size + received.size()) {
          const auto from = read_offset < stream_header_size
                                ? std::span<const std::byte>(read_header).subspan(read_offset)
                                : std::span<const std::byte>(received).subspan(read_offset - stream_header_size);
          const std::size_t k = std::min(room, from.size());
          std::copy_n(from.data(), k, out);
          out += k;
          room -= k;
          read_offset += k;
          copied += k;
        }
      }
      co_return result{std::error_code{}, copied};
    }

    asio::awaitable<std::error_code> next_message() {
      if (!link) co_return errc::connection_closed;
      auto [ec, n] = co_await link->async_receive(received, use_tuple);
      if (ec == errc::peer_disconnected) co_return asio::error::eof;  // between messages: a clean end
      if (ec) co_return ec;
      if (n > max_stream_message_size) {
        received.clear();
        read_offset = stream_header_size;
        co_return errc::stream_message_too_large;
      }
      read_header = {std::byte{0}, static_cast<std::byte>(n >> 16), static_cast<std::byte>(n >> 8),
                     static_cast<std::byte>(n)};
      read_offset = 0;
      co_return std::error_code{};
    }

    asio::awaitable<std::error_code> close() {
      const bool partial = header_bytes > 0;
      header_bytes = 0;
      body_left = 0;
      staged.clear();
      if (!link) co_return errc::connection_closed;
      auto [ec] = co_await link->async_close(use_tuple);
      if (partial) co_return errc::stream_message_incomplete;
      co_return ec;
    }

    /// Before negotiation the connection refuses sends; say so before parsing any header.
    std::error_code usable() const {
      if (!link) return errc::connection_closed;
      if (!link->is_connected()) return link->error() ? link->error() : make_error_code(errc::not_connected);
      return {};
    }

    executor_type executor;
    std::optional<next_layer_type> link;
    // Writer: the header being assembled, then the bytes its message still needs.
    std::array<std::byte, stream_header_size> header{};
    std::size_t header_bytes = 0;
    std::size_t body_left = 0;
    std::vector<std::byte> staged;  // a message spread over writes
    std::vector<asio::const_buffer> parts;
    bool writing = false;
    // Reader: the message being delivered, behind its synthesized header.
    std::vector<std::byte> received;
    std::array<std::byte, stream_header_size> read_header{};
    std::size_t read_offset = stream_header_size;  // into header + message; at the end: none
    bool reading = false;
  };

  std::shared_ptr<state> state_;
};

}  // namespace smbdirect
