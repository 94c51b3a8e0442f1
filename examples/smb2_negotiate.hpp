// A hand-built SMB2 NEGOTIATE exchange over any Asio AsyncStream: an asio::ip::tcp::socket to a
// real SMB2 server (e.g. Samba's smbd), or an SMB Direct stream adapter that behaves like one.
// Written from [MS-SMB2] alone. Standalone Asio (-DASIO_STANDALONE), C++20, no other dependency.
//
//   client: make_negotiate_request -> framed write -> framed read -> parse_negotiate_response
//   server: framed read -> parse_negotiate_request -> make_negotiate_response -> framed write
//
// Framing is the Direct TCP transport header ([MS-SMB2] 2.1): one zero byte, then the message
// length as 3 bytes big-endian. Over RDMA, SMB3 has no framing: each SMB2 message is one SMB
// Direct upper-layer message (negotiate_messages below). Everything inside an SMB2 message is little-endian. Parsers
// never throw on hostile input: they check every offset and length against the span they are
// given and return an error code.
#pragma once

#include <asio/buffer.hpp>
#include <asio/experimental/as_tuple.hpp>  // Asio 1.22; plain asio::as_tuple from 1.24 on
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace smb2 {
enum class errc {
  bad_stream_header = 1,  // the Direct TCP transport header's first byte is not zero
  bad_stream_length,      // the framed length is below 64 (one SMB2 header) or above 1 MiB
  bad_protocol_id,        // the message does not start with 0xFE 'S' 'M' 'B'
  bad_structure_size,     // a StructureSize field (header or body) has the wrong value
  not_a_response,         // SMB2_FLAGS_SERVER_TO_REDIR is clear in what should be a response
  not_a_request,          // SMB2_FLAGS_SERVER_TO_REDIR is set in what should be a request
  compounded,             // NextCommand is nonzero: a NEGOTIATE may not be compounded
  wrong_command,          // the Command field is not NEGOTIATE (0)
  wrong_message_id,       // the response's MessageId is not the request's
  truncated_body,         // the message ends before the fixed part of its body does
  out_of_bounds,          // an offset/length pair points outside the message, or is misaligned
  nt_status,              // the server answered with a nonzero NT status (negotiate_response::status)
  unsupported_dialect,    // the server chose a dialect we did not offer, or none was offered
  bad_negotiate_context,  // 3.1.1 without exactly one SMB2_PREAUTH_INTEGRITY_CAPABILITIES
};
}  // namespace smb2

template <>
struct std::is_error_code_enum<smb2::errc> : std::true_type {};

namespace smb2 {
inline const std::error_category& smb2_category() noexcept {
  struct category final : std::error_category {
    const char* name() const noexcept override { return "smb2.example"; }
    std::string message(int v) const override {
      switch (static_cast<errc>(v)) {
        case errc::bad_stream_header: return "Direct TCP transport header: first byte is not zero";
        case errc::bad_stream_length: return "Direct TCP transport header: length below 64 or above 1 MiB";
        case errc::bad_protocol_id: return "SMB2 header: ProtocolId is not 0xFE 'S' 'M' 'B'";
        case errc::bad_structure_size: return "SMB2: unexpected StructureSize";
        case errc::not_a_response: return "SMB2 header: SMB2_FLAGS_SERVER_TO_REDIR missing in a response";
        case errc::not_a_request: return "SMB2 header: SMB2_FLAGS_SERVER_TO_REDIR set in a request";
        case errc::compounded: return "SMB2 header: NextCommand is nonzero in a NEGOTIATE";
        case errc::wrong_command: return "SMB2 header: Command is not NEGOTIATE";
        case errc::wrong_message_id: return "SMB2 header: MessageId does not match the request's";
        case errc::truncated_body: return "SMB2: message shorter than its fixed-size part";
        case errc::out_of_bounds: return "SMB2: offset/length outside the message or misaligned";
        case errc::nt_status: return "SMB2: the server returned a nonzero NT status";
        case errc::unsupported_dialect: return "SMB2 NEGOTIATE: no dialect in common";
        case errc::bad_negotiate_context: return "SMB2 NEGOTIATE: 3.1.1 needs one preauth integrity context";
      }
      return "smb2.example: unknown error";
    }
  };
  static const category instance;
  return instance;
}

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), smb2_category()}; }

