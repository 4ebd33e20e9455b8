// SPDX-License-Identifier: GPL-2.0
// Linked-clone disks: a view's writes stay its own; a clone sees its parent's disk as
// it was at the fork, the parent's later writes do not reach it; three generations;
// partial blocks copied up; reset back to the fork point; frozen layers passed by
// descriptor (as to a clone's VMM) read the same; a foreign layer is refused.
#include <gtest/gtest.h>

#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

#include "vmfork/system_error.h"
#include "vmfork/vmm/layered_disk.h"

namespace vmfork {
namespace {

constexpr std::uint64_t disk_size = 64 * 4096 + 1024; // a partial last block too

std::vector<std::byte> fill(std::size_t n, int v) {
    return std::vector<std::byte>(n, static_cast<std::byte>(v));
}

class LayeredDiskTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/vmfork-layered-test.XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        image = dir + "/base.img";
        const int fd = ::open(image.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        ASSERT_GE(fd, 0);
        const auto base = fill(disk_size, 0xb0);
        ASSERT_EQ(::pwrite(fd, base.data(), base.size(), 0), static_cast<ssize_t>(base.size()));
        ::close(fd);
        base_disk = std::make_shared<RawDisk>(image, true);
    }
    void TearDown() override {
        ::unlink(image.c_str());
        // Layers are unlinked at once: the directory must be empty again.
        EXPECT_EQ(::rmdir(dir.c_str()), 0) << "a disk layer file was left in " << dir;
    }
    static std::vector<std::byte> at(DiskImage& d, std::uint64_t off, std::size_t n) {
        std::vector<std::byte> b(n);
        d.read(off, b);
        return b;
    }

    std::string dir;
    std::string image;
    std::shared_ptr<RawDisk> base_disk;
};

TEST_F(LayeredDiskTest, AViewWritesOnTopOfTheBaseAndNeverIntoIt) {
    LayeredDisk d(base_disk, {}, dir);
    EXPECT_EQ(d.size(), disk_size);
    d.write(4096, fill(4096, 1));
    d.write(3 * 4096 + 100, fill(10, 2)); // part of a block: copied up
    EXPECT_EQ(at(d, 4096, 4096), fill(4096, 1));
    auto b = at(d, 3 * 4096, 4096);
    EXPECT_EQ(b[99], std::byte{0xb0});
    EXPECT_EQ(b[100], std::byte{2});
    EXPECT_EQ(b[110], std::byte{0xb0});
    EXPECT_EQ(d.private_blocks(), 2U);
    // The last, partial block.
    d.write(disk_size - 512, fill(512, 3));
    EXPECT_EQ(at(d, disk_size - 1024, 1024)[0], std::byte{0xb0});
    EXPECT_EQ(at(d, disk_size - 512, 512), fill(512, 3));
    EXPECT_EQ(at(*base_disk, 4096, 4096), fill(4096, 0xb0));
    d.flush();
}

TEST_F(LayeredDiskTest, ClonesSeeTheForkInstantAndThreeGenerationsStayApart) {
    LayeredDisk parent(base_disk, {}, dir);
    parent.write(0, fill(4096, 1));
    LayeredDisk child(base_disk, parent.fork(), dir);
    parent.write(0, fill(4096, 2)); // after the fork: not the child's
    parent.write(8192, fill(4096, 2));
    EXPECT_EQ(at(child, 0, 4096), fill(4096, 1));
    EXPECT_EQ(at(child, 8192, 4096), fill(4096, 0xb0));
    child.write(4096, fill(4096, 5));
    EXPECT_EQ(at(parent, 4096, 4096), fill(4096, 0xb0));
    LayeredDisk sibling(base_disk, std::vector(child.frozen()), dir);
    EXPECT_EQ(at(sibling, 4096, 4096), fill(4096, 0xb0)); // not the other child's
    LayeredDisk grandchild(base_disk, child.fork(), dir);
    EXPECT_EQ(at(grandchild, 0, 4096), fill(4096, 1));
    EXPECT_EQ(at(grandchild, 4096, 4096), fill(4096, 5));
    grandchild.write(0, fill(4096, 7));
    EXPECT_EQ(at(child, 0, 4096), fill(4096, 1));
    EXPECT_EQ(at(parent, 0, 4096), fill(4096, 2));
    EXPECT_EQ(grandchild.frozen().size(), 2U);
    EXPECT_EQ(grandchild.shared_blocks(), 2U);
    EXPECT_EQ(grandchild.private_blocks(), 1U);
    // A view that wrote nothing since its last fork adds no layer.
    EXPECT_EQ(child.fork().size(), 2U);
}

TEST_F(LayeredDiskTest, ResetGoesBackToTheForkPointItWasMadeAt) {
    LayeredDisk parent(base_disk, {}, dir);
    parent.write(0, fill(4096, 1));
    LayeredDisk child(base_disk, parent.fork(), dir);
    child.write(0, fill(4096, 4));
    LayeredDisk grandchild(base_disk, child.fork(), dir); // child froze a layer
    child.write(4096, fill(4096, 4));
    child.reset();
    EXPECT_EQ(at(child, 0, 4096), fill(4096, 1));
    EXPECT_EQ(at(child, 4096, 4096), fill(4096, 0xb0));
    EXPECT_EQ(child.frozen().size(), 1U);
    EXPECT_EQ(child.private_blocks(), 0U);
    EXPECT_EQ(at(grandchild, 0, 4096), fill(4096, 4)); // its layer is still there
}

TEST_F(LayeredDiskTest, FrozenLayersPassedByDescriptorReadTheSame) {
    LayeredDisk parent(base_disk, {}, dir);
    parent.write(12288, fill(4096, 9));
    auto chain = parent.fork();
    ASSERT_EQ(chain.size(), 1U);
    // What a clone's VMM does with the descriptors it inherits.
    std::vector<std::shared_ptr<DiskLayer>> reopened;
    for (const auto& l : chain) {
        reopened.push_back(DiskLayer::open_frozen(UniqueFd(::dup(l->fd())), disk_size));
    }
    EXPECT_EQ(reopened[0]->blocks(), 1U);
    LayeredDisk clone(base_disk, reopened, dir);
    EXPECT_EQ(at(clone, 12288, 4096), fill(4096, 9));
    EXPECT_EQ(at(clone, 0, 4096), fill(4096, 0xb0));
    // Not a frozen layer of this disk: refused.
    auto fresh = DiskLayer::create(dir, disk_size);
    EXPECT_THROW((void)DiskLayer::open_frozen(UniqueFd(::dup(fresh->fd())), disk_size),
                 SystemError);
    EXPECT_THROW((void)DiskLayer::open_frozen(UniqueFd(::dup(chain[0]->fd())), disk_size * 2),
                 SystemError);
}

} // namespace
} // namespace vmfork
