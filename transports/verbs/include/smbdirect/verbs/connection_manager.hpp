// RDMA CM (librdmacm) connection establishment for the verbs transport: an active
// connect() and a passive listener, IPv4 and IPv6, each yielding a verbs::queue_pair.
//
// Ports: SMB Direct listens on 445 over InfiniBand and RoCE and on 5445 over iWARP
// ([MS-SMBD] 2.1). Port 0 in these functions means that default for the device the address
// resolves to.
//
// rdma_conn_param: initiator_depth (ORD) and responder_resources (IRD) come from the options,
// capped by the device (max_qp_init_rd_atom / max_qp_rd_atom) and by what the peer offers;
// retry_count from the options; rnr_retry_count 0, as Linux SMB Direct does. No private
// data: the SMB Direct negotiation runs over the queue pair.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/use_awaitable.hpp>

#include "smbdirect/detail/self_connection.hpp"
#include "smbdirect/verbs/error.hpp"
#include "smbdirect/verbs/queue_pair.hpp"

namespace smbdirect::verbs {

/// SMB Direct's port over InfiniBand and RoCE. [MS-SMBD] 2.1
inline constexpr std::uint16_t ib_port = 445;
/// SMB Direct's port over iWARP. [MS-SMBD] 2.1
inline constexpr std::uint16_t iwarp_port = 5445;

namespace detail {

/// SMBDIRECT_VERBS_TRACE=1 in the environment prints each RDMA CM step to stderr.
inline bool tracing() {
  static const bool on = [] {
    const char* v = std::getenv("SMBDIRECT_VERBS_TRACE");
    return v && *v && *v != '0';
  }();
  return on;
}

template <class... Args>
void trace(const char* format, Args... args) {
  if (!tracing()) return;
  std::fprintf(stderr, "smbdirect.verbs: ");
  std::fprintf(stderr, format, args...);
  std::fputc('\n', stderr);
}

/// An RDMA CM event channel whose descriptor is awaited on an executor.
class event_channel {
 public:
  static std::pair<std::error_code, std::unique_ptr<event_channel>> create(const asio::any_io_executor& ex) {
    rdma_event_channel* ch = rdma_create_event_channel();
    if (!ch) return {last_system_error(), nullptr};
    if (auto ec = set_nonblocking(ch->fd)) {
      rdma_destroy_event_channel(ch);
      return {ec, nullptr};
    }
    return {std::error_code{}, std::unique_ptr<event_channel>(new event_channel(ex, ch))};
  }
  ~event_channel() {
    fd_.release();
    if (channel_) rdma_destroy_event_channel(channel_);
  }

  rdma_event_channel* get() const { return channel_; }
  /// Hands the channel over (to a qp_state that now owns it).
  rdma_event_channel* release() {
    fd_.release();
    return std::exchange(channel_, nullptr);
  }
  void cancel() { fd_.cancel(); }

  struct event {
    rdma_cm_event_type type{};
    int status = 0;
    rdma_cm_id* id = nullptr;  // for CONNECT_REQUEST: the new identifier
    rdma_conn_param conn{};
  };

  /// The next event (already acknowledged), or the error that ended the wait.
  asio::awaitable<std::pair<std::error_code, event>> next() {
    for (;;) {
      rdma_cm_event* e = nullptr;
      if (rdma_get_cm_event(channel_, &e) == 0) {
        event out{e->event, e->status, e->id, e->param.conn};
        trace("fd %d: event %s, status %d", channel_->fd, rdma_event_str(e->event), e->status);
        out.conn.private_data = nullptr;  // freed with the event
        out.conn.private_data_len = 0;
        rdma_ack_cm_event(e);
        co_return std::pair{std::error_code{}, out};
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) co_return std::pair{last_system_error(), event{}};
      trace("fd %d: waiting", channel_->fd);
      auto [ec] = co_await fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                                          asio::experimental::as_tuple(asio::use_awaitable));
      if (ec) co_return std::pair{std::error_code(ec), event{}};
    }
  }

 private:
  event_channel(const asio::any_io_executor& ex, rdma_event_channel* ch) : channel_(ch), fd_(ex, ch->fd) {}
  rdma_event_channel* channel_;
  asio::posix::stream_descriptor fd_;
};

inline std::error_code event_error(rdma_cm_event_type t) {
  switch (t) {
    case RDMA_CM_EVENT_ADDR_ERROR: return cm_errc::address_resolution_failed;
    case RDMA_CM_EVENT_ROUTE_ERROR: return cm_errc::route_resolution_failed;
    case RDMA_CM_EVENT_REJECTED: return cm_errc::connection_rejected;
    case RDMA_CM_EVENT_UNREACHABLE: return cm_errc::peer_unreachable;
    case RDMA_CM_EVENT_CONNECT_ERROR: return cm_errc::connect_error;
    case RDMA_CM_EVENT_DEVICE_REMOVAL: return cm_errc::device_removed;
    default: return cm_errc::unexpected_event;
  }
}

/// Awaits the event `want` on `ch`; any other event is the error it stands for.
inline asio::awaitable<std::error_code> expect(event_channel& ch, rdma_cm_event_type want, rdma_conn_param* conn = nullptr) {
  auto [ec, e] = co_await ch.next();
  if (ec) co_return ec;
  if (e.type != want) co_return event_error(e.type);
  if (conn) *conn = e.conn;
  co_return std::error_code{};
}

struct resolved_address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
};

