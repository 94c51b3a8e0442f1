// The TCP emulation's pure wire units: MPA frames and FPDU framing, CRC32c, DDP/RDMAP headers,
// RDMA Read Requests and Terminate codes. No sockets.
#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <string_view>
#include <vector>

#include <smbdirect/tcp.hpp>

using namespace smbdirect;
using namespace smbdirect::tcp;

namespace {

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

}  // namespace

TEST_CASE("CRC32c: RFC 3720 B.4 vectors, byte order on the wire, and pieces equal the whole") {
  mpa::crc32c whole;
  const auto digits = bytes_of("123456789");
  whole.update(digits.data(), digits.size());
  CHECK(whole.value() == 0xE3069283u);
  mpa::crc32c pieces;
  pieces.update(digits.data(), 4);
  pieces.update(digits.data() + 4, 5);
  CHECK(pieces.value() == whole.value());
  std::array<std::byte, 32> zeros{};
  mpa::crc32c z;
  z.update(zeros.data(), zeros.size());
  std::array<std::byte, 4> field{};
  mpa::put_crc(field.data(), z.value());
  CHECK(field == std::array<std::byte, 4>{std::byte{0xaa}, std::byte{0x36}, std::byte{0x91}, std::byte{0x8a}});
  CHECK(mpa::get_crc(field.data()) == z.value());
}

TEST_CASE("FPDU padding makes length field + ULPDU a multiple of 4") {
  CHECK(mpa::pad_for(14) == 0);  // 2 + 14 = 16
  CHECK(mpa::pad_for(18) == 0);
  CHECK(mpa::pad_for(19) == 3);
  CHECK(mpa::pad_for(20) == 2);
  CHECK(mpa::pad_for(21) == 1);
  for (std::size_t n = 0; n < 64; ++n) CHECK((2 + n + mpa::pad_for(n)) % 4 == 0);
  CHECK(mpa::fpdu_size(14) == 20);
  CHECK(mpa::fpdu_size(65535) == 2 + 65535 + 3 + 4);
}

TEST_CASE("MPA Request/Reply frames round-trip, with RFC 6581 enhanced data") {
  mpa::frame f;
  f.crc = true;
  f.ird = 0x3fff;
  f.ord = 7;
  f.rtr.zero_length_write = true;
  f.rtr.zero_length_read = true;
  const auto b = mpa::encode(f);
  REQUIRE(b.size() == 24);
  CHECK(std::memcmp(b.data(), "MPA ID Req Frame", 16) == 0);
  CHECK(b[16] == std::byte{0x50});  // C and S
  mpa::frame d;
  std::size_t pd = 0;
  REQUIRE_FALSE(mpa::decode_header(std::span<const std::byte, 20>(b.data(), 20), false, d, pd));
  CHECK(pd == 4);
  REQUIRE_FALSE(mpa::decode_private_data(std::span(b).subspan(20), d));
  CHECK(d.crc);
  CHECK_FALSE(d.markers);
  CHECK(d.revision == 2);
  CHECK(d.enhanced);
  CHECK(d.peer_to_peer);
  CHECK(d.ird == 0x3fff);
  CHECK(d.ord == 7);
  CHECK(d.rtr.zero_length_write);
  CHECK(d.rtr.zero_length_read);
  CHECK_FALSE(d.rtr.zero_length_send);
  // A Request read as a Reply has the wrong key.
  CHECK(mpa::decode_header(std::span<const std::byte, 20>(b.data(), 20), true, d, pd) == iwarp_errc::mpa_bad_key);
}

TEST_CASE("MPA revision 1 frames carry no IRD/ORD; bad headers are refused") {
  mpa::frame f;
  f.revision = 1;
  f.markers = true;
  auto b = mpa::encode(f);
  REQUIRE(b.size() == 20);
  CHECK(b[16] == std::byte{0x80});
  mpa::frame d;
  std::size_t pd = 1;
  REQUIRE_FALSE(mpa::decode_header(std::span<const std::byte, 20>(b.data(), 20), false, d, pd));
  CHECK(d.markers);
  CHECK(pd == 0);
  REQUIRE_FALSE(mpa::decode_private_data({}, d));
  CHECK_FALSE(d.peer_to_peer);
  b[17] = std::byte{0};
  CHECK(mpa::decode_header(std::span<const std::byte, 20>(b.data(), 20), false, d, pd) == iwarp_errc::mpa_bad_revision);
  b[17] = std::byte{1};
  b[18] = std::byte{0x02}, b[19] = std::byte{0x01};  // 513
  CHECK(mpa::decode_header(std::span<const std::byte, 20>(b.data(), 20), false, d, pd) == iwarp_errc::mpa_private_data_too_long);
  // Revision 2 with S but fewer than 4 bytes of private data.
  mpa::frame e;
  e.revision = 2;
  e.enhanced = true;
  CHECK(mpa::decode_private_data(std::vector<std::byte>(3), e) == iwarp_errc::mpa_bad_enhanced_data);
}

