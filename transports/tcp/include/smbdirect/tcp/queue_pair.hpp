// The TCP emulation transport's queue pair: iWARP's RDMAP over DDP over MPA over one TCP
// connection, modelling smbdirect::transport. connect() and listener (connection_manager.hpp)
// run the MPA setup and create it.
//
// Semantics (as an iWARP RNIC; the same as loopback and verbs where the engine can tell):
// - Sends, RDMA Writes and RDMA Read Requests go out in posting order, each message's FPDUs
//   back to back. A Send or RDMA Write completes when its last FPDU is handed to TCP (as on an
//   RNIC); an RDMA Read completes when its whole RDMA Read Response has been placed.
// - Send queue completions (Send, RDMA Write, RDMA Read) are reported in posting order, so a
//   Send posted after an RDMA Read completes after it, as on an RNIC.
// - At most ORD RDMA Read Requests are outstanding; later work requests wait in order.
//   Incoming RDMA Read Requests above our IRD end the connection (ird_exceeded).
// - A Send consumes the oldest posted receive; none posted: receiver_not_ready on this side,
//   and the peer gets a Terminate (DDP untagged buffer error) that it reports the same way.
//   A Send longer than that receive: local_length_error here, remote_invalid_request there.
// - RDMA Write and RDMA Read Requests are checked against our registered regions: STag,
//   bounds, access right. A violation sends a Terminate: the peer reports
//   remote_access_error; this side reports the specific iwarp_errc value.
// - Anything malformed (CRC, DDP/RDMAP version, opcode, queue, MSN, MO) sends a Terminate
//   with the layer, error type and code of RFC 5040 7 and ends the connection with the
//   matching iwarp_errc value. A Terminate from the peer ends it with the mapped error.
// - After an error or disconnect(), the first completion reported carries the error and every
//   other outstanding work request completes with work_request_flushed; poll() returns 0 once
//   all are drained. TCP end of stream between FPDUs is a peer disconnect (flushed).
// - Reading from the socket starts with the first posted work request (normally a receive), so
//   a peer's early messages wait in TCP until this side is ready, as with RDMA CM's accept.
// - STags are random 32-bit values, unique per connection; deregistering or a Send with
//   Invalidate revokes one.
//
// Threading: not thread-safe; use it from its executor only (as the engine does).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/buffer.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "smbdirect/detail/async_event.hpp"
#include "smbdirect/detail/queue_pair_handle.hpp"
#include "smbdirect/detail/ring_queue.hpp"
#include "smbdirect/detail/small_vector.hpp"
#include "smbdirect/error.hpp"
#include "smbdirect/tcp/ddp_rdmap.hpp"
#include "smbdirect/tcp/error.hpp"
#include "smbdirect/tcp/mpa.hpp"
#include "smbdirect/tcp/terminate.hpp"
#include "smbdirect/transport.hpp"