/// Numeric or DNS host (IPv4 or IPv6) and port. Error: std::errc::invalid_argument when
/// getaddrinfo cannot resolve it.
inline std::pair<std::error_code, resolved_address> resolve(const std::string& host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res) != 0 || !res)
    return {std::make_error_code(std::errc::invalid_argument), {}};
  resolved_address a;
  std::memcpy(&a.storage, res->ai_addr, res->ai_addrlen);
  a.length = res->ai_addrlen;
  freeaddrinfo(res);
  return {{}, a};
}

inline void set_port(resolved_address& a, std::uint16_t port) {
  if (a.storage.ss_family == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_port = htons(port);
  else
    reinterpret_cast<sockaddr_in*>(&a.storage)->sin_port = htons(port);
}

inline std::uint16_t default_port(ibv_context* verbs) {
  return verbs && verbs->device->transport_type == IBV_TRANSPORT_IWARP ? iwarp_port : ib_port;
}

/// Our IRD/ORD for a connection on `device`, given what the peer offers (0 = unknown).
inline rdma_conn_param conn_param(const options& o, const device_info& d, std::uint8_t peer_initiator,
                                  std::uint8_t peer_responder) {
  rdma_conn_param p{};
  std::uint32_t ord = std::min<std::uint32_t>(o.initiator_depth, d.max_qp_init_rd_atom);
  std::uint32_t ird = std::min<std::uint32_t>(o.responder_resources, d.max_qp_rd_atom);
  if (peer_responder) ord = std::min<std::uint32_t>(ord, peer_responder);
  if (peer_initiator) ird = std::min<std::uint32_t>(ird, peer_initiator);
  p.initiator_depth = static_cast<std::uint8_t>(ord);
  p.responder_resources = static_cast<std::uint8_t>(ird);
  p.retry_count = std::min<std::uint8_t>(o.retry_count, 7);
  p.rnr_retry_count = 0;
  return p;
}

/// Which device an address belongs to (for the default port) without keeping anything.
inline asio::awaitable<std::pair<std::error_code, std::uint16_t>> probe_default_port(const asio::any_io_executor& ex,
                                                                                     resolved_address dst,
                                                                                     const options& o) {
  auto [cec, ch] = event_channel::create(ex);
  if (cec) co_return std::pair{cec, std::uint16_t{0}};
  rdma_cm_id* id = nullptr;
  if (rdma_create_id(ch->get(), &id, nullptr, RDMA_PS_TCP)) co_return std::pair{last_system_error(), std::uint16_t{0}};
  std::error_code ec;
  if (rdma_resolve_addr(id, nullptr, dst.get(), static_cast<int>(o.resolve_timeout.count())))
    ec = last_system_error();
  else
    ec = co_await expect(*ch, RDMA_CM_EVENT_ADDR_RESOLVED);
  const std::uint16_t port = ec ? 0 : default_port(id->verbs);
  rdma_destroy_id(id);
  co_return std::pair{ec, port};
}

}  // namespace detail

