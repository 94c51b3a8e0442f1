// The verbs transport: one RDMA reliable connected queue pair from rdma-core, modelling
// smbdirect::transport. connect() and listener (connection_manager.hpp) create it.
//
// Resources per connection: a protection domain, one completion queue shared by the send and
// receive queues, a completion channel, and two buffer pools registered once: receive buffers
// (receive_depth x max_receive_size bytes) and send buffers (send_depth x max_send_size).
// A SEND gathers the caller's memory in place where a registration (any access, including
// access::local) covers it, and copies the rest (the engine's 24-byte headers, unregistered
// memory) into a send buffer. The engine keeps its receive buffers in memory this queue pair
// lends it (receive_memory(), registered once), so receives land in place; a receive posted
// elsewhere lands in a receive buffer and is copied into the engine's on completion. RDMA
// read/write work requests use the caller's memory in place: its lkey comes from a
// registration covering it, else from a memory region registered for that work request
// (ibv_reg_mr and ibv_dereg_mr: system calls).
//
// Completions: the completion channel's and the RDMA CM event channel's file descriptors are
// non-blocking and awaited with asio::posix::stream_descriptor on the connection's executor,
// so every completion is handled there (never on a poller thread). options::busy_poll polls
// the completion queue instead of sleeping on the channel, for latency.
//
// Send queue order: sends, RDMA work requests and memory window binds are posted in call
// order. When the send queue is full, or an RDMA read would exceed the negotiated ORD, work
// requests wait in order in a backlog and are posted as completions free room.
//
// Threading: not thread-safe; use it from its executor only (as the engine does).
#pragma once

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/use_awaitable.hpp>

#include "smbdirect/detail/queue_pair_handle.hpp"
#include "smbdirect/detail/ring_queue.hpp"
#include "smbdirect/error.hpp"
#include "smbdirect/parameters.hpp"
#include "smbdirect/transport.hpp"
#include "smbdirect/verbs/device.hpp"
#include "smbdirect/verbs/error.hpp"

namespace smbdirect::verbs {

/// Sizes and behaviour of a verbs queue pair. Depths in work requests, sizes in bytes.
struct options {
  /// Receive queue depth: at least parameters::receive_credit_max + 1 (the engine may post one
  /// receive past ReceiveCreditMax for its last send credit, [MS-SMBD] 3.1.5.9).
  std::uint32_t receive_depth = 256;
  /// Sends in flight: at least parameters::send_credit_target + 2 (grants and keepalives).
  std::uint32_t send_depth = 257;
  /// RDMA read/write work requests in flight besides sends (more wait in order).
  std::uint32_t rdma_depth = 64;
  /// Bytes per send buffer: at least MaxSendSize.
  std::uint32_t max_send_size = 1364;
  /// Bytes per receive buffer: at least max(MaxReceiveSize, 512).
  std::uint32_t max_receive_size = 1364;
  /// ORD: RDMA reads we issue at once; capped by the device's max_qp_init_rd_atom and by the
  /// peer's responder resources.
  std::uint8_t initiator_depth = 16;
  /// IRD: RDMA reads we serve at once; capped by the device's max_qp_rd_atom.
  std::uint8_t responder_resources = 16;
  /// Transport retries on a lost packet (rdma_conn_param.retry_count, 0-7). RNR retries are
  /// always 0: SMB Direct's credits guarantee a posted receive, so RNR is a peer bug.
  std::uint8_t retry_count = 6;
  /// Poll the completion queue instead of sleeping on the completion channel.
  bool busy_poll = false;
  /// Give each registration its own memory window (type 2) where the device supports them.
  bool memory_windows = true;
  /// Require this device (e.g. "rxe0"); empty: whichever device the address resolves to.
  std::string device;
  /// RDMA CM address and route resolution timeout.
  milliseconds resolve_timeout{2000};
  /// Connection requests queued at a listener.
  int listen_backlog = 64;

  /// Depths and buffer sizes that fit `p` exactly.
  static options for_parameters(const parameters& p) {
    options o;
    o.receive_depth = std::uint32_t{p.receive_credit_max} + 1;
    o.send_depth = std::uint32_t{p.send_credit_target} + 2;
    o.max_send_size = p.max_send_size;
    o.max_receive_size = std::max<std::uint32_t>(p.max_receive_size, 512);
    return o;
  }
};

namespace detail {

enum class sq_kind : std::uint8_t { send, rdma_write, rdma_read, bind };

// wr_id layout toward the device: the top bit tells the queue, the rest is a record index.
inline constexpr std::uint64_t receive_flag = std::uint64_t{1} << 63;

/// A registered array of equal slots.
struct buffer_pool {
  std::vector<std::byte> storage;
  ibv_mr* mr = nullptr;
  std::uint32_t slot_size = 0;
  std::vector<std::uint32_t> free;

