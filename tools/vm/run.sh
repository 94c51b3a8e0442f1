#!/usr/bin/env bash
# Boots a throw-away QEMU VM running Debian's own kernel with soft-RoCE (rdma_rxe) and
# soft-iWARP (siw, built out of tree from linux-source for that exact kernel) and runs a guest
# script once per RDMA device. See tools/vm/README.md.
set -euo pipefail
# (With pipefail, no reader in a pipeline may stop early — grep -m1, awk exit, head — or the
# writer's SIGPIPE fails the script.)

usage() {
  cat <<'EOF'
Usage: tools/vm/run.sh [--cache DIR] [--timeout SECONDS] [--devices "rxe siw"] [--bin FILE]...
                       [--file FILE]... [--log FILE] [--mem MIB] [--guest-timeout SECONDS]
                       [--output-dir DIR] --guest-script FILE

Boots a QEMU VM (software emulation, no KVM) with Debian's kernel, rdma_rxe and siw, and runs
FILE with busybox sh once per device (rxe0, then siw0), under a time limit.

  --guest-script FILE   script to run in the guest (required)
  --bin FILE            copy FILE to /opt/smbdirect/bin/ with the shared libraries it needs
                        (repeatable)
  --file FILE           copy FILE (or a directory) to /opt/smbdirect/files/ (repeatable)
  --devices LIST        RDMA devices to test, in order (default "rxe siw")
  --timeout SECONDS     limit for the whole VM run, boot included (default 300)
  --guest-timeout SECS  limit for one run of the guest script (default: what --timeout leaves
                        after boot, shared among the devices)
  --cache DIR           download/build cache (default
                        ${SMBDIRECT_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smbdirect-vm})
  --log FILE            where to save the serial console log (default: DIR/logs/...)
  --output-dir DIR      copy what the guest script left in $SMBDIRECT_OUTPUT to DIR (through
                        a virtio disk holding a tar archive, at most 256 MiB)
  --mem MIB             guest memory (default: 1024, more for large binaries)
  -h, --help            this text

The guest script gets: RDMA_DEVICE (rxe0|siw0), RDMA_KIND (rxe|siw), RDMA_NETDEV (eth0),
RDMA_ADDR (10.0.2.15), RDMA_ADDR6 (fd00::15), RDMA_GID_INDEX (IPv4 RoCEv2 GID for rxe, 0 for
siw), RDMA_GID_INDEX6, RDMA_PERFTEST_FLAGS ("-x <gid>" for rxe, "-R" for siw),
SMBDIRECT_FILES=/opt/smbdirect/files, SMBDIRECT_OUTPUT (a folder; see --output-dir), PATH
with /opt/smbdirect/bin first. busybox sh runs its own applets (ip, timeout, ...) before PATH:
name other programs by path (/usr/bin/ip).
Exit status: 0 only if the guest script returned 0 for every device.
Environment: SMBDIRECT_VM_KERNEL=<abi, e.g. 6.1.0-56-amd64> pins the kernel.
EOF
}

die() { echo "vm: error: $*" >&2; exit 2; }
say() { echo "vm: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Arguments
cache="${SMBDIRECT_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smbdirect-vm}"
timeout_s=300
devices="rxe siw"
guest_script=""
guest_timeout=""
log_file=""
mem=""
output_dir=""
bins=()
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --cache) cache="${2:?--cache needs a directory}"; shift 2 ;;
    --timeout) timeout_s="${2:?--timeout needs seconds}"; shift 2 ;;
    --guest-timeout) guest_timeout="${2:?--guest-timeout needs seconds}"; shift 2 ;;
    --devices) devices="${2?--devices needs a list}"; shift 2 ;;
    --bin) bins+=("${2:?--bin needs a file}"); shift 2 ;;
    --file) files+=("${2:?--file needs a file}"); shift 2 ;;
    --guest-script) guest_script="${2:?--guest-script needs a file}"; shift 2 ;;
    --log) log_file="${2:?--log needs a file}"; shift 2 ;;
    --mem) mem="${2:?--mem needs MiB}"; shift 2 ;;
    --output-dir) output_dir="${2:?--output-dir needs a folder}"; shift 2 ;;
    --cache=*|--timeout=*|--guest-timeout=*|--devices=*|--bin=*|--file=*|--guest-script=*|--log=*|--mem=*|--output-dir=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$guest_script" ] || { usage >&2; die "--guest-script is required"; }