/// Connects to an SMB Direct peer at `host` (IPv4/IPv6 literal or name) and `port` (0: 445,
/// or 5445 on iWARP): resolves address and route, creates the queue pair on the device
/// the route uses, connects, and waits for ESTABLISHED. The result runs on `ex`.
/// Errors: std::errc::invalid_argument (bad host), cm_errc (address, route, reject,
/// unreachable, device mismatch, queue depths), errno values of librdmacm/libibverbs calls.
inline asio::awaitable<std::pair<std::error_code, queue_pair>> connect(asio::any_io_executor ex, std::string host,
                                                                        std::uint16_t port, options o) {
  using result = std::pair<std::error_code, queue_pair>;
  auto [rec, dst] = detail::resolve(host, port, false);
  if (rec) co_return result{rec, queue_pair{}};
  if (port == 0) {
    auto [pec, p] = co_await detail::probe_default_port(ex, dst, o);
    if (pec) co_return result{pec, queue_pair{}};
    detail::set_port(dst, p);
  }
  auto [cec, channel] = detail::event_channel::create(ex);
  if (cec) co_return result{cec, queue_pair{}};
  rdma_cm_id* id = nullptr;
  if (rdma_create_id(channel->get(), &id, nullptr, RDMA_PS_TCP)) co_return result{last_system_error(), queue_pair{}};
  // From here the state owns the identifier and, once handed over, the channel.
  auto state = std::make_shared<detail::qp_state>(ex, o, id);
  const int timeout = static_cast<int>(o.resolve_timeout.count());
  detail::trace("connect %s port %u: resolving", host.c_str(), unsigned(port));
  if (rdma_resolve_addr(id, nullptr, dst.get(), timeout)) co_return result{last_system_error(), queue_pair{}};
  if (auto ec = co_await detail::expect(*channel, RDMA_CM_EVENT_ADDR_RESOLVED)) co_return result{ec, queue_pair{}};
  if (rdma_resolve_route(id, timeout)) co_return result{last_system_error(), queue_pair{}};
  if (auto ec = co_await detail::expect(*channel, RDMA_CM_EVENT_ROUTE_RESOLVED)) co_return result{ec, queue_pair{}};
  detail::trace("connect: route resolved, device %s", ibv_get_device_name(id->verbs->device));
  if (auto ec = state->create_resources()) co_return result{ec, queue_pair{}};
  rdma_conn_param param = detail::conn_param(o, state->device(), 0, 0);
  detail::trace("connect: rdma_connect (initiator_depth %u, responder_resources %u)", unsigned(param.initiator_depth),
                unsigned(param.responder_resources));
  if (rdma_connect(id, &param)) {
    // iWARP connects its TCP socket right here: a refusal is the peer's rejection.
    auto ec = last_system_error();
    if (ec == std::errc::connection_refused) ec = cm_errc::connection_rejected;
    co_return result{ec, queue_pair{}};
  }
  rdma_conn_param answer{};
  if (auto ec = co_await detail::expect(*channel, RDMA_CM_EVENT_ESTABLISHED, &answer)) co_return result{ec, queue_pair{}};
  state->set_ord(answer.responder_resources ? std::min(param.initiator_depth, answer.responder_resources)
                                            : param.initiator_depth);
  state->adopt_channel(channel->release());
  state->start_events();
  co_return result{std::error_code{}, queue_pair(std::move(state))};
}

// The overloads without `options` below stand in for default arguments on purpose: GCC 12 does
// not keep a defaulted argument whose type owns memory (options::device) alive across the
// caller's co_await, and frees a stack address when the caller's statement ends.

/// connect() with default options.
inline asio::awaitable<std::pair<std::error_code, queue_pair>> connect(asio::any_io_executor ex, std::string host,
                                                                        std::uint16_t port) {
  return connect(std::move(ex), std::move(host), port, options{});
}

/// A passive RDMA CM endpoint bound to an address and port.
class listener {
 public:
  /// Binds to `address` ("" or "::" or "0.0.0.0" for every address) and `port` (0: 445,
  /// or 5445 when the address belongs to an iWARP device) and listens. Errors: invalid
  /// address, errno of rdma_bind_addr (EADDRINUSE, EACCES below 1024 without privilege, ...).
  static asio::awaitable<std::pair<std::error_code, std::unique_ptr<listener>>> open(asio::any_io_executor ex,
                                                                                      std::string address,
                                                                                      std::uint16_t port,
                                                                                      options o) {
    using result = std::pair<std::error_code, std::unique_ptr<listener>>;
    auto [rec, local] = detail::resolve(address, port, true);
    if (rec) co_return result{rec, nullptr};
    auto [cec, channel] = detail::event_channel::create(ex);
    if (cec) co_return result{cec, nullptr};
    std::unique_ptr<listener> l(new listener(ex, std::move(o), std::move(channel)));
    if (rdma_create_id(l->channel_->get(), &l->id_, nullptr, RDMA_PS_TCP)) co_return result{last_system_error(), nullptr};
    if (port == 0) {
      // Bound to a specific address, the identifier knows its device: pick its port.
      if (rdma_bind_addr(l->id_, local.get())) co_return result{last_system_error(), nullptr};
      const std::uint16_t p = detail::default_port(l->id_->verbs);
      rdma_destroy_id(l->id_);
      l->id_ = nullptr;
      detail::set_port(local, p);
      if (rdma_create_id(l->channel_->get(), &l->id_, nullptr, RDMA_PS_TCP)) co_return result{last_system_error(), nullptr};
    }
    if (rdma_bind_addr(l->id_, local.get())) co_return result{last_system_error(), nullptr};
    if (rdma_listen(l->id_, l->options_.listen_backlog)) co_return result{last_system_error(), nullptr};
    co_return result{std::error_code{}, std::move(l)};
  }

