// Fault loops: six whole sessions, each run once cleanly to count its transport operations and
// timer waits, then once per index with exactly that one failing:
//   refused      - the post_* call (or registration) returns injected_fault;
//   completion   - the work request is accepted but completes with injected_fault;
//   timer        - the engine's timer wait ends with injected_fault (virtual_clock::fail_wait).
// Every run must end (virtual clock: a hang fails run_until) with both ends down, every error
// documented in our category and never internal_error; under --config=asan, LeakSanitizer
// checks that nothing leaked and AddressSanitizer that nothing was used after release.
// A fourth loop fails every allocation of a full session in turn (see below).
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "smbdirect/stream.hpp"
#include "support/allocation_hook.hpp"
#include "support/harness.hpp"

using namespace smbdirect;
using namespace smbdirect::test;
using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

namespace {

/// Two connections on one virtual-clock driver; a scenario may move them into streams.
struct session {
  driver d;
  std::optional<loopback_connection> client_conn, server_conn;
  std::optional<stream<loopback::endpoint>> client_stream, server_stream;

  session(parameters cp, parameters sp, loopback::options o) {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor(), std::move(o));
    client_conn.emplace(std::move(a), cp, &d.clock);
    server_conn.emplace(std::move(b), sp, &d.clock);
  }
  loopback_connection& client() { return client_stream ? client_stream->next_layer() : *client_conn; }
  loopback_connection& server() { return server_stream ? server_stream->next_layer() : *server_conn; }
};

/// The first error a scenario saw; a scenario returns it as soon as a step fails.
struct first_error {
  std::error_code ec;
  bool operator()(std::error_code e) {
    if (e && !ec) ec = e;
    return static_cast<bool>(e);
  }
};

std::error_code mismatch() { return errc::internal_error; }  // a byte differed: never acceptable

asio::awaitable<std::error_code> connect(loopback_connection& c) {
  auto [ec] = co_await c.async_connect(use_tuple);
  co_return ec;
}

asio::awaitable<std::error_code> accept(loopback_connection& c) {
  auto [ec] = co_await c.async_accept(use_tuple);
  co_return ec;
}

asio::awaitable<std::error_code> negotiate(session& s) {
  auto [c, a] = co_await (connect(s.client()) && accept(s.server()));
  co_return c ? c : a;
}

asio::awaitable<std::error_code> send_one(loopback_connection& c, const bytes& m) {
  auto [ec, n] = co_await c.async_send(asio::buffer(m), use_tuple);
  co_return ec;
}

asio::awaitable<std::error_code> receive_expect(loopback_connection& c, const bytes& expected) {
  bytes got;
  auto [ec, n] = co_await c.async_receive(got, use_tuple);
  co_return ec ? ec : got == expected ? std::error_code{} : mismatch();
}

/// Sends `m` from `a` to `b` and checks what arrives.
asio::awaitable<std::error_code> transfer(loopback_connection& a, loopback_connection& b, const bytes& m) {
  auto [sent, received] = co_await (send_one(a, m) && receive_expect(b, m));
  co_return sent ? sent : received;
}

/// The client closes; the server must then see peer_disconnected.
asio::awaitable<std::error_code> client_closes(session& s, first_error& e) {
  auto [closed] = co_await s.client().async_close(use_tuple);
  if (e(closed)) co_return e.ec;
  bytes got;
  auto [ec, n] = co_await s.server().async_receive(got, use_tuple);
  if (ec != errc::peer_disconnected) e(ec ? ec : mismatch());
  co_return e.ec;
}

