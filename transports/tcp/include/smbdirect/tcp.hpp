// The TCP emulation transport: SMB Direct between machines without RDMA, in iWARP's own wire
// format (MPA over TCP, DDP, RDMAP), so Wireshark decodes it and a real iWARP peer such as
// Linux soft-iWARP (siw) can talk to it. Link with -lisal (Bazel: //transports/tcp).
#pragma once

#include "smbdirect/tcp/connection_manager.hpp"
#include "smbdirect/tcp/ddp_rdmap.hpp"
#include "smbdirect/tcp/error.hpp"
#include "smbdirect/tcp/mpa.hpp"
#include "smbdirect/tcp/queue_pair.hpp"
#include "smbdirect/tcp/terminate.hpp"
