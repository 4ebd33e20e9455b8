// SPDX-License-Identifier: GPL-2.0
// vmfork-disk-bench: which copy-on-write mechanism for linked-clone disks (issue #14).
// On the same image (sparse, the same data spread across it, synced), at each size,
// it times the making of clones, their first writes, and the space 10 clones take,
// for VMM layers (the real LayeredDisk, in-process), reflink copies on XFS and dm-thin
// snapshots. A table on stdout, JSON in --out, progress on stderr. Needs root (loop
// devices, mounts, device-mapper), as `make bench-disks` runs it in the test VM.
#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "host.h"
#include "mechanism.h"
#include "vmfork/bench/stats.h"
#include "vmfork/parse_size.h"
#include "vmfork/system_error.h"

namespace vmfork::diskbench {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double us_since(Clock::time_point t) {
    return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

void progress(const std::string& what) {
    static const auto start = Clock::now();
    fmt::print(stderr, "disk-bench [{:7.1f} s] {}\n", us_since(start) / 1e6, what);
    std::fflush(stderr);
}

struct Options {
    std::vector<std::string> sizes{"1G", "8G"};
    std::vector<std::string> mechanisms{"layers", "reflink", "dm-thin"};
    std::string data = "64M";
    std::string chunk = "64K";
    std::string thin_block = "64K";
    unsigned clones = 10;
    unsigned writes = 256;
    std::string workdir = "/var/tmp";
    std::string out;
    bool buffered = false; // reflink and dm-thin clones without O_DIRECT, as layers
};

struct Result {
    std::string mechanism;
    std::string needs;
    bool direct_io = false;
    std::uint64_t size = 0;
    std::vector<double> clone_us;
    std::vector<double> cow_write_us;  // per write (flush included), one value per clone
    std::vector<double> hole_write_us; // the same into blocks the image never wrote
    std::uint64_t clones_bytes = 0;    // storage the clones took before writing
    std::uint64_t written_bytes = 0;   // ... and after their copy-on-write writes
};

std::unique_ptr<Mechanism> make(const std::string& name, const std::string& dir,
                                const ImageLayout& layout, const Options& o,
                                std::uint64_t thin_block) {
    if (name == "layers") {
        return make_layers(dir, layout);
    }
    if (name == "reflink") {
        return make_reflink(dir, layout, !o.buffered);
    }
    if (name == "dm-thin") {
        return make_thin(dir, layout, thin_block, !o.buffered);
    }
    throw std::invalid_argument("unknown mechanism " + name + " (layers, reflink, dm-thin)");
}

// A clone must show the image where it did not write, and its writes where it did.
void check_block(Mechanism& m, std::size_t clone, std::uint64_t off,
                 std::span<const std::byte> want, const std::string& what) {
    AlignedBuffer got(want.size());
    m.read(clone, off, got.span());
    if (std::memcmp(got.span().data(), want.data(), want.size()) != 0) {
        throw SystemError(EIO, fmt::format("{}: clone {} reads wrong data at {} ({})", m.name(),
                                           clone, off, what));
    }
}

double signed_delta(std::uint64_t after, std::uint64_t before) {
    return static_cast<double>(after) - static_cast<double>(before);
}

Result measure(const std::string& name, const std::string& dir, const ImageLayout& layout,
               const Options& o, std::uint64_t thin_block) {
    auto m = make(name, dir, layout, o, thin_block);
    Result r;
    r.mechanism = name;
    r.needs = m->needs();
    r.direct_io = m->direct_io();
    r.size = layout.size();
    const auto t_prep = Clock::now();
    m->prepare();
    progress(fmt::format("{} {}: image written in {:.1f} s", name,
                         bench::format_bytes(static_cast<double>(layout.size())),
                         us_since(t_prep) / 1e6));
    const std::uint64_t used0 = m->used_bytes();
    for (unsigned i = 0; i < o.clones; ++i) {
        m->before_clone();
        const auto t = Clock::now();
        m->clone();
        r.clone_us.push_back(us_since(t));
    }
    const std::uint64_t used_clones = m->used_bytes();
    r.clones_bytes = used_clones - std::min(used_clones, used0);

    // The image's content, as every clone must read it before its writes.
    const std::uint64_t probe_chunk = layout.chunks() / 2;
    AlignedBuffer image_chunk(layout.chunk());
    fill_chunk(image_chunk.span(), probe_chunk);
    AlignedBuffer block(ImageLayout::block);
    for (unsigned i = 0; i < o.clones; ++i) {
        check_block(*m, i, layout.chunk_offset(probe_chunk),
                    image_chunk.span().first(ImageLayout::block), "the image");
        const auto offsets = layout.write_offsets(o.writes, i, true);
        fill_chunk(block.span(), 1'000'000 + i);
        const auto t = Clock::now();
        m->write(i, offsets, block.span());
        r.cow_write_us.push_back(us_since(t) / o.writes);
        check_block(*m, i, offsets.front(), block.span(), "its write");
    }
    const std::uint64_t used1 = m->used_bytes();
    r.written_bytes = used1 - std::min(used1, used0);
    for (unsigned i = 0; i < o.clones; ++i) {
        const auto offsets = layout.write_offsets(o.writes, 1000 + i, false);
        const auto t = Clock::now();
        m->write(i, offsets, block.span());
        r.hole_write_us.push_back(us_since(t) / o.writes);
    }
    progress(fmt::format("{} {}: {} clones, median {:.0f} us; writes {:.0f} us/4KiB; "
                         "{:+.1f} MiB",
                         name, bench::format_bytes(static_cast<double>(layout.size())), o.clones,
                         bench::summarize(r.clone_us).median,
                         bench::summarize(r.cow_write_us).median,
                         signed_delta(used1, used0) / (1 << 20)));
    return r;
}

json figure_json(const std::vector<double>& v) {
    const auto s = bench::summarize(v);
    json j = bench::summary_json(s);
    j["samples"] = v;
    return j;
}

void print_table(const std::vector<Result>& results, const ImageLayout& first, const Options& o) {
    fmt::print(
        "Linked-clone disks: each image sparse, {} of data in {} KiB chunks at even "
        "strides, synced.\n{} clones per image; each clone then writes {} x 4 KiB at "
        "random into the image's data (copy-on-write), flushes, then as many into its holes.\n\n",
        bench::format_bytes(static_cast<double>(first.data())), first.chunk() / 1024, o.clones,
        o.writes);
    fmt::print("{:<9} {:>6} {:>11} {:>11} {:>12} {:>12} {:>12} {:>11} {:>12} {:>7}\n", "mechanism",
               "image", "clone med", "clone p90", "COW wr med", "COW wr p90", "hole wr med",
               "clones use", "+ writes use", "O_DIRECT");
    for (const auto& r : results) {
        const auto c = bench::summarize(r.clone_us);
        const auto w = bench::summarize(r.cow_write_us);
        const auto h = bench::summarize(r.hole_write_us);
        fmt::print(
            "{:<9} {:>6} {:>11} {:>11} {:>12} {:>12} {:>12} {:>11} {:>12} {:>7}\n", r.mechanism,
            bench::format_bytes(static_cast<double>(r.size)), bench::format_us(c.median),
            bench::format_us(c.p90), bench::format_us(w.median), bench::format_us(w.p90),
            bench::format_us(h.median), bench::format_bytes(static_cast<double>(r.clones_bytes)),
            bench::format_bytes(static_cast<double>(r.written_bytes)), r.direct_io ? "yes" : "no");
    }
    fmt::print("\nWrites: microseconds per 4 KiB write, the clone's flush included (one "
               "value per clone). Space: storage used (statfs of the XFS; the thin pool's "
               "used data blocks) by all {} clones, before and after their {} of "
               "copy-on-write writes.\n\nWhat each needs:\n",
               o.clones, bench::format_bytes(static_cast<double>(o.writes) * 4096));
    std::vector<std::string> seen;
    for (const auto& r : results) {
        if (std::find(seen.begin(), seen.end(), r.mechanism) == seen.end()) {
            seen.push_back(r.mechanism);
            fmt::print("  {:<9} {}\n", r.mechanism, r.needs);
        }
    }
}

void write_json(const std::vector<Result>& results, const Options& o, std::uint64_t thin_block) {
    json a = json::array();
    for (const auto& r : results) {
        a.push_back({{"mechanism", r.mechanism},
                     {"image_bytes", r.size},
                     {"needs", r.needs},
                     {"direct_io", r.direct_io},
                     {"clone_us", figure_json(r.clone_us)},
                     {"cow_write_us", figure_json(r.cow_write_us)},
                     {"hole_write_us", figure_json(r.hole_write_us)},
                     {"clones_bytes", r.clones_bytes},
                     {"clones_and_writes_bytes", r.written_bytes}});
    }
    std::array<char, 256> host{};
    ::gethostname(host.data(), host.size() - 1);
    const json doc = {{"config",
                       {{"data", o.data},
                        {"chunk", o.chunk},
                        {"thin_block_bytes", thin_block},
                        {"clones", o.clones},
                        {"writes_per_clone", o.writes},
                        {"buffered", o.buffered},
                        {"host", host.data()}}},
                      {"results", a}};
    ::mkdir(o.out.c_str(), 0755);
    const std::string path =
        o.out + (o.buffered ? "/disk-bench-buffered.json" : "/disk-bench.json");
    std::ofstream f(path);
    f << doc.dump(2) << "\n";
    if (!f) {
        throw SystemError(EIO, "write " + path);
    }
    progress("wrote " + path);
}

int run_bench(const Options& o) {
    if (::geteuid() != 0) {
        throw SystemError(EPERM, "vmfork-disk-bench needs root (loop devices, mounts, "
                                 "device-mapper): run it as `make bench-disks` does, in the "
                                 "test VM");
    }
    progress(fmt::format("sizes {}, mechanisms {}, {} clones of {} writes each",
                         fmt::join(o.sizes, ","), fmt::join(o.mechanisms, ","), o.clones,
                         o.writes));
    for (const char* mod : {"loop", "xfs", "dm_thin_pool"}) {
        modprobe(mod);
    }
    const std::uint64_t data = parse_size(o.data);
    const std::uint64_t chunk = parse_size(o.chunk);
    const std::uint64_t thin_block = parse_size(o.thin_block);
    std::vector<ImageLayout> layouts;
    for (const auto& s : o.sizes) {
        layouts.emplace_back(parse_size(s), data, chunk);
    }
    std::vector<Result> results;
    for (const auto& layout : layouts) {
        for (const auto& name : o.mechanisms) {
            const ScratchDir dir(o.workdir); // everything of one run, removed after it
            results.push_back(measure(name, dir.path(), layout, o, thin_block));
        }
    }
    print_table(results, layouts.front(), o);
    if (!o.out.empty()) {
        write_json(results, o, thin_block);
    }
    return 0;
}

} // namespace

} // namespace vmfork::diskbench