// 1. Negotiate, fragmented messages both ways, RDMA write and read, an idle period with
//    keepalives, close.
asio::awaitable<std::error_code> full_session(session& s) {
  first_error e;
  if (e(co_await negotiate(s))) co_return e.ec;
  if (e(co_await transfer(s.client(), s.server(), pattern(5000, 3)))) co_return e.ec;
  if (e(co_await transfer(s.server(), s.client(), pattern(3000, 4)))) co_return e.ec;
  bytes region(8000), data = pattern(8000, 5), back(8000);
  auto [re, reg] = s.server().register_buffer(asio::buffer(region), access::remote_read_write);
  if (e(re)) co_return e.ec;
  auto [we, wn] = co_await s.client().async_rdma_write(asio::buffer(data), std::span(&reg.descriptor, 1), use_tuple);
  if (e(we)) co_return e.ec;
  auto [rde, rn] = co_await s.client().async_rdma_read(asio::buffer(back), std::span(&reg.descriptor, 1), use_tuple);
  if (e(rde) || e(back == data && region == data ? std::error_code{} : mismatch())) co_return e.ec;
  if (e(s.server().deregister_buffer(reg))) co_return e.ec;
  s.d.clock.advance(121s);  // idle: keepalives flow
  if (e(co_await transfer(s.client(), s.server(), pattern(100, 6)))) co_return e.ec;
  co_return co_await client_closes(s, e);
}

// 2. Fragmented messages in both directions at once with 2-3 credits: sends wait for grants.
asio::awaitable<std::error_code> fragments_both_ways(session& s) {
  first_error e;
  if (e(co_await negotiate(s))) co_return e.ec;
  for (unsigned round = 0; round < 2; ++round) {
    const bytes up = pattern(20000 + round, 10 + round), down = pattern(15000 + round, 20 + round);
    auto [a, b] = co_await (transfer(s.client(), s.server(), up) && transfer(s.server(), s.client(), down));
    if (e(a) || e(b)) co_return e.ec;
  }
  co_return co_await client_closes(s, e);
}

// 3. The server hands out two registrations as Buffer Descriptor V1 entries in a message; the
//    client RDMA-writes across both from an offset and reads back from the readable one.
asio::awaitable<std::error_code> rdma_descriptors(session& s) {
  first_error e;
  if (e(co_await negotiate(s))) co_return e.ec;
  bytes first(6000), second(10000);
  auto [e1, r1] = s.server().register_buffer(asio::buffer(first), access::remote_write);
  if (e(e1)) co_return e.ec;
  auto [e2, r2] = s.server().register_buffer(asio::buffer(second), access::remote_read_write);
  if (e(e2)) co_return e.ec;
  bytes descriptors(2 * wire::buffer_descriptor_v1::size);
  (void)wire::encode(r1.descriptor, descriptors);
  (void)wire::encode(r2.descriptor, std::span(descriptors).subspan(wire::buffer_descriptor_v1::size));
  if (e(co_await transfer(s.server(), s.client(), descriptors))) co_return e.ec;
  std::array<wire::buffer_descriptor_v1, 2> remote;
  (void)wire::decode(descriptors, remote[0]);
  (void)wire::decode(std::span(descriptors).subspan(wire::buffer_descriptor_v1::size), remote[1]);
  const bytes data = pattern(12000, 30);
  auto [we, wn] = co_await s.client().async_rdma_write(asio::buffer(data), remote, use_tuple, 1000);
  if (e(we)) co_return e.ec;
  bytes back(7000);
  auto [rde, rn] = co_await s.client().async_rdma_read(asio::buffer(back), std::span(&remote[1], 1), use_tuple);
  if (e(rde)) co_return e.ec;
  const bool placed = std::equal(data.begin(), data.begin() + 5000, first.begin() + 1000) &&
                      std::equal(data.begin() + 5000, data.end(), second.begin()) &&
                      std::equal(back.begin(), back.end(), second.begin());
  if (e(placed ? std::error_code{} : mismatch())) co_return e.ec;
  if (e(co_await transfer(s.client(), s.server(), pattern(10, 31)))) co_return e.ec;  // "done"
  if (e(s.server().deregister_buffer(r1)) || e(s.server().deregister_buffer(r2))) co_return e.ec;
  co_return co_await client_closes(s, e);
}