inline constexpr std::size_t header_size = 64;            // [MS-SMB2] 2.2.1, sync and async alike
inline constexpr std::size_t max_message_size = 1 << 20;  // our cap on a framed message: 1 MiB
inline constexpr std::uint16_t command_negotiate = 0x0000;
inline constexpr std::uint32_t flags_server_to_redir = 0x00000001;
inline constexpr std::uint32_t status_not_supported = 0xC00000BB;
inline constexpr std::array<std::uint16_t, 5> client_dialects{0x0202, 0x0210, 0x0300, 0x0302, 0x0311};

namespace detail {
template <int Width>
void put(std::vector<std::byte>& m, std::size_t at, std::uint64_t x) {
  for (int i = 0; i < Width; ++i) m[at + i] = std::byte(x >> (8 * i));
}
inline constexpr auto put16 = put<2>, put32 = put<4>, put64 = put<8>;
// The caller has checked that [at, at + width) lies inside m.
inline std::uint64_t get(std::span<const std::byte> m, std::size_t at, int width) {
  std::uint64_t x = 0;
  for (int i = width - 1; i >= 0; --i) x = x << 8 | std::to_integer<std::uint64_t>(m[at + i]);
  return x;
}
inline std::uint16_t get16(std::span<const std::byte> m, std::size_t at) { return std::uint16_t(get(m, at, 2)); }
inline std::uint32_t get32(std::span<const std::byte> m, std::size_t at) { return std::uint32_t(get(m, at, 4)); }
inline std::uint64_t get64(std::span<const std::byte> m, std::size_t at) { return get(m, at, 8); }
constexpr std::size_t align8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

// A `total`-byte message starting with the 64-byte SMB2 sync header ([MS-SMB2] 2.2.1.2) of a
// NEGOTIATE; CreditCharge, NextCommand, TreeId, SessionId and Signature stay zero.
inline std::vector<std::byte> header(std::size_t total, std::uint32_t status, std::uint16_t credits,
                                     std::uint32_t flags, std::uint64_t message_id) {
  std::vector<std::byte> m(total);
  put32(m, 0, 0x424D53FE);  // ProtocolId: 0xFE 'S' 'M' 'B'
  put16(m, 4, 64);          // StructureSize
  put32(m, 8, status);      // Status (in a request: ChannelSequence + Reserved)
  put16(m, 12, command_negotiate);
  put16(m, 14, credits);    // CreditRequest / CreditResponse
  put32(m, 16, flags);
  put64(m, 24, message_id);
  return m;
}

// What every NEGOTIATE header must hold; `response` says which direction we expect.
inline std::error_code check_header(std::span<const std::byte> m, bool response) {
  if (m.size() < header_size) return errc::truncated_body;
  if (get32(m, 0) != 0x424D53FE) return errc::bad_protocol_id;
  if (get16(m, 4) != 64) return errc::bad_structure_size;
  const bool from_server = (get32(m, 16) & flags_server_to_redir) != 0;
  if (response && !from_server) return errc::not_a_response;
  if (!response && from_server) return errc::not_a_request;
  if (get16(m, 12) != command_negotiate) return errc::wrong_command;
  if (get32(m, 20) != 0) return errc::compounded;
  return {};
}
}  // namespace detail

