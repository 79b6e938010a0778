// tandem — the framing between a process_pool, its zygote and its worker processes.
// Layer: process. Knows the codec (payloads are bytes) and nothing of pools or the loop.
//
// A channel is an AF_UNIX SOCK_SEQPACKET pair: message boundaries are kept by the kernel and a
// passed descriptor belongs to exactly one message. A message is a fixed header plus either
// the payload inline (up to max_inline bytes) or one memfd holding it, so a 64 MiB argument
// is written once into shared pages and never streamed through a socket buffer.
//
// Nothing read from a channel is trusted: the receive buffer is fixed, truncated messages and
// unexpected descriptors are errors, and a memfd payload's size is checked against the file
// and against the memory behind it (a sparse file would make the receiver allocate it).
#pragma once

#include "tandem/codec.hpp"
#include "tandem/detail/syscall.hpp"
#include "tandem/detail/unique_fd.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <memory>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace tandem::detail {

enum class frame_kind : std::uint8_t {
    job = 1,      // parent → worker: run a function on the payload
    quit,         // parent → worker: exit now (recycling, shutdown)
    ready,        // worker → parent: the initializer ran, send jobs
    result,       // worker → parent: payload = encoded result
    error,        // worker → parent: payload = (type name, what())
    init_failed,  // worker → parent: the initializer threw, payload as for error
    spawn,        // pool → zygote: fork a worker on the passed channel; report on the passed fd
    kill,         // pool → zygote: SIGKILL a worker
    spawned,      // zygote → pool: a worker started
    exited,       // zygote → pool: a worker was reaped
    spawn_failed, // zygote → pool: fork failed
};

/// The fixed head of every message. Its two words mean different things for different
/// kinds, so they are reached only through named constructors and accessors: a reader sees
/// `h.token()` or `h.wait_status()`, never a field whose meaning depends on `kind()`.
class frame_header {
public:
    static constexpr std::uint32_t expected_magic = 0x4d444e54; // "TNDM"

    // parent ↔ worker
    static frame_header job(std::uint64_t job_id, std::uintptr_t entry, std::uintptr_t fn) noexcept {
        return {frame_kind::job, job_id, entry, fn};
    }
    static frame_header quit() noexcept { return {frame_kind::quit, 0, 0, 0}; }
    static frame_header ready() noexcept { return {frame_kind::ready, 0, 0, 0}; }
    static frame_header result(std::uint64_t job_id) noexcept { return {frame_kind::result, job_id, 0, 0}; }
    static frame_header error(std::uint64_t job_id) noexcept { return {frame_kind::error, job_id, 0, 0}; }
    static frame_header init_failed() noexcept { return {frame_kind::init_failed, 0, 0, 0}; }
    // pool ↔ zygote
    static frame_header spawn(std::uint64_t token, std::uintptr_t initializer, std::int64_t spin_us) noexcept {
        return {frame_kind::spawn, static_cast<std::uint64_t>(spin_us), initializer, token};
    }
    static frame_header kill(pid_t pid) noexcept { return {frame_kind::kill, static_cast<std::uint64_t>(pid), 0, 0}; }
    static frame_header spawned(pid_t pid, std::uint64_t token) noexcept {
        return {frame_kind::spawned, static_cast<std::uint64_t>(pid), 0, token};
    }
    static frame_header exited(pid_t pid, int wait_status) noexcept {
        return {frame_kind::exited, static_cast<std::uint64_t>(pid), 0, static_cast<std::uint32_t>(wait_status)};
    }
    static frame_header spawn_failed(std::uint64_t token, int error_number) noexcept {
        return {frame_kind::spawn_failed, static_cast<std::uint64_t>(error_number), 0, token};
    }

    frame_header() = default;

    frame_kind kind() const noexcept { return m_kind; }
    bool magic_ok() const noexcept { return m_magic == expected_magic; }
    /// Payload bytes, and whether they travel in a memfd (set by the sender).
    std::uint64_t size() const noexcept { return m_size; }
    bool in_memfd() const noexcept { return m_in_memfd != 0; }
    frame_header& with_payload(std::uint64_t size, bool in_memfd) noexcept {
        m_size = size;
        m_in_memfd = in_memfd;
        return *this;
    }

