// Register Buffer, Deregister Buffer, RDMA Write and RDMA Read ([MS-SMBD] 3.1.4.3-3.1.4.6)
// over loopback: data lands where the descriptors say, and the peer reaches only what we
// registered, with the access we granted, while it is registered.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <set>

#include "support/connected_pair.hpp"

using namespace smbdirect;
using namespace smbdirect::test;

namespace {

struct fixture : connected_pair {
  fixture() { REQUIRE(negotiate() == std::pair<std::error_code, std::error_code>{}); }

  std::pair<std::error_code, std::size_t> write(const bytes& data, std::span<const wire::buffer_descriptor_v1> remote,
                                                std::uint64_t offset = 0) {
    std::optional<std::pair<std::error_code, std::size_t>> r;
    client->async_rdma_write(asio::buffer(data), remote, [&](std::error_code ec, std::size_t n) { r = {ec, n}; }, offset);
    REQUIRE(d.run_until([&] { return r.has_value(); }));
    return *r;
  }

  std::pair<std::error_code, std::size_t> read(bytes& data, std::span<const wire::buffer_descriptor_v1> remote,
                                               std::uint64_t offset = 0) {
    std::optional<std::pair<std::error_code, std::size_t>> r;
    client->async_rdma_read(asio::buffer(data), remote, [&](std::error_code ec, std::size_t n) { r = {ec, n}; }, offset);
    REQUIRE(d.run_until([&] { return r.has_value(); }));
    return *r;
  }
};

}  // namespace

TEST_CASE("RDMA write then read back through one descriptor") {
  fixture f;
  bytes target(100000);
  auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_read_write);
  REQUIRE_FALSE(ec);
  CHECK(reg.descriptor.length == 100000);
  CHECK(reg.descriptor.offset == reinterpret_cast<std::uint64_t>(target.data()));
  const bytes data = pattern(100000, 1);
  CHECK(f.write(data, std::span(&reg.descriptor, 1)) == std::pair<std::error_code, std::size_t>{{}, 100000});
  CHECK(target == data);
  bytes back(100000);
  CHECK(f.read(back, std::span(&reg.descriptor, 1)).second == 100000);
  CHECK(back == data);
  CHECK(f.client->stats().rdma_writes == 1);
  CHECK(f.client->stats().rdma_bytes_read == 100000);
  CHECK_FALSE(f.server->deregister_buffer(reg));
}

TEST_CASE("3.1.4.5: a transfer spans several descriptors, starting at an offset") {
  fixture f;
  bytes r1(1000), r2(3000);
  auto [e1, g1] = f.server->register_buffer(asio::buffer(r1), access::remote_write);
  auto [e2, g2] = f.server->register_buffer(asio::buffer(r2), access::remote_write);
  REQUIRE_FALSE(e1);
  REQUIRE_FALSE(e2);
  const wire::buffer_descriptor_v1 descs[] = {g1.descriptor, g2.descriptor};
  const bytes data = pattern(2500, 2);
  CHECK_FALSE(f.write(data, descs, 500).first);  // skips r1's first 500 bytes
  CHECK(bytes(r1.begin() + 500, r1.end()) == bytes(data.begin(), data.begin() + 500));
  CHECK(bytes(r2.begin(), r2.begin() + 2000) == bytes(data.begin() + 500, data.end()));
  CHECK(std::all_of(r1.begin(), r1.begin() + 500, [](std::byte b) { return b == std::byte{0}; }));
}

TEST_CASE("tokens are unpredictable and unique") {
  fixture f;
  std::vector<bytes> bufs(64, bytes(16));
  std::set<std::uint32_t> tokens;
  for (auto& b : bufs) tokens.insert(f.server->register_buffer(asio::buffer(b), access::remote_read).second.descriptor.token);
  CHECK(tokens.size() == 64);
  CHECK_FALSE(tokens.contains(0));
  // Not a counter: registration order says nothing about the next token...
  std::vector<std::uint32_t> in_order;
  for (auto& b : bufs) in_order.push_back(f.server->register_buffer(asio::buffer(b), access::remote_read).second.descriptor.token);
  std::set<std::uint32_t> steps;
  for (std::size_t i = 1; i < in_order.size(); ++i) steps.insert(in_order[i] - in_order[i - 1]);
  CHECK(steps.size() > 32);
  // ...and another connection (seeded from std::random_device) draws other tokens.
  fixture g;
  bytes one(16);
  CHECK_FALSE(tokens.contains(g.server->register_buffer(asio::buffer(one), access::remote_read).second.descriptor.token));
}

TEST_CASE("Send with Invalidate: the named region is gone for the peer; a later access fails") {
  asio::io_context io;
  auto [a, b] = loopback::make_pair(io.get_executor(), io.get_executor());
  bytes region(4096), inbox(64);
  auto [re, mr] = b.register_memory(asio::buffer(region), access::remote_read_write);
  REQUIRE_FALSE(re);
  REQUIRE_FALSE(b.post_receive(1, inbox));
  const bytes hello = pattern(10, 1);
  const asio::const_buffer g(hello.data(), hello.size());
  REQUIRE_FALSE(a.post_send(2, std::span(&g, 1), mr.token));
  std::array<work_completion, 4> wc;
  REQUIRE(b.try_poll(wc) == 1);
  CHECK(wc[0].status == std::error_code{});
  CHECK(wc[0].invalidated_token == mr.token);
  const asio::const_buffer w(hello.data(), hello.size());
  REQUIRE_FALSE(a.post_rdma_write(3, std::span(&w, 1), mr.address, mr.token));
  std::size_t n = a.try_poll(wc);
  REQUIRE(n >= 2);  // the send, then the write
  CHECK(wc[n - 1].wr_id == 3);
  CHECK(wc[n - 1].status == errc::remote_access_error);
  CHECK(std::all_of(region.begin(), region.end(), [](std::byte x) { return x == std::byte{0}; }));
  CHECK(b.deregister_memory(mr) == errc::invalid_token);
}

TEST_CASE("access the peer did not grant fails with remote_access_error and ends the connection") {
  bytes target(4096);
  const bytes data = pattern(100, 3);
  SUBCASE("write into read-only memory") {
    fixture f;
    auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_read);
    CHECK(f.write(data, std::span(&reg.descriptor, 1)).first == errc::remote_access_error);
    CHECK(f.client->error() == errc::remote_access_error);
    CHECK(target == bytes(4096));
  }
  SUBCASE("read from write-only memory") {
    fixture f;
    auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_write);
    bytes back(100);
    CHECK(f.read(back, std::span(&reg.descriptor, 1)).first == errc::remote_access_error);
    CHECK(f.client->error() == errc::remote_access_error);
  }
  SUBCASE("read out of bounds by one byte") {
    fixture f;
    auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_read_write);
    auto bad = reg.descriptor;
    bad.offset += 4096 - 99;
    bytes back(100);
    CHECK(f.read(back, std::span(&bad, 1)).first == errc::remote_access_error);
    CHECK(f.client->error() == errc::remote_access_error);
    CHECK(back == bytes(100));
  }
  SUBCASE("wrong token") {
    fixture f;
    auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_read_write);
    auto bad = reg.descriptor;
    bad.token ^= 1;
    CHECK(f.write(data, std::span(&bad, 1)).first == errc::remote_access_error);
    CHECK(f.client->error() == errc::remote_access_error);
  }
  SUBCASE("out of bounds by one byte") {
    fixture f;
    auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_read_write);
    auto bad = reg.descriptor;
    bad.offset += 4096 - 99;  // 100 bytes from here end one byte past the region
    CHECK(f.write(data, std::span(&bad, 1)).first == errc::remote_access_error);
    CHECK(f.client->error() == errc::remote_access_error);
    CHECK(target == bytes(4096));
  }
  SUBCASE("after deregistration") {
    fixture f;
    auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_read_write);
    CHECK_FALSE(f.server->deregister_buffer(reg));
    CHECK(f.server->deregister_buffer(reg) == errc::invalid_token);
    CHECK(f.write(data, std::span(&reg.descriptor, 1)).first == errc::remote_access_error);
    CHECK(f.client->error() == errc::remote_access_error);
    CHECK(target == bytes(4096));
  }
}

