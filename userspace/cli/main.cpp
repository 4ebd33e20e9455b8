// SPDX-License-Identifier: GPL-2.0
// vmfork: run a VM, fork it into running clones, list, reset, stats, events, kill.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/format.h>

#include "bench.h"
#include "cli.h"
#include "vmfork/control/protocol.h"
#include "vmfork/system_error.h"
#include "vmfork/vmm/pool.h"
#include "vmfork/vmm/vmm_service.h"

#ifndef VMFORK_VERSION
#define VMFORK_VERSION "unknown"
#endif

namespace {

int run_cli(int argc, char** argv) {
    using namespace vmfork::cli;

    CLI::App app{"vmfork: instant copy-on-write clones of running KVM virtual machines.\n"
                 "VMs are processes with a control socket in $VMFORK_RUNTIME_DIR "
                 "(default: /run/vmfork for root,\n$XDG_RUNTIME_DIR/vmfork for other users, "
                 "/tmp/vmfork-UID without XDG_RUNTIME_DIR)."};
    app.set_version_flag("--version", std::string("vmfork ") + VMFORK_VERSION);
    app.require_subcommand(1);
    Globals g;
    unsigned timeout_s = 120;
    app.add_option("--timeout", timeout_s, "seconds to wait for a VM to answer or start")
        ->check(CLI::Range(1, 3600))
        ->capture_default_str();

    RunOptions run;
    auto* run_cmd = app.add_subcommand(
        "run", "boot a new VM: the built-in test guest, or a Linux guest (--linux, --kernel)");
    run_cmd->add_option("--name", run.name, "VM name (default: vm1, vm2, ...)");
    run_cmd->add_option("--mem", run.mem, "guest RAM, e.g. 64M, 1G")->capture_default_str();
    run_cmd->add_option("--cpus", run.cpus, "vCPUs")
        ->check(CLI::Range(1, 16))
        ->capture_default_str();
    run_cmd->add_option("--fill", run.fill, "percent of RAM the guest fills with data at boot")
        ->check(CLI::Range(0, 100))
        ->capture_default_str();
    run_cmd->add_option("--pace", run.pace_ms, "ms between guest reports (0: the guest spins)")
        ->check(CLI::Range(0, 1000))
        ->capture_default_str();
    run_cmd->add_option("--report-every", run.report_every, "guest steps between reports")
        ->check(CLI::Range(1ULL, 1000000000ULL))
        ->capture_default_str();
    run_cmd->add_flag("--foreground", run.foreground, "run the VM in this process (Ctrl-C stops)");
    run_cmd->add_flag("--linux", run.linux_guest,
                      "boot Linux: the host's kernel (/boot/vmlinuz-$(uname -r)) with the "
                      "build's initramfs (busybox, vmfork-workload, a shell on ttyS0)");
    run_cmd->add_option(
        "--kernel", run.kernel,
        "a Linux bzImage, or an ELF vmlinux with a PVH entry, to boot (implies --linux)");
    run_cmd->add_option("--initrd", run.initrd, "the initramfs (default: the build's)");
    run_cmd->add_flag("--no-initrd", run.no_initrd, "boot Linux without an initramfs");
    run_cmd->add_option(
        "--disk", run.disks,
        "PATH[,ro]: a raw disk image (or block device) as the guest's vda, vdb, ... (Linux, "
        "repeat for more); clones get a copy-on-write view of it as it was at the fork, in "
        "$VMFORK_DISK_DIR (default /var/tmp); once a VM is forked, its own later writes are "
        "kept in such a view too, not in the image");
    run_cmd
        ->add_option(
            "--net", run.net,
            "tap[,NAME] | none: a virtio-net device (the guest's eth0) on a tap of this network "
            "namespace, NAME or the first free vmfN (Linux; needs CAP_NET_ADMIN); each clone gets "
            "a tap of the same name and address in a network namespace of its own "
            "(docs/networks.md)")
        ->capture_default_str();
    run_cmd->add_option("--net-address", run.net_address,
                        "ADDR/PREFIX: the tap's address (the host's side), like 172.30.0.1/24; "
                        "the default guest takes its own from --append vmfork.ip=ADDR/PREFIX");
    run_cmd->add_option("--append", run.append,
                        fmt::format("kernel command line added to \"{}\"", default_linux_cmdline));

    ForkOptions fork;
    auto* fork_cmd = app.add_subcommand("fork", "clone a running VM into new running VMs");
    fork_cmd->add_option("name", fork.name, "the VM to clone")->required();
    fork_cmd->add_option("-n,--count", fork.count, "number of clones")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    fork_cmd->add_flag("--template", fork.make_template,
                       "freeze the VM as a read-only template first (it stops running for good)");
    fork_cmd->add_option("--name-prefix", fork.name_prefix,
                         "clone names: PREFIX1, PREFIX2, ... "
                         "(default: NAME-)");
    fork_cmd->add_flag("--json", fork.json, "print the result as JSON");
    auto* wait_ready =
        fork_cmd->add_flag("--wait-ready", fork.wait_ready,
                           "Linux guests: return when every clone's agent has applied its "
                           "identity (hostname, machine-id, clock, RNG reseed, "
                           "/etc/vmfork/clone.d hooks), with the time each took; exit 1 if any "
                           "failed");
    fork_cmd
        ->add_flag("--no-customize", fork.no_customize,
                   "Linux guests: the clones keep the parent's hostname, machine-id and clock "
                   "and run no hooks (their kernel still reseeds its RNG on the new VM "
                   "generation ID)")
        ->excludes(wait_ready);
    // Tests only, not in --help: shows what a clone without VMGenID would do.
    fork_cmd
        ->add_flag("--keep-generation", fork.keep_generation,
                   "the clones keep the parent's VM generation ID (tests only)")
        ->group("");

    bool ls_json = false;
    auto* ls_cmd = app.add_subcommand("ls", "list the VMs");
    ls_cmd->add_flag("--json", ls_json, "print as JSON");

    StatsOptions stats;
    auto* stats_cmd = app.add_subcommand(
        "stats", "memory sharing per VM and for the whole tree, from the module's generic "
                 "netlink family (root sees every object, a user only its own)");
    stats_cmd->add_option("name", stats.name, "a VM (default: every memory object)");
    stats_cmd->add_flag("--json", stats.json,
                        "print as JSON (with --watch: one line per interval)");
    stats_cmd
        ->add_option("-w,--watch", stats.watch_s,
                     "print again every SECS seconds, with COW breaks per second, "
                     "until Ctrl-C")
        ->check(CLI::Range(1, 3600));
    stats_cmd->add_option("-c,--count", stats.count, "with --watch: stop after COUNT prints")
        ->check(CLI::Range(1U, 1000000U));

    EventsOptions events;
    auto* events_cmd = app.add_subcommand(
        "events", "fork, reset and release events as they happen, from the module's generic "
                  "netlink family (root only: they name every user's objects)");
    events_cmd->add_flag("--json", events.json, "print one JSON object per line");
    events_cmd->add_option("-c,--count", events.count, "stop after COUNT events")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));

    std::string reset_name;
    auto* reset_cmd = app.add_subcommand("reset", "take a clone back to its fork point");
    reset_cmd->add_option("name", reset_name, "the clone")->required();

    std::vector<std::string> kill_names;
    bool kill_all = false;
    auto* kill_cmd = app.add_subcommand("kill", "stop VMs and free their memory");
    kill_cmd->add_option("names", kill_names, "VMs to stop");
    kill_cmd->add_flag("--all", kill_all, "stop every VM");

    PoolOptions pool;
    auto* pool_cmd = app.add_subcommand(
        "pool", "the warm pool: VMM processes started ahead with their KVM VM and vCPUs, "
                "that `vmfork fork` starts clones in instead of new processes (refilled by "
                "each fork; none until you resize it)");
    pool_cmd->add_flag("--json", pool.json, "print as JSON");
    auto* pool_resize = pool_cmd->add_subcommand(
        "resize", "keep SIZE warm VMMs of CPUS vCPUs; starts or stops them now");
    pool_resize->add_option("size", pool.size, "warm VMMs to keep (0 stops them)")
        ->required()
        ->check(CLI::Range(0U, vmfork::VmmPool::max_size));
    pool_resize
        ->add_option("--cpus", pool.cpus,
                     "their vCPUs: a clone takes one of its "
                     "parent's count (default 1)")
        ->check(CLI::Range(1U, static_cast<unsigned>(vmfork::VmState::max_vcpus)));
    auto* pool_drain =
        pool_cmd->add_subcommand("drain", "stop every warm VMM and keep none from now on");
    pool_drain->add_option("--cpus", pool.cpus, "only those of this many vCPUs")
        ->check(CLI::Range(1U, static_cast<unsigned>(vmfork::VmState::max_vcpus)));

    ConsoleOptions console;
    auto* console_cmd = app.add_subcommand("console", "the guest's serial output so far");
    console_cmd->add_option("name", console.name, "the VM")->required();
    console_cmd->add_flag("-f,--follow", console.follow,
                          "keep printing until the VM stops or Ctrl-C");
    console_cmd->add_flag("-i,--interactive", console.interactive,
                          "attach: stdin goes to the guest's serial port, its output comes back "
                          "(on a terminal, Ctrl-] detaches; otherwise stdin is sent and the "
                          "command returns at EOF); Linux guests only");

    ExecOptions exec;
    auto* exec_cmd = app.add_subcommand(
        "exec", "run a command in a Linux guest through its agent (vmfork-agent, over vsock); "
                "exits with the command's status (128+N for signal N, 127 if not found)");
    exec_cmd->add_option("name", exec.name, "the VM")->required();
    exec_cmd->add_option("command", exec.argv, "the command and its arguments (after --)")
        ->required();
    exec_cmd->add_flag("-i,--interactive", exec.interactive,
                       "pass stdin to the command (default: /dev/null)");
    exec_cmd
        ->add_option("--timeout", exec.timeout_s,
                     "seconds to wait for the agent and for the command; it is killed after "
                     "(default: --timeout to connect, no limit on the command)")
        ->check(CLI::Range(1U, 86400U * 365));

    DemoOptions demo;
    auto* demo_cmd = app.add_subcommand("demo", "boot, warm, fork N verified clones, report, "
                                                "clean up");
    demo_cmd->add_option("--mem", demo.mem, "guest RAM")->capture_default_str();
    demo_cmd->add_option("--clones", demo.clones, "number of clones")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    demo_cmd->add_option("--fill", demo.fill, "percent of RAM the guest fills")
        ->check(CLI::Range(0, 100))
        ->capture_default_str();
    demo_cmd->add_option("--cpus", demo.cpus, "vCPUs")
        ->check(CLI::Range(1, 16))
        ->capture_default_str();
    demo_cmd->add_flag("--keep", demo.keep, "leave the VMs running at the end");
    DemoLinuxOptions demo_linux;
    bool linux_demo = false;
    demo_cmd->add_flag("--linux", linux_demo,
                       "the Linux demo instead: boot the default Linux guest, start a workload "
                       "that writes and checks memory, fork --clones (default 16) clones, check "
                       "every clone by the guest's own output");
    demo_cmd->add_option("--kernel", demo_linux.kernel, "with --linux: the guest kernel");
    demo_cmd
        ->add_option("--workload", demo_linux.workload_mib,
                     "with --linux: MiB the workload writes and checks")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();

    BenchOptions bench;
    auto* bench_cmd = add_bench_command(app, bench);

    CLI11_PARSE(app, argc, argv);
    g.timeout = std::chrono::seconds(timeout_s);

    try {
        if (*run_cmd) {
            if (!run.kernel.empty() || !run.initrd.empty() || !run.append.empty() ||
                run.no_initrd || !run.disks.empty() || run.net != "none" ||
                !run.net_address.empty()) {
                run.linux_guest = true;
            }
            if (run.linux_guest) {
                for (const char* opt : {"--fill", "--pace", "--report-every"}) {
                    if (run_cmd->count(opt) != 0) {
                        throw CliError(std::string(opt) +
                                       " is an option of the built-in guest, not of a Linux one");
                    }
                }
                if (run.no_initrd && !run.initrd.empty()) {
                    throw CliError("give --initrd or --no-initrd, not both");
                }
            }
            return cmd_run(g, run);
        }
        if (*fork_cmd) {
            return cmd_fork(g, fork);
        }
        if (*ls_cmd) {
            return cmd_ls(g, ls_json);
        }
        if (*stats_cmd) {
            if (stats.count != 0 && stats.watch_s == 0) {
                throw CliError("--count needs --watch SECS");
            }
            return cmd_stats(g, stats);
        }
        if (*events_cmd) {
            return cmd_events(events);
        }
        if (*reset_cmd) {
            return cmd_reset(g, reset_name);
        }
        if (*kill_cmd) {
            return cmd_kill(g, kill_names, kill_all);
        }
        if (*pool_cmd) {
            if (*pool_resize) {
                pool.action = PoolOptions::Action::Resize;
            } else if (*pool_drain) {
                pool.action = PoolOptions::Action::Drain;
            }
            return cmd_pool(g, pool);
        }
        if (*console_cmd) {
            if (console.interactive && console.follow) {
                throw CliError("give -f or -i, not both (-i follows the output too)");
            }
            return cmd_console(g, console);
        }
        if (*exec_cmd) {
            return cmd_exec(g, exec);
        }
        if (*demo_cmd) {
            if (linux_demo) {
                if (demo_cmd->count("--fill") != 0) {
                    throw CliError("--fill is an option of the built-in guest's demo");
                }
                demo_linux.keep = demo.keep;
                demo_linux.cpus = demo.cpus;
                if (demo_cmd->count("--mem") != 0) {
                    demo_linux.mem = demo.mem;
                }
                if (demo_cmd->count("--clones") != 0) {
                    demo_linux.clones = demo.clones;
                }
                return cmd_demo_linux(g, demo_linux);
            }
            if (!demo_linux.kernel.empty() || demo_cmd->count("--workload") != 0) {
                throw CliError("--kernel and --workload are options of `vmfork demo --linux`");
            }
            return cmd_demo(g, demo);
        }
        if (*bench_cmd) {
            return cmd_bench(g, bench);
        }
    } catch (const CliError& e) {
        fmt::print(stderr, "vmfork: {}\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "vmfork: {}\n", e.what());
        return 1;
    }
    return 1;
}

} // namespace

int main(int argc, char** argv) {
    try {
        return run_cli(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vmfork: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "vmfork: unexpected error\n");
    }
    return 1;
}
