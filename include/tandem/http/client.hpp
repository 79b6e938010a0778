// tandem — a small HTTP/1.1 client: one keep-alive connection, reused; Content-Length,
// chunked and close-delimited responses; a timeout per request. Enough to drive load tests
// and to test the server with a real peer.
//
// Layer: protocols.
#pragma once

#include "tandem/http/message.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/net.hpp"
#include "tandem/task.hpp"
#include "tandem/time.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace tandem::http {

/// A response as the client received it (owning its data).
struct client_response {
    int status = 0;
    std::string reason;
    int version = 11;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    std::string_view header(std::string_view name) const noexcept {
        for (const auto& [n, v] : headers)
            if (iequals(n, name)) return v;
        return {};
    }
};

/// The server sent something that is not HTTP/1.1 (or broke off mid-response).
class protocol_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct client_options {
    /// Whole request, connect included; zero means none.
    std::chrono::milliseconds timeout{30'000};
    /// Largest response body accepted.
    std::uint64_t max_body = 64u << 20;
    /// Sent as the Host header (default: the address).
    std::string host;
};

class client {
public:
    client(address to, client_options options = {}) : m_to(std::move(to)), m_options(std::move(options)) {
        if (m_options.host.empty()) m_options.host = m_to.to_string();
    }

    /// Sends one request and reads its response. The connection is opened on first use,
    /// kept alive, and reopened when the server has closed it. A GET/HEAD that finds a
    /// reused connection closed before any response byte is retried once on a new one.
    /// Throws std::invalid_argument, sending nothing, for a method that is not a token, a
    /// target with a space or control character, or a header with CR, LF or NUL: a target
    /// built from user input must not smuggle a second request.
    task<client_response> request(std::string_view method, std::string_view target, std::string_view body = {},
                                  std::vector<std::pair<std::string, std::string>> extra_headers = {}) {
        check_request(method, target, extra_headers);
        if (m_options.timeout.count() > 0) {
            try {
                co_return co_await with_timeout(m_options.timeout, exchange(method, target, body, extra_headers));
            } catch (const timed_out&) {
                m_stream.close(); // its state is unknown now
                throw;
            }
        }
        co_return co_await exchange(method, target, body, extra_headers);
    }

    task<client_response> get(std::string_view target) { return request("GET", target); }
    task<client_response> post(std::string_view target, std::string_view body,
                               std::string content_type = "application/octet-stream") {
        return request("POST", target, body, {{"Content-Type", std::move(content_type)}});
    }

    bool connected() const noexcept { return m_stream.is_open(); }
    void close() noexcept { m_stream.close(); }
    /// Connections opened so far (keep-alive keeps this at 1).
    std::size_t connections_opened() const noexcept { return m_opened; }

private:
    void check_request(std::string_view method, std::string_view target,
                       const std::vector<std::pair<std::string, std::string>>& extra) const {
        if (!detail::is_token(method)) throw std::invalid_argument("tandem::http::client: invalid method");
        if (target.empty() || !std::all_of(target.begin(), target.end(), detail::is_target_char))
            throw std::invalid_argument("tandem::http::client: invalid request target");
        if (!detail::valid_field("Host", m_options.host)) throw std::invalid_argument("tandem::http::client: invalid host");
        for (const auto& [n, v] : extra)
            if (!detail::valid_field(n, v))
                throw std::invalid_argument("tandem::http::client: header '" + n + "' would split the request");
    }

    task<client_response> exchange(std::string_view method, std::string_view target, std::string_view body,
                                   const std::vector<std::pair<std::string, std::string>>& extra) {
        const bool idempotent = method == "GET" || method == "HEAD";
        for (int attempt = 0;; ++attempt) {
            const bool reused = m_stream.is_open();
            if (!reused) {
                m_stream = co_await tcp_stream::connect(m_to);
                m_stream.set_nodelay(true);
                m_buffer.clear();
                ++m_opened;
            }
            bool got_bytes = false;
            try {
                co_return co_await send_and_receive(method, target, body, extra, got_bytes);
            } catch (const std::system_error&) {
                m_stream.close();
                if (!(reused && !got_bytes && idempotent && attempt == 0)) throw;
            } catch (const protocol_error&) {
                m_stream.close();
                if (!(reused && !got_bytes && idempotent && attempt == 0)) throw;
            }
        }
    }