  std::error_code create(ibv_pd* pd, std::uint32_t slots, std::uint32_t size, int access) {
    slot_size = size;
    storage.resize(std::size_t{slots} * size);
    mr = ibv_reg_mr(pd, storage.data(), storage.size(), access);
    if (!mr) return last_system_error();
    for (std::uint32_t i = slots; i-- > 0;) free.push_back(i);
    return {};
  }
  std::byte* slot(std::uint32_t i) { return storage.data() + std::size_t{i} * slot_size; }
  void destroy() {
    if (mr) ibv_dereg_mr(mr);
    mr = nullptr;
  }
};

struct receive_record {
  std::uint64_t wr_id = 0;
  std::span<std::byte> target;  // the engine's buffer
  bool outstanding = false;
  bool in_place = false;  // posted into `target` itself (in the receive area): nothing to copy
};

struct sq_record {
  std::uint64_t wr_id = 0;
  sq_kind kind = sq_kind::send;
  std::uint32_t send_slot = 0;
  std::uint32_t sge_count = 0;
  std::array<ibv_sge, max_send_sge> sge{};
  std::array<ibv_mr*, max_send_sge> temporary{};  // per-work-request registrations
  std::uint64_t remote_address = 0;
  std::uint32_t token = 0;  // rkey (RDMA) or the token to invalidate (Send with Invalidate)
  ibv_mw* mw = nullptr;     // bind: the window
  ibv_mr* mw_mr = nullptr;  // bind: the region it opens
  std::uint32_t length = 0;
  int mw_access = 0;
};

struct region {
  ibv_mr* mr = nullptr;
  ibv_mw* mw = nullptr;  // set when the token is a memory window's rkey
  memory_region mr_info;
  bool local_write = false;
};

inline std::error_code set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return last_system_error();
  return {};
}

/// Everything one connection owns. Shared by the queue_pair handle and its coroutines.
class qp_state : public std::enable_shared_from_this<qp_state> {
 public:
  /// Owns `id` from now on (rdma_destroy_id at the end).
  qp_state(asio::any_io_executor ex, options o, rdma_cm_id* id)
      : executor_(std::move(ex)), options_(std::move(o)), id_(id) {}

  qp_state(const qp_state&) = delete;
  qp_state& operator=(const qp_state&) = delete;

  ~qp_state() {
    if (cm_fd_) cm_fd_->release();
    if (comp_fd_) comp_fd_->release();
    // Windows first: a bound window holds its queue pair, and destroying the queue pair
    // first stalls in rdma_rxe until a timeout.
    for (auto& [token, r] : regions_) release(r);
    if (id_ && id_->qp) rdma_destroy_qp(id_);
    if (cq_) {
      if (unacked_events_) ibv_ack_cq_events(cq_, unacked_events_);
      ibv_destroy_cq(cq_);
    }
    if (comp_) ibv_destroy_comp_channel(comp_);
    for (auto& rec : sq_)
      for (std::uint32_t i = 0; i < rec.sge_count; ++i)
        if (rec.temporary[i]) ibv_dereg_mr(rec.temporary[i]);
    send_pool_.destroy();
    receive_pool_.destroy();
    receive_area_.destroy();
    if (pd_) ibv_dealloc_pd(pd_);
    if (id_) rdma_destroy_id(id_);
    if (channel_) rdma_destroy_event_channel(channel_);
  }

  /// Creates the protection domain, completion queue, queue pair and pools on id_'s device.
  std::error_code create_resources() {
    auto [qec, dev] = query_device(id_->verbs, id_->port_num ? id_->port_num : 1);
    if (qec) return qec;
    device_ = dev;
    if (!options_.device.empty() && options_.device != device_.name) return cm_errc::no_matching_device;
    if (options_.receive_depth == 0 || options_.send_depth == 0 || options_.max_send_size == 0 ||
        options_.max_receive_size == 0)
      return errc::invalid_argument;
    if (options_.receive_depth > device_.max_qp_wr || options_.send_depth > device_.max_qp_wr)
      return cm_errc::queue_too_deep;
    sq_capacity_ = std::min<std::uint64_t>(std::uint64_t{options_.send_depth} + options_.rdma_depth, device_.max_qp_wr);
    const std::uint64_t cq_entries = std::uint64_t{sq_capacity_} + options_.receive_depth;
    if (cq_entries > device_.max_cqe) return cm_errc::queue_too_deep;
    max_sge_ = std::min<std::uint32_t>(max_send_sge, device_.max_sge);
    use_memory_windows_ = options_.memory_windows && device_.memory_window_type_2;

    if (!(pd_ = ibv_alloc_pd(id_->verbs))) return last_system_error();
    if (!(comp_ = ibv_create_comp_channel(id_->verbs))) return last_system_error();
    if (auto ec = set_nonblocking(comp_->fd)) return ec;
    if (!(cq_ = ibv_create_cq(id_->verbs, static_cast<int>(cq_entries), nullptr, comp_, 0))) return last_system_error();
    ibv_qp_init_attr attr{};
    attr.send_cq = cq_;
    attr.recv_cq = cq_;
    attr.qp_type = IBV_QPT_RC;
    attr.cap.max_send_wr = sq_capacity_;
    attr.cap.max_recv_wr = options_.receive_depth;
    attr.cap.max_send_sge = max_sge_;
    attr.cap.max_recv_sge = 1;
    if (rdma_create_qp(id_, pd_, &attr)) return last_system_error();
    if (auto ec = send_pool_.create(pd_, options_.send_depth, options_.max_send_size, 0)) return ec;
    if (auto ec = receive_pool_.create(pd_, options_.receive_depth, options_.max_receive_size, IBV_ACCESS_LOCAL_WRITE))
      return ec;
    receives_.resize(options_.receive_depth);
    comp_fd_.emplace(executor_, comp_->fd);
    return {};
  }

