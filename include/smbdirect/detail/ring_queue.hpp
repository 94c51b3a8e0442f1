// A FIFO queue on a circular buffer. Unlike std::deque, which allocates and frees a block
// every few hundred bytes as items pass through, it allocates only when it grows past its
// largest size so far (doubling), so a queue in steady state never allocates.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace smbdirect::detail {

template <class T>
class ring_queue {
 public:
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }

  T& front() noexcept { return items_[head_]; }
  const T& front() const noexcept { return items_[head_]; }
  T& back() noexcept { return items_[wrap(head_ + size_ - 1)]; }
  /// The item `i` places behind the front (0: the front).
  T& operator[](std::size_t i) noexcept { return items_[wrap(head_ + i)]; }
  const T& operator[](std::size_t i) const noexcept { return items_[wrap(head_ + i)]; }

  /// May throw std::bad_alloc when the queue grows; the queue is then unchanged.
  template <class... Args>
  T& emplace_back(Args&&... args) {
    if (size_ == items_.size()) grow();
    T& slot = items_[wrap(head_ + size_)];
    slot = T(std::forward<Args>(args)...);
    ++size_;
    return slot;
  }
  void push_back(T v) { emplace_back(std::move(v)); }

  /// Removes the front item; its slot keeps the moved-from value (its storage, for vectors).
  void pop_front() noexcept {
    head_ = wrap(head_ + 1);
    --size_;
  }

  /// Removes the back item, as pop_front() does the front.
  void pop_back() noexcept { --size_; }

  /// Removes every item; the storage stays for later items.
  void clear() noexcept {
    head_ = 0;
    size_ = 0;
  }

  void swap(ring_queue& o) noexcept {
    items_.swap(o.items_);
    std::swap(head_, o.head_);
    std::swap(size_, o.size_);
  }

 private:
  std::size_t wrap(std::size_t i) const noexcept { return i & (items_.size() - 1); }

  void grow() {
    std::vector<T> bigger(items_.empty() ? 8 : items_.size() * 2);
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move(items_[wrap(head_ + i)]);
    items_.swap(bigger);
    head_ = 0;
  }

  std::vector<T> items_;  // capacity: a power of two, or empty
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace smbdirect::detail