[ -f "$guest_script" ] || die "guest script not found: $guest_script"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[ -z "$guest_timeout" ] || [[ "$guest_timeout" =~ ^[0-9]+$ ]] || die "--guest-timeout must be a number"
[ -z "$mem" ] || [[ "$mem" =~ ^[0-9]+$ ]] || die "--mem must be a number of MiB"
read -r -a device_list <<<"$devices"
[ ${#device_list[@]} -gt 0 ] || die "--devices is empty"
for d in "${device_list[@]}"; do
  case "$d" in rxe|siw) ;; *) die "unknown device kind '$d' (known: rxe siw)" ;; esac
done
for f in "${bins[@]+"${bins[@]}"}"; do [ -f "$f" ] || die "--bin: no such file: $f"; done
for f in "${files[@]+"${files[@]}"}"; do [ -e "$f" ] || die "--file: no such file: $f"; done

start_time=$SECONDS
elapsed() { echo "$((SECONDS - start_time)) s"; }

# ---------------------------------------------------------------------------------------------
# Host packages: install only what is missing; 'apt-get update' only when installing.
host_pkgs=(qemu-system-x86 qemu-system-data ibverbs-utils ibverbs-providers rdmacm-utils perftest
  iproute2 gcc-12 make xz-utils libelf1 util-linux coreutils dpkg apt)
apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  say "running apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  apt_updated=1
}
missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing packages (run as root to install them): ${missing[*]}"
  say "installing: ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || die "apt-get install ${missing[*]} failed"
fi
for t in qemu-system-x86_64 apt-get apt-cache dpkg-deb dpkg-query ldd make gcc-12 xz flock timeout \
         sha256sum strip tar ibv_devinfo rdma rping ib_send_bw; do
  command -v "$t" >/dev/null || die "required tool not found: $t"
done
qboot=/usr/share/qemu/qboot.rom
[ -f "$qboot" ] || die "$qboot not found (package qemu-system-data)"

# apt-get download as root warns that the _apt sandbox user cannot write the folder: use root.
apt_dl_opts=()
[ "$(id -u)" -eq 0 ] && apt_dl_opts=(-o APT::Sandbox::User=root)
# apt_download DIR PKG[=VER]...: downloads .debs into DIR, retrying once after 'apt-get update'.
apt_download() {
  local dir="$1"; shift
  say "downloading $*"
  if ! (cd "$dir" && apt-get download -qq "${apt_dl_opts[@]}" "$@" >/dev/null 2>&1); then
    apt_update
    (cd "$dir" && apt-get download -qq "${apt_dl_opts[@]}" "$@" >&2) || die "apt-get download $* failed"
  fi
}
# apt_query CMD...: runs an apt-cache query; empty output means 'apt-get update' first.
apt_query() {
  local out
  out=$("$@" 2>/dev/null || true)
  if [ -z "$out" ] && [ "$apt_updated" = 0 ] && [ "$(id -u)" -eq 0 ]; then
    apt_update; out=$("$@" 2>/dev/null || true)
  fi
  printf '%s\n' "$out"
}
candidate_version() {  # PKG -> candidate version
  apt_query apt-cache policy "$1" | awk '/Candidate:/ && !f { print $2; f = 1 }'
}

mkdir -p "$cache" || die "cannot create cache folder $cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/.lock"
flock 9  # one builder at a time per cache; released before booting