TEST_CASE("DDP tagged and untagged headers round-trip") {
  std::array<std::byte, 32> b{};
  REQUIRE(wire::encode_tagged(b.data(), wire::opcode::read_response, true, 0x11223344, 0x0102030405060708) == 14);
  CHECK(b[0] == std::byte{0xc1});
  CHECK(b[1] == std::byte{0x42});
  wire::segment s;
  REQUIRE_FALSE(wire::decode_segment(std::span(b).first(20), s));
  CHECK(s.tagged);
  CHECK(s.last);
  CHECK(s.op == wire::opcode::read_response);
  CHECK(s.stag == 0x11223344u);
  CHECK(s.tagged_offset == 0x0102030405060708u);
  CHECK(s.payload.size() == 6);

  REQUIRE(wire::encode_untagged(b.data(), wire::opcode::send_with_invalidate, false, wire::queue::send, 9, 1364, 0xabcdef01) == 18);
  CHECK(b[0] == std::byte{0x01});
  CHECK(b[1] == std::byte{0x44});
  REQUIRE_FALSE(wire::decode_segment(std::span(b).first(18), s));
  CHECK_FALSE(s.tagged);
  CHECK_FALSE(s.last);
  CHECK(s.op == wire::opcode::send_with_invalidate);
  CHECK(s.stag == 0xabcdef01u);
  CHECK(s.queue_number == 0);
  CHECK(s.msn == 9);
  CHECK(s.message_offset == 1364);
  CHECK(s.payload.empty());
}

TEST_CASE("DDP/RDMAP header errors: short, versions, reserved opcodes, opcode on the wrong DDP model") {
  std::array<std::byte, 18> b{};
  wire::segment s;
  CHECK(wire::decode_segment(std::span(b).first(13), s) == iwarp_errc::ulpdu_too_short);
  wire::encode_untagged(b.data(), wire::opcode::send, true, wire::queue::send, 1, 0);
  CHECK(wire::decode_segment(std::span(b).first(17), s) == iwarp_errc::ulpdu_too_short);
  auto with = [&](unsigned b0, unsigned b1) {
    auto c = b;
    c[0] = std::byte(b0), c[1] = std::byte(b1);
    return wire::decode_segment(c, s);
  };
  CHECK(with(0x42, 0x43) == iwarp_errc::bad_ddp_version);
  CHECK(with(0x41, 0x83) == iwarp_errc::bad_rdmap_version);
  CHECK(with(0x41, 0x48) == iwarp_errc::bad_opcode);  // reserved
  CHECK(with(0x41, 0x40) == iwarp_errc::bad_opcode);  // RDMA Write untagged
  CHECK(with(0xc1, 0x43) == iwarp_errc::bad_opcode);  // Send tagged
  CHECK_FALSE(with(0x41, 0x43));
}

TEST_CASE("RDMA Read Request messages round-trip and must be exactly 28 bytes") {
  wire::read_request r{0x1234, 0x10, 65536, 0x5678, 0xffff000012345678u};
  std::array<std::byte, 28> b{};
  wire::encode(r, b.data());
  wire::read_request d;
  REQUIRE_FALSE(wire::decode(b, d));
  CHECK(d.sink_stag == r.sink_stag);
  CHECK(d.sink_tagged_offset == r.sink_tagged_offset);
  CHECK(d.size == r.size);
  CHECK(d.source_stag == r.source_stag);
  CHECK(d.source_tagged_offset == r.source_tagged_offset);
  CHECK(wire::decode(std::span(b).first(27), d) == iwarp_errc::bad_read_request);
}

TEST_CASE("Terminate codes: what we send for each error, and what the peer's mean to us") {
  std::array<std::byte, 4> b{};
  const wire::terminate_info crc = wire::terminate_for(iwarp_errc::crc_mismatch, false);
  CHECK(crc == wire::terminate_info{wire::layer::llp, 0, 0x02});
  REQUIRE(wire::encode(crc, b.data()) == 4);
  CHECK(b == std::array<std::byte, 4>{std::byte{0x20}, std::byte{0x02}, std::byte{0}, std::byte{0}});
  wire::terminate_info d;
  REQUIRE_FALSE(wire::decode(b, d));
  CHECK(d == crc);
  CHECK(wire::decode(std::span(b).first(3), d) == iwarp_errc::terminated_by_peer);

  CHECK(wire::terminate_for(iwarp_errc::base_or_bounds_violation, true) == wire::terminate_info{wire::layer::ddp, 1, 0x01});
  CHECK(wire::terminate_for(iwarp_errc::bad_ddp_version, false) == wire::terminate_info{wire::layer::ddp, 2, 0x06});
  CHECK(wire::terminate_for_read(iwarp_errc::invalid_stag) == wire::terminate_info{wire::layer::rdmap, 1, 0x00});
  // Each error we report to a peer maps back to the error its side shows.
  CHECK(wire::error_for(wire::terminate_for(iwarp_errc::invalid_stag, true)) == errc::remote_access_error);
  CHECK(wire::error_for(wire::terminate_for_read(iwarp_errc::access_rights_violation)) == errc::remote_access_error);
  CHECK(wire::error_for(wire::terminate_for(errc::receiver_not_ready, false)) == errc::receiver_not_ready);
  CHECK(wire::error_for(wire::terminate_for(errc::local_length_error, false)) == errc::remote_invalid_request);
  CHECK(wire::error_for(crc) == iwarp_errc::terminated_by_peer);
  CHECK(make_error_code(iwarp_errc::crc_mismatch) == condition::transport_failure);
}
