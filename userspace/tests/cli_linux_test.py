#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Linux guests through the vmfork CLI, inside the test VM (needs /dev/kvm, /dev/vmfork).

One Linux guest boots (`vmfork run --linux`: the host's kernel and the build's
initramfs); everything else forks it. The oracles are the guests' own consoles: the
guest's ticker (a process that must go on from where it was in every clone, and go
back at a reset), commands typed through `vmfork console -i`, and no kernel complaint
on any console. Output: kselftest TAP with a "# Totals" line (run-selftests.sh -x).
"""
import ctypes
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import ktap  # noqa: E402
VMFORK = os.environ.get("VMFORK_BIN", os.path.join(HERE, "..", "..", "build", "bin", "vmfork"))
RUNTIME = tempfile.mkdtemp(prefix="vmfork-cli-linux-test.")
DISK_DIR = tempfile.mkdtemp(prefix="vmfork-cli-linux-test-disks.")
ENV = dict(os.environ, VMFORK_RUNTIME_DIR=RUNTIME, VMFORK_DISK_DIR=DISK_DIR)
DISK = os.path.join(RUNTIME, "disk.img")  # lx's vda: 1 GiB, sparse, "BASE..." in sector 0
FS = os.path.join(RUNTIME, "fs.img")  # lx's vdb: an ext4 filesystem of 64 MiB
TIMEOUT = 120  # a nested Linux boot takes 13-20 s under TCG; every wait is bounded
# Of the clocksource watchdog: its skew verdict ("Marking clocksource 'tsc' as unstable
# because the skew is too large"), what a clone whose TSC and kvmclock disagree prints.
# Not its read-back delay: a nested guest too slow to read two clocks within the
# watchdog's bound prints "read-back delay ... skipped" (6.12) or "... marking unstable"
# and then "Marking TSC unstable due to clocksource watchdog" (6.1) with no clock problem.
BAD = re.compile(r"BUG:|WARNING:|Oops|soft lockup|rcu.*stall|Kernel panic|hung_task|"
                 r"Call Trace|Marking clocksource .* as unstable")
TICK = re.compile(r"vmfork-guest: tick (\d+)")
RESEED = "crng reseeded due to virtual machine fork"
consoles = {}  # every VM seen: its last console text, scanned at the end


def boot_args():
    """--linux: the running kernel's own /boot/vmlinuz; a test VM on a kernel that is not
    in /boot (the debug kernel) boots Debian's newest 6.1 instead."""
    if os.path.exists("/boot/vmlinuz-" + os.uname().release):
        return ["--linux"]
    kernels = sorted(f for f in os.listdir("/boot") if f.startswith("vmlinuz-6.1."))
    return ["--kernel", "/boot/" + kernels[-1]]


def vmfork(*args, check=True, stdin_text=None, timeout=TIMEOUT):
    p = subprocess.run([VMFORK, *args], env=ENV, capture_output=True, text=True,
                       timeout=timeout, input=stdin_text,
                       stdin=None if stdin_text is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"vmfork {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def ls():
    return {v["name"]: v for v in json.loads(vmfork("ls", "--json").stdout)}


def console(name):
    text = vmfork("console", name).stdout
    consoles[name] = text
    return text


def ticks(name):
    return [int(t) for t in TICK.findall(console(name))]


def wait_for(what, pred, timeout=TIMEOUT, evidence=None):
    """Polls pred until it is true; fails at the timeout, or as soon as the VM named by
    evidence is in state "error" (a vCPU stopped: it will not get there)."""
    deadline = time.monotonic() + timeout
    polls = 0
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        polls += 1
        if evidence and polls % 10 == 0 and ls().get(evidence, {}).get("state") == "error":
            raise AssertionError(f"{evidence} stopped with an error while waiting for {what}"
                                 + evidence_of(evidence))
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (evidence_of(evidence) if evidence else ""))


def evidence_of(name):
    """What a failed check shows of a VM: its state, vCPU errors, customization and
    console tail."""
    extra = ""
    v = ls().get(name)
    if v is not None:  # a VM in state "error" says why in vcpu_errors
        extra = (f"\n{name}: state {v['state']}, vcpu_errors {v.get('vcpu_errors')}, "
                 f"customize {v.get('customize')}")
    try:
        with open(os.path.join(RUNTIME, name + ".log")) as f:
            extra += f"\nlog tail of {name}:\n" + "\n".join(f.read().splitlines()[-10:])
    except OSError as e:
        extra += f"\nno log of {name}: {e}"
    return extra + "\nconsole tail of " + name + ":\n" + "\n".join(
        console(name).splitlines()[-15:])


def answers(name, a, b):
    """Types `echo NAME-$((a+b))` and waits for the shell's answer."""
    token = f"{name}-{a + b}"
    vmfork("console", "-i", name, stdin_text=f"echo {name}-$(({a}+{b}))\n")
    wait_for(f"{name} to answer on its console", lambda: token in console(name).replace(
        f"$(({a}+{b}))", ""), evidence=name)


