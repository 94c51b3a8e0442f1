// The connection engine: composes the pure protocol units (negotiation, credit_ledger,
// fragmenter, reassembler, keepalive) over a transport with three coroutines:
//   completion loop  - drains the completion queue: negotiation, received messages, send and
//                      RDMA completions;
//   control sender   - sends empty messages (credit grants, keepalives, keepalive replies)
//                      when no upper-layer message is going out to carry them;
//   timer loop       - negotiation timer, idle/keepalive timer, credit grant timer.
// Upper-layer operations (send, receive, RDMA) are coroutines too. Everything runs on the
// transport's executor; the engine is not thread-safe by itself (see docs/design.md).
// std::bad_alloc inside the engine terminates the connection with errc::out_of_memory; an
// operation never returns while work requests it posted may still touch its buffers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <array>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/error.hpp>

#include "smbdirect/clock.hpp"
#include "smbdirect/detail/async_event.hpp"
#include "smbdirect/detail/inbound_message.hpp"
#include "smbdirect/detail/ring_queue.hpp"
#include "smbdirect/detail/small_vector.hpp"
#include "smbdirect/error.hpp"
#include "smbdirect/parameters.hpp"
#include "smbdirect/protocol/credit_ledger.hpp"
#include "smbdirect/protocol/fragmenter.hpp"
#include "smbdirect/protocol/keepalive.hpp"
#include "smbdirect/protocol/negotiation.hpp"
#include "smbdirect/protocol/reassembler.hpp"
#include "smbdirect/received_message.hpp"
#include "smbdirect/statistics.hpp"
#include "smbdirect/transport.hpp"
#include "smbdirect/wire/buffer_descriptor.hpp"
#include "smbdirect/wire/data_transfer.hpp"
#include "smbdirect/wire/negotiate.hpp"

namespace smbdirect {

/// Which side of negotiation a connection plays. [MS-SMBD] 3.1.1.1 Role
enum class role { active, passive };

namespace detail {

/// Bytes of the pre-negotiation receive: at least 512 ([MS-SMBD] 3.1.4.1, 3.1.7.2).
inline constexpr std::uint32_t negotiate_receive_size = 512;

/// Work request ids: the low two bits say what the id points at.
enum class wr_kind : std::uint64_t { receive = 0, send = 1, rdma = 2 };
constexpr std::uint64_t make_wr_id(wr_kind k, std::uint64_t v) noexcept { return (v << 2) | static_cast<std::uint64_t>(k); }
constexpr wr_kind kind_of(std::uint64_t wr_id) noexcept { return static_cast<wr_kind>(wr_id & 3); }
constexpr std::uint64_t value_of(std::uint64_t wr_id) noexcept { return wr_id >> 2; }

/// The error that an exception escaping the engine stands for: out_of_memory for
/// std::bad_alloc (the only one the engine lets through), internal_error for anything else.
inline std::error_code exception_error(const std::exception_ptr& thrown) noexcept {
  try {
    std::rethrow_exception(thrown);
  } catch (const std::bad_alloc&) {
    return errc::out_of_memory;
  } catch (...) {
    return errc::internal_error;
  }
}

/// An operation's local buffers and the peer's Buffer Descriptor V1 array: a few of each are
/// kept inline, so an operation allocates nothing for them.
template <class Buffer>
using buffer_list = small_vector<Buffer, max_send_sge>;
using descriptor_list = small_vector<wire::buffer_descriptor_v1, 4>;

/// Wake-up events for pending operations, reused from one operation to the next: a new event
/// (an Asio channel) allocates.
class event_pool {
 public:
  explicit event_pool(asio::any_io_executor ex) : executor_(std::move(ex)) {}
  /// May throw std::bad_alloc when none is free.
  std::unique_ptr<async_event> take() {
    if (free_.empty()) {
      // Room for every event in existence, so that give_back() never allocates: all of them
      // come back at once when a burst of operations drains.
      free_.reserve(created_ + 1);
      auto e = std::make_unique<async_event>(executor_);
      ++created_;
      return e;
    }
    auto e = std::move(free_.back());
    free_.pop_back();
    return e;
  }
  void give_back(std::unique_ptr<async_event> e) noexcept { free_.push_back(std::move(e)); }  // within capacity

 private:
  asio::any_io_executor executor_;
  std::vector<std::unique_ptr<async_event>> free_;
  std::size_t created_ = 0;
};

/// Work requests posted in its lifetime go out together on a batching_transport (one
/// doorbell); on other transports it does nothing. Never alive across a suspension.
/// end_batch() must not throw: it runs while unwinding from std::bad_alloc too.
template <class Transport>
class post_batch {
 public:
  explicit post_batch(Transport& t) : transport_(t) {
    if constexpr (batching_transport<Transport>) transport_.begin_batch();
  }
  post_batch(const post_batch&) = delete;
  post_batch& operator=(const post_batch&) = delete;
  ~post_batch() {
    if constexpr (batching_transport<Transport>) transport_.end_batch();
  }

