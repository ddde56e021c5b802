#!/bin/sh
# EAL --lcores for the CPUs this container may run on.
#
# Why: with the kubelet's static CPU manager policy, a Guaranteed pod with an integer CPU request
# gets an exclusive cpuset (say CPUs 2-5), but the appliance's default --lcores is computed from
# the machine's CPU count (`0@(0-N-1)`, workers on the last CPUs of the machine), i.e. CPUs the
# container may not use: EAL then fails to pin its threads. This script derives --lcores from the
# container's cpuset instead: main lcore 0 on every allowed CPU (Node's main thread runs there and
# the kernel places it where the workers are not), one worker lcore pinned to each remaining CPU.
#
#   cpuset 2-5        -> 0@(2-5),1@3,2@4,3@5     (3 workers)
#   cpuset 2-5, -w 2  -> 0@(2-5),1@4,2@5         (2 workers on the last CPUs)
#   cpuset 3          -> 0@3,1@3                 (1 worker sharing the only CPU; warning on stderr)
#
# Usage:
#   entrypoint-lcores.sh [-w WORKERS] [CPUSET_FILE]          print the --lcores value
#   entrypoint-lcores.sh [-w WORKERS] --count [CPUSET_FILE]  print the number of worker lcores
#   entrypoint-lcores.sh --exec --config IN --out OUT [--rm FILE]... [--cpuset-file F] -- CMD [ARG]...
#       container entrypoint: writes OUT = IN with eal.lcores and dataplane.workers set from the
#       cpuset (workers: IN's dataplane.workers when IN sets it, else one per CPU besides the
#       first), removes each --rm FILE, then execs CMD. When IN sets eal.lcores itself, OUT is a
#       verbatim copy: an operator's explicit choice wins. Needs node and the `yaml` package
#       ($RETRACE_HOME/node_modules, default: the checkout or image this script sits in).
#
# CPUSET_FILE defaults to /sys/fs/cgroup/cpuset.cpus.effective (cgroup v2; with the private cgroup
# namespace containerd and CRI-O use on v2 this is the container's own cgroup), then the cgroup v1
# file, then the Cpus_allowed_list of this process. A cpuset is a list like "2-5" or "0-3,8-11".
# Exit codes: 0 ok, 2 usage or a cpuset that cannot hold the workers asked for.
set -eu
set -f # no globbing: cpuset lists are split on commas

die() { echo "entrypoint-lcores: $*" >&2; exit 2; }

# Expands a cpuset list ("0-3,8,10-11") into one CPU id per line, ascending and unique.
expand_cpuset() {
  list=$(printf '%s' "$1" | tr -d ' \t\r\n')
  [ -n "$list" ] || die "empty cpuset"
  old_ifs=$IFS
  IFS=,
  set -- $list
  IFS=$old_ifs
  ids=''
  for part in "$@"; do
    case $part in
      '' | *[!0-9-]* | -* | *- | *-*-*) die "bad cpuset element \"$part\" in \"$list\"" ;;
      *-*)
        a=${part%-*} b=${part#*-}
        [ "$a" -le "$b" ] || die "bad cpuset range \"$part\""
        ids="$ids $(seq "$a" "$b")"
        ;;
      *) ids="$ids $part" ;;
    esac
  done
  printf '%s\n' $ids | sort -n -u
}

# Compresses ascending CPU ids (stdin, one per line) into "a-b,c" form.
compress() {
  awk 'NR == 1 { s = $1; p = $1; next }
       $1 == p + 1 { p = $1; next }
       { printf "%s%s,", s, (p > s ? "-" p : ""); s = $1; p = $1 }
       END { if (NR) printf "%s%s", s, (p > s ? "-" p : "") }'
}

read_cpuset() {
  if [ -n "${1:-}" ]; then
    [ -r "$1" ] || die "cannot read cpuset file $1"
    cat "$1"
    return
  fi
  for f in /sys/fs/cgroup/cpuset.cpus.effective /sys/fs/cgroup/cpuset/cpuset.effective_cpus; do
    if [ -r "$f" ] && [ -n "$(tr -d ' \n' <"$f")" ]; then
      cat "$f"
      return
    fi
  done
  sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status
}

# lcores CPUSET WORKERS(empty = auto) -> prints "<count> <lcores>"
lcores() {
  cpus=$(expand_cpuset "$1") || exit 2
  n=$(printf '%s\n' "$cpus" | wc -l)
  w=${2:-}
  if [ "$n" -eq 1 ]; then
    [ -z "$w" ] || [ "$w" -eq 1 ] || die "cpuset \"$1\" has 1 CPU: it can hold 1 worker, not $w"
    echo "entrypoint-lcores: warning: cpuset \"$1\" has 1 CPU; the worker shares it with the main lcore" >&2
    echo "1 0@$cpus,1@$cpus"
    return
  fi
  [ -n "$w" ] || w=$((n - 1))
  [ "$w" -ge 1 ] || die "workers must be >= 1"
  [ "$w" -le $((n - 1)) ] || die "cpuset \"$1\" has $n CPUs: at most $((n - 1)) workers besides the main lcore, not $w"
  main=$(printf '%s\n' "$cpus" | compress)
  case $main in *[,-]*) main="($main)" ;; esac
  out="0@$main"
  i=1
  for cpu in $(printf '%s\n' "$cpus" | tail -n "$w"); do
    out="$out,$i@$cpu"
    i=$((i + 1))
  done
  echo "$w $out"
}