  /// open() with default options (see connect() for why this is not a default argument).
  static asio::awaitable<std::pair<std::error_code, std::unique_ptr<listener>>> open(asio::any_io_executor ex,
                                                                                      std::string address,
                                                                                      std::uint16_t port) {
    return open(std::move(ex), std::move(address), port, options{});
  }

  ~listener() {
    if (id_) rdma_destroy_id(id_);
  }

  /// The bound port (host order).
  std::uint16_t port() const { return ntohs(rdma_get_src_port(id_)); }

  /// Waits for the next connection request, creates its queue pair, posts one receive for the
  /// peer's Negotiate Request, accepts, and waits for ESTABLISHED. A request that cannot be
  /// served is rejected and the error returned; the listener keeps listening. Errors: as
  /// connect(), and operation_aborted after cancel().
  asio::awaitable<std::pair<std::error_code, queue_pair>> accept() {
    using result = std::pair<std::error_code, queue_pair>;
    for (;;) {
      auto [ec, e] = co_await channel_->next();
      if (ec) co_return result{ec, queue_pair{}};
      if (e.type != RDMA_CM_EVENT_CONNECT_REQUEST) continue;  // e.g. a departed request's leftovers
      detail::trace("accept: connect request (initiator_depth %u, responder_resources %u)",
                    unsigned(e.conn.initiator_depth), unsigned(e.conn.responder_resources));
      auto [chec, own] = detail::event_channel::create(executor_);
      if (chec) {
        rdma_reject(e.id, nullptr, 0);
        rdma_destroy_id(e.id);
        co_return result{chec, queue_pair{}};
      }
      auto state = std::make_shared<detail::qp_state>(executor_, options_, e.id);
      if (rdma_migrate_id(e.id, own->get())) {
        rdma_reject(e.id, nullptr, 0);
        co_return result{last_system_error(), queue_pair{}};
      }
      if (auto rec = state->create_resources()) {
        rdma_reject(e.id, nullptr, 0);
        co_return result{rec, queue_pair{}};
      }
      if (auto pec = state->prepost_receive()) {
        rdma_reject(e.id, nullptr, 0);
        co_return result{pec, queue_pair{}};
      }
      rdma_conn_param param =
          detail::conn_param(options_, state->device(), e.conn.initiator_depth, e.conn.responder_resources);
      state->set_ord(param.initiator_depth);
      detail::trace("accept: rdma_accept (initiator_depth %u, responder_resources %u)", unsigned(param.initiator_depth),
                    unsigned(param.responder_resources));
      if (rdma_accept(e.id, &param)) co_return result{last_system_error(), queue_pair{}};
      if (auto eec = co_await detail::expect(*own, RDMA_CM_EVENT_ESTABLISHED)) co_return result{eec, queue_pair{}};
      state->adopt_channel(own->release());
      state->start_events();
      co_return result{std::error_code{}, queue_pair(std::move(state))};
    }
  }

  /// Stops a pending accept() (it returns operation_aborted).
  void cancel() { channel_->cancel(); }

 private:
  listener(asio::any_io_executor ex, options o, std::unique_ptr<detail::event_channel> ch)
      : executor_(std::move(ex)), options_(std::move(o)), channel_(std::move(ch)) {}

  asio::any_io_executor executor_;
  options options_;
  std::unique_ptr<detail::event_channel> channel_;
  rdma_cm_id* id_ = nullptr;
};

/// Both ends of one connection on one device, in this process (self-tests, benchmarks).
using self_connection = smbdirect::self_connection<queue_pair>;

/// Listens on `address` and `port` (0: SMB Direct's port for the device), connects to it and
/// accepts, at once. The accepted end (`server`) runs on `server_ex`, which may be another
/// thread's; the connecting end (`client`) on the calling coroutine's executor. Errors: as
/// listener::open, connect() and listener::accept().
inline asio::awaitable<self_connection> connect_to_self(asio::any_io_executor server_ex, std::string address,
                                                        std::uint16_t port, options o) {
  using connect_with_options = asio::awaitable<std::pair<std::error_code, queue_pair>> (*)(
      asio::any_io_executor, std::string, std::uint16_t, options);
  return smbdirect::detail::connect_to_self<queue_pair, listener>(std::move(server_ex), std::move(address), port, o,
                                                                  static_cast<connect_with_options>(&connect));
}

/// connect_to_self() with default options (see connect() for why this is not a default argument).
inline asio::awaitable<self_connection> connect_to_self(asio::any_io_executor server_ex, std::string address,
                                                        std::uint16_t port) {
  return connect_to_self(std::move(server_ex), std::move(address), port, options{});
}

}  // namespace smbdirect::verbs
