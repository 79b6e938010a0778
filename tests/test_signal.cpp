#include "tandem/signal.hpp"

#include "catch.hpp"
#include "tandem/spawn.hpp"
#include "tandem/time.hpp"

#include <atomic>
#include <csignal>
#include <signal.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {
bool handler_is_default(int signo) {
    struct sigaction sa {};
    ::sigaction(signo, nullptr, &sa);
    return sa.sa_handler == SIG_DFL;
}
} // namespace

TEST_CASE("a task awaits a signal sent to the process", "[signal]") {
    auto body = []() -> tandem::task<> {
        tandem::signal_set signals({SIGUSR1, SIGUSR2});
        auto waiter = tandem::spawn([](tandem::signal_set& s) -> tandem::task<int> { co_return co_await s.wait(); }(signals));
        co_await tandem::yield();
        std::thread sender([] { ::kill(::getpid(), SIGUSR2); }); // delivered on any thread
        const int got = co_await waiter;
        sender.join();
        CHECK(got == SIGUSR2);
    };
    tandem::sync_wait(body());
}

TEST_CASE("a signal arriving between two waits is not lost", "[signal]") {
    auto body = []() -> tandem::task<> {
        tandem::signal_set signals({SIGUSR1});
        ::raise(SIGUSR1); // nobody waits yet
        {
            auto awaited = co_await signals.wait();
            CHECK(awaited == SIGUSR1);
        }
        CHECK(signals.poll() == 0); // consumed
    };
    tandem::sync_wait(body());
}

TEST_CASE("every signal_set listening to a signal sees it", "[signal]") {
    auto body = []() -> tandem::task<> {
        tandem::signal_set a({SIGUSR1}), b({SIGUSR1});
        auto wa = tandem::spawn([](tandem::signal_set& s) -> tandem::task<int> { co_return co_await s.wait(); }(a));
        auto wb = tandem::spawn([](tandem::signal_set& s) -> tandem::task<int> { co_return co_await s.wait(); }(b));
        co_await tandem::yield();
        ::raise(SIGUSR1);
        {
            auto awaited = co_await wa;
            CHECK(awaited == SIGUSR1);
        }
        {
            auto awaited = co_await wb;
            CHECK(awaited == SIGUSR1);
        }
    };
    tandem::sync_wait(body());
}

TEST_CASE("a signal wait can be cancelled", "[signal]") {
    auto body = []() -> tandem::task<> {
        tandem::signal_set signals({SIGUSR1});
        auto w = tandem::spawn([](tandem::signal_set& s) -> tandem::task<> { (void)co_await s.wait(); }(signals));
        co_await tandem::yield();
        w.cancel();
        CHECK_THROWS_AS(co_await w, tandem::cancelled);
    };
    tandem::sync_wait(body());
}

TEST_CASE("the previous disposition returns when the last signal_set dies", "[signal]") {
    REQUIRE(handler_is_default(SIGUSR2));
    auto body = []() -> tandem::task<> {
        tandem::signal_set outer({SIGUSR2});
        {
            tandem::signal_set inner({SIGUSR2});
            CHECK_FALSE(handler_is_default(SIGUSR2));
        }
        CHECK_FALSE(handler_is_default(SIGUSR2)); // outer still listens
        co_return;
    };
    tandem::sync_wait(body());
    CHECK(handler_is_default(SIGUSR2));
}

TEST_CASE("SIGTERM from another process ends a child gracefully", "[signal]") {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(ready[0]);
        int status = 3;
        try {
            tandem::event_loop loop;
            loop.run([](int ready_fd, int& st) -> tandem::task<> {
                tandem::signal_set stop({SIGINT, SIGTERM});
                const char ok = 'r';
                (void)::write(ready_fd, &ok, 1);
                st = co_await stop.wait() == SIGTERM ? 0 : 4;
            }(ready[1], status));
        } catch (...) {
            status = 5;
        }
        ::_exit(status);
    }
    ::close(ready[1]);
    char byte = 0;
    REQUIRE(::read(ready[0], &byte, 1) == 1); // the child listens now
    ::close(ready[0]);
    REQUIRE(::kill(child, SIGTERM) == 0);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("catching SIGKILL is refused", "[signal]") {
    auto body = []() -> tandem::task<> {
        CHECK_THROWS_AS(tandem::signal_set({SIGKILL}), std::invalid_argument);
        co_return;
    };
    tandem::sync_wait(body());
}

TEST_CASE("a refused signal undoes the signals installed before it", "[signal]") {
    auto body = []() -> tandem::task<> {
        REQUIRE(handler_is_default(SIGUSR1));
        CHECK_THROWS_AS(tandem::signal_set({SIGUSR1, SIGKILL}), std::invalid_argument);
        CHECK(handler_is_default(SIGUSR1)); // not left caught by a set that never existed
        {
            tandem::signal_set later({SIGUSR1}); // and the count is right: one set, one install
            CHECK_FALSE(handler_is_default(SIGUSR1));
        }
        CHECK(handler_is_default(SIGUSR1));
        co_return;
    };
    tandem::sync_wait(body());
}

TEST_CASE("a signal listed twice is reported once per delivery", "[signal]") {
    auto body = []() -> tandem::task<> {
        {
            tandem::signal_set signals({SIGUSR1, SIGUSR2, SIGUSR1});
            ::raise(SIGUSR1);
            {
                auto awaited = co_await signals.wait();
                CHECK(awaited == SIGUSR1);
            }
            CHECK(signals.poll() == 0); // not a second time through the duplicate
            ::raise(SIGUSR2);
            CHECK(signals.poll() == SIGUSR2);
            CHECK(signals.poll() == 0);
        }
        CHECK(handler_is_default(SIGUSR1)); // installed as often as uninstalled
        CHECK(handler_is_default(SIGUSR2));
        CHECK_THROWS_AS(tandem::signal_set({SIGUSR1, SIGUSR1, SIGKILL}), std::invalid_argument);
        CHECK(handler_is_default(SIGUSR1));
    };
    tandem::sync_wait(body());
}
