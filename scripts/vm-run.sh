#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run a command inside a QEMU guest that boots one of the Debian kernels of the test
# matrix, with KVM (nested, AMD SVM emulated by TCG) and vmfork.ko loaded. The guest
# sees the host's root filesystem read-only over virtio-9p under a tmpfs overlay, so
# everything built on the host is there at the same path.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/vm-run.sh [OPTIONS] -- CMD [ARG...]
       scripts/vm-run.sh [OPTIONS] --shell

Boots a Debian kernel under QEMU (TCG, -cpu max: kvm_amd works inside), loads kvm,
kvm_amd and build/kmod/<release>/vmfork.ko, runs CMD in the current directory and
exits with CMD's exit status. The run fails (non-zero) when the kernel log shows a
BUG, WARNING, Oops, lockdep, KASAN, UBSAN or hung-task report, or when vmfork.ko
does not unload at the end (leaked objects).

Options:
  --kernel K      6.1 (default), 6.12, a full release from /lib/modules, or debug:
                  the KASAN/lockdep/kmemleak kernel of scripts/debug-kernel.sh
                  (built and cached on first use, about 20-30 min)
  --leak-check    (debug kernel) boot with kmemleak on; after CMD, scan and fail
                  on any leak whose allocation backtrace is in vmfork
  --mem SIZE      guest memory (QEMU -m syntax, default 2G)
  --cpus N        guest vCPUs (default 2)
  --timeout SECS  limit for the whole VM run (default 900): QEMU is stopped and
                  the exit status is 124 (125: the test VM died before CMD ended)
  --no-module     do not load (or require) vmfork.ko
  --shell         interactive shell on the console instead of CMD
  --log FILE      keep the console log in FILE (default build/vm-logs/<time>-<release>.log)
  --share DIR     mount the host directory DIR (created if missing) read-write at the
                  same path in the guest: what CMD writes there persists (make bench)
  -h, --help      this text

QEMU runs single-threaded TCG (VMFORK_TCG_THREAD=single, the default): multi-threaded
TCG let a 6.12 guest execute a stale int3 after jump-label patching ("Oops: int3" in
kmem_cache_alloc while a cgroup was created). VMFORK_TCG_THREAD=multi for nested Linux
guests (docs/testing.md); the guest then pins KVM's apic_sw_disabled static key
(scripts/kvm-pin-keys.py), the one KVM flips as VMs come and go.

Inside the guest: VMFORK_KO=<path of vmfork.ko> and VMFORK_KERNEL=<release>; other
VMFORK_* variables of the caller are passed through. Only one guest runs at a time
(lock: /tmp/vmfork-vm.lock). Cached kernels and initramfs: $VMFORK_CACHE_DIR
(default /var/cache/vmfork).

Examples:
  scripts/vm-run.sh -- lsmod
  scripts/vm-run.sh --kernel 6.12 -- build/selftests/fork_test
  scripts/vm-run.sh --no-module --shell
USAGE
}

die() {
	echo "vm-run: $*" >&2
	exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

kernel=6.1
mem=2G
cpus=2
timeout_secs=900
load_module=1
shell=0
log=
leak_check=0
share=

while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel=${2:?--kernel needs a value}; shift 2 ;;
	--mem) mem=${2:?--mem needs a value}; shift 2 ;;
	--cpus) cpus=${2:?--cpus needs a value}; shift 2 ;;
	--timeout) timeout_secs=${2:?--timeout needs a value}; shift 2 ;;
	--no-module) load_module=0; shift ;;
	--leak-check) leak_check=1; shift ;;
	--shell) shell=1; shift ;;
	--log) log=${2:?--log needs a value}; shift 2 ;;
	--share) share=${2:?--share needs a value}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	*) usage >&2; exit 2 ;;
	esac
done

