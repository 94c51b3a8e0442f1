# A throwaway Samba smbd on 127.0.0.1, for tests that talk SMB2 to a real server. Source it:
#   source tests/stream/smbd_fixture.sh
#   start_smbd "$work/smbd"     # exports SMBD_PORT and SMBD_PID, or returns 1 with the reason
#   trap stop_smbd EXIT          # (or call stop_smbd yourself)
# The configuration is a standalone server with no shares at all (not even [homes] or printers),
# no guest mapping and no anonymous access: a client can negotiate and try to authenticate,
# nothing more. Every directory, tdb, pid file and log lives under DIR; nothing in /var or /etc
# is read or written (the system smb.conf is never loaded). Needs root, as smbd does.
# SMBD_FIXTURE_TIMEOUT: seconds to wait for the port to listen (default 20).
# SMBD_EXTRA_CONF: more [global] lines, e.g. "server max protocol = SMB3_02".
# SMBD_BIN: the smbd to run (default: smbd from PATH, else /usr/sbin/smbd).

_smbd_fixture_fail() { echo "smbd_fixture: $*" >&2; }  # prints only: callers return 1 themselves

# start_smbd DIR: writes DIR/smb.conf, starts smbd in the background, waits until it listens.
start_smbd() {
  local dir=${1:?usage: start_smbd DIR}
  local smbd_bin=${SMBD_BIN:-}
  if [[ -z $smbd_bin ]]; then
    smbd_bin=$(command -v smbd) || smbd_bin=/usr/sbin/smbd  # /usr/sbin is not always in PATH
  fi
  [[ -x $smbd_bin ]] || { _smbd_fixture_fail "smbd not found at $smbd_bin (apt-get install samba)"; return 1; }
  mkdir -p "$dir" && dir=$(cd "$dir" && pwd) || { _smbd_fixture_fail "cannot create $dir"; return 1; }
  # smbd's unix sockets live under DIR; a longer path exceeds sun_path (108 bytes) and smbd exits
  # without saying why (Bazel's TEST_TMPDIR is that long).
  ((${#dir} <= 70)) || { _smbd_fixture_fail "$dir: over 70 bytes, too long for smbd's socket paths (use /tmp)"; return 1; }
  local d
  for d in private lock state cache pid ncalrpc bind-dns usershares; do mkdir -p "$dir/$d"; done
  chmod 0700 "$dir/private"

  # A random port nothing listens on, below the kernel's ephemeral range (no closing
  # connection's local end can hold it); if another process takes it first, smbd's log says so.
  local port="" p _ ephemeral_low
  ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$ephemeral_low" -gt 21000 ] || ephemeral_low=60000  # a low range: nothing to avoid
  for _ in {1..100}; do
    p=$((20000 + RANDOM % (ephemeral_low - 20000)))
    if command -v ss >/dev/null; then
      [[ -z $(ss -Hltn "sport = :$p") ]] && { port=$p; break; }
    else
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { port=$p; break; }
    fi
  done
  [[ -n $port ]] || { _smbd_fixture_fail "no free TCP port found"; return 1; }

  cat >"$dir/smb.conf" <<EOF
[global]
  server role = standalone server
  workgroup = SMBDTEST
  netbios name = SMBDTEST
  smb ports = $port
  interfaces = 127.0.0.1
  bind interfaces only = yes
  disable netbios = yes
  map to guest = never
  restrict anonymous = 2
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  usershare path = $dir/usershares
  usershare max shares = 0
  passdb backend = tdbsam:$dir/private/passdb.tdb
  private dir = $dir/private
  binddns dir = $dir/bind-dns
  lock directory = $dir/lock
  state directory = $dir/state
  cache directory = $dir/cache
  pid directory = $dir/pid
  ncalrpc dir = $dir/ncalrpc
  log file = $dir/log.%m
  max log size = 0
  log level = 1
${SMBD_EXTRA_CONF:-}
EOF

  # Not --no-process-group: when it shuts down, smbd SIGTERMs its whole process group, which would
  # then be this shell's and the test runner's. Without it, smbd --foreground calls setsid().
  : >"$dir/smbd.log"
  "$smbd_bin" --foreground --configfile="$dir/smb.conf" --debug-stdout \
    </dev/null >>"$dir/smbd.log" 2>&1 &
  SMBD_PID=$!
  SMBD_PORT=$port
  SMBD_DIR=$dir
  export SMBD_PID SMBD_PORT SMBD_DIR

  local deadline=$((SECONDS + ${SMBD_FIXTURE_TIMEOUT:-20}))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$SMBD_PID" 2>/dev/null; then
      _smbd_fixture_fail "smbd exited before listening on 127.0.0.1:$port; log tail:"
      tail -n 30 "$dir/smbd.log" | sed 's/^/  | /' >&2
      wait "$SMBD_PID" 2>/dev/null || true
      unset SMBD_PID SMBD_PORT
      return 1
    fi
    if command -v ss >/dev/null; then
      [[ -n $(ss -Hltn "sport = :$port") ]] && return 0
    else
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    fi
    sleep 0.1
  done
  _smbd_fixture_fail "smbd (pid $SMBD_PID) not listening on 127.0.0.1:$port after ${SMBD_FIXTURE_TIMEOUT:-20} s; log tail:"
  tail -n 30 "$dir/smbd.log" | sed 's/^/  | /' >&2
  stop_smbd
  return 1
}

# stop_smbd: SIGTERM to smbd and its per-connection children, SIGKILL after 5 s; waits for it.
# Safe to call twice or when start_smbd failed.
stop_smbd() {
  [[ -n ${SMBD_PID:-} ]] || return 0
  local children _
  children=$(ps -o pid= --ppid "$SMBD_PID" 2>/dev/null | tr -s ' \n' ' ') || true
  kill -TERM "$SMBD_PID" $children 2>/dev/null || true
  for _ in {1..50}; do
    kill -0 "$SMBD_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SMBD_PID" 2>/dev/null; then
    echo "smbd_fixture: smbd (pid $SMBD_PID) ignored SIGTERM for 5 s; sending SIGKILL" >&2
    kill -KILL "$SMBD_PID" $children 2>/dev/null || true
  fi
  wait "$SMBD_PID" 2>/dev/null || true
  unset SMBD_PID SMBD_PORT
  return 0
}