// 4. Three idle periods longer than KeepaliveInterval, each followed by a ping-pong: keepalives
//    with SMB_DIRECT_RESPONSE_REQUESTED and their replies flow both ways.
asio::awaitable<std::error_code> keepalive_idle(session& s) {
  first_error e;
  if (e(co_await negotiate(s))) co_return e.ec;
  for (unsigned i = 0; i < 3; ++i) {
    s.d.clock.advance(121s);
    if (e(co_await transfer(s.server(), s.client(), pattern(64, 40 + i)))) co_return e.ec;
    if (e(co_await transfer(s.client(), s.server(), pattern(64, 50 + i)))) co_return e.ec;
  }
  co_return co_await client_closes(s, e);
}

// 5. Direct TCP framed messages through smbdirect::stream: three in one write (one of them
//    fragmented), a reply, then close and eof.
asio::awaitable<std::error_code> stream_session(session& s) {
  first_error e;
  if (e(co_await negotiate(s))) co_return e.ec;
  s.client_stream.emplace(std::move(*s.client_conn));
  s.server_stream.emplace(std::move(*s.server_conn));
  auto framed = [](std::size_t n, unsigned seed) {
    bytes m = pattern(n + 4, seed);
    m[0] = std::byte{0}, m[1] = std::byte(n >> 16), m[2] = std::byte(n >> 8), m[3] = std::byte(n);
    return m;
  };
  const bytes a = framed(100, 60), b = framed(70000, 61), c = framed(3, 62), reply = framed(500, 63);
  bytes all(a);
  all.insert(all.end(), b.begin(), b.end());
  all.insert(all.end(), c.begin(), c.end());
  auto [we, wn] = co_await asio::async_write(*s.client_stream, asio::buffer(all), use_tuple);
  if (e(we)) co_return e.ec;
  bytes got(all.size());
  auto [re, rn] = co_await asio::async_read(*s.server_stream, asio::buffer(got), use_tuple);
  if (e(re) || e(got == all ? std::error_code{} : mismatch())) co_return e.ec;
  auto [we2, wn2] = co_await asio::async_write(*s.server_stream, asio::buffer(reply), use_tuple);
  if (e(we2)) co_return e.ec;
  got.resize(reply.size());
  auto [re2, rn2] = co_await asio::async_read(*s.client_stream, asio::buffer(got), use_tuple);
  if (e(re2) || e(got == reply ? std::error_code{} : mismatch())) co_return e.ec;
  auto [ce] = co_await s.client_stream->async_close(use_tuple);
  if (e(ce)) co_return e.ec;
  std::array<std::byte, 1> one;
  auto [eof, n] = co_await s.server_stream->async_read_some(asio::buffer(one), use_tuple);
  if (eof != asio::error::eof) e(eof ? eof : mismatch());
  co_return e.ec;
}

// 6. Thirty small messages toward a client that posts a single receive (ReceiveCreditMax 1):
//    every one waits for the credit the previous one's receive grants back.
asio::awaitable<std::error_code> one_credit(session& s) {
  first_error e;
  if (e(co_await negotiate(s))) co_return e.ec;
  for (unsigned i = 0; i < 30; ++i)
    if (e(co_await transfer(s.server(), s.client(), pattern(1 + i * 37, 70 + i)))) co_return e.ec;
  co_return co_await client_closes(s, e);
}

struct scenario {
  const char* name;
  asio::awaitable<std::error_code> (*run)(session&);
  parameters client, server;
};

parameters credits(std::uint16_t send_target, std::uint16_t receive_max) {
  parameters p;
  p.send_credit_target = send_target;
  p.receive_credit_max = receive_max;
  return p;
}

const scenario scenarios[] = {
    {"full session", full_session, {}, {}},
    {"fragments both ways with few credits", fragments_both_ways, credits(3, 3), credits(2, 2)},
    {"RDMA through Buffer Descriptor V1 lists", rdma_descriptors, {}, {}},
    {"keepalive across idle periods", keepalive_idle, {}, {}},
    {"stream: framed messages", stream_session, {}, {}},
    {"one receive credit", one_credit, credits(8, 1), credits(8, 8)},
};

enum class fault { none, refused, completion, timer };
const char* name_of(fault f) {
  switch (f) {
    case fault::none: return "none";
    case fault::refused: return "refused operation";
    case fault::completion: return "failed completion";
    case fault::timer: return "failed timer wait";
  }
  return "?";
}