namespace smbdirect::tcp {

/// SMB Direct's port over iWARP, which this transport speaks. [MS-SMBD] 2.1
inline constexpr std::uint16_t default_port = 5445;

/// Settings of a TCP emulation connection. Sizes in bytes, times in ms.
struct options {
  /// Ask for MPA CRC32c (the C flag); CRC is used when either side asks.
  bool crc = true;
  /// Highest MPA revision to offer or accept: 2 (RFC 6581 enhanced setup) or 1.
  std::uint8_t mpa_revision = 2;
  /// IRD: RDMA Read Requests we serve at once (1-16383).
  std::uint16_t ird = 32;
  /// ORD: RDMA Read Requests we issue at once (1-16383); capped by the peer's IRD.
  std::uint16_t ord = 32;
  /// Largest ULPDU (DDP segment) we send per FPDU: 64-65535. Received FPDUs may be any size.
  std::uint32_t max_ulpdu = 65535;
  /// Bytes the reader asks TCP for at once (at least one largest FPDU, 65544); the connection
  /// holds a buffer this size. Keep it about twice the peer's write_batch (docs/performance.md).
  std::uint32_t read_buffer = 1024 * 1024;
  /// Bytes of FPDUs the writer hands TCP in one gather write, at most; one FPDU goes out per
  /// write at least. Measured on Linux loopback TCP with 1 MiB RDMA Writes: 512 KiB moves them at
  /// the plain-socket rate, while 1 MiB or more halves it (each write outruns the peer's receive
  /// window, and the kernel sends the rest later from its ACK path, out of cache).
  std::uint32_t write_batch = 512 * 1024;
  /// Limit for the MPA Request/Reply exchange and the RTR.
  std::chrono::milliseconds handshake_timeout{10000};
  /// After disconnect(): how long to keep reading until the peer closes too, so TCP never
  /// resets a connection whose last bytes the peer has not read yet.
  std::chrono::milliseconds linger{2000};
  /// Connections a listener holds whose MPA setup is done, waiting for accept(); setups under
  /// way may be up to four times as many.
  std::size_t listen_backlog = 64;
};

/// What the MPA exchange settled for a connection.
struct mpa_settings {
  std::uint8_t revision = 2;
  bool crc = true;
  std::uint16_t ird = 0;  ///< RDMA Read Requests we serve at once
  std::uint16_t ord = 0;  ///< RDMA Read Requests we issue at once
};

namespace detail {

struct region {
  std::byte* base = nullptr;
  memory_region mr;
};

/// A message waiting to be framed, or being framed, on the outbound stream.
struct out_message {
  wire::opcode op = wire::opcode::send;
  std::uint64_t sq_index = 0;  // its send queue entry (Send, RDMA Write, RDMA Read Request)
  smbdirect::detail::small_vector<asio::const_buffer, max_send_sge> payload;  // inline: no allocation
  std::size_t total = 0;       // payload bytes
  std::size_t framed = 0;      // payload bytes already framed
  std::uint32_t stag = 0;      // write: remote STag; send: STag to invalidate; read response: sink STag
  std::uint32_t source = 0;    // read response: the STag of our region it sends from
  smbdirect::detail::small_vector<asio::mutable_buffer, max_send_sge> sink;  // read request: where its response goes
  std::uint64_t offset = 0;    // tagged offset of the first payload byte
  std::array<std::byte, wire::read_request_size> body{};  // RDMA Read Request or Terminate Control
  std::size_t body_size = 0;
  bool started = false;        // its first FPDU is framed: nothing may come between its FPDUs
};

/// An RDMA Read Request we sent, waiting for its RDMA Read Response.
struct pending_read {
  std::uint64_t sq_index = 0;
  std::uint32_t sink_stag = 0;
  smbdirect::detail::small_vector<asio::mutable_buffer, max_send_sge> sink;
  std::uint32_t size = 0;
  std::uint32_t placed = 0;
};

/// A send queue work request, reported in posting order once it is done.
struct sq_entry {
  std::uint64_t wr_id = 0;
  work_opcode op = work_opcode::send;
  bool done = false;
  std::error_code status;
};

/// One FPDU's bytes other than its payload: length + header (+ body), pad + CRC.
struct fpdu_frame {
  std::array<std::byte, 2 + wire::untagged_header_size + wire::read_request_size> head{};
  std::size_t head_size = 0;
  std::array<std::byte, 8> tail{};
  std::size_t tail_size = 0;
};

using asio::experimental::as_tuple;
constexpr auto use_tuple = as_tuple(asio::use_awaitable);

/// Everything one connection owns. Shared by the queue_pair handle and its coroutines.
class qp_state : public std::enable_shared_from_this<qp_state> {
 public:
  qp_state(asio::ip::tcp::socket socket, options o, mpa_settings s)
      : socket_(std::move(socket)),
        executor_(socket_.get_executor()),
        options_(o),
        settings_(s),
        cq_event_(executor_),
        writer_event_(executor_),
        linger_(executor_) {
    options_.max_ulpdu = std::clamp<std::uint32_t>(options_.max_ulpdu, 64, mpa::max_ulpdu);
    options_.read_buffer = std::max<std::uint32_t>(options_.read_buffer, mpa::fpdu_size(mpa::max_ulpdu));
    options_.write_batch = std::max<std::uint32_t>(options_.write_batch, 1);
    rng_.seed((std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}());
  }

  const asio::any_io_executor& executor() const { return executor_; }
  const mpa_settings& settings() const { return settings_; }
  asio::ip::tcp::socket& socket() { return socket_; }

  // ------------------------------------------------------------------ posting

  std::error_code post_receive(std::uint64_t wr_id, std::span<std::byte> buf) {
    start();
    if (error_) return flushed(wr_id, work_opcode::receive);
    receives_.emplace_back(wr_id, buf);
    return {};
  }

