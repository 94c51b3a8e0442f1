// libFuzzer target: the TCP transport's inbound parser (MPA framing and CRC, DDP/RDMAP headers,
// placement, RDMA Read Requests, Terminate), fed through qp_state::consume as the reader would.
// Half the inputs are raw bytes; the other half describe well-framed segments (valid CRCs, our
// real STags) so that the fuzzer reaches placement and bounds checks, not only the CRC check.
// Invariants: no crash, no sanitizer report, and the parser never consumes a partial FPDU.
#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstdint>
#include <vector>

#include <smbdirect/tcp.hpp>

namespace {

using namespace smbdirect;
namespace wire = smbdirect::tcp::wire;
namespace mpa = smbdirect::tcp::mpa;

void frame(std::vector<std::byte>& out, const std::vector<std::byte>& ulpdu, bool crc) {
  const std::size_t at = out.size();
  out.resize(at + mpa::fpdu_size(ulpdu.size()));
  out[at] = static_cast<std::byte>(ulpdu.size() >> 8);
  out[at + 1] = static_cast<std::byte>(ulpdu.size());
  std::copy(ulpdu.begin(), ulpdu.end(), out.begin() + static_cast<std::ptrdiff_t>(at + 2));
  if (crc) mpa::seal(out.data() + at, ulpdu.size());
}

std::vector<std::byte> segments(FuzzedDataProvider& in, bool crc, const std::array<std::uint32_t, 2>& stags) {
  std::vector<std::byte> out;
  std::uint32_t msn[3] = {1, 1, 1};
  const auto stag = [&] {
    const auto k = in.ConsumeIntegralInRange<int>(0, 2);
    return k < 2 ? stags[k] : in.ConsumeIntegral<std::uint32_t>();
  };
  while (in.remaining_bytes() > 0 && out.size() < 200000) {
    std::vector<std::byte> u(wire::untagged_header_size + wire::read_request_size);
    const auto kind = in.ConsumeIntegralInRange<int>(0, 6);
    const bool last = in.ConsumeIntegralInRange<int>(0, 3) != 0;
    std::size_t header = 0;
    switch (kind) {
      case 0:  // raw ULPDU
        u = in.ConsumeBytes<std::byte>(in.ConsumeIntegralInRange<std::size_t>(0, 64));
        break;
      case 1:  // Send / Send with Invalidate on QN 0
        header = wire::encode_untagged(u.data(), in.ConsumeBool() ? wire::opcode::send : wire::opcode::send_with_invalidate,
                                       last, wire::queue::send, msn[0]++, in.ConsumeIntegralInRange<std::uint32_t>(0, 300), stag());
        break;
      case 2:  // RDMA Write into a region
        header = wire::encode_tagged(u.data(), wire::opcode::rdma_write, last, stag(),
                                     in.ConsumeIntegralInRange<std::uint64_t>(0, 600));
        break;
      case 3: {  // RDMA Read Request on QN 1
        header = wire::encode_untagged(u.data(), wire::opcode::read_request, true, wire::queue::read_request, msn[1]++, 0);
        wire::read_request r{in.ConsumeIntegral<std::uint32_t>(), in.ConsumeIntegral<std::uint64_t>(),
                             in.ConsumeIntegralInRange<std::uint32_t>(0, 700), stag(),
                             in.ConsumeIntegralInRange<std::uint64_t>(0, 600)};
        wire::encode(r, u.data() + header);
        header += wire::read_request_size;
        break;
      }
      case 4:  // RDMA Read Response
        header = wire::encode_tagged(u.data(), wire::opcode::read_response, last, in.ConsumeIntegral<std::uint32_t>(),
                                     in.ConsumeIntegralInRange<std::uint64_t>(0, 600));
        break;
      case 5: {  // Terminate on QN 2, with a fuzzed Terminate Control
        header = wire::encode_untagged(u.data(), wire::opcode::terminate, true, wire::queue::terminate, msn[2]++, 0);
        for (int i = 0; i < 4; ++i) u[header++] = static_cast<std::byte>(in.ConsumeIntegral<std::uint8_t>());
        break;
      }
      default:  // a header with one byte changed
        header = wire::encode_untagged(u.data(), wire::opcode::send, last, wire::queue::send, msn[0]++, 0);
        u[in.ConsumeIntegralInRange<std::size_t>(0, header - 1)] ^= static_cast<std::byte>(in.ConsumeIntegralInRange<int>(1, 255));
        break;
    }
    if (kind != 0) {
      u.resize(header);
      const auto payload = in.ConsumeBytes<std::byte>(in.ConsumeIntegralInRange<std::size_t>(0, 400));
      u.insert(u.end(), payload.begin(), payload.end());
    }
    frame(out, u, crc);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  tcp::mpa_settings settings;
  settings.crc = in.ConsumeBool();
  settings.ird = in.ConsumeIntegralInRange<std::uint16_t>(0, 4);
  settings.ord = in.ConsumeIntegralInRange<std::uint16_t>(0, 4);
  const bool structured = in.ConsumeBool();
  const std::size_t chunk = in.ConsumeIntegralInRange<std::size_t>(1, 4096);

  asio::io_context io;
  auto qp = std::make_shared<tcp::detail::qp_state>(asio::ip::tcp::socket(io), tcp::options{}, settings);
  std::array<std::array<std::byte, 256>, 4> receive{};
  for (std::size_t i = 0; i < receive.size(); ++i) (void)qp->post_receive(i, receive[i]);
  std::array<std::byte, 512> writable{}, readable{};
  const auto w = qp->register_memory(asio::buffer(writable), access::remote_write).second;
  const auto r = qp->register_memory(asio::buffer(readable), access::remote_read).second;
  std::array<std::byte, 300> sink{};
  if (settings.ord > 0) {
    const asio::mutable_buffer b = asio::buffer(sink);
    (void)qp->post_rdma_read(100, std::span(&b, 1), 0, 12345);
  }

  const std::vector<std::byte> stream =
      structured ? segments(in, settings.crc, {w.token, r.token}) : in.ConsumeRemainingBytes<std::byte>();
  // As the reader does: bytes arrive in chunks, whole FPDUs are consumed, the rest waits.
  std::vector<std::byte> pending;
  for (std::size_t at = 0; at < stream.size(); at += chunk) {
    pending.insert(pending.end(), stream.begin() + static_cast<std::ptrdiff_t>(at),
                   stream.begin() + static_cast<std::ptrdiff_t>(std::min(stream.size(), at + chunk)));
    const std::size_t used = qp->consume(pending);
    if (used > pending.size()) __builtin_trap();
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(used));
  }
  qp->release();  // as the handle's destructor does
  io.poll();
  return 0;
}