if [ "$shell" = 0 ] && [ $# -eq 0 ]; then
	usage >&2
	exit 2
fi
[[ "$timeout_secs" =~ ^[0-9]+$ ]] && [ "$timeout_secs" -gt 0 ] || die "bad --timeout '$timeout_secs'"
[[ "$cpus" =~ ^[0-9]+$ ]] || die "bad --cpus '$cpus'"
if [ -n "$share" ]; then
	mkdir -p "$share" || die "cannot create --share $share"
	share=$(cd "$share" && pwd -P)
	[ "$share" != / ] || die "--share / would make the whole host writable"
fi

# --- the kernel ----------------------------------------------------------------------

# Newest installed release of a series ("6.1" -> "6.1.0-56-amd64"), or a full release.
resolve_release() {
	local k=$1 r
	if [ -d "/lib/modules/$k" ]; then
		echo "$k"
		return
	fi
	r=$(find /lib/modules -mindepth 1 -maxdepth 1 -name "$k.*-amd64" -printf '%f\n' |
		sort -V | tail -n1)
	[ -n "$r" ] || die "no kernel $k in /lib/modules: run scripts/deps.sh"
	echo "$r"
}

debug_dir=
guest_modules=
if [ "$kernel" = debug ]; then
	# What the boot needs is built in (no initramfs modules); KVM is a module tree in
	# the cache dir, which stage 2 links to /lib/modules/<release>.
	debug_dir=$("$repo/scripts/debug-kernel.sh" --print-dir) ||
		die "the debug kernel could not be built (scripts/debug-kernel.sh)"
	release=$(cat "$debug_dir/kernelrelease")
	modules=
	guest_modules=$debug_dir/modules
	[ -s "$guest_modules/modules.dep" ] ||
		die "$guest_modules/modules.dep missing: rebuild with scripts/debug-kernel.sh --force"
else
	release=$(resolve_release "$kernel")
	modules=/lib/modules/$release
	vmlinuz=/boot/vmlinuz-$release
	[ -r "$vmlinuz" ] || die "$vmlinuz missing: install linux-image-$release (scripts/deps.sh)"
fi
[ "$leak_check" = 0 ] || [ -n "$debug_dir" ] ||
	die "--leak-check needs kmemleak: use it with --kernel debug"

ko=
if [ "$load_module" = 1 ]; then
	ko=$repo/build/kmod/$release/vmfork.ko
	[ -f "$ko" ] || die "$ko missing: build it with 'make${debug_dir:+ modules-debug}' (or pass --no-module)"
fi

cache=${VMFORK_CACHE_DIR:-/var/cache/vmfork}
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
	cache=$repo/build/vm-cache
	mkdir -p "$cache"
fi

# All temporary files of this run; removed on exit.
run=$(mktemp -d /tmp/vmfork-run.XXXXXX)
qemu_pid=
tail_pid=
cleanup() {
	[ -z "$tail_pid" ] || kill "$tail_pid" 2>/dev/null || true
	[ -z "$qemu_pid" ] || kill "$qemu_pid" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT

# One guest at a time: two would share two cores. Taken before the caches are built,
# so concurrent callers also never build the same cache file twice.
exec {lock_fd}>/tmp/vmfork-vm.lock
if ! flock -n "$lock_fd"; then
	echo "vm-run: waiting for another vmfork VM to finish (/tmp/vmfork-vm.lock)" >&2
	flock "$lock_fd"
fi

# The ELF vmlinux inside the bzImage, booted through PVH (about 3 s faster under TCG
# than letting the bzImage decompress itself). The logic of scripts/extract-vmlinux.
extract_vmlinux() {
	local img=$1 out=$2 tmp=$2.tmp pos
	try_decompress() {
		for pos in $(tr "$1\n$2" "\n$2=" <"$img" | grep -abo "^$2"); do
			pos=${pos%%:*}
			tail -c+"$pos" "$img" | $3 >"$tmp" 2>/dev/null || true
			if readelf -h "$tmp" >/dev/null 2>&1; then
				mv "$tmp" "$out"
				return 0
			fi
		done
		return 1
	}
	try_decompress '\3757zXZ\000' abcde unxz ||
		try_decompress '\037\213\010' xy gunzip ||
		try_decompress '(\265/\375' xxx unzstd ||
		try_decompress '\135\0\0\0' xxx unlzma ||
		{ rm -f "$tmp"; die "cannot find the vmlinux in $img"; }
}

if [ -n "$debug_dir" ]; then
	# Its PVH entry dies before the first console line (KASAN's early shadow,
	# probably): boot the bzImage.
	vmlinux=$debug_dir/bzImage
else
	vmlinux=$cache/vmlinux-$release
	if [ ! -s "$vmlinux" ] || [ "$vmlinuz" -nt "$vmlinux" ]; then
		echo "vm-run: extracting $vmlinuz -> $vmlinux" >&2
		extract_vmlinux "$vmlinuz" "$vmlinux"
	fi
fi

# --- the initramfs -------------------------------------------------------------------

# Stage 1: load virtio-pci, 9p and overlayfs, mount the host root read-only with a
# tmpfs overlay, mount the run directory and switch to stage 2 (guest.sh, below).
read -r -d '' init_script <<'INIT' || true
#!/bin/busybox sh
export PATH=/bin
fail() {
	echo "vmfork-init: $*"
	poweroff -f
}
mount -t proc proc /proc
for m in /lib/vmfork-modules/*.ko; do
	[ -e "$m" ] || continue
	insmod "$m" || fail "insmod $m failed"
done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower ||
	fail "cannot mount the host root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
	fail "cannot mount the overlay root"
mkdir -p /newroot/vmfork-run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmrun /newroot/vmfork-run ||
	fail "cannot mount the run directory (9p tag vmrun)"
# The pseudo filesystems, mounted here with busybox: faster than execs over 9p.
n=/newroot
mount -t proc proc $n/proc
mount -t sysfs sysfs $n/sys
mount -t devtmpfs devtmpfs $n/dev
mkdir -p $n/dev/pts $n/dev/shm
ln -s /proc/self/fd $n/dev/fd
ln -s fd/0 $n/dev/stdin
ln -s fd/1 $n/dev/stdout
ln -s fd/2 $n/dev/stderr
mount -t devpts devpts $n/dev/pts
mount -t tmpfs tmpfs $n/dev/shm
mount -t debugfs debugfs $n/sys/kernel/debug
mount -t tracefs tracefs $n/sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 $n/sys/fs/cgroup 2>/dev/null
hostname vmfork-vm
umount /proc
exec switch_root /newroot /bin/bash /vmfork-run/guest.sh
INIT

# Modules for stage 1 in load order (dependencies first), from modules.dep; a module
# built in (modules.builtin) is skipped. Prints paths relative to $modules.
initramfs_modules() {
	local seen=" " m path deps d i
	[ -n "$modules" ] || return 0
	for m in virtio_pci 9pnet_virtio 9p overlay; do
		if grep -qE "/$m\.ko(\.[a-z]+)?$" "$modules/modules.builtin"; then
			continue
		fi
		path=$(grep -E "^[^:]*/$m\.ko(\.[a-z]+)?:" "$modules/modules.dep") ||
			die "module $m not found for $release"
		read -r -a deps <<<"${path#*:}"
		# modules.dep lists the dependencies so that the last one loads first.
		for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
			d=${deps[i]}
			[[ "$seen" == *" $d "* ]] || { echo "$d"; seen+="$d "; }
		done
		path=${path%%:*}
		[[ "$seen" == *" $path "* ]] || { echo "$path"; seen+="$path "; }
	done
}

mod_list=$(initramfs_modules)
initramfs_key=$(
	{
		echo "$init_script"
		echo "$release"
		stat -L -c '%n %s %Y' /bin/busybox
		for m in $mod_list; do stat -c '%n %s %Y' "$modules/$m"; done
	} | sha256sum | cut -c1-16
)
initramfs=$cache/initramfs-$release-$initramfs_key.cpio

build_initramfs() {
	local root=$run/initramfs n=10 m name a
	mkdir -p "$root"/{bin,dev,proc,lib/vmfork-modules}
	cp /bin/busybox "$root/bin/busybox"
	for a in sh mount umount mkdir insmod switch_root poweroff hostname ln; do
		ln -s busybox "$root/bin/$a"
	done
	mknod "$root/dev/console" c 5 1
	printf '%s\n' "$init_script" >"$root/init"
	chmod 755 "$root/init"
	for m in $mod_list; do
		name=$(basename "$m")
		name=$n-${name%%.ko*}.ko
		case "$m" in
		*.ko.xz) xz -dc "$modules/$m" >"$root/lib/vmfork-modules/$name" ;;
		*.ko.zst) zstd -qdc "$modules/$m" >"$root/lib/vmfork-modules/$name" ;;
		*.ko.gz) gzip -dc "$modules/$m" >"$root/lib/vmfork-modules/$name" ;;
		*) cp "$modules/$m" "$root/lib/vmfork-modules/$name" ;;
		esac
		n=$((n + 1))
	done
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$initramfs.tmp"
	mv "$initramfs.tmp" "$initramfs"
	rm -rf "$root"
}