 private:
  Transport& transport_;
};

/// Work requests posted by one upper-layer operation, awaited together.
struct pending_op {
  explicit pending_op(event_pool& from) : pool(from), event(from.take()) {}
  pending_op(const pending_op&) = delete;
  pending_op& operator=(const pending_op&) = delete;
  ~pending_op() { pool.give_back(std::move(event)); }
  async_event& done() noexcept { return *event; }

  std::size_t outstanding = 0;
  std::error_code error;  // first work completion error
  event_pool& pool;
  std::unique_ptr<async_event> event;
};

template <class Transport>
class engine : public std::enable_shared_from_this<engine<Transport>>, public receive_lender {
 public:
  enum class phase { idle, negotiating, connected, closed };

  engine(Transport t, parameters p, virtual_clock* clock)
      : transport_(std::move(t)),
        params_(p),
        executor_(transport_.get_executor()),
        timer_(executor_, clock),
        send_event_(executor_),
        lock_event_(executor_),
        receive_event_(executor_),
        control_event_(executor_),
        phase_event_(executor_),
        events_(executor_) {}

  ~engine() { transport_.disconnect(); }

  // ---------------------------------------------------------------- negotiation

  /// Runs negotiation in `r`'s role; completes when connected or failed.
  asio::awaitable<std::error_code> negotiate(role r) {
    if (phase_ != phase::idle) co_return terminal_ ? terminal_ : make_error_code(errc::already_connected);
    if (auto ec = protocol::validate(params_)) co_return ec;
    role_ = r;
    phase_ = phase::negotiating;
    negotiate_deadline_ = timer_.now() + params_.negotiate_timeout;
    allocate_buffers();
    start_background();
    // One receive of >= 512 bytes for the first message (3.1.4.1, 3.1.7.2).
    if (auto ec = post_receive_slot(take_receive_slot(), receive_slot_size_)) {
      terminate(ec);
    } else if (r == role::active) {
      auto req = protocol::make_negotiate_request(params_);
      send_slot& slot = *take_send_slot();
      (void)wire::encode(req, slot.header);
      post_control(slot, wire::negotiate_request::size);
    }
    while (phase_ == phase::negotiating) co_await phase_event_.wait();
    co_return phase_ == phase::connected ? std::error_code{} : terminal_;
  }

  // ---------------------------------------------------------------- send

  /// Sends one upper-layer message gathered from `pieces` (3.1.4.2, 3.1.5.4): fragments go
  /// out back to back, never interleaved with another message. Completes when every
  /// fragment's send has completed, so the caller's buffers may then be reused.
  asio::awaitable<std::pair<std::error_code, std::size_t>> send(buffer_list<asio::const_buffer> pieces) {
    if (auto ec = usable()) co_return fail(ec);
    const std::size_t total = asio::buffer_size(pieces);
    if (auto ec = protocol::fragmenter::check(total, negotiated_.max_send_size, negotiated_.max_fragmented_send_size))
      co_return fail(ec);
    if (!try_lock_send())
      if (auto ec = co_await lock_send()) co_return fail(ec);
    pending_op op(events_);
    auto settled = settle(op);  // before posting: see settle()
    const protocol::fragmenter fragments(static_cast<std::uint32_t>(total), negotiated_.max_send_size);
    std::error_code ec;
    try {
      for (std::uint32_t i = 0; i < fragments.count() && !ec;) {
        send_slot* slot = try_acquire_send();  // no coroutine frame while credits last
        if (!slot) ec = co_await acquire_send(slot);
        // This fragment and every next one that has a credit now: one batch (one doorbell).
        post_batch batch(transport_);
        while (!ec) {
          ec = post_fragment(*slot, fragments.at(i++), pieces, op);
          if (ec || i == fragments.count() || !(slot = try_acquire_send())) break;
        }
      }
    } catch (const std::bad_alloc&) {
      ec = out_of_memory();
    }
    unlock_send();
    co_await std::move(settled);
    if (!ec) ec = op.error;
    if (ec) co_return fail(terminal_ ? terminal_ : ec);
    ++stats_.messages_sent;
    stats_.bytes_sent += total;
    co_return std::pair{std::error_code{}, total};
  }

  // ---------------------------------------------------------------- receive

  /// Delivers the next reassembled message into `out`: a std::vector<std::byte> (its old
  /// storage is recycled; a lent message is copied into it) or a received_message (a lent
  /// message stays in its receive buffers). Messages that arrived before a termination are
  /// still delivered, then the error.
  template <class Out>
  asio::awaitable<std::pair<std::error_code, std::size_t>> receive(Out& out) {
    if (phase_ == phase::idle || phase_ == phase::negotiating) co_return fail(errc::not_connected);
    if (receiving_) co_return fail(errc::operation_in_progress);
    receiving_ = true;
    while (ready_.empty() && !terminal_) co_await receive_event_.wait();
    receiving_ = false;
    if (ready_.empty()) co_return fail(terminal_);
    inbound_message& m = ready_.front();
    const std::size_t size = m.size;
    deliver(m, out);
    inbound_message old = std::move(m);
    ready_.pop_front();
    ready_bytes_ -= size;
    if (phase_ == phase::connected && !terminal_) {  // room again: repost what was held back
      replenish_receives(false);
      if (ledger_.grant_due()) control_event_.notify();
    }
    try {
      spare_.push_back(std::move(old));  // a cache of storage: losing it costs nothing
    } catch (const std::bad_alloc&) {
    }
    co_return std::pair{std::error_code{}, size};
  }