  std::error_code post_send(std::uint64_t wr_id, std::span<const asio::const_buffer> gather, std::uint32_t invalidate) {
    start();
    if (error_) return flushed(wr_id, work_opcode::send);
    if (asio::buffer_size(gather) > 0xffffffffu) return errc::invalid_argument;  // MO is 32 bits
    auto& m = enqueue(invalidate ? wire::opcode::send_with_invalidate : wire::opcode::send, wr_id, gather);
    m.stag = invalidate;
    return {};
  }

  std::error_code post_rdma_write(std::uint64_t wr_id, std::span<const asio::const_buffer> local,
                                  std::uint64_t remote_address, std::uint32_t token) {
    start();
    if (error_) return flushed(wr_id, work_opcode::rdma_write);
    auto& m = enqueue(wire::opcode::rdma_write, wr_id, local);
    m.stag = token;
    m.offset = remote_address;
    return {};
  }

  std::error_code post_rdma_read(std::uint64_t wr_id, std::span<const asio::mutable_buffer> local,
                                 std::uint64_t remote_address, std::uint32_t token) {
    start();
    if (error_) return flushed(wr_id, work_opcode::rdma_read);
    const std::size_t size = asio::buffer_size(local);
    // RDMA Read Message Size is at most 2^31 (RFC 5040 4.4); a peer with IRD 0 takes no reads.
    if (size > 0x80000000u || settings_.ord == 0) return errc::invalid_argument;
    auto& m = enqueue(wire::opcode::read_request, wr_id, {});
    m.sink = {local.begin(), local.end()};
    // The sink STag only has to match the response, which comes back in request order: any
    // nonzero value does, and it names no region the peer could write to.
    while (m.stag == 0) m.stag = static_cast<std::uint32_t>(rng_());
    wire::encode(wire::read_request{m.stag, 0, static_cast<std::uint32_t>(size), token, remote_address}, m.body.data());
    m.body_size = wire::read_request_size;
    return {};
  }

  std::pair<std::error_code, memory_region> register_memory(asio::mutable_buffer buf, access rights) {
    if (error_) return {errc::work_request_flushed, {}};
    if (buf.size() > 0xffffffffu) return {errc::invalid_argument, {}};
    region r{static_cast<std::byte*>(buf.data()),
             {reinterpret_cast<std::uint64_t>(buf.data()), new_region_stag(), static_cast<std::uint32_t>(buf.size()), rights}};
    regions_.emplace(r.mr.token, r);
    return {{}, r.mr};
  }

  std::error_code deregister_memory(const memory_region& mr) {
    if (!regions_.erase(mr.token)) return errc::invalid_token;
    released(mr.token);
    return {};
  }

  asio::awaitable<std::size_t> poll(std::span<work_completion> out) {
    auto self = shared_from_this();
    for (;;) {
      if (!cq_.empty()) {
        std::size_t n = 0;
        while (n < out.size() && !cq_.empty()) {
          out[n++] = cq_.front();
          cq_.pop_front();
        }
        co_return n;
      }
      if (error_ && writer_done_) co_return 0;
      co_await cq_event_.wait();
    }
  }

  /// Flushes everything and closes our direction of the TCP connection (after a Terminate,
  /// if one is queued); keeps reading until the peer closes too or options::linger passes.
  void disconnect() { fail(errc::work_request_flushed, std::nullopt); }
  /// The handle is gone; the coroutines finish the close on their own.
  void release() { disconnect(); }

  transport_info info() const {
    return {"tcp", static_cast<std::uint32_t>(max_send_sge), 0xffffffffu, 0x80000000u};
  }

 private:
  // ------------------------------------------------------------------ helpers

  std::uint32_t new_region_stag() {
    std::uint32_t s = 0;
    while (s == 0 || regions_.contains(s)) s = static_cast<std::uint32_t>(rng_());
    return s;
  }

  std::error_code flushed(std::uint64_t wr_id, work_opcode op) {
    complete({wr_id, op, errc::work_request_flushed});
    return {};
  }

  /// The status of the next work request ended by an error: the error itself once, then
  /// work_request_flushed.
  std::error_code take_error() {
    return std::exchange(unreported_error_, make_error_code(errc::work_request_flushed));
  }

  std::uint64_t sq_post(std::uint64_t wr_id, work_opcode op) {
    sq_.push_back({wr_id, op, false, {}});
    return sq_base_ + sq_.size() - 1;
  }

