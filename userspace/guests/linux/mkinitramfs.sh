#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The default Linux guest's initramfs: Debian's busybox-static, the programs given
# (into /bin: vmfork-workload, vmfork-agent; e2fsck if e2fsck-static is installed), the
# virtio-mmio, -blk, -net, -vsock and ext4 modules of every kernel installed here
# (/lib/modules/RELEASE, decompressed, with the order to load them in), and an /init
# that mounts the pseudo filesystems, loads the modules of the running kernel, brings up
# eth0 (vmfork.ip=), starts vmfork-agent, says it is up, keeps a ticker running on the
# console (a process that must go on in every clone; its pid in
# /run/vmfork-ticker.pid) and gives a shell on ttyS0.
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
# e2fsck, static (e2fsck-static): the Linux CLI test checks clones' filesystems.
[ ! -x /sbin/e2fsck.static ] || cp /sbin/e2fsck.static "$root/bin/e2fsck"
for prog in "$@"; do
	# Without debug symbols: the initramfs is unpacked at every boot.
	strip -o "$root/bin/$(basename "$prog")" "$prog"
done

# The modules virtio-blk, virtio-net and vsock need, in load order (dependencies
# first), per kernel release.
# inet_diag and tcp_diag: the agent resets a clone's TCP connections through them; ext4
# and what it needs, for filesystems on disks.
mods=(virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net vsock
	vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport inet_diag tcp_diag
	crc16 mbcache jbd2 crc32c_generic ext4)
for dir in /lib/modules/*/; do
	rel=$(basename "$dir")
	[ -f "$dir/modules.dep" ] || continue
	dest=$root/lib/modules/$rel
	mkdir -p "$dest"
	for m in "${mods[@]}"; do
		# Built in (6.12's virtio) or absent: nothing to load.
		path=$(grep -E "(^|/)$m\.ko(\.xz)?:" "$dir/modules.dep" | cut -d: -f1) || continue
		[ -n "$path" ] || continue
		case $path in
		*.xz) xz -dc "$dir/$path" >"$dest/$m.ko" ;;
		*) cp "$dir/$path" "$dest/$m.ko" ;;
		esac
		echo "$m" >>"$dest/load"
	done
done
# A machine-id, as an installed system has one: each clone's agent replaces it.
od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
echo >>"$root/etc/machine-id"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
# virtio-blk, and vsock for vmfork-agent (vmfork exec): the modules of this kernel, if
# built here.
if [ -f "/lib/modules/$(uname -r)/load" ]; then
	while read -r m; do
		[ -d "/sys/module/$m" ] || insmod "/lib/modules/$(uname -r)/$m.ko" ||
			echo "vmfork-guest: insmod $m failed"
	done <"/lib/modules/$(uname -r)/load"
fi
# root=/dev/vdX (a disk, vmfork run --disk): that filesystem becomes / and its init (or
# the init= one) runs, as an initramfs of a distribution does it. A disk made from this
# initramfs runs this script again there: VMFORK_ROOT says it is done.
root='' rootinit=/sbin/init
for arg in $(cat /proc/cmdline); do
	case $arg in
	root=/dev/*) root=${arg#root=} ;;
	init=*) rootinit=${arg#init=} ;;
	esac
done
if [ -n "$root" ] && [ -z "$VMFORK_ROOT" ]; then
	mkdir -p /newroot
	if ! mount -o rw "$root" /newroot; then
		echo "vmfork-guest: cannot mount root=$root: going on from the initramfs"
	elif [ ! -e "/newroot$rootinit" ] && [ ! -L "/newroot$rootinit" ]; then
		echo "vmfork-guest: root=$root has no $rootinit: going on from the initramfs"
		umount /newroot
	else
		export VMFORK_ROOT="$root"
		mount --move /proc /newroot/proc && mount --move /sys /newroot/sys &&
			mount --move /dev /newroot/dev
		exec switch_root /newroot "$rootinit"
	fi
fi
# The network (vmfork run --net): eth0 up, with the address (and gateway) of
# vmfork.ip=ADDR/PREFIX[,GATEWAY] on the kernel command line.
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
	ip link set eth0 up
	for arg in $(cat /proc/cmdline); do
		case $arg in
		vmfork.ip=*)
			v=${arg#vmfork.ip=}
			ip addr add "${v%%,*}" dev eth0 || echo "vmfork-guest: bad $arg"
			case $v in *,*) ip route add default via "${v#*,}" ;; esac
			;;
		esac
	done
fi
if [ -x /bin/vmfork-agent ] && [ -e /dev/vsock ]; then
	vmfork-agent >/dev/null 2>&1 &
fi
echo "vmfork-guest: up, $(grep -c ^processor /proc/cpuinfo) cpus"
(
	i=0
	while :; do
		i=$((i + 1))
		echo "vmfork-guest: tick $i"
		sleep 1
	done
) &
# Tests stop it where they need a quiet guest.
mkdir -p /run && echo $! >/run/vmfork-ticker.pid
exec setsid cttyhack sh
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -9 >"$out.tmp"
mv "$out.tmp" "$out"