if [ ! -s "$initramfs" ]; then
	echo "vm-run: building $initramfs" >&2
	rm -f "$cache/initramfs-$release-"*.cpio
	build_initramfs
fi

# --- the run directory (second 9p share, writable) ----------------------------------

guest_timeout=$timeout_secs
[ "$timeout_secs" -le 90 ] || guest_timeout=$((timeout_secs - 45))

{
	echo "#!/bin/bash"
	printf 'export VMFORK_KERNEL=%q VMFORK_KO=%q\n' "$release" "$ko"
	while IFS= read -r var; do
		case "$var" in
		VMFORK_KERNEL | VMFORK_KO) ;;
		*) printf 'export %s=%q\n' "$var" "${!var}" ;;
		esac
	done < <(compgen -e | grep '^VMFORK_' || true)
	printf 'cd %q || exit 126\n' "$PWD"
	if [ $# -gt 0 ]; then
		printf 'exec'
		printf ' %q' "$@"
		printf '\n'
	fi
} >"$run/cmd.sh"

{
	echo "#!/bin/bash"
	printf 'RELEASE=%q KO=%q SHELL_MODE=%q TIMEOUT=%q WORKDIR=%q LEAK_CHECK=%q SHARE=%q GUEST_MODULES=%q TCG_THREAD=%q PIN=%q\n' \
		"$release" "$ko" "$shell" "$guest_timeout" "$PWD" "$leak_check" "$share" "$guest_modules" \
		"${VMFORK_TCG_THREAD:-single}" "$repo/scripts/kvm-pin-keys.py"
	cat <<'GUEST'
# Stage 2, PID 1 on the overlay root (pseudo filesystems mounted by stage 1): load kvm,
# kvm_amd and vmfork.ko, run the command, unload vmfork.ko, report, power off.
R=/vmfork-run
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=${TERM:-linux}
say() { echo "vmfork-guest: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
status() { echo "$*" >>$R/status; say "$*"; }

ip link set lo up 2>/dev/null
# --share: the host directory, writable, at the same path (over the overlay's view).
if [ -n "$SHARE" ]; then
	mkdir -p "$SHARE" &&
		mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmshare "$SHARE" ||
		status "cannot mount the --share directory $SHARE (9p tag vmshare)"
fi

say "stage 2 started"
rc=125
ready=0
# KVM takes the host's TSC rate as its vCPUs' default when it loads. Loaded before the
# refined calibration, off by more than 250 ppm and without TSC scaling (nested SVM
# under TCG), it leaves every vCPU with a zero TSC multiplier: KVM_GET_MSRS reads
# MSR_IA32_TSC as 0 while the guest's RDTSC runs on. So wait (bounded) for the refined
# calibration before loading kvm_amd.
for _ in $(seq 60); do
	[ "$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)" != tsc-early ] &&
		break
	sleep 0.5
done
# The debug kernel's modules live in its cache dir (seen here through the host root).
if [ -n "$GUEST_MODULES" ] && [ ! -e "/lib/modules/$RELEASE" ]; then
	mkdir -p /lib/modules && ln -s "$GUEST_MODULES" "/lib/modules/$RELEASE" ||
		status "cannot link /lib/modules/$RELEASE to $GUEST_MODULES"
fi
if [ ! -c /dev/kvm ] && ! modprobe kvm_amd; then
	status "modprobe kvm_amd failed"
elif [ ! -c /dev/kvm ]; then
	status "no /dev/kvm after loading kvm_amd"
elif [ -n "$KO" ] && ! insmod "$KO"; then
	status "insmod $KO failed"
else
	say "kvm_amd${KO:+ and vmfork} loaded"
	ready=1
	# The Linux guests' vsock device (vmfork exec) is backed by vhost-vsock, their
	# network device (--net tap) by vhost-net on a tap.
	[ -c /dev/vhost-vsock ] || modprobe vhost_vsock || status "modprobe vhost_vsock failed"
	[ -c /dev/vhost-net ] || modprobe vhost_net || status "modprobe vhost_net failed"
	[ -c /dev/net/tun ] || modprobe tun || status "modprobe tun failed"
	# Multi-threaded TCG runs stale int3s after code patching: keep KVM's
	# apic_sw_disabled static key from flipping (scripts/kvm-pin-keys.py).
	if [ "$TCG_THREAD" = multi ]; then
		python3 "$PIN" >$R/pin.log 2>&1 &
		for _ in $(seq 50); do
			grep -q holding $R/pin.log 2>/dev/null && break
			sleep 0.1
		done
		grep -q holding $R/pin.log || status "kvm-pin-keys did not start: $(cat $R/pin.log)"
	fi
fi
if [ "$ready" = 1 ]; then
	if [ "$SHELL_MODE" = 1 ]; then
		say "shell on the console; leave it with 'exit' (or Ctrl-A x)"
		cd "$WORKDIR" 2>/dev/null || cd /
		. $R/cmd.sh
		setsid -c bash -l </dev/ttyS0 >/dev/ttyS0 2>&1
		rc=$?
	else
		say "running the command"
		timeout -k 10 "$TIMEOUT" bash $R/cmd.sh </dev/null >$R/output 2>&1
		rc=$?
		[ "$rc" != 124 ] || status "command timed out after ${TIMEOUT}s"
		say "command exited with status $rc"
	fi
	# Leftover processes would keep vmfork objects (and the module) alive.
	kill -KILL -1 2>/dev/null
	sleep 0.2
	# The figures of whatever is left, and (debug kernel) a lock-order witness:
	# this takes vmfork_objects_lock and each object's lock.
	[ -z "$KO" ] || cat /sys/kernel/debug/vmfork/objects >$R/objects 2>&1
	if [ "$LEAK_CHECK" = 1 ]; then
		# kmemleak reports objects unreferenced for 5 s or more; scan twice.
		say "kmemleak: scanning"
		sleep 6
		echo scan >/sys/kernel/debug/kmemleak
		echo scan >/sys/kernel/debug/kmemleak
		cat /sys/kernel/debug/kmemleak >$R/kmemleak
		if grep -qE '\[vmfork\]|vmfork_' $R/kmemleak; then
			status "kmemleak: vmfork leaked memory (see the kmemleak report in the log)"
		fi
		say "kmemleak: $(grep -c 'unreferenced object' $R/kmemleak) unreferenced objects in all"
	fi
	if [ -n "$KO" ] && ! rmmod vmfork; then
		status "rmmod vmfork failed: objects leaked or module busy"
	fi
fi
dmesg >$R/dmesg
echo "$rc" >$R/rc
sync
/bin/busybox poweroff -f
GUEST
} >"$run/guest.sh"
chmod 755 "$run/guest.sh" "$run/cmd.sh"
: >"$run/output"

# --- boot ----------------------------------------------------------------------------

if [ -z "$log" ]; then
	mkdir -p "$repo/build/vm-logs"
	log=$repo/build/vm-logs/$(date +%Y%m%d-%H%M%S)-$release.log
	# Keep the newest 100 logs.
	find "$repo/build/vm-logs" -name '*.log' -printf '%T@ %p\n' | sort -rn |
		tail -n +101 | cut -d' ' -f2- | xargs -r rm -f
fi
: >"$log"

cmdline="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init mitigations=off"
cmdline+=" tsc=reliable i8042.noaux i8042.nokbd i8042.nopnp"
if [ -n "$debug_dir" ]; then
	# kmemleak doubles the run time: on only for leak checks.
	if [ "$leak_check" = 1 ]; then cmdline+=" kmemleak=on"; else cmdline+=" kmemleak=off"; fi
fi

# la57=off: 4-level paging. With LA57, identify_cpu() clears the CPU feature words for
# a moment during boot; pgtable_l5_enabled() then reads false, and an interrupt in that
# window makes KASAN take a direct-map address for a wild access (seen on the debug
# kernel at 0.002 s: "wild-memory-access in do_raw_spin_lock"). The tests need no LA57.
qemu=(
	qemu-system-x86_64 -nodefaults -no-user-config -no-reboot
	-M q35 -cpu "max,la57=off" -accel "tcg,thread=${VMFORK_TCG_THREAD:-single}" -smp "$cpus" -m "$mem"
	-kernel "$vmlinux" -initrd "$initramfs" -append "$cmdline"
	-display none -monitor none
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
	-virtfs "local,path=$run,mount_tag=vmrun,security_model=none,multidevs=remap"
)
[ -z "$share" ] ||
	qemu+=(-virtfs "local,path=$share,mount_tag=vmshare,security_model=none,multidevs=remap")
[ ! -r /usr/share/qemu/qboot.rom ] || qemu+=(-bios /usr/share/qemu/qboot.rom)

start=$(date +%s.%N)
if [ "$shell" = 1 ]; then
	qemu_rc=0
	"${qemu[@]}" -serial mon:stdio || qemu_rc=$?
else
	timeout -k 10 "$timeout_secs" "${qemu[@]}" -serial "file:$log" </dev/null &
	qemu_pid=$!
	tail -n +1 -F -s 0.2 --pid="$qemu_pid" "$run/output" 2>/dev/null &
	tail_pid=$!
	qemu_rc=0
	wait "$qemu_pid" || qemu_rc=$?
	qemu_pid=
	wait "$tail_pid" || true
	tail_pid=
fi
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
console_tail=$(tail -n 20 "$log")

{
	echo
	echo "==== vm-run: guest dmesg ===="
	cat "$run/dmesg" 2>/dev/null || echo "(none: the guest did not finish)"
	if [ -s "$run/objects" ]; then
		echo "==== vm-run: /sys/kernel/debug/vmfork/objects before rmmod ===="
		cat "$run/objects"
	fi
	if [ -s "$run/kmemleak" ]; then
		echo "==== vm-run: kmemleak report ===="
		cat "$run/kmemleak"
	fi
	echo "==== vm-run: status ===="
	cat "$run/status" 2>/dev/null || true
	echo "rc=$(cat "$run/rc" 2>/dev/null || echo none) qemu_rc=$qemu_rc elapsed=${elapsed}s"
} >>"$log"

# --- verdict -------------------------------------------------------------------------

if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
	echo "vm-run: timeout: QEMU stopped after ${timeout_secs}s; console log: $log" >&2
	exit 124
fi

failed=0
bad='BUG:|WARNING:|Oops|Call Trace|KASAN|possible circular locking|INFO: task .* blocked|UBSAN|kernel BUG'
bad+='|inconsistent lock state|possible recursive locking|DEBUG_LOCKS_WARN_ON|list_(add|del) corruption'
bad+='|Bad page state|page dumped because|ODEBUG:'
if grep -qE "$bad" "$log"; then
	echo "vm-run: kernel reported problems ($release):" >&2
	grep -nE "$bad" "$log" | head -n 20 >&2
	failed=1
fi
if [ -s "$run/status" ]; then
	sed 's/^/vm-run: guest: /' "$run/status" >&2
	failed=1
fi

if [ ! -s "$run/rc" ]; then
	echo "vm-run: the guest did not report an exit status (crash or panic?)" >&2
	sed 's/^/  | /' <<<"$console_tail" >&2
	echo "vm-run: console log: $log" >&2
	exit 125
fi
rc=$(cat "$run/rc")
if [ "$failed" = 1 ]; then
	echo "vm-run: console log: $log" >&2
	[ "$rc" != 0 ] || rc=1
fi
exit "$rc"