// Client: 64-byte header + NEGOTIATE request ([MS-SMB2] 2.2.3): 36 bytes fixed, 5 dialects (10
// bytes), 2 bytes of padding, then two negotiate contexts (2.2.3.1), each 8-byte aligned:
// preauth integrity (2.2.3.1.1: SHA-512, 32-byte random salt; 8 + 38 bytes, padded to 48) and
// encryption (2.2.3.1.2: AES-128-GCM, AES-128-CCM; 8 + 6 bytes). 174 bytes in all, no transport
// header. ClientGuid is random; SecurityMode says signing enabled (not required).
inline std::vector<std::byte> make_negotiate_request(std::uint64_t message_id) {
  using namespace detail;
  constexpr std::size_t b = header_size, dialects_at = b + 36;
  constexpr std::size_t contexts_at = align8(dialects_at + 2 * client_dialects.size());  // 112
  constexpr std::size_t cipher_at = contexts_at + align8(8 + 38);                        // 160
  auto m = header(cipher_at + 8 + 6, 0, /*CreditRequest*/ 1, 0, message_id);
  std::random_device rng;
  put16(m, b + 0, 36);                       // StructureSize
  put16(m, b + 2, client_dialects.size());   // DialectCount
  put16(m, b + 4, 0x0001);                   // SecurityMode: SMB2_NEGOTIATE_SIGNING_ENABLED
  put32(m, b + 8, 0x00000004 | 0x00000040);  // Capabilities: LARGE_MTU | ENCRYPTION
  for (std::size_t i = 0; i < 16; i += 4) put32(m, b + 12 + i, rng());  // ClientGuid
  put32(m, b + 28, contexts_at);             // NegotiateContextOffset, from the header's start
  put16(m, b + 32, 2);                       // NegotiateContextCount
  for (std::size_t i = 0; i < client_dialects.size(); ++i) put16(m, dialects_at + 2 * i, client_dialects[i]);
  put16(m, contexts_at + 0, 0x0001);   // ContextType: SMB2_PREAUTH_INTEGRITY_CAPABILITIES
  put16(m, contexts_at + 2, 38);       // DataLength
  put16(m, contexts_at + 8, 1);        // HashAlgorithmCount
  put16(m, contexts_at + 10, 32);      // SaltLength
  put16(m, contexts_at + 12, 0x0001);  // SHA-512
  for (std::size_t i = 0; i < 32; i += 4) put32(m, contexts_at + 14 + i, rng());  // Salt
  put16(m, cipher_at + 0, 0x0002);     // ContextType: SMB2_ENCRYPTION_CAPABILITIES
  put16(m, cipher_at + 2, 6);          // DataLength
  put16(m, cipher_at + 8, 2);          // CipherCount, then the ciphers, preferred first:
  put16(m, cipher_at + 10, 0x0002);    // AES-128-GCM
  put16(m, cipher_at + 12, 0x0001);    // AES-128-CCM
  return m;
}

// What a NEGOTIATE response says ([MS-SMB2] 2.2.4: 64 bytes fixed after the 64-byte header).
struct negotiate_response {
  std::uint32_t status = 0;  // NT status from the header; nonzero: an error response (2.2.2)
  std::uint64_t message_id = 0;
  std::uint16_t credits = 0;        // CreditResponse: credits granted
  std::uint16_t security_mode = 0;  // 0x1 signing enabled, 0x2 signing required
  std::uint16_t dialect_revision = 0;
  std::array<std::byte, 16> server_guid{};
  std::uint32_t capabilities = 0;  // SMB2_GLOBAL_CAP_*: 0x1 DFS, 0x2 leasing, 0x4 large MTU, ...
  std::uint32_t max_transact_size = 0, max_read_size = 0, max_write_size = 0;  // bytes
  std::uint64_t system_time = 0, server_start_time = 0;  // FILETIME: 100 ns units since 1601 UTC
  std::uint16_t security_buffer_length = 0;   // bytes of GSS-API/SPNEGO token, not decoded here
  std::uint16_t negotiate_context_count = 0;  // 3.1.1 only
  std::uint16_t cipher = 0;  // from SMB2_ENCRYPTION_CAPABILITIES (3.1.1); 0: none chosen
};

