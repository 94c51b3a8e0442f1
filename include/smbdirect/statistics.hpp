// Per-connection counters, updated by the engine and read with connection::stats().
#pragma once

#include <cstdint>

namespace smbdirect {

struct statistics {
  std::uint64_t messages_sent = 0;       ///< upper-layer messages fully sent
  std::uint64_t messages_received = 0;   ///< upper-layer messages fully reassembled
  std::uint64_t bytes_sent = 0;          ///< upper-layer payload bytes sent
  std::uint64_t bytes_received = 0;      ///< upper-layer payload bytes received
  std::uint64_t messages_received_in_place = 0;  ///< messages handed over in lent receive buffers
  std::uint64_t lent_messages_copied = 0;  ///< with lending on, messages copied: lent_receive_buffers were in use
  std::uint64_t fragments_sent = 0;      ///< Data Transfer Messages with payload sent
  std::uint64_t fragments_received = 0;  ///< Data Transfer Messages with payload received
  std::uint64_t empty_messages_sent = 0;      ///< 20-byte messages (credits / keepalive) sent
  std::uint64_t empty_messages_received = 0;  ///< 20-byte messages received
  std::uint64_t credits_granted = 0;     ///< sum of CreditsGranted we sent (negotiate included)
  std::uint64_t credits_received = 0;    ///< sum of CreditsGranted we received (negotiate included)
  std::uint64_t keepalives_sent = 0;     ///< messages we sent with SMB_DIRECT_RESPONSE_REQUESTED
  std::uint64_t keepalives_received = 0;  ///< messages received with SMB_DIRECT_RESPONSE_REQUESTED
  std::uint64_t rdma_reads = 0;          ///< RDMA read operations completed
  std::uint64_t rdma_writes = 0;         ///< RDMA write operations completed
  std::uint64_t rdma_bytes_read = 0;
  std::uint64_t rdma_bytes_written = 0;
  std::uint64_t errors = 0;              ///< operations that completed with an error
};

}  // namespace smbdirect
