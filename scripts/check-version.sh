#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The version lives in VERSION. CMake reads it; dkms.conf is generated from it; the
# module's MODULE_VERSION and debian/changelog carry copies: fail if any disagrees.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/check-version.sh

Checks that VERSION, kmod/main.c's MODULE_VERSION, the top entry of debian/changelog,
dkms.conf.in (@VERSION@) and userspace/CMakeLists.txt (reads ../VERSION) agree.
Prints each disagreement; exits 1 if there is one. Run by `make lint`.
USAGE
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
"") ;;
*) usage >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bad=0
disagree() {
	echo "check-version: $*" >&2
	bad=1
}

version=$(head -n1 VERSION)
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || disagree "VERSION '$version' is not N.N.N"

module=$(sed -nE 's/^MODULE_VERSION\("([^"]*)"\);/\1/p' kmod/*.c)
[ "$module" = "$version" ] ||
	disagree "kmod MODULE_VERSION is '$module', VERSION is '$version'"

# The changelog's top entry: "vmfork (0.1.0) ..." (native) or "vmfork (0.1.0-1) ...".
changelog=$(sed -nE '1s/^vmfork \(([^)]*)\).*/\1/p' debian/changelog)
[ "${changelog%-*}" = "$version" ] ||
	disagree "debian/changelog's top entry is '$changelog', VERSION is '$version' (add an entry: dch -v $version)"

grep -q '^PACKAGE_VERSION="@VERSION@"$' dkms.conf.in ||
	disagree "dkms.conf.in must take PACKAGE_VERSION from VERSION (PACKAGE_VERSION=\"@VERSION@\")"

grep -qE '^project\(vmfork VERSION \$\{VMFORK_VERSION\}' userspace/CMakeLists.txt ||
	disagree "userspace/CMakeLists.txt must take its project VERSION from ../VERSION"

[ "$bad" = 0 ] && echo "check-version: $version everywhere"
exit "$bad"