// "3.1.1 (0x0311)"
inline std::string dialect_name(std::uint16_t d) {
  constexpr std::pair<std::uint16_t, const char*> names[] = {
      {0x0202, "2.0.2"}, {0x0210, "2.1"}, {0x0300, "3.0"}, {0x0302, "3.0.2"}, {0x0311, "3.1.1"}, {0x02FF, "2.x wildcard"}};
  const char* name = "unknown";
  for (const auto& [code, text] : names)
    if (code == d) name = text;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s (0x%04X)", name, unsigned{d});
  return buf;
}

// One "name: value" line a field; times as UTC (0, which servers send as start time, stays 0).
inline std::string to_string(const negotiate_response& r) {
  const auto time = [](std::uint64_t ft) -> std::string {
    if (ft == 0 || ft >= 2'650'467'744'000'000'000) return std::to_string(ft);  // past year 9999
    using namespace std::chrono;
    const sys_seconds t{seconds{std::int64_t(ft / 10'000'000) - 11'644'473'600}};
    const year_month_day ymd{floor<days>(t)};
    const hh_mm_ss hms{t - floor<days>(t)};
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", int(ymd.year()), unsigned(ymd.month()),
                  unsigned(ymd.day()), int(hms.hours().count()), int(hms.minutes().count()),
                  int(hms.seconds().count()));
    return buf;
  };
  // GUID text form: Data1 (4 bytes), Data2, Data3 (2 bytes each) little-endian, then 8 bytes as sent.
  const auto g = std::span<const std::byte>(r.server_guid);
  const auto u8 = [&](std::size_t i) { return std::to_integer<unsigned>(g[i]); };
  char guid[40];
  std::snprintf(guid, sizeof guid, "%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X", unsigned(detail::get32(g, 0)),
                unsigned(detail::get16(g, 4)), unsigned(detail::get16(g, 6)), u8(8), u8(9), u8(10), u8(11), u8(12),
                u8(13), u8(14), u8(15));
  char buf[768];
  std::snprintf(buf, sizeof buf,
                "status:             0x%08X\nmessage id:         %llu\ncredits granted:    %u\n"
                "security mode:      0x%04X\ndialect:            %s\nserver guid:        %s\n"
                "capabilities:       0x%08X\nmax transact size:  %u\nmax read size:      %u\n"
                "max write size:     %u\nsystem time:        %s\nserver start time:  %s\n"
                "security buffer:    %u bytes\nnegotiate contexts: %u\ncipher:             0x%04X\n",
                unsigned(r.status), static_cast<unsigned long long>(r.message_id), unsigned(r.credits),
                unsigned(r.security_mode), dialect_name(r.dialect_revision).c_str(), guid, unsigned(r.capabilities),
                unsigned(r.max_transact_size), unsigned(r.max_read_size), unsigned(r.max_write_size),
                time(r.system_time).c_str(), time(r.server_start_time).c_str(), unsigned(r.security_buffer_length),
                unsigned(r.negotiate_context_count), unsigned(r.cipher));
  return buf;
}

// Client: parses a whole SMB2 message (from the SMB2 header on, no transport header). On a nonzero
// Status only status, message_id and credits are filled, and errc::nt_status is returned.
inline std::error_code parse_negotiate_response(std::span<const std::byte> m, std::uint64_t expected_message_id,
                                                negotiate_response& out) {
  using namespace detail;
  out = {};
  if (auto ec = check_header(m, true)) return ec;
  if (get64(m, 24) != expected_message_id) return errc::wrong_message_id;
  out.status = get32(m, 8);
  out.message_id = get64(m, 24);
  out.credits = get16(m, 14);
  const auto body = m.subspan(header_size);
  if (out.status != 0) {  // error response, [MS-SMB2] 2.2.2: StructureSize 9, 8 bytes + ErrorData
    if (body.size() < 8) return errc::truncated_body;
    return get16(body, 0) == 9 ? errc::nt_status : errc::bad_structure_size;
  }
  if (body.size() < 64) return errc::truncated_body;
  if (get16(body, 0) != 65) return errc::bad_structure_size;
  out.security_mode = get16(body, 2);
  out.dialect_revision = get16(body, 4);
  std::copy_n(body.begin() + 8, 16, out.server_guid.begin());
  out.capabilities = get32(body, 24);
  out.max_transact_size = get32(body, 28);
  out.max_read_size = get32(body, 32);
  out.max_write_size = get32(body, 36);
  out.system_time = get64(body, 40);
  out.server_start_time = get64(body, 48);
  out.security_buffer_length = get16(body, 58);
  if (std::find(client_dialects.begin(), client_dialects.end(), out.dialect_revision) == client_dialects.end())
    return errc::unsupported_dialect;
  // Offsets count from the start of the SMB2 header; none may point into the fixed part.
  const std::size_t security_offset = get16(body, 56);
  if (out.security_buffer_length != 0 &&
      (security_offset < header_size + 64 || security_offset + out.security_buffer_length > m.size()))
    return errc::out_of_bounds;
  if (out.dialect_revision != 0x0311) return {};  // the context fields are Reserved before 3.1.1
  out.negotiate_context_count = get16(body, 6);
  std::size_t at = get32(body, 60), preauth = 0;
  if (at % 8 != 0 || at < header_size + 64 || at > m.size()) return errc::out_of_bounds;
  for (std::size_t i = 0; i < out.negotiate_context_count; ++i) {  // each 8-byte aligned (2.2.4)
    at = align8(at);
    if (at > m.size() || m.size() - at < 8) return errc::out_of_bounds;
    const std::uint16_t type = get16(m, at), length = get16(m, at + 2);  // 2.2.3.1: 8-byte header
    if (m.size() - at - 8 < length) return errc::out_of_bounds;
    if (type == 0x0001) ++preauth;
    if (type == 0x0002 && length >= 4 && get16(m, at + 8) == 1) out.cipher = get16(m, at + 10);
    at += 8 + length;
  }
  return preauth == 1 ? std::error_code{} : errc::bad_negotiate_context;
}

// An SMB2 ERROR response to a NEGOTIATE ([MS-SMB2] 2.2.2): the header with `status`, then 8
// bytes + 1 byte of ErrorData, all zero. 73 bytes.
inline std::vector<std::byte> make_error_response(std::uint64_t message_id, std::uint32_t status) {
  auto m = detail::header(header_size + 9, status, 1, flags_server_to_redir, message_id);
  detail::put16(m, header_size, 9);  // StructureSize; ErrorContextCount, ByteCount, ErrorData: 0
  return m;
}

// One line naming every field of an SMB2 sync header ([MS-SMB2] 2.2.1.2) at the start of `m`,
// whatever its command; the 16-byte Signature as hex. "not an SMB2 message: ..." if `m` is
// shorter than 64 bytes or does not start with 0xFE 'S' 'M' 'B'.
inline std::string describe_header(std::span<const std::byte> m) {
  using namespace detail;
  if (m.size() < header_size) return "not an SMB2 message: " + std::to_string(m.size()) + " bytes";
  if (get32(m, 0) != 0x424D53FE) return "not an SMB2 message: ProtocolId is not 0xFE 'S' 'M' 'B'";
  std::string signature;
  for (std::size_t i = 48; i < 64; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", std::to_integer<unsigned>(m[i]));
    signature += hex;
  }
  constexpr const char* commands[] = {"NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT",
                                      "CREATE", "CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL",
                                      "ECHO", "QUERY_DIRECTORY", "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO",
                                      "OPLOCK_BREAK"};
  const std::uint16_t command = get16(m, 12);
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "ProtocolId FE534D42, StructureSize %u, CreditCharge %u, Status/ChannelSequence 0x%08X, "
                "Command %s (%u), CreditRequest %u, Flags 0x%08X, NextCommand %u, MessageId %llu, "
                "Reserved/ProcessId 0x%08X, TreeId %u, SessionId 0x%016llX, Signature %s",
                unsigned(get16(m, 4)), unsigned(get16(m, 6)), unsigned(get32(m, 8)),
                command < std::size(commands) ? commands[command] : "unknown", unsigned(command),
                unsigned(get16(m, 14)), unsigned(get32(m, 16)), unsigned(get32(m, 20)),
                static_cast<unsigned long long>(get64(m, 24)), unsigned(get32(m, 32)), unsigned(get32(m, 36)),
                static_cast<unsigned long long>(get64(m, 40)), signature.c_str());
  return buf;
}

