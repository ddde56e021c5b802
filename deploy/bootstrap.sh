#!/usr/bin/env bash
# Brings a checkout to a runnable state: system packages, node_modules, the native addon, the
# generated protobuf code check, and the TypeScript build. Idempotent and quiet when nothing is to
# do (a second run takes well under a second); prints one line per step that does work.
#
# Runs on Debian 12 with Node 20, as root (or with sudo for the apt step). Stamps live in
# build/.stamps/ (build/ is gitignored; `node-gyp rebuild` wipes it, which only forces a re-run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "bootstrap: $*"; }
die() { echo "bootstrap: error: $*" >&2; exit 1; }

stamps=build/.stamps
mkdir -p "$stamps"
# Serialise concurrent runs in the same tree (the lock lives outside build/ and node_modules/,
# which `npm ci` and `node-gyp rebuild` delete).
exec 9>"${TMPDIR:-/tmp}/retrace-bootstrap.$(pwd | sha256sum | cut -c1-16).lock"
flock 9

# Signature of a set of files: paths, mtimes and sizes (detects edits, additions and deletions).
tree_sig() {
  find "$@" -type f -printf '%p %T@ %s\n' 2>/dev/null | LC_ALL=C sort | sha256sum | cut -d' ' -f1
}
stamp_is() { [[ -f $stamps/$1 && $(<"$stamps/$1") == "$2" ]]; }

# --- a. system packages -----------------------------------------------------------------------
# libprotobuf-dev: google/protobuf/*.proto (the well-known types the API imports) for protoc.
# netbase: /etc/protocols, which `ip route get ... ipproto udp` and getprotobyname() read.
# clang-format-14: npm test checks the native code's layout (scripts/lint.sh).
# gobgpd: the tests check the BGP sidecar's rendered gobgpd.toml with `gobgpd --dry-run`.
# bird2: the lab's routers speak BGP with the appliance's GoBGP and install what they learn.
# podman runc catatonit mmdebstrap fuse-overlayfs: the image (npm run image, deploy/image.sh).
# hping3: the SYN flood of the SYN proxy's lab test (test/e2e/synproxy.test.ts).
# haproxy, nginx-light, curl: the lab's reals that read PROXY protocol (accept-proxy,
# listen ... proxy_protocol) in the client-address tests, and an HTTP client for nginx;
# iptables: random loss on their links where the kernel has no sch_netem.
pkgs=(libdpdk-dev dpdk dpdk-dev pkg-config protobuf-compiler libprotobuf-dev netbase iproute2
      iputils-ping tcpdump ethtool socat libpcap-dev build-essential python3 clang-14
      libclang-rt-14-dev clang-format-14 gobgpd bird2 podman runc catatonit mmdebstrap fuse-overlayfs
      haproxy nginx-light curl iptables hping3)
