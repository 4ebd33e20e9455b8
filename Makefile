# SPDX-License-Identifier: GPL-2.0
#
# vmfork top-level build. Everything goes to build/ (out of tree); "make help" lists
# the targets. The kernel module's own kbuild file is kmod/Kbuild; ./Kbuild
# ("obj-m += kmod/") serves "make -C $KDIR M=$PWD" and DKMS.

VERSION := $(shell cat VERSION)
BUILD := build
SRC := $(CURDIR)

# The kernel matrix: the newest installed release of each series that has headers.
# Evaluated when make starts: check.sh installs the kernels first, then runs make.
MATRIX_SERIES := 6.1 6.12
MATRIX := $(strip $(foreach s,$(MATRIX_SERIES),$(shell \
	ls -d /lib/modules/$(s).*-amd64/build/Makefile 2>/dev/null | \
	sed 's|^/lib/modules/||; s|/build/Makefile$$||' | sort -V | tail -n1)))

# "make module": one module, in place, for one kernel.
KVER ?= $(shell uname -r)
KDIR ?= /lib/modules/$(KVER)/build

CMAKE_GENERATOR := $(if $(shell command -v ninja),Ninja,Unix Makefiles)

LINUX_SRC_TAR := /usr/src/linux-source-6.1.tar.xz
LINUX_SRC_FILES := tools/testing/selftests/kselftest_harness.h \
	tools/testing/selftests/kselftest.h \
	scripts/checkpatch.pl scripts/spelling.txt scripts/const_structs.checkpatch

UDEV_RULE := udev/99-vmfork.rules
UDEV_DIR ?= /etc/udev/rules.d
PREFIX ?= /usr/local

USERSPACE_SRCS = $(shell find userspace -name '*.cpp' -o -name '*.h' | sort)
SHELL_SRCS = $(shell find scripts userspace -name '*.sh' | sort) .ci/run userspace/cli/vmfork.bash-completion
USERSPACE_LIB_SRCS = $(shell find userspace/lib userspace/cli userspace/bench userspace/trace userspace/agent -name '*.cpp' | sort)

.PHONY: all modules modules-debug module userspace selftests bpf kselftest-headers check check-quick \
	demo fuzz stress bench bench-linux bench-disks install deb clean help lint FORCE

all: modules userspace selftests bpf

help:
	@echo 'vmfork $(VERSION): make targets'
	@echo '  all (default)  module for every kernel of the matrix, userspace, selftests, BPF'
	@echo '  modules        build/kmod/<release>/vmfork.ko for: $(or $(MATRIX),(no kernels: run scripts/deps.sh))'
	@echo '  module         kmod/vmfork.ko in place for KDIR (default /lib/modules/$$(uname -r)/build)'
	@echo '  modules-debug  the module for the debug kernel (builds that kernel once, ~20-30 min)'
	@echo '  userspace      libvmfork and its unit tests (CMake, build/userspace)'
	@echo '  selftests      kselftest binaries in build/selftests'
	@echo '  bpf            build/bin/vmfork-trace: bpf/*.bpf.c, its bpftool skeleton, the tool'
	@echo '  check          deps, build, ctest, selftests in a VM on 6.1 and 6.12'
	@echo '  check-quick    the same on 6.1 only'
	@echo '  demo           in the test VM: boot a 256 MiB guest, fork 32 verified clones, report;'
	@echo '                 then a Linux guest with a workload, 16 clones checked by the guest'
	@echo '  fuzz           in a test VM per kernel (6.1, 6.12, debug): fuzz_test with 2*10^6'
	@echo '                 operations and trinity on /dev/vmfork (FUZZ_ARGS: scripts/fuzz.sh)'
	@echo '  stress         in a test VM per kernel (6.1, 6.12, debug): stress_test for 10 minutes'
	@echo '                 (STRESS_SECS, default 600)'
	@echo '  bench          in the test VM (8G, <30 min): vmfork vs process fork, snapshot-restore,'
	@echo '                 full copy; table on stdout, CSV/JSON/PNG in bench-results/ (BENCH_ARGS);'
	@echo '                 then bench-linux'
	@echo '  bench-linux    in the test VM (~16 min): Linux clones through the CLI, fork to `vmfork'
	@echo '                 exec true` live and from a template, pool and no pool, against a fresh'
	@echo '                 boot and QEMU templating; memory of idle clones; linux.json and PNGs'
	@echo '                 in bench-results/ (BENCH_LINUX_ARGS, default --repeat 5 --boots 2)'
	@echo '  bench-disks    in the test VM (root): linked-clone disks with VMM layers, reflinks on'
	@echo '                 XFS and dm-thin snapshots at 1 and 8 GiB; table on stdout, JSON in'
	@echo '                 bench-results/ (BENCH_DISKS_ARGS: build/bin/vmfork-disk-bench --help)'
	@echo '  install        module into /lib/modules/$$(uname -r)/extra, udev rule, modules-load.d entry,'
	@echo '                 userspace (cmake --install) under PREFIX (default /usr/local)'
	@echo '  lint           checkpatch --strict on kmod/ and the uAPI, shellcheck, clang-format, clang-tidy,'
	@echo '                 one version everywhere (scripts/check-version.sh)'
	@echo '  dkms.conf      generate dkms.conf from dkms.conf.in and VERSION'
	@echo '  deb            Debian packages vmfork and vmfork-dkms in build/deb (debhelper, dh-dkms),'
	@echo '                 checked by lintian'
	@echo '  clean          remove build/ and in-place module build files'

