// Errors of the verbs transport: work completion statuses and RDMA CM failures.
//
// Work completion statuses the engine acts on map to smbdirect::errc (flush, RNR, length,
// access, invalid request); every other ibv_wc_status keeps its own value in the
// "smbdirect.verbs.wc" category, whose message is rdma-core's ibv_wc_status_str() text.
// Both categories here are equivalent to smbdirect::condition::transport_failure.
#pragma once

#include <string>
#include <system_error>

#include <infiniband/verbs.h>

#include "smbdirect/error.hpp"

namespace smbdirect::verbs {

/// Connection management failures (RDMA CM events that end an attempt). Values are stable.
enum class cm_errc {
  address_resolution_failed = 1,  ///< RDMA_CM_EVENT_ADDR_ERROR: no RDMA device owns a route to the address.
  route_resolution_failed,         ///< RDMA_CM_EVENT_ROUTE_ERROR: no path to the peer.
  connection_rejected,             ///< RDMA_CM_EVENT_REJECTED: nothing listens there, or the peer refused.
  peer_unreachable,                ///< RDMA_CM_EVENT_UNREACHABLE: the peer did not answer.
  connect_error,                   ///< RDMA_CM_EVENT_CONNECT_ERROR: establishment failed after the reply.
  device_removed,                  ///< RDMA_CM_EVENT_DEVICE_REMOVAL: the device went away.
  unexpected_event,                ///< An RDMA CM event that does not fit the current step.
  no_matching_device,              ///< options::device names a device the address does not resolve to.
  queue_too_deep,                  ///< A queue size from the options exceeds the device's max_qp_wr / max_cqe.
};

namespace detail {

class cm_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "smbdirect.verbs.cm"; }
  std::string message(int ev) const override {
    switch (static_cast<cm_errc>(ev)) {
      case cm_errc::address_resolution_failed: return "RDMA CM: address resolution failed (no RDMA device reaches that address)";
      case cm_errc::route_resolution_failed: return "RDMA CM: route resolution failed";
      case cm_errc::connection_rejected: return "RDMA CM: connection rejected (nothing listening there, or refused)";
      case cm_errc::peer_unreachable: return "RDMA CM: peer unreachable";
      case cm_errc::connect_error: return "RDMA CM: connection establishment failed";
      case cm_errc::device_removed: return "RDMA CM: device removed";
      case cm_errc::unexpected_event: return "RDMA CM: unexpected event";
      case cm_errc::no_matching_device: return "the address resolves to a different RDMA device than the one requested";
      case cm_errc::queue_too_deep: return "requested queue depth exceeds the device's limits (max_qp_wr / max_cqe)";
    }
    return "unknown RDMA CM error";
  }
  bool equivalent(int, const std::error_condition& cond) const noexcept override {
    return cond == make_error_condition(condition::transport_failure);
  }
};

class wc_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "smbdirect.verbs.wc"; }
  std::string message(int ev) const override {
    return std::string("work completion: ") + ibv_wc_status_str(static_cast<ibv_wc_status>(ev));
  }
  bool equivalent(int, const std::error_condition& cond) const noexcept override {
    return cond == make_error_condition(condition::transport_failure);
  }
};

}  // namespace detail

inline const std::error_category& cm_category() noexcept {
  static const detail::cm_category_impl instance;
  return instance;
}

inline const std::error_category& wc_category() noexcept {
  static const detail::wc_category_impl instance;
  return instance;
}

inline std::error_code make_error_code(cm_errc e) noexcept { return {static_cast<int>(e), cm_category()}; }

/// The error a work completion status stands for; empty for IBV_WC_SUCCESS.
inline std::error_code to_error_code(ibv_wc_status status) noexcept {
  switch (status) {
    case IBV_WC_SUCCESS: return {};
    case IBV_WC_WR_FLUSH_ERR: return errc::work_request_flushed;
    case IBV_WC_RNR_RETRY_EXC_ERR: return errc::receiver_not_ready;
    case IBV_WC_LOC_LEN_ERR: return errc::local_length_error;
    case IBV_WC_REM_ACCESS_ERR: return errc::remote_access_error;
    case IBV_WC_REM_INV_REQ_ERR: return errc::remote_invalid_request;
    default: return {static_cast<int>(status), wc_category()};
  }
}

/// errno from a failed rdma-core call, as a std::error_code.
inline std::error_code last_system_error() noexcept { return {errno, std::system_category()}; }

}  // namespace smbdirect::verbs

template <>
struct std::is_error_code_enum<smbdirect::verbs::cm_errc> : std::true_type {};
