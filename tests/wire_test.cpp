// Known-answer tests for the four [MS-SMBD] wire structures, built by hand from the spec's
// field tables (2.2.1-2.2.3.1) and the example of 4.1, 4.2 and 4.4.
#include <doctest/doctest.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "smbdirect/wire/buffer_descriptor.hpp"
#include "smbdirect/wire/data_transfer.hpp"
#include "smbdirect/wire/negotiate.hpp"

using namespace smbdirect;
using bytes = std::vector<std::byte>;

static bytes hex(std::initializer_list<int> v) {
  bytes b;
  for (int x : v) b.push_back(static_cast<std::byte>(x));
  return b;
}

TEST_CASE("Negotiate Request: 4.1 example, 20 bytes, little-endian") {
  wire::negotiate_request r;
  r.credits_requested = 10;
  r.preferred_send_size = 0x400;
  r.max_receive_size = 0x400;
  r.max_fragmented_size = 0x20000;
  const bytes expected = hex({0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x04,
                              0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00});
  bytes out(20);
  REQUIRE_FALSE(wire::encode(r, out));
  CHECK(out == expected);
  wire::negotiate_request back;
  REQUIRE_FALSE(wire::decode(expected, back));
  CHECK(back == r);
  CHECK(wire::decode(std::span(expected).first(19), back) == errc::message_too_short);
  bytes small(19);
  CHECK(wire::encode(r, small) == errc::buffer_too_small);
}

TEST_CASE("Negotiate Request: extra bytes are ignored (a 512-byte request decodes)") {
  bytes b(512);
  b[0] = std::byte{0x00}, b[1] = std::byte{0x01}, b[6] = std::byte{5};
  wire::negotiate_request r;
  REQUIRE_FALSE(wire::decode(b, r));
  CHECK(r.min_version == 0x0100);
  CHECK(r.credits_requested == 5);
}

TEST_CASE("Negotiate Response: 4.1 example, 32 bytes") {
  wire::negotiate_response r;
  r.credits_requested = 10;
  r.credits_granted = 10;
  r.max_read_write_size = 0x100000;
  r.preferred_send_size = 0x400;
  r.max_receive_size = 0x400;
  r.max_fragmented_size = 0x20000;
  const bytes expected = hex({0x00, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0A, 0x00, 0x0A,
                              0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x04,
                              0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00});
  bytes out(32);
  REQUIRE_FALSE(wire::encode(r, out));
  CHECK(out == expected);
  wire::negotiate_response back;
  REQUIRE_FALSE(wire::decode(expected, back));
  CHECK(back == r);
  CHECK(wire::decode(std::span(expected).first(31), back) == errc::message_too_short);
}

TEST_CASE("Negotiate Response: Status sits at offset 12 (STATUS_NOT_SUPPORTED)") {
  wire::negotiate_response r{};
  r.negotiated_version = 0;
  r.status = wire::status_not_supported;
  bytes out(32);
  REQUIRE_FALSE(wire::encode(r, out));
  CHECK(out[12] == std::byte{0xBB});
  CHECK(out[13] == std::byte{0x00});
  CHECK(out[14] == std::byte{0x00});
  CHECK(out[15] == std::byte{0xC0});
}

TEST_CASE("Data Transfer: 4.2 example header, 24 bytes with payload") {
  wire::data_transfer_header h;
  h.credits_requested = 10;
  h.credits_granted = 1;
  h.data_offset = 24;
  h.data_length = 500;
  const bytes expected = hex({0x0A, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                              0x18, 0x00, 0x00, 0x00, 0xF4, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00});
  bytes out(24, std::byte{0xEE});
  REQUIRE_FALSE(wire::encode(h, out));
  CHECK(out == expected);
  bytes message = expected;
  message.resize(524, std::byte{0x5A});
  wire::data_transfer_message m;
  REQUIRE_FALSE(wire::decode(message, m));
  CHECK(m.header == h);
  CHECK(m.payload.size() == 500);
  CHECK(m.payload.data() == message.data() + 24);
}

