#!/usr/bin/env bash
# Renders tuning/haproxy/metalcu-fleet.cfg.in into an HAProxy configuration for a fleet of CUs.
#
#   tuning/haproxy/render.sh NODES_FILE [--bind ADDR] [--stats-socket PATH] [--unprivileged] > haproxy.cfg
#
# NODES_FILE has one CU per line, "<id> <name> <host:port>" (# starts a comment), e.g.
#   1 cu1 10.0.0.11:6363
#   2 cu2 10.0.0.12:6363
# The id places the CU on HAProxy's hash ring: keep each CU's id for its whole life and give a
# new CU a new id, or processes move between CUs that did not change (README.md beside this).
# --bind defaults to ":80"; --stats-socket adds HAProxy's runtime API (admin level) at PATH.
# HAProxy, started as root, drops to Debian's haproxy user in a chroot (/var/lib/haproxy) once
# its ports are bound; --unprivileged leaves that out, to start it as an ordinary user.
# A malformed line stops the script with its line number; nothing is printed then.
set -euo pipefail
shopt -s extglob

here=$(cd "$(dirname "$0")" && pwd)
template="$here/metalcu-fleet.cfg.in"
usage="usage: $0 NODES_FILE [--bind ADDR] [--stats-socket PATH] [--unprivileged]"

nodes="" bind=":80" socket="" privileged=1
while [ $# -gt 0 ]; do
  case "$1" in
    --bind) bind="${2:?--bind needs an address}"; shift 2 ;;
    --stats-socket) socket="${2:?--stats-socket needs a path}"; shift 2 ;;
    --unprivileged) privileged=0; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "$0: unknown option $1; $usage" >&2; exit 1 ;;
    *) [ -z "$nodes" ] || { echo "$0: one NODES_FILE only; $usage" >&2; exit 1; }; nodes="$1"; shift ;;
  esac
done
[ -n "$nodes" ] || { echo "$usage" >&2; exit 1; }
[ -r "$nodes" ] || { echo "$0: cannot read $nodes" >&2; exit 1; }
case "$bind" in *[[:space:]]*) echo "$0: --bind '$bind' contains spaces" >&2; exit 1 ;; esac
case "$socket" in *[[:space:]]*) echo "$0: --stats-socket '$socket' contains spaces" >&2; exit 1 ;; esac

servers="" count=0 lineno=0
declare -A seen_id=() seen_name=()
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line="${line%%#*}"
  read -r id name addr extra <<<"$line" || true
  [ -n "${id:-}" ] || continue
  where="$nodes:$lineno"
  [ -z "${extra:-}" ] || { echo "$where: expected '<id> <name> <host:port>', found more fields" >&2; exit 1; }
  [[ "$id" =~ ^[1-9][0-9]{0,5}$ ]] || { echo "$where: id '$id' is not a positive integer" >&2; exit 1; }
  [[ "${name:-}" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || { echo "$where: name '${name:-}' must be 1-64 of A-Z a-z 0-9 _ . -" >&2; exit 1; }
  [[ "${addr:-}" =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$ ]] || { echo "$where: address '${addr:-}' is not host:port" >&2; exit 1; }
  port="${addr##*:}"
  [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || { echo "$where: port $port is out of range" >&2; exit 1; }
  [ -z "${seen_id[$id]:-}" ] || { echo "$where: id $id is already used by ${seen_id[$id]}" >&2; exit 1; }
  [ -z "${seen_name[$name]:-}" ] || { echo "$where: name $name is used twice" >&2; exit 1; }
  seen_id[$id]="$name"; seen_name[$name]=1
  servers+="    server $name $addr id $id"$'\n'
  count=$((count + 1))
done <"$nodes"
[ "$count" -gt 0 ] || { echo "$nodes: no CU listed" >&2; exit 1; }

stats=""
[ -z "$socket" ] || stats="stats socket $socket mode 600 level admin"
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    "@SERVERS@") printf '%s' "$servers" ;;
    "@PRIVILEGES@") [ "$privileged" = 0 ] || printf '    user haproxy\n    group haproxy\n    chroot /var/lib/haproxy\n' ;;
    *([[:space:]])"#"*) printf '%s\n' "$line" ;;  # comments keep the placeholder names
    *) line="${line//@BIND@/$bind}"; printf '%s\n' "${line//@STATS_SOCKET@/$stats}" ;;
  esac
done <"$template"