work=$(mktemp -d "$cache/tmp.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# busybox (static): the host's busybox-static if installed, else downloaded into the cache.
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" \
    && [ -x /bin/busybox ]; then
  busybox=/bin/busybox
  bb_version=$(dpkg-query -W -f='${Version}' busybox-static)
else
  bb_version=$(candidate_version busybox-static)
  [ -n "$bb_version" ] && [ "$bb_version" != "(none)" ] || die "no busybox-static package found"
  bb_dir="$cache/busybox/${bb_version//[:\/]/_}"
  if [ ! -x "$bb_dir/bin/busybox" ]; then
    rm -rf "$bb_dir.tmp"; mkdir -p "$bb_dir.tmp"
    apt_download "$bb_dir.tmp" "busybox-static=$bb_version"
    dpkg-deb -x "$bb_dir.tmp"/busybox-static_*.deb "$bb_dir.tmp/root"
    mkdir -p "$bb_dir/bin"
    cp "$bb_dir.tmp/root/bin/busybox" "$bb_dir/bin/busybox"
    rm -rf "$bb_dir.tmp"
  fi
  busybox="$bb_dir/bin/busybox"
fi
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is not statically linked (need busybox-static)"; fi

# ---------------------------------------------------------------------------------------------
# Kernel: the ABI linux-image-amd64 depends on, plus modules built for it from linux-source:
# siw.ko (Debian does not ship it) and SMB Direct builds of ksmbd.ko and cifs.ko (Debian ships
# both without it), which replace Debian's. Cached per version.
KERNEL_FORMAT=2
# The last line: ciphers and hashes ksmbd and cifs ask the kernel for by name when they need them
# (SMB 3.1.1's preauth hash, signing, encryption); nothing lists them as dependencies.
want_modules="virtio_pci virtio_net virtio_blk crc32_generic crc32c_generic crc32_pclmul crc32c_intel
  ib_core ib_uverbs ib_umad rdma_ucm rdma_rxe siw ksmbd cifs
  sha512_generic cmac ccm gcm ctr ecb ghash_generic"

kabi="${SMBDIRECT_VM_KERNEL:-}"
if [ -z "$kabi" ]; then
  kabi=$(apt_query apt-cache depends linux-image-amd64 |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !f { sub(/^linux-image-/, "", $2); print $2; f = 1 }')
fi
hver=""
[ -n "$kabi" ] && hver=$(candidate_version "linux-headers-$kabi")
if [ -z "$kabi" ] || [ -z "$hver" ] || [ "$hver" = "(none)" ]; then
  # No package lists (offline?): fall back to the newest kernel already in the cache.
  last=$(ls -1d "$cache/kernel-v$KERNEL_FORMAT"/*/.complete 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$last" ] || die "cannot find the kernel version from 'apt-cache depends linux-image-amd64'"
  kdir=$(dirname "$last")
  say "warning: apt gives no kernel version; using the cached $(basename "$kdir")"
else
  kdir="$cache/kernel-v$KERNEL_FORMAT/${kabi}_${hver//[:\/]/_}"
fi

build_kernel() {
  local b="$work/kernel" src_ver deps common kbuild kseries srcpkg srctar hdr
  mkdir -p "$b/debs" "$b/root"
  deps=$(apt_query apt-cache depends "linux-headers-$kabi")
  common=$(awk '$1 == "Depends:" && $2 ~ /^linux-headers-.*-common$/ { print $2; exit }' <<<"$deps")
  kbuild=$(awk '$1 == "Depends:" && $2 ~ /^linux-kbuild-/ { print $2; exit }' <<<"$deps")
  [ -n "$common" ] && [ -n "$kbuild" ] || die "cannot read the dependencies of linux-headers-$kabi"
  apt_download "$b/debs" "linux-image-$kabi=$(candidate_version "linux-image-$kabi")" \
    "linux-headers-$kabi=$hver" "$common=$hver" "$kbuild"
  say "unpacking the kernel packages"
  for d in "$b"/debs/*.deb; do dpkg-deb -x "$d" "$b/root"; done

  # siw's source, from linux-source-<series> of exactly the headers' version.
  kseries=$(awk -F. '{ print $1 "." $2 }' <<<"$kabi")
  srcpkg="linux-source-$kseries"
  src_ver=$(dpkg-query -W -f='${Version}' "$srcpkg" 2>/dev/null || true)
  if [ "$src_ver" = "$hver" ] && [ -f "/usr/src/$srcpkg.tar.xz" ]; then
    srctar="/usr/src/$srcpkg.tar.xz"
  else
    apt_download "$b/debs" "$srcpkg=$hver"
    say "unpacking $srcpkg"
    dpkg-deb --fsys-tarfile "$b"/debs/"${srcpkg}"_*.deb |
      tar -x -C "$b" --strip-components=3 "./usr/src/$srcpkg.tar.xz"
    srctar="$b/$srcpkg.tar.xz"
  fi
  # One pass over the tarball (xz cannot seek): siw, the SMB client and server, the one VFS
  # header ksmbd includes, and the ASN.1 compiler the SMB modules need (linux-kbuild lacks it).
  say "extracting siw, fs/smb and scripts/asn1_compiler.c from $srctar"
  tar -xJf "$srctar" -C "$b" "$srcpkg/drivers/infiniband/sw/siw" "$srcpkg/fs/smb" \
    "$srcpkg/fs/internal.h" "$srcpkg/scripts/asn1_compiler.c" "$srcpkg/include/linux/asn1.h" \
    "$srcpkg/include/linux/asn1_ber_bytecode.h"
  local s="$b/$srcpkg" a
  gcc-12 -O2 -I"$s/include" -o "$b/asn1_compiler" "$s/scripts/asn1_compiler.c" ||
    die "building the ASN.1 compiler failed"
  for a in "$s"/fs/smb/client/*.asn1 "$s"/fs/smb/server/*.asn1; do
    "$b/asn1_compiler" "$a" "${a%.asn1}.asn1.c" "${a%.asn1}.asn1.h" || die "asn1_compiler $a failed"
  done

  # Pitfall: the headers' Makefile includes the -common one by absolute path.
  hdr="$b/root/usr/src/linux-headers-$kabi"
  [ -f "$hdr/Makefile" ] || die "linux-headers-$kabi has no Makefile"
  sed -i "s|^include /usr/src/|include $b/root/usr/src/|" "$hdr/Makefile"
  # build_module NAME DIR MAKE-ARGS...: options the kernel's config lacks are set for make
  # (object lists) and for the compiler (#ifdef) alike.
  build_module() {
    local name="$1" dir="$2"; shift 2
    say "building $name.ko"
    make -s -C "$hdr" M="$dir" -j"$(nproc)" "$@" modules >"$b/$name-build.log" 2>&1 ||
      { cat "$b/$name-build.log" >&2; die "building $name.ko failed"; }
    strip --strip-debug "$dir/$name.ko"
  }
  build_module siw "$s/drivers/infiniband/sw/siw" CONFIG_RDMA_SIW=m
  build_module ksmbd "$s/fs/smb/server" CONFIG_SMB_SERVER=m CONFIG_SMB_SERVER_SMBDIRECT=y \
    KCFLAGS=-DCONFIG_SMB_SERVER_SMBDIRECT=1
  build_module cifs "$s/fs/smb/client" CONFIG_CIFS=m CONFIG_CIFS_SMB_DIRECT=y \
    KCFLAGS=-DCONFIG_CIFS_SMB_DIRECT=1

  # The modules we want and everything they depend on, with a modules.dep made by busybox.
  local moddir="$b/root/lib/modules/$kabi" stage="$b/stage" list
  mkdir -p "$moddir/extra"
  cp "$s/drivers/infiniband/sw/siw/siw.ko" "$moddir/extra/siw.ko"
  cp "$s/fs/smb/server/ksmbd.ko" "$moddir/kernel/fs/smb/server/ksmbd.ko"
  cp "$s/fs/smb/client/cifs.ko" "$moddir/kernel/fs/smb/client/cifs.ko"
  "$busybox" depmod -b "$b/root" "$kabi" || die "depmod failed"
  # shellcheck disable=SC2086
  list=$(awk -v want="$(echo $want_modules)" '
    BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) W[w[i]] = 1 }
    { key = $1; sub(/:$/, "", key); b = key; sub(/.*\//, "", b); sub(/\.ko.*$/, "", b); gsub(/-/, "_", b)
      if (b in W) { print key; for (i = 2; i <= NF; i++) print $i; found[b] = 1 } }
    END { for (k in W) if (!(k in found)) { print "missing module: " k > "/dev/stderr"; bad = 1 }
          exit bad }' "$moddir/modules.dep") || die "kernel $kabi lacks some modules"
  mkdir -p "$stage/usr/lib/modules/$kabi"
  ln -s usr/lib "$stage/lib"
  for m in $(sort -u <<<"$list"); do
    mkdir -p "$stage/usr/lib/modules/$kabi/$(dirname "$m")"
    cp "$moddir/$m" "$stage/usr/lib/modules/$kabi/$m"
  done
  cp "$moddir/modules.builtin" "$moddir/modules.order" "$stage/usr/lib/modules/$kabi/"
  "$busybox" depmod -b "$stage" "$kabi" || die "depmod failed"
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) |
    gzip -6 >"$b/modules.cpio.gz"

  local out="$kdir.tmp"
  rm -rf "$out"; mkdir -p "$out"
  cp "$b/root/boot/vmlinuz-$kabi" "$out/vmlinuz"
  cp "$b/root/boot/config-$kabi" "$out/"
  cp "$b/modules.cpio.gz" "$out/"
  echo "$kabi" >"$out/abi"
  touch "$out/.complete"
  rm -rf "$kdir"; mv "$out" "$kdir"
  rm -rf "$b"
}

if [ -f "$kdir/.complete" ]; then
  kabi=$(cat "$kdir/abi")
  say "kernel $kabi (cached)"
else
  say "kernel $kabi ($hver): not cached, building"
  build_kernel
  say "kernel $kabi ready ($(elapsed))"
fi

# ---------------------------------------------------------------------------------------------
# Helpers to copy binaries with their libraries into a staging tree (merged-/usr layout).
make_skeleton() {  # DIR
  mkdir -p "$1"/usr/bin "$1"/usr/sbin "$1"/usr/lib "$1"/usr/lib64
  ln -sfn usr/bin "$1/bin"; ln -sfn usr/sbin "$1/sbin"
  ln -sfn usr/lib "$1/lib"; ln -sfn usr/lib64 "$1/lib64"
}
# copy_lib STAGE LIB [PRIVATE_DIR]: system libraries go to the same path; others to PRIVATE_DIR.
copy_lib() {
  local stage="$1" lib="$2" priv="${3:-}" dest
  case "$lib" in
    /lib/*|/lib64/*|/usr/lib/*|/usr/lib64/*) dest="$stage$lib" ;;
    *) [ -n "$priv" ] || die "library outside the system folders: $lib"; dest="$stage$priv/$(basename "$lib")" ;;
  esac
  [ -e "$dest" ] && return 0
  mkdir -p "$(dirname "$dest")"
  cp -L "$lib" "$dest"
}
# copy_libs_of STAGE FILE [PRIVATE_DIR]: copies the shared libraries FILE needs, the dynamic
# loader included (ldd lists it by absolute path). Nothing for static or non-ELF files.
copy_libs_of() {
  local out l
  out=$(LC_ALL=C ldd "$2" 2>&1) || return 0
  if grep -q "not found" <<<"$out"; then
    die "$2 needs libraries that are not found:"$'\n'"$(grep "not found" <<<"$out")"
  fi
  for l in $(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"); do
    copy_lib "$1" "$l" "${3:-}"
  done
}

# ---------------------------------------------------------------------------------------------
# Base userland: busybox, rdma-core tools, libraries and provider plugins. Cached per versions.
BASE_FORMAT=1
base_tools=(ibv_devinfo ibv_devices ibv_rc_pingpong ibv_ud_pingpong ibv_srq_pingpong rping
  ucmatose udaddy rdma_server rdma_client ib_send_bw ib_write_bw ib_read_bw ib_send_lat
  ib_write_lat ib_read_lat rdma ip)
base_pkgs=(libibverbs1 librdmacm1 ibverbs-providers ibverbs-utils rdmacm-utils perftest iproute2
  libc6 libstdc++6 libgcc-s1)
base_key=$( { echo "$BASE_FORMAT $bb_version ${base_tools[*]}"; for p in "${base_pkgs[@]}"; do
    echo "$p $(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)"; done; } |
  sha256sum | cut -c1-16)
base="$cache/base-$base_key.cpio.gz"
if [ ! -f "$base" ]; then
  say "building the base initramfs (busybox, rdma-core, perftest)"
  s="$work/base"
  make_skeleton "$s"
  cp "$busybox" "$s/usr/bin/busybox"
  for t in "${base_tools[@]}"; do
    p=$(command -v "$t") || die "$t not found"
    cp -L "$p" "$s/usr/bin/$t"
    copy_libs_of "$s" "$p"
  done
  provdir=$(dirname "$(dpkg -L ibverbs-providers | awk '/\/libibverbs\/lib.*\.so$/ && !f { print; f = 1 }')")
  [ -d "$provdir" ] || die "cannot find the libibverbs provider folder"
  mkdir -p "$s$provdir" "$s/etc/libibverbs.d"
  cp -L "$provdir"/*.so "$s$provdir/"
  cp /etc/libibverbs.d/*.driver "$s/etc/libibverbs.d/"
  for f in "$provdir"/*.so; do copy_libs_of "$s" "$f"; done
  # C++ programs need these; rping aborts without libgcc_s (pthread_cancel unwinding).
  for n in libgcc_s.so.1 libstdc++.so.6; do
    l=$(/sbin/ldconfig -p | awk -v n="$n" '$1 == n && /x86-64/ && !f { print $NF; f = 1 }')
    [ -n "$l" ] || die "$n not found on the host"
    copy_lib "$s" "$l"
    copy_libs_of "$s" "$l"
  done
  mkdir -p "$s/etc" "$s/proc" "$s/sys" "$s/dev" "$s/tmp" "$s/run" "$s/root" "$s/var/tmp" \
    "$s/opt/smbdirect/bin" "$s/opt/smbdirect/lib" "$s/opt/smbdirect/files"
  chmod 1777 "$s/tmp" "$s/var/tmp"
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.0.2.15 smbdirect-vm\nfd00::15 smbdirect-vm\n' >"$s/etc/hosts"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$s/etc/passwd"
  printf 'root:x:0:\n' >"$s/etc/group"
  printf 'hosts: files\n' >"$s/etc/nsswitch.conf"
  (cd "$s" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) |
    gzip -6 >"$base.tmp"
  mv "$base.tmp" "$base"
  rm -rf "$s"
fi
# Keep the cache small: drop base archives and kernels other than the ones in use.
for f in "$cache"/base-*.cpio.gz; do [ "$f" = "$base" ] || rm -f "$f"; done
for d in "$cache/kernel-v$KERNEL_FORMAT"/*; do
  [ -d "$d" ] && [ "$d" != "$kdir" ] && rm -rf "$d"
done

# ---------------------------------------------------------------------------------------------
# Per-run initramfs: /init, the guest script, --bin and --file.
r="$work/run"
make_skeleton "$r"
mkdir -p "$r/opt/smbdirect/bin" "$r/opt/smbdirect/lib" "$r/opt/smbdirect/files"
cp "$guest_script" "$r/opt/smbdirect/guest.sh"
for f in "${bins[@]+"${bins[@]}"}"; do
  dest="$r/opt/smbdirect/bin/$(basename "$f")"
  [ -e "$dest" ] && die "two --bin files named $(basename "$f")"
  cp -L "$f" "$dest"; chmod +x "$dest"
  copy_libs_of "$r" "$f" /opt/smbdirect/lib
done
for f in "${files[@]+"${files[@]}"}"; do
  dest="$r/opt/smbdirect/files/$(basename "$f")"
  [ -e "$dest" ] && die "two --file entries named $(basename "$f")"
  cp -rL "$f" "$dest"
done

ndev=${#device_list[@]}
if [ -z "$guest_timeout" ]; then
  guest_timeout=$(( (timeout_s - 60) / ndev ))
  [ "$guest_timeout" -ge 20 ] || guest_timeout=20
fi
cat >"$r/opt/smbdirect/vm.env" <<EOF
VM_DEVICES="${device_list[*]}"
VM_GUEST_TIMEOUT=$guest_timeout
EOF

cat >"$r/init" <<'INIT'
#!/bin/busybox sh
# Generated by tools/vm/run.sh: sets up RDMA devices and runs /opt/smbdirect/guest.sh per device.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
. /opt/smbdirect/vm.env
export PATH=/opt/smbdirect/bin:/usr/bin:/usr/sbin  # /bin and /sbin link to these
export HOME=/root TMPDIR=/tmp LD_LIBRARY_PATH=/opt/smbdirect/lib
uptime_s() { cut -d' ' -f1 /proc/uptime; }
fatal() { echo "SMBDIRECT-VM-FATAL $*"; poweroff -f; sleep 10; }
echo "SMBDIRECT-VM-BOOTED $(uptime_s) s $(uname -r)"

ulimit -l unlimited 2>/dev/null
for m in crc32_generic crc32c_generic crc32_pclmul crc32c_intel; do modprobe $m 2>/dev/null; done
for m in virtio_pci virtio_net virtio_blk ib_core ib_uverbs ib_umad rdma_ucm; do
  modprobe $m || fatal "modprobe $m failed"
done
i=0
while [ ! -d /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -d /sys/class/net/eth0 ] || fatal "no eth0"
echo 0 >/proc/sys/net/ipv6/conf/eth0/autoconf
echo 0 >/proc/sys/net/ipv6/conf/eth0/accept_ra
# busybox sh runs its own applets before PATH: name iproute2's ip (nodad) by path.
/usr/bin/ip link set lo up
/usr/bin/ip addr add 10.0.2.15/24 dev eth0
/usr/bin/ip -6 addr add fd00::15/64 dev eth0 nodad
/usr/bin/ip link set eth0 up
/usr/bin/ip route add default via 10.0.2.2 2>/dev/null

export RDMA_NETDEV=eth0 RDMA_ADDR=10.0.2.15 RDMA_ADDR6=fd00::15 SMBDIRECT_FILES=/opt/smbdirect/files
export SMBDIRECT_OUTPUT=/var/tmp/smbdirect-output
mkdir -p $SMBDIRECT_OUTPUT
export SMBDIRECT_VM=1

# gid_index DEV GID: index of GID (as in sysfs) among the first 16 on port 1 of DEV, waiting
# up to 5 s for it to appear. Shell builtins only: the table has 1024 entries and forks are slow.
gid_index() {
  n=0
  while [ $n -lt 50 ]; do
    i=0
    while [ $i -lt 16 ]; do
      v=""
      read -r v <"/sys/class/infiniband/$1/ports/1/gids/$i" 2>/dev/null
      [ "$v" = "$2" ] && { echo $i; return 0; }
      i=$((i + 1))
    done
    sleep 0.1; n=$((n + 1))
  done
  return 1
}
GID4=0000:0000:0000:0000:0000:ffff:0a00:020f
GID6=fd00:0000:0000:0000:0000:0000:0000:0015

for kind in $VM_DEVICES; do
  dev=${kind}0
  echo "=== SMBDIRECT-VM: $kind: setting up $dev (t=$(uptime_s) s)"
  ok=1
  case $kind in
    rxe) modprobe rdma_rxe || ok=0 ;;
    siw) modprobe siw || ok=0 ;;
  esac
  [ $ok = 1 ] && { rdma link add $dev type $kind netdev eth0 || ok=0; }
  if [ $ok = 1 ]; then
    case $kind in
      rxe)
        RDMA_GID_INDEX=$(gid_index $dev $GID4) || { echo "no IPv4 GID on $dev"; ok=0; }
        RDMA_GID_INDEX6=$(gid_index $dev $GID6) || RDMA_GID_INDEX6=""
        RDMA_PERFTEST_FLAGS="-x $RDMA_GID_INDEX" ;;
      siw)
        RDMA_GID_INDEX=0 RDMA_GID_INDEX6=0 RDMA_PERFTEST_FLAGS="-R" ;;
    esac
  fi
  if [ $ok = 1 ]; then
    export RDMA_DEVICE=$dev RDMA_KIND=$kind RDMA_GID_INDEX RDMA_GID_INDEX6 RDMA_PERFTEST_FLAGS
    echo "=== SMBDIRECT-VM: $kind: running guest script (limit $VM_GUEST_TIMEOUT s, RDMA_DEVICE=$dev RDMA_GID_INDEX=$RDMA_GID_INDEX RDMA_PERFTEST_FLAGS=\"$RDMA_PERFTEST_FLAGS\")"
    t0=$(uptime_s)
    cd /tmp
    timeout $VM_GUEST_TIMEOUT sh /opt/smbdirect/guest.sh </dev/null
    rc=$?
    cd /
    [ $rc = 143 ] && echo "=== SMBDIRECT-VM: $kind: guest script killed after $VM_GUEST_TIMEOUT s"
    echo "=== SMBDIRECT-VM: $kind: guest script returned $rc ($t0 s -> $(uptime_s) s)"
  else
    echo "SMBDIRECT-VM-SETUP-FAILED $kind"
    rc=125
  fi
  kill -9 -1 2>/dev/null   # whatever the script left running (init itself is spared)
  sleep 0.2
  printf '\nSMBDIRECT-VM-RESULT %s %s\n' "$kind" "$rc"
  # After the last device the VM powers off: no deletion, which would block for good if a
  # kernel client still held the device (seen with cifs.ko after a failed rdma mount).
  [ "$kind" = "${VM_DEVICES##* }" ] || rdma link delete $dev 2>/dev/null
done
# --output-dir: the host gave us a raw disk; the archive goes on it with no file system.
if [ -b /dev/vda ]; then
  tar -cf /dev/vda -C $SMBDIRECT_OUTPUT . && sync || echo "SMBDIRECT-VM-OUTPUT-FAILED"
fi
echo "SMBDIRECT-VM-DONE $(uptime_s) s"
poweroff -f
INIT
chmod +x "$r/init"

initrd="$work/initrd.img"
(cd "$r" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) >"$work/run.cpio"
run_mib=$(( $(stat -c %s "$work/run.cpio") / 1048576 ))
gzip -1 -c "$work/run.cpio" >"$work/run.cpio.gz"
cat "$kdir/modules.cpio.gz" "$base" "$work/run.cpio.gz" >"$initrd"
if [ -z "$mem" ]; then
  mem=$(( 1024 + 2 * run_mib ))
fi
flock -u 9

# ---------------------------------------------------------------------------------------------
# Boot.
if [ -z "$log_file" ]; then
  mkdir -p "$cache/logs"
  { ls -1t "$cache/logs"/console-*.log 2>/dev/null || true; } | tail -n +20 | xargs -r rm -f
  log_file="$cache/logs/console-$(date +%Y%m%d-%H%M%S)-$$.log"
fi
mkdir -p "$(dirname "$log_file")"
: >"$log_file"

# shellcheck disable=SC2054  # commas inside QEMU options
qemu=(qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m "$mem"
  -bios "$qboot" -nographic -no-reboot
  -kernel "$kdir/vmlinuz" -initrd "$initrd"
  -append "console=ttyS0 panic=-1 panic_on_oops=1 quiet"
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile=)
if [ -n "$output_dir" ]; then
  mkdir -p "$output_dir" || die "cannot create $output_dir"
  truncate -s 256M "$work/output.img"
  qemu+=(-drive "file=$work/output.img,format=raw,if=none,id=out" -device virtio-blk-pci,drive=out,romfile=)
fi
say "booting (kernel $kabi, devices: ${device_list[*]}, ${mem} MiB, limit ${timeout_s} s) after $(elapsed)"
boot_start=$SECONDS
set +e
# The console goes to stdout (CRs stripped) and to the log. QEMU never gets the terminal.
timeout -k 10 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log_file"
qemu_rc=${PIPESTATUS[0]}
set -e
say "VM finished after $((SECONDS - boot_start)) s (total $(elapsed))"
if [ -n "$output_dir" ]; then
  if tar -xf "$work/output.img" -C "$output_dir" 2>/dev/null; then
    say "guest output in $output_dir: $(find "$output_dir" -type f | wc -l) files"
  else
    say "warning: the guest left no output (no archive on its disk)"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Results.
passed=0 failed=0
problem=""
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  problem="the VM hit the ${timeout_s} s limit (--timeout)"
elif [ "$qemu_rc" != 0 ]; then
  problem="qemu exited with status $qemu_rc"
fi
grep -q "Kernel panic" "$log_file" && problem="${problem:+$problem; }the guest kernel panicked"
grep -q "SMBDIRECT-VM-BOOTED" "$log_file" || problem="${problem:+$problem; }the guest never reached /init"
fatal=$(grep -a -m1 "^SMBDIRECT-VM-FATAL" "$log_file" | sed 's/^SMBDIRECT-VM-FATAL //' || true)
[ -n "$fatal" ] && problem="${problem:+$problem; }guest setup failed: $fatal"

echo "=== vm summary (log: $log_file)"
for kind in "${device_list[@]}"; do
  rc=$(grep -a "^SMBDIRECT-VM-RESULT $kind " "$log_file" | tail -n 1 | awk '{ print $3 }' || true)
  if [ -z "$rc" ]; then
    echo "  $kind: MISSING (no result: ${problem:-the guest stopped before this device finished})"
    failed=$((failed + 1))
  elif [ "$rc" = 0 ]; then
    echo "  $kind: passed"
    passed=$((passed + 1))
  elif grep -aq "^SMBDIRECT-VM-SETUP-FAILED $kind" "$log_file"; then
    echo "  $kind: FAILED (could not create ${kind}0; see the log)"
    failed=$((failed + 1))
  elif [ "$rc" = 143 ]; then
    echo "  $kind: FAILED (guest script killed after its ${guest_timeout} s limit)"
    failed=$((failed + 1))
  else
    echo "  $kind: FAILED (guest script exit status $rc)"
    failed=$((failed + 1))
  fi
done
[ -n "$problem" ] && echo "  note: $problem"
say "console log: $log_file"
echo "vm: $passed passed, $failed failed"
[ "$failed" = 0 ]
