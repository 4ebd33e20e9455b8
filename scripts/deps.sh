#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install every Debian package vmfork needs to build, test and demo, including the two
# kernels of the test matrix (bookworm's 6.1 and bookworm-backports' 6.12). Idempotent:
# prints nothing and changes nothing when all is already there.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/deps.sh [--check]

Installs the Debian packages vmfork needs (as root, Debian 12 "bookworm"):
toolchains, QEMU, busybox, the Debian 6.1 kernel image+headers and the
bookworm-backports 6.12 kernel image+headers (the test matrix), libbpf, bpftool,
bpftrace, libnl, linux-source-6.1 (kselftest harness, checkpatch), acpica-tools
(iasl, which compiles the VMM's DSDT), xfsprogs (mkfs.xfs for make bench-disks),
debhelper, dh-dkms, dkms, help2man, lintian and bash-completion (make deb and its
test).

  --check   only report what is missing; exit 1 if anything is
USAGE
}

check_only=0
case "${1:-}" in
-h | --help) usage; exit 0 ;;
--check) check_only=1 ;;
"") ;;
*) usage >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
# A kernel package installed only to boot it under QEMU needs no initramfs.
export INITRD=No

# Packages from bookworm (the default suite).
PKGS=(
	build-essential make cmake ninja-build pkg-config git ca-certificates
	gcc g++ clang llvm lld clang-format clang-tidy shellcheck
	bc bison flex libelf-dev libssl-dev dwarves xz-utils zstd kmod cpio
	busybox-static e2fsck-static
	linux-source-6.1
	libbpf-dev bpftool bpftrace
	libnl-3-dev libnl-genl-3-dev
	libcli11-dev libfmt-dev nlohmann-json3-dev libgtest-dev
	python3 gnuplot-nox
	acpica-tools
	xfsprogs
	trinity
	debhelper dh-dkms dkms help2man lintian bash-completion
)

missing=()
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed'; }

backports_list=/etc/apt/sources.list.d/vmfork-backports.list
have_backports() {
	grep -rqsE '^[^#]*bookworm-backports|^Suites:.*bookworm-backports' \
		/etc/apt/sources.list /etc/apt/sources.list.d/
}

apt_updated=0
apt_update() {
	if [ "$apt_updated" = 0 ]; then
		echo "deps: apt-get update" >&2
		apt-get update -q >/dev/null
		apt_updated=1
	fi
}

# ABI name ("6.1.0-56") of the kernel a meta package of SUITE depends on.
abi_of() {
	apt-cache show "linux-image-amd64/$1" 2>/dev/null |
		sed -n 's/^Depends:.*linux-image-\([0-9][^ ]*\)-amd64.*/\1/p' | head -n1
}

for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done

# QEMU from bookworm-backports (10.x), not bookworm's 7.2: its TCG runs the nested Linux
# tests about 4 times faster. Both deliver an interrupt inside a nested #VMEXIT now and
# then (docs/testing.md).
qemu_ok() {
	local v
	v=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null) &&
		installed qemu-system-x86 && dpkg --compare-versions "$v" ge 1:10
}
need_qemu=0
qemu_ok || need_qemu=1

# The kernels of the matrix: whatever version is installed is kept (a new machine gets the
# current one); only a missing series is installed.
have_series() { compgen -G "/lib/modules/$1.*-amd64/build/Makefile" >/dev/null; }
need_61=0 need_612=0
have_series 6.1 || need_61=1
have_series 6.12 || need_612=1

if [ "$check_only" = 1 ]; then
	rc=0
	[ ${#missing[@]} -eq 0 ] || { echo "missing: ${missing[*]}"; rc=1; }
	[ "$need_61" = 0 ] || { echo "missing: Debian 6.1 kernel image+headers"; rc=1; }
	[ "$need_612" = 0 ] || { echo "missing: bookworm-backports 6.12 kernel image+headers"; rc=1; }
	[ "$need_qemu" = 0 ] || { echo "missing: qemu-system-x86 10.x (bookworm-backports)"; rc=1; }
	exit $rc
fi

if [ ${#missing[@]} -eq 0 ] && [ "$need_61" = 0 ] && [ "$need_612" = 0 ] &&
	[ "$need_qemu" = 0 ]; then
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages (${missing[*]:-kernels}); run scripts/deps.sh as root" >&2
	exit 1
fi

if { [ "$need_612" = 1 ] || [ "$need_qemu" = 1 ]; } && ! have_backports; then
	echo "deps: adding bookworm-backports to $backports_list" >&2
	echo 'deb http://deb.debian.org/debian bookworm-backports main' >"$backports_list"
	apt_updated=0
fi

apt_update
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}" >&2
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$need_qemu" = 1 ]; then
	echo "deps: installing qemu-system-x86 from bookworm-backports" >&2
	apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
fi

if [ "$need_61" = 1 ]; then
	abi=$(abi_of bookworm-security)
	[ -n "$abi" ] || abi=$(abi_of bookworm)
	[ -n "$abi" ] || { echo "deps: cannot find the bookworm 6.1 kernel ABI" >&2; exit 1; }
	echo "deps: installing kernel $abi-amd64 (bookworm)" >&2
	apt-get install -y -q --no-install-recommends \
		"linux-image-$abi-amd64" "linux-headers-$abi-amd64" >/dev/null
fi

if [ "$need_612" = 1 ]; then
	abi=$(abi_of bookworm-backports)
	[ -n "$abi" ] || { echo "deps: cannot find the bookworm-backports kernel ABI" >&2; exit 1; }
	echo "deps: installing kernel $abi-amd64 (bookworm-backports)" >&2
	# Pin pahole to bookworm and do not upgrade other packages by source: a plain
	# "-t bookworm-backports linux-image-amd64" drags libdw1, pahole and linux-libc-dev.
	apt-get install -y -q --no-install-recommends -t bookworm-backports \
		-o APT::Get::Upgrade-By-Source-Package=false \
		"linux-image-$abi-amd64" "linux-headers-$abi-amd64" pahole/bookworm >/dev/null
fi
