// Connection setup for the TCP emulation transport: TCP connect/accept, then the MPA
// Request/Reply exchange (RFC 5044 7.1) with RFC 6581's enhanced setup (IRD/ORD, peer-to-peer,
// a zero-length RDMA Write as the ready-to-receive message), falling back to revision 1 when
// the peer offers only that. The SMB Direct negotiation is not in MPA private data: it runs
// over Sends once the queue pair exists ([MS-SMBD] 3.1.5.2).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ip/v6_only.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "smbdirect/detail/async_event.hpp"
#include "smbdirect/detail/self_connection.hpp"
#include "smbdirect/tcp/ddp_rdmap.hpp"
#include "smbdirect/tcp/error.hpp"
#include "smbdirect/tcp/mpa.hpp"
#include "smbdirect/tcp/queue_pair.hpp"

namespace smbdirect::tcp {

namespace detail {

/// Writes a whole MPA frame.
inline asio::awaitable<std::error_code> write_frame(asio::ip::tcp::socket& s, const mpa::frame& f) {
  const auto bytes = mpa::encode(f);
  auto [ec, n] = co_await asio::async_write(s, asio::buffer(bytes), use_tuple);
  co_return ec;
}

/// Reads one MPA frame (header, then exactly PD_Length bytes: nothing of what follows).
inline asio::awaitable<std::error_code> read_frame(asio::ip::tcp::socket& s, bool reply, mpa::frame& f) {
  std::array<std::byte, mpa::frame_header_size> header;
  if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(header), use_tuple); ec) co_return ec;
  std::size_t pd_length = 0;
  if (auto ec = mpa::decode_header(header, reply, f, pd_length)) co_return ec;
  std::vector<std::byte> pd(pd_length);
  if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(pd), use_tuple); ec) co_return ec;
  co_return mpa::decode_private_data(pd, f);
}

/// The ready-to-receive message: a zero-length RDMA Write (STag 0, TO 0). RFC 6581 9.2
inline std::vector<std::byte> zero_length_write(bool crc) {
  std::vector<std::byte> f(mpa::fpdu_size(wire::tagged_header_size));
  wire::detail::put16(f.data(), wire::tagged_header_size);
  wire::encode_tagged(f.data() + 2, wire::opcode::rdma_write, true, 0, 0);
  if (crc) mpa::seal(f.data(), wire::tagged_header_size);
  return f;
}

/// The initiator's side of MPA setup on a connected socket.
inline asio::awaitable<std::pair<std::error_code, mpa_settings>> initiate(asio::ip::tcp::socket& s, options o) {
  mpa::frame request;
  request.crc = o.crc;
  request.revision = std::clamp<std::uint8_t>(o.mpa_revision, 1, 2);
  request.ird = std::min(o.ird, mpa::max_ird_ord);
  request.ord = std::min(o.ord, mpa::max_ird_ord);
  request.rtr.zero_length_write = true;
  if (auto ec = co_await write_frame(s, request)) co_return std::pair{ec, mpa_settings{}};
  mpa::frame reply;
  if (auto ec = co_await read_frame(s, true, reply)) co_return std::pair{ec, mpa_settings{}};
  if (reply.reject) co_return std::pair{make_error_code(iwarp_errc::mpa_rejected), mpa_settings{}};
  if (reply.markers) co_return std::pair{make_error_code(iwarp_errc::mpa_markers_requested), mpa_settings{}};
  if (reply.revision > request.revision) co_return std::pair{make_error_code(iwarp_errc::mpa_bad_revision), mpa_settings{}};
  mpa_settings settings{reply.revision, o.crc || reply.crc, request.ird, request.ord};
  if (mpa::has_enhanced_data(reply)) {
    settings.ord = std::min(settings.ord, reply.ird);
    if (reply.peer_to_peer && (reply.rtr.zero_length_send || reply.rtr.zero_length_read || !reply.rtr.zero_length_write))
      co_return std::pair{make_error_code(iwarp_errc::mpa_no_common_rtr), mpa_settings{}};
    if (reply.peer_to_peer) {
      const auto rtr = zero_length_write(settings.crc);
      if (auto [ec, n] = co_await asio::async_write(s, asio::buffer(rtr), use_tuple); ec)
        co_return std::pair{ec, mpa_settings{}};
    }
  }
  co_return std::pair{std::error_code{}, settings};
}

/// Reads the initiator's ready-to-receive FPDU: it must be a zero-length RDMA Write.
inline asio::awaitable<std::error_code> read_rtr(asio::ip::tcp::socket& s, bool crc) {
  std::vector<std::byte> f(mpa::fpdu_size(wire::tagged_header_size));
  if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(f.data(), 2), use_tuple); ec) co_return ec;
  if (wire::detail::get16(f.data()) != wire::tagged_header_size) co_return iwarp_errc::mpa_bad_rtr;
  if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(f.data() + 2, f.size() - 2), use_tuple); ec) co_return ec;
  if (crc && !mpa::crc_matches(f.data(), wire::tagged_header_size)) co_return iwarp_errc::crc_mismatch;
  wire::segment seg;
  if (wire::decode_segment({f.data() + 2, wire::tagged_header_size}, seg) || seg.op != wire::opcode::rdma_write || !seg.last)
    co_return iwarp_errc::mpa_bad_rtr;
  co_return std::error_code{};
}