  /// Marks a send queue entry done; reports every done entry at the front, in posting order.
  void sq_done(std::uint64_t index, std::error_code status) {
    sq_entry& e = sq_[index - sq_base_];
    e.done = true;
    e.status = status;
    while (!sq_.empty() && sq_.front().done) {
      complete({sq_.front().wr_id, sq_.front().op, sq_.front().status});
      sq_.pop_front();
      ++sq_base_;
    }
  }

  /// A region is gone (deregistered, or invalidated by the peer). An RDMA Read Response still
  /// sending from it cannot finish: the connection ends rather than read freed memory.
  void released(std::uint32_t token) {
    bool queued = false;
    for (std::size_t i = 0; i < responses_.size(); ++i) queued = queued || responses_[i].source == token;
    if (queued || std::find(batch_sources_.begin(), batch_sources_.end(), token) != batch_sources_.end())
      fail(iwarp_errc::region_released_during_read, std::nullopt);
  }

  void complete(const work_completion& wc) {
    cq_.push_back(wc);
    cq_event_.notify();
  }

  out_message& enqueue(wire::opcode op, std::uint64_t wr_id, std::span<const asio::const_buffer> payload) {
    out_message& m = outbound_.emplace_back();
    m.op = op;
    m.sq_index = sq_post(wr_id, opcode_of(op));
    m.payload = {payload.begin(), payload.end()};
    m.total = asio::buffer_size(payload);
    writer_event_.notify();
    return m;
  }

  void start() {
    if (started_) return;
    started_ = true;
    asio::co_spawn(executor_, reader(shared_from_this()), asio::detached);
    asio::co_spawn(executor_, writer(shared_from_this()), asio::detached);
  }

  /// Enters the error state: the first completion carries `ec`, the rest are flushed. When
  /// `tell_peer` is set, a Terminate goes out before our side of TCP closes.
  void fail(std::error_code ec, std::optional<wire::terminate_info> tell_peer) {
    if (error_) return;
    error_ = unreported_error_ = ec;
    // Receives first: the engine always has some, so the error is the first completion.
    for (std::size_t i = 0; i < receives_.size(); ++i) complete({receives_[i].first, work_opcode::receive, take_error()});
    receives_.clear();
    for (std::size_t i = 0; i < reads_.size(); ++i) sq_done(reads_[i].sq_index, take_error());
    reads_.clear();
    // Messages not yet on the wire; one being framed (only the front one can be: nothing comes
    // between its FPDUs) completes when its write returns.
    const std::size_t framing = !outbound_.empty() && outbound_.front().started ? 1 : 0;
    for (std::size_t i = framing; i < outbound_.size(); ++i) sq_done(outbound_[i].sq_index, take_error());
    while (outbound_.size() > framing) outbound_.pop_back();
    responses_.clear();
    regions_.clear();
    // A write in flight that sends from our regions stops now: the application may release
    // them once it sees the error. The stream is then cut, so no Terminate can follow.
    if (writing_ && !batch_sources_.empty()) {
      cut_ = true;
      std::error_code ignored;
      socket_.cancel(ignored);
      tell_peer.reset();
    }
    if (tell_peer) {
      auto& t = responses_.emplace_back();
      t.op = wire::opcode::terminate;
      t.body_size = wire::encode(*tell_peer, t.body.data());
    }
    cq_event_.notify();
    writer_event_.notify();
    // However the peer behaves, the socket closes within options::linger.
    linger_.expires_after(options_.linger);
    linger_.async_wait([weak = weak_from_this()](std::error_code e) {
      if (auto self = weak.lock(); self && !e) self->close();
    });
    start();  // nothing posted yet: the writer and reader still close in order
  }

  static work_opcode opcode_of(wire::opcode op) {
    switch (op) {
      case wire::opcode::rdma_write: return work_opcode::rdma_write;
      case wire::opcode::read_request: return work_opcode::rdma_read;
      default: return work_opcode::send;
    }
  }

  // ------------------------------------------------------------------ writer

  /// The next message to frame: a message already started, else a Terminate or RDMA Read
  /// Response, else the oldest posted work request (an RDMA Read Request only within ORD).
  smbdirect::detail::ring_queue<out_message>* next_queue() {
    if (error_) return responses_.empty() ? nullptr : &responses_;  // only a Terminate is left
    if (!outbound_.empty() && outbound_.front().started) return &outbound_;
    if (!responses_.empty()) return &responses_;
    if (outbound_.empty()) return nullptr;
    if (outbound_.front().op == wire::opcode::read_request && reads_.size() >= settings_.ord) return nullptr;
    return &outbound_;
  }