    /// job, result, error: the pool's number for the job.
    std::uint64_t job_id() const noexcept { return m_id; }
    /// job: the entry point (decodes, calls, encodes) and the function it calls.
    std::uintptr_t entry() const noexcept { return static_cast<std::uintptr_t>(m_entry); }
    std::uintptr_t function() const noexcept { return static_cast<std::uintptr_t>(m_fn); }
    /// spawn, spawned, spawn_failed: the pool's name for the worker slot.
    std::uint64_t token() const noexcept { return m_fn; }
    /// spawn: the worker's initializer and how long it polls between jobs.
    std::uintptr_t initializer() const noexcept { return static_cast<std::uintptr_t>(m_entry); }
    std::int64_t spin_us() const noexcept { return static_cast<std::int64_t>(m_id); }
    /// kill, spawned, exited: the worker's pid.
    pid_t pid() const noexcept { return static_cast<pid_t>(m_id); }
    /// exited: waitpid()'s status.
    int wait_status() const noexcept { return static_cast<int>(static_cast<std::uint32_t>(m_fn)); }
    /// spawn_failed: fork()'s errno.
    int error_number() const noexcept { return static_cast<int>(m_id); }

private:
    frame_header(frame_kind kind, std::uint64_t id, std::uint64_t entry, std::uint64_t fn) noexcept
        : m_kind(kind), m_id(id), m_entry(entry), m_fn(fn) {}

    std::uint32_t m_magic = expected_magic;
    frame_kind m_kind{};
    std::uint8_t m_in_memfd = 0;
    [[maybe_unused]] std::uint16_t m_reserved = 0; // keeps the header 40 bytes with no padding of unknown value
    std::uint64_t m_id = 0;
    std::uint64_t m_entry = 0;
    std::uint64_t m_fn = 0;
    std::uint64_t m_size = 0;
};
static_assert(std::is_trivially_copyable_v<frame_header> && sizeof(frame_header) == 40);

/// Payloads up to this size travel inside the message; larger ones in a memfd.
inline constexpr std::size_t max_inline = 60 * 1024;
inline constexpr std::size_t max_message = sizeof(frame_header) + max_inline;
/// Descriptors one message may carry (a spawn: channel, report socket, start board).
inline constexpr std::size_t max_passed = 3;

/// A malformed message: the sender is broken or not ours.
class protocol_error : public codec_error {
public:
    using codec_error::codec_error;
};

/// Faults in the pages of storage about to be filled, in one call instead of one fault per
/// page (for a 64 MiB result that is 20 ms instead of 35 on this kind of VM), on huge pages
/// where the kernel allows them. Best effort: an old kernel just takes the faults.
inline void populate_pages(void* storage, std::size_t n) noexcept {
    constexpr std::uintptr_t page = 4096;
    const auto first = (reinterpret_cast<std::uintptr_t>(storage) + page - 1) & ~(page - 1);
    const auto last = (reinterpret_cast<std::uintptr_t>(storage) + n) & ~(page - 1);
    if (last <= first) return;
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#ifndef MADV_POPULATE_WRITE
    constexpr int MADV_POPULATE_WRITE = 23; // Linux 5.14
#endif
    ::madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE);
}

/// Memfds of finished large payloads, kept for the next one: a fresh memfd's pages must be
/// allocated and zeroed by the kernel (40 ms for 64 MiB here), a reused one's are there.
/// Bounded (4 files, 256 MiB in all), per process: a forked child starts with none.
class memfd_cache {
public:
    static memfd_cache& instance() noexcept {
        static memfd_cache cache;
        return cache;
    }
    /// A memfd of at least `size` bytes.
    unique_fd acquire(std::size_t size) {
        {
            std::lock_guard lock(m_mutex);
            forget_if_forked();
            if (m_count > 0) {
                entry e = std::move(m_files[--m_count]);
                m_bytes -= e.size;
                if (e.size >= size || ::ftruncate(e.fd.get(), static_cast<off_t>(size)) == 0) return std::move(e.fd);
            }
        }
        unique_fd fd(::memfd_create("tandem-payload", MFD_CLOEXEC));
        if (!fd) throw_errno("tandem: memfd_create");
        if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw_errno("tandem: ftruncate of a payload memfd");
        return fd;
    }
    /// Takes a memfd back once its receiver is done with it (closes it if the cache is full).
    void give_back(unique_fd fd) noexcept {
        struct stat st {};
        if (!fd || ::fstat(fd.get(), &st) != 0) return;
        const auto size = static_cast<std::size_t>(st.st_size);
        std::lock_guard lock(m_mutex);
        forget_if_forked();
        if (m_count >= max_files || m_bytes + size > max_bytes) return;
        m_bytes += size;
        m_files[m_count++] = entry{std::move(fd), size};
    }

