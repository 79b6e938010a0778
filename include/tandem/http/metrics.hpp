// tandem — the loop's, the pools' and the server's figures in Prometheus text exposition
// format (version 0.0.4): what Node users get from prom-client, as one ready-made handler.
//
//   routes.get("/metrics", http::metrics_handler({http::pool_metrics("offload", pool)}));
//   curl http://127.0.0.1:8080/metrics
//
// Layer: protocols. Pools are read through size()/queued()/running(), so this header needs
// neither pool's.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/http/message.hpp"
#include "tandem/http/router.hpp"
#include "tandem/lag.hpp"
#include "tandem/loop.hpp"

#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem::http {

/// One pool's figures at the moment of a scrape.
struct pool_figures {
    std::string name;
    std::size_t workers = 0;
    std::size_t queued = 0;
    std::size_t running = 0;
};

/// Reads a pool's figures when scraped.
using pool_probe = std::function<pool_figures()>;

/// A probe for a thread_pool or process_pool (anything with size(), queued(), running()).
/// The pool must outlive the handler.
template <class Pool>
pool_probe pool_metrics(std::string name, const Pool& pool) {
    return [name = std::move(name), &pool] { return pool_figures{name, pool.size(), pool.queued(), pool.running()}; };
}

/// The exposition text for these figures (pure: testable without a server). A template, like
/// metrics_handler, so that only a translation unit that calls it compiles it.
template <class = void>
std::string metrics_text(const server_stats& server, const loop_stats& loop, std::span<const pool_figures> pools);

/// A handler answering the figures of the loop that runs it, of the server that calls it and
/// of `pools`, as text/plain; version=0.0.4.
/// (A template with its types spelt through `Deferred`, so that only a translation unit that
/// calls it compiles it: detail/dependent.hpp.)
template <class Deferred = void>
handler metrics_handler(tandem::detail::dependent_t<std::vector<pool_probe>, Deferred> pools = {}) {
    return [pools = std::move(pools)](request& req) -> task<response> {
        tandem::detail::dependent_t<std::vector<pool_figures>, Deferred> figures;
        figures.reserve(pools.size());
        for (const pool_probe& p : pools) figures.push_back(p());
        co_return response(200, metrics_text(req.server_figures(), this_loop().stats(), {figures.data(), figures.size()}),
                           "text/plain; version=0.0.4; charset=utf-8");
    };
}

// ============================================================================================
// Implementation
// ============================================================================================

