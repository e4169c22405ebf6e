#!/usr/bin/env bash
# Installs the real servers and tools the test suite talks to, when missing.
# Debian packages: memcached, libmemcached-tools (memccapable, memcaslap), nutcracker,
# redis-server and redis-tools (redis-benchmark), stunnel4 (TLS benchmark), openssl (the TLS tests' client).
set -u
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have memcached       || need+=(memcached)
have memccapable     || need+=(libmemcached-tools)
have nutcracker      || need+=(nutcracker)
have redis-server    || need+=(redis-server)
have redis-benchmark || need+=(redis-tools)
have stunnel4        || need+=(stunnel4)   # benchmarks/bench_tls.py compares hoard tls with it
have openssl         || need+=(openssl)    # tests/test_tls_*.py drive `openssl s_client`
if [ ${#need[@]} -eq 0 ]; then
    echo "system deps: all present"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "system deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    echo "system deps: tests that need them will fail under CI and be skipped elsewhere" >&2
    exit 0
fi
echo "system deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged services; the tests start their own on free ports.
for svc in memcached redis-server nutcracker; do
    (command -v systemctl >/dev/null && systemctl stop "$svc" >/dev/null 2>&1) || true
    (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
done
echo "system deps: done"
