// The process wing's ground floor: exit statuses, pidfds, inherited descriptors, death with
// the parent and clean forks, each with real processes.
#include "tandem/process/channel.hpp"
#include "tandem/process/descriptors.hpp"
#include "tandem/process/exit_status.hpp"
#include "tandem/process/fork.hpp"
#include "tandem/process/parent_death.hpp"
#include "tandem/process/pidfd.hpp"

#include "catch.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <future>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <vector>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace proc = tandem::process;

namespace {

/// Runs fn in a forked child, which exits with fn's result; returns how it ended (reaped
/// through a pidfd).
template <class Fn>
proc::exit_status in_child(Fn fn) {
    const pid_t pid = proc::fork_child();
    if (pid == 0) _exit(fn());
    return proc::pidfd::open(pid).reap();
}

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

struct pipe_pair {
    int read = -1, write = -1;
    pipe_pair() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        read = fds[0];
        write = fds[1];
    }
    ~pipe_pair() {
        if (read >= 0) ::close(read);
        if (write >= 0) ::close(write);
    }
};

/// Waits up to `ms` for fd to become readable.
bool readable_within(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

} // namespace

TEST_CASE("exit_status reads waitpid statuses and says what happened", "[process][exit_status]") {
    const auto three = proc::exit_status::from_wait_status(3 << 8);
    CHECK(three.is_exit());
    CHECK(three.code() == 3);
    CHECK(three.signal() == 0);
    CHECK(three.describe() == "exited with status 3");
    CHECK(proc::exit_status::from_wait_status(three.wait_status()) == three);
    CHECK(proc::exit_status::exited(0).success());

    const auto nine = proc::exit_status::killed(SIGKILL);
    CHECK(nine.is_signal());
    CHECK(nine.code() == -1);
    CHECK(nine.signal() == 9);
    CHECK(nine.describe().rfind("killed by signal 9 (", 0) == 0);
    CHECK(proc::exit_status::from_wait_status(nine.wait_status()) == nine);
    CHECK(!nine.success());

    const auto core = proc::exit_status::killed(SIGABRT, true);
    CHECK(proc::exit_status::from_wait_status(core.wait_status()) == core);
    CHECK(core.describe().find("core dumped") != std::string::npos);
}

TEST_CASE("exit_status from real children: an exit code and a signal", "[process][exit_status]") {
    const auto exited = in_child([] { return 3; });
    CHECK(exited.describe() == "exited with status 3");
    const auto killed = in_child([] {
        ::raise(SIGKILL);
        return 0;
    });
    CHECK(killed.signal() == SIGKILL);
    CHECK(killed.describe().rfind("killed by signal 9", 0) == 0);

    // The same child seen through waitpid's packed int reads the same.
    const pid_t pid = proc::fork_child();
    if (pid == 0) _exit(7);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(proc::exit_status::from_wait_status(status) == proc::exit_status::exited(7));
}

