// smbdcat: netcat for SMB Direct ([MS-SMBD]). Runs one end of a connection over TCP emulation
// or verbs (or both ends in this process over loopback), sends a file or stdin to the peer, and
// writes whatever the peer sends to stdout or a file. Both directions may carry a stream at once.
//
//   smbdcat [options] --listen [ADDRESS]      server: accept one connection
//   smbdcat [options] HOST                    client
//   smbdcat --transport loopback [options]    both ends here: --send goes to --output
//
// Exit status: 0 every stream arrived and matched its checksum, 1 error, 2 bad usage.
//
// Upper-layer protocol, inside SMB Direct messages. Byte 0 is the type. Control messages are 24
// bytes, integers little-endian: byte 1 a flag, bytes 4-7 a u32 `n`, then either two u64 `a` and
// `b` (bytes 8-23) or a Buffer Descriptor V1 ([MS-SMBD] 2.2.3.1, 16 bytes) naming a slot.
//   'H' HELLO    each side's first message. flag: how its stream travels (0 it sends nothing,
//                1 messages, 2 write, 3 read); a: "SMBDCAT1"; b: stream length, ~0 if unknown.
//   'D' DATA     messages mode: the type byte, then stream bytes (any number, at least one).
//   'C' CHUNK    sender -> receiver: `n` stream bytes are in this slot.
//   'S' SLOT     receiver -> sender: this slot is free again.
//   'E' END      sender -> receiver: a = stream length, b = its CRC-64 (ISA-L crc64_ecma_refl).
//   'V' VERDICT  receiver -> sender: flag 1 if length and CRC match END's; a, b as received.
// Flow control: the sender has `window_slots` slots; each DATA or CHUNK uses one until the
// receiver returns it with SLOT. Slots are MaxReadWriteSize bytes (the negotiated value).
// - messages: slots are credits only (empty descriptors); the receiver grants them at HELLO.
// - write:    the receiver registers a window (remote write only) and grants its slots at HELLO;
//             the sender RDMA-writes a chunk into a slot, then sends CHUNK.
// - read:     the sender registers a window (remote read only) and starts with all its slots; it
//             fills one and sends CHUNK; the receiver RDMA-reads it, then returns it with SLOT.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/crc64.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>

#include <smbdirect/detail/async_event.hpp>
#include <smbdirect/loopback.hpp>
#include <smbdirect/smbdirect.hpp>
#include <smbdirect/tcp.hpp>
#include <smbdirect/verbs.hpp>

namespace {

using namespace asio::experimental::awaitable_operators;
using smbdirect::wire::buffer_descriptor_v1;
using clock_type = std::chrono::steady_clock;
constexpr auto use_tuple = asio::experimental::as_tuple(asio::use_awaitable);

constexpr std::uint64_t unknown_length = ~std::uint64_t{0};
constexpr std::uint64_t magic = 0x3154414344424d53;  // "SMBDCAT1", little-endian
constexpr std::size_t window_slots = 8;
constexpr std::size_t control_size = 24;

enum class mode : std::uint8_t { none, messages, write, read };
constexpr std::array<std::string_view, 4> mode_names{"none", "messages", "write", "read"};

// ------------------------------------------------------------------------------ options

struct settings {
  std::string transport = "tcp";
  bool listen = false;
  std::string address;  // server: where to listen ("": every address); client: the host
  std::uint16_t port = 0;
  std::optional<std::string> send;  // FILE or "-"
  std::string output = "-";
  mode how = mode::messages;
  std::uint32_t message_size = smbdirect::parameters{}.max_fragmented_size;
  bool quiet = false;