  /// Takes ownership of the identifier's own (non-blocking) RDMA CM event channel.
  void adopt_channel(rdma_event_channel* channel) { channel_ = channel; }

  /// Starts watching the RDMA CM event channel (disconnects) once the connection exists.
  void start_events() {
    cm_fd_.emplace(executor_, channel_->fd);
    asio::co_spawn(executor_, [self = shared_from_this()] { return self->cm_loop(); }, asio::detached);
  }

  /// Passive side, before rdma_accept: posts one receive of our own, as a kernel SMB Direct
  /// server does, so the peer's Negotiate Request finds it however soon it comes
  /// (rnr_retry_count is 0). The engine's first post_receive takes it over.
  std::error_code prepost_receive() {
    const std::uint32_t slot = receive_pool_.free.back();
    if (auto ec = post_receive_slot(
            slot, {reinterpret_cast<std::uintptr_t>(receive_pool_.slot(slot)), receive_pool_.slot_size, receive_pool_.mr->lkey}))
      return ec;
    receives_[slot] = {0, {}, true};
    preposted_ = slot;
    return {};
  }

  void set_ord(std::uint32_t ord) { ord_ = std::max<std::uint32_t>(1, ord); }
  std::uint32_t ord() const { return ord_; }
  const device_info& device() const { return device_; }
  rdma_cm_id* id() const { return id_; }
  const asio::any_io_executor& executor() const { return executor_; }

  // ------------------------------------------------------------------ posting

  std::error_code post_receive(std::uint64_t wr_id, std::span<std::byte> buf) {
    if (buf.size() > receive_pool_.slot_size) return errc::invalid_argument;
    if (preposted_) {  // take over the receive posted before rdma_accept
      const std::uint32_t slot = *std::exchange(preposted_, std::nullopt);
      receives_[slot].wr_id = wr_id;
      receives_[slot].target = buf;
      if (early_) {  // it already completed
        synthetic_.push_back(complete_receive(slot, *std::exchange(early_, std::nullopt)));
        wake();
      }
      return {};
    }
    if (disconnected_) return flushed(wr_id, work_opcode::receive);
    if (receive_pool_.free.empty()) return std::make_error_code(std::errc::no_buffer_space);
    // The record takes a pool slot even in place: at most receive_depth receives are posted.
    const std::uint32_t slot = receive_pool_.free.back();
    const bool in_place = receive_area_.mr && buf.data() >= receive_area_.storage.data() &&
                          buf.data() + buf.size() <= receive_area_.storage.data() + receive_area_.storage.size();
    const ibv_sge sge = in_place ? ibv_sge{reinterpret_cast<std::uintptr_t>(buf.data()),
                                           static_cast<std::uint32_t>(buf.size()), receive_area_.mr->lkey}
                                 : ibv_sge{reinterpret_cast<std::uintptr_t>(receive_pool_.slot(slot)),
                                           static_cast<std::uint32_t>(buf.size()), receive_pool_.mr->lkey};
    if (auto ec = post_receive_slot(slot, sge)) return ec;
    receives_[slot] = {wr_id, buf, true, in_place};
    return {};
  }

  /// Memory for the engine's receive buffers (receive_memory_transport): `bytes` bytes
  /// registered for local write, owned by this queue pair. Empty when registration fails or
  /// when called again (the area is made once).
  std::span<std::byte> receive_memory(std::size_t bytes) {
    if (receive_area_.mr || bytes == 0 || bytes > 0xffffffffu) return {};
    bool made = false;
    try {
      made = !receive_area_.create(pd_, 1, static_cast<std::uint32_t>(bytes), IBV_ACCESS_LOCAL_WRITE);
    } catch (const std::bad_alloc&) {
    }
    if (!made) receive_area_ = {};  // frees the memory; the engine receives into its own
    return receive_area_.storage;
  }

  std::error_code post_send(std::uint64_t wr_id, std::span<const asio::const_buffer> gather, std::uint32_t invalidate) {
    if (disconnected_) return flushed(wr_id, work_opcode::send);
    const std::size_t total = asio::buffer_size(gather);
    if (total > send_pool_.slot_size) return errc::invalid_argument;
    if (send_pool_.free.empty()) return std::make_error_code(std::errc::no_buffer_space);
    const std::uint32_t slot = send_pool_.free.back();
    send_pool_.free.pop_back();
    auto [index, rec] = new_record(wr_id, sq_kind::send);
    rec.send_slot = slot;
    rec.token = invalidate;
    if (!gather_in_place(rec, gather)) {  // one copy of it all, one scatter-gather entry
      asio::buffer_copy(asio::buffer(send_pool_.slot(slot), total), gather);
      rec.sge_count = 1;
      rec.sge[0] = {reinterpret_cast<std::uintptr_t>(send_pool_.slot(slot)), static_cast<std::uint32_t>(total),
                    send_pool_.mr->lkey};
    }
    return enqueue(index);
  }