TEST_CASE("a pidfd watches its child run and end and reaps it", "[process][pidfd]") {
    pipe_pair hold; // the child blocks reading until we close our write end or signal it
    const pid_t pid = proc::fork_child();
    if (pid == 0) {
        ::close(hold.write);
        char c;
        (void)::read(hold.read, &c, 1);
        _exit(0);
    }
    proc::pidfd child = proc::pidfd::open(pid);
    CHECK(child.pid() == pid);
    CHECK(!child.exited());
    CHECK(!child.try_reap().has_value());
    CHECK(child.send_signal(SIGKILL) == 0);
    REQUIRE(readable_within(child.fd(), 10'000)); // readable once it ends: a reactor can watch it
    CHECK(child.exited());
    const auto how = child.try_reap();
    REQUIRE(how.has_value());
    CHECK(how->signal() == SIGKILL);
    CHECK(child.send_signal(SIGTERM) == ESRCH); // reaped: never a stranger with its pid
    CHECK_THROWS_AS(child.try_reap(), std::system_error); // ECHILD: reaped already
}

TEST_CASE("pidfd of a process that does not exist fails clearly", "[process][pidfd]") {
    CHECK(!proc::pidfd::try_open(-1));
    CHECK_THROWS_AS(proc::pidfd::open(-1), std::system_error);
    CHECK(proc::pidfd{}.exited());
    CHECK(proc::pidfd{}.send_signal(SIGTERM) == EBADF);
}

TEST_CASE("close_descriptors_except keeps exactly the named descriptors", "[process][descriptors]") {
    pipe_pair a, b, c;
    const int high = ::fcntl(a.read, F_DUPFD_CLOEXEC, 900); // far above the rest
    REQUIRE(high >= 900);
    const auto how = in_child([&] {
        proc::close_descriptors_except({c.write, high, a.read, high, 1}); // any order, duplicates
        int bad = 0;
        for (int fd : {0, 1, 2}) bad |= !is_open(fd);                  // below `first`: untouched
        for (int fd : {a.read, c.write, high}) bad |= (!is_open(fd)) << 1;
        for (int fd : {a.write, b.read, b.write, c.read}) bad |= is_open(fd) << 2;
        for (int fd = high + 1; fd < high + 64; ++fd) bad |= is_open(fd) << 3;
        return bad;
    });
    ::close(high);
    CHECK(how == proc::exit_status::exited(0));
}

TEST_CASE("close_descriptors_from and move_descriptor leave a child only what it was given", "[process][descriptors]") {
    pipe_pair a, b;
    const auto how = in_child([&] {
        if (proc::move_descriptor(b.read, 3) != 3) return 10;
        if (!(::fcntl(3, F_GETFD) & FD_CLOEXEC)) return 11;
        proc::close_descriptors_from(4);
        if (!is_open(3)) return 12;
        for (int fd = 4; fd < 64; ++fd)
            if (is_open(fd)) return 13;
        if (proc::move_descriptor(3, 3) != 3) return 14; // already there: a no-op
        return 0;
    });
    CHECK(how == proc::exit_status::exited(0));
}

TEST_CASE("die_with_parent: a grandchild dies when its parent does", "[process][parent_death]") {
    pipe_pair ready;  // grandchild → middle: death-with-parent is armed
    pipe_pair report; // grandchild → test: its pid
    const pid_t middle = proc::fork_child();
    if (middle == 0) {
        const pid_t self = ::getpid();
        const pid_t grandchild = ::fork();
        if (grandchild == 0) {
            if (!proc::die_with_parent(self)) _exit(1);
            const pid_t me = ::getpid();
            (void)::write(report.write, &me, sizeof me);
            (void)::write(ready.write, "k", 1);
            for (;;) ::pause(); // until the kernel's SIGKILL
        }
        char c;
        if (::read(ready.read, &c, 1) != 1) _exit(2);
        _exit(0); // the grandchild must follow
    }
    pid_t grandchild = 0;
    REQUIRE(::read(report.read, &grandchild, sizeof grandchild) == sizeof grandchild);
    proc::pidfd g = proc::pidfd::try_open(grandchild); // not our child: we may watch, not reap
    CHECK(proc::pidfd::open(middle).reap() == proc::exit_status::exited(0));
    if (g) CHECK(readable_within(g.fd(), 10'000));
}

TEST_CASE("die_with_parent says no when the parent is already gone", "[process][parent_death]") {
    pipe_pair go;     // test → grandchild: the middle process is reaped, ask now
    pipe_pair answer; // grandchild → test: 'y' if it would stay, 'n' if it knows to leave
    const pid_t middle = proc::fork_child();
    if (middle == 0) {
        const pid_t self = ::getpid();
        if (::fork() == 0) {
            char c;
            if (::read(go.read, &c, 1) != 1) _exit(1);
            const char verdict = proc::die_with_parent(self) ? 'y' : 'n';
            (void)::write(answer.write, &verdict, 1);
            _exit(0);
        }
        _exit(0);
    }
    // Reaped: the kernel has re-parented the grandchild by now (EOF on a pipe would come
    // earlier, while the middle process is still exiting).
    CHECK(proc::pidfd::open(middle).reap().success());
    REQUIRE(::write(go.write, "g", 1) == 1);
    char verdict = 0;
    REQUIRE(::read(answer.read, &verdict, 1) == 1);
    CHECK(verdict == 'n');
}

TEST_CASE("reset_signal_state gives a forked child default dispositions and nothing blocked", "[process][fork]") {
    struct sigaction old_usr1 {};
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGUSR1, &ignore, &old_usr1) == 0);
    sigset_t usr2, old_mask;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &usr2, &old_mask) == 0);
    const auto how = in_child([] {
        proc::reset_signal_state();
        struct sigaction now {};
        ::sigaction(SIGUSR1, nullptr, &now);
        if (now.sa_handler != SIG_DFL) return 1;
        sigset_t mask;
        ::sigprocmask(SIG_SETMASK, nullptr, &mask);
        if (sigismember(&mask, SIGUSR2)) return 2;
        ::raise(SIGUSR1); // default action: terminate
        return 3;
    });
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGUSR1, &old_usr1, nullptr);
    CHECK(how == proc::exit_status::killed(SIGUSR1));
}

