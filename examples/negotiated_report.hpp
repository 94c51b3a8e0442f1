// How the SMB2 examples print an SMB Direct negotiation: what the peer's negotiate message said,
// what we offered, and what the connection settled on ([MS-SMBD] 3.1.5.6, 3.1.5.7). Sizes in
// bytes.
#pragma once

#include <cstdio>

#include <smbdirect/parameters.hpp>

namespace examples {

/// Three lines on stdout: "peer's <what>", "ours", "result". `what` names the peer's message
/// ("Negotiate Response" when we connected, "Negotiate Request" when we accepted).
inline void print_negotiated(const char* transport, const char* what, const smbdirect::parameters& ours,
                             const smbdirect::negotiated_parameters& n) {
  const auto& p = n.peer;
  std::printf("SMB Direct negotiated over %s\n", transport);
  std::printf("  peer's %s: CreditsRequested %u, CreditsGranted %u, PreferredSendSize %u, MaxReceiveSize %u, "
              "MaxFragmentedSize %u, MaxReadWriteSize %u\n",
              what, unsigned(p.credits_requested), unsigned(p.credits_granted), unsigned(p.preferred_send_size),
              unsigned(p.max_receive_size), unsigned(p.max_fragmented_size), unsigned(p.max_read_write_size));
  std::printf("  ours: SendCreditTarget %u, ReceiveCreditMax %u, MaxSendSize %u, MaxReceiveSize %u, "
              "MaxFragmentedSize %u, MaxReadWriteSize %u\n",
              unsigned(ours.send_credit_target), unsigned(ours.receive_credit_max), unsigned(ours.max_send_size),
              unsigned(ours.max_receive_size), unsigned(ours.max_fragmented_size), unsigned(ours.max_read_write_size));
  std::printf("  result: MaxSendSize %u, MaxReceiveSize %u, MaxFragmentedSize %u to send / %u to receive, "
              "MaxReadWriteSize %u, ReceiveCreditTarget %u, send credits %u\n",
              unsigned(n.max_send_size), unsigned(n.max_receive_size), unsigned(n.max_fragmented_send_size),
              unsigned(n.max_fragmented_recv_size), unsigned(n.max_read_write_size), unsigned(n.receive_credit_target),
              unsigned(n.initial_send_credits));
  std::fflush(stdout);
}

}  // namespace examples