  /// received_message::release(): the receive buffers of a lent message come back.
  void give_back(std::span<const std::uint16_t> slots) noexcept override {
    for (auto s : slots) free_receive_slots_.push_back(s);  // within capacity: every slot fits
    lent_slots_ -= slots.size();
  }

  // ---------------------------------------------------------------- memory and RDMA

  std::pair<std::error_code, memory_region> register_memory(asio::mutable_buffer region, access rights) {
    if (auto ec = usable()) return {ec, {}};
    if (!valid_registration_rights(rights) || region.size() == 0 || region.size() > 0xffffffffu) return {errc::invalid_argument, {}};
    return transport_.register_memory(region, rights);
  }

  std::error_code deregister_memory(const memory_region& mr) { return transport_.deregister_memory(mr); }

  /// RDMA write (Buffer = const_buffer) or read (Buffer = mutable_buffer) of the local pieces
  /// against the peer's descriptors, in order, starting `remote_offset` bytes into the
  /// descriptor array (3.1.4.5, 3.1.4.6).
  template <class Buffer>
  asio::awaitable<std::pair<std::error_code, std::size_t>> rdma(buffer_list<Buffer> local, descriptor_list remote,
                                                                std::uint64_t remote_offset) {
    constexpr bool write = std::is_same_v<Buffer, asio::const_buffer>;
    if (auto ec = usable()) co_return fail(ec);
    if (remote.size() > params_.max_rdma_descriptors) co_return fail(errc::too_many_descriptors);
    const std::size_t total = asio::buffer_size(local);
    std::uint64_t available = 0;
    for (const auto& d : remote) available += d.length;
    if (total > negotiated_.max_read_write_size || remote_offset > available || total > available - remote_offset)
      co_return fail(errc::rdma_too_large);
    pending_op op(events_);
    auto settled = settle(op);  // before posting: see settle()
    const std::uint64_t wr = make_wr_id(wr_kind::rdma, reinterpret_cast<std::uintptr_t>(&op) >> 2);
    std::error_code ec;
    // One work request per overlap of a local piece and a descriptor: no copies. One batch.
    std::size_t piece = 0, piece_pos = 0, desc = 0;
    std::uint64_t desc_pos = remote_offset;
    {
      post_batch batch(transport_);
      for (std::size_t done = 0; done < total && !ec;) try {
        while (local[piece].size() == piece_pos) ++piece, piece_pos = 0;
        while (remote[desc].length == desc_pos) ++desc, desc_pos = 0;
        const std::size_t n = std::min<std::uint64_t>(local[piece].size() - piece_pos, remote[desc].length - desc_pos);
        const Buffer part = asio::buffer(local[piece] + piece_pos, n);
        const std::uint64_t address = remote[desc].offset + desc_pos;
        if constexpr (write) {
          ec = transport_.post_rdma_write(wr, std::span(&part, 1), address, remote[desc].token);
        } else {
          ec = transport_.post_rdma_read(wr, std::span(&part, 1), address, remote[desc].token);
        }
        if (!ec) ++op.outstanding;
        piece_pos += n, desc_pos += n, done += n;
      } catch (const std::bad_alloc&) {
        ec = out_of_memory();
      }
    }
    if (ec) terminate(ec);
    co_await std::move(settled);
    if (!ec) ec = op.error;
    if (ec) co_return fail(terminal_ ? terminal_ : ec);
    (write ? stats_.rdma_writes : stats_.rdma_reads) += 1;
    (write ? stats_.rdma_bytes_written : stats_.rdma_bytes_read) += total;
    co_return std::pair{std::error_code{}, total};
  }

  // ---------------------------------------------------------------- close

  /// Waits for the message being sent and every posted send to complete, then disconnects.
  asio::awaitable<std::error_code> close() {
    if (phase_ == phase::idle) {
      phase_ = phase::closed;
      terminal_ = errc::connection_closed;
      co_return std::error_code{};
    }
    if (terminal_) co_return terminal_ == errc::connection_closed ? std::error_code{} : terminal_;
    if (auto ec = co_await lock_send()) co_return ec;
    while (free_send_slots_.size() != send_slots_.size() && !terminal_) co_await send_event_.wait();
    unlock_send();
    if (terminal_) co_return terminal_;
    terminate(errc::connection_closed);
    co_return std::error_code{};
  }

  /// Ends the connection with `ec` (the first error wins): disconnects the transport, which
  /// flushes all work; every waiter wakes and reports `ec`.
  void terminate(std::error_code ec) {
    if (terminal_) return;
    terminal_ = ec;
    phase_ = phase::closed;
    send_event_.notify();
    lock_event_.notify();
    receive_event_.notify();
    control_event_.notify();
    phase_event_.notify();
    timer_.cancel();
    transport_.disconnect();  // last: if it throws, every waiter has been woken already
  }

