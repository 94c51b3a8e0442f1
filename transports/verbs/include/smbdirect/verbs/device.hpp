// RDMA device and port capabilities, as reported by rdma-core (ibv_query_device/_port).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <infiniband/verbs.h>

#include "smbdirect/verbs/error.hpp"

namespace smbdirect::verbs {

/// What one device and port can do. Sizes in bytes; depths in work requests.
struct device_info {
  std::string name;           ///< e.g. "rxe0", "siw0", "mlx5_0"
  std::string transport;      ///< "InfiniBand", "RoCE" or "iWARP"
  std::uint8_t port = 1;      ///< the port these port facts are for
  std::string port_state;     ///< "ACTIVE", "DOWN", ...
  std::uint32_t active_mtu = 0;        ///< path MTU in bytes (256..4096)
  std::uint32_t max_qp_wr = 0;         ///< work requests per queue
  std::uint32_t max_sge = 0;           ///< scatter-gather entries per work request
  std::uint32_t max_cqe = 0;           ///< entries per completion queue
  std::uint64_t max_mr_size = 0;       ///< bytes per memory region
  std::uint32_t max_qp_rd_atom = 0;    ///< IRD: RDMA reads a queue pair can serve at once
  std::uint32_t max_qp_init_rd_atom = 0;  ///< ORD: RDMA reads a queue pair can issue at once
  bool memory_window_type_2 = false;   ///< memory windows type 2 (per-I/O rkeys) supported
  bool iwarp = false;
};

namespace detail {

inline std::uint32_t mtu_bytes(ibv_mtu m) {
  switch (m) {
    case IBV_MTU_256: return 256;
    case IBV_MTU_512: return 512;
    case IBV_MTU_1024: return 1024;
    case IBV_MTU_2048: return 2048;
    case IBV_MTU_4096: return 4096;
  }
  return 0;
}

}  // namespace detail

/// Queries `context`'s device and `port`. Errors: the errno of ibv_query_device / _port.
inline std::pair<std::error_code, device_info> query_device(ibv_context* context, std::uint8_t port = 1) {
  device_info d;
  ibv_device_attr attr{};
  if (int rc = ibv_query_device(context, &attr)) return {std::error_code(rc, std::system_category()), d};
  ibv_port_attr pattr{};
  if (int rc = ibv_query_port(context, port, &pattr)) return {std::error_code(rc, std::system_category()), d};
  d.name = ibv_get_device_name(context->device);
  d.iwarp = context->device->transport_type == IBV_TRANSPORT_IWARP;
  d.transport = d.iwarp ? "iWARP" : pattr.link_layer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand";
  d.port = port;
  d.port_state = ibv_port_state_str(pattr.state);
  d.active_mtu = detail::mtu_bytes(pattr.active_mtu);
  d.max_qp_wr = static_cast<std::uint32_t>(attr.max_qp_wr);
  d.max_sge = static_cast<std::uint32_t>(attr.max_sge);
  d.max_cqe = static_cast<std::uint32_t>(attr.max_cqe);
  d.max_mr_size = attr.max_mr_size;
  d.max_qp_rd_atom = static_cast<std::uint32_t>(attr.max_qp_rd_atom);
  d.max_qp_init_rd_atom = static_cast<std::uint32_t>(attr.max_qp_init_rd_atom);
  d.memory_window_type_2 = (attr.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B) != 0 && attr.max_mw > 0;
  return {{}, d};
}

/// Every RDMA device on this host with its first port's facts (devices that fail to open
/// are skipped). Empty when there is none, e.g. without rdma_rxe/siw links or a NIC.
inline std::vector<device_info> list_devices() {
  std::vector<device_info> out;
  int n = 0;
  std::unique_ptr<ibv_device*, void (*)(ibv_device**)> list(ibv_get_device_list(&n), ibv_free_device_list);
  if (!list) return out;
  for (int i = 0; i < n; ++i) {
    ibv_context* ctx = ibv_open_device(list.get()[i]);
    if (!ctx) continue;
    if (auto [ec, info] = query_device(ctx); !ec) out.push_back(std::move(info));
    ibv_close_device(ctx);
  }
  return out;
}

/// One line: "rxe0: RoCE, port 1 ACTIVE, MTU 1024, max_qp_wr 1048576, ...".
inline std::string to_string(const device_info& d) {
  return d.name + ": " + d.transport + ", port " + std::to_string(d.port) + " " + d.port_state + ", MTU " +
         std::to_string(d.active_mtu) + ", max_qp_wr " + std::to_string(d.max_qp_wr) + ", max_sge " +
         std::to_string(d.max_sge) + ", max_cqe " + std::to_string(d.max_cqe) + ", IRD " +
         std::to_string(d.max_qp_rd_atom) + ", ORD " + std::to_string(d.max_qp_init_rd_atom) + ", memory windows " +
         (d.memory_window_type_2 ? "type 2" : "no");
}

}  // namespace smbdirect::verbs
