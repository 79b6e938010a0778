// tandem — the router: (method, path) → handler, with `:name` segments and a final `*`.
//
// Layer: protocols, pure: no sockets, no loop. It is table-tested on its own
// (tests/test_http_router.cpp). Each route remembers where it was registered and a label
// ("GET /compute"): the server names a handler that blocks the loop by them.
#pragma once

#include "tandem/fwd.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/http/message.hpp"
#include "tandem/source_location.hpp"
#include "tandem/task.hpp"

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem::http {

using handler = std::function<task<response>(request&)>;

/// One registered route.
struct route {
    std::string method;
    std::string label; // "GET /users/:id": names the handler in diagnostics and logs
    source_location where;
    handler fn;
};

/// What router::find answers: the route, or the status that says why there is none (404: no
/// route has this path; 405: the path exists for other methods, listed in `allow`; 501: no
/// route uses this method and it is not one of HTTP's own, RFC 9110 9.1), or 204 for
/// `OPTIONS *` that no route takes: the server's methods, listed in `allow` (RFC 9110 9.3.7).
struct route_match {
    const route* found = nullptr;
    int status = 0;
    std::string allow;
};

/// Routes by method and path: exact segments, `:name` segments (request::param), and a
/// final `*` matching any rest (a prefix). First match wins. HEAD falls back to GET. A class
/// template's one instantiation behind an alias, so that a translation unit that routes
/// nothing analyses none of its bodies (README, "Headers").
// (declared, with the alias tandem::http::router, in fwd.hpp)

template <class Deferred>
class basic_router {
    template <class T>
    using deferred = tandem::detail::dependent_t<T, Deferred>; // detail/dependent.hpp says why

public:
    basic_router& route(std::string_view method, std::string_view pattern, handler h,
                  source_location where = source_location::current()) {
        if (pattern.empty() || pattern.front() != '/') throw std::invalid_argument("tandem: route patterns start with '/'");
        entry e;
        e.r = http::route{std::string(method), std::string(method) + ' ' + std::string(pattern), where, std::move(h)};
        std::string_view rest = pattern.substr(1);
        while (!rest.empty()) {
            const std::size_t slash = rest.find('/');
            std::string_view seg = rest.substr(0, slash);
            if (seg == "*") {
                if (slash != std::string_view::npos) throw std::invalid_argument("tandem: '*' must end a route pattern");
                e.prefix = true;
                break;
            }
            e.segments.emplace_back(seg);
            if (slash == std::string_view::npos) break;
            rest.remove_prefix(slash + 1);
            if (rest.empty()) e.segments.emplace_back(); // trailing slash is significant
        }
        m_routes.push_back(std::move(e));
        return *this;
    }
    basic_router& get(std::string_view p, handler h, source_location where = source_location::current()) {
        return route("GET", p, std::move(h), where);
    }
    basic_router& post(std::string_view p, handler h, source_location where = source_location::current()) {
        return route("POST", p, std::move(h), where);
    }
    basic_router& put(std::string_view p, handler h, source_location where = source_location::current()) {
        return route("PUT", p, std::move(h), where);
    }
    basic_router& patch(std::string_view p, handler h, source_location where = source_location::current()) {
        return route("PATCH", p, std::move(h), where);
    }
    basic_router& del(std::string_view p, handler h, source_location where = source_location::current()) {
        return route("DELETE", p, std::move(h), where);
    }

    /// The route for (method, path), filling `params` with its `:name` segments.
    route_match find(std::string_view method, std::string_view path, route_params& found_params) const {
        deferred<route_params>& params = found_params;
        route_match m;
        for (int pass = 0; pass < 2; ++pass) {
            const std::string_view want = pass == 0 ? method : std::string_view("GET");
            if (pass == 1 && method != "HEAD") break;
            for (const entry& e : m_routes) {
                if (e.r.method != want) continue;
                params.clear();
                if (match(e, path, params)) {
                    m.found = &e.r;
                    return m;
                }
            }
        }
        params.clear();
        if (!knows_method(method)) {
            m.status = 501;
            return m;
        }
        if (method == "OPTIONS" && path == "*") { // about the server, not a resource
            for (const entry& e : m_routes) allow(m.allow, e.r.method);
            allow(m.allow, "OPTIONS");
            m.status = 204;
            return m;
        }
        deferred<route_params> scratch;
        for (const entry& e : m_routes)
            if (match(e, path, scratch)) allow(m.allow, e.r.method);
        m.status = m.allow.empty() ? 404 : 405;
        return m;
    }

    /// True for HTTP's own methods (RFC 9110 9.3, and PATCH) and any method a route uses.
    bool knows_method(std::string_view method) const noexcept {
        for (std::string_view m : {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
            if (method == m) return true;
        for (const entry& e : m_routes)
            if (e.r.method == method) return true;
        return false;
    }

private:
    /// Adds `method` to an Allow list unless it is there (an exact element: "GE" is not
    /// "GET"); GET brings HEAD, which falls back to it.
    static void allow(std::string& list, std::string_view method) {
        bool listed = false;
        detail::for_each_list_element(list, [&](std::string_view m) { listed |= m == method; });
        if (listed) return;
        if (!list.empty()) list += ", ";
        list += method;
        if (method == "GET") allow(list, "HEAD");
    }

    struct entry {
        http::route r;
        deferred<std::vector<std::string>> segments;
        bool prefix = false;
    };
    static bool match(const entry& e, std::string_view path, deferred<route_params>& out) {
        if (path.empty() || path.front() != '/') return false;
        std::string_view rest = path.substr(1);
        std::size_t i = 0;
        bool at_end = rest.empty();
        while (!at_end) {
            const std::size_t slash = rest.find('/');
            const std::string_view seg = rest.substr(0, slash);
            if (i == e.segments.size()) return e.prefix;
            const std::string& want = e.segments[i++];
            if (!want.empty() && want.front() == ':') {
                if (seg.empty()) return false;
                out.emplace_back(std::string_view(want).substr(1), seg);
            } else if (want != seg) {
                return false;
            }
            if (slash == std::string_view::npos) {
                at_end = true;
            } else {
                rest.remove_prefix(slash + 1);
                if (rest.empty()) { // "/a/": one more, empty segment
                    if (i == e.segments.size()) return e.prefix;
                    if (!e.segments[i++].empty()) return false;
                    at_end = true;
                }
            }
        }
        return i == e.segments.size();
    }
    std::vector<entry> m_routes;
};

} // namespace tandem::http
