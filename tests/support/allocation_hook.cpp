// Replaces the global operator new/delete (see allocation_hook.hpp). malloc_usable_size gives
// the size on both sides, so no header is needed and aligned allocations work the same way.
#include "support/allocation_hook.hpp"

#include <malloc.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace smbdirect::test::allocations {
namespace {

std::atomic<std::uint64_t> allocations{0};
std::atomic<std::int64_t> in_use{0};
std::atomic<std::size_t> fail_size{0};  // 0: disarmed
std::atomic<bool> fired{false};
std::atomic<std::uint64_t> fail_at{UINT64_MAX};  // count() value whose allocation fails

bool should_fail(std::size_t size, std::uint64_t index) noexcept {
  std::uint64_t at = fail_at.load(std::memory_order_relaxed);
  if (at == index && fail_at.compare_exchange_strong(at, UINT64_MAX, std::memory_order_relaxed)) return true;
  const std::size_t at_least = fail_size.load(std::memory_order_relaxed);
  std::size_t expected = at_least;
  return at_least != 0 && size >= at_least && fail_size.compare_exchange_strong(expected, 0, std::memory_order_relaxed);
}

void* allocate(std::size_t size, std::size_t align, bool nothrow) {
  const std::uint64_t index = allocations.fetch_add(1, std::memory_order_relaxed);
  if (should_fail(size, index)) {
    fired.store(true, std::memory_order_relaxed);
    if (nothrow) return nullptr;
    throw std::bad_alloc();
  }
  if (size == 0) size = 1;
  void* p = align <= alignof(std::max_align_t) ? std::malloc(size)
                                               : std::aligned_alloc(align, (size + align - 1) / align * align);
  if (!p) {
    if (nothrow) return nullptr;
    throw std::bad_alloc();
  }
  in_use.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  return p;
}

void release(void* p) noexcept {
  if (!p) return;
  in_use.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}

}  // namespace

std::uint64_t count() noexcept { return allocations.load(std::memory_order_relaxed); }
std::int64_t bytes_in_use() noexcept { return in_use.load(std::memory_order_relaxed); }
void fail_next_at_least(std::size_t bytes) noexcept {
  fired.store(false, std::memory_order_relaxed);
  fail_size.store(bytes, std::memory_order_relaxed);
}
void fail_nth(std::uint64_t n) noexcept {
  fired.store(false, std::memory_order_relaxed);
  fail_at.store(count() + n, std::memory_order_relaxed);
}
void disarm() noexcept {
  fail_size.store(0, std::memory_order_relaxed);
  fail_at.store(UINT64_MAX, std::memory_order_relaxed);
}
bool failed() noexcept { return fired.load(std::memory_order_relaxed); }

}  // namespace smbdirect::test::allocations

using smbdirect::test::allocations::allocate;
using smbdirect::test::allocations::release;

void* operator new(std::size_t n) { return allocate(n, 0, false); }
void* operator new[](std::size_t n) { return allocate(n, 0, false); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0, true); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0, true); }
void* operator new(std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a), false); }
void* operator new[](std::size_t n, std::align_val_t a) { return allocate(n, static_cast<std::size_t>(a), false); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a), true);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a), true);
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
