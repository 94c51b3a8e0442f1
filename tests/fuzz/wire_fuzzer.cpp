// libFuzzer target: the four [MS-SMBD] 2.2 decoders. Whatever decodes must encode back to the
// same bytes (the fields it read), and a decoded Data Transfer payload must lie inside the input.
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <smbdirect/smbdirect.hpp>

using namespace smbdirect;

namespace {
void require(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  std::vector<std::byte> out(64);
  if (wire::negotiate_request m; !wire::decode(in, m)) {
    require(!wire::encode(m, out));
    require(std::memcmp(out.data(), data, wire::negotiate_request::size) == 0);
  }
  if (wire::negotiate_response m; !wire::decode(in, m)) {
    require(!wire::encode(m, out));
    require(std::memcmp(out.data(), data, wire::negotiate_response::size) == 0);
  }
  if (wire::buffer_descriptor_v1 d; !wire::decode(in, d)) {
    require(!wire::encode(d, out));
    require(std::memcmp(out.data(), data, 16) == 0);
  }
  if (wire::data_transfer_message m; !wire::decode(in, m)) {
    const auto* begin = reinterpret_cast<const std::byte*>(data);
    require(m.payload.size() == m.header.data_length);
    require(m.payload.empty() || (m.payload.data() >= begin && m.payload.data() + m.payload.size() <= begin + size));
    require(m.payload.empty() || m.header.data_offset % 8 == 0);
    require(!wire::encode(m.header, out));
  }
  return 0;
}