    static constexpr std::size_t max_files = 4;
    static constexpr std::size_t max_bytes = std::size_t{256} << 20;

private:
    struct entry {
        unique_fd fd;
        std::size_t size = 0;
    };
    void forget_if_forked() noexcept {
        if (m_owner == ::getpid()) return;
        for (std::size_t i = 0; i < m_count; ++i) m_files[i].fd.release(); // not ours: the zygote closed them
        m_count = 0;
        m_bytes = 0;
        m_owner = ::getpid();
    }
    std::mutex m_mutex;
    // A fixed array, not a std::vector: the cache is small and bounded, and a vector's
    // constexpr members would be compiled in every translation unit (detail/dependent.hpp).
    entry m_files[max_files];
    std::size_t m_count = 0;
    std::size_t m_bytes = 0;
    pid_t m_owner = ::getpid();
};

/// Bytes to send: a small heap buffer, or a memfd for large payloads.
class outgoing_payload {
public:
    outgoing_payload() = default;
    outgoing_payload(outgoing_payload&& other) noexcept
        : m_size(other.m_size), m_inline(other.m_inline), m_memfd(std::move(other.m_memfd)) {
        other.m_size = 0; // empty, not a size without bytes: a moved-from payload sends nothing
        other.m_inline = nullptr;
    }
    outgoing_payload& operator=(outgoing_payload&& other) noexcept {
        if (this == &other) return *this;
        recycle();
        m_size = other.m_size;
        m_inline = other.m_inline;
        other.m_size = 0;
        other.m_inline = nullptr;
        m_memfd = std::move(other.m_memfd);
        return *this;
    }
    /// The memfd goes back to the cache: by the protocol, the receiver has answered (so has
    /// read it) before the sender lets go of a payload.
    ~outgoing_payload() { recycle(); }

    /// Encodes values: measured first, then written once into their final home.
    template <class... T>
    static outgoing_payload of(const T&... values) {
        outgoing_payload p;
        p.m_size = encoded_size(values...);
        if (p.m_size <= max_inline) {
            if (p.m_size) p.m_inline = new std::byte[p.m_size];
            encoder out(p.m_inline, p.m_size);
            (out(values), ...);
        } else {
            p.m_memfd = memfd_cache::instance().acquire(p.m_size);
            void* map = ::mmap(nullptr, p.m_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p.m_memfd.get(), 0);
            if (map == MAP_FAILED) throw_errno("tandem: mmap of a process_pool payload");
            struct unmap {
                void* p;
                std::size_t n;
                ~unmap() { ::munmap(p, n); }
            } guard{map, p.m_size};
            encoder out(static_cast<std::byte*>(map), p.m_size);
            (out(values), ...);
        }
        return p;
    }

    std::size_t size() const noexcept { return m_size; }
    bool in_memfd() const noexcept { return static_cast<bool>(m_memfd); }

    /// Sends header + payload as one message. Returns 0 or an errno (EPIPE: peer gone).
    int send(int fd, frame_header header) const noexcept {
        header.with_payload(m_size, in_memfd());
        return send_frame(fd, header, in_memfd() ? nullptr : m_inline, in_memfd() ? 0 : m_size,
                          {in_memfd() ? m_memfd.get() : -1});
    }

    /// Sends one message with up to max_passed descriptors (-1 entries are skipped).
    /// Returns 0 or an errno.
    static int send_frame(int fd, const frame_header& header, const void* data, std::size_t size,
                          std::initializer_list<int> descriptors, int flags = 0) noexcept {
        iovec iov[2] = {{const_cast<frame_header*>(&header), sizeof header}, {const_cast<void*>(data), size}};
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = size ? 2 : 1;
        alignas(cmsghdr) char control[CMSG_SPACE(max_passed * sizeof(int))];
        int fds[max_passed];
        std::size_t nfds = 0;
        for (int d : descriptors)
            if (d >= 0 && nfds < max_passed) fds[nfds++] = d;
        if (nfds) {
            std::memset(control, 0, sizeof control);
            msg.msg_control = control;
            msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
            cmsghdr* c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
            std::memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
        }
        const ssize_t n = retry_on_eintr([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL | flags); });
        if (n < 0) return errno;
        return static_cast<std::size_t>(n) == sizeof header + size ? 0 : EMSGSIZE;
    }

private:
    void recycle() noexcept {
        delete[] m_inline;
        m_inline = nullptr;
        if (m_memfd) memfd_cache::instance().give_back(std::move(m_memfd));
    }
    std::size_t m_size = 0;
    // Owned; a raw array, not a std::vector: this class is no template, so a vector's
    // constexpr members would be compiled in every translation unit (detail/dependent.hpp).
    std::byte* m_inline = nullptr;
    unique_fd m_memfd;
};

