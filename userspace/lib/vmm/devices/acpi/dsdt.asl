/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The DSDT of every vmfork VM: one static table, compiled by iasl at build time and
 * embedded in libvmfork (the other tables are built at run time: tables.cpp).
 *
 * The addresses, ports and GSIs are the platform's (vmfork/vmm/platform.h); the
 * unit tests check that the two agree. Devices that a VM may or may not have (the
 * virtio-mmio slots) read their presence from the platform-info byte that the VMM
 * writes in the generation page, so this one table serves every configuration.
 */
DefinitionBlock ("", "DSDT", 2, "VMFORK", "VMFORKVM", 1)
{
    /*
     * Sleep type 5 for S5 (soft off): the guest writes SLP_TYP=5 with SLP_EN to the
     * FADT's sleep control register (the ACPI PM device at port 0x600).
     */
    Name (_S5, Package (0x04) { 0x05, 0x00, 0x00, 0x00 })

    Scope (\_SB)
    {
        /* The platform-info byte: bit i set = virtio-mmio slot i has a device. */
        OperationRegion (PINF, SystemMemory, 0x000F0100, 0x01)
        Field (PINF, ByteAcc, NoLock, Preserve)
        {
            VMMP, 8
        }

        /* _STA of virtio-mmio slot Arg0: present, enabled, shown, working, or absent. */
        Method (PRES, 1, NotSerialized)
        {
            If (VMMP & (One << Arg0))
            {
                Return (0x0F)
            }
            Return (Zero)
        }

        /* COM1: a 16550A, GSI 4. */
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, One)
            Name (_DDN, "COM1")
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
                IRQNoFlags () { 4 }
            })
        }

        /* The i8042 keyboard controller (no aux port), GSI 1. */
        Device (PS2K)
        {
            Name (_HID, EisaId ("PNP0303"))
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x0060, 0x0060, 0x00, 0x01)
                IO (Decode16, 0x0064, 0x0064, 0x00, 0x01)
                IRQNoFlags () { 1 }
            })
        }

        /*
         * VM Generation ID: Linux's vmgenid driver matches the _HID, evaluates ADDR
         * (low and high 32 bits of the 16-byte ID's guest-physical address) and rereads
         * the ID on Notify 0x80.
         */
        Device (VGEN)
        {
            Name (_HID, "VMGENCTR")
            Name (_CID, "VM_Gen_Counter")
            Name (_DDN, "VM_Gen_Counter")
            Name (ADDR, Package (0x02) { 0x000F0000, 0x00000000 })
        }

        /*
         * Generic Event Device: the VMM raises GSI 10 (edge) after it wrote a new
         * generation ID, and the event method passes it on to the VMGenID device.
         */
        Device (GED)
        {
            Name (_HID, "ACPI0013")
            Name (_UID, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 10 }
            })
            Method (_EVT, 1, Serialized)
            {
                If (Arg0 == 10)
                {
                    Notify (VGEN, 0x80)
                }
            }
        }

        /* virtio-mmio slot i: 4 KiB at 0xD0000000 + i * 0x1000, GSI 16 + i, level. */
        Device (VR00)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 0)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0000000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 16 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (0))
            }
        }
        Device (VR01)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 1)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0001000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 17 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (1))
            }
        }
        Device (VR02)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 2)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0002000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 18 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (2))
            }
        }
        Device (VR03)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 3)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0003000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 19 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (3))
            }
        }
        Device (VR04)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 4)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0004000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 20 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (4))
            }
        }
        Device (VR05)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 5)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0005000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 21 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (5))
            }
        }
        Device (VR06)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 6)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0006000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 22 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (6))
            }
        }
        Device (VR07)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 7)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0007000, 0x00001000)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { 23 }
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (PRES (7))
            }
        }
    }
}