  template <class Buffer>
  std::error_code post_rdma(std::uint64_t wr_id, std::span<const Buffer> local, std::uint64_t remote_address,
                            std::uint32_t token, sq_kind kind) {
    const work_opcode opcode = kind == sq_kind::rdma_read ? work_opcode::rdma_read : work_opcode::rdma_write;
    if (disconnected_) return flushed(wr_id, opcode);
    if (local.size() > max_sge_) return errc::invalid_argument;
    auto [index, rec] = new_record(wr_id, kind);
    for (const auto& piece : local) {
      auto* p = const_cast<void*>(static_cast<const void*>(piece.data()));
      ibv_mr* temporary = nullptr;
      auto lkey = local_key(p, piece.size(), kind == sq_kind::rdma_read, temporary);
      rec.temporary[rec.sge_count] = temporary;
      rec.sge[rec.sge_count++] = {reinterpret_cast<std::uintptr_t>(p), static_cast<std::uint32_t>(piece.size()),
                                  lkey.value_or(0)};
      if (!lkey) {
        auto ec = last_system_error();
        free_record(index);
        return ec;
      }
    }
    rec.remote_address = remote_address;
    rec.token = token;
    return enqueue(index);
  }

  // ------------------------------------------------------------------ memory

  std::pair<std::error_code, memory_region> register_memory(asio::mutable_buffer buf, access rights) {
    if (buf.size() == 0 || buf.size() > 0xffffffffu || !valid_registration_rights(rights)) return {errc::invalid_argument, {}};
    if (disconnected_) return {errc::work_request_flushed, {}};
    int flags = rights == access::local ? IBV_ACCESS_LOCAL_WRITE : 0;  // local: a send source or RDMA-read sink
    if (allows(rights, access::remote_read)) flags |= IBV_ACCESS_REMOTE_READ;
    if (allows(rights, access::remote_write)) flags |= IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
    region r;
    r.local_write = (flags & IBV_ACCESS_LOCAL_WRITE) != 0;
    const auto address = reinterpret_cast<std::uint64_t>(buf.data());
    if (use_memory_windows_ && rights != access::local) {
      // The region grants nothing remotely by itself; a type 2 window bound to this queue
      // pair does, under a fresh rkey that a Send with Invalidate or deregistration revokes.
      r.mr = ibv_reg_mr(pd_, buf.data(), buf.size(), (flags & IBV_ACCESS_LOCAL_WRITE) | IBV_ACCESS_MW_BIND);
      if (r.mr) r.mw = ibv_alloc_mw(pd_, IBV_MW_TYPE_2);
      if (r.mr && r.mw) {
        auto [index, rec] = new_record(0, sq_kind::bind);
        rec.mw = r.mw;
        rec.mw_mr = r.mr;
        rec.remote_address = address;
        rec.length = static_cast<std::uint32_t>(buf.size());
        rec.mw_access = flags & ~IBV_ACCESS_LOCAL_WRITE;
        rec.token = ibv_inc_rkey(r.mw->rkey);
        const std::uint32_t token = rec.token;
        if (auto ec = enqueue(index)) {
          release(r);
          return {ec, {}};
        }
        r.mr_info = {address, token, static_cast<std::uint32_t>(buf.size()), rights};
        regions_.emplace(token, r);
        return {{}, r.mr_info};
      }
      release(r);  // fall back to a plain region
      r = region{};
      r.local_write = (flags & IBV_ACCESS_LOCAL_WRITE) != 0;
    }
    r.mr = ibv_reg_mr(pd_, buf.data(), buf.size(), flags);
    if (!r.mr) return {last_system_error(), {}};
    // A region without remote access may have no meaningful rkey: its lkey names it.
    const std::uint32_t token = rights == access::local ? r.mr->lkey : r.mr->rkey;
    r.mr_info = {address, token, static_cast<std::uint32_t>(buf.size()), rights};
    if (!regions_.emplace(token, r).second) {  // the device reused a live key: never expected
      release(r);
      return {errc::internal_error, {}};
    }
    return {{}, r.mr_info};
  }

  std::error_code deregister_memory(const memory_region& mr) {
    auto it = regions_.find(mr.token);
    if (it == regions_.end()) return errc::invalid_token;
    forget(it);
    return {};
  }

  // ------------------------------------------------------------------ completions

  asio::awaitable<std::size_t> poll(std::span<work_completion> out) {
    auto self = shared_from_this();  // the handle may be moved or destroyed while we wait
    for (;;) {
      if (std::size_t n = take_completions(out)) co_return n;
      if (drained()) co_return 0;
      if (options_.busy_poll) {
        co_await asio::post(executor_, asio::use_awaitable);
        continue;
      }
      if (!armed_) {
        ibv_req_notify_cq(cq_, 0);
        armed_ = true;
        continue;  // poll once more: a completion may have arrived before arming
      }
      co_await comp_fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                                    asio::experimental::as_tuple(asio::use_awaitable));
      ibv_cq* cq = nullptr;
      void* context = nullptr;
      while (ibv_get_cq_event(comp_, &cq, &context) == 0) {
        ++unacked_events_;
        armed_ = false;
      }
      if (unacked_events_ >= 64) {
        ibv_ack_cq_events(cq_, unacked_events_);
        unacked_events_ = 0;
      }
    }
  }

  void begin_batch() noexcept { ++batch_depth_; }
  /// Never throws (it runs in a destructor): if flushing work requests cannot allocate their
  /// completions, they stay in the backlog and the next poll pumps again.
  void end_batch() noexcept {
    if (--batch_depth_ != 0) return;
    try {
      pump();
    } catch (const std::bad_alloc&) {
    }
    if (!synthetic_.empty() || !backlog_.empty()) wake();
  }

