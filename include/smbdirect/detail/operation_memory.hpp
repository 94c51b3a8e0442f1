// Memory for one Asio operation's state, kept in the coroutine that awaits the operation.
//
// Why: with use_awaitable, Asio 1.22 runs an operation's initiation (which allocates the
// operation's state) inside a noexcept await_suspend, so a std::bad_alloc there calls
// std::terminate. A coroutine that declares an operation_memory local gets that memory as part
// of its own frame, which its caller allocates where std::bad_alloc propagates normally; the
// operation then takes its state from the frame and cannot fail to allocate.
//
//   operation_memory memory;
//   co_await timer.async_wait(memory.bind(asio::redirect_error(asio::use_awaitable, ec)));
//
// One operation at a time: Asio frees an operation's state before it resumes the awaiting
// coroutine, so the next co_await may reuse it. A state larger than `capacity` bytes, or a
// second one while the first is alive, comes from operator new as it would without this.
#pragma once

#include <cstddef>
#include <new>

#include <asio/bind_allocator.hpp>

namespace smbdirect::detail {

class operation_memory {
 public:
  /// Bytes for one operation's state. With GCC 12 and Asio 1.22 an async_event wait (a channel
  /// receive) takes 160 and a steady_timer wait 184, both for use_awaitable with redirect_error.
  static constexpr std::size_t capacity = 256;

  operation_memory() = default;
  operation_memory(const operation_memory&) = delete;
  operation_memory& operator=(const operation_memory&) = delete;

  template <class T>
  struct allocator {
    using value_type = T;
    operation_memory* memory;

    explicit allocator(operation_memory* m) noexcept : memory(m) {}
    template <class U>
    allocator(const allocator<U>& other) noexcept : memory(other.memory) {}

    T* allocate(std::size_t n) { return static_cast<T*>(memory->take(n * sizeof(T), alignof(T))); }
    void deallocate(T* p, std::size_t) noexcept { memory->give_back(p, alignof(T)); }
    template <class U>
    bool operator==(const allocator<U>& other) const noexcept { return memory == other.memory; }
  };

  /// `token` with this memory as its associated allocator.
  template <class Token>
  auto bind(Token&& token) noexcept {
    return asio::bind_allocator(allocator<void>(this), static_cast<Token&&>(token));
  }

 private:
  void* take(std::size_t size, std::size_t align) {
    if (!in_use_ && size <= capacity && align <= alignof(std::max_align_t)) {
      in_use_ = true;
      return storage_;
    }
    return ::operator new(size, std::align_val_t(align));
  }
  void give_back(void* p, std::size_t align) noexcept {
    if (p == storage_) {
      in_use_ = false;
      return;
    }
    ::operator delete(p, std::align_val_t(align));
  }

  alignas(std::max_align_t) std::byte storage_[capacity];
  bool in_use_ = false;
};

}  // namespace smbdirect::detail
