/* SPDX-License-Identifier: GPL-2.0 */
/* Entered in 64-bit mode: rdi = cpu index, rsp = top of this vCPU's stack. */
	.section .text.entry, "ax"
	.globl _start
_start:
	call guest_main
1:	hlt
	jmp 1b
	.section .note.GNU-stack, "", @progbits