// Server side, for in-process tests only (smbdirect is not an SMB2 server): what it keeps of a request.
struct negotiate_request_info {
  std::uint64_t message_id = 0;
  std::vector<std::uint16_t> dialects;
};

// Server: parses a whole NEGOTIATE request ([MS-SMB2] 2.2.3: 36 bytes fixed, then 2 bytes a
// dialect). Negotiate contexts are not looked at: make_negotiate_response never picks 3.1.1.
inline std::error_code parse_negotiate_request(std::span<const std::byte> m, negotiate_request_info& out) {
  using namespace detail;
  out = {};
  if (auto ec = check_header(m, false)) return ec;
  const auto body = m.subspan(header_size);
  if (body.size() < 36) return errc::truncated_body;
  if (get16(body, 0) != 36) return errc::bad_structure_size;
  const std::size_t count = get16(body, 2);
  if (count == 0) return errc::unsupported_dialect;
  if (body.size() < 36 + 2 * count) return errc::truncated_body;
  out.message_id = get64(m, 24);
  for (std::size_t i = 0; i < count; ++i) out.dialects.push_back(get16(body, 36 + 2 * i));
  return {};
}

// Server: answers with the highest of 0x0202 0x0210 0x0300 0x0302 the client offered. It never
// does 3.1.1, so it needs no negotiate contexts (and no preauth hash). The answer: 64-byte header
// + 64-byte body, signing enabled, no security buffer, 1 credit, 1 MiB sizes (64 KiB for 2.0.2).
// With no dialect in common: STATUS_NOT_SUPPORTED in an error response ([MS-SMB2] 2.2.2: 8 bytes
// + 1 byte of ErrorData).
inline std::vector<std::byte> make_negotiate_response(const negotiate_request_info& req,
                                                      const std::array<std::byte, 16>& server_guid = {}) {
  using namespace detail;
  std::uint16_t dialect = 0;
  for (std::uint16_t d : {0x0202, 0x0210, 0x0300, 0x0302})
    if (std::find(req.dialects.begin(), req.dialects.end(), d) != req.dialects.end()) dialect = d;
  if (dialect == 0) return make_error_response(req.message_id, status_not_supported);
  constexpr std::size_t b = header_size;
  auto m = header(b + 64, 0, 1, flags_server_to_redir, req.message_id);
  const std::uint32_t max_io = dialect == 0x0202 ? 65536 : 1 << 20;
  const auto unix_seconds = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::system_clock::now().time_since_epoch());
  put16(m, b + 0, 65);  // StructureSize
  put16(m, b + 2, 0x0001);  // SecurityMode: signing enabled
  put16(m, b + 4, dialect);  // DialectRevision
  std::copy(server_guid.begin(), server_guid.end(), m.begin() + b + 8);
  put32(m, b + 24, dialect == 0x0202 ? 0 : 0x00000004);  // Capabilities: LARGE_MTU from 2.1 on
  put32(m, b + 28, max_io);  // MaxTransactSize
  put32(m, b + 32, max_io);  // MaxReadSize
  put32(m, b + 36, max_io);  // MaxWriteSize
  put64(m, b + 40, (unix_seconds.count() + 11'644'473'600) * 10'000'000);  // SystemTime
  put16(m, b + 56, b + 64);  // SecurityBufferOffset (SecurityBufferLength: 0)
  return m;
}

namespace detail {
inline constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

// The 4-byte Direct TCP transport header and the message, with one async_write.
template <class AsyncStream>
asio::awaitable<std::error_code> write_frame(AsyncStream& stream, std::span<const std::byte> message) {
  const std::size_t n = message.size();
  const std::array<std::byte, 4> head{std::byte{0}, std::byte(n >> 16), std::byte(n >> 8), std::byte(n)};
  const std::array<asio::const_buffer, 2> buffers{asio::buffer(head), asio::buffer(message.data(), n)};
  const auto [ec, written] = co_await asio::async_write(stream, buffers, use_tuple);
  co_return ec;
}

// One framed message into `message`: the 4-byte header, checked, then exactly that many bytes.
template <class AsyncStream>
asio::awaitable<std::error_code> read_frame(AsyncStream& stream, std::vector<std::byte>& message) {
  std::array<std::byte, 4> head{};
  const auto [ec, got] = co_await asio::async_read(stream, asio::buffer(head), use_tuple);
  if (ec) co_return ec;
  if (head[0] != std::byte{0}) co_return errc::bad_stream_header;
  const std::size_t n = std::to_integer<std::size_t>(head[1]) << 16 | std::to_integer<std::size_t>(head[2]) << 8 |
                        std::to_integer<std::size_t>(head[3]);
  if (n < header_size || n > max_message_size) co_return errc::bad_stream_length;
  message.resize(n);
  const auto [ec2, got2] = co_await asio::async_read(stream, asio::buffer(message), use_tuple);
  co_return ec2;
}
}  // namespace detail

// Client: one framed NEGOTIATE request, one framed response, parsed. Works on any AsyncStream
// (get_executor, async_read_some, async_write_some). Free coroutines throughout, on purpose:
// with GCC 12, coroutine lambdas with captures dangle.
template <class AsyncStream>
asio::awaitable<std::pair<std::error_code, negotiate_response>> negotiate(AsyncStream& stream,
                                                                          std::uint64_t message_id = 0) {
  std::pair<std::error_code, negotiate_response> result{};
  const std::vector<std::byte> request = make_negotiate_request(message_id);
  result.first = co_await detail::write_frame(stream, request);
  if (result.first) co_return result;
  std::vector<std::byte> response;
  result.first = co_await detail::read_frame(stream, response);
  if (result.first) co_return result;
  result.first = parse_negotiate_response(response, message_id, result.second);
  co_return result;
}

// Client over a message transport, as SMB3 runs over SMB Direct ([MS-SMB2] 2.1, [MS-SMBD] 1.3):
// the request is one upper-layer message and the response is the next, with no Direct TCP
// transport header. `Connection` is an smbdirect::connection (async_send, async_receive).
template <class Connection>
asio::awaitable<std::pair<std::error_code, negotiate_response>> negotiate_messages(Connection& c,
                                                                                   std::uint64_t message_id = 0) {
  std::pair<std::error_code, negotiate_response> result{};
  const std::vector<std::byte> request = make_negotiate_request(message_id);
  auto [sec, sent] = co_await c.async_send(asio::buffer(request), detail::use_tuple);
  if (sec) co_return result.first = sec, result;
  std::vector<std::byte> response;
  auto [rec, received] = co_await c.async_receive(response, detail::use_tuple);
  if (rec) co_return result.first = rec, result;
  result.first = parse_negotiate_response(response, message_id, result.second);
  co_return result;
}

// Server: reads one framed NEGOTIATE request and answers it (see make_negotiate_response). A
// request that does not parse gets no answer; its error is returned.
template <class AsyncStream>
asio::awaitable<std::error_code> serve_negotiate(AsyncStream& stream) {
  std::vector<std::byte> request;
  std::error_code ec = co_await detail::read_frame(stream, request);
  if (ec) co_return ec;
  negotiate_request_info info;
  ec = parse_negotiate_request(request, info);
  if (ec) co_return ec;
  const std::vector<std::byte> response = make_negotiate_response(info);
  ec = co_await detail::write_frame(stream, response);
  co_return ec;
}
}  // namespace smb2
