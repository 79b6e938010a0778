// tandem — available_parallelism(): how many CPUs this process may really use, as a container
// or `taskset` sets it, not as the machine has them.
//
// Layer: offload (cluster). Reads the scheduler's affinity mask and the cgroup CPU quota;
// knows nothing of loops or sockets.
//
// Why not std::thread::hardware_concurrency(): it counts the machine's CPUs. A container
// limited to 2 CPUs on a 64-core host would start 64 workers that the kernel then throttles
// in turn (Node's os.cpus().length, Python's os.cpu_count() and, until 1.25, Go's GOMAXPROCS
// all made that mistake). Two limits apply and the smaller wins:
//   * the affinity mask (sched_getaffinity: taskset, cpusets, Kubernetes static CPU policy);
//   * the CFS bandwidth quota of this process's cgroup and of every ancestor
//     (cgroup v2 `cpu.max` "QUOTA PERIOD"; v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`),
//     rounded up: a quota of 1.5 CPUs lets two workers run, each 75% of the time.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <sched.h>
#include <string>
#include <string_view>
#include <unistd.h>

namespace tandem::cluster {

namespace detail {

/// CPUs in this thread's affinity mask; 0 if the kernel will not say.
inline std::size_t affinity_cpus() noexcept {
    // The kernel refuses (EINVAL) a mask smaller than its own: grow until it fits.
    for (std::size_t cpus = 1024; cpus <= (std::size_t{1} << 20); cpus *= 2) {
        cpu_set_t* set = CPU_ALLOC(cpus);
        if (!set) return 0;
        const std::size_t size = CPU_ALLOC_SIZE(cpus);
        if (::sched_getaffinity(0, size, set) == 0) {
            const auto n = static_cast<std::size_t>(CPU_COUNT_S(size, set));
            CPU_FREE(set);
            return n;
        }
        CPU_FREE(set);
        if (errno != EINVAL) return 0;
    }
    return 0;
}

/// CPUs a quota allows: ceil(quota / period); 0 for "no limit" or nonsense.
inline std::size_t cpus_of_quota(std::int64_t quota, std::int64_t period) noexcept {
    if (quota <= 0 || period <= 0) return 0;
    // Not (quota + period - 1) / period: that overflows for a quota near INT64_MAX.
    return static_cast<std::size_t>(quota / period + (quota % period != 0));
}

/// The next field of `text` separated by any of `separators`, consumed from `text`
/// (leading separators skipped; empty at the end). Plain string_view parsing: these files are
/// tiny, and <sstream>/<fstream> would cost every includer more than this whole header
/// (bench/README.md, "Include cost").
inline std::string_view next_field(std::string_view& text, std::string_view separators) noexcept {
    const std::size_t begin = text.find_first_not_of(separators);
    if (begin == std::string_view::npos) {
        text = {};
        return {};
    }
    text.remove_prefix(begin);
    const std::size_t end = text.find_first_of(separators) == std::string_view::npos ? text.size() : text.find_first_of(separators);
    const std::string_view field = text.substr(0, end);
    text.remove_prefix(end);
    return field;
}

/// Decimal digits only; false if there are none, anything else, or too many.
inline bool parse_decimal(std::string_view digits, std::int64_t& out) noexcept {
    if (digits.empty()) return false;
    std::int64_t v = 0;
    for (char c : digits) {
        if (c < '0' || c > '9' || v > (INT64_MAX - (c - '0')) / 10) return false;
        v = v * 10 + (c - '0');
    }
    out = v;
    return true;
}

/// A cgroup v2 `cpu.max` line: "max 100000" (no limit: 0) or "150000 100000" (2).
inline std::size_t parse_cpu_max(std::string_view text) noexcept {
    constexpr std::string_view space = " \t\n\r\f\v";
    const std::string_view quota = next_field(text, space);
    std::int64_t q = 0, period = 0;
    if (!parse_decimal(next_field(text, space), period) || quota == "max" || !parse_decimal(quota, q)) return 0;
    return cpus_of_quota(q, period);
}

/// The whole of a small file (/proc, /sys); false if it cannot be read.
inline bool read_file(const std::string& path, std::string& out) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    out.clear();
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            out.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            ::close(fd);
            return n == 0;
        }
    }
}