  /// Frames FPDUs of queued messages into frames_/buffers_ until the batch is full.
  void frame_batch() {
    std::size_t bytes = 0;
    while (frames_.size() < max_batch_frames && bytes < options_.write_batch) {
      auto* q = next_queue();
      if (!q) break;
      out_message& m = q->front();
      if (!m.started && m.op == wire::opcode::read_request) {
        const auto size = static_cast<std::uint32_t>(asio::buffer_size(m.sink));
        reads_.push_back({m.sq_index, m.stag, std::move(m.sink), size, 0});
      }
      if (m.op == wire::opcode::read_response) batch_sources_.push_back(m.source);
      m.started = true;
      bytes += frame_one(m);
      if (m.framed == m.total) {
        // An answered RDMA Read Request frees its IRD slot now: the requester may send the next
        // one as soon as the response reaches it, before our write completion runs.
        if (m.op == wire::opcode::read_response) --inbound_reads_;
        if (m.op != wire::opcode::read_response && m.op != wire::opcode::terminate) finished_.emplace_back(m.op, m.sq_index);
        q->pop_front();
      }
    }
  }

  /// Frames one FPDU of `m`; returns its size in bytes.
  std::size_t frame_one(out_message& m) {
    fpdu_frame& f = frames_.emplace_back();
    const bool tagged = m.op == wire::opcode::rdma_write || m.op == wire::opcode::read_response;
    const std::size_t header = tagged ? wire::tagged_header_size : wire::untagged_header_size;
    const std::size_t room = options_.max_ulpdu - header - m.body_size;
    const std::size_t n = std::min(room, m.total - m.framed);
    const bool last = m.framed + n == m.total;
    std::byte* h = f.head.data() + 2;
    if (tagged) {
      wire::encode_tagged(h, m.op, last, m.stag, m.offset + m.framed);
    } else {
      const auto qn = m.op == wire::opcode::read_request ? wire::queue::read_request
                      : m.op == wire::opcode::terminate  ? wire::queue::terminate
                                                         : wire::queue::send;
      auto& msn = out_msn_[static_cast<std::size_t>(qn)];
      wire::encode_untagged(h, m.op, last, qn, msn, static_cast<std::uint32_t>(m.framed), m.stag);
      if (last) ++msn;
    }
    std::memcpy(h + header, m.body.data(), m.body_size);
    const std::size_t ulpdu = header + m.body_size + n;
    wire::detail::put16(f.head.data(), static_cast<std::uint16_t>(ulpdu));
    f.head_size = 2 + header + m.body_size;
    const std::size_t pad = mpa::pad_for(ulpdu);
    f.tail_size = pad + 4;
    const std::size_t first = buffers_.size();
    buffers_.emplace_back(f.head.data(), f.head_size);
    // The payload pieces covering [framed, framed + n).
    std::size_t skip = m.framed, want = n;
    for (const auto& b : m.payload) {
      if (want == 0) break;
      if (skip >= b.size()) {
        skip -= b.size();
        continue;
      }
      const std::size_t take = std::min(b.size() - skip, want);
      buffers_.emplace_back(static_cast<const std::byte*>(b.data()) + skip, take);
      want -= take;
      skip = 0;
    }
    buffers_.emplace_back(f.tail.data(), f.tail_size);
    if (settings_.crc) {
      mpa::crc32c crc;
      for (std::size_t i = first; i + 1 < buffers_.size(); ++i) crc.update(buffers_[i].data(), buffers_[i].size());
      crc.update(f.tail.data(), pad);  // zeros
      mpa::put_crc(f.tail.data() + pad, crc.value());
    }
    m.framed += n;
    return f.head_size + n + f.tail_size;
  }

  asio::awaitable<void> writer([[maybe_unused]] std::shared_ptr<qp_state> self) {  // keeps us alive
    frames_.reserve(max_batch_frames);  // buffers_ points into frames_: no reallocation in a batch
    for (;;) {
      frames_.clear();
      buffers_.clear();
      finished_.clear();
      batch_sources_.clear();
      frame_batch();
      if (frames_.empty()) {
        if (error_) break;  // everything that may go out has gone out
        co_await writer_event_.wait();
        continue;
      }
      writing_ = true;
      const std::error_code ec = co_await write_batch();
      writing_ = false;
      if (ec) fail(ec, std::nullopt);
      // Sends and RDMA Writes complete once on the wire; RDMA Reads when their response lands.
      for (const auto& [op, index] : finished_)
        if (op != wire::opcode::read_request) sq_done(index, error_ ? take_error() : std::error_code{});
    }
    batch_sources_.clear();
    // A message cut short by the error: its work request ends now its bytes are written.
    for (std::size_t i = 0; i < outbound_.size(); ++i) sq_done(outbound_[i].sq_index, take_error());
    outbound_.clear();
    std::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    writer_done_ = true;
    cq_event_.notify();
    if (reader_done_) close();
  }

