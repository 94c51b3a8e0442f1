// smbdirect::connection: one SMB Direct connection ([MS-SMBD]) over any transport.
//
// Every asynchronous operation accepts any Asio completion token (a callback,
// asio::use_awaitable, asio::experimental::deferred, ...). Completion signatures:
//   async_connect / async_accept / async_close   void(std::error_code)
//   async_send / async_receive / async_rdma_*    void(std::error_code, std::size_t bytes)
//
// Threading: a connection and its transport run on the transport's executor. Start
// operations from that executor (or through a strand that wraps it); handlers run there too.
// Destroying the connection terminates it (errc::connection_closed); operations in flight
// complete with that error.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <asio/async_result.hpp>
#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/post.hpp>

#include "smbdirect/clock.hpp"
#include "smbdirect/detail/engine.hpp"
#include "smbdirect/error.hpp"
#include "smbdirect/parameters.hpp"
#include "smbdirect/received_message.hpp"
#include "smbdirect/statistics.hpp"
#include "smbdirect/transport.hpp"
#include "smbdirect/wire/buffer_descriptor.hpp"

namespace smbdirect {

/// A buffer registered for the peer's RDMA access. Send `descriptor` to the peer (e.g. inside an
/// SMB2 READ/WRITE request); it grants exactly `rights` (nothing for access::local).
/// [MS-SMBD] 3.1.4.3
struct registration {
  wire::buffer_descriptor_v1 descriptor;
  access rights = access::none;
  memory_region region;
};

namespace detail {

// Runs an engine coroutine for a public operation, whatever the completion token. `op(engine)`
// returns the engine's awaitable (its arguments live in the coroutine frame), yielding either
// an error_code or an {error_code, bytes} pair; the completion handler holds the engine alive
// until then. An exception escaping the running operation terminates the connection with
// exception_error() (out_of_memory for std::bad_alloc).
//
// Asio may run this initiation inside a noexcept await_suspend (use_awaitable, and composed
// operations such as asio::async_read on a stream), where a std::bad_alloc would call
// std::terminate. So if `op` cannot allocate (its captures, its coroutine frame), nothing has
// started: the handler completes with out_of_memory, posted, and the connection stays up.
// co_spawn's own frame comes from Asio's per-thread recycling cache (docs/design.md).
template <class Token, class Engine, class Op>
auto launch(const std::shared_ptr<Engine>& engine, Token&& token, Op operation) {
  using result = typename std::invoke_result_t<Op&, Engine&>::value_type;
  constexpr bool sized = !std::is_same_v<result, std::error_code>;
  using signature = std::conditional_t<sized, void(std::error_code, std::size_t), void(std::error_code)>;
  return asio::async_initiate<Token, signature>(
      [](auto handler, std::shared_ptr<Engine> e, Op op) {
        auto ex = e->get_executor();
        std::optional<std::invoke_result_t<Op&, Engine&>> work;
        try {
          work.emplace(op(*e));
        } catch (const std::bad_alloc&) {
          asio::post(ex, [h = std::move(handler)]() mutable {
            if constexpr (sized) std::move(h)(make_error_code(errc::out_of_memory), 0);
            else std::move(h)(make_error_code(errc::out_of_memory));
          });
          return;
        }
        asio::co_spawn(ex, std::move(*work),
                       [h = std::move(handler), keep = std::move(e)](std::exception_ptr thrown, result r) mutable {
                         if (thrown) {
                           keep->terminate(exception_error(thrown));
                           if constexpr (sized) r = {exception_error(thrown), 0};
                           else r = exception_error(thrown);
                         }
                         if constexpr (sized) std::move(h)(r.first, r.second);
                         else std::move(h)(r);
                       });
      },
      token, engine, std::move(operation));
}

/// The buffers of a buffer sequence, inline up to buffer_list's capacity (no allocation).
template <class Buffers, class Buffer>
buffer_list<Buffer> to_list(const Buffers& buffers) {
  return {asio::buffer_sequence_begin(buffers), asio::buffer_sequence_end(buffers)};
}

}  // namespace detail

template <transport Transport>
class connection {
  using engine_type = detail::engine<Transport>;

 public:
  using executor_type = asio::any_io_executor;

