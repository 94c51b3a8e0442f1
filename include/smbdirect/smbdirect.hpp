// Everything a user of smbdirect needs: the connection, its parameters and errors, and the
// wire codecs. Transports come from their own headers (e.g. smbdirect/loopback.hpp).
#pragma once

#include "smbdirect/clock.hpp"
#include "smbdirect/connection.hpp"
#include "smbdirect/error.hpp"
#include "smbdirect/parameters.hpp"
#include "smbdirect/received_message.hpp"
#include "smbdirect/statistics.hpp"
#include "smbdirect/stream.hpp"
#include "smbdirect/transport.hpp"
#include "smbdirect/wire/buffer_descriptor.hpp"
#include "smbdirect/wire/data_transfer.hpp"
#include "smbdirect/wire/negotiate.hpp"
