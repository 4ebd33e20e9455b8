# SPDX-License-Identifier: GPL-2.0
"""QEMU templating, the peer users pick today (Kata Containers' VM templating).

The same Linux guest as vmfork's (the host's kernel, the build's initramfs with
vmfork-agent, 1 vCPU, the same RAM), on Debian's qemu-system-x86_64 with KVM:

  template  boots on a memory-backend-file in tmpfs with share=on; once its agent
            answers, its device state is saved with the migration capability
            x-ignore-shared (RAM is left in the file) and the template QEMU quits
  clone     a new QEMU on the same file with share=off (a private, copy-on-write
            mapping of it) and -incoming the saved state, with a vsock CID of its own
  fresh     a plain boot of that guest (no template)

A guest "answers" when its vmfork-agent runs `true` for a connection to its vsock CID,
the same request `vmfork exec NAME -- true` makes. The machine is QEMU's microvm with
ACPI: virtio-mmio devices in the DSDT (LNRO0005), as vmfork's VMM declares them, since
Debian's kernels take no virtio_mmio.device= and the initramfs has no virtio-pci.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import time

QEMU = os.environ.get("VMFORK_QEMU", "qemu-system-x86_64")
AGENT_PORT = 52  # vmfork::agent::default_vsock_port
AGENT_MAGIC = 0x41464D56  # "VMFA"
AGENT_EXEC, AGENT_EXIT, AGENT_ERROR = 3, 7, 8
CMDLINE = "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.dumbkbd"


class QemuError(Exception):
    pass


def qemu_version():
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


def agent_exec_true(cid, timeout):
    """Whether the agent at vsock CID cid ran `true` with status 0 within timeout s.
    The connect gets 250 ms, as vmfork's client's first attempt: a request that reaches
    a clone before its driver took the new CID is dropped, unanswered, and the kernel's
    own connect timeout (2 s) would count against QEMU."""
    try:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
            s.settimeout(0.25)
            s.connect((cid, AGENT_PORT))
            s.settimeout(timeout)
            body = json.dumps({"argv": ["true"], "stdin": False}).encode()
            s.sendall(struct.pack("<IHHII", AGENT_MAGIC, 1, AGENT_EXEC, len(body), 0) + body)
            while True:
                magic, _, kind, length, _ = struct.unpack("<IHHII", recv_exact(s, 16))
                if magic != AGENT_MAGIC:
                    return False
                payload = recv_exact(s, length)
                if kind == AGENT_EXIT:
                    return json.loads(payload).get("code") == 0
                if kind == AGENT_ERROR:
                    return False
    except OSError:  # ConnectionError too: the agent closed early
        return False


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the agent closed the connection")
        data += chunk
    return data


class Qmp:
    """A QMP connection: one command at a time, events skipped."""

    def __init__(self, path, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QemuError(f"no QMP socket at {path} after {timeout} s")
                time.sleep(0.01)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rb")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise QemuError("QMP closed by QEMU")
        return json.loads(line)

    def execute(self, command, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise QemuError(f"QMP {command}: {reply['error'].get('desc')}")

    def ignore_shared(self):
        """RAM in a shared memory-backend-file stays out of the migration stream."""
        self.execute("migrate-set-capabilities",
                     capabilities=[{"capability": "x-ignore-shared", "state": True}])

    def wait_migration(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.execute("query-migrate").get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise QemuError(f"migration {status}")
            time.sleep(0.01)
        raise QemuError(f"migration not completed after {timeout} s")

    def close(self):
        self.file.close()
        self.sock.close()


class QemuVm:
    """One QEMU process: the guest on a memory-backend-file, vsock CID cid."""

    def __init__(self, workdir, name, cid, kernel, initrd, mem_mib, mem_path, share,
                 incoming=False):
        self.name, self.cid = name, cid
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.console = os.path.join(workdir, f"{name}.console")
        args = [QEMU, "-nodefaults", "-no-user-config", "-display", "none",
                "-M", "microvm,acpi=on,memory-backend=ram", "-accel", "kvm",
                "-cpu", "host", "-smp", "1", "-m", f"{mem_mib}M",
                "-object", f"memory-backend-file,id=ram,size={mem_mib}M,mem-path={mem_path},"
                           f"share={'on' if share else 'off'}",
                "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE,
                "-serial", f"file:{self.console}",
                "-device", f"vhost-vsock-device,guest-cid={cid}",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if incoming:
            args += ["-incoming", "defer"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            self.qmp = Qmp(self.qmp_path, 30)
        except QemuError as e:
            self.kill()
            raise QemuError(f"{name}: {e}: {self.stderr()}") from None

    def stderr(self):
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace").strip()

    def wait_answer(self, t0, timeout):
        """Seconds from t0 until the guest's agent answers `true`."""
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise QemuError(f"{self.name}: QEMU exited {self.proc.returncode}: "
                                f"{self.stderr()}; console: {self.console_tail()}")
            if agent_exec_true(self.cid, 5):
                return time.monotonic() - t0
            time.sleep(0.02)
        raise QemuError(f"{self.name}: its agent did not answer within {timeout} s; "
                        f"console: {self.console_tail()}")

    def console_tail(self):
        try:
            with open(self.console, errors="replace") as f:
                return " | ".join(f.read().splitlines()[-5:])
        except OSError:
            return "(none)"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class QemuTemplating:
    """A template made once; clones and fresh boots timed to an answering agent."""

    def __init__(self, workdir, kernel, initrd, mem_mib, log, timeout=180):
        if shutil.which(QEMU) is None:
            raise QemuError(f"{QEMU} not found: apt-get install qemu-system-x86")
        if not os.path.exists("/dev/vhost-vsock"):
            raise QemuError("/dev/vhost-vsock missing: modprobe vhost_vsock")
        self.dir = os.path.join(workdir, "qemu")
        os.makedirs(self.dir, exist_ok=True)
        self.kernel, self.initrd, self.mem = kernel, initrd, mem_mib
        self.log, self.timeout = log, timeout
        self.ram = "/dev/shm/vmfork-bench-qemu-template.ram"
        self.state = os.path.join("/dev/shm", "vmfork-bench-qemu-template.state")
        self.next_cid = 1000
        self.vms = []

    def _cid(self):
        self.next_cid += 1
        return self.next_cid

    def fresh_boot(self):
        ram = f"/dev/shm/vmfork-bench-qemu-fresh-{self.next_cid}.ram"
        t0 = time.monotonic()
        vm = QemuVm(self.dir, f"fresh{self.next_cid}", self._cid(), self.kernel, self.initrd,
                    self.mem, ram, share=False)
        try:
            return vm.wait_answer(t0, self.timeout)
        finally:
            vm.kill()
            os.unlink(ram)

    def make_template(self):
        t0 = time.monotonic()
        vm = QemuVm(self.dir, "template", self._cid(), self.kernel, self.initrd, self.mem,
                    self.ram, share=True)
        try:
            boot = vm.wait_answer(t0, self.timeout)
            vm.qmp.ignore_shared()
            vm.qmp.execute("stop")
            vm.qmp.execute("migrate", uri=f"file:{self.state}")
            vm.qmp.wait_migration(self.timeout)
        finally:
            vm.kill()
        self.log(f"qemu template: booted in {boot * 1000:.0f} ms, state "
                 f"{os.path.getsize(self.state) >> 10} KiB")

    def clone(self, keep=False):
        """Seconds from the request (the clone QEMU's start) to its answer."""
        t0 = time.monotonic()
        vm = QemuVm(self.dir, f"clone{self.next_cid}", self._cid(), self.kernel, self.initrd,
                    self.mem, self.ram, share=False, incoming=True)
        try:
            vm.qmp.ignore_shared()
            vm.qmp.execute("migrate-incoming", uri=f"file:{self.state}")
            vm.qmp.wait_migration(self.timeout)
            vm.qmp.execute("cont")
            took = vm.wait_answer(t0, self.timeout)
        except BaseException:
            vm.kill()
            raise
        if keep:
            self.vms.append(vm)
        else:
            vm.kill()
        return took

    def close(self):
        for vm in self.vms:
            vm.kill()
        self.vms = []
        for path in (self.ram, self.state):
            if os.path.exists(path):
                os.unlink(path)