/// The responder's side of MPA setup on an accepted socket. A request we cannot serve gets a
/// Reply with the R flag before the error returns.
inline asio::awaitable<std::pair<std::error_code, mpa_settings>> respond(asio::ip::tcp::socket& s, options o) {
  mpa::frame request;
  if (auto ec = co_await read_frame(s, false, request)) co_return std::pair{ec, mpa_settings{}};
  mpa::frame reply;
  reply.reply = true;
  reply.revision = std::min<std::uint8_t>(request.revision, std::clamp<std::uint8_t>(o.mpa_revision, 1, 2));
  reply.crc = o.crc || request.crc;
  reply.ird = std::min(o.ird, mpa::max_ird_ord);
  reply.ord = std::min(o.ord, mpa::max_ird_ord);
  if (mpa::has_enhanced_data(request)) reply.ord = std::min(reply.ord, request.ird);  // our ORD <= its IRD
  reply.enhanced = request.enhanced;
  reply.peer_to_peer = request.peer_to_peer;
  std::error_code refuse;
  if (request.markers) refuse = iwarp_errc::mpa_markers_requested;
  // RFC 6581 peer-to-peer mode: we take the zero-length RDMA Write RTR. Client/server mode
  // (no A flag, or revision 1): no RTR; the initiator speaks first, as SMB Direct's does.
  const bool rtr = mpa::has_enhanced_data(reply) && request.peer_to_peer;
  if (rtr && !request.rtr.zero_length_write) refuse = iwarp_errc::mpa_no_common_rtr;
  reply.rtr.zero_length_write = rtr;
  reply.reject = static_cast<bool>(refuse);
  if (auto ec = co_await write_frame(s, reply)) co_return std::pair{ec, mpa_settings{}};
  if (refuse) co_return std::pair{refuse, mpa_settings{}};
  mpa_settings settings{reply.revision, reply.crc, reply.ird, reply.ord};
  if (rtr) {
    if (auto ec = co_await read_rtr(s, settings.crc)) co_return std::pair{ec, mpa_settings{}};
  }
  co_return std::pair{std::error_code{}, settings};
}

inline asio::awaitable<void> sleep_for(std::chrono::milliseconds t) {
  asio::steady_timer timer(co_await asio::this_coro::executor, t);
  co_await timer.async_wait(asio::use_awaitable);
}

/// Runs an MPA exchange on `s` within o.handshake_timeout; the result is the queue pair.
template <class Exchange>
asio::awaitable<std::pair<std::error_code, queue_pair>> establish(asio::ip::tcp::socket s, options o, Exchange exchange) {
  using namespace asio::experimental::awaitable_operators;
  std::error_code ignored;
  s.set_option(asio::ip::tcp::no_delay(true), ignored);  // FPDUs are whole messages: no Nagle delay
  auto r = co_await (exchange(s, o) || sleep_for(o.handshake_timeout));
  if (r.index() == 1) co_return std::pair{make_error_code(iwarp_errc::mpa_handshake_timeout), queue_pair{}};
  auto [ec, settings] = std::get<0>(r);
  if (ec) co_return std::pair{ec, queue_pair{}};
  co_return std::pair{std::error_code{}, queue_pair(std::make_shared<qp_state>(std::move(s), o, settings))};
}

}  // namespace detail

/// Connects to an SMB Direct peer over TCP emulation at `host` (IPv4/IPv6 literal or name)
/// and `port` (0: 5445), runs MPA setup, and returns the queue pair, which runs on `ex`.
/// Errors: resolver and connect errors (e.g. connection_refused), iwarp_errc mpa_* values,
/// eof when the peer closes during setup.
inline asio::awaitable<std::pair<std::error_code, queue_pair>> connect(asio::any_io_executor ex, std::string host,
                                                                        std::uint16_t port = 0, options o = {}) {
  using detail::use_tuple;
  asio::ip::tcp::resolver resolver(ex);
  auto [rec, endpoints] = co_await resolver.async_resolve(host, std::to_string(port ? port : default_port), use_tuple);
  if (rec) co_return std::pair{rec, queue_pair{}};
  asio::ip::tcp::socket s(ex);
  if (auto [ec, ep] = co_await asio::async_connect(s, endpoints, use_tuple); ec) co_return std::pair{ec, queue_pair{}};
  co_return co_await detail::establish(std::move(s), o, detail::initiate);
}