  /// Writes buffers_ with one gather write after another. Unlike asio::async_write, it stops
  /// between two writes when fail() cuts the batch, so no later write reads released regions.
  asio::awaitable<std::error_code> write_batch() {
    std::size_t first = 0;
    while (first < buffers_.size()) {
      if (cut_) co_return asio::error::operation_aborted;
      auto [ec, n] = co_await socket_.async_write_some(std::span(buffers_).subspan(first), use_tuple);
      if (ec) co_return ec;
      for (; first < buffers_.size() && n >= buffers_[first].size(); ++first) n -= buffers_[first].size();
      if (first < buffers_.size()) buffers_[first] += n;
    }
    co_return std::error_code{};
  }

  void close() {
    std::error_code ignored;
    socket_.close(ignored);
    linger_.cancel();
  }

  // ------------------------------------------------------------------ reader

  asio::awaitable<void> reader([[maybe_unused]] std::shared_ptr<qp_state> self) {  // keeps us alive
    std::vector<std::byte> buf(options_.read_buffer);
    std::size_t begin = 0, end = 0;
    for (;;) {
      begin += consume({buf.data() + begin, end - begin});
      if (error_) begin = end = 0;  // draining until the peer closes
      if (begin > 0) {
        std::memmove(buf.data(), buf.data() + begin, end - begin);
        end -= begin;
        begin = 0;
      }
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buf.data() + end, buf.size() - end), use_tuple);
      if (ec) {
        if (ec == asio::error::eof) {
          fail(end > begin ? make_error_code(iwarp_errc::fpdu_truncated) : make_error_code(errc::work_request_flushed),
               std::nullopt);
        } else {
          fail(ec, std::nullopt);
        }
        break;
      }
      end += n;
    }
    reader_done_ = true;
    if (writer_done_) close();
  }

 public:
  /// Handles every whole FPDU at the start of `bytes` (MPA framing, RFC 5044 4.1) and returns
  /// how many bytes they took; stops at a partial FPDU or the first error. The reader feeds it
  /// the TCP stream; fuzzers feed it directly.
  std::size_t consume(std::span<const std::byte> bytes) {
    std::size_t used = 0;
    while (!error_ && bytes.size() - used >= 2) {
      const std::size_t ulpdu = wire::detail::get16(bytes.data() + used);
      const std::size_t size = mpa::fpdu_size(ulpdu);
      if (bytes.size() - used < size) break;
      on_fpdu(bytes.data() + used, ulpdu);
      used += size;
    }
    return used;
  }

 private:
  void on_fpdu(const std::byte* p, std::size_t ulpdu) {
    if (settings_.crc && !mpa::crc_matches(p, ulpdu))
      return fail(iwarp_errc::crc_mismatch, wire::terminate_for(iwarp_errc::crc_mismatch, false));
    wire::segment s;
    if (auto ec = wire::decode_segment({p + 2, ulpdu}, s)) {
      const bool tagged = ulpdu > 0 && (std::to_integer<unsigned>(p[2]) & 0x80);
      return fail(ec, wire::terminate_for(static_cast<iwarp_errc>(ec.value()), tagged));
    }
    s.tagged ? on_tagged(s) : on_untagged(s);
  }

  void fail_tagged(iwarp_errc e) { fail(e, wire::terminate_for(e, true)); }
  void fail_untagged(iwarp_errc e) { fail(e, wire::terminate_for(e, false)); }

  /// The region `stag` names, checked for `need` over [offset, offset + n). Sets `error`.
  region* check_access(std::uint32_t stag, std::uint64_t offset, std::uint64_t n, access need, iwarp_errc& error) {
    const auto it = regions_.find(stag);
    if (it == regions_.end()) return error = iwarp_errc::invalid_stag, nullptr;
    const memory_region& mr = it->second.mr;
    if (!allows(mr.rights, need)) return error = iwarp_errc::access_rights_violation, nullptr;
    if (offset < mr.address || offset - mr.address > mr.length || n > mr.length - (offset - mr.address))
      return error = iwarp_errc::base_or_bounds_violation, nullptr;
    return &it->second;
  }