  // --message-size also raises what this side accepts, so two smbdcats given the same value agree.
  smbdirect::parameters params() const {
    smbdirect::parameters p;
    p.max_fragmented_size = std::max(p.max_fragmented_size, message_size);
    return p;
  }
};

void print_usage() {
  const settings d;
  std::printf(
      "usage: smbdcat [options] --listen [ADDRESS]    server: accept one connection\n"
      "       smbdcat [options] HOST                  client: connect to HOST\n"
      "       smbdcat --transport loopback [options]  both ends in this process\n\n"
      "Sends --send to the peer over SMB Direct and writes what the peer sends to --output; both\n"
      "directions may carry a stream at once. Every stream ends with its length and CRC-64, which\n"
      "the receiver checks: a mismatch fails both ends. With loopback, --send goes to --output.\n"
      "Exit status: 0 success, 1 error or checksum mismatch, 2 bad usage.\n"
      "Options also accept --name=value.\n\n"
      "  --help               print this help and exit\n"
      "  --listen             be the server; ADDRESS is where to listen (default: every address)\n"
      "  --transport NAME     tcp (TCP emulation, iWARP framing), verbs (rdma-core) or loopback\n"
      "                       (default: %s)\n"
      "  --port N             0 picks SMB Direct's port: 5445 over tcp; over verbs 445, or 5445 on\n"
      "                       iWARP (default: %u)\n"
      "  --send FILE|-        send FILE, or stdin for - (default: nothing; with loopback: -)\n"
      "  --output FILE|-      write what the peer sends to FILE, or stdout for - (default: %s)\n"
      "  --mode NAME          how --send's bytes travel (default: %s):\n"
      "                         messages  upper-layer messages of up to --message-size bytes\n"
      "                         write     RDMA writes into a window the receiver registered\n"
      "                         read      RDMA reads by the receiver from the sender's window\n"
      "  --message-size BYTES messages mode: bytes per message, the 1-byte header included; at\n"
      "                       most the peer's MaxFragmentedSize. Above %u it also raises\n"
      "                       this side's MaxFragmentedSize (default: %u)\n"
      "  --quiet              print errors only: no progress bar, no summary\n",
      d.transport.c_str(), unsigned(d.port), d.output.c_str(), mode_names[std::size_t(d.how)].data(),
      unsigned(smbdirect::parameters{}.max_fragmented_size), unsigned(d.message_size));
}

template <class T>
std::optional<T> parse_number(std::string_view text, T min, T max) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || v < min || v > max) return std::nullopt;
  return static_cast<T>(v);
}

// Returns an error message, or nothing when `s` is ready to use.
std::optional<std::string> parse_args(int argc, char** argv, settings& s, bool& help) {
  std::vector<std::string_view> positional;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (!arg.starts_with("-")) {
      positional.push_back(arg);
      continue;
    }
    std::optional<std::string_view> value;
    if (const auto eq = arg.find('='); eq != arg.npos) value = arg.substr(eq + 1), arg = arg.substr(0, eq);
    if (arg == "--help" || arg == "--listen" || arg == "--quiet") {
      if (value) return std::string(arg) + " takes no value";
      (arg == "--help" ? help : arg == "--listen" ? s.listen : s.quiet) = true;
      continue;
    }
    if (arg != "--transport" && arg != "--port" && arg != "--send" && arg != "--output" && arg != "--mode" &&
        arg != "--message-size")
      return "unknown option " + std::string(arg) + " (see --help)";
    if (!value && i + 1 == argc) return std::string(arg) + " needs a value (see --help)";
    if (!value) value = argv[++i];
    const std::string v(*value);
    if (arg == "--transport") {
      if (v != "tcp" && v != "verbs" && v != "loopback") return "unknown transport \"" + v + "\" (tcp, verbs or loopback)";
      s.transport = v;
    } else if (arg == "--port") {
      const auto n = parse_number<std::uint16_t>(v, 0, 65535);
      if (!n) return "--port: \"" + v + "\" is not a port number (0-65535)";
      s.port = *n;
    } else if (arg == "--send") {
      s.send = v;
    } else if (arg == "--output") {
      s.output = v;
    } else if (arg == "--mode") {
      const auto m = std::find(mode_names.begin() + 1, mode_names.end(), v);
      if (m == mode_names.end()) return "unknown mode \"" + v + "\" (messages, write or read)";
      s.how = static_cast<mode>(m - mode_names.begin());
    } else {
      const auto n = parse_number<std::uint32_t>(v, 2, 0xffffffff);
      if (!n) return "--message-size: \"" + v + "\" is not a number in 2..4294967295";
      s.message_size = *n;
    }
  }
  if (help) return std::nullopt;
  if (positional.size() > 1) return "too many arguments: " + std::string(positional[1]) + " (see --help)";
  if (!positional.empty()) s.address = positional[0];
  if (s.transport == "loopback") {
    if (s.listen || !positional.empty()) return "loopback runs both ends here: give neither --listen nor HOST";
    if (!s.send) s.send = "-";
  } else if (!s.listen && positional.empty()) {
    return "give HOST to connect to, or --listen (see --help)";
  }
  return std::nullopt;
}

// ------------------------------------------------------------------------------ files

// The descriptors a side reads and writes; -1 for none.
struct files {
  int in = -1;
  std::uint64_t in_length = unknown_length;  // known for a regular file: progress shows percent
  int out = -1;
};

std::error_code last_error() { return {errno, std::generic_category()}; }