/// A TCP listener that runs MPA setup for each incoming connection, several at once, and
/// hands out those that completed it.
class listener {
 public:
  /// Binds to `address` ("" for every IPv4 and IPv6 address) and `port` (0: 5445) and
  /// listens. Errors: resolver errors for a bad address, bind errors (address_in_use,
  /// permission denied below 1024 without privilege).
  static asio::awaitable<std::pair<std::error_code, std::unique_ptr<listener>>> open(asio::any_io_executor ex,
                                                                                      std::string address,
                                                                                      std::uint16_t port = 0,
                                                                                      options o = {}) {
    using detail::use_tuple;
    asio::ip::tcp::endpoint ep(asio::ip::tcp::v6(), port ? port : default_port);
    if (!address.empty()) {
      asio::ip::tcp::resolver resolver(ex);
      auto [ec, r] = co_await resolver.async_resolve(address, std::to_string(ep.port()), asio::ip::resolver_base::passive,
                                                     use_tuple);
      if (ec) co_return std::pair{ec, std::unique_ptr<listener>{}};
      ep = r.begin()->endpoint();
    }
    auto state = std::make_shared<shared>(ex, o);
    std::error_code ec;
    state->acceptor.open(ep.protocol(), ec);
    if (!ec && ep.protocol() == asio::ip::tcp::v6() && address.empty()) state->acceptor.set_option(asio::ip::v6_only(false), ec);
    if (!ec) state->acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec) state->acceptor.bind(ep, ec);
    if (!ec) state->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) co_return std::pair{ec, std::unique_ptr<listener>{}};
    asio::co_spawn(ex, accept_loop(state), asio::detached);
    co_return std::pair{std::error_code{}, std::unique_ptr<listener>(new listener(std::move(state)))};
  }

  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  ~listener() {
    std::error_code ignored;
    state_->acceptor.close(ignored);
    state_->event.notify();
  }

  /// The bound port (host order).
  std::uint16_t port() const {
    std::error_code ignored;
    return state_->acceptor.local_endpoint(ignored).port();
  }

  /// The next connection that completed MPA setup, or the error that ended a setup (that
  /// peer is gone; the listener keeps listening). Errors: iwarp_errc mpa_* values, eof,
  /// operation_aborted after cancel().
  asio::awaitable<std::pair<std::error_code, queue_pair>> accept() {
    auto s = state_;
    while (s->ready.empty() && !s->cancelled && s->acceptor.is_open()) co_await s->event.wait();
    if (s->cancelled || s->ready.empty()) {
      s->cancelled = false;
      co_return std::pair{make_error_code(asio::error::operation_aborted), queue_pair{}};
    }
    auto r = std::move(s->ready.front());
    s->ready.pop_front();
    s->event.notify();  // room for one more
    co_return r;
  }

  /// Makes a pending accept() (or the next one) return operation_aborted.
  void cancel() {
    state_->cancelled = true;
    state_->event.notify();
  }

 private:
  struct shared {
    shared(asio::any_io_executor ex, options opts) : acceptor(ex), o(opts), event(ex) {}
    asio::ip::tcp::acceptor acceptor;
    options o;
    smbdirect::detail::async_event event;
    std::deque<std::pair<std::error_code, queue_pair>> ready;
    std::size_t in_setup = 0;
    bool cancelled = false;
  };

  explicit listener(std::shared_ptr<shared> s) : state_(std::move(s)) {}

  static asio::awaitable<void> accept_loop(std::shared_ptr<shared> s) {
    for (;;) {
      // Finished setups wait for accept() up to the backlog; setups under way (each bounded by
      // handshake_timeout) up to four times that, so silent peers cannot hold every slot.
      while ((s->ready.size() >= s->o.listen_backlog || s->in_setup >= 4 * s->o.listen_backlog) && s->acceptor.is_open())
        co_await s->event.wait();
      auto [ec, socket] = co_await s->acceptor.async_accept(detail::use_tuple);
      if (!s->acceptor.is_open()) co_return;
      if (ec == asio::error::connection_aborted) continue;  // the peer gave up before accept
      if (ec) {  // out of descriptors or buffers: the connection stays queued, so wait first
        co_await detail::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      ++s->in_setup;
      asio::co_spawn(s->acceptor.get_executor(), setup(s, std::move(socket)), asio::detached);
    }
  }

  static asio::awaitable<void> setup(std::shared_ptr<shared> s, asio::ip::tcp::socket socket) {
    auto r = co_await detail::establish(std::move(socket), s->o, detail::respond);
    --s->in_setup;
    if (!s->acceptor.is_open()) co_return;
    s->ready.push_back(std::move(r));
    s->event.notify();
  }

  std::shared_ptr<shared> state_;
};

/// Both ends of one connection, in this process (self-tests, benchmarks).
using self_connection = smbdirect::self_connection<queue_pair>;

/// Listens on `address` and `port` (0: 5445), connects to it and accepts. The accepted end
/// (`server`) runs on `server_ex`, which may be another thread's; the connecting end (`client`)
/// on the calling coroutine's executor. Errors: as listener::open, connect() and
/// listener::accept().
inline asio::awaitable<self_connection> connect_to_self(asio::any_io_executor server_ex, std::string address,
                                                        std::uint16_t port = 0, options o = {}) {
  return smbdirect::detail::connect_to_self<queue_pair, listener>(std::move(server_ex), std::move(address), port, o,
                                                                  &connect);
}

}  // namespace smbdirect::tcp