  void on_tagged(const wire::segment& s) {
    if (s.op == wire::opcode::rdma_write) {
      iwarp_errc e{};
      region* r = check_access(s.stag, s.tagged_offset, s.payload.size(), access::remote_write, e);
      if (!r) return fail_tagged(e);
      std::memcpy(r->base + (s.tagged_offset - r->mr.address), s.payload.data(), s.payload.size());
      return;
    }
    // RDMA Read Response: for our oldest outstanding RDMA Read Request, in order.
    if (reads_.empty()) return fail_tagged(iwarp_errc::read_response_unexpected);
    pending_read& r = reads_.front();
    if (s.stag != r.sink_stag) return fail_tagged(iwarp_errc::invalid_stag);
    if (s.tagged_offset != r.placed || s.payload.size() > r.size - r.placed)
      return fail_tagged(iwarp_errc::base_or_bounds_violation);
    place(r.sink, r.placed, s.payload);
    r.placed += static_cast<std::uint32_t>(s.payload.size());
    if (!s.last) return;
    if (r.placed != r.size) return fail_tagged(iwarp_errc::base_or_bounds_violation);
    const std::uint64_t index = r.sq_index;
    reads_.pop_front();
    sq_done(index, {});
    writer_event_.notify();  // an ORD slot is free
  }

  /// Copies `data` into the scatter list `sink` starting `offset` bytes in.
  static void place(std::span<const asio::mutable_buffer> sink, std::size_t offset, std::span<const std::byte> data) {
    for (const auto& b : sink) {
      if (data.empty()) return;
      if (offset >= b.size()) {
        offset -= b.size();
        continue;
      }
      const std::size_t n = std::min(b.size() - offset, data.size());
      std::memcpy(static_cast<std::byte*>(b.data()) + offset, data.data(), n);
      data = data.subspan(n);
      offset = 0;
    }
  }

  void on_untagged(const wire::segment& s) {
    if (s.queue_number > 2) return fail_untagged(iwarp_errc::bad_queue_number);
    const auto q = static_cast<std::size_t>(s.queue_number);
    if (s.msn != in_msn_[q]) return fail_untagged(iwarp_errc::bad_msn);
    if (s.message_offset != in_offset_[q]) return fail_untagged(iwarp_errc::bad_message_offset);
    const bool fits_queue = q == 0   ? (s.op >= wire::opcode::send && s.op <= wire::opcode::send_with_se_and_invalidate)
                            : q == 1 ? s.op == wire::opcode::read_request
                                     : s.op == wire::opcode::terminate;
    if (!fits_queue) return fail_untagged(iwarp_errc::bad_opcode);
    if (q == 0) return on_send(s);
    if (!s.last || s.message_offset != 0) return fail_untagged(q == 1 ? iwarp_errc::bad_read_request : iwarp_errc::bad_opcode);
    ++in_msn_[q];
    if (q == 2) {
      wire::terminate_info t;
      return fail(wire::decode(s.payload, t) ? make_error_code(iwarp_errc::terminated_by_peer) : wire::error_for(t),
                  std::nullopt);
    }
    on_read_request(s);
  }

  void on_send(const wire::segment& s) {
    if (s.message_offset == 0) in_send_op_ = s.op;
    if (s.op != in_send_op_) return fail_untagged(iwarp_errc::bad_opcode);  // one message, one opcode
    if (s.message_offset == 0 && receives_.empty()) return fail(errc::receiver_not_ready, wire::terminate_for(errc::receiver_not_ready, false));
    auto& [wr_id, buf] = receives_.front();
    if (s.payload.size() > buf.size() - s.message_offset)
      return fail(errc::local_length_error, wire::terminate_for(errc::local_length_error, false));
    std::memcpy(buf.data() + s.message_offset, s.payload.data(), s.payload.size());
    in_offset_[0] += static_cast<std::uint32_t>(s.payload.size());
    if (!s.last) return;
    work_completion wc{wr_id, work_opcode::receive, {}, in_offset_[0]};
    if (s.op == wire::opcode::send_with_invalidate || s.op == wire::opcode::send_with_se_and_invalidate) {
      // Only a region the peer may access can be invalidated by it (not an access::local one).
      const auto it = regions_.find(s.stag);
      if (it == regions_.end() || it->second.mr.rights == access::local) return fail_untagged(iwarp_errc::bad_invalidate);
      regions_.erase(it);
      wc.invalidated_token = s.stag;
      released(s.stag);
      if (error_) return;
    }
    receives_.pop_front();
    in_offset_[0] = 0;
    ++in_msn_[0];
    complete(wc);
  }

