#!/bin/sh
# PID 1 of the floatlock client VM (busybox sh). Part of the floatlock test suite (MIT).
# Per-run settings come from /flvm/env and the test's script is /flvm/script.sh; both are in
# a small cpio archive that tests/vm/guest.py appends to the cached initramfs for each boot.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
umask 022

poweroff_now() {
    echo "@@FLVM POWEROFF@@"
    poweroff -f
    sleep 2
    reboot -f
}
fail() {
    echo "@@FLVM INIT FAILED: $*@@"
    [ -f /run/messages ] && cat /run/messages
    poweroff_now
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/rpcbind /run/mount /var/lib/nfs/sm /var/lib/nfs/sm.bak /mnt

FLVM_GUEST_ADDR=198.18.0.2
FLVM_PREFIX=24
FLVM_HOSTNAME=flvm-client
FLVM_STATD_ARGS="--no-notify"
FLVM_HOSTS=""
[ -f /flvm/env ] && . /flvm/env

echo "@@FLVM INIT $(cut -d' ' -f1 /proc/uptime)@@"
while read -r mod; do
    insmod "$mod" || fail "insmod $mod"
done < /etc/flvm/modules

hostname "$FLVM_HOSTNAME"
echo "$FLVM_GUEST_ADDR $FLVM_HOSTNAME" >> /etc/hosts
[ -n "$FLVM_HOSTS" ] && printf '%s\n' "$FLVM_HOSTS" >> /etc/hosts
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ]; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail "no eth0"
    sleep 0.1
done
ip addr add "$FLVM_GUEST_ADDR/$FLVM_PREFIX" dev eth0 || fail "ip addr"
ip link set eth0 up || fail "ip link"

syslogd -O /run/messages
rpcbind -w || fail "rpcbind"
# Daemonizes by default; with -F (and -d: log to stderr) it stays in the background here and
# logs to the console. Either way, readiness is its registration with rpcbind.
# shellcheck disable=SC2086
rpc.statd $FLVM_STATD_ARGS &
i=0
until rpcinfo -p 127.0.0.1 2>/dev/null | grep -q ' 100024 '; do
    i=$((i + 1))
    [ $i -gt 100 ] && fail "rpc.statd did not register"
    sleep 0.1
done

echo "@@FLVM READY $(cut -d' ' -f1 /proc/uptime)@@"
echo "@@FLVM SCRIPT BEGIN@@"
sh -c '. /etc/flvm/lib.sh; . /flvm/script.sh' </dev/null
rc=$?
echo "@@FLVM SCRIPT END rc=$rc@@"
if [ -n "$FLVM_DUMP_SYSLOG" ] || [ $rc -ne 0 ]; then
    echo "@@FLVM SYSLOG BEGIN@@"
    cat /run/messages 2>/dev/null
    echo "@@FLVM SYSLOG END@@"
fi
poweroff_now
