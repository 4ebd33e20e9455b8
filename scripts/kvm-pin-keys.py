#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Holds KVM's apic_sw_disabled static key on for as long as it runs.

A workaround for the test VM only (scripts/vm-run.sh starts it under multi-threaded
TCG): QEMU's multi-threaded TCG can run a stale int3 when the kernel patches code
(static keys) that another vCPU executes, and KVM flips apic_sw_disabled every time
the first vCPU is created or the last one enables its local APIC. A vCPU whose LAPIC
is never enabled keeps the key's count above zero, so later VMs never patch it.
See docs/testing.md.
"""
import fcntl
import os
import signal
import sys

KVM_CREATE_VM = 0xAE01
KVM_CREATE_IRQCHIP = 0xAE60
KVM_CREATE_VCPU = 0xAE41


def main():
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)
    fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)  # its LAPIC starts software-disabled
    print("kvm-pin-keys: holding apic_sw_disabled", flush=True)
    signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
