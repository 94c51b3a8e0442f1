// A vector of trivially copyable items (buffers, buffer descriptors) that keeps up to N of them
// inline. An operation copies the caller's buffer sequence into one of these, so the common
// case, a few buffers, allocates nothing per operation.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

namespace smbdirect::detail {

template <class T, std::size_t N>
class small_vector {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  small_vector() = default;
  /// Copies [first, last). May throw std::bad_alloc past N items.
  template <class It>
  small_vector(It first, It last) {
    for (; first != last; ++first) push_back(*first);
  }

  void push_back(const T& v) {
    if (size_ < N) {
      inline_[size_++] = v;
      return;
    }
    if (size_ == N) heap_.assign(inline_.begin(), inline_.end());
    heap_.push_back(v);
    ++size_;
  }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  T* data() noexcept { return size_ <= N ? inline_.data() : heap_.data(); }
  const T* data() const noexcept { return size_ <= N ? inline_.data() : heap_.data(); }
  T& operator[](std::size_t i) noexcept { return data()[i]; }
  const T& operator[](std::size_t i) const noexcept { return data()[i]; }
  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size_; }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size_; }
  operator std::span<const T>() const noexcept { return {data(), size_}; }

 private:
  std::array<T, N> inline_{};
  std::vector<T> heap_;  // all items once there are more than N
  std::size_t size_ = 0;
};

}  // namespace smbdirect::detail