  const statistics& stats() const noexcept { return stats_; }
  const negotiated_parameters& negotiated() const noexcept { return negotiated_; }
  std::error_code error() const noexcept { return terminal_; }
  bool connected() const noexcept { return phase_ == phase::connected; }
  Transport& transport() noexcept { return transport_; }
  const protocol::credit_ledger& credits() const noexcept { return ledger_; }
  asio::any_io_executor get_executor() const { return executor_; }

 private:
  struct send_slot {
    std::array<std::byte, wire::negotiate_response::size> header{};  // 32 >= 24
    std::vector<std::byte> bounce;  // payload copy when a fragment spans too many pieces
    pending_op* op = nullptr;       // upper-layer send it belongs to, if any
    std::error_code then_terminate;  // terminate with this once the send completes
  };

  std::pair<std::error_code, std::size_t> fail(std::error_code ec) {
    ++stats_.errors;
    return {ec, 0};
  }

  std::error_code usable() const {
    if (terminal_) return terminal_;
    if (phase_ != phase::connected) return errc::not_connected;
    return {};
  }

  /// Terminates with out_of_memory (after std::bad_alloc inside the engine); returns it.
  std::error_code out_of_memory() {
    terminate(errc::out_of_memory);
    return errc::out_of_memory;
  }

  /// Waits until no work request of `op` is outstanding, so the caller's buffers are theirs
  /// again. Create it before posting anything: its frame is allocated then, so awaiting it
  /// later cannot throw past outstanding work. A std::bad_alloc while waiting terminates the
  /// connection (flushing the work) and the wait is retried.
  asio::awaitable<void> settle(pending_op& op) {
    while (op.outstanding > 0) {
      bool failed = false;
      try {
        co_await op.done().wait();
      } catch (const std::bad_alloc&) {
        failed = true;
      }
      if (failed) out_of_memory();
    }
  }

  /// Hands `m` to the user as a vector: a copied message by swapping storage (the user's old
  /// vector goes back to `m`, to be recycled), a lent one by copying its pieces.
  void deliver(inbound_message& m, std::vector<std::byte>& out) {
    // Copying may throw std::bad_alloc: the connection then ends with out_of_memory.
    if (m.lent) m.copy_out_of_slots([this](std::uint16_t s) { give_back(std::span(&s, 1)); });
    out.swap(m.bytes);
  }

  /// Hands `m` to the user in place: a lent message's pieces and slots, or a copied message's
  /// bytes as one piece. Storage is swapped, never allocated, once `out` has been used.
  void deliver(inbound_message& m, received_message& out) {
    out.release();
    if (!m.lent && out.pieces_.capacity() == 0) out.pieces_.reserve(1);  // may throw, before any change
    out.size_ = m.size;
    if (m.lent) {
      out.pieces_.swap(m.pieces);
      out.slots_.swap(m.slots);
      out.lender_ = this->shared_from_this();
      ++stats_.messages_received_in_place;
      return;
    }
    out.bytes_.swap(m.bytes);
    out.pieces_.emplace_back(out.bytes_.data(), m.size);
  }

  void allocate_buffers() {
    receive_slot_size_ = std::max(params_.max_receive_size, negotiate_receive_size);
    // ReceiveCreditMax plus the one 3.1.5.9 may oblige us to post (credit_ledger::posted_limit),
    // plus those messages may keep (lent_slots_ never exceeds them, so lending never costs
    // the peer a credit).
    const std::size_t receive_slots = std::size_t{params_.receive_credit_max} + 1 + params_.lent_receive_buffers;
    const std::size_t receive_bytes = std::size_t{receive_slot_size_} * receive_slots;
    if constexpr (receive_memory_transport<Transport>) receive_area_ = transport_.receive_memory(receive_bytes);
    if (receive_area_.size() != receive_bytes) {  // the transport keeps its own: it copies into ours
      own_receive_buffers_.resize(receive_bytes);
      receive_area_ = own_receive_buffers_;
    }
    for (std::size_t i = receive_slots; i-- > 0;) free_receive_slots_.push_back(static_cast<std::uint16_t>(i));
    // Outstanding sends: the credit target plus the grants/keepalives that may trail them.
    send_slots_.resize(std::size_t{params_.send_credit_target} + 2);
    for (std::size_t i = send_slots_.size(); i-- > 0;) free_send_slots_.push_back(static_cast<std::uint32_t>(i));
  }

  void start_background() {
    auto self = this->shared_from_this();
    // An exception ending one of them (std::bad_alloc) ends the connection instead of vanishing.
    auto on_exit = [self](std::exception_ptr thrown) {
      if (thrown) self->terminate(exception_error(thrown));
    };
    asio::co_spawn(executor_, [self]() { return self->completion_loop(); }, on_exit);
    asio::co_spawn(executor_, [self]() { return self->timer_loop(); }, on_exit);
    asio::co_spawn(executor_, [self]() { return self->control_sender(); }, on_exit);
  }

  std::uint16_t take_receive_slot() {
    const std::uint16_t s = free_receive_slots_.back();
    free_receive_slots_.pop_back();
    return s;
  }

  std::error_code post_receive_slot(std::uint16_t slot, std::uint32_t size) {
    auto buf = receive_area_.subspan(std::size_t{slot} * receive_slot_size_, size);
    if (auto ec = transport_.post_receive(make_wr_id(wr_kind::receive, slot), buf)) {
      free_receive_slots_.push_back(slot);
      return ec;
    }
    return {};
  }