  /// Takes a transport that is already connected at the RDMA level (queue pair ready).
  /// `clock`: nullptr for real time, or a virtual_clock that the caller advances (tests).
  explicit connection(Transport t, parameters p = {}, virtual_clock* clock = nullptr)
      : engine_(std::make_shared<engine_type>(std::move(t), p, clock)) {}

  connection(connection&&) noexcept = default;
  connection& operator=(connection&&) noexcept = default;
  ~connection() {
    if (engine_) engine_->terminate(errc::connection_closed);
  }

  executor_type get_executor() const { return engine_->get_executor(); }

  /// Active role: sends the Negotiate Request and validates the response ([MS-SMBD] 3.1.5.2,
  /// 3.1.5.7), within parameters::negotiate_timeout. Errors: invalid_argument (bad
  /// parameters), already_connected, negotiate_timeout, any 3.1.5.7 check, transport errors.
  template <class Token>
  auto async_connect(Token&& token) {
    return detail::launch(engine_, std::forward<Token>(token),
                          [](engine_type& e) { return e.negotiate(role::active); });
  }

  /// Passive role: awaits the Negotiate Request and answers it ([MS-SMBD] 3.1.5.6, 3.1.5.3).
  /// A request whose versions exclude 0x0100 is answered with STATUS_NOT_SUPPORTED and fails
  /// with unsupported_version. Errors as async_connect, with 3.1.5.6's checks.
  template <class Token>
  auto async_accept(Token&& token) {
    return detail::launch(engine_, std::forward<Token>(token),
                          [](engine_type& e) { return e.negotiate(role::passive); });
  }

  /// Sends one upper-layer message made of `buffers` (a ConstBufferSequence, 1 byte to
  /// MaxFragmentedSendSize), fragmented to MaxSendSize ([MS-SMBD] 3.1.4.2, 3.1.5.4). The
  /// bytes are read in place: keep them valid until completion. Completes once every fragment
  /// has been sent. Errors: message_too_large or empty_message (the connection stays up),
  /// not_connected, or the connection's terminal error.
  template <class ConstBufferSequence, class Token>
  auto async_send(const ConstBufferSequence& buffers, Token&& token) {
    auto pieces = detail::to_list<ConstBufferSequence, asio::const_buffer>(buffers);
    return detail::launch(engine_, std::forward<Token>(token),
                                [pieces = std::move(pieces)](engine_type& e) mutable { return e.send(std::move(pieces)); });
  }

  /// Receives the next whole upper-layer message into `message`, replacing its contents (its
  /// old storage is recycled for later messages; `message` must outlive the operation).
  /// One receive at a time. Messages not yet read are buffered up to MaxFragmentedRecvSize
  /// bytes; past that the peer gets no new credits until we read ([MS-SMBD] 3.1.5.9). Errors:
  /// not_connected, operation_in_progress, or the terminal error once every message received
  /// before it was delivered.
  template <class Token>
  auto async_receive(std::vector<std::byte>& message, Token&& token) {
    return detail::launch(engine_, std::forward<Token>(token),
                                [&message](engine_type& e) { return e.receive(message); });
  }

  /// Receives the next whole upper-layer message in place ([MS-SMBD] 3.1.5.8): with
  /// parameters::lent_receive_buffers > 0 its bytes stay in the receive buffers they arrived
  /// in (message.lent(); no copy) until message.release(), else (or when those buffers are
  /// all in use) it arrives copied. What `message` held is released when the next message is
  /// delivered into it (not on an error). `message` must outlive the operation. Errors as
  /// the vector overload.
  template <class Token>
  auto async_receive(received_message& message, Token&& token) {
    return detail::launch(engine_, std::forward<Token>(token),
                          [&message](engine_type& e) { return e.receive(message); });
  }

  /// Registers `buffer` for the peer's RDMA access with exactly `rights` ([MS-SMBD] 3.1.4.3),
  /// or, with access::local, for this side's use only. On verbs, sends and RDMA writes from
  /// memory a registration covers (and RDMA reads into one with local write access, see
  /// smbdirect::access) use it in place, where other memory costs a copy into the send
  /// buffers or a registration per work request. Register buffers that are reused.
  /// The memory must stay valid, and registered, until every operation using it completes.
  /// Errors: invalid_argument (empty, > 4 GiB - 1, access::none or an unknown value),
  /// not_connected, transport registration errors.
  std::pair<std::error_code, registration> register_buffer(asio::mutable_buffer buffer, access rights) {
    auto [ec, mr] = engine_->register_memory(buffer, rights);
    if (ec) return {ec, {}};
    return {ec, registration{{mr.address, mr.token, mr.length}, rights, mr}};
  }