# --- kernel module --------------------------------------------------------------------

# build/kmod/<release>/ holds a symlink to each source file of kmod/ (remade every
# time, so added and removed files are picked up) and the build output.
# $(1): kernel release, $(2): its build tree.
define kmod_rule
$(BUILD)/kmod/$(1)/vmfork.ko: FORCE
	@mkdir -p $$(@D)
	@find $$(@D) -maxdepth 1 -type l -delete
	@find $(SRC)/kmod -maxdepth 1 -type f ! -name '.*' ! -name '*.o' ! -name '*.ko' \
		! -name '*.mod' ! -name '*.mod.c' ! -name modules.order ! -name Module.symvers \
		-exec ln -s {} $$(@D)/ \;
	$$(MAKE) -C $(2) M=$(abspath $(BUILD)/kmod/$(1)) VMFORK_SRC=$(SRC) \
		W=1 KCFLAGS=-Werror $$(VMFORK_BUILD_FLAGS) modules
endef
$(foreach r,$(MATRIX),$(eval $(call kmod_rule,$(r),/lib/modules/$(r)/build)))

# The debug kernel (scripts/debug-kernel.sh: KASAN, lockdep, kmemleak, fault
# injection) is built once per machine and cached outside the checkout.
DEBUG_KDIR = $(shell scripts/debug-kernel.sh --print-dir)
ifneq ($(filter modules-debug,$(MAKECMDGOALS)),)
DEBUG_RELEASE := $(shell cat $(DEBUG_KDIR)/kernelrelease)
$(eval $(call kmod_rule,$(DEBUG_RELEASE),$(DEBUG_KDIR)/build))
endif

modules-debug: $(BUILD)/kmod/$(DEBUG_RELEASE)/vmfork.ko

modules: $(foreach r,$(MATRIX),$(BUILD)/kmod/$(r)/vmfork.ko)
ifeq ($(MATRIX),)
	@echo "no kernel of the matrix ($(MATRIX_SERIES)) has headers: run scripts/deps.sh" >&2
	@exit 1
endif

module:
	@test -f $(KDIR)/Makefile || { \
		echo "no kernel headers for $(KVER): install linux-headers-$(KVER) or pass KDIR=" >&2; \
		exit 1; }
	$(MAKE) -C $(KDIR) M=$(SRC)/kmod VMFORK_SRC=$(SRC) modules

