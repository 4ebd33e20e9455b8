// SPDX-License-Identifier: GPL-2.0
// vmfork-vmm: the process of one VM. Started by launch_vmm() with its launch spec and
// descriptors (launcher.h); not a command for users (`vmfork run` starts it).
#include <cstdio>
#include <exception>
#include <fcntl.h>
#include <unistd.h>

#include "vmfork/vmm/launcher.h"
#include "vmfork/vmm/vmm_service.h"

int main(int argc, char** /*argv*/) {
    if (argc != 2 || ::fcntl(vmfork::launch_fd::spec, F_GETFD) < 0) {
        std::fprintf(stderr, "vmfork-vmm: started by vmfork itself (vmfork run, vmfork fork), "
                             "not by hand\n");
        return 2;
    }
    try {
        return vmfork::vmm_main();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vmfork-vmm: %s\n", e.what());
    }
    return 1;
}