workers='' count=0 exec=0 cfg_in='' cfg_out='' cpuset_file='' rm_files=''
while [ $# -gt 0 ]; do
  case $1 in
    -w | --workers) [ $# -ge 2 ] || die "$1 needs a value"; workers=$2; shift 2 ;;
    --count) count=1; shift ;;
    --exec) exec=1; shift ;;
    --config) [ $# -ge 2 ] || die "$1 needs a value"; cfg_in=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "$1 needs a value"; cfg_out=$2; shift 2 ;;
    --cpuset-file) [ $# -ge 2 ] || die "$1 needs a value"; cpuset_file=$2; shift 2 ;;
    --rm) [ $# -ge 2 ] || die "$1 needs a value"; rm_files="$rm_files
$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//; /^set -eu/d'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) [ $exec -eq 0 ] || die "unexpected argument $1 (the command goes after --)"; cpuset_file=$1; shift ;;
  esac
done
case $workers in '' | [1-9] | [1-9][0-9]) ;; *) die "workers must be a number in 1..99, got \"$workers\"" ;; esac

if [ $exec -eq 0 ]; then
  [ $# -eq 0 ] || die "unexpected argument $1"
  cpuset=$(read_cpuset "$cpuset_file") || exit 2
  result=$(lcores "$cpuset" "$workers") || exit 2
  if [ $count -eq 1 ]; then echo "${result%% *}"; else echo "${result#* }"; fi
  exit 0
fi

# As the container's PID 1 this shell gets no default signal handling: a stop that arrives before
# the exec below would be ignored until the kill timeout. Exit on it instead (128 + signal).
trap 'exit 143' TERM
trap 'exit 130' INT
[ -n "$cfg_in" ] && [ -n "$cfg_out" ] || die "--exec needs --config IN and --out OUT"
[ $# -gt 0 ] || die "--exec needs a command after --"
[ -r "$cfg_in" ] || die "cannot read $cfg_in"
here=$(cd "$(dirname "$0")" && pwd)
RETRACE_HOME=${RETRACE_HOME:-$(cd "$here/../.." && pwd)}
export RETRACE_HOME
yaml_mod="$RETRACE_HOME/node_modules/yaml"
[ -d "$yaml_mod" ] || die "$yaml_mod not found (set RETRACE_HOME)"

# What the config asks for: "<lcores set?> <workers or empty>".
asked=$(node -e '
  const YAML = require(process.env.RETRACE_HOME + "/node_modules/yaml");
  const doc = YAML.parse(require("fs").readFileSync(process.argv[1], "utf8")) ?? {};
  const l = doc.eal?.lcores ?? "";
  const w = doc.dataplane?.workers;
  process.stdout.write(`${l === "" ? 0 : 1} ${Number.isInteger(w) ? w : ""}`);
' "$cfg_in") || die "cannot read $cfg_in as YAML"
lcores_set=${asked%% *}
cfg_workers=${asked#* }
mkdir -p "$(dirname "$cfg_out")"
if [ "$lcores_set" = 1 ]; then
  echo "entrypoint-lcores: eal.lcores is set in $cfg_in; using it as is" >&2
  cp "$cfg_in" "$cfg_out"
else
  [ -n "$workers" ] || workers=$cfg_workers
  cpuset=$(read_cpuset "$cpuset_file") || exit 2
  result=$(lcores "$cpuset" "$workers") || exit 2
  w=${result%% *} value=${result#* }
  node -e '
    const fs = require("fs");
    const YAML = require(process.env.RETRACE_HOME + "/node_modules/yaml");
    const [inp, out, lcores, workers] = process.argv.slice(1);
    const doc = YAML.parseDocument(fs.readFileSync(inp, "utf8"));
    if (doc.contents === null) doc.contents = doc.createNode({});
    doc.setIn(["eal", "lcores"], lcores);
    doc.setIn(["dataplane", "workers"], Number(workers));
    fs.writeFileSync(out, String(doc));
  ' "$cfg_in" "$cfg_out" "$value" "$w" || die "cannot write $cfg_out"
  echo "entrypoint-lcores: eal.lcores \"$value\", dataplane.workers $w -> $cfg_out" >&2
fi
printf '%s\n' "$rm_files" | while IFS= read -r f; do [ -z "$f" ] || rm -f -- "$f"; done
exec "$@"