  /// Moves the queue pair to the error state: outstanding work requests are flushed.
  void disconnect() {
    if (disconnected_) return;
    if (id_->qp) rdma_disconnect(id_);
    on_disconnected();
  }

  std::error_code post_rdma_write(std::uint64_t wr_id, std::span<const asio::const_buffer> local,
                                  std::uint64_t remote_address, std::uint32_t token) {
    return post_rdma(wr_id, local, remote_address, token, sq_kind::rdma_write);
  }
  std::error_code post_rdma_read(std::uint64_t wr_id, std::span<const asio::mutable_buffer> local,
                                 std::uint64_t remote_address, std::uint32_t token) {
    return post_rdma(wr_id, local, remote_address, token, sq_kind::rdma_read);
  }

  /// The handle is gone: disconnect, stop the event loops so they release this state.
  void release() {
    disconnect();
    shut_down_ = true;
    if (cm_fd_) cm_fd_->cancel();
    if (comp_fd_) comp_fd_->cancel();
  }

  transport_info info() const {
    return {device_.name, max_sge_, send_pool_.slot_size, static_cast<std::uint32_t>(std::min<std::uint64_t>(device_.max_mr_size, 0xffffffffu))};
  }

  bool uses_memory_windows() const { return use_memory_windows_; }
  std::uint64_t receives_copied() const { return receives_copied_; }

 private:
  /// Posts a receive into `sge`, recorded under pool slot `slot`.
  std::error_code post_receive_slot(std::uint32_t slot, ibv_sge sge) {
    ibv_recv_wr wr{};
    wr.wr_id = receive_flag | slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    if (int rc = ibv_post_recv(id_->qp, &wr, &bad)) return {rc, std::system_category()};
    receive_pool_.free.pop_back();
    return {};
  }

  std::error_code flushed(std::uint64_t wr_id, work_opcode opcode) {
    synthetic_.push_back({wr_id, opcode, errc::work_request_flushed});
    wake();
    return {};
  }

  std::pair<std::uint32_t, sq_record&> new_record(std::uint64_t wr_id, sq_kind kind) {
    std::uint32_t index;
    if (sq_free_.empty()) {
      index = static_cast<std::uint32_t>(sq_.size());
      sq_.emplace_back();
    } else {
      index = sq_free_.back();
      sq_free_.pop_back();
      sq_[index] = {};
    }
    sq_[index].wr_id = wr_id;
    sq_[index].kind = kind;
    return {index, sq_[index]};
  }

  void free_record(std::uint32_t index) {
    sq_record& rec = sq_[index];
    for (std::uint32_t i = 0; i < rec.sge_count; ++i)
      if (rec.temporary[i]) ibv_dereg_mr(std::exchange(rec.temporary[i], nullptr));
    rec.sge_count = 0;
    if (rec.kind == sq_kind::send) send_pool_.free.push_back(rec.send_slot);
    sq_free_.push_back(index);
  }

  /// The lkey for local memory [p, p+n): a registration that covers it with the access
  /// needed, else a region registered for this work request (`temporary`). nullopt: errno.
  std::optional<std::uint32_t> local_key(void* p, std::size_t n, bool sink, ibv_mr*& temporary) {
    if (const region* r = covering(p, n, sink)) return r->mr->lkey;
    const bool need_remote_write = sink && device_.iwarp;  // see covering()
    const int flags = sink ? IBV_ACCESS_LOCAL_WRITE | (need_remote_write ? IBV_ACCESS_REMOTE_WRITE : 0) : 0;
    temporary = ibv_reg_mr(pd_, p, n, flags);
    if (!temporary) return std::nullopt;
    return temporary->lkey;
  }

  /// A registration whose memory region covers [p, p+n) with the local access needed, or
  /// null. The last one found is tried first: a worker reuses its buffer.
  const region* covering(const void* p, std::size_t n, bool sink) {
    const auto a = reinterpret_cast<std::uint64_t>(p);
    // An iWARP RDMA Read Response is a tagged write into the sink: it needs REMOTE_WRITE.
    const bool need_remote_write = sink && device_.iwarp;
    auto fits = [&](const region& r) {
      return a >= r.mr_info.address && a + n <= r.mr_info.address + r.mr_info.length && (!sink || r.local_write) &&
             !(need_remote_write && (r.mw || !allows(r.mr_info.rights, access::remote_write)));
    };
    if (last_covering_ && fits(*last_covering_)) return last_covering_;
    for (auto& [token, r] : regions_)
      if (fits(r)) return last_covering_ = &r;
    return nullptr;
  }