# --- userspace ------------------------------------------------------------------------

$(BUILD)/userspace/CMakeCache.txt: userspace/CMakeLists.txt
	cmake -S userspace -B $(BUILD)/userspace -G '$(CMAKE_GENERATOR)' \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_EXPORT_COMPILE_COMMANDS=ON

userspace: $(BUILD)/userspace/CMakeCache.txt
	cmake --build $(BUILD)/userspace
	@mkdir -p $(BUILD)/bin
	@ln -sfn ../userspace/bin/vmfork $(BUILD)/bin/vmfork
	@ln -sfn ../userspace/bin/vmfork-vmm $(BUILD)/bin/vmfork-vmm
	@ln -sfn ../userspace/bin/vmfork-trace $(BUILD)/bin/vmfork-trace
	@ln -sfn ../userspace/bin/vmfork-disk-bench $(BUILD)/bin/vmfork-disk-bench

# --- selftests ------------------------------------------------------------------------

# The kselftest harness, checkpatch and its data files from Debian's linux-source-6.1,
# extracted once (one pass over the archive).
$(BUILD)/linux-src/.stamp: $(LINUX_SRC_TAR)
	@mkdir -p $(@D)
	tar -I 'xz -T0' -xf $< -C $(@D) --strip-components=1 \
		$(addprefix linux-source-6.1/,$(LINUX_SRC_FILES))
	@touch $@

$(BUILD)/kselftest/.stamp: $(BUILD)/linux-src/.stamp
	@mkdir -p $(@D)
	cp $(BUILD)/linux-src/tools/testing/selftests/kselftest_harness.h \
		$(BUILD)/linux-src/tools/testing/selftests/kselftest.h $(@D)/
	@touch $@

kselftest-headers: $(BUILD)/kselftest/.stamp

selftests: $(BUILD)/kselftest/.stamp
	$(MAKE) -C selftests/vmfork OUT=$(abspath $(BUILD)/selftests) \
		KSFT_INC=$(abspath $(BUILD)/kselftest)

# --- BPF ------------------------------------------------------------------------------

# bpf/vmfork_trace.bpf.c is built (clang -target bpf), turned into a skeleton (bpftool
# gen skeleton) and linked into vmfork-trace by CMake (userspace/CMakeLists.txt). Fixed
# tracepoint layouts, no vmlinux.h: the host's /sys/kernel/btf/vmlinux is not needed.
# "bpf" is part of "userspace" (one CMake build: two builds of it at once under -j
# would race).
bpf: userspace

# --- tests ----------------------------------------------------------------------------

check:
	scripts/check.sh

check-quick:
	scripts/check.sh --quick

# The main job: in the test VM (6.1, vmfork.ko loaded), boot the built-in guest with
# 256 MiB, warm it, fork 32 verified clones, print the table, clean up.
# DEMO_ARGS adds options of `vmfork demo`, e.g. DEMO_ARGS="--clones 8 --mem 64M";
# DEMO_LINUX_ARGS of `vmfork demo --linux`. The Linux part runs in a test VM with one
# vCPU: with 16 Linux clones starting at once, multi-threaded TCG lost the whole test
# VM in 2 of 4 runs (docs/testing.md).
demo:
	scripts/deps.sh
	$(MAKE) all
	@for try in 1 2; do \
		scripts/vm-run.sh --kernel 6.1 --mem 2G --timeout 900 -- build/bin/vmfork demo $(DEMO_ARGS); \
		rc=$$?; \
		if [ $$try = 1 ] && { [ $$rc = 124 ] || [ $$rc = 125 ]; }; then \
			echo "make demo: the test VM hung or died (exit status $$rc): QEMU's TCG is"; \
			echo "known to wedge (docs/testing.md); one more try"; \
			continue; \
		fi; \
		[ $$rc = 0 ] || exit $$rc; \
		break; \
	done
	@for try in 1 2; do \
		scripts/vm-run.sh --kernel 6.1 --cpus 1 --mem 2G --timeout 900 -- \
			build/bin/vmfork --timeout 300 demo --linux $(DEMO_LINUX_ARGS); rc=$$?; \
		if [ $$try = 1 ] && { [ $$rc = 124 ] || [ $$rc = 125 ]; }; then \
			echo "make demo: the test VM hung or died (exit status $$rc): QEMU's TCG is"; \
			echo "known to wedge under nested Linux guests (docs/testing.md); one more try"; \
			continue; \
		fi; \
		exit $$rc; \
	done

