// verbs::connect, listener::open and connect_to_self called without options, awaited inside a
// coroutine, as the examples do. With a defaulted `options o = {}` GCC 12 freed a stack address
// when the caller's statement ended ("free(): invalid pointer", abort), so these take overloads
// instead. No RDMA device is needed: every call fails, and the test checks that it fails with
// an error and nothing else. 192.0.2.1 (TEST-NET-1) belongs to no device, here or in the VM.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <system_error>

#include <asio.hpp>

#include <smbdirect/verbs.hpp>

namespace {

struct outcome {
  std::error_code connect, listen, self;
};

asio::awaitable<outcome> call_without_options() {
  auto ex = co_await asio::this_coro::executor;
  const std::string address = "192.0.2.1";  // an lvalue, copied into each call, as in the examples
  outcome o;
  auto [cec, qp] = co_await smbdirect::verbs::connect(ex, address, 9);
  o.connect = cec;
  auto [lec, listener] = co_await smbdirect::verbs::listener::open(ex, address, 9);
  o.listen = lec;
  auto self = co_await smbdirect::verbs::connect_to_self(ex, address, 9);
  o.self = self.error;
  co_return o;
}

}  // namespace

TEST_CASE("verbs: connect, listener::open and connect_to_self without options fail cleanly in a coroutine") {
  asio::io_context io;
  std::optional<outcome> result;
  asio::co_spawn(io, call_without_options(), [&](std::exception_ptr e, outcome o) {
    REQUIRE_FALSE(e);
    result = o;
  });
  io.run();
  REQUIRE(result.has_value());
  CHECK(result->connect);
  CHECK(result->listen);
  CHECK(result->self);
}
