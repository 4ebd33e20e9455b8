#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make fuzz: the long fuzz runs of vmfork.ko, each in a fresh test VM.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/fuzz.sh [--ops N] [--seed S] [--trinity N] [KERNEL...]

For each KERNEL (default: 6.1 6.12 debug) a test VM runs
  1. build/selftests/fuzz_test with N operations (default 2000000) from 4 threads
     and forked processes: ioctls, mappings, I/O, fallocate, fd passing, netlink
     (VMFORK_FUZZ_SEED=S reproduces each thread's operations; the seed is printed);
  2. trinity, an independent syscall fuzzer, on /dev/vmfork for N syscalls (default
     200000) from 4 children as user nobody (ioctl, mmap, read/write and friends);
  3. the module's counters back to 0 objects and 0 pages, and vmfork.ko unloads.
The debug kernel (KASAN, lockdep, kmemleak) runs leak-checked and, being
10-50x slower, stops fuzz_test after 25 minutes (VMFORK_FUZZ_SECS) with the
operations done so far (a prefix of the same sequence). A kernel BUG,
WARNING, Oops, lockdep or KASAN report in any console fails the run (vm-run.sh).
Ends with one line per kernel and "fuzz: N passed, N failed".
USAGE
}

ops=2000000 seed=${VMFORK_FUZZ_SEED:-$(date +%s)} trinity_ops=200000
kernels=()
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--ops) ops=$2; shift ;;
	--seed) seed=$2; shift ;;
	--trinity) trinity_ops=$2; shift ;;
	-*) usage >&2; exit 2 ;;
	*) kernels+=("$1") ;;
	esac
	shift
done
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1 6.12 debug)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# What the test VM runs (as root, in the repository).
inner=$(
	cat <<'INNER'
set -euo pipefail
echo "fuzz: fuzz_test, $VMFORK_FUZZ_OPS operations, seed $VMFORK_FUZZ_SEED"
build/selftests/fuzz_test
echo "fuzz: trinity, $VMFORK_TRINITY_OPS syscalls on /dev/vmfork as nobody"
chmod 0666 /dev/vmfork
work=$(mktemp -d)
chmod 0777 "$work"
# Only the syscalls that reach the module, on its device node only.
calls=()
for c in ioctl mmap munmap mremap mprotect madvise read write pread64 pwrite64 \
	readv writev fallocate lseek dup fcntl newfstat; do
	calls+=(-c "$c")
done
(cd "$work" && timeout 1200 trinity -q -l off -X -C 4 -N "$VMFORK_TRINITY_OPS" \
	-s "$VMFORK_FUZZ_SEED" -V /dev/vmfork \
	--disable-fds=sockets,pipes,perf,epoll,eventfd,timerfd,testfile,memfd,drm \
	"${calls[@]}") >"$work/trinity.log" 2>&1 || {
	tail -n 30 "$work/trinity.log"
	echo "fuzz: trinity failed"
	exit 1
}
grep -E 'Ran [0-9]+ syscalls|syscalls' "$work/trinity.log" | tail -n 2 || true
chmod 0660 /dev/vmfork
echo "fuzz: ok"
INNER
)

pass=0 fail=0
results=()
for k in "${kernels[@]}"; do
	opts=() secs=0
	if [ "$k" = debug ]; then
		make -s modules-debug
		opts=(--leak-check) secs=1500
	fi
	echo "==== fuzz: kernel $k ===="
	rc=0
	VMFORK_FUZZ_OPS=$ops VMFORK_FUZZ_SEED=$seed VMFORK_FUZZ_SECS=$secs \
		VMFORK_TRINITY_OPS=$trinity_ops \
		scripts/vm-run.sh --kernel "$k" --timeout 3000 "${opts[@]+"${opts[@]}"}" -- \
		bash -c "$inner" || rc=$?
	if [ "$rc" = 0 ]; then
		pass=$((pass + 1))
		results+=("fuzz: kernel $k: ok")
	else
		fail=$((fail + 1))
		results+=("fuzz: kernel $k: FAILED (exit status $rc)")
	fi
done
printf '%s\n' "${results[@]}"
echo "fuzz: $pass passed, $fail failed"
[ "$fail" = 0 ]