TEST_CASE("fork_child flushes stdio first so a child never writes the parent's output twice", "[process][fork]") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    std::fputs("parent", f); // buffered, not yet written
    const auto how = in_child([&] {
        std::fputs("+child", f);
        std::fflush(f);
        return 0;
    });
    CHECK(how.success());
    std::fflush(f);
    std::rewind(f);
    char text[64] = {};
    const std::size_t n = std::fread(text, 1, sizeof text - 1, f);
    std::fclose(f);
    CHECK(std::string(text, n) == "parent+child");
}

TEST_CASE("thread_count counts threads and a forked child has one", "[process][fork]") {
    REQUIRE(proc::thread_count() >= 1);
    std::promise<void> go;
    std::shared_future<void> gate = go.get_future().share();
    // Two threads, counted between them: a sanitizer may start a thread of its own with the
    // first pthread_create.
    std::thread first([gate] { gate.wait(); });
    const std::size_t with_one = proc::thread_count();
    std::thread second([gate] { gate.wait(); });
    CHECK(proc::thread_count() == with_one + 1);
    CHECK(!proc::single_threaded());
    const auto how = in_child([] { return proc::single_threaded() ? 0 : 1; });
    go.set_value();
    first.join();
    second.join();
    CHECK(how.success());
}

// ---- the channel: frames and payloads on their own, without a pool ---------------------------

TEST_CASE("frame headers say what they carry through named accessors", "[process][channel]") {
    using tandem::detail::frame_header;
    using tandem::detail::frame_kind;
    const auto spawned = frame_header::spawned(4321, (std::uint64_t{7} << 32) | 5);
    CHECK(spawned.kind() == frame_kind::spawned);
    CHECK(spawned.pid() == 4321);
    CHECK(spawned.token() == ((std::uint64_t{7} << 32) | 5));
    const auto exited = frame_header::exited(99, proc::exit_status::killed(SIGKILL).wait_status());
    CHECK(proc::exit_status::from_wait_status(exited.wait_status()) == proc::exit_status::killed(SIGKILL));
    CHECK(frame_header::spawn_failed(3, EAGAIN).error_number() == EAGAIN);
    const auto job = frame_header::job(17, 0x1000, 0x2000);
    CHECK(job.job_id() == 17);
    CHECK(job.entry() == 0x1000);
    CHECK(job.function() == 0x2000);
    CHECK(frame_header::spawn(11, 0x3000, 50).spin_us() == 50);
    CHECK(frame_header::result(17).job_id() == 17);
}

TEST_CASE("payloads on both sides of the inline limit cross a channel intact", "[process][channel]") {
    using namespace tandem::detail;
    auto [a, b] = make_channel();
    std::vector<std::byte> buffer(max_message);
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, max_inline - 8, max_inline - 7, max_inline + 1, std::size_t{3} << 20}) {
        std::vector<unsigned char> sent(n);
        for (std::size_t i = 0; i < n; ++i) sent[i] = static_cast<unsigned char>(i * 7 + n);
        const auto payload = outgoing_payload::of(sent);
        CHECK(payload.in_memfd() == (payload.size() > max_inline));
        REQUIRE(payload.send(a.get(), frame_header::result(n)) == 0);
        incoming_frame f;
        REQUIRE(f.receive(b.get(), buffer.data()) == 1);
        CHECK(f.header.kind() == frame_kind::result);
        CHECK(f.header.job_id() == n);
        CHECK(tandem::decode<std::vector<unsigned char>>(f.data(), f.size()) == sent);
    }
}