  void on_read_request(const wire::segment& s) {
    wire::read_request rr;
    if (wire::decode(s.payload, rr) || rr.size > 0x80000000u) return fail_untagged(iwarp_errc::bad_read_request);
    if (inbound_reads_ >= settings_.ird) return fail_untagged(iwarp_errc::ird_exceeded);
    iwarp_errc e{};
    region* r = check_access(rr.source_stag, rr.source_tagged_offset, rr.size, access::remote_read, e);
    if (!r) return fail(e, wire::terminate_for_read(e));
    out_message& m = responses_.emplace_back();
    m.op = wire::opcode::read_response;
    m.payload.push_back(asio::const_buffer(r->base + (rr.source_tagged_offset - r->mr.address), rr.size));
    m.total = rr.size;
    m.stag = rr.sink_stag;
    m.source = rr.source_stag;
    m.offset = rr.sink_tagged_offset;
    ++inbound_reads_;
    writer_event_.notify();
  }

  asio::ip::tcp::socket socket_;
  asio::any_io_executor executor_;
  options options_;
  mpa_settings settings_;
  smbdirect::detail::async_event cq_event_, writer_event_;
  asio::steady_timer linger_;
  std::mt19937_64 rng_;

  static constexpr std::size_t max_batch_frames = 64;

  std::error_code error_;
  std::error_code unreported_error_;  // error_ until a completion has carried it
  bool started_ = false;
  bool writing_ = false;
  bool cut_ = false;  // the batch being written must not be written further
  bool writer_done_ = false;  // our direction of TCP is shut down
  bool reader_done_ = false;  // the peer's direction ended
  // Queues on ring buffers, not std::deque: a deque allocates and frees blocks as items pass.
  smbdirect::detail::ring_queue<work_completion> cq_;
  smbdirect::detail::ring_queue<std::pair<std::uint64_t, std::span<std::byte>>> receives_;
  smbdirect::detail::ring_queue<sq_entry> sq_;       // send queue work requests not yet reported, in posting order
  std::uint64_t sq_base_ = 0;     // index of sq_.front()
  std::unordered_map<std::uint32_t, region> regions_;

  // Outbound: posted work requests in order; Terminate and RDMA Read Responses go first.
  smbdirect::detail::ring_queue<out_message> outbound_, responses_;
  smbdirect::detail::ring_queue<pending_read> reads_;         // framed, awaiting their response (<= ORD)
  std::array<std::uint32_t, 3> out_msn_{1, 1, 1};
  std::vector<fpdu_frame> frames_;
  std::vector<asio::const_buffer> buffers_;
  std::vector<std::pair<wire::opcode, std::uint64_t>> finished_;  // messages ending in the batch
  std::vector<std::uint32_t> batch_sources_;  // regions the batch's RDMA Read Responses send from

  // Inbound.
  std::array<std::uint32_t, 3> in_msn_{1, 1, 1};
  std::array<std::uint32_t, 3> in_offset_{0, 0, 0};
  std::uint32_t inbound_reads_ = 0;  // RDMA Read Requests accepted and not yet answered
  wire::opcode in_send_op_ = wire::opcode::send;  // of the Send message being received
};

}  // namespace detail

/// One TCP emulation connection. Models smbdirect::transport. Movable, not copyable;
/// destroying it disconnects. Errors besides the concept's: post_send invalid_argument at 4 GiB
/// or more, post_rdma_read invalid_argument above 2 GiB (RDMA Read Message Size) or when the
/// peer's IRD is 0; register_memory invalid_argument above 4 GiB; deregister_memory
/// invalid_token when the region is not registered (or was invalidated). Tokens are random
/// STags.
class queue_pair : public smbdirect::detail::queue_pair_handle<detail::qp_state> {
 public:
  using queue_pair_handle::queue_pair_handle;

  /// What MPA settled: revision, CRC, IRD and ORD.
  const mpa_settings& settings() const { return state_->settings(); }
  /// The TCP socket (addresses, options). Do not read or write it.
  asio::ip::tcp::socket& native_handle() const { return state_->socket(); }
};

static_assert(transport<queue_pair>);

}  // namespace smbdirect::tcp