/// The tightest CPU quota on the way from `dir` up to `root` (both paths in the cgroup
/// filesystem; `dir` under `root`): every ancestor's limit applies. 0: no limit.
/// `v1` reads cpu.cfs_quota_us / cpu.cfs_period_us instead of cpu.max.
inline std::size_t cgroup_quota_cpus(std::string root, std::string dir, bool v1) {
    while (!root.empty() && root.back() == '/') root.pop_back();
    std::size_t best = 0;
    for (;;) {
        std::string text;
        std::size_t cpus = 0;
        if (!v1) {
            if (read_file(dir + "/cpu.max", text)) cpus = parse_cpu_max(text);
        } else {
            std::string period;
            if (read_file(dir + "/cpu.cfs_quota_us", text) && read_file(dir + "/cpu.cfs_period_us", period)) {
                try {
                    cpus = cpus_of_quota(std::stoll(text), std::stoll(period));
                } catch (...) {
                    cpus = 0;
                }
            }
        }
        if (cpus != 0 && (best == 0 || cpus < best)) best = cpus;
        if (dir.size() <= root.size()) break;
        const std::size_t slash = dir.find_last_of('/');
        if (slash == std::string::npos || slash < root.size()) break;
        dir.resize(slash);
    }
    return best;
}

/// The CPU quota of the cgroup named in `proc_self_cgroup` (the text of /proc/self/cgroup),
/// looked up under `mount` (normally /sys/fs/cgroup). v2's "0::/path" first; else the v1
/// hierarchy with the cpu controller. 0: no limit found.
inline std::size_t cgroup_cpu_limit(const std::string& mount, std::string_view proc_self_cgroup) {
    std::string v1_path, v1_dir;
    while (!proc_self_cgroup.empty()) {
        const std::size_t eol = proc_self_cgroup.find('\n');
        const std::string_view line = proc_self_cgroup.substr(0, eol);
        proc_self_cgroup.remove_prefix(eol == std::string_view::npos ? proc_self_cgroup.size() : eol + 1);
        const std::size_t a = line.find(':');
        const std::size_t b = a == std::string_view::npos ? a : line.find(':', a + 1);
        if (b == std::string_view::npos) continue;
        const std::string_view controllers = line.substr(a + 1, b - a - 1);
        std::string path(line.substr(b + 1));
        if (path == "/") path.clear();
        if (line.substr(0, a) == "0" && controllers.empty()) {
            if (std::size_t n = cgroup_quota_cpus(mount, mount + path, false)) return n;
            continue;
        }
        for (std::string_view names = controllers; !names.empty();)
            if (next_field(names, ",") == "cpu") {
                v1_path = path;
                v1_dir = mount + "/" + std::string(controllers);
            }
    }
    if (!v1_dir.empty()) return cgroup_quota_cpus(v1_dir, v1_dir + v1_path, true);
    return 0;
}

} // namespace detail

/// How many CPUs this process may use: the affinity mask, capped by the cgroup CPU quota
/// (v2 cpu.max, or v1 CFS quota; every ancestor's counts; fractions round up). At least 1.
/// The default worker count of a cluster. Reads /proc and /sys: call it once, not per request.
inline std::size_t available_parallelism() {
    std::size_t n = detail::affinity_cpus();
    std::string cgroup;
    if (detail::read_file("/proc/self/cgroup", cgroup)) {
        const std::size_t quota = detail::cgroup_cpu_limit("/sys/fs/cgroup", cgroup);
        if (quota != 0 && (n == 0 || quota < n)) n = quota;
    }
    return n == 0 ? 1 : n;
}

} // namespace tandem::cluster