# kubectl renders deploy/k8s in the tests (`kubectl kustomize`). Debian 12 ships it as
# kubernetes-client (1.20, which deploy/k8s is written to render with); a kubectl that is
# already installed (e.g. a newer one from Kubernetes' own apt repository) is used as it is.
command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
declare -A installed=()
while read -r name state; do
  if [[ $state == installed ]]; then installed[$name]=1; fi
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${pkgs[@]}"; do [[ -n ${installed[$p]:-} ]] || missing+=("$p"); done
if ((${#missing[@]})); then
  say "installing packages: ${missing[*]}"
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "not root and no sudo: install ${missing[*]} by hand"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Only gobgpd's binaries are wanted (the lab starts its own speakers); the package also
  # enables a system-wide daemon, which a test machine should not run.
  if [[ " ${missing[*]} " == *" gobgpd "* ]] && command -v systemctl >/dev/null; then
    "${sudo[@]}" systemctl disable --now gobgpd.service >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" bird2 "* ]] && command -v systemctl >/dev/null; then
    "${sudo[@]}" systemctl disable --now bird.service >/dev/null 2>&1 || true
  fi
  # The same for haproxy and nginx: the lab starts its own, one per real server namespace.
  for svc in haproxy nginx; do
    if [[ " ${missing[*]} " == *" $svc"* ]] && command -v systemctl >/dev/null; then
      "${sudo[@]}" systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
    fi
  done
fi

# podman (the image test) needs the cgroup filesystems. systemd mounts them; a system without
# systemd (a container, a chroot sandbox) may have none: Debian's cgroupfs-mount mounts them.
if ! grep -q ' - cgroup2\? ' /proc/self/mountinfo 2>/dev/null; then
  ((EUID == 0)) || die "no cgroup filesystem is mounted and podman needs them: run cgroupfs-mount as root"
  if ! command -v cgroupfs-mount >/dev/null; then
    say "installing cgroupfs-mount (no cgroup filesystem is mounted)"
    apt-get install -y -qq --no-install-recommends cgroupfs-mount >/dev/null
  fi
  say "mounting the cgroup filesystems (cgroupfs-mount)"
  cgroupfs-mount
fi

# --- b. node_modules --------------------------------------------------------------------------
lock_stamp=node_modules/.retrace-lock-stamp
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if ! [[ -d node_modules && -f $lock_stamp && $(<"$lock_stamp") == "$lock_sum" ]]; then
  # No stamp yet (or the lock changed): node_modules may still be exactly what the lock describes
  # (npm's hidden lockfile matches it, minus optional packages for other platforms). Adopt it
  # rather than wiping and re-downloading everything.
  if [[ -f node_modules/.package-lock.json ]] && node -e '
      const want = require("./package-lock.json").packages, have = require("./node_modules/.package-lock.json").packages;
      const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
      const ok = Object.keys(have).every((k) => same(have[k], want[k])) &&
        Object.keys(want).every((k) => k === "" || k in have || want[k].optional || want[k].devOptional);
      process.exit(ok ? 0 : 1);' 2>/dev/null; then
    echo "$lock_sum" >"$lock_stamp"
  else
    say "npm ci"
    # Note: with binding.gyp present and no "install" script, npm runs `node-gyp rebuild` here,
    # which recreates build/ (and so our stamps).
    npm ci --no-audit --no-fund
    echo "$lock_sum" >"$lock_stamp"
    mkdir -p "$stamps"
  fi
fi

# --- c. native addon --------------------------------------------------------------------------
if [[ ! -f binding.gyp ]]; then
  say "skipping native build: binding.gyp does not exist yet"
elif [[ -z $(find native -type f \( -name '*.c' -o -name '*.cc' -o -name '*.cpp' \) -print -quit 2>/dev/null) ]]; then
  say "skipping native build: no sources in native/ yet"
else
  gyp=node_modules/.bin/node-gyp
  if [[ ! -f build/Makefile || ! -f build/config.gypi || binding.gyp -nt build/Makefile ]]; then
    # Use the headers the nodejs package installs (<prefix>/include/node) when they match the
    # running node, so that configure needs no download from nodejs.org.
    nodedir=()
    nodebin=$(readlink -f "$(command -v node)")
    for prefix in "${nodebin%/bin/node}" "$(node -p 'process.config.variables.node_prefix || ""')"; do
      hdr=${prefix%/}/include/node
      [[ -n $prefix && -f $hdr/common.gypi && -f $hdr/node_version.h ]] || continue
      hv=$(awk '/#define NODE_(MAJOR|MINOR|PATCH)_VERSION/ {v = v (v ? "." : "") $3} END {print v}' "$hdr/node_version.h")
      if [[ v$hv == "$(node --version)" ]]; then nodedir=(--nodedir="$prefix"); break; fi
    done
    say "node-gyp configure ${nodedir[*]}"
    "$gyp" configure "${nodedir[@]}" >"$stamps/node-gyp-configure.log" 2>&1 ||
      { cat "$stamps/node-gyp-configure.log" >&2; die "node-gyp configure failed"; }
    rm -f "$stamps/native"
  fi
  native_sig=$(tree_sig native binding.gyp build/config.gypi)
  if [[ ! -f build/Release/retrace.node ]] || ! stamp_is native "$native_sig"; then
    say "building native addon"
    "$gyp" build -j "$(nproc)" >"$stamps/node-gyp-build.log" 2>&1 ||
      { grep -v '^gyp info' "$stamps/node-gyp-build.log" | grep -E -m 40 'error|warning|No such|\*\*\*' >&2
        die "native build failed (full log: $stamps/node-gyp-build.log)"; }
    [[ -f build/Release/retrace.node ]] || die "native build produced no build/Release/retrace.node"
    echo "$native_sig" >"$stamps/native"
  fi
fi

# --- d. generated code check, TypeScript ------------------------------------------------------
if [[ -d proto ]]; then
  proto_sig=$(tree_sig proto src/gen scripts/gen-proto.sh)
  if ! stamp_is proto "$proto_sig"; then
    say "checking src/gen against proto/"
    # Tell a missing tool or include (gen-proto's own message) from a stale src/gen.
    if ! out=$(bash scripts/gen-proto.sh --check 2>&1); then
      echo "$out" | tail -n 20 >&2
      if grep -q '^gen-proto: src/gen is stale' <<<"$out"; then die "src/gen does not match proto/ (run: npm run gen)"; fi
      die "scripts/gen-proto.sh --check failed (see above)"
    fi
    echo "$proto_sig" >"$stamps/proto"
  fi
fi

ts_sig=$(tree_sig src tsconfig.json package-lock.json)
if [[ ! -d dist ]] || ! stamp_is tsc "$ts_sig"; then
  say "tsc"
  # tsc never deletes outputs of sources that are gone, and a stale dist/x.js shadows dist/x/index.js
  # (require('./config') tries config.js first): remove JavaScript with no TypeScript source.
  if [[ -d dist ]]; then
    while IFS= read -r js; do
      rel=${js#dist/}
      [[ -f src/${rel%.js}.ts ]] || rm -f "$js" "$js.map"
    done < <(find dist -name '*.js')
  fi
  node_modules/.bin/tsc -p tsconfig.json
  echo "$ts_sig" >"$stamps/tsc"
fi
