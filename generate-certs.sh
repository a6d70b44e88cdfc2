#!/usr/bin/env bash
# Makes development TLS material for the OTA server:
#   <dir>/ca.crt, <dir>/ca.key          a private CA (ECDSA P-256), valid 10 years
#   <dir>/server.crt, <dir>/server.key  a server certificate (ECDSA P-256) signed by that CA, valid 825 days
# for localhost, 127.0.0.1 and ::1, plus any extra DNS names or IP addresses given as arguments or in
# OTA_CERT_NAMES (comma or space separated).
#
# Idempotent: an existing CA is kept; the server certificate is re-issued only when it is missing, does not
# cover a requested name, was not signed by the CA, or expires within 30 days. Private keys are mode 0600.
#
# Usage: ./generate-certs.sh [--dir DIR] [--force] [name ...]
#   --dir DIR   where to write (default: $OTA_CERT_DIR, else certs/ beside this script)
#   --force     re-issue the server certificate even if the current one is fine
set -euo pipefail
umask 077

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${OTA_CERT_DIR:-$here/certs}"
force=0
names=(localhost 127.0.0.1 ::1)

while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --dir=*) dir="${1#--dir=}"; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "generate-certs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
if [ -n "${OTA_CERT_NAMES:-}" ]; then
  for n in ${OTA_CERT_NAMES//,/ }; do names+=("$n"); done
fi

command -v openssl >/dev/null || { echo "generate-certs.sh: openssl is required (apt-get install openssl)" >&2; exit 1; }

is_ip() { [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$1" == *:* ]]; }
valid_name() { [[ "$1" =~ ^[A-Za-z0-9*]([A-Za-z0-9.*-]{0,251})$ ]] || is_ip "$1"; }

san=""
declare -A seen=()
for n in "${names[@]}"; do
  [ -n "$n" ] || continue
  [ -z "${seen[$n]:-}" ] || continue
  seen[$n]=1
  valid_name "$n" || { echo "generate-certs.sh: '$n' is not a DNS name or IP address" >&2; exit 2; }
  if is_ip "$n"; then san+="${san:+,}IP:$n"; else san+="${san:+,}DNS:$n"; fi
done

mkdir -p "$dir"
chmod 700 "$dir" 2>/dev/null || true

# Every file appears by rename once it is on disk, and the folder is flushed after, so a power cut never leaves
# an empty key or certificate behind (GNU sync fsyncs the files it names; elsewhere, a plain sync flushes all).
flush() { sync "$@" 2>/dev/null || sync; }
publish() {
  flush "$1.tmp" "$2.tmp"
  mv "$1.tmp" "$1"; mv "$2.tmp" "$2"
  flush "$dir"
}
ca_key="$dir/ca.key"; ca_crt="$dir/ca.crt"; key="$dir/server.key"; crt="$dir/server.crt"

if [ ! -s "$ca_key" ] || [ ! -s "$ca_crt" ]; then
  echo "generate-certs.sh: creating a development CA in $dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$ca_key.tmp"
  openssl req -x509 -new -key "$ca_key.tmp" -sha256 -days 3650 -subj "/CN=ESP32 OTA development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out "$ca_crt.tmp"
  publish "$ca_key" "$ca_crt"
  force=1
fi
chmod 600 "$ca_key"; chmod 644 "$ca_crt"

needs_issue() {
  [ "$force" = 1 ] && return 0
  [ -s "$key" ] && [ -s "$crt" ] || return 0
  openssl verify -CAfile "$ca_crt" "$crt" >/dev/null 2>&1 || return 0
  openssl x509 -in "$crt" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 || return 0
  local have
  have="$(openssl x509 -in "$crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ')"
  local want
  IFS=',' read -ra want <<<"$san"
  for w in "${want[@]}"; do
    local v="${w#*:}"
    if [[ "$w" == IP:* ]]; then
      # openssl prints IPv6 in full form (0:0:0:0:0:0:0:1); compare the loopback by its known spelling.
      [ "$v" = "::1" ] && v="0:0:0:0:0:0:0:1"
      [[ ",$have," == *",IPAddress:$v,"* ]] || return 0
    else
      [[ ",$have," == *",DNS:$v,"* ]] || return 0
    fi
  done
  return 1
}

if needs_issue; then
  echo "generate-certs.sh: issuing a server certificate for $san"
  openssl ecparam -name prime256v1 -genkey -noout -out "$key.tmp"
  openssl req -new -key "$key.tmp" -subj "/CN=${names[0]}" -out "$dir/server.csr"
  ext="$(mktemp)"
  trap 'rm -f "$ext"' EXIT
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=serverAuth"
    echo "subjectAltName=$san"
  } >"$ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$ca_crt" -CAkey "$ca_key" -CAcreateserial \
    -days 825 -sha256 -extfile "$ext" -out "$crt.tmp" 2>/dev/null
  rm -f "$dir/server.csr" "$dir/ca.srl"
  publish "$key" "$crt"
else
  echo "generate-certs.sh: $crt is valid for the requested names; nothing to do"
fi
chmod 600 "$key"; chmod 644 "$crt"
