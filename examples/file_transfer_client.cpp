// file_transfer_client: sends a file to file_transfer_server over SMB Direct by RDMA write, then
// reads it back by RDMA read, and checks every copy by CRC-64. The client registers no memory:
// both RDMA operations use the buffer the server registered and advertised (first for writing
// only, then for reading only). The messages are in file_transfer_protocol.hpp.
//
//   file_transfer_server --port 5445 &             # start the server first
//   file_transfer_client --port 5445 FILE [--output COPY]
//
// Exit status 0 when the file's CRC-64 matched at every step, 1 otherwise, 2 for bad usage.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <span>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <asio.hpp>

#include <smbdirect/smbdirect.hpp>
#include <smbdirect/tcp.hpp>
#include <smbdirect/verbs.hpp>

#include "file_transfer_protocol.hpp"

namespace ft = file_transfer;

namespace {

using ull = unsigned long long;  // for printf's %llu

constexpr ft::usage usage{"file_transfer_client", "[options] FILE",
                          "Sends FILE to file_transfer_server by RDMA write, then reads it back by RDMA read.",
                          "the copy read back", true};

enum class rdma { write, read };

// One RDMA operation moves at most the negotiated MaxReadWriteSize bytes, so a large file goes
// in pieces, each at its own offset into the server's region.
template <class Connection>
asio::awaitable<std::error_code> rdma_in_pieces(Connection& c, rdma op, std::span<std::byte> local,
                                                smbdirect::wire::buffer_descriptor_v1 region) {
  const std::size_t piece = c.negotiated().max_read_write_size;
  for (std::size_t at = 0; at < local.size(); at += piece) {
    const auto part = asio::buffer(local.data() + at, std::min(piece, local.size() - at));
    std::error_code ec;
    if (op == rdma::write)
      std::tie(ec, std::ignore) = co_await c.async_rdma_write(part, std::span(&region, 1), ft::use_tuple, at);
    else
      std::tie(ec, std::ignore) = co_await c.async_rdma_read(part, std::span(&region, 1), ft::use_tuple, at);
    if (ec) co_return ec;
  }
  co_return std::error_code{};
}

template <class Connection>
asio::awaitable<int> send_file(Connection& c, const ft::options& o, std::vector<std::byte> file) {
  if (auto [ec] = co_await c.async_connect(ft::use_tuple); ec) co_return ft::fail("client", "SMB Direct negotiation", ec);
  const std::uint64_t crc = ft::crc64(file);
  std::printf("client: sending %s, %zu bytes, crc64 %016llx\n", o.file.c_str(), file.size(), ull(crc));

  // Step 1: offer the file; the server answers with a buffer we may write into.
  if (auto ec = co_await ft::send(c, {.kind = ft::step::offer, .size = file.size()}))
    co_return ft::fail("client", "send offer", ec);
  auto [uec, upload] = co_await ft::receive(c, ft::step::upload);
  if (uec) co_return ft::fail("client", "receive upload", uec);
  if (auto ec = co_await rdma_in_pieces(c, rdma::write, file, upload.region)) co_return ft::fail("client", "RDMA write", ec);
  if (auto ec = co_await ft::send(c, {.kind = ft::step::written, .crc = crc}))
    co_return ft::fail("client", "send written", ec);

  // Step 2: the server checked the file and lets us read it back.
  auto [dec, download] = co_await ft::receive(c, ft::step::download);
  if (dec) co_return ft::fail("client", "receive download", dec);
  std::vector<std::byte> copy(file.size());
  if (auto ec = co_await rdma_in_pieces(c, rdma::read, copy, download.region)) co_return ft::fail("client", "RDMA read", ec);
  const std::uint64_t copy_crc = ft::crc64(copy);
  if (auto ec = co_await ft::send(c, {.kind = ft::step::done, .crc = copy_crc}))
    co_return ft::fail("client", "send done", ec);
  std::printf("client: the server received crc64 %016llx; read back %zu bytes, crc64 %016llx\n", ull(download.crc),
              copy.size(), ull(copy_crc));

  if (!ft::save(o.output, copy)) co_return ft::fail("client", "cannot write " + o.output);
  // SMB Direct has no close message; the server may have disconnected already.
  auto [cec] = co_await c.async_close(ft::use_tuple);
  if (cec && cec != smbdirect::errc::peer_disconnected) co_return ft::fail("client", "close", cec);
  if (download.crc != crc || copy_crc != crc) co_return ft::fail("client", "checksum mismatch");
  std::printf("client: verified\n");
  co_return 0;
}

// tcp::connect and verbs::connect have the same shape: they return a connected queue pair.
template <class QueuePair>
asio::awaitable<int> run(std::pair<std::error_code, QueuePair> connected, ft::options o, std::vector<std::byte> file) {
  auto& [ec, qp] = connected;
  if (ec) co_return ft::fail("client", "connect to " + o.address + " (" + o.transport + ")", ec);
  smbdirect::connection<QueuePair> c(std::move(qp));
  co_return co_await send_file(c, o, std::move(file));
}

asio::awaitable<int> connect_and_send(ft::options o, std::vector<std::byte> file) {
  auto ex = co_await asio::this_coro::executor;
  if (o.transport == "verbs") {
    auto connected = co_await smbdirect::verbs::connect(ex, o.address, o.port);
    co_return co_await run(std::move(connected), o, std::move(file));
  }
  auto connected = co_await smbdirect::tcp::connect(ex, o.address, o.port);
  co_return co_await run(std::move(connected), o, std::move(file));
}

}  // namespace

int main(int argc, char** argv) {
  ft::options o;
  if (auto status = ft::parse(argc, argv, usage, o)) return *status;
  // The whole file becomes one RDMA region on the server: 1 byte to 4 GiB - 1.
  std::error_code ec;
  const auto size = std::filesystem::file_size(o.file, ec);
  if (ec || size == 0 || size > 0xffffffff) {
    std::fprintf(stderr, "file_transfer_client: %s: %s\n", o.file.c_str(),
                 ec ? ec.message().c_str() : "must hold 1 byte to 4 GiB - 1");
    return 2;
  }
  std::vector<std::byte> file(size);
  std::ifstream in(o.file, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(file.data()), static_cast<std::streamsize>(size))) {
    std::fprintf(stderr, "file_transfer_client: cannot read %s\n", o.file.c_str());
    return 1;
  }
  asio::io_context io;
  int status = 1;
  asio::co_spawn(io, connect_and_send(o, std::move(file)), [&](std::exception_ptr thrown, int result) {
    status = thrown ? 1 : result;
  });
  io.run();
  return status;
}