TEST_CASE("a malformed message on a channel is a protocol_error and leaks no descriptor", "[process][channel]") {
    using namespace tandem::detail;
    auto [a, b] = make_channel();
    std::vector<std::byte> buffer(max_message);
    incoming_frame f;
    ::send(a.get(), "short", 5, 0);
    CHECK_THROWS_AS(f.receive(b.get(), buffer.data()), protocol_error);
    const auto lying = frame_header::result(1).with_payload(1000, false); // says 1000, carries 0
    ::send(a.get(), &lying, sizeof lying, 0);
    CHECK_THROWS_AS(f.receive(b.get(), buffer.data()), protocol_error);
    // A descriptor nobody asked for is refused, and closed.
    const std::size_t before = proc::open_descriptor_count();
    pipe_pair stray;
    REQUIRE(outgoing_payload::send_frame(a.get(), frame_header::ready(), nullptr, 0, {stray.read}) == 0);
    CHECK_THROWS_AS(f.receive(b.get(), buffer.data()), protocol_error);
    ::close(stray.read);
    ::close(stray.write);
    stray.read = stray.write = -1;
    CHECK(proc::open_descriptor_count() == before);
    // The peer gone: end of stream, not an error.
    a.reset();
    CHECK(f.receive(b.get(), buffer.data()) == 0);
}

TEST_CASE("a memfd payload larger than the memory behind it is refused before it is mapped", "[process][channel]") {
    // A sparse memfd costs its sender nothing; mapping and populating it would make the
    // receiver allocate every page. Only memory the sender really filled is read.
    using namespace tandem::detail;
    auto [a, b] = make_channel();
    std::vector<std::byte> buffer(max_message);
    const std::size_t claimed = std::size_t{256} << 20;
    unique_fd sparse(::memfd_create("sparse", MFD_CLOEXEC));
    REQUIRE(sparse);
    REQUIRE(::ftruncate(sparse.get(), static_cast<off_t>(claimed)) == 0);
    const auto h = frame_header::result(1).with_payload(claimed, true);
    REQUIRE(outgoing_payload::send_frame(a.get(), h, nullptr, 0, {sparse.get()}) == 0);
    incoming_frame f;
    CHECK_THROWS_AS(f.receive(b.get(), buffer.data()), protocol_error);
    // A real large payload still crosses.
    const std::vector<unsigned char> sent(max_inline * 3, 7);
    REQUIRE(outgoing_payload::of(sent).send(a.get(), frame_header::result(2)) == 0);
    REQUIRE(f.receive(b.get(), buffer.data()) == 1);
    CHECK(tandem::decode<std::vector<unsigned char>>(f.data(), f.size()) == sent);
}

TEST_CASE("a moved-from payload is empty and sends as one and a moved one still crosses", "[process][channel]") {
    // outgoing_payload owns its inline bytes by a plain pointer with hand-written moves: a
    // moved-from one kept its old size, and sending it passed that size with no bytes.
    using namespace tandem::detail;
    auto [a, b] = make_channel();
    std::vector<std::byte> buffer(max_message);
    for (std::size_t n : {std::size_t{0}, std::size_t{100}, max_inline * 2}) {
        const std::vector<unsigned char> sent(n, 5);
        outgoing_payload p = outgoing_payload::of(sent);
        const std::size_t size = p.size();
        outgoing_payload q(std::move(p));
        CHECK(q.size() == size);
        CHECK(p.size() == 0);
        CHECK_FALSE(p.in_memfd());
        outgoing_payload r;
        r = std::move(q);
        CHECK(q.size() == 0);
        outgoing_payload& same = r;
        r = std::move(same); // self-move keeps it
        CHECK(r.size() == size);
        for (const outgoing_payload* empty : {&p, &q}) {
            REQUIRE(empty->send(a.get(), frame_header::result(1)) == 0);
            incoming_frame f;
            REQUIRE(f.receive(b.get(), buffer.data()) == 1);
            CHECK(f.size() == 0);
        }
        REQUIRE(r.send(a.get(), frame_header::result(2)) == 0);
        incoming_frame f;
        REQUIRE(f.receive(b.get(), buffer.data()) == 1);
        CHECK(tandem::decode<std::vector<unsigned char>>(f.data(), f.size()) == sent);
        p = std::move(r); // a moved-from one takes a payload again
        CHECK(p.size() == size);
    }
}
