#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (once per machine) the debug kernel the tests boot under QEMU: Debian's
# linux-source-6.1 with KASAN, lockdep, kmemleak, fault injection and everything the VM
# runner needs to boot built in (KVM is a module, as in Debian's kernels). The result
# is cached outside the checkout, keyed by the source package version, the compiler,
# scripts/debug.config and this script's recipe version.
set -euo pipefail

# Bump when the build recipe below changes in a way that changes the result.
RECIPE_VERSION=2

SRC_PKG=linux-source-6.1
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
CACHE_ROOT=${VMFORK_DEBUG_KERNEL_CACHE:-/var/cache/vmfork/debug-kernel}
NICE=${VMFORK_DEBUG_KERNEL_NICE:-19}
# Roughly how many "CC" lines a full build logs (for the progress percentage only).
EXPECTED_CC=2050
PROGRESS_EVERY=60

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/debug.config

usage() {
	cat <<'USAGE'
Usage: scripts/debug-kernel.sh [--print-dir] [--force]

Builds the vmfork debug kernel (Debian linux-source-6.1 + scripts/debug.config:
KASAN, lockdep, kmemleak, fault injection, virtio/9p/overlay built in, KVM as
modules) out of tree, once per machine, under /var/cache/vmfork/debug-kernel/<key>/
(override with VMFORK_DEBUG_KERNEL_CACHE). A cached build is reused silently.
Concurrent callers wait for one build and share it; an interrupted build resumes on
the next call.

The cache dir holds:
  vmlinux         ELF with a PVH entry note: boot with qemu -kernel vmlinux
  bzImage         the compressed image
  kernelrelease   the release string (uname -r in the guest)
  build/          the O= build tree: make -C <dir>/build M=$PWD modules
  modules/        the installed modules (kvm, kvm-amd, ...) with their modules.dep:
                  the VM runner points /lib/modules/<release> at it
  config          the final .config
  build.log       the full make log

  --print-dir   print the cache dir (building first if needed), nothing else on stdout
  --force       rebuild from scratch even if a build is cached
  -h, --help    this text
USAGE
}

print_dir=0
force=0
while [ $# -gt 0 ]; do
	case "$1" in
	--print-dir) print_dir=1 ;;
	--force) force=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

die() { echo "debug-kernel: $*" >&2; exit 1; }
say() { echo "debug-kernel: $*" >&2; }

[ -r "$SRC_TARBALL" ] || die "$SRC_TARBALL missing: run scripts/deps.sh"
[ -r "$fragment" ] || die "$fragment missing"
src_version=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null) ||
	die "$SRC_PKG is not installed: run scripts/deps.sh"
cc_version=$(gcc --version | head -n1)
key=$({
	echo "recipe=$RECIPE_VERSION"
	echo "src=$SRC_PKG $src_version"
	echo "cc=$cc_version"
	cat "$fragment"
} | sha256sum | cut -c1-16)
dir=$CACHE_ROOT/$key
build=$dir/build
log=$dir/build.log

finish() {
	if [ "$print_dir" = 1 ]; then echo "$dir"; fi
	exit 0
}

if [ "$force" = 0 ] && [ -e "$dir/done" ]; then finish; fi

if ! mkdir -p "$CACHE_ROOT" 2>/dev/null || [ ! -w "$CACHE_ROOT" ]; then
	die "cannot write $CACHE_ROOT (run as root or set VMFORK_DEBUG_KERNEL_CACHE)"
fi

# One builder per key; later callers wait and then reuse its result. The lock file
# lives beside the build dir so --force can remove the dir while holding it.
exec 9>"$CACHE_ROOT/$key.lock"
if ! flock -n 9; then
	say "another process is building this kernel; waiting for it ($dir)"
	flock 9
fi
if [ "$force" = 0 ] && [ -e "$dir/done" ]; then finish; fi