    task<client_response> send_and_receive(std::string_view method, std::string_view target, std::string_view body,
                                           const std::vector<std::pair<std::string, std::string>>& extra,
                                           bool& got_bytes) {
        std::string head;
        head.reserve(128 + body.size());
        head.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ").append(m_options.host).append("\r\n");
        bool has_length = false;
        for (const auto& [n, v] : extra) {
            if (iequals(n, "content-length") || iequals(n, "transfer-encoding")) has_length = true;
            head.append(n).append(": ").append(v).append("\r\n");
        }
        if (!has_length && (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")) {
            head += "Content-Length: ";
            detail::append_decimal(head, body.size());
            head += "\r\n";
        }
        head += "\r\n";
        const std::string_view parts[] = {head, body};
        co_await m_stream.write_all_gathered(parts);

        response_head parsed;
        std::vector<header> storage(100);
        parse_result r;
        for (;;) {
            if (!m_buffer.empty()) {
                r = parse_response(m_buffer, parsed, storage, method == "HEAD");
                if (r.state == parse_state::error) throw protocol_error(std::string("bad response: ") + std::string(r.reason));
                if (r.state == parse_state::complete) {
                    if (parsed.status >= 100 && parsed.status < 200) { // 100 Continue and friends
                        m_buffer.erase(0, r.head_size);
                        continue;
                    }
                    break;
                }
            }
            if (co_await read_more() == 0) throw protocol_error("connection closed before a response");
            got_bytes = true;
        }
        got_bytes = true;
        client_response out;
        out.status = parsed.status;
        out.reason = std::string(parsed.reason);
        out.version = parsed.version;
        for (const header& h : parsed.headers) out.headers.emplace_back(std::string(h.name), std::string(h.value));
        const bool keep = parsed.keep_alive;
        const body_framing framing = parsed.framing;
        const std::uint64_t length = parsed.content_length;
        m_buffer.erase(0, r.head_size); // parsed's views die here; what we need is copied

        if (framing == body_framing::content_length) {
            if (length > m_options.max_body) throw protocol_error("response body too large");
            while (m_buffer.size() < length)
                if (co_await read_more() == 0) throw protocol_error("connection closed inside a response body");
            out.body = m_buffer.substr(0, static_cast<std::size_t>(length));
            m_buffer.erase(0, static_cast<std::size_t>(length));
        } else if (framing == body_framing::chunked) {
            chunked_decoder decoder(m_options.max_body);
            for (;;) {
                const auto d = decoder.decode(m_buffer, [&](std::string_view s) { out.body.append(s); });
                m_buffer.erase(0, d.consumed);
                if (d.state == parse_state::error) throw protocol_error(std::string("bad chunked body: ") + std::string(d.reason));
                if (d.state == parse_state::complete) break;
                if (co_await read_more() == 0) throw protocol_error("connection closed inside a chunked body");
            }
        } else if (framing == body_framing::until_close) {
            out.body = std::move(m_buffer);
            m_buffer.clear();
            while (co_await read_more() != 0) {
                if (out.body.size() + m_buffer.size() > m_options.max_body) throw protocol_error("response body too large");
                out.body += m_buffer;
                m_buffer.clear();
            }
        }
        if (!keep) m_stream.close();
        co_return out;
    }

    task<std::size_t> read_more() {
        char chunk[16 * 1024];
        const std::size_t n = co_await m_stream.read_some(std::span<char>(chunk));
        m_buffer.append(chunk, n);
        co_return n;
    }

    address m_to;
    client_options m_options;
    tcp_stream m_stream;
    std::string m_buffer;
    std::size_t m_opened = 0;
};

} // namespace tandem::http
