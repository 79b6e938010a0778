// tandem — name resolution: getaddrinfo on a few threads of its own, never on the loop.
//
// Layer: I/O. The only part of the I/O layer with threads of its own.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/loop.hpp"
#include "tandem/net/address.hpp"
#include "tandem/task.hpp"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <netdb.h>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace tandem {

namespace detail {

/// getaddrinfo's EAI_* codes as std::error_codes.
class resolver_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "tandem.resolve"; }
    std::string message(int code) const override { return ::gai_strerror(code); }
};
inline const std::error_category& resolver_category() noexcept {
    static const resolver_category_impl category;
    return category;
}

/// A few threads for blocking name lookups only. Kept apart from any CPU pool, so slow DNS
/// never starves other work (Node's shared 4-thread pool let dns.lookup block fs). Threads
/// start on demand (at most 4) and exit after 10 s idle. Never destroyed: a thread may still
/// sit in getaddrinfo when the process exits.
template <class = void> // compiled only where used (bench/README.md, "Include cost")
class basic_resolver_threads {
public:
    static basic_resolver_threads& instance() {
        static basic_resolver_threads* pool = new basic_resolver_threads;
        return *pool;
    }
    void submit(unique_function job) {
        std::lock_guard lock(m_mutex);
        m_jobs.push_back(std::move(job));
        if (m_idle == 0 && m_threads < max_threads) {
            ++m_threads;
            std::thread([this] { work(); }).detach();
        } else {
            m_wake.notify_one();
        }
    }

private:
    void work() {
        std::unique_lock lock(m_mutex);
        for (;;) {
            ++m_idle;
            const bool have_job = m_wake.wait_for(lock, std::chrono::seconds(10), [this] { return !m_jobs.empty(); });
            --m_idle;
            if (!have_job) {
                --m_threads;
                return;
            }
            unique_function job = std::move(m_jobs.front());
            m_jobs.pop_front();
            lock.unlock();
            job();
            lock.lock();
        }
    }
    static constexpr int max_threads = 4;
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::deque<unique_function> m_jobs;
    int m_threads = 0;
    int m_idle = 0;
};
using resolver_threads = basic_resolver_threads<>;

// A class template, named through its parameter (detail/dependent.hpp), so that it is
// compiled only where a lookup is awaited, like resolve().
template <class Deferred = void>
class basic_resolve_awaiter : public cancellable_wait<basic_resolve_awaiter<Deferred>> {
    /// Shared by a lookup's awaiter (loop thread) and its job (resolver thread).
    struct lookup_state {
        std::mutex mutex;
        bool abandoned = false; // the awaiter is gone or cancelled: deliver nothing
        std::vector<address> addresses;
        int error = 0;
        event_loop* loop = nullptr;
        suspended_wait* waiter = nullptr; // valid while not abandoned
    };

public:
    basic_resolve_awaiter(std::string host, std::uint16_t port)
        : m_state(std::make_shared<lookup_state>()), m_host(std::move(host)), m_port(port) {}
    basic_resolve_awaiter(const basic_resolve_awaiter&) = delete;
    basic_resolve_awaiter& operator=(const basic_resolve_awaiter&) = delete;
    ~basic_resolve_awaiter() {
        std::lock_guard lock(m_state->mutex);
        m_state->abandoned = true;
    }

    bool await_ready() const noexcept { return false; }
    std::vector<address> await_resume() {
        this->throw_if_cancelled();
        if (m_state->error) throw std::system_error(m_state->error, resolver_category(), "resolve " + m_host);
        return std::move(m_state->addresses);
    }

private:
    static void lookup(const std::shared_ptr<lookup_state>& shared, const std::string& host, std::uint16_t port) {
        lookup_state& state = *shared;
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        addrinfo* found = nullptr;
        const int error = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
        dependent_t<std::vector<address>, Deferred> addresses;
        for (addrinfo* ai = found; ai; ai = ai->ai_next) {
            address a = address::from_native(ai->ai_addr, ai->ai_addrlen);
            bool seen = false;
            for (const address& b : addresses) seen = seen || b == a;
            if (!seen) addresses.push_back(a);
        }
        if (found) ::freeaddrinfo(found);
        // Post while holding the mutex: the awaiter marks itself abandoned under the same
        // mutex before it (or its loop) goes away, so a late result is never delivered.
        std::lock_guard lock(state.mutex);
        if (state.abandoned) return;
        state.addresses = std::move(addresses);
        state.error = error;
        // The callback owns a reference: the awaiter may be gone by the time it runs.
        state.loop->post([keep = shared] {
            std::lock_guard relock(keep->mutex);
            if (keep->abandoned) return;
            tandem::detail::hooks(*keep->loop).schedule(keep->waiter->complete(), keep->waiter->context);
        });
    }

    friend class cancellable_wait<basic_resolve_awaiter>;
    bool start() {
        m_state->loop = &this_loop();
        m_state->waiter = this;
        basic_resolver_threads<Deferred>::instance().submit([state = m_state, host = m_host, port = m_port] { lookup(state, host, port); });
        return true;
    }
    bool stop() noexcept {
        std::lock_guard lock(m_state->mutex);
        m_state->abandoned = true; // the lookup finishes on its thread, unheard
        return true;
    }

    std::shared_ptr<lookup_state> m_state;
    std::string m_host;
    std::uint16_t m_port;
};
using resolve_awaiter = basic_resolve_awaiter<>;

} // namespace detail

/// Resolves a host name (or numeric address) with getaddrinfo on tandem's resolver threads,
/// never blocking the loop. Returns every address found, IPv4 and IPv6, without duplicates.
/// Throws std::system_error (category "tandem.resolve") on failure. Cancellable: a cancelled
/// lookup returns at once; the thread finishes it and throws the answer away.
template <class Deferred = void> // compiled only where used (detail/dependent.hpp)
detail::dependent_t<task<std::vector<address>>, Deferred> resolve(std::string host, std::uint16_t port) {
    co_return co_await detail::basic_resolve_awaiter<Deferred>(std::move(host), port);
}

} // namespace tandem