TEST_CASE("Data Transfer: empty message is 20 bytes with zero lengths") {
  wire::data_transfer_header h;
  h.credits_requested = 255;
  h.credits_granted = 3;
  h.flags = wire::smb_direct_response_requested;
  CHECK(wire::header_size_for(0) == 20);
  bytes out(20);
  REQUIRE_FALSE(wire::encode(h, out));
  CHECK(out == hex({0xFF, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}));
  wire::data_transfer_message m;
  REQUIRE_FALSE(wire::decode(out, m));
  CHECK(m.header == h);
  CHECK(m.payload.empty());
}

TEST_CASE("Data Transfer: 4.3 fragments carry RemainingDataLength") {
  wire::data_transfer_header h;
  h.credits_requested = 10;
  h.credits_granted = 1;
  h.remaining_data_length = 64536;
  h.data_offset = 24;
  h.data_length = 1000;
  bytes out(24);
  REQUIRE_FALSE(wire::encode(h, out));
  CHECK(out[8] == std::byte{0x18});  // 64536 = 0xFC18
  CHECK(out[9] == std::byte{0xFC});
  CHECK(out[16] == std::byte{0xE8});  // 1000 = 0x3E8
  CHECK(out[17] == std::byte{0x03});
}

TEST_CASE("Data Transfer decode: each structural check of 3.1.5.8 has its own error") {
  wire::data_transfer_message m;
  bytes b(24 + 8);
  SUBCASE("fewer than 20 bytes") { CHECK(wire::decode(std::span(b).first(19), m) == errc::message_too_short); }
  SUBCASE("DataOffset not 8-aligned") {
    b[12] = std::byte{25};
    b[16] = std::byte{1};
    CHECK(wire::decode(b, m) == errc::data_offset_misaligned);
  }
  SUBCASE("DataOffset inside the header") {
    b[12] = std::byte{16};
    b[16] = std::byte{1};
    CHECK(wire::decode(b, m) == errc::data_offset_in_header);
  }
  SUBCASE("DataOffset + DataLength past the end, by one byte") {
    b[12] = std::byte{24};
    b[16] = std::byte{9};
    CHECK(wire::decode(b, m) == errc::data_out_of_bounds);
    b[16] = std::byte{8};
    CHECK_FALSE(wire::decode(b, m));
  }
  SUBCASE("sum that would wrap 32 bits") {
    b[12] = std::byte{24};
    b[16] = std::byte{0xF0}, b[17] = std::byte{0xFF}, b[18] = std::byte{0xFF}, b[19] = std::byte{0xFF};
    CHECK(wire::decode(b, m) == errc::data_out_of_bounds);
  }
}

TEST_CASE("Buffer Descriptor V1: 4.4 example, Offset, Token, Length order") {
  wire::buffer_descriptor_v1 d{0x00000000ABCDE012ull, 0x1A00BC56u, 0x00100000u};
  const bytes expected = hex({0x12, 0xE0, 0xCD, 0xAB, 0x00, 0x00, 0x00, 0x00, 0x56, 0xBC, 0x00, 0x1A, 0x00, 0x00, 0x10, 0x00});
  bytes out(16);
  REQUIRE_FALSE(wire::encode(d, out));
  CHECK(out == expected);
  wire::buffer_descriptor_v1 back;
  REQUIRE_FALSE(wire::decode(expected, back));
  CHECK(back == d);
  CHECK(wire::decode(std::span(expected).first(15), back) == errc::message_too_short);
}

TEST_CASE("error codes: category, messages and conditions") {
  std::error_code ec = errc::keepalive_timeout;
  CHECK(std::string(ec.category().name()) == "smbdirect");
  CHECK(ec == condition::timeout);
  CHECK(std::error_code(errc::data_offset_misaligned) == condition::protocol_violation);
  CHECK(std::error_code(errc::receiver_not_ready) == condition::transport_failure);
  CHECK(std::error_code(errc::message_too_large) == condition::local_error);
  for (int v = 1; v <= static_cast<int>(last_errc); ++v)
    CHECK(error_category().message(v) != "unknown smbdirect error");
}