  /// Whether reassembled messages the upper layer has not read yet fill MaxFragmentedRecvSize.
  /// Then consumed receives are not reposted, so the peer runs out of credits and waits
  /// (3.1.5.9: "ReceiveCreditTarget MAY be reduced") instead of making us buffer without end.
  bool receive_backlog_full() const noexcept { return ready_bytes_ >= params_.max_fragmented_size; }

  /// Posts receives toward the target (unless the receive backlog is full), plus the extra ones
  /// 3.1.5.9 asks for before a send (see credit_ledger::extra_receives_wanted).
  void replenish_receives(bool about_to_send) {
    auto post_one = [&] {
      if (free_receive_slots_.empty()) return false;
      if (auto ec = post_receive_slot(take_receive_slot(), negotiated_.max_receive_size)) {
        terminate(ec);
        return false;
      }
      ledger_.on_posted();
      return true;
    };
    for (auto n = receive_backlog_full() ? 0 : ledger_.receives_wanted(); n > 0 && !terminal_; --n)
      if (!post_one()) break;
    for (auto n = ledger_.extra_receives_wanted(about_to_send); n > 0 && !terminal_; --n)
      if (!post_one()) break;
  }

  send_slot* take_send_slot() {
    const std::uint32_t i = free_send_slots_.back();
    free_send_slots_.pop_back();
    return &send_slots_[i];
  }

  std::uint32_t index_of(const send_slot& s) const { return static_cast<std::uint32_t>(&s - send_slots_.data()); }

  void release_send_slot(send_slot& s) {
    s.op = nullptr;
    s.then_terminate = {};
    free_send_slots_.push_back(index_of(s));
    send_event_.notify();
  }

  /// Posts a negotiate message from `slot` (outside the credit scheme).
  void post_control(send_slot& slot, std::size_t size) {
    const asio::const_buffer gather(slot.header.data(), size);
    if (auto ec = transport_.post_send(make_wr_id(wr_kind::send, index_of(slot)), std::span(&gather, 1), 0)) {
      release_send_slot(slot);
      terminate(ec);
    }
  }

  /// Takes the send lock if it is free, without suspending.
  bool try_lock_send() {
    if (send_locked_ || terminal_) return false;
    send_locked_ = true;
    return true;
  }

  asio::awaitable<std::error_code> lock_send() {
    bool handed = false;  // unlock_send() passed the lock to us: it stayed locked
    while (send_locked_ && !terminal_ && !handed) handed = co_await lock_event_.wait();
    if (terminal_) {
      if (handed) unlock_send();  // to the next waiter, which sees terminal_ too
      co_return terminal_;
    }
    send_locked_ = true;
    co_return std::error_code{};
  }

  /// Passes the lock straight to the longest waiter, in FIFO order, so that one unlock wakes
  /// one coroutine (with 64 senders queued, waking all cost 63 new waits per message).
  void unlock_send() {
    if (!terminal_ && lock_event_.hand_off()) return;
    send_locked_ = false;
    lock_event_.notify();
  }

  /// A free send slot with a usable send credit (3.1.5.1 steps 1-3) if there is one now, else
  /// nullptr. Posts the receives 3.1.5.9 wants before a send.
  send_slot* try_acquire_send() {
    if (terminal_ || free_send_slots_.empty()) return nullptr;
    replenish_receives(true);
    if (terminal_ || !ledger_.can_send()) return nullptr;
    credit_wait_since_.reset();
    return take_send_slot();
  }

  /// Waits for a free send slot and a usable send credit (3.1.5.1 steps 1-3). While the
  /// peer leaves us without a usable credit, the credit grant timer runs.
  asio::awaitable<std::error_code> acquire_send(send_slot*& slot) {
    for (;;) {
      if ((slot = try_acquire_send())) co_return std::error_code{};
      if (terminal_) co_return terminal_;
      if (!free_send_slots_.empty()) {  // a slot but no credit: the credit grant timer runs
        if (!credit_wait_since_) {
          credit_wait_since_ = timer_.now();
          timer_.cancel();  // the timer loop re-arms with this earlier deadline
        }
      }
      co_await send_event_.wait();
    }
  }

  /// Fills the header for the next message: credits (3.1.5.1 steps 4-6) and flags.
  wire::data_transfer_header next_header() {
    wire::data_transfer_header h;
    h.credits_requested = ledger_.send_credit_target();
    h.credits_granted = ledger_.on_send();
    // The state is checked first so that the clock is read only when a keepalive goes out.
    if (keepalive_.current() == protocol::keepalive::state::pending && keepalive_.take_response_requested(timer_.now())) {
      h.flags = wire::smb_direct_response_requested;
      ++stats_.keepalives_sent;
    }
    response_due_ = false;  // any message answers the peer's RESPONSE_REQUESTED
    stats_.credits_granted += h.credits_granted;
    return h;
  }