def clean(name):
    text = console(name)
    m = BAD.search(text)
    assert not m, f"{name}'s console shows {m.group(0)!r}:\n" + text[max(0, m.start() - 1500):][:4000]


@ktap.test("run --linux boots the host's kernel to a shell that answers console -i")
def _():
    with open(DISK, "wb") as f:
        f.write(b"BASE" * 128)
        f.truncate(1 << 30)
    with open(FS, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", FS], check=True, capture_output=True)
    out = vmfork("run", *boot_args(), "--name", "lx", "--mem", "160M", "--disk", DISK,
                 "--disk", FS).stdout
    assert "lx: running" in out and "vmfork console -i lx" in out, out
    v = ls()["lx"]
    assert v["guest"] == "linux" and v["state"] == "running", v
    wait_for("the guest's shell", lambda: "vmfork-guest: up, 1 cpus" in console("lx"),
             evidence="lx")
    wait_for("the guest's ticker", lambda: max(ticks("lx"), default=0) >= 2, evidence="lx")
    answers("lx", 2, 3)
    clean("lx")
    # Before lx's first fork its disk is the image itself (the disk test looks).
    wait_for("lx's agent", lambda: exec_in("lx", "true").returncode == 0, evidence="lx")
    disk_write("lx", 4, "B0")


@ktap.test("fork -n 2: each clone's processes go on from the fork and its console answers",
           needs=(1,))
def _():
    at_fork = max(ticks("lx"))
    out = vmfork("fork", "lx", "-n", "2").stdout
    assert "lx-1  pid" in out and "lx-2  pid" in out, out
    for name in ("lx-1", "lx-2"):
        v = ls()[name]
        assert v["guest"] == "linux" and v["parent"] == "lx" and v["generation"] == 1, v
        wait_for(f"{name}'s ticker", lambda n=name: len(ticks(n)) >= 2, evidence=name)
        t = ticks(name)
        # The ticker went on: no restart at 1, no jump back before the fork.
        assert t[0] >= at_fork and t[0] <= at_fork + 30, (at_fork, t[:5])
        assert t == sorted(t), t
        answers(name, 40, len(name))
        assert v["memory"]["shared_pages"] > 0, "a clone must share its parent's pages"
    answers("lx", 1, 1)  # the parent goes on too


def exec_in(name, *cmd, stdin_text=None):
    args = ["exec", "--timeout", "60"] + (["-i"] if stdin_text is not None else []) + [name, "--"]
    return vmfork(*args, *cmd, check=False, stdin_text=stdin_text)


@ktap.test("exec through vmfork-agent on vsock: status, stdout/stderr, stdin, in parent and clones",
           needs=(2,))
def _():
    p = exec_in("lx", "sh", "-c", "echo out-$((6*7)); echo err-$((6*7)) >&2; exit 3")
    assert (p.returncode, p.stdout, p.stderr) == (3, "out-42\n", "err-42\n"), p
    p = exec_in("lx", "sh", "-c", "kill -9 $$")
    assert p.returncode == 128 + 9, p  # a signal as a shell reports it
    p = exec_in("lx", "no-such-command")
    assert p.returncode == 127 and "no such command" in p.stderr, p
    p = exec_in("lx", "wc", "-c", stdin_text="x" * 100000)
    assert p.returncode == 0 and p.stdout.split() == ["100000"], p
    # Each clone answers on its own CID (a new one: the parent's connections were reset).
    cids = {n: ls()[n]["vsock_cid"] for n in ("lx", "lx-1", "lx-2")}
    assert len(set(cids.values())) == 3 and 0 not in cids.values(), cids
    for name in ("lx-1", "lx-2"):
        p = exec_in(name, "cat", "/proc/sys/kernel/random/boot_id")
        assert p.returncode == 0 and len(p.stdout.strip()) == 36, (name, p)
    p = vmfork("exec", "no-such-vm", "--", "true", check=False)
    assert p.returncode == 1 and "no-such-vm" in p.stderr, p


def disk_write(name, sector, text):
    """Writes text (padded to a sector) at sector of the guest's vda, synchronously."""
    p = exec_in(name, "sh", "-c", f"printf '%-512s' {text} | "
                f"dd of=/dev/vda bs=512 seek={sector} conv=notrunc,fsync 2>&1")
    assert p.returncode == 0, (name, p)


def disk_read(name, sector):
    """What sector of the guest's vda holds, from the device (caches dropped), without
    its padding: "" for zeros."""
    p = exec_in(name, "sh", "-c", "sync; echo 3 >/proc/sys/vm/drop_caches; "
                f"dd if=/dev/vda bs=512 skip={sector} count=1 2>/dev/null | tr -d ' \\000'")
    assert p.returncode == 0, (name, p)
    return p.stdout[:32]


def layers_held():
    """{pid: {(dev, inode): bytes allocated}} of the disk layers (unlinked
    vmfork-disk-layer files) each process holds."""
    held = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{fd}"
                if "vmfork-disk-layer" in os.readlink(path):
                    st = os.stat(path)
                    held.setdefault(int(pid), {})[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        except OSError:
            pass
    return held


def layer_holders():
    return set(layers_held())


@ktap.test("disks: each clone gets a copy-on-write view of the fork instant; 3 generations; reset",
           needs=(2,))
def _():
    assert disk_read("lx", 0).startswith("BASEBASE"), disk_read("lx", 0)
    assert ls()["lx"]["disks"][0]["path"] == os.path.realpath(DISK)
    disk_write("lx", 8, "P1")
    vmfork("fork", "lx", "-n", "2", "--name-prefix", "dk-")
    disk_write("dk-1", 16, "C1")
    disk_write("lx", 8, "P2")  # after the fork: the parent's own
    got = (disk_read("dk-1", 8), disk_read("dk-2", 8), disk_read("dk-1", 4))
    assert got == ("P1", "P1", "B0"), f"the clones' disks at the fork: {got}"
    got = (disk_read("dk-2", 16), disk_read("lx", 16))
    assert got == ("", ""), f"a clone's write leaked: {got}"
    assert disk_read("lx", 8) == "P2", "the parent lost its own write"
    # The image keeps what lx wrote before its first fork (in an earlier test), nothing
    # written after it, by lx or a clone.
    with open(DISK, "rb") as f:
        image = f.read(32 * 512)
    got = [image[s * 512:s * 512 + 2] for s in (4, 8, 16)]
    assert got == [b"B0", b"\0\0", b"\0\0"], f"the image's sectors 4, 8, 16: {got}"
    # Generation 2 sees its parent's disk at its fork; its writes stay its own.
    vmfork("fork", "dk-1", "--name-prefix", "dk-1-")
    got = (disk_read("dk-1-1", 8), disk_read("dk-1-1", 16))
    assert got == ("P1", "C1"), f"generation 2's disk: {got}"
    disk_write("dk-1-1", 24, "G1")
    assert disk_read("dk-1", 24) == "", "a grandchild's write leaked to its parent"
    d = ls()["dk-1-1"]["disks"][0]
    # lx's layer (frozen at dk-'s fork) and dk-1's (frozen at this one): both share them.
    assert d["layers"] == ls()["dk-1"]["disks"][0]["layers"] == 2, d
    assert d["private_blocks"] >= 1 and d["shared_blocks"] >= 2, d
    assert d["failed_requests"] == 0, d
    row = [ln.split() for ln in vmfork("stats").stdout.splitlines() if ln.startswith("dk-1-1 ")]
    assert row and row[0][-2] != "-" and row[0][-1] != "-", row  # DISK PRIVATE, DISK SHARED
    # A reset takes dk-1's disk back to its fork point; its clone keeps what it saw.
    vmfork("reset", "dk-1")
    assert disk_read("dk-1", 16) == "", "a reset clone's disk is back at its fork point"
    assert disk_read("dk-1-1", 16) == "C1", "its clone keeps what it saw"
    # Writes in flight at the fork: a loop writes its counter to sector 600 (O_DIRECT),
    # then to memory. In every clone, as in the parent, the disk holds the counter in
    # memory or the next one (written, not yet noted): never an older one.
    vmfork("console", "-i", "lx", stdin_text="i=0; while [ $i -lt 3000 ]; do i=$((i+1)); "
           "printf '%-512s' $i | dd of=/dev/vda bs=512 seek=600 oflag=direct conv=notrunc "
           "2>/dev/null && echo $i >/tmp/last.new && mv /tmp/last.new /tmp/last; done & "
           "echo $! >/tmp/loop.pid\n")
    wait_for("the write loop", lambda: exec_in("lx", "cat", "/tmp/last").returncode == 0,
             evidence="lx")
    vmfork("fork", "lx", "-n", "2", "--name-prefix", "io-")
    for name in ("io-1", "io-2", "lx"):
        p = exec_in(name, "sh", "-c", "kill $(cat /tmp/loop.pid); sleep 0.5; cat /tmp/last; "
                    "dd if=/dev/vda bs=512 skip=600 count=1 iflag=direct 2>/dev/null")
        assert p.returncode == 0, f"{name}: {p}{evidence_of(name)}"
        # /tmp/last is renamed into place: a kill or a fork never finds it half written.
        words = p.stdout.split()
        assert len(words) == 2, f"{name}: noted counter, then the disk's: {p.stdout!r}"
        noted, on_disk = int(words[0]), int(words[1])
        assert on_disk in (noted, noted + 1), (name, noted, on_disk)
    vmfork("kill", "io-1", "io-2")
    # 10 clones of the 1 GiB disk each write 1 MiB: about 10 MiB more disk, not 10 GiB.
    vmfork("fork", "lx", "-n", "10", "--name-prefix", "sp-")
    for i in range(1, 11):
        p = exec_in(f"sp-{i}", "dd", "if=/dev/urandom", "of=/dev/vda", "bs=64k", "count=16",
                    "seek=100", "conv=fsync")
        assert p.returncode == 0, p
    pids = {ls()[f"sp-{i}"]["pid"] for i in range(1, 11)}
    layers = {k: v for pid, files in layers_held().items() if pid in pids
              for k, v in files.items()}
    used = sum(layers.values())
    print(f"# 10 clones of a 1 GiB disk, 1 MiB written by each: {used / 2**20:.1f} MiB of "
          f"layers ({len(layers)} files)")
    assert 10 << 20 <= used <= 3 * (10 << 20), used
    # Their layers go with them: what is still held, only VMs that run hold, and the
    # clones' 10 MiB are back.
    def held_bytes():
        return sum({k: v for files in layers_held().values() for k, v in files.items()}.values())
    before = held_bytes()
    vmfork("kill", *[f"sp-{i}" for i in range(1, 11)], "dk-1", "dk-2", "dk-1-1")
    live = {v["pid"] for v in ls().values()}
    assert layer_holders() <= live, (layer_holders(), live)
    assert held_bytes() <= before - (9 << 20), (before, held_bytes())
    assert os.listdir(DISK_DIR) == [], os.listdir(DISK_DIR)


HOOKS = r"""mkdir -p /etc/vmfork/clone.d
cd /etc/vmfork/clone.d
printf '#!/bin/sh\necho "20 $VMFORK_NAME $VMFORK_GENERATION $VMFORK_PARENT $VMFORK_ID" >>/tmp/hooks\n' >20-second
printf '#!/bin/sh\necho "10 $VMFORK_NAME" >>/tmp/hooks\n[ "$VMFORK_NAME" != cz-2 ]\n' >10-first
printf 'not executable: skipped\n' >30-data
chmod +x 10-first 20-second
rm -f /tmp/hooks
"""


@ktap.test("ext4 on a disk, written across the fork: every clone's is clean (e2fsck) after "
           "its own writes, and holds only those", needs=(2,))
def _():
    # A writer that never stops: 20 files rewritten, a sync now and then; the fork
    # comes in the middle of it.
    p = exec_in("lx", "sh", "-c", "mkdir -p /mnt && mount /dev/vdb /mnt && "
                "(setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i >/mnt/f$((i%20)); "
                "[ $((i%7)) = 0 ] && sync; done' </dev/null >/dev/null 2>&1 & "
                "echo $! >/tmp/fsloop.pid)")
    assert p.returncode == 0, f"{p}{evidence_of('lx')}"
    wait_for("the writer", lambda: exec_in("lx", "test", "-s", "/mnt/f19").returncode == 0,
             evidence="lx")
    vmfork("fork", "lx", "-n", "2", "--name-prefix", "fs-")
    # lx first: later tests fork lx and want it quiet, whatever a clone shows here.
    for name in ("lx", "fs-1", "fs-2"):
        # Stop the writer (orphaned, it stays a zombie: PID 1 is a shell), write one's
        # own name, unmount (what memory held goes to the disk), check, and read back.
        p = exec_in(name, "sh", "-c", "pid=$(cat /tmp/fsloop.pid); kill -9 $pid; "
                    "while [ -e /proc/$pid ] && ! grep -q '^State:.*Z' /proc/$pid/status; "
                    "do sleep 0.1; done; "
                    f"echo {name} >/mnt/mine && umount /mnt && e2fsck -fn /dev/vdb; "
                    "echo e2fsck=$?; mount -o ro /dev/vdb /mnt && cat /mnt/mine; umount /mnt")
        assert "e2fsck=0\n" in p.stdout, f"{name}: {p.stdout}{p.stderr}{evidence_of(name)}"
        assert p.stdout.endswith(f"e2fsck=0\n{name}\n"), f"{name}: {p.stdout!r}"
    vmfork("kill", "fs-1", "fs-2")


@ktap.test("customization without reboot: hostname, machine-id, hooks in order; a failing hook shows",
           needs=(2,))
def _():
    assert ls()["lx"]["customize"]["state"] == "done", ls()["lx"]["customize"]
    assert exec_in("lx", "hostname").stdout == "lx\n"
    p = exec_in("lx", "sh", "-c", HOOKS)
    assert p.returncode == 0, p
    # vmfork's own limits (the fork, then the wait) stay inside this call's.
    p = vmfork("--timeout", "60", "fork", "lx", "-n", "2", "--name-prefix", "cz-",
               "--wait-ready", "--json", check=False, timeout=3 * TIMEOUT)
    assert p.returncode == 1, f"cz-2's hook fails: --wait-ready must say so: {p}"
    r = {c["name"]: c for c in json.loads(p.stdout)["clones"]}
    assert r["cz-1"]["customize"]["state"] == "done", r["cz-1"]
    assert r["cz-2"]["customize"]["state"] == "failed", r["cz-2"]
    assert "10-first" in r["cz-2"]["customize"]["error"], r["cz-2"]
    ids = {}
    for name in ("cz-1", "cz-2"):
        assert exec_in(name, "hostname").stdout == name + "\n"
        p = exec_in(name, "cat", "/tmp/hooks")
        hooks = p.stdout.splitlines()
        vm_id = str(ls()[name]["id"])
        assert hooks == [f"10 {name}", f"20 {name} 1 lx {vm_id}"], \
            f"{name}: {hooks}: {p}{evidence_of(name)}"
        ids[name] = exec_in(name, "cat", "/etc/machine-id").stdout.strip()
    ids["lx"] = exec_in("lx", "cat", "/etc/machine-id").stdout.strip()
    assert len(set(ids.values())) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", i)
                                               for i in ids.values()), ids
    table = vmfork("ls").stdout
    assert re.search(r"^cz-2 .* FAILED ", table, re.M), table
    assert re.search(r"^cz-1 .* yes ", table, re.M), table
    vmfork("kill", "cz-1", "cz-2")


@ktap.test("an exec session open at the fork is reset in the clone, and goes on in the parent",
           needs=(2,))
def _():
    p = subprocess.Popen([VMFORK, "exec", "-i", "lx", "--", "sh", "-c",
                          "echo ready; read x; echo got-$x"], env=ENV, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([p.stdout], [], [], TIMEOUT)
        assert ready and p.stdout.readline() == "ready\n", "the session must start"
        vmfork("fork", "lx", "-n", "1", "--name-prefix", "vs-", "--wait-ready")
        # The clone has the session's processes at first; its transport reset ends the
        # connection there, and the agent ends the command: nobody answers it twice.
        wait_for("the clone to end the parent's session", lambda: exec_in(
            "vs-1", "sh", "-c", "ps | grep -c '[r]ead x'").stdout.strip() == "0", evidence="vs-1")
        out, err = p.communicate("hi\n", timeout=TIMEOUT)
        assert p.returncode == 0 and out == "got-hi\n", (p.returncode, out, err)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    vmfork("kill", "vs-1")


@ktap.test("every clone gets a new VM generation ID: its kernel reseeds its RNG", needs=(2,))
def _():
    for name in ("lx-1", "lx-2"):
        wait_for(f"{name}'s kernel to reseed on the new VM generation ID",
                 lambda n=name: RESEED in console(n), evidence=name)
    assert RESEED not in console("lx"), "the parent did not fork: no new generation"
    # The two clones' RNGs diverged: the same read gives different bytes.
    got = {}
    for name in ("lx-1", "lx-2"):
        vmfork("console", "-i", name, stdin_text="echo rnd-$(head -c 12 /dev/urandom | od -An "
                                                  "-tx1 | tr -d ' ')\n")
        m = wait_for(f"{name}'s random bytes",
                     lambda n=name: re.search(r"rnd-([0-9a-f]{24})", console(n)), evidence=name)
        got[name] = m.group(1)
    assert got["lx-1"] != got["lx-2"], got


def random_in(name):
    """16 bytes of the guest's /dev/urandom, read through its agent, in hex."""
    p = exec_in(name, "sh", "-c", "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
    assert p.returncode == 0 and re.fullmatch(r"[0-9a-f]{32}", p.stdout), (name, p)
    return p.stdout


@ktap.test("4 clones read /dev/urandom after the fork: all differ; without VMGenID all read alike",
           needs=(2,))
def _():
    # rn-1: a quiet guest (no ticker, no customization: nothing in it draws random
    # numbers but what the test runs) whose CRNG its new VM generation just reseeded.
    # Linux reseeds on its own from its input pool (which differs between clones) only
    # once a reseed is older than min(uptime/2, 60 s): the reads below come well before.
    vmfork("fork", "lx", "--name-prefix", "rn-", "--no-customize")
    wait_for("rn-1 to reseed", lambda: RESEED in console("rn-1"), evidence="rn-1")
    assert ls()["rn-1"]["customize"]["state"] == "off"
    uptime = exec_in("rn-1", "sh", "-c", "kill $(cat /run/vmfork-ticker.pid); cat /proc/uptime")
    assert uptime.returncode == 0, uptime
    time.sleep(1.5)  # the ticker's last `sleep 1` ends
    # The control: clones that keep the VM generation ID (as under a VMM without
    # VMGenID) go on with the parent's CRNG state, so the same read gives the same
    # bytes in them and in the parent: the "all differ" check below would fail. (Not
    # necessarily in all five: a clone whose read comes after Linux's own reseed
    # interval, or after other random draws, can differ; two alike show the shared
    # state, which 128 random bits never are by chance.)
    vmfork("fork", "rn-1", "-n", "4", "--name-prefix", "same-", "--no-customize",
           "--keep-generation")
    same = {n: random_in(n) for n in ("same-1", "same-2", "same-3", "same-4", "rn-1")}
    assert len(set(same.values())) < len(same), (
        f"without a new VM generation, clones must read what their parent reads "
        f"(rn-1 up {uptime.stdout.split()[0]} s): {same}")
    # With a new VM generation each clone's kernel reseeds before it reads (the notify
    # is asynchronous: wait for its log line), and the four reads all differ.
    vmfork("fork", "rn-1", "-n", "4", "--name-prefix", "new-", "--no-customize")
    new = {}
    for name in ("new-1", "new-2", "new-3", "new-4"):
        wait_for(f"{name} to reseed", lambda n=name: RESEED in console(n), evidence=name)
        new[name] = random_in(name)
    assert len(set(new.values())) == 4, new
    for name in ("same-1", "same-2", "same-3", "same-4"):
        assert RESEED not in console(name), f"{name} kept its generation: no reseed"
    vmfork("kill", "rn-1", "same-1", "same-2", "same-3", "same-4",
           "new-1", "new-2", "new-3", "new-4")


@ktap.test("reset takes a Linux clone back to its fork point, and it runs on from there",
           needs=(2,))
def _():
    wait_for("lx-1 to tick on", lambda: max(ticks("lx-1")) >= min(ticks("lx-1")) + 3,
             evidence="lx-1")
    first = min(ticks("lx-1"))
    before = max(ticks("lx-1"))
    out = vmfork("reset", "lx-1").stdout
    assert "back at its fork point" in out, out
    # After the reset the ticker restarts from the fork-time value: it prints a tick
    # number below the highest one it had reached.
    n_before = len(ticks("lx-1"))

    def went_back():
        t = ticks("lx-1")[n_before:]
        return t and t[0] <= first + 1 and t[0] < before
    wait_for("lx-1's ticker to go back to the fork point", went_back, evidence="lx-1")
    # A reset is a new generation too: the RNG, back at its fork-time state, reseeds.
    wait_for("lx-1 to reseed after the reset",
             lambda: console("lx-1").count(RESEED) >= 2, evidence="lx-1")
    answers("lx-1", 7, 7)
    assert ls()["lx-1"]["state"] == "running"


@ktap.test("fork --template of a clone: the template is frozen, its clones run (generation 2)",
           needs=(2,))
def _():
    out = vmfork("fork", "lx-2", "--template", "-n", "1").stdout
    assert "lx-2 is a template" in out and "lx-2-1  pid" in out, out
    vms = ls()
    assert vms["lx-2"]["state"] == "template", vms["lx-2"]
    # Nothing runs in a template: exec says so, instead of "no agent answers" at the
    # end of its connect timeout.
    p = vmfork("exec", "lx-2", "--", "true", check=False)
    assert p.returncode == 1 and "lx-2 is a template" in p.stderr, p
    # The template forks again 20 s later: the clone's wall clock is the host's, not
    # the frozen one (the agent steps it).
    time.sleep(20)
    out = vmfork("fork", "lx-2", "-n", "1", "--wait-ready").stdout
    assert "lx-2-2  pid" in out and "lx-2-2  customized" in out, out
    before = time.time()
    p = exec_in("lx-2-2", "date", "+%s")
    after = time.time()
    assert p.returncode == 0 and before - 1 <= int(p.stdout) <= after + 1, (before, p, after)
    for name in ("lx-2-1", "lx-2-2"):
        assert ls()[name]["generation"] == 2
        answers(name, 5, len(name))
    p = vmfork("reset", "lx-2", check=False)
    assert p.returncode != 0 and "template" in p.stderr, p.stderr


@ktap.test("poweroff in a guest ends its VM: no process, socket or lock left", needs=(11,))
def _():
    pid = ls()["lx-2-2"]["pid"]
    vmfork("console", "-i", "lx-2-2", stdin_text="poweroff -f\n")
    wait_for("lx-2-2's VMM to exit", lambda: not os.path.exists(f"/proc/{pid}"))
    assert "lx-2-2" not in ls()
    left = [f for f in os.listdir(RUNTIME) if f.startswith("lx-2-2.") and
            f.endswith((".sock", ".lock"))]
    assert not left, left


@ktap.test("SIGKILL of a clone's VMM leaves nothing behind; its siblings run on", needs=(11,))
def _():
    pid = ls()["lx-2-1"]["pid"]
    console("lx-2-1")  # scanned at the end like every other
    os.kill(pid, signal.SIGKILL)
    wait_for("the killed VMM to exit", lambda: not os.path.exists(f"/proc/{pid}"))
    assert "lx-2-1" not in ls()
    left = [f for f in os.listdir(RUNTIME) if f.startswith("lx-2-1.") and
            f.endswith((".sock", ".lock"))]
    assert not left, left
    answers("lx-1", 8, 8)


NETNS = "vmfork-cli-linux-test"
CLONE_NEWNET = 0x40000000


def connect_in(netns_path, address, port, timeout=30):
    """A TCP connection made from network namespace netns_path (the socket stays in it
    when this thread goes back to its own)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns_path}")
        try:
            return socket.create_connection((address, port), timeout=timeout)
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)
        os.close(target)


def guest_file(name, path):
    p = exec_in(name, "cat", path)
    return p.stdout if p.returncode == 0 else None


def root_disk(path):
    """An ext4 image holding the default initramfs's files: a root disk to boot."""
    initramfs = os.path.join(HERE, "..", "..", "build", "userspace", "share", "vmfork",
                             "linux-initramfs.cpio.gz")
    tree = tempfile.mkdtemp(prefix="vmfork-root.")
    subprocess.run(f"zcat {initramfs} | cpio -id --quiet", shell=True, cwd=tree, check=True)
    os.symlink("/init", os.path.join(tree, "sbin", "init"))
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tree, path], check=True, capture_output=True)
    subprocess.run(["rm", "-rf", tree], check=True)


@ktap.test("network, on a VM booted from a root disk: a tap per VM; 2 clones answer at once "
           "at the parent's address, each in its own namespace; a connection open at the fork "
           "is reset in the clones")
def _():
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    root = os.path.join(RUNTIME, "root.img")
    root_disk(root)
    try:
        # Without CAP_NET_ADMIN: no tap, and the error says why.
        p = subprocess.run(["setpriv", "--bounding-set", "-net_admin", VMFORK, "run",
                            *boot_args(), "--name", "nocap", "--net", "tap"], env=ENV,
                           capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 1 and "CAP_NET_ADMIN" in p.stderr, p
        assert "nocap" not in ls()
        p = subprocess.run(["ip", "netns", "exec", NETNS, VMFORK, "run", *boot_args(),
                            "--name", "nx", "--mem", "160M", "--net", "tap,vmf-t0",
                            "--net-address", "172.30.0.1/24", "--disk", root, "--append",
                            "root=/dev/vda vmfork.ip=172.30.0.2/24"], env=ENV,
                           capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p
        net = ls()["nx"]["net"]
        assert net["tap"] == "vmf-t0" and net["host_address"] == "172.30.0.1/24", net
        wait_for("nx's agent", lambda: exec_in("nx", "true").returncode == 0, evidence="nx")
        p = exec_in("nx", "sh", "-c", "grep ' / ' /proc/mounts")
        assert p.stdout.startswith("/dev/vda / ext4 rw"), f"nx's root: {p}"
        p = exec_in("nx", "ping", "-c", "1", "-W", "10", "172.30.0.1")
        assert p.returncode == 0, f"the guest cannot reach the host: {p}{evidence_of('nx')}"
        # A connection from the host into the guest, open across the fork.
        # (nc's stdin stays open: at its end nc would close the connection itself.)
        p = exec_in("nx", "sh", "-c", "setsid sh -c 'sleep 100000 | nc -l -p 7000 >/tmp/got "
                    "2>&1' </dev/null >/dev/null 2>&1 &")
        assert p.returncode == 0, p
        conn = wait_for("nx's nc to accept", lambda: _try_connect(net["netns"], 7000),
                        evidence="nx")
        conn.sendall(b"before\n")
        wait_for("nx to get 'before'", lambda: guest_file("nx", "/tmp/got") == "before\n",
                 evidence="nx")
        vmfork("fork", "nx", "-n", "2", "--name-prefix", "nx-", "--wait-ready")
        conn.sendall(b"after\n")
        wait_for("nx to get 'after'", lambda: guest_file("nx", "/tmp/got") == "before\nafter\n",
                 evidence="nx")
        nets = {c: ls()[c]["net"] for c in ("nx-1", "nx-2")}
        for c, n in nets.items():
            assert n["tap"] == "vmf-t0" and n["host_address"] == "172.30.0.1/24", (c, n)
            assert n["mac"] == net["mac"], (c, n, net)
            # The clone's copy of the connection is reset: its nc got an error and ended;
            # it never got the parent's 'after'.
            assert guest_file(c, "/tmp/got") == "before\n", (c, guest_file(c, "/tmp/got"))
            steps = {st["step"]: st for st in ls()[c]["customize"].get("steps", [])}
            got = steps.get("connections", {})
            assert got.get("ok") and got.get("detail", "").startswith("reset 1 "), (c, steps)
            wait_for(f"{c}'s nc to end", lambda c=c: exec_in(c, "pidof", "nc").returncode != 0,
                     evidence=c)
        assert exec_in("nx", "pidof", "nc").returncode == 0, "the parent's connection must stay"
        assert len({net["netns"], *(n["netns"] for n in nets.values())}) == 3
        assert len({os.stat(n["netns"]).st_ino for n in (net, *nets.values())}) == 3
        # Both clones at once, at the same address, each from its own namespace: each
        # answers with its own name.
        for c in nets:
            p = exec_in(c, "sh", "-c", "hostname >/tmp/me; setsid nc -l -p 7001 </tmp/me "
                        ">/dev/null 2>&1 &")
            assert p.returncode == 0, p
        socks = {c: wait_for(f"{c}'s nc", lambda c=c: _try_connect(nets[c]["netns"], 7001),
                             evidence=c) for c in nets}
        for c, sock in socks.items():
            got = sock.makefile().readline().strip()
            sock.close()
            assert got == c, f"{c} answered {got!r}"
        conn.close()
        for c in ("nx", "nx-1", "nx-2"):
            clean(c)
        vmfork("kill", "nx", "nx-1", "nx-2")
        p = subprocess.run(["ip", "-n", NETNS, "link", "show", "vmf-t0"], capture_output=True)
        assert p.returncode != 0, "nx's tap outlived it"
    finally:
        for c in ("nx", "nx-1", "nx-2"):
            vmfork("kill", c, check=False)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        os.unlink(root)


def _try_connect(netns_path, port):
    try:
        return connect_in(netns_path, "172.30.0.2", port, timeout=5)
    except OSError:
        return None


@ktap.test("bad Linux boot input: a clear error, exit 1, nothing left behind", needs=(2,))
def _():
    before = sorted(os.listdir(RUNTIME))
    big = os.path.join(RUNTIME, "big.img")
    with open(big, "wb") as f:
        f.truncate(200 << 20)
    odd = os.path.join(RUNTIME, "odd.img")
    with open(odd, "wb") as f:
        f.truncate(1000)
    B = boot_args()
    cases = [
        ([*B, "--disk", "/nonexistent/d.img"], "--disk /nonexistent/d.img: No such file"),
        ([*B, "--disk", DISK], "is in use by another VM"),  # lx's, the base of its clones
        ([*B, "--disk", odd], "multiple of 512"),
        ([*B, *["--disk", big + ",ro"] * 7], "at most 6 disks"),
        ([*B, "--net", "bridge"], "unknown mode"),
        ([*B, "--net", "tap,a/b"], "not an interface name"),
        ([*B, "--net-address", "10.0.0.1/24"], "give --net tap"),
        ([*B, "--net", "tap", "--net-address", "10.0.0.1"], "prefix length"),
        (["--kernel", "/nonexistent/vmlinuz"], "kernel /nonexistent/vmlinuz: No such file"),
        (["--kernel", "/etc/passwd"], "not a Linux bzImage"),
        (["--kernel", "/bin/busybox"], "PVH entry note"),
        (["--kernel", "/boot"], "is not a regular file"),
        ([*B, "--initrd", big, "--mem", "128M"], "too small"),
        ([*B, "--mem", "24M"], "too small"),
        ([*B, "--cpus", "0"], "--cpus"),
        ([*B, "--cpus", "99"], "--cpus"),
        ([*B, "--fill", "10"], "built-in guest"),
        ([*B, "--initrd", big, "--no-initrd"], "not both"),
    ]
    for args, want in cases:
        p = vmfork("run", "--name", "bad", *args, check=False)
        assert p.returncode != 0, f"run {args} must fail"
        assert want in p.stderr, f"run {args}: {p.stderr!r} lacks {want!r}"
    os.unlink(big)
    os.unlink(odd)
    assert "bad" not in ls()
    assert sorted(os.listdir(RUNTIME)) == before or all(
        not f.startswith("bad.") or f.endswith((".console", ".log"))
        for f in os.listdir(RUNTIME)), os.listdir(RUNTIME)
    p = vmfork("console", "-i", "nosuchvm", stdin_text="x\n", check=False)
    assert p.returncode == 1 and "VM named nosuchvm" in p.stderr and "vmfork ls" in p.stderr, \
        p.stderr


@ktap.test("warm pool: a clone of a VM with disks and vsock starts in a warm VMM, is "
           "customized, reads its disks, reseeds; drain leaves none", needs=(2,))
def _():
    out = vmfork("pool", "resize", "1").stdout
    assert "pool: 1 warm VMM with 1 vCPU" in out, out
    r = json.loads(vmfork("fork", "lx", "--name-prefix", "wm-", "--wait-ready", "--json",
                          timeout=3 * TIMEOUT).stdout)
    c = r["clones"][0]
    assert r["all_ok"] and c["warm"] and r["pool"]["taken"] == 1, r
    assert c["customize"]["state"] == "done", c
    assert exec_in("wm-1", "hostname").stdout == "wm-1\n"
    # Its disks are the linked-clone views of lx's at the fork (layers passed over the
    # pool's socket): the same sector reads the same.
    assert disk_read("wm-1", 4) == disk_read("lx", 4)
    wait_for("wm-1's kernel to reseed", lambda: RESEED in console("wm-1"), evidence="wm-1")
    pids = wait_for("the pool to refill", lambda: [p for e in json.loads(
        vmfork("pool", "--json").stdout) for p in e["pids"]] or None)
    assert "pool: 1 warm VMM stopped" in vmfork("pool", "drain").stdout
    for pid in pids:
        wait_for(f"warm VMM {pid} to exit", lambda p=pid: not os.path.exists(f"/proc/{p}"), 10)
    vmfork("kill", "wm-1")


@ktap.test("no kernel complaint on any guest console; kill --all leaves nothing", always=True)
def _():
    for name in list(ls()):
        console(name)
    for name in sorted(consoles):
        m = BAD.search(consoles[name])
        assert not m, f"{name}'s console shows {m.group(0)!r}:\n" + \
            consoles[name][max(0, m.start() - 1500):][:4000]
    vmfork("kill", "--all")
    assert ls() == {}
    left = [f for f in os.listdir(RUNTIME) if f.endswith((".sock", ".lock"))]
    assert not left, left


def kill_all():
    """Leaves nothing running, whatever happened."""
    subprocess.run([VMFORK, "kill", "--all"], env=ENV, capture_output=True, timeout=TIMEOUT)
    subprocess.run([VMFORK, "pool", "drain"], env=ENV, capture_output=True, timeout=TIMEOUT)


if __name__ == "__main__":
    if not os.access("/dev/kvm", os.W_OK) or not os.access("/dev/vmfork", os.W_OK):
        ktap.skip_all("needs /dev/kvm and /dev/vmfork (run it in the test VM)")
    sys.exit(ktap.main(cleanup=kill_all))
