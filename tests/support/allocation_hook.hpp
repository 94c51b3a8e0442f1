// Test support: the binary's operator new/delete replaced by counting versions (link
// //tests:allocation_hook). They count allocations, track the bytes in use, and can make the
// next large allocation throw std::bad_alloc, for memory reports and allocation failure tests.
// Build the test with ASIO_DISABLE_STD_ALIGNED_ALLOC so that Asio's own handler and
// coroutine-frame memory comes through operator new too (it calls std::aligned_alloc otherwise).
#pragma once

#include <cstddef>
#include <cstdint>

namespace smbdirect::test::allocations {

/// operator new calls so far, over all threads.
std::uint64_t count() noexcept;
/// Bytes currently allocated through operator new (usable sizes, so slightly above requested).
std::int64_t bytes_in_use() noexcept;
/// The next allocation of at least `bytes` throws std::bad_alloc (one shot); 0 disarms.
void fail_next_at_least(std::size_t bytes) noexcept;
/// The allocation `n` calls from now (0: the next one) throws std::bad_alloc (one shot);
/// disarm() cancels it.
void fail_nth(std::uint64_t n) noexcept;
/// Cancels fail_next_at_least() and fail_nth().
void disarm() noexcept;
/// Whether the armed failure has happened.
bool failed() noexcept;

}  // namespace smbdirect::test::allocations