  std::error_code post_fragment(send_slot& slot, const protocol::fragment& f,
                                std::span<const asio::const_buffer> pieces, pending_op& op) {
    wire::data_transfer_header h = next_header();
    h.remaining_data_length = f.remaining;
    h.data_length = f.length;  // > 0: empty messages are refused before fragmenting
    h.data_offset = static_cast<std::uint32_t>(wire::data_transfer_header::payload_offset);
    (void)wire::encode(h, slot.header);
    // Gather: the header, then the caller's bytes in place (zero copy) when they fit in the
    // SGE limit, else one copy into the slot's bounce buffer.
    std::array<asio::const_buffer, max_send_sge> gather;
    gather[0] = asio::const_buffer(slot.header.data(), wire::data_transfer_header::payload_offset);
    std::size_t n = 1;
    const bool fits = for_each_piece(pieces, f.offset, f.length, [&](asio::const_buffer b) {
      if (n == gather.size()) return false;
      gather[n++] = b;
      return true;
    });
    if (!fits) {
      try {
        slot.bounce.resize(f.length);
      } catch (const std::bad_alloc&) {
        release_send_slot(slot);
        throw;  // send() terminates with out_of_memory
      }
      std::size_t at = 0;
      for_each_piece(pieces, f.offset, f.length, [&](asio::const_buffer b) {
        at += asio::buffer_copy(asio::buffer(slot.bounce) + at, b);
        return true;
      });
      gather[1] = asio::buffer(slot.bounce);
      n = 2;
    }
    slot.op = &op;
    if (auto ec = transport_.post_send(make_wr_id(wr_kind::send, index_of(slot)), std::span(gather.data(), n), 0)) {
      release_send_slot(slot);
      terminate(ec);
      return ec;
    }
    ++op.outstanding;
    ++stats_.fragments_sent;
    return {};
  }

  /// Calls visit(buffer) for each part of the byte range [offset, offset + length) of the
  /// pieces, in order, until it returns false; returns false if it stopped early.
  template <class Visit>
  static bool for_each_piece(std::span<const asio::const_buffer> pieces, std::size_t offset, std::size_t length,
                             Visit visit) {
    for (const auto& p : pieces) {
      if (length == 0) break;
      if (offset >= p.size()) {
        offset -= p.size();
        continue;
      }
      const std::size_t take = std::min(p.size() - offset, length);
      if (!visit(asio::const_buffer(static_cast<const std::byte*>(p.data()) + offset, take))) return false;
      length -= take;
      offset = 0;
    }
    return true;
  }

  // ---------------------------------------------------------------- background coroutines

  /// Runs until the transport is disconnected and drained, even after std::bad_alloc: pending
  /// operations wait for their flushed completions (see settle()).
  asio::awaitable<void> completion_loop() {
    std::array<work_completion, 32> batch;
    for (;;) {
      std::size_t n = 0;
      bool failed = false;
      try {
        n = co_await transport_.poll(batch);
      } catch (const std::bad_alloc&) {
        failed = true;
      }
      if (failed) {
        out_of_memory();
        continue;
      }
      if (n == 0) break;  // disconnected and drained
      batch_time_ = timer_.now();  // one clock read per batch, not per message
      for (std::size_t i = 0; i < n; ++i) {
        try {
          on_completion(batch[i]);
        } catch (const std::bad_alloc&) {
          out_of_memory();
        }
      }
    }
    if (!terminal_) terminate(peer_went_away());
  }

  void on_completion(const work_completion& wc) {
    switch (kind_of(wc.wr_id)) {
      case wr_kind::receive: return on_receive_completion(wc);
      case wr_kind::send: return on_send_completion(wc);
      case wr_kind::rdma: return on_rdma_completion(wc);
    }
  }

  /// A failed work completion ends the connection. A flush we did not cause means the peer
  /// went away (there is no close message in SMB Direct).
  void on_work_error(const std::error_code& status) {
    if (terminal_) return;
    terminate(status == errc::work_request_flushed ? peer_went_away() : status);
  }

  /// A disconnect halfway through a fragmented message loses its start: say so.
  std::error_code peer_went_away() const {
    return reassembler_.in_progress() ? errc::peer_disconnected_mid_message : errc::peer_disconnected;
  }

  void on_send_completion(const work_completion& wc) {
    send_slot& slot = send_slots_[value_of(wc.wr_id)];
    pending_op* op = slot.op;
    const std::error_code then = slot.then_terminate;
    release_send_slot(slot);
    if (op) {
      if (wc.status && !op->error) op->error = wc.status;
      if (--op->outstanding == 0 || wc.status) op->done().notify();  // settle() waits for 0
    }
    if (wc.status) on_work_error(wc.status);
    if (then) terminate(then);
  }

  void on_rdma_completion(const work_completion& wc) {
    auto* op = reinterpret_cast<pending_op*>(static_cast<std::uintptr_t>(value_of(wc.wr_id) << 2));
    if (wc.status && !op->error) op->error = wc.status;
    if (--op->outstanding == 0 || wc.status) op->done().notify();
    if (wc.status) on_work_error(wc.status);
  }

