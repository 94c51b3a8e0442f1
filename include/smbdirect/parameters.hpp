// Connection parameters: our side's limits, offered in negotiation. Defaults follow
// [MS-SMBD] Appendix B (Windows) and Linux; see docs/design.md "Defaults".
#pragma once

#include <chrono>
#include <cstdint>

namespace smbdirect {

using milliseconds = std::chrono::milliseconds;

/// Our side's configuration. All sizes in bytes, all times in milliseconds.
struct parameters {
  /// SendCreditTarget: send credits we ask the peer to keep granting us (CreditsRequested). > 0.
  std::uint16_t send_credit_target = 255;
  /// ReceiveCreditMax: receives we post (and so credits we grant) at once toward the peer's
  /// CreditsRequested. One more may be posted for a send that spends our last send credit
  /// ([MS-SMBD] 3.1.5.9: it "MUST ... post at least one receive"), so buffers are allocated
  /// for receive_credit_max + 1 (+ lent_receive_buffers). > 0.
  std::uint16_t receive_credit_max = 255;
  /// MaxSendSize we prefer (PreferredSendSize); clamped to the peer's MaxReceiveSize. >= 128.
  std::uint32_t max_send_size = 1364;
  /// MaxReceiveSize: largest single message we accept, also each receive buffer's size. >= 128.
  /// 1364 like Linux rather than Windows' 8192: peers send at most 1364 by default, and
  /// 255 posted receives of 8192 bytes would cost 2 MiB per connection instead of 340 KiB.
  std::uint32_t max_receive_size = 1364;
  /// MaxFragmentedRecvSize: largest reassembled upper-layer message we accept. >= 131072.
  std::uint32_t max_fragmented_size = 1024 * 1024;
  /// MaxReadWriteSize: most bytes one RDMA read/write may move (the negotiated value is the
  /// smaller of both sides'). > 0.
  std::uint32_t max_read_write_size = 1024 * 1024;
  /// Negotiation Timer: negotiation must complete within this. [MS-SMBD] 3.1.2.1 (Windows: 5 s)
  milliseconds negotiate_timeout{5000};
  /// KeepaliveInterval: idle time without any received message before we send a keepalive
  /// with SMB_DIRECT_RESPONSE_REQUESTED. 0 disables keepalives. [MS-SMBD] 3.1.2.2
  milliseconds keepalive_interval{120000};
  /// How long the peer may take to answer a keepalive before we terminate. (Windows: 5 s)
  milliseconds keepalive_timeout{5000};
  /// How long we tolerate having a message to send but no usable send credit. (Windows: 5 s)
  milliseconds credit_grant_timeout{5000};
  /// Most Buffer Descriptor V1 entries one RDMA read/write may use. Each becomes at least one
  /// work request, and descriptors usually come from the peer (an SMB2 channel info holds up
  /// to 4095), so this bounds the work one request can make us queue. > 0.
  std::uint32_t max_rdma_descriptors = 256;
  /// Extra receive buffers (MaxReceiveSize bytes each) that received messages may keep, so
  /// that connection::async_receive(received_message&) hands over the bytes where they
  /// arrived instead of copying them. Messages keep buffers while being reassembled, queued
  /// and held by the user; one that would need more than are left is copied instead. They
  /// come on top of the receive_credit_max + 1 posted ones, so lending never withholds a
  /// credit. 0 (default): every message is copied on arrival. A fragment takes one buffer and
  /// carries at most the peer's MaxSendSize - 24 bytes (at most our MaxReceiveSize - 24; a
  /// peer may send less): for messages of up to M bytes in fragments of F payload bytes,
  /// 2 * ceil(M / F) lets one message be held while the next arrives.
  /// receive_credit_max + 1 + this <= 65536.
  std::uint32_t lent_receive_buffers = 0;
};

/// Smallest MaxReceiveSize a peer may offer. [MS-SMBD] 3.1.5.6
inline constexpr std::uint32_t min_receive_size = 128;
/// Smallest MaxFragmentedSize a peer may offer. [MS-SMBD] 3.1.5.6
inline constexpr std::uint32_t min_fragmented_size = 131072;

/// What negotiation settled, for this side. [MS-SMBD] 3.1.1.1
struct negotiated_parameters {
  /// The peer's own Negotiate Request (we are passive) or Response (we are active), field by
  /// field as received, so a user can see what the peer chose. [MS-SMBD] 2.2.1, 2.2.2
  struct peer_offer {
    std::uint16_t credits_requested = 0;
    std::uint16_t credits_granted = 0;       ///< response only; 0 when the peer sent a request
    std::uint32_t preferred_send_size = 0;   ///< bytes
    std::uint32_t max_receive_size = 0;      ///< bytes
    std::uint32_t max_fragmented_size = 0;   ///< bytes
    std::uint32_t max_read_write_size = 0;   ///< bytes; response only, 0 in a request
  };

  std::uint32_t max_send_size = 0;             ///< bytes per message we send (header included)
  std::uint32_t max_receive_size = 0;          ///< bytes per message we accept
  std::uint32_t max_fragmented_send_size = 0;  ///< largest upper-layer message we may send
  std::uint32_t max_fragmented_recv_size = 0;  ///< largest upper-layer message we accept
  std::uint32_t max_read_write_size = 0;       ///< bytes per RDMA read/write
  std::uint16_t send_credit_target = 0;        ///< credits we ask for
  std::uint16_t receive_credit_max = 0;        ///< receives we post at most
  std::uint16_t receive_credit_target = 0;     ///< receives the peer asked for (<= max)
  std::uint16_t initial_send_credits = 0;      ///< SendCredits after negotiation
  peer_offer peer;                             ///< what the peer's negotiate message said
};

}  // namespace smbdirect
