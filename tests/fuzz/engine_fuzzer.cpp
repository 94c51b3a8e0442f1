// libFuzzer target: the protocol engine in either role against a raw peer that sends whatever
// the input says (raw bytes, negotiate messages and Data Transfer Messages with any field
// values), interleaved with our own sends, receives, RDMA operations, receive posting, timer
// jumps on the virtual clock and disconnects.
// Invariants: no crash or sanitizer report; no operation ends in internal_error; every error is
// one of ours or the transport's; no delivered message exceeds MaxFragmentedRecvSize.
#include <fuzzer/FuzzedDataProvider.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "support/harness.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {

void require(bool ok) {
  if (!ok) __builtin_trap();
}

void check(std::error_code ec) {
  require(ec != errc::internal_error);
  require(!ec || ec.category() == error_category());
}

wire::data_transfer_header fuzzed_header(FuzzedDataProvider& in, std::uint32_t length) {
  wire::data_transfer_header h;
  h.credits_requested = in.ConsumeIntegralInRange<std::uint16_t>(0, 300);
  h.credits_granted = in.ConsumeIntegralInRange<std::uint16_t>(0, 300);
  h.flags = in.ConsumeIntegralInRange<std::uint16_t>(0, 3);
  h.remaining_data_length = in.ConsumeBool() ? 0 : in.ConsumeIntegral<std::uint32_t>() % 2000000;
  h.data_offset = length ? (in.ConsumeBool() ? 24 : in.ConsumeIntegralInRange<std::uint32_t>(0, 80)) : 0;
  h.data_length = in.ConsumeBool() ? length : in.ConsumeIntegralInRange<std::uint32_t>(0, 3000);
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  driver d;
  const bool passive = in.ConsumeBool();
  parameters p;
  p.receive_credit_max = in.ConsumeIntegralInRange<std::uint16_t>(1, 64);
  p.send_credit_target = in.ConsumeIntegralInRange<std::uint16_t>(1, 64);
  p.max_fragmented_size = in.ConsumeIntegralInRange<std::uint32_t>(131072, 300000);
  auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
  std::optional<loopback_connection> conn(std::in_place, std::move(a), p, &d.clock);
  raw_peer peer(std::move(b));
  peer.post_receives(in.ConsumeIntegralInRange<std::size_t>(0, 64), 2048);

  std::optional<std::error_code> negotiated;
  if (passive) {
    conn->async_accept([&](std::error_code ec) { negotiated = ec; });
  } else {
    conn->async_connect([&](std::error_code ec) { negotiated = ec; });
  }
  d.settle();

  std::deque<bytes> outgoing;  // kept alive until the engine is gone
  bytes incoming, region(4096), local(4096);
  bool receiving = false;
  std::optional<registration> reg;
  for (int step = 0; step < 256 && in.remaining_bytes() > 0; ++step) {
    switch (in.ConsumeIntegralInRange<int>(0, 10)) {
      case 0:
        (void)peer.send(in.ConsumeBytes<std::byte>(in.ConsumeIntegralInRange<std::size_t>(0, 300)));
        break;
      case 1: {
        wire::negotiate_request r = protocol::make_negotiate_request(parameters{});
        r.min_version = in.ConsumeBool() ? 0x0100 : in.ConsumeIntegral<std::uint16_t>();
        r.max_version = in.ConsumeBool() ? 0x0100 : in.ConsumeIntegral<std::uint16_t>();
        r.credits_requested = in.ConsumeIntegral<std::uint16_t>();
        r.preferred_send_size = in.ConsumeIntegral<std::uint32_t>();
        r.max_receive_size = in.ConsumeIntegral<std::uint32_t>();
        r.max_fragmented_size = in.ConsumeIntegral<std::uint32_t>();
        (void)peer.send(encode_request(r));
        break;
      }
      case 2: {
        wire::negotiate_response r = good_response(in.ConsumeIntegral<std::uint16_t>(), in.ConsumeIntegral<std::uint16_t>());
        if (in.ConsumeBool()) r.status = in.ConsumeIntegral<std::uint32_t>();
        if (in.ConsumeBool()) r.negotiated_version = in.ConsumeIntegral<std::uint16_t>();
        r.max_read_write_size = in.ConsumeIntegral<std::uint32_t>();
        r.preferred_send_size = in.ConsumeIntegralInRange<std::uint32_t>(0, 3000);
        r.max_receive_size = in.ConsumeIntegralInRange<std::uint32_t>(0, 3000);
        r.max_fragmented_size = in.ConsumeIntegral<std::uint32_t>();
        (void)peer.send(encode_response(r));
        break;
      }
      case 3: {
        const bytes payload = in.ConsumeBytes<std::byte>(in.ConsumeIntegralInRange<std::size_t>(0, 1400));
        const auto h = fuzzed_header(in, static_cast<std::uint32_t>(payload.size()));
        if (h.data_offset % 8 != 0 || (h.data_length && h.data_offset < 24)) {
          bytes raw(24 + payload.size());
          (void)wire::encode(h, raw);
          (void)peer.send(std::move(raw));
        } else {
          (void)peer.send(encode_data(h, payload));
        }
        break;
      }
      case 4:
        d.advance(std::chrono::milliseconds(in.ConsumeIntegralInRange<int>(0, 200000)));
        break;
      case 5:
        outgoing.push_back(bytes(in.ConsumeIntegralInRange<std::size_t>(0, 5000), std::byte{0x5a}));
        conn->async_send(asio::buffer(outgoing.back()), [](std::error_code ec, std::size_t) { check(ec); });
        break;
      case 6:
        if (receiving) break;
        receiving = true;
        conn->async_receive(incoming, [&](std::error_code ec, std::size_t n) {
          check(ec);
          require(ec || n == incoming.size());
          require(n <= p.max_fragmented_size);
          receiving = false;
        });
        break;
      case 7:
        peer.post_receives(in.ConsumeIntegralInRange<std::size_t>(0, 16), 2048);
        break;
      case 8:
        peer.drain();
        break;
      case 9: {
        if (!reg) {
          auto [ec, r] = conn->register_buffer(asio::buffer(region), access::remote_read_write);
          check(ec);
          if (!ec) reg = r;
        }
        wire::buffer_descriptor_v1 remote{in.ConsumeIntegral<std::uint64_t>(), in.ConsumeIntegral<std::uint32_t>(),
                                          in.ConsumeIntegralInRange<std::uint32_t>(0, 8192)};
        if (reg && in.ConsumeBool()) remote = reg->descriptor;  // our own memory, via the peer's token
        const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, local.size());
        if (in.ConsumeBool()) {
          conn->async_rdma_write(asio::buffer(local.data(), n), std::span(&remote, 1),
                                 [](std::error_code ec, std::size_t) { check(ec); });
        } else {
          conn->async_rdma_read(asio::buffer(local.data(), n), std::span(&remote, 1),
                                [](std::error_code ec, std::size_t) { check(ec); });
        }
        break;
      }
      default:
        if (in.ConsumeBool()) {
          peer.endpoint().disconnect();
        } else {
          conn->async_close([](std::error_code ec) { check(ec); });
        }
        break;
    }
    d.settle();
  }
  if (negotiated) check(*negotiated);
  conn.reset();
  d.settle();
  return 0;
}