bool documented(std::error_code ec) {
  return ec.category() == error_category() && ec.value() >= 1 && ec.value() <= static_cast<int>(last_errc) &&
         ec != errc::internal_error;
}

struct outcome {
  std::error_code result;          // the scenario's first error
  std::error_code client, server;  // how each end came down
  bool fault_hit_live_pair = false;
  std::uint64_t operations = 0, waits = 0;
};

/// Runs `sc` with `f` at `index`, then brings both ends down and checks the invariants.
outcome run(const scenario& sc, fault f, std::uint64_t index) {
  loopback::options o;
  if (f == fault::refused) o.faults.fail_operation = index;
  if (f == fault::completion) o.faults.fail_completion = index;
  session s(sc.client, sc.server, std::move(o));
  if (f == fault::timer) s.d.clock.fail_wait = index;
  outcome out;
  bool done = false, threw = false;
  asio::co_spawn(s.d.io, sc.run(s), [&](std::exception_ptr thrown, std::error_code ec) {
    done = true;
    threw = thrown != nullptr;
    out.result = ec;
  });
  REQUIRE_MESSAGE(s.d.run_until([&] { return done; }), "the scenario hung");
  REQUIRE_FALSE(threw);
  if (out.result) CHECK(documented(out.result));
  out.operations = s.client().next_layer().operations();
  out.fault_hit_live_pair = s.client().next_layer().fault_hit_live_pair();
  out.waits = s.d.clock.waits();
  // Whatever happened, both ends must come down with documented errors, without a hang.
  if (!s.client().error()) s.client().async_close([](std::error_code) {});
  if (!s.server().is_connected() && !s.server().error()) s.server().async_close([](std::error_code) {});
  REQUIRE_MESSAGE(s.d.run_until([&] { return s.client().error() && s.server().error(); }), "an end never came down");
  out.client = s.client().error();
  out.server = s.server().error();
  CHECK(documented(out.client));
  CHECK(documented(out.server));
  return out;
}

}  // namespace

TEST_CASE("fault loops: every transport operation and timer wait of six sessions, failed in turn") {
  for (const scenario& sc : scenarios) {
    const std::string scenario_name = sc.name;
    CAPTURE(scenario_name);
    const outcome clean = run(sc, fault::none, 0);
    REQUIRE(clean.result == std::error_code{});
    CHECK(clean.operations > 10);
    CHECK(clean.waits > 2);
    const std::pair<fault, std::uint64_t> loops[] = {{fault::refused, clean.operations},
                                                     {fault::completion, clean.operations},
                                                     {fault::timer, clean.waits}};
    for (const auto& [f, total] : loops) {
      const std::string fault_name = name_of(f);
      CAPTURE(fault_name);
      int failed = 0, survived = 0;
      for (std::uint64_t i = 0; i < total; ++i) {
        CAPTURE(i);
        const outcome o = run(sc, f, i);
        o.result ? ++failed : ++survived;
        // A fault is never lost: the session fails, or (a fault after its last step) an end
        // reports it. Only a fault on a queue pair already in the error state changes nothing.
        if (!o.result && (f == fault::timer || o.fault_hit_live_pair))
          CHECK((o.client == errc::injected_fault || o.server == errc::injected_fault));
      }
      std::printf("%-40s %-18s %4llu runs: %4d failed the session, %3d after its last step\n", sc.name,
                  name_of(f), static_cast<unsigned long long>(total), failed, survived);
    }
  }
}

// ------------------------------------------------------------------ allocation failures

namespace {

// The full session (negotiate, fragmented messages both ways, RDMA write and read, an idle
// period with keepalives, close) driven by completion callbacks on buffers made beforehand,
// so that every allocation while it runs is the library's, or Asio's on its behalf.
struct callback_session {
  driver d;
  std::optional<loopback_connection> client, server;
  const bytes up = pattern(5000, 3), down = pattern(3000, 4), data = pattern(8000, 5), ping = pattern(100, 6);
  bytes region = bytes(8000), back = bytes(8000), at_server, at_client;
  registration reg;
  std::error_code first;     // first error a step saw
  bool threw = false;        // an initiating call threw std::bad_alloc to us
  bool finished = false;     // every step done, or stopped at the first error
  int waiting = 0;           // completions the current step still needs

