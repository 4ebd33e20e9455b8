#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""vmfork-workload, the guest-side oracle of `vmfork demo --linux`, must catch a page
that changes behind its back: run it on the host, overwrite one word of its buffer
through /proc/PID/mem, and expect a FAILED round that names that page, then ok rounds
again (it resynchronises). Usage: workload_test.py PATH-OF-vmfork-workload
"""
import os
import re
import subprocess
import sys
import time

MIB = 3  # a mapping of exactly this size is the buffer


def main(path):
    p = subprocess.Popen([path, str(MIB), "50"], stdout=subprocess.PIPE, text=True)
    try:
        lines = []

        def until(pattern, timeout=20):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    break
                lines.append(line.rstrip())
                m = re.search(pattern, line)
                if m:
                    return m
            raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(lines))

        until(r"round 2 ok")
        with open(f"/proc/{p.pid}/maps") as f:
            spans = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in f
                     if line.split()[1].startswith("rw")]
        buf = [s for s in spans if s[1] - s[0] == MIB << 20]
        assert len(buf) == 1, f"the {MIB} MiB buffer among {spans}"
        page = 100
        with open(f"/proc/{p.pid}/mem", "r+b", buffering=0) as mem:
            mem.seek(buf[0][0] + page * 4096 + 8 * 7)
            mem.write(b"\xde\xad\xbe\xef\x00\x00\x00\x00")
        m = until(r"round (\d+) FAILED: 1 pages differ, first page (\d+) word (\d+)")
        assert (int(m.group(2)), int(m.group(3))) == (page, 7), m.group(0)
        until(rf"round {int(m.group(1)) + 1} ok")
        print("ok: the workload reported the changed page and went on")
        return 0
    finally:
        p.kill()
        p.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