# In the test VM (6.1, 8 GiB so that the baselines fit): `vmfork bench` at 64 MiB,
# 256 MiB and 1 GiB, cold and on a warm pool; the table on stdout, the samples, summary
# and plots in bench-results/ (a writable share of the VM). BENCH_ARGS adds options of
# `vmfork bench`, e.g. BENCH_ARGS="--repeat 3 --sizes 64M,256M".
BENCH_OUT := bench-results
# The long fuzz runs; make check runs fuzz_test's short default (300000 operations).
fuzz:
	scripts/deps.sh
	$(MAKE) all
	scripts/fuzz.sh $(FUZZ_ARGS)

# The long stress runs; make check runs stress_test for 30 s per kernel.
STRESS_SECS ?= 600
stress:
	scripts/deps.sh
	$(MAKE) all modules-debug
	set -e; for k in 6.1 6.12 debug; do \
		echo "==== stress: kernel $$k, $(STRESS_SECS) s ===="; \
		VMFORK_STRESS_SECS=$(STRESS_SECS) scripts/vm-run.sh --kernel $$k \
			$$( [ $$k = debug ] && echo --leak-check ) --timeout $$(( $(STRESS_SECS) + 900 )) -- \
			scripts/run-selftests.sh -t $$(( $(STRESS_SECS) + 300 )) -x build/selftests/stress_test; \
	done

bench:
	scripts/deps.sh
	$(MAKE) all
	scripts/vm-run.sh --kernel 6.1 --mem 8G --timeout 1700 --share $(BENCH_OUT) -- \
		build/bin/vmfork bench --pool --out $(abspath $(BENCH_OUT)) $(BENCH_ARGS)
	$(MAKE) bench-linux

# Linux clones on the product path (the CLI): fork to a clone that answers `vmfork exec
# true`, live and from a template, against a fresh boot and QEMU templating (Debian's
# QEMU with KVM in the test VM, the same guest); memory of 32 idle clones of each.
# Multi-threaded TCG for the nested Linux guests (docs/testing.md).
# 5 forks per series and 2 fresh boots: about 16 minutes, so that `make bench` stays
# within 30 (linux_bench.py --help for the rest).
BENCH_LINUX_ARGS ?= --repeat 5 --boots 2
bench-linux:
	scripts/deps.sh
	$(MAKE) all
	VMFORK_TCG_THREAD=multi scripts/vm-run.sh --kernel 6.1 --mem 4G --timeout 1800 \
		--share $(BENCH_OUT) -- \
		python3 userspace/bench/linux_bench.py --out $(abspath $(BENCH_OUT)) $(BENCH_LINUX_ARGS)

# Linked-clone disks (issue #14): VMM layers against reflinks (FICLONE on XFS) and
# dm-thin snapshots on the same images; needs root, loop devices and device-mapper,
# hence the test VM (no vmfork.ko needed). Backing files stay in the VM's tmpfs.
BENCH_DISKS_ARGS ?=
bench-disks:
	scripts/deps.sh
	$(MAKE) userspace
	scripts/vm-run.sh --kernel 6.1 --no-module --mem 3G --timeout 900 --share $(BENCH_OUT) -- \
		build/bin/vmfork-disk-bench --out $(abspath $(BENCH_OUT)) $(BENCH_DISKS_ARGS)

# --- install, packaging, lint, clean --------------------------------------------------