TEST_CASE("limits: descriptor count bounded by max_rdma_descriptors, up to the 4095 an SMB2 channel info holds") {
  fixture f;
  bytes region(4095 * 16), data = pattern(4095 * 16, 7);
  auto [ec, reg] = f.server->register_buffer(asio::buffer(region), access::remote_read_write);
  REQUIRE_FALSE(ec);
  std::vector<wire::buffer_descriptor_v1> descs(4095);
  for (std::size_t i = 0; i < descs.size(); ++i) descs[i] = {reg.descriptor.offset + i * 16, reg.descriptor.token, 16};
  CHECK(f.write(data, descs).first == errc::too_many_descriptors);
  CHECK(f.write(data, std::span(descs).first(257)).first == errc::too_many_descriptors);
  CHECK(f.client->is_connected());
  CHECK(region == bytes(region.size()));
  const bytes part(data.begin(), data.begin() + 256 * 16);
  CHECK(f.write(part, std::span(descs).first(256)) == std::pair<std::error_code, std::size_t>{{}, 256 * 16});
  CHECK(std::equal(part.begin(), part.end(), region.begin()));
}

TEST_CASE("local limits: MaxReadWriteSize and the descriptors' length, connection stays up") {
  fixture f;  // MaxReadWriteSize 1 MiB
  bytes target(1 << 20);
  auto [ec, reg] = f.server->register_buffer(asio::buffer(target), access::remote_read_write);
  const bytes big = pattern(1048577, 4);
  CHECK(f.write(big, std::span(&reg.descriptor, 1)).first == errc::rdma_too_large);
  const bytes fits = pattern(1000, 5);
  CHECK(f.write(fits, std::span(&reg.descriptor, 1), (1 << 20) - 999).first == errc::rdma_too_large);
  CHECK_FALSE(f.client->error());
  CHECK_FALSE(f.write(fits, std::span(&reg.descriptor, 1), (1 << 20) - 1000).first);
}

TEST_CASE("registration needs rights and bytes") {
  fixture f;
  bytes b(10);
  CHECK(f.server->register_buffer(asio::buffer(b), access::none).first == errc::invalid_argument);
  CHECK(f.server->register_buffer(asio::buffer(b), static_cast<smbdirect::access>(5)).first == errc::invalid_argument);
  CHECK(f.server->register_buffer(asio::mutable_buffer(), access::remote_read).first == errc::invalid_argument);
  CHECK_FALSE(f.server->register_buffer(asio::buffer(b), access::local).first);
}

TEST_CASE("Send with Invalidate cannot revoke an access::local region") {
  asio::io_context io;
  auto [a, b] = loopback::make_pair(io.get_executor(), io.get_executor());
  bytes region(4096), inbox(64);
  auto [re, mr] = b.register_memory(asio::buffer(region), access::local);
  REQUIRE_FALSE(re);
  REQUIRE_FALSE(b.post_receive(1, inbox));
  const bytes hello = pattern(10, 1);
  const asio::const_buffer g(hello.data(), hello.size());
  REQUIRE_FALSE(a.post_send(2, std::span(&g, 1), mr.token));
  std::array<work_completion, 4> wc;
  REQUIRE(b.try_poll(wc) == 1);
  CHECK(wc[0].status == errc::remote_invalid_request);
  CHECK(wc[0].invalidated_token == 0);
}