// Opens --send and --output before connecting, so a bad path fails early. Returns an error message.
std::optional<std::string> open_files(const settings& s, files& f) {
  if (s.send) {
    f.in = *s.send == "-" ? STDIN_FILENO : ::open(s.send->c_str(), O_RDONLY | O_CLOEXEC);
    if (f.in < 0) return "open " + *s.send + ": " + last_error().message();
    struct stat st{};
    if (::fstat(f.in, &st) == 0 && S_ISREG(st.st_mode)) {
      const off_t at = ::lseek(f.in, 0, SEEK_CUR);  // stdin may be a file someone already read from
      f.in_length = static_cast<std::uint64_t>(st.st_size - std::max<off_t>(at, 0));
    }
  }
  f.out = s.output == "-" ? STDOUT_FILENO : ::open(s.output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (f.out < 0) return "open " + s.output + ": " + last_error().message();
  return std::nullopt;
}

// read(2) and write(2) run on a thread pool: stdin or a pipe may block as long as its other end
// likes, and the connection's executor must keep serving credits and keepalives meanwhile.
asio::awaitable<std::pair<std::error_code, std::size_t>> blocking_read(int fd, std::span<std::byte> into) {
  for (;;) {
    const ssize_t n = ::read(fd, into.data(), into.size());
    if (n >= 0) co_return std::pair{std::error_code{}, static_cast<std::size_t>(n)};
    if (errno != EINTR) co_return std::pair{last_error(), std::size_t{0}};
  }
}

asio::awaitable<std::error_code> blocking_write(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) co_return last_error();
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  co_return std::error_code{};
}

// ------------------------------------------------------------------------------ control messages

struct control {
  char type = 0;
  std::uint8_t flag = 0;
  std::uint32_t n = 0;
  std::uint64_t a = 0, b = 0;  // HELLO, END, VERDICT
  buffer_descriptor_v1 slot;   // CHUNK, SLOT: in place of a and b
};

bool names_slot(char type) { return type == 'C' || type == 'S'; }

control numbers(char type, std::uint8_t flag, std::uint64_t a, std::uint64_t b) {
  control m;
  m.type = type;
  m.flag = flag;
  m.a = a;
  m.b = b;
  return m;
}

control about_slot(char type, std::uint32_t n, const buffer_descriptor_v1& slot) {
  control m;
  m.type = type;
  m.n = n;
  m.slot = slot;
  return m;
}

std::array<std::byte, control_size> encode(const control& m) {
  using smbdirect::wire::detail::store_le;
  std::array<std::byte, control_size> out{};
  out[0] = static_cast<std::byte>(m.type);
  out[1] = static_cast<std::byte>(m.flag);
  store_le<std::uint32_t>(out, 4, m.n);
  if (names_slot(m.type)) {
    (void)smbdirect::wire::encode(m.slot, std::span(out).subspan(8));  // 16 bytes: always fits
  } else {
    store_le<std::uint64_t>(out, 8, m.a);
    store_le<std::uint64_t>(out, 16, m.b);
  }
  return out;
}

std::optional<control> decode(std::span<const std::byte> in) {
  using smbdirect::wire::detail::load_le;
  if (in.size() != control_size) return std::nullopt;
  control m;
  m.type = static_cast<char>(in[0]);
  m.flag = std::to_integer<std::uint8_t>(in[1]);
  m.n = load_le<std::uint32_t>(in, 4);
  if (names_slot(m.type)) {
    (void)smbdirect::wire::decode(in.subspan(8), m.slot);  // 16 bytes: always fits
  } else {
    m.a = load_le<std::uint64_t>(in, 8);
    m.b = load_le<std::uint64_t>(in, 16);
  }
  return m;
}