install: module
	$(MAKE) -C $(KDIR) M=$(SRC)/kmod VMFORK_SRC=$(SRC) INSTALL_MOD_DIR=extra \
		$(if $(DESTDIR),INSTALL_MOD_PATH=$(DESTDIR)) modules_install
	$(if $(DESTDIR),,depmod -a $(KVER))
	install -D -m 0644 $(UDEV_RULE) $(DESTDIR)$(UDEV_DIR)/99-vmfork.rules
	install -D -m 0644 dist/modules-load.d/vmfork.conf $(DESTDIR)/etc/modules-load.d/vmfork.conf
	@[ -n "$(DESTDIR)" ] || udevadm control --reload-rules 2>/dev/null || true
	@if [ -f $(BUILD)/userspace/cmake_install.cmake ]; then \
		DESTDIR=$(DESTDIR) cmake --install $(BUILD)/userspace --prefix $(PREFIX); fi

dkms.conf: dkms.conf.in VERSION
	sed 's/@VERSION@/$(VERSION)/' $< > $@

# The packages are built from a copy of the source (tracked and new files, as in the
# work tree, without build/), so that dpkg-buildpackage's output and its build tree stay
# in build/deb. Lintian fails the target on any error or warning that
# debian/*.lintian-overrides does not explain.
DEB_DIR := $(BUILD)/deb
deb:
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/vmfork-$(VERSION)
	git ls-files -z -c -o --exclude-standard | \
		tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(DEB_DIR)/vmfork-$(VERSION)
	@echo "make deb: dpkg-buildpackage in $(DEB_DIR)/vmfork-$(VERSION), log $(DEB_DIR)/build.log"
	@cd $(DEB_DIR)/vmfork-$(VERSION) && DEB_BUILD_OPTIONS="parallel=$$(nproc)" \
		nice dpkg-buildpackage -b -us -uc >../build.log 2>&1 || { \
		tail -n 40 ../build.log; echo "make deb: dpkg-buildpackage failed: $(DEB_DIR)/build.log"; \
		exit 1; }
	@grep -E 'warning:' $(DEB_DIR)/build.log || true
	rm -rf $(DEB_DIR)/vmfork-$(VERSION)
	lintian --info --display-info --fail-on error,warning $(DEB_DIR)/vmfork_$(VERSION)_amd64.changes
	@ls -l $(DEB_DIR)/*.deb

CHECKPATCH = $(BUILD)/linux-src/scripts/checkpatch.pl --strict --no-tree --quiet --show-types
KMOD_COMPAT := $(wildcard kmod/compat.h)
KMOD_TRACE := $(wildcard kmod/trace*.h)
KMOD_LINT := $(filter-out $(KMOD_COMPAT) $(KMOD_TRACE),$(wildcard kmod/*.[ch]))

# Two justified exceptions: compat.h is where an out-of-tree module tests kernel
# versions, and tracepoint headers use the TRACE_EVENT layout of the kernel's own.
lint: $(BUILD)/linux-src/.stamp $(BUILD)/userspace/CMakeCache.txt
	$(CHECKPATCH) -f $(KMOD_LINT) include/uapi/linux/vmfork.h
	$(if $(KMOD_COMPAT),$(CHECKPATCH) --ignore LINUX_VERSION_CODE --ignore CONSTANT_COMPARISON \
		-f $(KMOD_COMPAT))
	$(if $(KMOD_TRACE),$(CHECKPATCH) --ignore OPEN_ENDED_LINE --ignore PARENTHESIS_ALIGNMENT \
		-f $(KMOD_TRACE))
	shellcheck -S warning $(SHELL_SRCS)
	scripts/check-version.sh
	clang-format --dry-run -Werror $(USERSPACE_SRCS)
	scripts/clang-tidy.py $(BUILD)/userspace $(USERSPACE_LIB_SRCS)

clean:
	rm -rf $(BUILD) dkms.conf
	cd kmod && rm -rf *.o *.ko *.mod *.mod.c .*.cmd modules.order Module.symvers .tmp_versions

FORCE:
