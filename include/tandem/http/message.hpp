// tandem — HTTP messages shared by the server and the client: the request a handler reads,
// the response it returns, the one writer of response heads, status reason phrases, the Date
// header, query-string decoding, and the figures a server counts.
//
// Layer: protocols.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_chrono.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/http/header_list.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/task.hpp"

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tandem::http {

constexpr std::string_view reason_phrase(int status) noexcept {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/// Writes body chunks of a streamed response (chunked transfer coding). write() suspends
/// while the client is slow to read: a stream never outruns its reader.
class body_writer {
public:
    virtual ~body_writer() = default;
    virtual task<void> write(std::string_view data) = 0;
};

namespace detail {
/// Framing is the server's: a handler's own Content-Length or Transfer-Encoding could disagree
/// with the body sent (the client would read the next response as this one's body), and its
/// Connection with what the server does next. Date is the server's too: a second one would
/// make a singleton field ambiguous.
constexpr bool server_framing_header(std::string_view name) noexcept {
    return iequals(name, "content-length") || iequals(name, "transfer-encoding") || iequals(name, "connection") ||
           iequals(name, "date");
}
} // namespace detail

/// What a handler returns. Content-Length, Transfer-Encoding, Date and Connection are the
/// server's: a handler's own Content-Length or Transfer-Encoding is ignored, and its
/// `Connection: close` closes the connection after the response. The status is a final one
/// (200-599); anything else, or a header with CR, LF or NUL, answers 500 (error hook).
class response {
public:
    using stream_function = std::function<task<void>(body_writer&)>;

    response() = default;
    /// `content_type` is kept only when the response has a body to describe (a bodiless 204
    /// allocates nothing), and keeping it allocates nothing either: up to 23 characters
    /// ("application/json") are held in place, and a longer content type the library knows
    /// (the default, detail::well_known_texts) is a view of its constant. A typical response
    /// allocates its body, when that is too long for a short string, and nothing else.
    explicit response(int status, std::string body = {}, std::string_view content_type = "text/plain; charset=utf-8")
        : status(status), body(std::move(body)) {
        if (this->body.empty() && status < 400) return;
        // No header to replace yet: set_header's search is skipped, its check is not.
        // (Checked as views: the name's check is then done by the compiler.)
        if (!detail::field_check::valid("Content-Type", content_type))
            throw std::invalid_argument("tandem::http::response: header 'Content-Type' would split the response");
        // Built as field_texts: emplace_back<field_text, field_text> is set_header's, compiled once.
        auto& [name, value] =
            headers.emplace_back(field_text(std::string_view("Content-Type")), field_text(content_type));
        detail::field_check::mark(name, value);
    }

    static response text(std::string body, int status = 200) { return response(status, std::move(body)); }
    /// `json` is sent as given: a string the caller built.
    static response json(std::string json, int status = 200) {
        return response(status, std::move(json), "application/json");
    }
    /// A body produced over time (long responses, server-sent events), sent chunked.
    /// (A template spelt through Deferred, so that only a caller compiles std::function's
    /// members: detail/dependent.hpp.)
    template <class Deferred = void>
    static response stream(field_text content_type, tandem::detail::dependent_t<stream_function, Deferred> fn,
                           int status = 200) {
        tandem::detail::dependent_t<response, Deferred> r(status);
        r.set_header("Content-Type", std::move(content_type));
        r.streamer = std::move(fn);
        return r;
    }

    /// Replaces the first header called `name` (case-insensitive), or appends it. Throws
    /// std::invalid_argument for a name that is not a token or a value with CR, LF, NUL or
    /// another control character but HTAB (response splitting). Names and values are copied
    /// (field_text): in place up to 23 characters, without allocating.
    response& set_header(field_text name, field_text value) {
        if (!detail::field_check::valid_and_marked(name, value))
            throw std::invalid_argument("tandem::http::response: header '" + name.str() + "' would split the response");
        detail::set_header(headers, std::move(name), std::move(value));
        return *this;
    }
    std::string_view header(std::string_view name) const noexcept { return detail::find_header(headers, name); }

    int status = 200;
    header_list headers;
    std::string body;
    stream_function streamer;
};

/// Decodes %XX and '+' (application/x-www-form-urlencoded); nullopt on a bad escape. (This and
/// query_value are templates spelt through Deferred, so that only a caller compiles
/// std::optional<std::string>: detail/dependent.hpp.)
template <class Deferred = void>
inline tandem::detail::dependent_t<std::optional<std::string>, Deferred> percent_decode(std::string_view in,
                                                                                        bool plus_is_space = true) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        const char c = in[i];
        if (c == '%') {
            if (i + 2 >= in.size()) return std::nullopt;
            auto hex = [](char h) -> int {
                if (h >= '0' && h <= '9') return h - '0';
                if (h >= 'a' && h <= 'f') return h - 'a' + 10;
                if (h >= 'A' && h <= 'F') return h - 'A' + 10;
                return -1;
            };
            const int hi = hex(in[i + 1]), lo = hex(in[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

/// The value of `name` in a query string (decoded), nullopt if absent or malformed.
template <class Deferred = void>
inline tandem::detail::dependent_t<std::optional<std::string>, Deferred> query_value(std::string_view query,
                                                                                     std::string_view name) {
    while (!query.empty()) {
        const std::size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const std::size_t eq = pair.find('=');
        const std::string_view key = pair.substr(0, eq);
        if (percent_decode<Deferred>(key) == std::string(name))
            return percent_decode<Deferred>(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

/// `:name` segments of a matched route, in pattern order.
using route_params = std::vector<std::pair<std::string_view, std::string_view>>;

/// What one server counted since it started (server::stats()). Plain numbers, read on the
/// loop thread; http::metrics_handler serves them in Prometheus text format.
struct server_stats {
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_open = 0;
    std::uint64_t requests = 0;                 // complete heads read
    std::array<std::uint64_t, 6> responses{};   // by class: [1] 1xx ... [5] 5xx
    std::uint64_t bytes_received = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t handler_errors = 0;           // handlers that threw (answered 500)
    std::uint64_t clients_gone = 0;             // handlers cancelled because the client left
    std::uint64_t timeouts = 0;                 // connections cut by a timeout
    std::uint64_t rejected = 0;                 // requests refused before a handler ran (4xx/5xx)
    std::uint64_t body_bytes_held = 0;          // request-body memory held right now
};

/// The request a handler sees. Views are valid until the handler's task finishes.
class request {
public:
    std::string_view method() const noexcept { return m_head->method; }
    std::string_view target() const noexcept { return m_head->target; }
    std::string_view path() const noexcept { return m_head->path; }
    std::string_view query() const noexcept { return m_head->query; }
    int version() const noexcept { return m_head->version; }
    std::span<const http::header> headers() const noexcept { return m_head->headers; }
    /// The first header with this name (case-insensitive), empty if absent.
    std::string_view header(std::string_view name) const noexcept { return m_head->find(name); }
    std::string_view body() const noexcept { return m_body; }
    /// A `:name` segment of the matched route, empty if absent.
    /// (This and query_param are templates spelt through Deferred, so that only a caller
    /// compiles the std types they use: detail/dependent.hpp.)
    template <class Deferred = void>
    std::string_view param(std::string_view name) const noexcept {
        const tandem::detail::dependent_t<route_params, Deferred>* params = m_params;
        for (const auto& [n, v] : *params)
            if (n == name) return v;
        return {};
    }
    /// A query-string parameter, percent-decoded; nullopt if absent or malformed.
    template <class Deferred = void>
    tandem::detail::dependent_t<std::optional<std::string>, Deferred> query_param(std::string_view name) const {
        return query_value<Deferred>(query(), name);
    }
    /// The figures of the server that is answering (for a metrics endpoint).
    const server_stats& server_figures() const noexcept { return *m_stats; }

    request(const request_head& head, std::string_view body, const route_params& params,
            const server_stats& stats) noexcept
        // addressof, not &: an & would look up route_params' operator&, compiling the vector.
        : m_head(&head), m_body(body), m_params(std::addressof(params)), m_stats(&stats) {}

private:
    const request_head* m_head;
    std::string_view m_body;
    const route_params* m_params;
    const server_stats* m_stats;
};

/// How a response head frames its body.
struct head_framing {
    std::optional<std::uint64_t> content_length; // announced length (also for HEAD and 304)
    bool chunked = false;                        // Transfer-Encoding: chunked
    bool close = false;                          // Connection: close
};

/// The one writer of response heads: status line, Date, the handler's headers, then the
/// framing the server decided. The status line says HTTP/1.1 whatever the request's version
/// (RFC 9110 2.5); `version` is the request's, and a kept-alive HTTP/1.0 client is told so.
/// (A template spelt through Deferred, so that only a server compiles it: detail/dependent.hpp.)
template <class Deferred = void>
inline void append_response_head(std::string& out, int version, int status,
                          tandem::detail::dependent_t<std::span<const header_list::value_type>, Deferred> headers,
                          head_framing framing);

namespace detail {

/// `t` as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT", RFC 9110 §5.6.7) into `out`;
/// returns its 29 characters. The names are written from fixed tables, not by strftime,
/// whose %a and %b follow the program's locale: a program that sets a French one must
/// still send a Date every client can parse.
inline std::string_view format_http_date(std::time_t t, char (&out)[32]) noexcept {
    static constexpr char days[] = "SunMonTueWedThuFriSat";
    static constexpr char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    auto two = [](char* p, int v) { p[0] = static_cast<char>('0' + v / 10 % 10); p[1] = static_cast<char>('0' + v % 10); };
    char* p = out;
    std::memcpy(p, days + 3 * tm.tm_wday, 3);
    p[3] = ',';
    p[4] = ' ';
    two(p + 5, tm.tm_mday);
    p[7] = ' ';
    std::memcpy(p + 8, months + 3 * tm.tm_mon, 3);
    p[11] = ' ';
    const int year = tm.tm_year + 1900; // four digits until 9999, which is what the grammar allows
    two(p + 12, year / 100);
    two(p + 14, year % 100);
    p[16] = ' ';
    two(p + 17, tm.tm_hour);
    p[19] = ':';
    two(p + 20, tm.tm_min);
    p[22] = ':';
    two(p + 23, tm.tm_sec);
    std::memcpy(p + 25, " GMT", 4);
    return {out, 29};
}

/// The Date header's value, formatted once per second per thread. std::time is the coarse
/// clock (on Linux a vDSO read of the kernel's last tick, no timer hardware): seconds are
/// all a Date says, and a server asks once per response.
inline std::string_view http_date() {
    thread_local std::time_t cached_second = -1;
    thread_local char text[32] = {};
    thread_local std::string_view formatted;
    const std::time_t now = std::time(nullptr);
    if (now != cached_second) {
        formatted = format_http_date(now, text);
        cached_second = now;
    }
    return formatted;
}

/// Decimal digits of v into the end of buf; returns them.
inline std::string_view format_decimal(std::uint64_t v, char (&buf)[24]) noexcept {
    char* p = buf + sizeof buf;
    do {
        *--p = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v);
    return {p, static_cast<std::size_t>(buf + sizeof buf - p)};
}

inline void append_decimal(std::string& out, std::uint64_t v) {
    char buf[24];
    out += format_decimal(v, buf);
}

} // namespace detail

// ============================================================================================
// Implementation
// ============================================================================================

template <class Deferred>
inline void append_response_head(std::string& out, int version, int status,
                          tandem::detail::dependent_t<std::span<const header_list::value_type>, Deferred> headers,
                          head_framing framing) {
    using namespace std::string_view_literals;
    // Measured first, then written with plain copies into one resize: once per response, so
    // no appends that each check capacity and measure a C string.
    char status_buf[24], length_buf[24];
    const std::string_view code = detail::format_decimal(static_cast<std::uint64_t>(status < 0 ? 0 : status), status_buf);
    const std::string_view reason = reason_phrase(status);
    const std::string_view date = detail::http_date();
    std::string_view length_line, length;
    if (framing.chunked) {
        length_line = "Transfer-Encoding: chunked\r\n"sv;
    } else if (framing.content_length) {
        length_line = "Content-Length: "sv;
        length = detail::format_decimal(*framing.content_length, length_buf);
    }
    const std::string_view connection = framing.close ? "Connection: close\r\n"sv
                                        : version == 10 ? "Connection: keep-alive\r\n"sv
                                                        : std::string_view();
    std::size_t size = "HTTP/1.1 "sv.size() + code.size() + 1 + reason.size() + "\r\nDate: "sv.size() + date.size() + 2 +
                       length_line.size() + (length.empty() ? 0 : length.size() + 2) + connection.size() + 2;
    for (const auto& [n, v] : headers)
        if (!detail::server_framing_header(n)) size += n.size() + 2 + v.size() + 2;
    const std::size_t at = out.size();
    out.resize(at + size);
    char* p = out.data() + at;
    auto put = [&p](std::string_view part) noexcept {
        if (part.empty()) return; // an empty view's data() may be null, which memcpy must not see
        std::memcpy(p, part.data(), part.size());
        p += part.size();
    };
    put("HTTP/1.1 "sv);
    put(code);
    put(" "sv);
    put(reason);
    put("\r\nDate: "sv);
    put(date);
    put("\r\n"sv);
    for (const auto& [n, v] : headers) { // the handler's, less the framing ones (the server's)
        if (detail::server_framing_header(n)) continue;
        put(n);
        put(": "sv);
        put(v);
        put("\r\n"sv);
    }
    put(length_line);
    if (!length.empty()) {
        put(length);
        put("\r\n"sv);
    }
    put(connection);
    put("\r\n"sv);
}

} // namespace tandem::http