  void on_receive_completion(const work_completion& wc) {
    const auto slot = static_cast<std::uint16_t>(value_of(wc.wr_id));
    const auto bytes = std::span<const std::byte>(receive_area_).subspan(std::size_t{slot} * receive_slot_size_, wc.byte_len);
    if (!wc.status && !terminal_ && phase_ == phase::connected) return on_data_transfer(slot, bytes);
    free_receive_slots_.push_back(slot);
    if (wc.status) return on_work_error(wc.status);
    if (terminal_) return;
    if (phase_ == phase::negotiating) role_ == role::passive ? on_negotiate_request(bytes) : on_negotiate_response(bytes);
  }

  /// [MS-SMBD] 3.1.5.6 and 3.1.5.3.
  void on_negotiate_request(std::span<const std::byte> bytes) {
    const auto d = protocol::on_negotiate_request(params_, bytes);
    if (d.error) {
      if (!d.send_failure_response) return terminate(d.error);
      // Answer STATUS_NOT_SUPPORTED, then end the connection once that send completes.
      send_slot& slot = *take_send_slot();
      (void)wire::encode(protocol::make_failure_response(wire::status_not_supported), slot.header);
      slot.then_terminate = d.error;
      post_control(slot, wire::negotiate_response::size);
      phase_ = phase::closed;  // accept nothing more
      return;
    }
    negotiated_ = d.negotiated;
    ledger_ = protocol::credit_ledger(negotiated_.receive_credit_max, negotiated_.receive_credit_target,
                                      negotiated_.send_credit_target, 0);
    replenish_receives(false);
    if (terminal_) return;
    ledger_.on_negotiate_grant(ledger_.posted());
    stats_.credits_granted += ledger_.posted();
    send_slot& slot = *take_send_slot();
    (void)wire::encode(protocol::make_negotiate_response(negotiated_, ledger_.posted()), slot.header);
    post_control(slot, wire::negotiate_response::size);
    if (!terminal_) become_connected();
  }

  /// [MS-SMBD] 3.1.5.7.
  void on_negotiate_response(std::span<const std::byte> bytes) {
    const auto d = protocol::on_negotiate_response(params_, bytes);
    if (d.error) return terminate(d.error);
    negotiated_ = d.negotiated;
    stats_.credits_received += negotiated_.initial_send_credits;
    ledger_ = protocol::credit_ledger(negotiated_.receive_credit_max, negotiated_.receive_credit_target,
                                      negotiated_.send_credit_target, negotiated_.initial_send_credits);
    replenish_receives(false);
    if (terminal_) return;
    if (ledger_.posted() == 0) return terminate(errc::internal_error);
    become_connected();
    control_event_.notify();  // grant the receives just posted
  }

  void become_connected() {
    reassembler_ = protocol::reassembler(negotiated_.max_fragmented_recv_size);
    keepalive_ = protocol::keepalive(params_.keepalive_interval, params_.keepalive_timeout, timer_.now());
    phase_ = phase::connected;
    phase_event_.notify();
    timer_.cancel();  // from the negotiation timer to the idle timer
  }

  /// [MS-SMBD] 3.1.5.5 and 3.1.5.8, for the message in receive buffer `slot`. The slot is
  /// reposted, or kept when the payload is lent (left where it is for the upper layer).
  void on_data_transfer(std::uint16_t slot, std::span<const std::byte> bytes) {
    bool kept = false;
    struct slot_return {  // on every path out, terminate() included
      engine& e;
      std::uint16_t slot;
      const bool& kept;
      ~slot_return() {
        if (!kept) e.free_receive_slots_.push_back(slot);
      }
    } returns{*this, slot, kept};
    keepalive_.on_receive(batch_time_);
    wire::data_transfer_message m;
    if (auto ec = wire::decode(bytes, m)) return terminate(ec);
    const auto& h = m.header;
    if (auto ec = ledger_.on_message_received(h.credits_requested, h.credits_granted)) return terminate(ec);
    stats_.credits_received += h.credits_granted;
    if (h.flags & wire::smb_direct_response_requested) {
      response_due_ = true;
      ++stats_.keepalives_received;
    }
    if (h.data_length == 0) ++stats_.empty_messages_received;
    else ++stats_.fragments_received;
    protocol::fragment_place place;
    if (auto ec = reassembler_.on_fragment(h, m.payload.size(), place)) return terminate(ec);
    if (place.payload) kept = store_fragment(slot, m.payload, place);
    replenish_receives(false);
    if (response_due_ || ledger_.grant_due()) control_event_.notify();
    send_event_.notify();  // new send credits, or a reposted receive to grant (last-credit rule)
  }