  callback_session() {
    auto [a, b] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
    client.emplace(std::move(a), parameters{}, &d.clock);
    server.emplace(std::move(b), parameters{}, &d.clock);
    at_server.reserve(up.size() + ping.size());
    at_client.reserve(down.size());
  }

  /// A completion of the current step: records an error, starts the next step after the last.
  void done(std::error_code ec, int next) {
    if (ec && !first) first = ec;
    if (--waiting == 0) step(next);
  }
  auto then(int next) {
    return [this, next](std::error_code ec, std::size_t = 0) { done(ec, next); };
  }
  /// `from` sends `message` and `to` receives it into `into`; then step `next`.
  void transfer(loopback_connection& from, loopback_connection& to, const bytes& message, bytes& into, int next) {
    waiting = 2;
    from.async_send(asio::buffer(message), then(next));
    to.async_receive(into, then(next));
  }
  bool check(bool ok) {
    if (!ok && !first) first = errc::internal_error;  // a byte differed: never acceptable
    return ok;
  }

  void step(int n) {
    if (first) return void(finished = true);
    try {
      switch (n) {
        case 0:
          waiting = 2;
          client->async_connect(then(1));
          server->async_accept(then(1));
          return;
        case 1:  // fragmented (MaxSendSize 1364) both ways, one after the other
          return transfer(*client, *server, up, at_server, 2);
        case 2:
          if (!check(at_server == up)) return step(n);
          return transfer(*server, *client, down, at_client, 3);
        case 3: {
          if (!check(at_client == down)) return step(n);
          auto [ec, r] = server->register_buffer(asio::buffer(region), access::remote_read_write);
          if (ec) return done_now(ec);
          reg = r;
          waiting = 1;
          client->async_rdma_write(asio::buffer(data), std::span(&reg.descriptor, 1), then(4));
          return;
        }
        case 4:
          waiting = 1;
          client->async_rdma_read(asio::buffer(back), std::span(&reg.descriptor, 1), then(5));
          return;
        case 5:
          if (!check(back == data && region == data)) return step(n);
          if (auto ec = server->deregister_buffer(reg)) return done_now(ec);
          d.clock.advance(std::chrono::seconds(121));  // idle: keepalives flow
          return transfer(*client, *server, ping, at_server, 6);
        case 6:
          if (!check(at_server == ping)) return step(n);
          waiting = 2;
          client->async_close(then(7));
          server->async_receive(at_server, [this](std::error_code ec, std::size_t) {
            done(ec == errc::peer_disconnected ? std::error_code{} : ec ? ec : make_error_code(errc::internal_error), 7);
          });
          return;
        default:
          finished = true;
      }
    } catch (const std::bad_alloc&) {
      threw = true;
      finished = true;
    }
  }
  void done_now(std::error_code ec) {
    first = ec;
    finished = true;
  }
};

struct allocation_outcome {
  std::error_code result;
  bool threw = false;
  std::uint64_t allocations = 0;  // while the session ran
};

/// Runs the callback session with allocation `index` (counted from its start) failing, or
/// none; then brings both ends down and checks the invariants.
allocation_outcome run_with_allocation_failure(std::optional<std::uint64_t> index) {
  callback_session s;
  const std::uint64_t start = allocations::count();
  if (index) allocations::fail_nth(*index);
  s.step(0);
  const bool ended = s.d.run_until([&] { return s.finished; });
  const bool fired = allocations::failed();
  const std::uint64_t used = allocations::count() - start;
  allocations::disarm();  // the checks below allocate
  REQUIRE_MESSAGE(ended, "the session hung");
  if (index) CHECK(fired);
  allocation_outcome out{s.first, s.threw, used};
  if (out.result) CHECK(documented(out.result));
  // Whatever happened, both ends come down with documented errors, without a hang.
  if (!s.client->error()) s.client->async_close([](std::error_code) {});
  if (!s.server->is_connected() && !s.server->error()) s.server->async_close([](std::error_code) {});
  REQUIRE_MESSAGE(s.d.run_until([&] { return s.client->error() && s.server->error(); }), "an end never came down");
  CHECK(documented(s.client->error()));
  CHECK(documented(s.server->error()));
  return out;
}

}  // namespace

