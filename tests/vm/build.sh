#!/bin/bash
# Builds the floatlock client VM (kernel + initramfs) under tests/vm/cache/.  Run as root.
# Idempotent: a second run with unchanged inputs does nothing.  Uses only Debian packages
# (apt-get install for host tools, apt-get download + dpkg-deb -x for the guest's files).
#
#   tests/vm/build.sh            build if needed
#   FLVM_REBUILD=1 tests/vm/build.sh   rebuild the initramfs (downloads stay cached)
#   FLVM_KERNEL_PKG=linux-image-6.1.0-56-cloud-amd64 tests/vm/build.sh   pin a kernel
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FLVM_CACHE:-$HERE/cache}
DEBS=$CACHE/debs
X=$CACHE/x
ROOT=$CACHE/rootfs
MODULES="sunrpc grace lockd nfs nfsv3 virtio_pci virtio_net"

log() { echo "[vm-build] $*" >&2; }
die() { echo "[vm-build] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$CACHE" "$DEBS" "$X"

apt_get() {
    # Another process may hold the dpkg lock for a while: wait for it.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q "$@"
}

# --- host tools --------------------------------------------------------------------------
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || need_pkgs+=(kmod)
command -v gcc >/dev/null || need_pkgs+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
command -v ip >/dev/null || need_pkgs+=(iproute2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing host tools: ${need_pkgs[*]}"
    apt_get install -y --no-install-recommends "${need_pkgs[@]}"
fi
export PATH=$PATH:/usr/sbin:/sbin

# --- which kernel ------------------------------------------------------------------------
if [ -n "${FLVM_KERNEL_PKG:-}" ]; then
    KPKG=$FLVM_KERNEL_PKG
else
    KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$KPKG" ] && [ -f "$CACHE/kernel-pkg" ]; then
        KPKG=$(cat "$CACHE/kernel-pkg")   # offline: keep what we have
    fi
    [ -n "$KPKG" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update)"
fi
GUEST_PKGS="$KPKG busybox-static nfs-common rpcbind libtirpc3 libtirpc-common netbase"

# --- up to date? -------------------------------------------------------------------------
STAMP=$( { echo "$KPKG"; cat "$HERE/build.sh" "$HERE/guest-init.sh" "$HERE/guest-lib.sh" \
    "$HERE/locktool.c"; } | sha256sum | cut -d' ' -f1)
if [ -z "${FLVM_REBUILD:-}" ] && [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$STAMP" ] \
    && [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initramfs.cpio" ]; then
    log "up to date ($KPKG)"
    exit 0
fi
rm -f "$CACHE/stamp"

# --- runtime libraries of the nfs-utils/rpcbind binaries (libraries only: no daemons) -----
libpkgs=$(apt-cache depends --no-recommends --no-suggests nfs-common rpcbind \
    | awk '$1 == "Depends:" && $2 ~ /^lib/ {print $2}' | sort -u)
missing=()
for p in $libpkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing runtime libraries: ${missing[*]}"
    apt_get install -y --no-install-recommends "${missing[@]}"
fi

# --- download and unpack the guest's packages ----------------------------------------------
for p in $GUEST_PKGS; do
    if ! ls "$DEBS/${p}_"*.deb >/dev/null 2>&1; then
        log "downloading $p"
        (cd "$DEBS" && apt_get -o APT::Sandbox::User=root download "$p")
    fi
    deb=$(ls -t "$DEBS/${p}_"*.deb | head -n1)
    if [ ! -f "$X/$p/.done" ] || [ "$(cat "$X/$p/.done")" != "$(basename "$deb")" ]; then
        rm -rf "${X:?}/$p"
        dpkg-deb -x "$deb" "$X/$p"
        basename "$deb" > "$X/$p/.done"
    fi
done
echo "$KPKG" > "$CACHE/kernel-pkg"

KX=$X/$KPKG
KVER=$(basename "$(ls -d "$KX"/lib/modules/*/ | head -n1)")
[ -n "$KVER" ] && [ -f "$KX/boot/vmlinuz-$KVER" ] || die "no kernel in $KPKG"
log "kernel $KVER"
depmod -b "$KX" "$KVER"

# --- assemble the root filesystem ---------------------------------------------------------
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc/flvm,proc,sys,dev,run,tmp,mnt,var/lib/nfs}
ln -s ../run "$ROOT/var/run"

cp "$X/busybox-static/bin/busybox" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list-full); do
    [ -e "$ROOT/$applet" ] || [ -L "$ROOT/$applet" ] || ln -s /bin/busybox "$ROOT/$applet"
done

