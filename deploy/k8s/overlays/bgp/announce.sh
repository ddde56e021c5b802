#!/bin/sh
# BGP announcer sidecar: keeps the VIPs in GoBGP's RIB exactly while the appliance can serve them.
#
#   announce  (gobgp global rib add -a ipv4 <vip>/32, every VIP)  when the appliance's health
#             (grpc.health.v1, overall service "") is SERVING on HEALTH_ADDR for RISE polls in a
#             row AND the postStart hook has applied services.yaml (APPLIED_MARKER exists);
#   withdraw  (gobgp global rib del ...)                             when it is NOT_SERVING
#             (drained, starting, stopping), unreachable or the marker is gone, for FALL polls;
#             and on SIGTERM/SIGINT before exiting.
# While announced, the VIPs are added again every RESYNC polls, so a restarted gobgpd gets them
# back. BGP itself is GoBGP's; this script only adds and removes locally originated routes.
#
# Tools (the retrace-bgp image, components/bgp/Dockerfile): gobgp (Debian package gobgpd) and
# grpc_health_probe (exit 0 = SERVING; 2 = cannot connect, 3 = RPC failed, 4 = NOT_SERVING).
#
# Environment (defaults):
#   HEALTH_ADDR     127.0.0.1:50052                the appliance's health.listen (hostNetwork: shared)
#   GOBGP_TARGET    unix:///run/gobgp/gobgp.sock   gobgpd --api-hosts
#   VIPS_FILE       /run/bgp/vips                  one VIP per line (written by bgp-render.js)
#   APPLIED_MARKER  /run/retrace/applied           "" = do not wait for the services apply
#   HEALTH_PROBE    ""                             a command to run instead of grpc_health_probe
#                                                  (exit 0 = SERVING, 4 = NOT_SERVING), e.g.
#                                                  retrace health --server 127.0.0.1:50051
#   INTERVAL 2  RISE 2  FALL 1  RESYNC 30          seconds between polls; polls per transition
#   ITERATIONS      0                              stop after this many polls (0 = never; tests)
set -u

HEALTH_ADDR=${HEALTH_ADDR:-127.0.0.1:50052}
GOBGP_TARGET=${GOBGP_TARGET:-unix:///run/gobgp/gobgp.sock}
VIPS_FILE=${VIPS_FILE:-/run/bgp/vips}
APPLIED_MARKER=${APPLIED_MARKER-/run/retrace/applied}
INTERVAL=${INTERVAL:-2}
RISE=${RISE:-2}
FALL=${FALL:-1}
RESYNC=${RESYNC:-30}
ITERATIONS=${ITERATIONS:-0}

log() { echo "announce: $*"; }

[ -r "$VIPS_FILE" ] || { log "cannot read $VIPS_FILE" >&2; exit 1; }
vips=$(grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' "$VIPS_FILE" | tr '\n' ' ')
[ -n "$vips" ] || log "warning: no VIPs in $VIPS_FILE: nothing to announce"

rib() { # rib add|del: every VIP; returns non-zero if any gobgp call failed
  rc=0
  for vip in $vips; do
    gobgp --target "$GOBGP_TARGET" global rib "$1" -a ipv4 "$vip/32" || rc=1
  done
  return $rc
}

serving() {
  if [ -n "$APPLIED_MARKER" ] && [ ! -e "$APPLIED_MARKER" ]; then
    why="services not applied yet ($APPLIED_MARKER missing)"
    return 1
  fi
  if [ -n "${HEALTH_PROBE:-}" ]; then
    # shellcheck disable=SC2086 # a command line, split into words on purpose
    $HEALTH_PROBE >/dev/null 2>&1
  else
    grpc_health_probe -addr="$HEALTH_ADDR" -connect-timeout=1s -rpc-timeout=1s >/dev/null 2>&1
  fi
  rc=$?
  case $rc in
    0) why=SERVING; return 0 ;;
    2) why="health endpoint $HEALTH_ADDR unreachable" ;;
    4) why=NOT_SERVING ;;
    *) why="health check failed (grpc_health_probe exit $rc)" ;;
  esac
  return 1
}

announced=0
stop() {
  if [ $announced -eq 1 ]; then
    log "signal: withdrawing $vips"
    rib del
  fi
  exit 0
}
trap stop TERM INT

ups=0 downs=0 since_sync=0 n=0 last=''
while :; do
  if serving; then ups=$((ups + 1)) downs=0; else downs=$((downs + 1)) ups=0; fi
  [ "$why" = "$last" ] || log "appliance: $why"
  last=$why
  if [ $announced -eq 0 ] && [ $ups -ge "$RISE" ]; then
    log "announcing $vips"
    if rib add; then announced=1 since_sync=0; else log "gobgp add failed; retrying next poll" >&2; rib del >/dev/null 2>&1; fi
  elif [ $announced -eq 1 ] && [ $downs -ge "$FALL" ]; then
    log "withdrawing $vips"
    rib del || log "gobgp del failed" >&2
    announced=0
  elif [ $announced -eq 1 ]; then
    since_sync=$((since_sync + 1))
    if [ $since_sync -ge "$RESYNC" ]; then
      rib add || log "gobgp resync failed" >&2
      since_sync=0
    fi
  fi
  n=$((n + 1))
  if [ "$ITERATIONS" -gt 0 ] && [ $n -ge "$ITERATIONS" ]; then stop; fi
  # Sleep in the background so that SIGTERM is handled at once, not after the sleep.
  sleep "$INTERVAL" &
  wait $! || true
done