  /// Fills a send's scatter-gather list from `gather`: pieces that a registration covers in
  /// place, the others (the engine's headers, small pieces) copied into its send buffer,
  /// adjacent copies merged into one entry. False when no piece is covered, or the entries
  /// would exceed the device's max_sge: then the caller copies it all.
  bool gather_in_place(sq_record& rec, std::span<const asio::const_buffer> gather) {
    // Below this many bytes a copy costs less than looking for a registration (the engine's
    // 24-byte header is never registered).
    constexpr std::size_t copy_below = 256;
    if (regions_.empty()) return false;
    std::byte* const bounce = send_pool_.slot(rec.send_slot);
    std::size_t copied = 0;
    bool any_in_place = false;
    rec.sge_count = 0;
    for (const auto& piece : gather) {
      if (piece.size() == 0) continue;
      const region* r = piece.size() >= copy_below ? covering(piece.data(), piece.size(), false) : nullptr;
      if (r) {
        if (rec.sge_count == max_sge_) return false;
        rec.sge[rec.sge_count++] = {reinterpret_cast<std::uintptr_t>(piece.data()),
                                    static_cast<std::uint32_t>(piece.size()), r->mr->lkey};
        any_in_place = true;
        continue;
      }
      std::memcpy(bounce + copied, piece.data(), piece.size());
      const auto at = reinterpret_cast<std::uintptr_t>(bounce + copied);
      copied += piece.size();
      ibv_sge* last = rec.sge_count ? &rec.sge[rec.sge_count - 1] : nullptr;
      if (last && last->lkey == send_pool_.mr->lkey && last->addr + last->length == at) {
        last->length += static_cast<std::uint32_t>(piece.size());
        continue;
      }
      if (rec.sge_count == max_sge_) return false;
      rec.sge[rec.sge_count++] = {at, static_cast<std::uint32_t>(piece.size()), send_pool_.mr->lkey};
    }
    return any_in_place;
  }

  /// Deregisters `it` and drops it from regions_.
  void forget(std::unordered_map<std::uint32_t, region>::iterator it) {
    if (last_covering_ == &it->second) last_covering_ = nullptr;
    release(it->second);
    regions_.erase(it);
  }

  void release(region& r) {
    if (r.mw) ibv_dealloc_mw(std::exchange(r.mw, nullptr));
    if (r.mr) ibv_dereg_mr(std::exchange(r.mr, nullptr));
  }

  std::error_code enqueue(std::uint32_t index) {
    if (batch_depth_ == 0 && backlog_.empty() && can_post(sq_[index])) {
      if (int rc = post_now(sq_[index], index)) {
        free_record(index);
        return {rc, std::system_category()};
      }
      return {};
    }
    backlog_.push_back(index);
    return {};
  }

  bool can_post(const sq_record& rec) const {
    return sq_outstanding_ < sq_capacity_ && (rec.kind != sq_kind::rdma_read || reads_outstanding_ < ord_);
  }

  int post_now(sq_record& rec, std::uint32_t index) {
    ibv_send_wr wr{};
    fill_work_request(wr, rec, index);
    ibv_send_wr* bad = nullptr;
    if (int rc = ibv_post_send(id_->qp, &wr, &bad)) return rc;
    count_posted(rec);
    return 0;
  }

  void count_posted(const sq_record& rec) noexcept {
    ++sq_outstanding_;
    if (rec.kind == sq_kind::rdma_read) ++reads_outstanding_;
  }

  static void fill_work_request(ibv_send_wr& wr, sq_record& rec, std::uint32_t index) {
    wr.wr_id = index;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.sg_list = rec.sge.data();
    wr.num_sge = static_cast<int>(rec.sge_count);
    switch (rec.kind) {
      case sq_kind::send:
        wr.opcode = rec.token ? IBV_WR_SEND_WITH_INV : IBV_WR_SEND;
        wr.invalidate_rkey = rec.token;
        break;
      case sq_kind::rdma_write:
      case sq_kind::rdma_read:
        wr.opcode = rec.kind == sq_kind::rdma_write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
        wr.wr.rdma.remote_addr = rec.remote_address;
        wr.wr.rdma.rkey = rec.token;
        break;
      case sq_kind::bind:
        wr.opcode = IBV_WR_BIND_MW;
        wr.num_sge = 0;
        wr.sg_list = nullptr;
        wr.bind_mw.mw = rec.mw;
        wr.bind_mw.rkey = rec.token;
        wr.bind_mw.bind_info.mr = rec.mw_mr;
        wr.bind_mw.bind_info.addr = rec.remote_address;
        wr.bind_mw.bind_info.length = rec.length;
        wr.bind_mw.bind_info.mw_access_flags = static_cast<unsigned>(rec.mw_access);
        break;
    }
  }

  static work_opcode opcode_of(sq_kind k) {
    switch (k) {
      case sq_kind::rdma_write: return work_opcode::rdma_write;
      case sq_kind::rdma_read: return work_opcode::rdma_read;
      default: return work_opcode::send;
    }
  }