# Real binaries (they replace busybox applets of the same name).
put() {  # put SRC DEST-in-guest
    rm -f "$ROOT/$2"
    mkdir -p "$(dirname "$ROOT/$2")"
    cp -L "$1" "$ROOT/$2"
}
NFS=$X/nfs-common
RPCB=$X/rpcbind
BINS=(
    "$NFS/sbin/mount.nfs:/sbin/mount.nfs"
    "$NFS/sbin/rpc.statd:/sbin/rpc.statd"
    "$NFS/sbin/sm-notify:/sbin/sm-notify"
    "$RPCB/sbin/rpcbind:/sbin/rpcbind"
    "$RPCB/usr/sbin/rpcinfo:/usr/sbin/rpcinfo"
    "/usr/bin/flock:/usr/bin/flock"
)
LIBPATH=$X/libtirpc3/lib/x86_64-linux-gnu:$X/libtirpc3/usr/lib/x86_64-linux-gnu
for pair in "${BINS[@]}"; do
    src=${pair%%:*}
    dst=${pair#*:}
    [ -f "$src" ] || die "missing $src"
    put "$src" "$dst"
    out=$(LD_LIBRARY_PATH=$LIBPATH ldd "$src")
    if echo "$out" | grep -q 'not found'; then
        die "unresolved libraries for $src: $(echo "$out" | grep 'not found')"
    fi
    for lib in $(echo "$out" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'); do
        [ -e "$ROOT/lib64/$(basename "$lib")" ] || [ -e "$ROOT/lib/$(basename "$lib")" ] \
            || cp -L "$lib" "$ROOT/lib/"
    done
done
mv "$ROOT/lib/ld-linux-x86-64.so.2" "$ROOT/lib64/" 2>/dev/null || true
ln -s lib "$ROOT/usr/lib"
mkdir -p "$ROOT/lib/x86_64-linux-gnu"   # some tools look here; the loader also reads /lib
cat > "$ROOT/etc/ld.so.conf" <<EOT
/lib
EOT

# Configuration files libtirpc, rpcbind and statd need.
cp "$X/libtirpc-common/etc/netconfig" "$ROOT/etc/netconfig"
for f in services protocols rpc; do cp "$X/netbase/etc/$f" "$ROOT/etc/$f"; done
cat > "$ROOT/etc/passwd" <<'EOT'
root:x:0:0:root:/root:/bin/sh
_rpc:x:102:65534::/run/rpcbind:/bin/false
statd:x:103:65534::/var/lib/nfs:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOT
cat > "$ROOT/etc/group" <<'EOT'
root:x:0:
nogroup:x:65534:
EOT
printf 'passwd: files\ngroup: files\nhosts: files\n' > "$ROOT/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$ROOT/etc/hosts"
: > "$ROOT/etc/fstab"
ln -s /proc/mounts "$ROOT/etc/mtab"

# Kernel modules, in load order.
KROOT=$ROOT/lib/modules/$KVER
mkdir -p "$KROOT"
: > "$ROOT/etc/flvm/modules"
for m in $MODULES; do
    modprobe -d "$KX" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    name=$(basename "$ko")
    case $name in
        *.ko.xz) xz -dc "$ko" > "$KROOT/${name%.xz}"; name=${name%.xz} ;;
        *.ko.zst) zstd -dcq "$ko" > "$KROOT/${name%.zst}"; name=${name%.zst} ;;
        *) cp "$ko" "$KROOT/$name" ;;
    esac
    echo "/lib/modules/$KVER/$name" >> "$ROOT/etc/flvm/modules"
done
log "modules: $(tr '\n' ' ' < "$ROOT/etc/flvm/modules")"

# Our own pieces.
gcc -static -O2 -Wall -Wextra -o "$CACHE/locktool" "$HERE/locktool.c"
cp "$CACHE/locktool" "$ROOT/bin/locktool"
cp "$HERE/guest-init.sh" "$ROOT/init"
cp "$HERE/guest-lib.sh" "$ROOT/etc/flvm/lib.sh"
chmod 755 "$ROOT/init" "$ROOT/bin/locktool"
echo "$KVER" > "$ROOT/etc/flvm/kernel"

# --- pack ---------------------------------------------------------------------------------
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    > "$CACHE/initramfs.cpio.tmp"
mv "$CACHE/initramfs.cpio.tmp" "$CACHE/initramfs.cpio"
cp "$KX/boot/vmlinuz-$KVER" "$CACHE/vmlinuz"
echo "$KVER" > "$CACHE/kernel-version"
echo "$STAMP" > "$CACHE/stamp"
log "done: $CACHE/vmlinuz $CACHE/initramfs.cpio ($(du -h "$CACHE/initramfs.cpio" | cut -f1))"
