/* SPDX-License-Identifier: GPL-2.0 */
/* Entered in 64-bit mode: rdi = cpu index, rsp = top of this vCPU's stack. */
	.section .text.entry, "ax"
	.globl _start
_start:
	call guest_main
1:	hlt
	jmp 1b

/* LAPIC timer: end of interrupt, nothing else (the loop is woken from hlt). */
	.globl guest_timer_isr
guest_timer_isr:
	push %rax
	movabs $0xfee000b0, %rax	/* APIC EOI */
	movl $0, (%rax)
	pop %rax
	iretq

/* LAPIC spurious vector and anything else unexpected but harmless: no EOI. */
	.globl guest_spurious_isr
guest_spurious_isr:
	iretq

/* A CPU exception: say so on the serial port and stop this vCPU for good. */
	.globl guest_fault_isr
guest_fault_isr:
	cli
	lea fault_msg(%rip), %rsi
	mov $0x3f8, %dx
2:	lodsb
	test %al, %al
	jz 3f
	outb %al, %dx
	jmp 2b
3:	hlt
	jmp 3b

	.section .rodata
fault_msg:
	.asciz "vmfork guest: CPU exception, vCPU stopped\n"
	.section .note.GNU-stack, "", @progbits