  /// Posts what waits in the backlog, in order, while there is room: up to 32 work requests
  /// chained per ibv_post_send. A work request the provider refuses completes with its errno
  /// and disconnects (what follows it is flushed). Inside a batch, end_batch() does this.
  void pump() {
    if (batch_depth_ > 0) return;
    while (!backlog_.empty()) {
      if (disconnected_) {
        const std::uint32_t index = backlog_.front();
        if (sq_[index].kind != sq_kind::bind)
          synthetic_.push_back({sq_[index].wr_id, opcode_of(sq_[index].kind), errc::work_request_flushed});
        free_record(index);
        backlog_.pop_front();
        continue;
      }
      std::array<ibv_send_wr, 32> chain;
      std::size_t n = 0;
      std::uint32_t sq = sq_outstanding_, reads = reads_outstanding_;
      for (; n < chain.size() && n < backlog_.size(); ++n) {
        sq_record& rec = sq_[backlog_[n]];
        const bool read = rec.kind == sq_kind::rdma_read;
        if (sq >= sq_capacity_ || (read && reads >= ord_)) break;
        ++sq, reads += read;
        chain[n] = {};
        fill_work_request(chain[n], rec, backlog_[n]);
        if (n > 0) chain[n - 1].next = &chain[n];
      }
      if (n == 0) return;  // no room until completions come
      ibv_send_wr* bad = nullptr;
      const int rc = ibv_post_send(id_->qp, chain.data(), &bad);
      // On failure the provider posted the list up to `bad`, which it refused (ibv_post_send(3));
      // without `bad`, nothing counts as posted.
      const std::size_t posted = rc == 0 ? n : bad ? static_cast<std::size_t>(bad - chain.data()) : 0;
      for (std::size_t i = 0; i < posted; ++i) {
        count_posted(sq_[backlog_.front()]);
        backlog_.pop_front();
      }
      if (rc != 0) {
        const std::uint32_t index = backlog_.front();
        if (sq_[index].kind != sq_kind::bind)  // a bind is ours: the engine has no work request to complete
          synthetic_.push_back({sq_[index].wr_id, opcode_of(sq_[index].kind), std::error_code(rc, std::system_category())});
        free_record(index);
        backlog_.pop_front();
        disconnect();
      }
    }
  }

  std::size_t take_completions(std::span<work_completion> out) {
    std::size_t n = 0;
    while (n < out.size() && !synthetic_.empty()) {
      out[n++] = synthetic_.front();
      synthetic_.pop_front();
    }
    std::array<ibv_wc, 32> wcs;
    while (n < out.size()) {
      const int want = static_cast<int>(std::min<std::size_t>(wcs.size(), out.size() - n));
      const int got = ibv_poll_cq(cq_, want, wcs.data());
      if (got <= 0) break;
      for (int i = 0; i < got; ++i)
        if (translate(wcs[static_cast<std::size_t>(i)], out[n])) ++n;
      if (got < want) break;
    }
    pump();
    while (n < out.size() && !synthetic_.empty()) {  // flushed from the backlog just now
      out[n++] = synthetic_.front();
      synthetic_.pop_front();
    }
    return n;
  }

  // Converts one device completion; false when it is not the engine's (a window bind).
  bool translate(const ibv_wc& wc, work_completion& out) {
    const std::error_code status = to_error_code(wc.status);
    if (wc.wr_id & receive_flag) {
      const auto slot = static_cast<std::uint32_t>(wc.wr_id & ~receive_flag);
      if (!receives_[slot].outstanding) return false;  // already reported flushed at disconnect
      if (preposted_ == slot) {  // not yet taken over by the engine: keep it for then
        early_ = wc;
        return false;
      }
      out = complete_receive(slot, wc);
      return true;
    }
    const auto index = static_cast<std::uint32_t>(wc.wr_id);
    sq_record& rec = sq_[index];
    const sq_kind kind = rec.kind;
    out = {rec.wr_id, opcode_of(kind), status};
    --sq_outstanding_;
    if (kind == sq_kind::rdma_read) --reads_outstanding_;
    free_record(index);
    if (kind == sq_kind::bind) {
      if (status) disconnect();  // a failed bind leaves the queue pair in the error state
      return false;
    }
    return true;
  }

  work_completion complete_receive(std::uint32_t slot, const ibv_wc& wc) {
    receive_record& r = receives_[slot];
    r.outstanding = false;
    receive_pool_.free.push_back(slot);
    work_completion out{r.wr_id, work_opcode::receive, to_error_code(wc.status)};
    if (out.status) return out;
    if (wc.byte_len > r.target.size()) {  // only a pre-posted receive can be larger
      out.status = errc::local_length_error;
      return out;
    }
    out.byte_len = wc.byte_len;
    if (!r.in_place) {
      std::memcpy(r.target.data(), receive_pool_.slot(slot), wc.byte_len);
      ++receives_copied_;
    }
    if (wc.wc_flags & IBV_WC_WITH_INV) {
      out.invalidated_token = wc.invalidated_rkey;
      if (!on_remote_invalidate(wc.invalidated_rkey)) {
        out = {r.wr_id, work_opcode::receive, errc::remote_invalid_request};
        disconnect();
      }
    }
    return out;
  }

  /// The peer's Send with Invalidate revoked one of our windows (or regions). False when it
  /// named an access::local region, which the peer may not touch (siw lets it): a peer error,
  /// as loopback and tcp report it. The region stays ours to deregister.
  bool on_remote_invalidate(std::uint32_t token) {
    auto it = regions_.find(token);
    if (it == regions_.end()) return true;
    if (it->second.mr_info.rights == access::local) return false;
    forget(it);
    return true;
  }

  bool drained() {
    if (!disconnected_ || sq_outstanding_ != 0 || !backlog_.empty()) return false;
    // Some providers flush the receive queue only on the next packet; our receive buffers
    // are our own pool, so report the receives flushed now.
    for (std::uint32_t slot = 0; slot < receives_.size(); ++slot) {
      auto& r = receives_[slot];
      if (!r.outstanding) continue;
      r.outstanding = false;
      if (preposted_ != slot) synthetic_.push_back({r.wr_id, work_opcode::receive, errc::work_request_flushed});
    }
    return synthetic_.empty();
  }