namespace detail {

template <class Deferred> // types spelt through Deferred: detail/dependent.hpp
class exposition {
public:
    explicit exposition(std::string& out) noexcept : m_out(std::addressof(out)) {}
    /// The HELP and TYPE lines of a metric family.
    exposition& family(std::string_view name, std::string_view type, std::string_view help) {
        m_out->append("# HELP ").append(name).append(" ").append(help).append("\n");
        m_out->append("# TYPE ").append(name).append(" ").append(type).append("\n");
        return *this;
    }
    exposition& sample(std::string_view name, double v, std::string_view labels = {}) {
        m_out->append(name);
        if (!labels.empty()) m_out->append("{").append(labels).append("}");
        char buf[40];
        std::snprintf(buf, sizeof buf, " %.17g\n", v);
        m_out->append(buf);
        return *this;
    }
    exposition& counter(std::string_view name, std::string_view help, double v) {
        return family(name, "counter", help).sample(name, v);
    }
    exposition& gauge(std::string_view name, std::string_view help, double v) {
        return family(name, "gauge", help).sample(name, v);
    }
    /// A latency histogram as a summary (quantiles 0.5, 0.9, 0.99 and 1, _sum, _count).
    exposition& summary(std::string_view name, std::string_view help, const latency_histogram& h) {
        family(name, "summary", help);
        using seconds_type = tandem::detail::dependent_t<std::chrono::duration<double>, Deferred>;
        auto seconds = [](std::chrono::nanoseconds d) { return seconds_type(d).count(); };
        const char* const labels[] = {"0.5", "0.9", "0.99", "1"};
        const double quantiles[] = {50.0, 90.0, 99.0, 100.0};
        for (std::size_t i = 0; i < 4; ++i)
            sample(name, seconds(h.percentile(quantiles[i])), std::string("quantile=\"") + labels[i] + "\"");
        sample(std::string(name) + "_sum", seconds(h.total()));
        sample(std::string(name) + "_count", static_cast<double>(h.count()));
        return *this;
    }

private:
    tandem::detail::dependent_t<std::string, Deferred>* m_out;
};

template <class = void>
std::string label_value(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

} // namespace detail

template <class T>
std::string metrics_text(const server_stats& server, const loop_stats& loop, std::span<const pool_figures> pool_list) {
    using seconds = tandem::detail::dependent_t<std::chrono::duration<double>, T>;
    const tandem::detail::dependent_t<std::span<const pool_figures>, T> pools = pool_list;
    std::string out;
    out.reserve(4096);
    detail::exposition<T> e(out);
    e.counter("tandem_http_requests_total", "Requests whose head was read.", static_cast<double>(server.requests));
    e.family("tandem_http_responses_total", "counter", "Responses written, by status class.");
    for (int k = 1; k <= 5; ++k)
        e.sample("tandem_http_responses_total", static_cast<double>(server.responses[static_cast<std::size_t>(k)]),
                 "class=\"" + std::to_string(k) + "xx\"");
    e.counter("tandem_http_connections_accepted_total", "Connections accepted.",
              static_cast<double>(server.connections_accepted));
    e.gauge("tandem_http_connections_open", "Connections open now.", static_cast<double>(server.connections_open));
    e.counter("tandem_http_received_bytes_total", "Bytes read from clients.", static_cast<double>(server.bytes_received));
    e.counter("tandem_http_sent_bytes_total", "Bytes written to clients.", static_cast<double>(server.bytes_sent));
    e.counter("tandem_http_handler_errors_total", "Handlers that threw (answered 500).",
              static_cast<double>(server.handler_errors));
    e.counter("tandem_http_clients_gone_total", "Handlers cancelled because their client left.",
              static_cast<double>(server.clients_gone));
    e.counter("tandem_http_timeouts_total", "Connections cut by a timeout.", static_cast<double>(server.timeouts));
    e.counter("tandem_http_rejected_total", "Requests refused before a handler ran.", static_cast<double>(server.rejected));
    e.gauge("tandem_http_body_memory_bytes", "Request-body memory held now.", static_cast<double>(server.body_bytes_held));

    e.summary("tandem_loop_delay_seconds", "How late ready work started (event-loop delay).", loop.delay);
    e.summary("tandem_loop_step_seconds", "How long each batch of ready work ran (bounds its longest step).", loop.steps);
    e.counter("tandem_loop_busy_seconds_total", "Time the loop spent running work.",
              seconds(loop.busy).count());
    e.counter("tandem_loop_idle_seconds_total", "Time the loop spent waiting.", seconds(loop.idle).count());
    e.gauge("tandem_loop_utilization", "busy / (busy + idle) since the loop started.", loop.utilization());
    e.counter("tandem_loop_turns_total", "Turns of the loop.", static_cast<double>(loop.turns));

    if (!pools.empty()) {
        const char* const families[3][2] = {
            {"tandem_pool_workers", "Workers (threads or processes) in the pool."},
            {"tandem_pool_queued", "Jobs waiting for a worker."},
            {"tandem_pool_running", "Jobs a worker is running now."},
        };
        for (int f = 0; f < 3; ++f) {
            e.family(families[f][0], "gauge", families[f][1]);
            for (const pool_figures& p : pools) {
                const std::size_t v = f == 0 ? p.workers : f == 1 ? p.queued : p.running;
                e.sample(families[f][0], static_cast<double>(v), "pool=\"" + detail::label_value<T>(p.name) + "\"");
            }
        }
    }
    return out;
}

} // namespace tandem::http