// Every operator new call the library makes during a full session, failed in turn. Asio
// allocates inside noexcept initiations when it runs our operations under use_awaitable; the
// library keeps its own allocations out of those (docs/design.md), so each failure must end in
// std::bad_alloc thrown by the initiating call, out_of_memory on a connection, or a session
// that completed with every byte checked. Under --config=asan, LeakSanitizer checks each run.
TEST_CASE("fault loop: every allocation of a full session, failed in turn") {
  const allocation_outcome clean = run_with_allocation_failure(std::nullopt);
  REQUIRE(clean.result == std::error_code{});
  REQUIRE_FALSE(clean.threw);
  CHECK(clean.allocations > 50);
  int threw = 0, out_of_memory = 0, other_error = 0, completed = 0;
  for (std::uint64_t i = 0; i < clean.allocations; ++i) {
    CAPTURE(i);
    const allocation_outcome o = run_with_allocation_failure(i);
    if (o.threw) ++threw;
    else if (o.result == errc::out_of_memory) ++out_of_memory;
    else if (o.result) ++other_error;
    else ++completed;
  }
  std::printf("full session: %llu allocations failed in turn: %d thrown to the caller, %d out_of_memory, "
              "%d other documented errors, %d completed\n",
              static_cast<unsigned long long>(clean.allocations), threw, out_of_memory, other_error, completed);
  CHECK(out_of_memory > 0);
}

// The one allocation a peer can make large: the reassembly buffer of a fragmented message.
TEST_CASE("allocation failure while reassembling ends that connection with out_of_memory; another keeps working") {
  driver d;
  auto [a1, b1] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
  auto [a2, b2] = loopback::make_pair(d.io.get_executor(), d.io.get_executor());
  loopback_connection client1(std::move(a1), {}, &d.clock), server1(std::move(b1), {}, &d.clock);
  loopback_connection client2(std::move(a2), {}, &d.clock), server2(std::move(b2), {}, &d.clock);
  int negotiated = 0;
  for (auto* c : {&client1, &client2}) c->async_connect([&](std::error_code ec) { negotiated += !ec; });
  for (auto* c : {&server1, &server2}) c->async_accept([&](std::error_code ec) { negotiated += !ec; });
  REQUIRE(d.run_until([&] { return negotiated == 4; }));

  const bytes big = pattern(300000, 1), small = pattern(1000, 2);
  bytes got;
  std::optional<std::error_code> sent, received;
  allocations::fail_next_at_least(big.size());
  client1.async_send(asio::buffer(big), [&](std::error_code ec, std::size_t) { sent = ec; });
  server1.async_receive(got, [&](std::error_code ec, std::size_t) { received = ec; });
  REQUIRE(d.run_until([&] { return sent && received && client1.error(); }));
  CHECK(allocations::failed());
  allocations::fail_next_at_least(0);
  CHECK(*received == errc::out_of_memory);
  CHECK(server1.error() == errc::out_of_memory);
  CHECK(std::error_code(errc::out_of_memory) == condition::local_failure);
  CHECK(client1.error() == errc::peer_disconnected);

  std::optional<std::error_code> sent2, received2;
  client2.async_send(asio::buffer(small), [&](std::error_code ec, std::size_t) { sent2 = ec; });
  server2.async_receive(got, [&](std::error_code ec, std::size_t) { received2 = ec; });
  REQUIRE(d.run_until([&] { return sent2 && received2; }));
  CHECK(*sent2 == std::error_code{});
  CHECK(*received2 == std::error_code{});
  CHECK(got == small);
}
