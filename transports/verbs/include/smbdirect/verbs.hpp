// The verbs transport (rdma-core): RDMA CM connection management and a queue pair that
// models smbdirect::transport. Link with -libverbs -lrdmacm (Bazel: //transports/verbs).
#pragma once

#include "smbdirect/verbs/connection_manager.hpp"
#include "smbdirect/verbs/device.hpp"
#include "smbdirect/verbs/error.hpp"
#include "smbdirect/verbs/queue_pair.hpp"