  void on_disconnected() {
    if (disconnected_) return;
    disconnected_ = true;
    if (id_->qp) {
      ibv_qp_attr attr{};
      attr.qp_state = IBV_QPS_ERR;
      ibv_modify_qp(id_->qp, &attr, IBV_QP_STATE);  // flush now, whatever the CM does next
    }
    pump();
    wake();
  }

  void wake() {
    if (comp_fd_) comp_fd_->cancel();
  }

  asio::awaitable<void> cm_loop() {
    auto self = shared_from_this();
    while (!shut_down_) {
      auto [ec] = co_await cm_fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                                              asio::experimental::as_tuple(asio::use_awaitable));
      if (shut_down_) break;
      if (ec && ec != asio::error::operation_aborted) break;
      rdma_cm_event* event = nullptr;
      while (rdma_get_cm_event(channel_, &event) == 0) {
        const auto type = event->event;
        rdma_ack_cm_event(event);
        switch (type) {
          case RDMA_CM_EVENT_DISCONNECTED:
          case RDMA_CM_EVENT_DEVICE_REMOVAL:
          case RDMA_CM_EVENT_CONNECT_ERROR:
          case RDMA_CM_EVENT_UNREACHABLE:
          case RDMA_CM_EVENT_REJECTED:
            on_disconnected();
            break;
          default:
            break;  // ESTABLISHED (passive side), TIMEWAIT_EXIT
        }
      }
    }
  }

  asio::any_io_executor executor_;
  options options_;
  rdma_event_channel* channel_ = nullptr;
  rdma_cm_id* id_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* comp_ = nullptr;
  ibv_cq* cq_ = nullptr;
  std::optional<asio::posix::stream_descriptor> cm_fd_, comp_fd_;
  device_info device_;
  buffer_pool send_pool_, receive_pool_;
  buffer_pool receive_area_;  // one slot: the engine's receive buffers (receive_memory())
  std::vector<receive_record> receives_;
  std::vector<sq_record> sq_;
  std::vector<std::uint32_t> sq_free_;
  // Ring buffers, not std::deque, which allocates and frees blocks as items pass through.
  smbdirect::detail::ring_queue<std::uint32_t> backlog_;
  smbdirect::detail::ring_queue<work_completion> synthetic_;
  std::unordered_map<std::uint32_t, region> regions_;
  const region* last_covering_ = nullptr;  // covering()'s last answer, still in regions_
  std::optional<std::uint32_t> preposted_;  // receive slot posted before rdma_accept, not yet claimed
  std::optional<ibv_wc> early_;             // its completion, if it came before the claim
  std::uint32_t max_sge_ = 1;
  std::uint32_t sq_capacity_ = 0, sq_outstanding_ = 0, reads_outstanding_ = 0, ord_ = 1;
  unsigned batch_depth_ = 0;  // open begin_batch() calls: work requests wait in backlog_
  unsigned unacked_events_ = 0;
  std::uint64_t receives_copied_ = 0;  // completed receives that did not land in place
  bool use_memory_windows_ = false;
  bool armed_ = false;
  bool disconnected_ = false;
  bool shut_down_ = false;
};

}  // namespace detail

/// A connected RDMA queue pair (RC) and its completion queue. Models smbdirect::transport.
/// Move-only; destroying it disconnects. Made by verbs::connect() or verbs::listener.
/// register_memory() registers with only the access the rights need (ibv_reg_mr), behind a
/// type 2 memory window when the device supports them (not for access::local, which grants
/// nothing remotely); errors: invalid_argument, the errno of ibv_reg_mr, work_request_flushed
/// after a disconnect.
class queue_pair : public smbdirect::detail::queue_pair_handle<detail::qp_state> {
 public:
  using queue_pair_handle::queue_pair_handle;

  /// The device and port this queue pair runs on.
  const device_info& device() const { return state_->device(); }
  /// RDMA reads this side may have outstanding (ORD after negotiation with the peer).
  std::uint32_t initiator_depth() const { return state_->ord(); }
  /// Whether registrations get their own memory window rkey.
  bool uses_memory_windows() const { return state_->uses_memory_windows(); }
  /// Receives so far that landed in this queue pair's own receive buffers and were copied
  /// into the engine's: the one posted before rdma_accept (passive side), and every receive
  /// if receive_memory() could not register the engine's receive buffers.
  std::uint64_t receives_copied() const { return state_->receives_copied(); }
  /// The underlying RDMA CM identifier (its qp, verbs context, addresses).
  rdma_cm_id* native_handle() const { return state_->id(); }

  /// Work requests posted until the matching end_batch() go out as chained lists, one
  /// ibv_post_send (one doorbell: a system call on rxe and siw) per list of up to 32
  /// (batching_transport).
  void begin_batch() { state_->begin_batch(); }
  void end_batch() noexcept { state_->end_batch(); }

  /// `bytes` of registered memory for the engine's receive buffers, so that receives land in
  /// place (receive_memory_transport); empty if it cannot be registered, or on a second call.
  std::span<std::byte> receive_memory(std::size_t bytes) { return state_->receive_memory(bytes); }
};

static_assert(batching_transport<queue_pair>);
static_assert(receive_memory_transport<queue_pair>);

}  // namespace smbdirect::verbs
