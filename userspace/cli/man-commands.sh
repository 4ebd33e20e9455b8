#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Print a help2man include file for vmfork(1): every subcommand's --help in a COMMANDS
# section (taken from the binary, so the page never disagrees with it), then what the
# environment and the files are for.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: userspace/cli/man-commands.sh VMFORK_BINARY > vmfork.h2m

Runs VMFORK_BINARY --help, and --help of each subcommand it lists, and prints them as
roff for help2man --include.
USAGE
}

[ $# -eq 1 ] || { usage >&2; exit 2; }
[ "$1" != -h ] && [ "$1" != --help ] || { usage; exit 0; }
bin=$1

# roff-safe: backslashes escaped, a leading . or ' neutralised.
roff() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }

# The subcommands: the indented first words after "Subcommands:".
mapfile -t commands < <("$bin" --help | sed -n '/^Subcommands:/,$p' |
	sed -nE 's/^  ([a-z][a-z0-9-]*) .*/\1/p')
[ ${#commands[@]} -gt 0 ] || { echo "man-commands: no subcommands in $bin --help" >&2; exit 1; }

echo '[COMMANDS]'
echo 'Every command takes \fB\-\-help\fR; the global options go before the command.'
for c in "${commands[@]}"; do
	echo ".SS \"vmfork $c\""
	echo '.nf'
	# The usage line names the build path of the binary: use the plain name.
	"$bin" "$c" --help | sed -E "s|^Usage: [^ ]*vmfork |Usage: vmfork |" | roff
	echo '.fi'
done

cat <<'ROFF'
[ENVIRONMENT]
.TP
.B VMFORK_RUNTIME_DIR
Where each VM's control socket, lock and console file live. Default: \fI/run/vmfork\fR
for root, \fI$XDG_RUNTIME_DIR/vmfork\fR for other users, \fI/tmp/vmfork\-UID\fR when
\fBXDG_RUNTIME_DIR\fR is unset. It must belong to the user and not be writable by others.
[FILES]
.TP
.I /usr/bin/vmfork\-vmm
The process of one VM, started by \fBvmfork run\fR and \fBvmfork fork\fR (not by hand);
vmfork finds it beside its own executable.
.TP
.I /dev/vmfork
The module's device (package vmfork\-dkms, \fBmodprobe vmfork\fR). Its udev rule gives it
to group \fBkvm\fR, mode 0660, like \fI/dev/kvm\fR: members of group kvm use vmfork
without root (\fBsudo adduser $USER kvm\fR, then log in again).
.TP
.I /usr/share/vmfork/linux\-initramfs.cpio.gz
The initramfs of \fBvmfork run \-\-linux\fR.
.TP
.I /usr/share/vmfork/bpftrace/
bpftrace dashboards (root): vmfork\-forklat.bt, vmfork\-cow.bt, vmfork\-top.bt.
[SEE ALSO]
.BR vmfork\-trace (1),
.BR bpftrace (8)
ROFF
