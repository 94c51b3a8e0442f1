// file_transfer_server: receives one file from file_transfer_client over SMB Direct and hands it
// back. The client moves the bytes both ways with RDMA: it RDMA-writes the file into a buffer the
// server registered and advertised, and, once the server has checked it, RDMA-reads it back from
// that buffer, which the server registered again for reading only. The messages are in
// file_transfer_protocol.hpp.
//
//   file_transfer_server [--transport tcp|verbs] [--address IP] [--port N] [--output FILE]
//
// Exit status 0 when the file's CRC-64 matched at every step, 1 otherwise, 2 for bad usage.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <utility>
#include <vector>

#include <asio.hpp>

#include <smbdirect/smbdirect.hpp>
#include <smbdirect/tcp.hpp>
#include <smbdirect/verbs.hpp>

#include "file_transfer_protocol.hpp"

namespace ft = file_transfer;
using smbdirect::access;

namespace {

using ull = unsigned long long;  // for printf's %llu

constexpr ft::usage usage{"file_transfer_server", "[options]",
                          "Receives one file from file_transfer_client by RDMA write and returns it by RDMA read.",
                          "the file received", false};

template <class Connection>
asio::awaitable<int> receive_file(Connection& c, const ft::options& o) {
  if (auto [ec] = co_await c.async_accept(ft::use_tuple); ec) co_return ft::fail("server", "SMB Direct negotiation", ec);
  auto [oec, offer] = co_await ft::receive(c, ft::step::offer);
  if (oec) co_return ft::fail("server", "receive offer", oec);
  // A Buffer Descriptor V1 describes at most 4 GiB - 1 bytes.
  if (offer.size == 0 || offer.size > 0xffffffff) co_return ft::fail("server", "the file must be 1 byte to 4 GiB - 1");
  std::vector<std::byte> file(offer.size);

  // Step 1: the client may write into `file`, and do nothing else with it.
  auto [wec, upload] = c.register_buffer(asio::buffer(file), access::remote_write);
  if (wec) co_return ft::fail("server", "register the upload buffer", wec);
  if (auto ec = co_await ft::send(c, {.kind = ft::step::upload, .region = upload.descriptor}))
    co_return ft::fail("server", "send upload", ec);
  auto [xec, written] = co_await ft::receive(c, ft::step::written);
  if (xec) co_return ft::fail("server", "receive written", xec);
  // Revoke the write right first: from here on the client cannot change what we check.
  if (auto ec = c.deregister_buffer(upload)) co_return ft::fail("server", "deregister the upload buffer", ec);
  const std::uint64_t crc = ft::crc64(file);
  std::printf("server: received %zu bytes, crc64 %016llx (client's: %016llx)\n", file.size(), ull(crc), ull(written.crc));
  if (crc != written.crc) co_return ft::fail("server", "the file arrived damaged");

  // Step 2: a new registration, with a new token, that only lets the client read the file back.
  auto [rec, download] = c.register_buffer(asio::buffer(file), access::remote_read);
  if (rec) co_return ft::fail("server", "register the download buffer", rec);
  if (auto ec = co_await ft::send(c, {.kind = ft::step::download, .crc = crc, .region = download.descriptor}))
    co_return ft::fail("server", "send download", ec);
  auto [dec, done] = co_await ft::receive(c, ft::step::done);
  if (dec) co_return ft::fail("server", "receive done", dec);
  if (auto ec = c.deregister_buffer(download)) co_return ft::fail("server", "deregister the download buffer", ec);
  std::printf("server: the client read back crc64 %016llx\n", ull(done.crc));
  if (done.crc != crc) co_return ft::fail("server", "the client read back different bytes");

  if (!ft::save(o.output, file)) co_return ft::fail("server", "cannot write " + o.output);
  // SMB Direct has no close message; the client may have disconnected already.
  auto [cec] = co_await c.async_close(ft::use_tuple);
  if (cec && cec != smbdirect::errc::peer_disconnected) co_return ft::fail("server", "close", cec);
  std::printf("server: verified\n");
  co_return 0;
}

// tcp::listener and verbs::listener have the same shape: open, then accept a queue pair.
template <class Listener>
asio::awaitable<int> serve(ft::options o) {
  auto [lec, listener] = co_await Listener::open(co_await asio::this_coro::executor, o.address, o.port);
  if (lec) co_return ft::fail("server", "listen on " + o.address, lec);
  std::printf("server: listening on %s port %u (%s)\n", o.address.c_str(), unsigned(listener->port()), o.transport.c_str());
  std::fflush(stdout);  // a script may wait for this line
  auto [aec, qp] = co_await listener->accept();
  if (aec) co_return ft::fail("server", "accept", aec);
  smbdirect::connection<decltype(qp)> c(std::move(qp));
  co_return co_await receive_file(c, o);
}

}  // namespace

int main(int argc, char** argv) {
  ft::options o;
  if (auto status = ft::parse(argc, argv, usage, o)) return *status;
  asio::io_context io;
  int status = 1;
  auto finish = [&](std::exception_ptr thrown, int result) { status = thrown ? 1 : result; };
  if (o.transport == "verbs")
    asio::co_spawn(io, serve<smbdirect::verbs::listener>(o), finish);
  else
    asio::co_spawn(io, serve<smbdirect::tcp::listener>(o), finish);
  io.run();
  return status;
}