make_pid=
# shellcheck disable=SC2317 # invoked through the trap
cleanup() {
	local rc=$?
	if [ -n "$make_pid" ] && kill -0 "$make_pid" 2>/dev/null; then
		# make runs in its own process group (setsid): stop all of it.
		kill -TERM -- "-$make_pid" 2>/dev/null || true
		wait "$make_pid" 2>/dev/null || true
	fi
	if [ "$rc" != 0 ] && [ -e "$log" ]; then
		if [ "$rc" = 130 ] || [ "$rc" = 143 ]; then
			echo "debug-kernel: build interrupted" >&2
		else
			echo "debug-kernel: build FAILED (rc=$rc); last lines of $log:" >&2
			tail -n 40 "$log" >&2 || true
		fi
		echo "debug-kernel: the next call resumes it; --force starts over" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$force" = 1 ] && [ -e "$dir" ]; then
	say "--force: removing $dir"
	rm -rf "$dir"
fi
# A build that failed twice in a row starts over from a clean tree.
if [ -e "$dir/failed" ]; then
	if [ "$(cat "$dir/failed")" -ge 2 ] 2>/dev/null; then
		say "previous builds failed twice: cleaning the build tree"
		rm -rf "$build" "$dir/failed"
	fi
fi
mkdir -p "$dir"

start=$(date +%s)
: >"$log"

# Run a make step in the build tree, output to the log.
kmake() { make -C "$dir/src" O="$build" "$@" >>"$log" 2>&1; }

# 1. Source: extracted once into the cache dir (kept: the O= tree refers to it).
if [ ! -e "$dir/src/.extracted" ]; then
	say "extracting $SRC_PKG $src_version"
	rm -rf "$dir/src" "$dir/src.tmp"
	mkdir -p "$dir/src.tmp"
	tar -I 'xz -T0' -xf "$SRC_TARBALL" -C "$dir/src.tmp" --strip-components=1
	touch "$dir/src.tmp/.extracted"
	mv "$dir/src.tmp" "$dir/src"
fi
mkdir -p "$build"

# 2. Configuration: defconfig + kvm_guest.config + our fragment, then check it.
kmake defconfig || die "make defconfig failed (see $log)"
kmake kvm_guest.config || die "make kvm_guest.config failed (see $log)"
"$dir/src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment" \
	>>"$log" 2>&1 || die "merge_config.sh failed (see $log)"
kmake olddefconfig || die "make olddefconfig failed (see $log)"

# Every line of the fragment must hold in the final .config.
check_config() {
	local cfg=$1 line sym bad=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*)
			sym=${line%%=*}
			if [ "${line#*=}" = n ]; then
				if grep -q "^$sym=" "$cfg"; then
					echo "  wanted $sym off, got: $(grep "^$sym=" "$cfg")" >&2; bad=1
				fi
			elif ! grep -qxF -- "$line" "$cfg"; then
				echo "  wanted $line, got: $(grep -E "^(# )?${sym}[= ]" "$cfg" ||
					echo 'absent (unmet dependency?)')" >&2
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			sym=${line#\# }
			sym=${sym%% *}
			if grep -q "^$sym=" "$cfg"; then
				echo "  wanted $sym off, got: $(grep "^$sym=" "$cfg") (selected by another option?)" >&2
				bad=1
			fi
			;;
		esac
	done <"$fragment"
	return $bad
}
check_config "$build/.config" ||
	die "the final .config lacks options requested by $fragment (see above)"

# 3. The build: vmlinux, bzImage, modules, Module.symvers (a full build includes
# modules_prepare, so the tree works as KDIR for out-of-tree modules).
jobs=$(($(nproc) + 1))
version=$(make -s -C "$dir/src" kernelversion 2>>"$log")
say "building $version$(sed -n 's/^CONFIG_LOCALVERSION="\(.*\)"$/\1/p' "$build/.config")" \
	"with KASAN+lockdep+kmemleak (about 20 min on 2 cores, make -j$jobs," \
	"nice $NICE); log: $log"
# setsid gives make a session, and so (CONFIG_SCHED_AUTOGROUP, on in Debian's kernels)
# a scheduling group of its own, which competes with the caller's group as an equal
# whatever its tasks' nice: the new group is lowered too (from inside it), or a build
# in the background of make check takes half the CPU from the tests (the package
# build took twice as long beside it).
# shellcheck disable=SC2016 # expanded by the inner shell
setsid sh -c 'n=$1; shift; echo "$n" >/proc/self/autogroup 2>/dev/null; exec nice -n "$n" "$@"' \
	sh "$NICE" make -C "$dir/src" O="$build" -j"$jobs" all >>"$log" 2>&1 &
make_pid=$!
while kill -0 "$make_pid" 2>/dev/null; do
	for _ in $(seq "$PROGRESS_EVERY"); do
		sleep 1
		kill -0 "$make_pid" 2>/dev/null || break
	done
	kill -0 "$make_pid" 2>/dev/null || break
	n=$(grep -c '^  CC ' "$log" || true)
	pct=$((n * 100 / EXPECTED_CC))
	[ "$pct" -le 99 ] || pct=99
	last=$({ grep '^  [A-Z]' "$log" || true; } | tail -n1 | awk '{print $2}')
	say "$((($(date +%s) - start) / 60)) min: $n files compiled (~$pct%), at ${last:-...}"
done
rc=0
wait "$make_pid" || rc=$?
make_pid=
if [ "$rc" != 0 ]; then
	# Count real failures (not interruptions): the second one in a row starts over.
	echo $(($(cat "$dir/failed" 2>/dev/null || echo 0) + 1)) >"$dir/failed"
	die "make failed (rc=$rc)"
fi

# 4. Results, checked before the done-marker is written.
check_config "$build/.config" || die "the .config changed during the build"
for f in vmlinux arch/x86/boot/bzImage Module.symvers scripts/mod/modpost; do
	[ -s "$build/$f" ] || die "build tree lacks $f"
done
readelf -n "$build/vmlinux" | grep -q 'Xen.*0x00000012\|PHYS32_ENTRY' ||
	die "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): cannot boot with -kernel"
cp -f "$build/vmlinux" "$dir/vmlinux"
cp -f "$build/arch/x86/boot/bzImage" "$dir/bzImage"
cp -f "$build/.config" "$dir/config"
release=$(cat "$build/include/config/kernel.release")
rm -rf "$dir/modroot"
kmake INSTALL_MOD_PATH="$dir/modroot" INSTALL_MOD_STRIP=1 DEPMOD=/sbin/depmod \
	modules_install || die "make modules_install failed (see $log)"
rm -rf "$dir/modules"
mv "$dir/modroot/lib/modules/$release" "$dir/modules"
rm -rf "$dir/modroot"
# The links back into the build tree would leave the cache dir in the guest's view.
rm -f "$dir/modules/build" "$dir/modules/source"
[ -s "$dir/modules/kernel/arch/x86/kvm/kvm-amd.ko" ] ||
	die "modules_install left no kvm-amd.ko (is CONFIG_KVM_AMD=m?)"
grep -q 'kvm-amd.ko:.*kvm.ko' "$dir/modules/modules.dep" ||
	die "no modules.dep entry for kvm-amd.ko (depmod from the kmod package missing?)"
echo "$release" >"$dir/kernelrelease"
rm -f "$dir/failed"
sync -f "$dir/vmlinux" 2>/dev/null || true
echo "key=$key recipe=$RECIPE_VERSION src=$SRC_PKG $src_version cc=$cc_version" \
	"built=$(date -u +%FT%TZ) seconds=$(($(date +%s) - start))" >"$dir/done"
say "built $release in $((($(date +%s) - start) / 60)) min: $dir"
finish