  /// Revokes the registration: later peer access fails with remote_access_error ([MS-SMBD]
  /// 3.1.4.4). Errors: invalid_token (not registered, or already invalidated, e.g. by the
  /// peer's Send with Invalidate or a disconnect).
  std::error_code deregister_buffer(const registration& r) { return engine_->deregister_memory(r.region); }

  /// RDMA-writes `buffers` (a ConstBufferSequence) into the peer's memory described by
  /// `remote`, starting `remote_offset` bytes into it ([MS-SMBD] 3.1.4.5). Errors:
  /// rdma_too_large (above MaxReadWriteSize or the descriptors) or too_many_descriptors (more
  /// than parameters::max_rdma_descriptors); the connection stays up for both;
  /// remote_access_error (bad token, bounds or rights; the connection ends), terminal errors.
  template <class ConstBufferSequence, class Token>
  auto async_rdma_write(const ConstBufferSequence& buffers, std::span<const wire::buffer_descriptor_v1> remote,
                        Token&& token, std::uint64_t remote_offset = 0) {
    auto local = detail::to_list<ConstBufferSequence, asio::const_buffer>(buffers);
    detail::descriptor_list r(remote.begin(), remote.end());
    return detail::launch(engine_, std::forward<Token>(token),
                                [local = std::move(local), r = std::move(r), remote_offset](engine_type& e) mutable {
                                  return e.rdma(std::move(local), std::move(r), remote_offset);
                                });
  }

  /// RDMA-reads from the peer's memory described by `remote` into `buffers` (a
  /// MutableBufferSequence) ([MS-SMBD] 3.1.4.6). Errors as async_rdma_write.
  template <class MutableBufferSequence, class Token>
  auto async_rdma_read(const MutableBufferSequence& buffers, std::span<const wire::buffer_descriptor_v1> remote,
                       Token&& token, std::uint64_t remote_offset = 0) {
    auto local = detail::to_list<MutableBufferSequence, asio::mutable_buffer>(buffers);
    detail::descriptor_list r(remote.begin(), remote.end());
    return detail::launch(engine_, std::forward<Token>(token),
                                [local = std::move(local), r = std::move(r), remote_offset](engine_type& e) mutable {
                                  return e.rdma(std::move(local), std::move(r), remote_offset);
                                });
  }

  /// Lets the message being sent and every posted send complete, then disconnects (SMB
  /// Direct has no close message; the peer sees peer_disconnected). Pending receives end with
  /// connection_closed. Errors: the terminal error if the connection had already failed.
  template <class Token>
  auto async_close(Token&& token) {
    return detail::launch(engine_, std::forward<Token>(token),
                          [](engine_type& e) { return e.close(); });
  }

  /// Ends the connection at once with `reason` (an smbdirect error), without waiting for sends
  /// in flight: every pending and later operation completes with it, the peer sees a
  /// disconnect. Does nothing if the connection has already ended. For layers above that
  /// cannot go on (smbdirect::stream after std::bad_alloc); async_close is the orderly way.
  void abort(std::error_code reason = errc::connection_closed) { engine_->terminate(reason); }

  /// Counters; valid at any time.
  const statistics& stats() const noexcept { return engine_->stats(); }
  /// The values negotiation settled (zeros before it). [MS-SMBD] 3.1.4.7
  const negotiated_parameters& negotiated() const noexcept { return engine_->negotiated(); }
  /// Why the connection ended; empty while it is usable.
  std::error_code error() const noexcept { return engine_->error(); }
  bool is_connected() const noexcept { return engine_->connected(); }
  /// Current credit state, for diagnostics and tests.
  const protocol::credit_ledger& credits() const noexcept { return engine_->credits(); }
  /// The transport, e.g. for its info() or, in tests, its fault counters.
  Transport& next_layer() noexcept { return engine_->transport(); }

 private:
  std::shared_ptr<engine_type> engine_;
};

}  // namespace smbdirect
