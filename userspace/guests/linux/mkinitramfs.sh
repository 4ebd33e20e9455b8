#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The default Linux guest's initramfs: Debian's busybox-static, the programs given
# (into /bin: vmfork-workload), and an /init that mounts the pseudo filesystems, says
# it is up, keeps a ticker running on the console (a process that must go on in every
# clone) and gives a shell on ttyS0.
set -euo pipefail

usage() {
	echo "Usage: $0 OUTPUT.cpio.gz [PROGRAM...]" >&2
	exit 2
}
[ $# -ge 1 ] || usage
out=$1
shift
[ -x /bin/busybox ] || { echo "$0: /bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,root,etc}
cp /bin/busybox "$root/bin/busybox"
for prog in "$@"; do
	cp "$prog" "$root/bin/"
done
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "vmfork-guest: up, $(grep -c ^processor /proc/cpuinfo) cpus"
(
	i=0
	while :; do
		i=$((i + 1))
		echo "vmfork-guest: tick $i"
		sleep 1
	done
) &
exec setsid cttyhack sh
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -9 >"$out.tmp"
mv "$out.tmp" "$out"