  /// Adds a fragment's payload to the message being reassembled (3.1.5.8 step 9) and queues
  /// the message when it is whole. Lends the receive buffer while lent_receive_buffers allows;
  /// past that the message is copied (and the buffers it held come back). Returns whether
  /// `slot` was lent. May throw std::bad_alloc.
  bool store_fragment(std::uint16_t slot, std::span<const std::byte> payload, const protocol::fragment_place& place) {
    inbound_message& msg = assembling_;
    if (place.first) msg.start(place.message_size, params_.lent_receive_buffers > 0);
    bool lent = false;
    if (msg.lent && lent_slots_ < params_.lent_receive_buffers) {
      msg.lend(slot, payload);
      ++lent_slots_;
      lent = true;
    } else {
      if (msg.lent) {  // the budget is used up: this message is copied after all
        msg.copy_out_of_slots([this](std::uint16_t s) { give_back(std::span(&s, 1)); });
        ++stats_.lent_messages_copied;
      }
      msg.copy_in(place.offset, payload);
    }
    if (place.last) {
      ready_.emplace_back(std::move(msg));  // grows before moving: on bad_alloc msg stays whole
      ready_bytes_ += place.message_size;
      if (!spare_.empty()) {  // recycled storage for the next message
        assembling_ = std::move(spare_.back());
        spare_.pop_back();
      }
      ++stats_.messages_received;
      stats_.bytes_received += place.message_size;
      receive_event_.notify();
    }
    return lent;
  }

  /// Sends empty messages when something must go out and no upper-layer message carries it:
  /// the reply to RESPONSE_REQUESTED, our keepalive, or credits the peer is running out of.
  asio::awaitable<void> control_sender() {
    auto needed = [this] {
      return phase_ == phase::connected &&
             (response_due_ || keepalive_.current() == protocol::keepalive::state::pending || ledger_.grant_due());
    };
    for (;;) {
      while (!terminal_ && !needed()) co_await control_event_.wait();
      if (terminal_) co_return;
      if (!try_lock_send() && co_await lock_send()) co_return;
      if (needed()) {
        send_slot* slot = try_acquire_send();
        if (slot || !co_await acquire_send(slot)) {
          wire::data_transfer_header h = next_header();
          (void)wire::encode(h, slot->header);
          ++stats_.empty_messages_sent;
          const asio::const_buffer gather(slot->header.data(), wire::data_transfer_header::min_size);
          if (auto ec = transport_.post_send(make_wr_id(wr_kind::send, index_of(*slot)), std::span(&gather, 1), 0)) {
            release_send_slot(*slot);
            terminate(ec);
          }
        }
      }
      unlock_send();
    }
  }

  /// Sleeps until the earliest protocol deadline and acts on it. [MS-SMBD] 3.1.6
  asio::awaitable<void> timer_loop() {
    while (!terminal_) {
      time_point deadline = time_point::max();
      if (phase_ == phase::negotiating) deadline = negotiate_deadline_;
      if (phase_ == phase::connected) deadline = keepalive_.next_deadline();
      if (credit_wait_since_) deadline = std::min(deadline, *credit_wait_since_ + params_.credit_grant_timeout);
      const std::error_code ec = co_await timer_.wait_until(deadline);
      if (terminal_) break;
      if (ec && ec != asio::error::operation_aborted) {
        terminate(ec.category() == error_category() ? ec : make_error_code(errc::timer_failed));
        break;
      }
      const time_point now = timer_.now();
      if (phase_ == phase::negotiating && now >= negotiate_deadline_) {
        terminate(errc::negotiate_timeout);
      } else if (credit_wait_since_ && now >= *credit_wait_since_ + params_.credit_grant_timeout) {
        terminate(errc::credit_grant_timeout);
      } else if (phase_ == phase::connected) {
        switch (keepalive_.on_timer(now)) {
          case protocol::keepalive::action::nothing: break;
          case protocol::keepalive::action::send_keepalive: control_event_.notify(); break;
          case protocol::keepalive::action::terminate: terminate(errc::keepalive_timeout); break;
        }
      }
    }
  }

  Transport transport_;
  parameters params_;
  asio::any_io_executor executor_;
  engine_timer timer_;
  async_event send_event_;     // send slot freed, credits arrived: for the send lock's holder
  async_event lock_event_;     // send lock released (apart, so waiters do not wake per completion)
  async_event receive_event_;  // a message is ready
  async_event control_event_;  // an empty message may be needed
  async_event phase_event_;    // negotiation finished
  event_pool events_;          // for pending_op
  role role_ = role::active;
  phase phase_ = phase::idle;
  std::error_code terminal_;
  negotiated_parameters negotiated_;
  protocol::credit_ledger ledger_;
  protocol::reassembler reassembler_;
  protocol::keepalive keepalive_;
  statistics stats_;
  time_point negotiate_deadline_{};
  std::optional<time_point> credit_wait_since_;
  bool response_due_ = false;
  bool send_locked_ = false;
  bool receiving_ = false;
  std::uint32_t receive_slot_size_ = 0;
  std::span<std::byte> receive_area_;  // the receive slots: the transport's (in place) or own_receive_buffers_
  std::vector<std::byte> own_receive_buffers_;
  std::vector<std::uint16_t> free_receive_slots_;
  std::vector<send_slot> send_slots_;
  std::vector<std::uint32_t> free_send_slots_;
  time_point batch_time_{};  // when the completion batch being handled was polled
  ring_queue<inbound_message> ready_;
  std::size_t ready_bytes_ = 0;  // bytes in ready_
  inbound_message assembling_;          // the message being reassembled
  std::vector<inbound_message> spare_;  // storage of delivered messages, for the next ones
  std::size_t lent_slots_ = 0;  // receive buffers held by lent messages: reassembling, queued or the user's
};

}  // namespace detail
}  // namespace smbdirect