std::uint64_t crc64(std::uint64_t crc, std::span<const std::byte> bytes) {
  return crc64_ecma_refl(crc, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

// ------------------------------------------------------------------------------ progress

double seconds_since(clock_type::time_point t) {
  return std::max(1e-9, std::chrono::duration<double>(clock_type::now() - t).count());
}

double megabytes(std::uint64_t bytes) { return static_cast<double>(bytes) / 1e6; }

// One stderr line for the whole process, redrawn at most ten times a second: each direction's
// bytes and rate, with a bar when its length is known.
class progress {
 public:
  struct direction {
    bool active = false;
    std::uint64_t done = 0, total = unknown_length;
    clock_type::time_point last{};  // of the latest bytes: a finished direction's rate stays put
  };
  direction sent, received;

  explicit progress(bool enabled) : enabled_(enabled) {}

  void add(direction& d, std::uint64_t bytes) {
    d.done += bytes;
    d.last = clock_type::now();
    if (enabled_ && d.last - drawn_ >= std::chrono::milliseconds(100)) draw();
  }
  void finish() {
    if (!enabled_ || drawn_ == clock_type::time_point{}) return;
    draw();
    std::fputc('\n', stderr);
  }

 private:
  std::string describe(const char* label, const direction& d) const {
    const double rate = megabytes(d.done) / std::max(1e-9, std::chrono::duration<double>(d.last - start_).count());
    char text[128];
    if (d.total == unknown_length || d.total == 0) {
      std::snprintf(text, sizeof text, "%s %.1f MB %.1f MB/s  ", label, megabytes(d.done), rate);
      return text;
    }
    const auto percent = static_cast<int>(std::min<std::uint64_t>(d.done, d.total) * 100 / d.total);
    const std::string bar = std::string(std::size_t(percent / 5), '#') + std::string(std::size_t(20 - percent / 5), '.');
    std::snprintf(text, sizeof text, "%s [%s] %3d%% %.1f/%.1f MB %.1f MB/s  ", label, bar.c_str(), percent,
                  megabytes(d.done), megabytes(d.total), rate);
    return text;
  }

  void draw() {
    drawn_ = clock_type::now();
    std::string line = "\r";
    if (sent.active) line += describe("sent", sent);
    if (received.active) line += describe("received", received);
    std::fprintf(stderr, "%s\x1b[K", line.c_str());
  }

  bool enabled_;
  clock_type::time_point start_ = clock_type::now(), drawn_{};
};

// ------------------------------------------------------------------------------ one side

// What went wrong, or nothing.
struct outcome {
  std::string what;  // the failed step; empty on success
  std::error_code ec;
  explicit operator bool() const { return !what.empty(); }
};

// One end of a connection after negotiation: sends its stream (if any) while a reader handles
// everything the peer sends. The first failure ends run() at once (a coroutine may be blocked in
// read(2)); the caller then closes. Its coroutines share ownership of it, and after a failure
// touch nothing but its own state.
template <class Connection>
class session : public std::enable_shared_from_this<session<Connection>> {
 public:
  session(Connection& c, std::string who, const settings& s, files f, progress& bar, asio::thread_pool& pool)
      : c_(c), who_(std::move(who)), settings_(s), files_(f), bar_(bar), pool_(pool), changed_(c.get_executor()) {}

  asio::awaitable<outcome> run() {
    const auto& n = c_.negotiated();
    if (how_ == mode::messages && settings_.message_size > n.max_fragmented_send_size)
      co_return failed("--message-size " + std::to_string(settings_.message_size) +
                       " exceeds the peer's MaxFragmentedSize (" + std::to_string(n.max_fragmented_send_size) +
                       " bytes, negotiated)");
    slot_size_ = n.max_read_write_size;
    outgoing_done_ = how_ == mode::none;
    if (auto r = co_await send_control(numbers('H', std::uint8_t(how_), magic, files_.in_length), "send HELLO")) co_return r;
    if (how_ != mode::none) bar_.sent = {true, 0, files_.in_length};
    start_ = clock_type::now();
    spawn(read_messages(this->shared_from_this()));
    if (how_ != mode::none) spawn(send_stream(this->shared_from_this()));
    while (running_ > 0 && !failure_) co_await changed_.wait();
    if (failure_) co_return *failure_;
    co_return outcome{};
  }

  /// After a successful run: one line per stream on stderr.
  void summary() const {
    if (how_ != mode::none) print_stream("sent", how_, sent_, sent_crc_, sent_seconds_);
    if (peer_mode_ != mode::none) print_stream("received", peer_mode_, received_, received_crc_, received_seconds_);
  }

 private:
  outcome failed(std::string what, std::error_code ec = {}) const { return {who_ + what, ec}; }

  template <class Awaitable>
  void spawn(Awaitable work) {
    ++running_;
    auto done = [this, self = this->shared_from_this()](std::exception_ptr thrown, outcome r) {
      if (thrown) r = failed("internal error", make_error_code(smbdirect::errc::internal_error));
      if (r && !failure_) failure_ = r;
      --running_;
      changed_.notify();
    };
    asio::co_spawn(c_.get_executor(), std::move(work), std::move(done));
  }

  buffer_descriptor_v1 slot_of(const smbdirect::registration& window, std::size_t i) const {
    return {window.descriptor.offset + i * slot_size_, window.descriptor.token, slot_size_};
  }

  void print_stream(const char* verb, mode how, std::uint64_t bytes, std::uint64_t crc, double seconds) const {
    std::fprintf(stderr, "smbdcat: %s%s %llu bytes by %s in %.3f s (%.1f MB/s), crc64 %016llx, verified\n", who_.c_str(),
                 verb, (unsigned long long)bytes, mode_names[std::size_t(how)].data(), seconds,
                 megabytes(bytes) / seconds, (unsigned long long)crc);
  }

  asio::awaitable<outcome> send_control(control m, std::string step) {
    const auto bytes = encode(m);
    auto [ec, n] = co_await c_.async_send(asio::buffer(bytes), use_tuple);
    co_return ec ? failed(std::move(step), ec) : outcome{};
  }

  asio::awaitable<outcome> write_output(std::span<const std::byte> bytes) {
    const auto ec = co_await asio::co_spawn(pool_, blocking_write(files_.out, bytes), asio::use_awaitable);
    if (failure_) co_return *failure_;
    if (ec) co_return failed("write " + settings_.output, ec);
    received_ += bytes.size();
    received_crc_ = crc64(received_crc_, bytes);
    bar_.add(bar_.received, bytes.size());
    co_return outcome{};
  }

  // ---------------------------------------------------------------- sending

  // `self` keeps the session alive while this runs.
  asio::awaitable<outcome> send_stream(std::shared_ptr<session> self) {
    const mode how = how_;
    // messages: one message (header + bytes); write: a staging chunk; read: the whole window.
    std::vector<std::byte> buffer(how == mode::messages ? settings_.message_size
                                  : how == mode::write  ? slot_size_
                                                        : window_slots * slot_size_);
    smbdirect::registration window;
    if (how == mode::read) {
      auto [ec, reg] = c_.register_buffer(asio::buffer(buffer), smbdirect::access::remote_read);
      if (ec) co_return failed("register the send window", ec);
      window = reg;
      for (std::size_t i = 0; i < window_slots; ++i) free_slots_.push_back(slot_of(window, i));
    }
    const std::string input = *settings_.send == "-" ? "stdin" : *settings_.send;
    for (;;) {
      while (free_slots_.empty() && !failure_) co_await changed_.wait();
      if (failure_) co_return *failure_;
      const buffer_descriptor_v1 slot = free_slots_.front();
      free_slots_.pop_front();
      std::span<std::byte> space(buffer);
      if (how == mode::messages) {
        space = space.subspan(1);
      } else if (slot.length == 0 || slot.length > slot_size_) {
        co_return failed("the peer's SLOT has a bad length");
      } else if (how == mode::write) {
        space = space.first(slot.length);
      } else if (slot.token != window.descriptor.token || slot.offset < window.descriptor.offset ||
                 slot.offset - window.descriptor.offset > buffer.size() - slot.length) {
        co_return failed("the peer's SLOT names a slot outside the send window");
      } else {
        space = space.subspan(slot.offset - window.descriptor.offset, slot.length);
      }
      auto [rec, n] = co_await asio::co_spawn(pool_, blocking_read(files_.in, space), asio::use_awaitable);
      if (failure_) co_return *failure_;
      if (rec) co_return failed("read " + input, rec);
      if (n == 0) break;
      const auto chunk = space.first(n);
      sent_ += n;
      sent_crc_ = crc64(sent_crc_, chunk);
      if (auto r = co_await send_chunk(how, buffer, chunk, slot)) co_return r;
      bar_.add(bar_.sent, n);
    }
    if (auto r = co_await send_control(numbers('E', 0, sent_, sent_crc_), "send END")) co_return r;
    // The peer may read the window until it has checked the stream.
    while (!outgoing_done_ && !failure_) co_await changed_.wait();
    if (failure_) co_return *failure_;
    // After its VERDICT the peer may disconnect at any moment, and a disconnect revokes the
    // window (invalid_token). The transport can see that before the connection does, so
    // is_connected() may still say true here: invalid_token is the expected end state.
    if (how == mode::read) {
      const auto ec = c_.deregister_buffer(window);
      if (ec && ec != smbdirect::errc::invalid_token) co_return failed("deregister the send window", ec);
    }
    co_return outcome{};
  }

  asio::awaitable<outcome> send_chunk(mode how, std::vector<std::byte>& buffer, std::span<const std::byte> chunk,
                                      buffer_descriptor_v1 slot) {
    if (how == mode::messages) {
      buffer[0] = std::byte{'D'};
      auto [ec, n] = co_await c_.async_send(asio::buffer(buffer.data(), 1 + chunk.size()), use_tuple);
      co_return ec ? failed("send DATA", ec) : outcome{};
    }
    if (how == mode::write) {
      auto [ec, n] = co_await c_.async_rdma_write(asio::buffer(chunk.data(), chunk.size()), std::span(&slot, 1), use_tuple);
      if (ec) co_return failed("RDMA write", ec);
    }
    co_return co_await send_control(about_slot('C', static_cast<std::uint32_t>(chunk.size()), slot), "send CHUNK");
  }

  // ---------------------------------------------------------------- receiving

  // `self` keeps the session alive while this runs.
  asio::awaitable<outcome> read_messages(std::shared_ptr<session> self) {
    std::vector<std::byte> m;
    bool hello = false;
    while (!(hello && incoming_done_ && outgoing_done_)) {
      auto [ec, n] = co_await c_.async_receive(m, use_tuple);
      if (ec) co_return failed(hello ? "receive" : "receive HELLO", ec);
      outcome r;
      if (!hello) {
        r = co_await on_hello(m);
        hello = true;
      } else if (m[0] == std::byte{'D'} && peer_mode_ == mode::messages) {
        r = co_await write_output(std::span(m).subspan(1));
        if (!r) r = co_await grant({});  // room for one more message
      } else if (const auto c = decode(m)) {
        r = co_await on_control(*c);
      } else {
        r = protocol_error(m);
      }
      if (r) co_return r;
    }
    co_return outcome{};
  }

  outcome protocol_error(std::span<const std::byte> m) const {
    char text[96];
    std::snprintf(text, sizeof text, "unexpected message from the peer (type 0x%02x, %zu bytes)",
                  std::to_integer<unsigned>(m.empty() ? std::byte{0} : m[0]), m.size());
    return failed(text);
  }

  asio::awaitable<outcome> on_hello(std::span<const std::byte> m) {
    const auto c = decode(m);
    if (!c || c->type != 'H' || c->a != magic || c->flag >= mode_names.size())
      co_return failed("the peer is not smbdcat (its first message is not a HELLO)");
    peer_mode_ = static_cast<mode>(c->flag);
    incoming_done_ = peer_mode_ == mode::none;
    if (incoming_done_) co_return outcome{};
    if (files_.out < 0) co_return failed("the peer sends a stream, but this side has no --output");
    bar_.received = {true, 0, c->b};
    if (peer_mode_ == mode::write) {
      window_.resize(window_slots * slot_size_);
      auto [ec, reg] = c_.register_buffer(asio::buffer(window_), smbdirect::access::remote_write);
      if (ec) co_return failed("register the receive window", ec);
      registration_ = reg;
    }
    if (peer_mode_ == mode::read) {
      window_.resize(slot_size_);  // where each RDMA read lands; the sender starts with all its slots
      co_return outcome{};
    }
    for (std::size_t i = 0; i < window_slots; ++i) {
      buffer_descriptor_v1 slot;  // messages mode: a credit only
      if (peer_mode_ == mode::write) slot = slot_of(registration_, i);
      if (auto r = co_await grant(slot)) co_return r;
    }
    co_return outcome{};
  }

  asio::awaitable<outcome> grant(buffer_descriptor_v1 slot) {
    co_return co_await send_control(about_slot('S', 0, slot), "send SLOT");
  }

  asio::awaitable<outcome> on_control(control c) {
    const bool sending = !outgoing_done_;
    if (c.type == 'S' && sending) {
      free_slots_.push_back(c.slot);
      changed_.notify();
      co_return outcome{};
    }
    if (c.type == 'V' && sending) {
      outgoing_done_ = true;
      sent_seconds_ = seconds_since(start_);
      changed_.notify();
      if (c.flag != 1 || c.a != sent_ || c.b != sent_crc_)
        co_return failed(verdict_text("the peer received different bytes", sent_, sent_crc_, c.a, c.b));
      co_return outcome{};
    }
    if (c.type == 'C' && (peer_mode_ == mode::write || peer_mode_ == mode::read) && !incoming_done_)
      co_return co_await on_chunk(c);
    if (c.type == 'E' && !incoming_done_) co_return co_await on_end(c);
    const auto bytes = encode(c);
    co_return protocol_error(bytes);
  }

  static std::string verdict_text(const char* what, std::uint64_t sent, std::uint64_t sent_crc, std::uint64_t got,
                                  std::uint64_t got_crc) {
    char text[192];
    std::snprintf(text, sizeof text, "%s: sent %llu bytes with crc64 %016llx, received %llu bytes with crc64 %016llx", what,
                  (unsigned long long)sent, (unsigned long long)sent_crc, (unsigned long long)got,
                  (unsigned long long)got_crc);
    return text;
  }

  asio::awaitable<outcome> on_chunk(control c) {
    if (c.n == 0 || c.n > c.slot.length || c.slot.length > slot_size_)
      co_return failed("the peer's CHUNK does not fit its slot");
    if (peer_mode_ == mode::write) {
      const std::uint64_t at = c.slot.offset - registration_.descriptor.offset;
      if (c.slot.token != registration_.descriptor.token || c.slot.offset < registration_.descriptor.offset ||
          at > window_.size() - c.n)
        co_return failed("the peer's CHUNK names a slot outside the receive window");
      if (auto r = co_await write_output(std::span(window_).subspan(at, c.n))) co_return r;
      co_return co_await grant(c.slot);  // only now may the peer write this slot again
    }
    const auto into = asio::buffer(window_.data(), c.n);
    auto [ec, n] = co_await c_.async_rdma_read(into, std::span(&c.slot, 1), use_tuple);
    if (ec) co_return failed("RDMA read", ec);
    if (auto r = co_await grant(c.slot)) co_return r;  // the bytes are here: the peer may refill the slot
    co_return co_await write_output(std::span(window_).first(c.n));
  }

  asio::awaitable<outcome> on_end(control c) {
    incoming_done_ = true;
    received_seconds_ = seconds_since(start_);
    if (peer_mode_ == mode::write) {
      if (auto ec = c_.deregister_buffer(registration_)) co_return failed("deregister the receive window", ec);
    }
    const bool match = c.a == received_ && c.b == received_crc_;
    const control verdict = numbers('V', std::uint8_t(match), received_, received_crc_);
    if (auto r = co_await send_control(verdict, "send VERDICT")) co_return r;
    if (!match) co_return failed(verdict_text("checksum mismatch", c.a, c.b, received_, received_crc_));
    co_return outcome{};
  }

  Connection& c_;
  std::string who_;  // "client: " or "server: " when both ends run here
  const settings& settings_;
  files files_;
  mode how_ = files_.in < 0 ? mode::none : settings_.how;  // how our stream travels
  progress& bar_;
  asio::thread_pool& pool_;
  smbdirect::detail::async_event changed_;  // a slot came back, a coroutine ended, or a failure
  std::uint32_t slot_size_ = 0;
  clock_type::time_point start_;

  int running_ = 0;
  std::optional<outcome> failure_;

  // Our stream.
  bool outgoing_done_ = false;  // the peer's VERDICT arrived (or we send nothing)
  std::deque<buffer_descriptor_v1> free_slots_;
  std::uint64_t sent_ = 0, sent_crc_ = 0;
  double sent_seconds_ = 0;  // until the VERDICT

  // The peer's stream.
  mode peer_mode_ = mode::none;
  bool incoming_done_ = false;    // its END arrived (or it sends nothing)
  std::vector<std::byte> window_;  // write: our registered window; read: where RDMA reads land
  smbdirect::registration registration_;
  std::uint64_t received_ = 0, received_crc_ = 0;
  double received_seconds_ = 0;  // until the END
};

// ------------------------------------------------------------------------------ connections

void report(const outcome& r) {
  if (r.ec)
    std::fprintf(stderr, "smbdcat: %s: %s\n", r.what.c_str(), r.ec.message().c_str());
  else
    std::fprintf(stderr, "smbdcat: %s\n", r.what.c_str());
}

// Runs one side, then closes its connection at once, also after a failure: the peer, which may be
// waiting for a message, sees the disconnect (SMB Direct has no close message, so the peer may
// also have disconnected first).
template <class Connection>
asio::awaitable<outcome> run_side(std::shared_ptr<session<Connection>> side, Connection& c, std::string who) {
  outcome result = co_await side->run();
  auto [ec] = co_await c.async_close(use_tuple);
  if (!result && ec && ec != smbdirect::errc::peer_disconnected) result = {who + "close", ec};
  co_return result;
}

template <class Connection>
asio::awaitable<outcome> negotiate(Connection& c, std::string who, bool active) {
  if (active) {
    auto [ec] = co_await c.async_connect(use_tuple);
    co_return ec ? outcome{who + "SMB Direct negotiation (as client)", ec} : outcome{};
  }
  auto [ec] = co_await c.async_accept(use_tuple);
  co_return ec ? outcome{who + "SMB Direct negotiation (as server)", ec} : outcome{};
}

// One end over tcp or verbs, once the transport connection exists.
template <class QueuePair>
asio::awaitable<int> converse(QueuePair qp, const settings& s, files f, asio::thread_pool& pool) {
  smbdirect::connection<QueuePair> c(std::move(qp), s.params());
  progress bar(!s.quiet && ::isatty(STDERR_FILENO));
  outcome r = co_await negotiate(c, "", !s.listen);
  if (!r) {
    auto side = std::make_shared<session<smbdirect::connection<QueuePair>>>(c, "", s, f, bar, pool);
    r = co_await run_side(side, c, "");
    bar.finish();
    if (!r && !s.quiet) side->summary();
  }
  if (r) report(r);
  co_return r ? 1 : 0;
}

std::string where(const settings& s) {
  return (s.address.empty() ? std::string("every address") : s.address) + " port " +
         (s.port ? std::to_string(s.port) : std::string("0 (default)")) + " over " + s.transport;
}

template <class Listener, class Options>
asio::awaitable<int> serve(const settings& s, Options o, files f, asio::thread_pool& pool) {
  auto [lec, listener] = co_await Listener::open(co_await asio::this_coro::executor, s.address, s.port, o);
  if (lec) {
    report({"listen on " + where(s), lec});
    co_return 1;
  }
  if (!s.quiet)
    std::fprintf(stderr, "smbdcat: listening on %s port %u over %s\n",
                 s.address.empty() ? "every address" : s.address.c_str(), unsigned(listener->port()), s.transport.c_str());
  auto [aec, qp] = co_await listener->accept();
  if (aec) {
    report({"accept on " + where(s), aec});
    co_return 1;
  }
  listener.reset();  // one connection only
  co_return co_await converse(std::move(qp), s, f, pool);
}

template <auto Connect, class Options>
asio::awaitable<int> dial(const settings& s, Options o, files f, asio::thread_pool& pool) {
  auto [ec, qp] = co_await Connect(co_await asio::this_coro::executor, s.address, s.port, o);
  if (ec) {
    report({"connect to " + where(s), ec});
    co_return 1;
  }
  co_return co_await converse(std::move(qp), s, f, pool);
}

// Both ends here: the client sends --send, the server writes --output.
asio::awaitable<int> run_loopback(const settings& s, files f, asio::thread_pool& pool) {
  using connection = smbdirect::connection<smbdirect::loopback::endpoint>;
  auto ex = co_await asio::this_coro::executor;
  auto [a, b] = smbdirect::loopback::make_pair(ex, ex);
  connection client(std::move(a), s.params()), server(std::move(b), s.params());
  progress bar(!s.quiet && ::isatty(STDERR_FILENO));
  // Accept first: it posts the server's first receive, which the Negotiate Request needs.
  auto [accepted, connected] = co_await (negotiate(server, "server: ", false) && negotiate(client, "client: ", true));
  outcome rc = connected, rs = accepted;
  if (!rc && !rs) {
    const files client_files{f.in, f.in_length, -1}, server_files{-1, unknown_length, f.out};
    auto sender = std::make_shared<session<connection>>(client, "client: ", s, client_files, bar, pool);
    auto receiver = std::make_shared<session<connection>>(server, "server: ", s, server_files, bar, pool);
    std::tie(rc, rs) = co_await (run_side(sender, client, "client: ") && run_side(receiver, server, "server: "));
    bar.finish();
    if (!rc && !rs && !s.quiet) {
      sender->summary();
      receiver->summary();
    }
  }
  if (rc) report(rc);
  if (rs) report(rs);
  co_return rc || rs ? 1 : 0;
}

asio::awaitable<int> run(const settings& s, files f, asio::thread_pool& pool) {
  namespace tcp = smbdirect::tcp;
  namespace verbs = smbdirect::verbs;
  if (s.transport == "loopback") co_return co_await run_loopback(s, f, pool);
  if (s.transport == "tcp" && s.listen) co_return co_await serve<tcp::listener>(s, tcp::options{}, f, pool);
  if (s.transport == "tcp") co_return co_await dial<&tcp::connect>(s, tcp::options{}, f, pool);
  const auto o = verbs::options::for_parameters(s.params());
  if (s.listen) co_return co_await serve<verbs::listener>(s, o, f, pool);
  using connect_with_options = asio::awaitable<std::pair<std::error_code, verbs::queue_pair>> (*)(
      asio::any_io_executor, std::string, std::uint16_t, verbs::options);
  co_return co_await dial<static_cast<connect_with_options>(&verbs::connect)>(s, o, f, pool);
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  bool help = false;
  if (auto problem = parse_args(argc, argv, s, help)) {
    std::fprintf(stderr, "smbdcat: %s\n", problem->c_str());
    return 2;
  }
  if (help) {
    print_usage();
    return 0;
  }
  files f;
  if (auto problem = open_files(s, f)) {
    std::fprintf(stderr, "smbdcat: %s\n", problem->c_str());
    return 1;
  }
  asio::io_context io;
  asio::thread_pool pool(2);  // one read and one write may block at once
  int status = 1;
  asio::co_spawn(io, run(s, f, pool), [&](std::exception_ptr thrown, int result) {
    if (thrown) std::fprintf(stderr, "smbdcat: internal error: unexpected exception\n");
    status = thrown ? 1 : result;
    if (status != 0) io.stop();  // a failed side may still wait on a blocked read
  });
  io.run();  // on success it drains: the TCP transport lingers until the peer has read everything
  // After a failure a pool thread may still be blocked reading stdin: leave without joining it.
  if (status != 0) std::_Exit(status);
  return 0;
}