/// Runs a job in a worker: decodes the arguments, calls the function, encodes the result.
/// `fn` is a function's address (or 0 for a stateless callable type named by the entry).
using job_entry = outgoing_payload (*)(std::uintptr_t fn, const std::byte* args, std::size_t size);
/// Runs once in every new worker before its first job.
using worker_initializer = void (*)();

/// One received message. Its payload view lives in the receiver's buffer (inline) or in a
/// private read-only mapping of the sender's memfd, until the message is destroyed.
class incoming_frame {
public:
    incoming_frame() = default;
    incoming_frame(const incoming_frame&) = delete;
    incoming_frame& operator=(const incoming_frame&) = delete;
    ~incoming_frame() { unmap(); }

    frame_header header;
    unique_fd passed[max_passed]; // descriptors that came with the message (spawn)

    const std::byte* data() const noexcept { return m_data; }
    std::size_t size() const noexcept { return header.size(); }

    /// Receives one message into `buffer` (max_message bytes). Returns 1 (a message),
    /// 0 (end of stream), or -errno (EAGAIN with MSG_DONTWAIT). Throws protocol_error for a
    /// malformed one.
    int receive(int fd, std::byte* buffer, int flags = 0, std::size_t fds_allowed = 0) {
        unmap();
        iovec iov{buffer, max_message};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = retry_on_eintr([&] { return ::recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC); });
        if (n < 0) return -errno;
        // Take ownership of every passed descriptor first, so an error path leaks none.
        unique_fd received[4];
        std::size_t nfds = 0;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < count && nfds < 4; ++i) {
                int passed_fd;
                std::memcpy(&passed_fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                received[nfds++].reset(passed_fd);
            }
        }
        if (n == 0 && nfds == 0) return 0;
        if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) throw protocol_error("tandem: oversized message on a process channel");
        if (static_cast<std::size_t>(n) < sizeof header) throw protocol_error("tandem: short message on a process channel");
        std::memcpy(&header, buffer, sizeof header);
        if (!header.magic_ok()) throw protocol_error("tandem: bad magic on a process channel");
        const std::size_t body = static_cast<std::size_t>(n) - sizeof header;
        if (header.in_memfd()) {
            if (body != 0 || nfds != 1) throw protocol_error("tandem: malformed memfd message");
            struct stat st {};
            if (::fstat(received[0].get(), &st) != 0 || st.st_size < 0 ||
                static_cast<std::uint64_t>(st.st_size) < header.size() || header.size() <= max_inline)
                throw protocol_error("tandem: memfd payload size does not match its message");
            // Only memory the sender filled: a sparse memfd costs its sender nothing, and
            // populating the mapping would make the receiver allocate every page of it.
            if (st.st_blocks < 0 || static_cast<std::uint64_t>(st.st_blocks) < (header.size() + 511) / 512)
                throw protocol_error("tandem: memfd payload claims more bytes than its sender wrote");
            void* map = ::mmap(nullptr, header.size(), PROT_READ, MAP_PRIVATE | MAP_POPULATE, received[0].get(), 0);
            if (map == MAP_FAILED) throw_errno("tandem: mmap of a received payload");
            m_map = map;
            m_data = static_cast<const std::byte*>(map);
        } else {
            if (header.size() != body) throw protocol_error("tandem: message size does not match its header");
            if (nfds > fds_allowed) throw protocol_error("tandem: unexpected descriptor on a process channel");
            for (std::size_t i = 0; i < nfds && i < max_passed; ++i) passed[i] = std::move(received[i]);
            m_data = buffer + sizeof header;
        }
        return 1;
    }

private:
    void unmap() noexcept {
        if (m_map) ::munmap(m_map, header.size());
        m_map = nullptr;
        m_data = nullptr;
    }
    void* m_map = nullptr;
    const std::byte* m_data = nullptr;
};

/// The two ends of a channel (not a std::pair, whose constexpr members would be compiled in
/// every translation unit: detail/dependent.hpp).
struct channel_ends {
    unique_fd first;
    unique_fd second;
};

/// A connected SOCK_SEQPACKET pair, both ends close-on-exec, with room for a whole message.
inline channel_ends make_channel() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) throw_errno("tandem: socketpair");
    channel_ends ends{unique_fd(fds[0]), unique_fd(fds[1])};
    const int buffer = 4 * static_cast<int>(max_message);
    for (int fd : fds) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    return ends;
}

} // namespace tandem::detail
