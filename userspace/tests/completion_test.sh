#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The bash completion of vmfork against the real binary: commands, a command's options,
# VM names from the runtime directory. Exits 77 (ctest: skipped) without bash-completion.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: userspace/tests/completion_test.sh VMFORK_BINARY COMPLETION_FILE
USAGE
}

[ $# -eq 2 ] || { usage >&2; exit 2; }
bin=$1 file=$2
lib=/usr/share/bash-completion/bash_completion
[ -r "$lib" ] || { echo "no $lib (package bash-completion): skipped"; exit 77; }

set +eu
# shellcheck source=/dev/null
. "$lib"
# shellcheck source=/dev/null
. "$file"
set -eu

rundir=$(mktemp -d)
trap 'rm -rf "$rundir"' EXIT
export VMFORK_RUNTIME_DIR=$rundir
touch "$rundir/web.sock" "$rundir/web-1.sock" "$rundir/db.sock"

failures=0
# expect "WORDS..." "EXPECTED COMPREPLY (sorted, space-separated)"
expect() {
	local line=$1 want=$2 got
	line=$bin${line#vmfork}
	read -r -a COMP_WORDS <<<"$line"
	[[ "$line" == *" " ]] && COMP_WORDS+=("")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE=$line COMP_POINT=${#line}
	COMPREPLY=()
	_vmfork
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | paste -sd' ')
	if [ "$got" = "$want" ]; then
		echo "ok: '${line#"$bin"}' -> $got"
	else
		echo "FAIL: '${line#"$bin"}' -> '$got', expected '$want'"
		failures=$((failures + 1))
	fi
}

expect "vmfork fo" "fork"
expect "vmfork --timeout 5 ki" "kill"
expect "vmfork k" "kill"
expect "vmfork fork --te" "--template"
expect "vmfork fork w" "web web-1"
expect "vmfork kill " "db web web-1"
expect "vmfork demo --cl" "--clones"
expect "vmfork --ver" "--version"
expect "vmfork pool " "drain resize"
expect "vmfork pool resize " ""
expect "vmfork exec w" "web web-1"
[ "$failures" = 0 ]
