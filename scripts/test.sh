#!/usr/bin/env bash
# Install every test dependency (Debian packages and pip) and run the whole suite:
# lint, types, unit, integration on real sockets, and interop with real peers.
# Idempotent; needs root (network namespaces, port 111, apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  rpcbind nfs-common rpcsvc-proto libtirpc-dev tshark iproute2 util-linux procps
  qemu-system-x86 busybox-static cpio kmod gcc libc6-dev xz-utils nfs-ganesha nfs-ganesha-vfs
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's rpcbind and nfs-common packages may start daemons on install; the tests run their
# own inside network namespaces.  On a CI machine nothing else may hold port 111; elsewhere we
# leave the host's daemons alone.
if [ "${CI:-}" = "true" ]; then
  pkill -x rpcbind 2>/dev/null || true
  pkill -x rpc.statd 2>/dev/null || true
fi

echo "== pip install"
python3 -m pip install -q --disable-pip-version-check -e ".[test]"

if [ -x tests/vm/build.sh ]; then
  echo "== building the Linux client VM image"
  tests/vm/build.sh
fi

echo "== ruff"
python3 -m ruff check src tests bench
python3 -m ruff format --check src tests bench
echo "== mypy --strict"
python3 -m mypy
echo "== pytest"
python3 -m pytest -q -p no:cacheprovider "$@"