namespace {

int main_checked(int argc, char** argv) {
    using vmfork::diskbench::Options;
    Options o;
    CLI::App app{"vmfork-disk-bench: linked-clone disks with VMM layers, reflinks (XFS) and "
                 "dm-thin snapshots, on the same images (needs root; `make bench-disks`)"};
    app.add_option("--sizes", o.sizes, "image sizes")->delimiter(',')->capture_default_str();
    app.add_option("--mechanisms", o.mechanisms, "layers,reflink,dm-thin")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--data", o.data, "data written into each image")->capture_default_str();
    app.add_option("--chunk", o.chunk, "the data's chunk size")->capture_default_str();
    app.add_option("--thin-block", o.thin_block, "the thin pool's data block size")
        ->capture_default_str();
    app.add_option("--clones", o.clones, "clones per image")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    app.add_option("--writes", o.writes, "4 KiB writes per clone")
        ->check(CLI::Range(1, 100000))
        ->capture_default_str();
    app.add_option("--workdir", o.workdir, "where the backing files go (keep it tmpfs)")
        ->capture_default_str();
    app.add_option("--out", o.out,
                   "write disk-bench.json here (disk-bench-buffered.json with --buffered)");
    app.add_flag("--buffered", o.buffered,
                 "reflink and dm-thin clones without O_DIRECT, as the VMM's layers are");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : 2;
    }
    try {
        return vmfork::diskbench::run_bench(o);
    } catch (const std::exception& e) {
        fmt::print(stderr, "vmfork-disk-bench: {}\n", e.what());
        return 1;
    }
}

} // namespace

int main(int argc, char** argv) {
    try {
        return main_checked(argc, argv);
    } catch (...) {
        std::fputs("vmfork-disk-bench: unexpected error\n", stderr);
        return 1;
    }
}
