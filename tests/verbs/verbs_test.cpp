// The verbs transport (rdma_rxe / siw in tools/vm, or a real NIC): the conformance suite
// (tests/conformance/suite.hpp) plus what only verbs has: devices, memory windows, busy
// polling. Both ends in this process, connected through RDMA CM on $RDMA_ADDR.
//
// Environment: RDMA_ADDR (required: an address of an RDMA device), RDMA_ADDR6 (optional
// IPv6 address), RDMA_DEVICE (optional: the device that address must resolve to).
#include <algorithm>
#include <cstdlib>
#include <string>

#include <asio.hpp>
#include <doctest/doctest.h>

#include <smbdirect/smbdirect.hpp>
#include <smbdirect/verbs.hpp>

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string test_address() {
  const std::string a = env("RDMA_ADDR");
  REQUIRE_MESSAGE(!a.empty(), "set RDMA_ADDR to an address of an RDMA device (tools/vm/run.sh does)");
  return a;
}

struct verbs_fabric {
  using queue_pair = smbdirect::verbs::queue_pair;
  using listener = smbdirect::verbs::listener;
  using options = smbdirect::verbs::options;

  static std::string address() { return test_address(); }
  // SMBDIRECT_TEST_MEMORY_WINDOWS=0 runs the suite with plain memory regions on a device that
  // supports windows too.
  static options transport_options(const smbdirect::parameters& p, bool busy_poll) {
    auto o = options::for_parameters(p);
    o.memory_windows = env("SMBDIRECT_TEST_MEMORY_WINDOWS") != "0";
    o.busy_poll = busy_poll;
    return o;
  }
  static asio::awaitable<std::pair<std::error_code, queue_pair>> connect(asio::any_io_executor ex, std::string address,
                                                                          std::uint16_t port, options o) {
    return smbdirect::verbs::connect(std::move(ex), std::move(address), port, std::move(o));
  }
  static std::uint16_t default_port(const std::string&) {
    const auto devices = smbdirect::verbs::list_devices();
    const bool iwarp = std::any_of(devices.begin(), devices.end(), [](const auto& d) { return d.iwarp; });
    return iwarp ? smbdirect::verbs::iwarp_port : smbdirect::verbs::ib_port;
  }
  static bool async_write_errors(const queue_pair& qp) { return qp.device().iwarp; }
  // Linux soft-iWARP (siw, kernel 6.1) serves an RDMA Read from memory registered without
  // IBV_ACCESS_REMOTE_READ: the target's kernel, not us, would have to refuse it.
  static bool enforces_remote_read_right(const queue_pair& qp) { return qp.device().name.rfind("siw", 0) != 0; }
  static bool is_async_access_error(std::error_code ec) { return ec == smbdirect::condition::transport_failure; }
  static bool is_refused(std::error_code ec) {
    return ec == smbdirect::verbs::cm_errc::connection_rejected || ec == smbdirect::verbs::cm_errc::peer_unreachable;
  }
};

}  // namespace

#define SMBDIRECT_CONFORMANCE_FABRICS verbs_fabric
#include "conformance/suite.hpp"

using namespace smbdirect;
using namespace smbdirect::conformance;
using verbs_pair = network_pair<verbs_fabric>;

TEST_CASE("an RDMA device is present and reports its capabilities") {
  const auto devices = verbs::list_devices();
  REQUIRE_MESSAGE(!devices.empty(), "no RDMA device: load rdma_rxe or siw and add a link (tools/vm/run.sh does)");
  for (const auto& d : devices) MESSAGE(verbs::to_string(d));
  if (const auto want = env("RDMA_DEVICE"); !want.empty()) {
    CHECK(std::any_of(devices.begin(), devices.end(), [&](const auto& d) { return d.name == want; }));
  }
  for (const auto& d : devices) {
    CHECK(d.max_qp_wr >= 256);
    CHECK(d.active_mtu >= 256);
    CHECK(d.max_sge >= 1);
  }
}

TEST_CASE("a wrong device name is refused before connecting") {
  verbs_pair p;
  REQUIRE_FALSE(p.listen(test_address()));
  verbs::options o;
  o.device = "no-such-device";
  std::optional<std::error_code> c;
  asio::co_spawn(p.io, verbs::connect(p.io.get_executor(), test_address(), p.port, o),
                 [&](std::exception_ptr, std::pair<std::error_code, verbs::queue_pair> r) { c = r.first; });
  REQUIRE(p.run_until([&] { return c.has_value(); }));
  CHECK(*c == verbs::cm_errc::no_matching_device);
}

TEST_CASE("the queue pair runs on the requested device, with ORD negotiated") {
  verbs_pair p;
  p.connect_ok(test_address());
  const auto& qp = p.client->next_layer();
  if (const auto want = env("RDMA_DEVICE"); !want.empty()) CHECK(qp.device().name == want);
  CHECK(qp.initiator_depth() >= 1);
  MESSAGE("device " << qp.device().name << ", ORD " << qp.initiator_depth() << ", memory windows "
                    << std::string(qp.uses_memory_windows() ? "yes" : "no"));
}

TEST_CASE("receives land in place in the engine's receive buffers, without a copy") {
  verbs_pair p;
  p.connect_ok(test_address());
  const bytes m = pattern(100000, 17);  // 75 fragments at MaxSendSize 1364
  CHECK(p.exchange(*p.client, *p.server, m) == m);
  CHECK(p.exchange(*p.server, *p.client, m) == m);
  CHECK(p.client->stats().fragments_received >= 75);
  CHECK(p.client->next_layer().receives_copied() == 0);
  CHECK(p.server->next_layer().receives_copied() <= 1);  // its receive posted before rdma_accept
}

TEST_CASE("memory windows give each registration of the same memory its own token") {
  verbs_pair p;
  p.connect_ok(test_address());
  if (!p.server->next_layer().uses_memory_windows()) {
    MESSAGE("no memory windows on this device (or SMBDIRECT_TEST_MEMORY_WINDOWS=0)");
    return;
  }
  bytes region(8192);
  auto [e1, r1] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  auto [e2, r2] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(e1);
  REQUIRE_FALSE(e2);
  CHECK(r2.descriptor.token != r1.descriptor.token);
}

TEST_CASE("IPv6") {
  const std::string a6 = env("RDMA_ADDR6");
  if (a6.empty()) {
    MESSAGE("RDMA_ADDR6 not set: IPv6 not tested");
    return;
  }
  verbs_pair p;
  p.connect_ok(a6);
  const bytes m = pattern(70000, 13);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
}

TEST_CASE("busy-poll mode moves messages and RDMA like the event-driven mode") {
  verbs_pair p;
  p.busy_poll = true;
  p.connect_ok(test_address());
  const bytes m = pattern(100000, 21);
  CHECK(p.exchange(*p.client, *p.server, m) == m);
  bytes region(65536);
  auto [e, reg] = p.server->register_buffer(asio::buffer(region), access::remote_write);
  REQUIRE_FALSE(e);
  const bytes data = pattern(region.size(), 22);
  std::optional<std::error_code> w;
  p.client->async_rdma_write(asio::buffer(data), std::span(&reg.descriptor, 1), [&](std::error_code ec, std::size_t) { w = ec; });
  REQUIRE(p.run_until([&] { return w.has_value(); }));
  REQUIRE_FALSE(*w);
  CHECK(region == data);
}

