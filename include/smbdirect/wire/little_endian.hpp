// Little-endian load/store on byte spans: every [MS-SMBD] integer is little-endian (2.2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace smbdirect::wire::detail {

template <class T>
constexpr T load_le(std::span<const std::byte> in, std::size_t offset) noexcept {
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(in[offset + i]) << (8 * i));
  return v;
}

template <class T>
constexpr void store_le(std::span<std::byte> out, std::size_t offset, T v) noexcept {
  for (std::size_t i = 0; i < sizeof(T); ++i) out[offset + i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

}  // namespace smbdirect::wire::detail
