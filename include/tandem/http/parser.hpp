// tandem — HTTP/1.1 message parsing (RFC 9110/9112): pure and incremental.
//
// Layer: protocols, but with no I/O and no OS headers: bytes in, a request (views into the
// caller's buffer), "need more", or an error status out. No allocation, no exceptions.
//
// Strict where laxity lets two parsers disagree about where a message ends (request
// smuggling): Content-Length together with Transfer-Encoding, conflicting Content-Lengths,
// obsolete line folding, whitespace before a colon, bare CR or LF, invalid token characters,
// transfer codings other than chunked (501), versions other than 1.0/1.1 (505).
#pragma once

#include "tandem/detail/std_algorithm.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

namespace tandem::http {

struct header {
    std::string_view name;
    std::string_view value;
};

/// Parser limits. Exceeding one yields its status: 414 for the request line, 431 for the
/// head (request line + headers) or the header count, 413 for the body.
struct limits {
    std::size_t max_request_line = 8192;
    std::size_t max_head = 8192;
    std::size_t max_headers = 100;
    std::uint64_t max_body = 8u << 20;
};

enum class parse_state { complete, incomplete, error };

enum class body_framing : std::uint8_t {
    none,           // no body
    content_length, // exactly content_length bytes
    chunked,        // chunked transfer coding (then trailers)
    until_close,    // responses only: the body ends when the connection does
};

/// Case-insensitive ASCII comparison (header names, tokens).
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
        if (x != y) return false;
    }
    return true;
}

namespace detail {

/// tchar (RFC 9110 5.6.2): the characters of a token.
constexpr std::array<bool, 256> make_tchar_table() {
    std::array<bool, 256> t{};
    for (int c = '0'; c <= '9'; ++c) t[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
    return t;
}
inline constexpr std::array<bool, 256> tchar = make_tchar_table();

constexpr bool is_tchar(char c) noexcept { return tchar[static_cast<unsigned char>(c)]; }
/// field-vchar / SP / HTAB / obs-text: what a field value may contain.
constexpr bool is_field_char(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
}
/// What a request-target may contain (visible ASCII; no SP, no CTL, no obs-text).
constexpr bool is_target_char(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
}

/// The end of the run of field characters (is_field_char) in [pos, stop). Eight bytes at a
/// time where it can: a header value is most of a head's bytes.
constexpr std::size_t skip_field_chars(std::string_view in, std::size_t pos, std::size_t stop) noexcept {
    if (!std::is_constant_evaluated()) {
        constexpr std::uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
        for (; pos + 8 <= stop; pos += 8) {
            std::uint64_t x = 0;
            std::memcpy(&x, in.data() + pos, 8);
            // A byte below 0x20 (HTAB among them) or equal to 0x7f: bytes >= 0x80 (obs-text)
            // never look like either. HTAB is rare: its word is looked at a byte at a time.
            const std::uint64_t control = (x - ones * 0x20) & ~x & highs;
            const std::uint64_t y = x ^ (ones * 0x7f);
            const std::uint64_t del = (y - ones) & ~y & highs;
            if ((control | del) != 0) break;
        }
    }
    while (pos < stop && is_field_char(in[pos])) ++pos;
    return pos;
}

/// `name` (a token) equals `lower` (lowercase letters and '-') ignoring case. Setting bit 5
/// folds A-Z onto a-z; no other tchar folds onto a letter or '-'.
constexpr bool token_equals_lower(std::string_view name, std::string_view lower) noexcept {
    if (name.size() != lower.size()) return false;
    for (std::size_t i = 0; i < name.size(); ++i)
        if (static_cast<char>(name[i] | 0x20) != lower[i]) return false;
    return true;
}
constexpr bool is_token(std::string_view s) noexcept {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(c)) return false;
    return true;
}
constexpr std::string_view trim_ows(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// Calls fn(element) for each element of a comma-separated list (empty elements skipped).
template <class F>
constexpr void for_each_list_element(std::string_view list, F&& fn) {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        const std::string_view element = trim_ows(list.substr(0, comma));
        if (!element.empty()) fn(element);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
}

/// 1*DIGIT without overflow; false otherwise.
constexpr bool parse_decimal(std::string_view s, std::uint64_t& out) noexcept {
    if (s.empty() || s.size() > 19) return false;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    out = v;
    return true;
}

/// Finds the end of one line starting at `from`: the index of its CR (followed by LF).
/// Returns npos if incomplete; sets `bad` for a bare CR or LF.
constexpr std::size_t find_line_end(std::string_view in, std::size_t from, bool& bad) noexcept {
    for (std::size_t i = from; i < in.size(); ++i) {
        if (in[i] == '\r') {
            if (i + 1 == in.size()) return std::string_view::npos;
            if (in[i + 1] != '\n') {
                bad = true;
                return std::string_view::npos;
            }
            return i;
        }
        if (in[i] == '\n') {
            bad = true;
            return std::string_view::npos;
        }
    }
    return std::string_view::npos;
}

} // namespace detail

/// The outcome of parsing a head: complete (head_size bytes consumed), incomplete (read
/// more and call again with the whole buffer), or error (answer `status`, then close).
struct parse_result {
    parse_state state = parse_state::incomplete;
    std::size_t head_size = 0;
    int status = 0;
    std::string_view reason;

    static constexpr parse_result fail(int status, std::string_view reason) noexcept {
        return {parse_state::error, 0, status, reason};
    }
};

/// Fields common to requests and responses.
struct message_head {
    int version = 11; // 10 or 11
    std::span<const header> headers;
    body_framing framing = body_framing::none;
    std::uint64_t content_length = 0;
    bool keep_alive = true;

    /// The first header with this name (case-insensitive), or an empty view.
    // (Indexed loops here and below rather than range-for: span's iterators are then
    // compiled only by code that asks for them, not by every includer of this header.)
    std::string_view find(std::string_view name) const noexcept {
        for (std::size_t i = 0; i < headers.size(); ++i)
            if (iequals(headers[i].name, name)) return headers[i].value;
        return {};
    }
    bool has(std::string_view name) const noexcept {
        for (std::size_t i = 0; i < headers.size(); ++i)
            if (iequals(headers[i].name, name)) return true;
        return false;
    }
};

struct request_head : message_head {
    std::string_view method;
    std::string_view target;
    std::string_view path;  // target without the query (origin-form), or the path of an absolute-form
    std::string_view query; // after '?', without it
    bool expect_continue = false;
};

struct response_head : message_head {
    int status = 0;
    std::string_view reason;
};

namespace detail {

/// Parses header lines from `pos` up to and including the empty line. Returns the result;
/// fills `count` headers into storage.
constexpr parse_result parse_header_lines(std::string_view in, std::size_t pos, std::span<header> storage,
                                          std::size_t& count, const limits& lim) noexcept {
    count = 0;
    for (;;) {
        bool bad = false;
        const std::size_t end = find_line_end(in, pos, bad);
        if (bad) return parse_result::fail(400, "bare CR or LF in the head");
        if (end == std::string_view::npos) {
            if (in.size() > lim.max_head) return parse_result::fail(431, "request head too large");
            return {};
        }
        if (end + 2 > lim.max_head) return parse_result::fail(431, "request head too large");
        if (end == pos) return {parse_state::complete, end + 2, 0, {}}; // the empty line
        const std::string_view line = in.substr(pos, end - pos);
        if (line.front() == ' ' || line.front() == '\t') return parse_result::fail(400, "obsolete line folding");
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos) return parse_result::fail(400, "header line without a colon");
        const std::string_view name = line.substr(0, colon);
        if (!is_token(name)) {
            if (!name.empty() && (name.back() == ' ' || name.back() == '\t'))
                return parse_result::fail(400, "whitespace before a header colon");
            return parse_result::fail(400, "invalid header name");
        }
        const std::string_view value = trim_ows(line.substr(colon + 1));
        for (char c : value)
            if (!is_field_char(c)) return parse_result::fail(400, "invalid character in a header value");
        if (count == lim.max_headers || count == storage.size()) return parse_result::fail(431, "too many headers");
        storage[count++] = header{name, value};
        pos = end + 2;
    }
}

/// Content-Length / Transfer-Encoding / Connection, shared by requests and responses.
/// `is_request` decides what a message with neither means.
constexpr parse_result decide_framing(message_head& m, bool is_request, const limits& lim) noexcept {
    bool have_length = false, have_te = false, chunked_last = false, chunked_seen = false;
    bool close = false, keep_alive = false;
    std::uint64_t length = 0;
    bool bad_length = false, unknown_coding = false, chunked_twice = false, empty_coding = false;
    for (std::size_t i = 0; i < m.headers.size(); ++i) {
        const header& h = m.headers[i];
        if (iequals(h.name, "content-length")) {
            for_each_list_element(h.value, [&](std::string_view v) {
                std::uint64_t n = 0;
                if (!parse_decimal(v, n)) {
                    bad_length = true;
                } else if (have_length && n != length) {
                    bad_length = true; // conflicting duplicates
                } else {
                    length = n;
                    have_length = true;
                }
            });
            // "" or "," says no length: a recipient that reads it as 0 or as absent would
            // frame the message differently from one that refuses it.
            bool any = false;
            for_each_list_element(h.value, [&](std::string_view) { any = true; });
            if (!any) bad_length = true;
        } else if (iequals(h.name, "transfer-encoding")) {
            have_te = true;
            bool any = false;
            for_each_list_element(h.value, [&](std::string_view) { any = true; });
            if (!any) empty_coding = true; // not chunked, and not nothing: refuse it
            for_each_list_element(h.value, [&](std::string_view coding) {
                if (chunked_last) chunked_twice = true; // chunked must be last, and once
                if (iequals(coding, "chunked")) {
                    if (chunked_seen) chunked_twice = true;
                    chunked_seen = chunked_last = true;
                } else {
                    unknown_coding = true;
                    chunked_last = false;
                }
            });
        } else if (iequals(h.name, "connection")) {
            for_each_list_element(h.value, [&](std::string_view option) {
                if (iequals(option, "close")) close = true;
                if (iequals(option, "keep-alive")) keep_alive = true;
            });
        }
    }
    if (bad_length) return parse_result::fail(400, "invalid or conflicting Content-Length");
    if (have_te) {
        if (have_length) return parse_result::fail(400, "both Content-Length and Transfer-Encoding");
        if (m.version == 10) return parse_result::fail(400, "Transfer-Encoding in an HTTP/1.0 message");
        if (chunked_twice) return parse_result::fail(400, "chunked is not the final transfer coding");
        if (empty_coding) return parse_result::fail(400, "an empty Transfer-Encoding");
        if (unknown_coding) {
            if (is_request && chunked_last) return parse_result::fail(501, "unsupported transfer coding");
            if (is_request) return parse_result::fail(400, "chunked is not the final transfer coding");
            if (!chunked_last) {
                m.framing = body_framing::until_close; // a response may end at close
            } else {
                return parse_result::fail(501, "unsupported transfer coding");
            }
        } else {
            m.framing = body_framing::chunked;
        }
    } else if (have_length) {
        if (length > lim.max_body) return parse_result::fail(413, "body too large");
        m.content_length = length;
        m.framing = length ? body_framing::content_length : body_framing::none;
    } else {
        m.framing = is_request ? body_framing::none : body_framing::until_close;
    }
    m.keep_alive = m.version == 11 ? !close : (keep_alive && !close);
    if (m.framing == body_framing::until_close) m.keep_alive = false;
    return {parse_state::complete, 0, 0, {}};
}

} // namespace detail

/// Parses a request head incrementally, in one pass, and rejects it at the first byte that
/// cannot continue a valid request line or header section (RFC 9112 2-5): a TLS ClientHello,
/// a bad method or header-name character, a malformed version, a space before a header name
/// or colon, a non-digit in Content-Length, a bare CR or LF, or a limit crossed. Each byte is
/// looked at once however the head arrives (picohttpparser's `last_len`), so a slow client
/// costs no re-scanning, and the parts of the head are recorded as they pass: a complete head
/// is not read again. Pass the whole buffer from the request's first byte on every call.
class head_scanner {
public:
    /// Finds the end of the head: complete (head_size = bytes through the empty line),
    /// incomplete, or error(status). Records nothing. Once complete or refused, later calls
    /// give the same answer (bytes after the head are the next request's, not this one's).
    constexpr parse_result scan(std::string_view in, const limits& lim) noexcept {
        if (m_state == state::done) return {parse_state::complete, m_pos, 0, {}};
        const parse_result r = run(in, lim, nullptr, {});
        if (r.state == parse_state::complete) m_state = state::done;
        return r;
    }

    /// As scan(), and a complete head is parsed: `out` holds views into `in` (headers into
    /// `storage`, which should have `lim.max_headers` entries), and the rules that need the
    /// whole head are applied (target form, one Host, framing: 400/501/505). Pass the same
    /// `out` and `storage` on every call; between calls the bytes may have moved (a buffer
    /// compacted or grown), not changed. `out` is complete only when the head is; a head
    /// refused after its request line (a bad version, no Host) still leaves the method and
    /// target there, so the refusal can be logged. Once complete or refused, later calls give
    /// the same answer. Use one scanner for scan() or for parse(), not both: after scan()
    /// completes, parse() records nothing.
    constexpr parse_result parse(std::string_view in, request_head& out, std::span<header> storage,
                                 const limits& lim) noexcept {
        if (m_state == state::done) return {parse_state::complete, m_pos, 0, {}};
        if (m_state == state::refused) return parse_result::fail(m_status, m_reason);
        if (m_count != 0 && in.data() != m_base) rebase(in.data(), storage);
        const parse_result scanned = run(in, lim, &out, storage);
        m_base = in.data();
        if (scanned.state != parse_state::complete) return scanned;
        const parse_result r = finish(in, out, storage, lim);
        if (r.state == parse_state::error) {
            m_state = state::refused;
            m_status = r.status;
            m_reason = r.reason;
            return r;
        }
        m_state = state::done;
        return scanned;
    }

    /// True once the method is known to be HEAD (so an early error response has no body).
    constexpr bool head_method() const noexcept { return m_head_method; }
    /// Bytes looked at so far.
    constexpr std::size_t scanned() const noexcept { return m_pos; }
    constexpr void reset() noexcept { *this = head_scanner{}; }

private:
    enum class state : std::uint8_t {
        lead, lead_lf, method, target, version, line_lf, field_start, name, value, final_lf, done, refused
    };
    // Header names whose values decide something about the whole head (finish()).
    enum : std::uint8_t { seen_length = 1, seen_coding = 2, seen_connection = 4, seen_expect = 8 };

    /// The scanner's state machine; `out` null: find the end only, else record each header
    /// into storage as its line ends.
    constexpr parse_result run(std::string_view in, const limits& lim, request_head* out,
                               std::span<header> storage) noexcept {
        // A local position, stored back on the way out: a member would be written at every
        // byte, since the compiler must assume `in`'s chars may alias it.
        std::size_t pos = m_pos;
        struct store_back {
            std::size_t& to;
            const std::size_t& from;
            constexpr ~store_back() { to = from; }
        } keep{m_pos, pos};
        while (pos < in.size()) {
            // The bytes this state may look at: limits are checked per run, not per byte.
            std::size_t stop = in.size();
            if (m_in_fields) {
                if (pos >= lim.max_head) return parse_result::fail(431, "request head too large");
                stop = std::min(stop, lim.max_head);
            } else if (m_state == state::method || m_state == state::target || m_state == state::version) {
                // The line may hold max_request_line bytes; only its CR may come after them.
                const std::size_t used = pos - m_start;
                if (used > lim.max_request_line ||
                    (used == lim.max_request_line && !(m_state == state::version && in[pos] == '\r')))
                    return parse_result::fail(414, "request line too long");
                stop = std::min(stop, m_start + lim.max_request_line + (m_state == state::version ? 1 : 0));
            }
            // A state that ends inside `stop` falls through into the next one where that one's
            // run may use the same `stop` (the request line's parts, a header's name and
            // value); a head that arrives whole then takes three trips round this loop.
            switch (m_state) {
            case state::lead_lf:
                if (in[pos] != '\n') return parse_result::fail(400, "bare CR or LF in the request line");
                m_state = state::lead;
                ++pos;
                break;
            case state::lead: // RFC 9112 2.2: empty lines before the request line are ignored
                if (in[pos] == '\r' && pos < 8) {
                    m_state = state::lead_lf;
                    ++pos;
                    break;
                }
                m_start = pos;
                m_state = state::method;
                stop = std::min(stop, m_start + lim.max_request_line);
                [[fallthrough]];
            case state::method: {
                while (pos < stop && detail::is_tchar(in[pos])) ++pos;
                if (pos == stop) break;
                const char c = in[pos];
                if (c != ' ') return parse_result::fail(400, c == '\r' || c == '\n' ? "malformed request line" : "invalid method");
                if (pos == m_start) return parse_result::fail(400, "malformed request line");
                m_head_method = in.substr(m_start, pos - m_start) == "HEAD";
                m_mark = ++pos;
                m_state = state::target;
            }
                [[fallthrough]];
            case state::target: {
                while (pos < stop && detail::is_target_char(in[pos])) ++pos;
                if (pos == stop) break;
                const char c = in[pos];
                if (c != ' ')
                    return parse_result::fail(400, c == '\r' || c == '\n' ? "malformed request line"
                                                                          : "invalid character in the request target");
                if (pos == m_mark) return parse_result::fail(400, "malformed request line");
                m_target = m_mark;
                m_mark = m_version = ++pos;
                m_state = state::version;
            }
                // With the line's `stop`, not the version's one byte more (its CR): at the
                // limit the loop comes round and the top decides.
                [[fallthrough]];
            case state::version: {
                constexpr std::string_view shape = "HTTP/d.d";
                // The usual "HTTP/1.1\r\n" whole: one comparison, not a byte at a time.
                if (pos == m_version && stop - pos >= 9 && in.substr(pos, 7) == "HTTP/1." && in[pos + 7] >= '0' &&
                    in[pos + 7] <= '9' && in[pos + 8] == '\r') {
                    pos += 9;
                    m_state = state::line_lf;
                    if (pos < in.size() && in[pos] == '\n') {
                        ++pos;
                        m_state = state::field_start;
                        m_in_fields = true;
                    }
                    break;
                }
                for (; pos < stop; ++pos) {
                    const char c = in[pos];
                    const std::size_t i = pos - m_mark;
                    if (i == shape.size()) {
                        if (c == '\n') return parse_result::fail(400, "bare CR or LF in the head");
                        if (c != '\r') return parse_result::fail(400, "malformed HTTP version");
                        m_state = state::line_lf;
                        ++pos;
                        break;
                    }
                    if (shape[i] == 'd' ? (c < '0' || c > '9') : c != shape[i]) {
                        if (c == '\n') return parse_result::fail(400, "bare CR or LF in the head");
                        return parse_result::fail(400, "malformed HTTP version");
                    }
                }
                break;
            }
            case state::line_lf:
                if (in[pos] != '\n') return parse_result::fail(400, "bare CR or LF in the head");
                m_state = state::field_start;
                m_in_fields = true;
                ++pos;
                break;
            case state::field_start: {
                const char c = in[pos];
                if (c == '\r') {
                    m_state = state::final_lf;
                    ++pos;
                    if (pos < stop && in[pos] == '\n') return {parse_state::complete, ++pos, 0, {}};
                    break;
                }
                if (c == ' ' || c == '\t')
                    return parse_result::fail(400, m_fields == 0 ? "whitespace before the first header"
                                                                 : "obsolete line folding");
                if (!detail::is_tchar(c))
                    return parse_result::fail(400, c == '\n' ? "bare CR or LF in the head" : "invalid header name");
                if (++m_fields > lim.max_headers || (out && m_fields > storage.size()))
                    return parse_result::fail(431, "too many headers");
                m_mark = pos++;
                m_state = state::name;
            }
                [[fallthrough]]; // the name's first byte is checked: on to the rest of it
            case state::name: {
                while (pos < stop && detail::is_tchar(in[pos])) ++pos;
                if (pos == stop) break;
                const char c = in[pos];
                if (c == ' ' || c == '\t') return parse_result::fail(400, "whitespace before a header colon");
                if (c == '\r' || c == '\n') return parse_result::fail(400, "header line without a colon");
                if (c != ':') return parse_result::fail(400, "invalid header name");
                classify(in.substr(m_mark, pos - m_mark));
                m_colon = pos;
                m_state = state::value;
                ++pos;
            }
                [[fallthrough]];
            case state::value: {
                if (m_length_field) { // 1*DIGIT, in a list with OWS: nothing else can be valid
                    while (pos < stop) {
                        const char c = in[pos];
                        if (!((c >= '0' && c <= '9') || c == ' ' || c == '\t' || c == ',')) break;
                        ++pos;
                    }
                } else {
                    pos = detail::skip_field_chars(in, pos, stop); // CR is not a field character
                }
                if (pos == stop) break;
                const char c = in[pos];
                if (c == '\r') {
                    if (out) {
                        storage[m_count++] = header{in.substr(m_mark, m_colon - m_mark),
                                                    detail::trim_ows(in.substr(m_colon + 1, pos - m_colon - 1))};
                    }
                    m_state = state::line_lf;
                    ++pos;
                    if (pos < stop && in[pos] == '\n') {
                        ++pos;
                        m_state = state::field_start;
                    }
                    break;
                }
                if (c == '\n') return parse_result::fail(400, "bare CR or LF in the head");
                if (m_length_field && detail::is_field_char(c))
                    return parse_result::fail(400, "invalid or conflicting Content-Length");
                return parse_result::fail(400, "invalid character in a header value");
            }
            case state::final_lf:
                if (in[pos] != '\n') return parse_result::fail(400, "bare CR or LF in the head");
                ++pos;
                return {parse_state::complete, pos, 0, {}};
            case state::done:
            case state::refused:
                return {}; // parse() answers these before running
            }
        }
        return {};
    }

    /// Notes a header name that finish() must look at (names compared once, here).
    constexpr void classify(std::string_view name) noexcept {
        m_length_field = false;
        using detail::token_equals_lower;
        switch (name.size()) {
        case 4:
            if (token_equals_lower(name, "host") && m_hosts < 2) ++m_hosts;
            break;
        case 6:
            if (token_equals_lower(name, "expect")) m_seen |= seen_expect;
            break;
        case 10:
            if (token_equals_lower(name, "connection")) m_seen |= seen_connection;
            break;
        case 14:
            m_length_field = token_equals_lower(name, "content-length");
            if (m_length_field) m_seen |= seen_length;
            break;
        case 17:
            if (token_equals_lower(name, "transfer-encoding")) m_seen |= seen_coding;
            break;
        default: break;
        }
    }

    /// The headers recorded so far point into bytes that now start at `base`.
    constexpr void rebase(const char* base, std::span<header> storage) const noexcept {
        auto moved = [&](std::string_view v) {
            // The old bytes may be freed: their addresses are compared as numbers.
            std::size_t offset = 0;
            if (std::is_constant_evaluated())
                offset = static_cast<std::size_t>(v.data() - m_base);
            else
                offset = reinterpret_cast<std::uintptr_t>(v.data()) - reinterpret_cast<std::uintptr_t>(m_base);
            return std::string_view(base + offset, v.size());
        };
        for (std::size_t i = 0; i < m_count; ++i) {
            header& h = storage[i];
            h.name = moved(h.name);
            h.value = moved(h.value);
        }
    }

    /// The rules that need the whole head, on the parts recorded while scanning.
    constexpr parse_result finish(std::string_view in, request_head& out, std::span<header> storage,
                                  const limits& lim) const noexcept {
        out = request_head{};
        out.method = in.substr(m_start, m_target - 1 - m_start);
        out.target = in.substr(m_target, m_version - 1 - m_target);
        const std::string_view version = in.substr(m_version, 8); // "HTTP/d.d", checked by the scanner
        if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
            return parse_result::fail(505, "HTTP version not supported");
        out.version = version[7] == '1' ? 11 : 10;

        // Target forms: origin ("/p?q"), absolute ("http://h/p?q"), asterisk ("*", OPTIONS only).
        std::string_view path = out.target;
        if (path.front() != '/') {
            if (path == "*") {
                if (out.method != "OPTIONS") return parse_result::fail(400, "asterisk-form outside OPTIONS");
            } else if (const std::size_t scheme = path.find("://");
                       scheme != std::string_view::npos &&
                       (iequals(path.substr(0, scheme), "http") || iequals(path.substr(0, scheme), "https"))) {
                // The path starts at the first '/' or '?' after the authority ("http://h?q" has
                // path "/" and query "q").
                const std::size_t slash = path.find_first_of("/?", scheme + 3);
                if (slash == scheme + 3 || path.size() == scheme + 3)
                    return parse_result::fail(400, "absolute-form without an authority");
                if (slash == std::string_view::npos) {
                    // An empty path is "/", but for OPTIONS the whole server (RFC 9112 §3.2.4: the
                    // last proxy forwards "OPTIONS http://h" as "OPTIONS *").
                    path = out.method == "OPTIONS" ? std::string_view("*") : std::string_view("/");
                } else if (path[slash] == '?') {
                    out.query = path.substr(slash + 1);
                    path = "/";
                } else {
                    path = path.substr(slash);
                }
            } else if (out.method == "CONNECT") {
                return parse_result::fail(501, "CONNECT is not supported");
            } else {
                return parse_result::fail(400, "invalid request target");
            }
        }
        if (const std::size_t q = path.find('?'); q != std::string_view::npos) {
            out.query = path.substr(q + 1);
            path = path.substr(0, q);
        }
        out.path = path;
        out.headers = storage.first(m_count);

        // HTTP/1.1 requests carry exactly one Host (RFC 9112 3.2).
        if (m_hosts > 1 || (out.version == 11 && m_hosts == 0)) return parse_result::fail(400, "missing or repeated Host");

        if (m_seen & (seen_length | seen_coding | seen_connection)) {
            const parse_result framing = detail::decide_framing(out, true, lim);
            if (framing.state == parse_state::error) return framing;
        } else { // what decide_framing says of a request without those headers
            out.framing = body_framing::none;
            out.keep_alive = out.version == 11;
        }
        if (out.version == 11 && (m_seen & seen_expect)) {
            for (std::size_t i = 0; i < m_count; ++i)
                if (iequals(storage[i].name, "expect") && iequals(storage[i].value, "100-continue"))
                    out.expect_continue = true;
        }
        return {parse_state::complete, m_pos, 0, {}};
    }

    std::size_t m_pos = 0;
    std::size_t m_start = 0;  // the request line's first byte
    std::size_t m_mark = 0;   // the current part's first byte
    std::size_t m_target = 0; // the target's first byte
    std::size_t m_version = 0; // the version's first byte
    std::size_t m_colon = 0;  // the current header's colon
    std::size_t m_fields = 0;
    std::size_t m_count = 0;  // headers recorded into storage (parse)
    const char* m_base = nullptr; // where `in` started when they were recorded
    std::string_view m_reason; // refused: why
    int m_status = 0;
    state m_state = state::lead;
    std::uint8_t m_hosts = 0; // Host fields seen (up to 2)
    std::uint8_t m_seen = 0;  // seen_* flags
    bool m_head_method = false;
    bool m_length_field = false;
    bool m_in_fields = false;
};

/// Parses a request head at the start of `in`, in one pass (head_scanner::parse). `storage`
/// receives the headers (give it at least `lim.max_headers` entries); `out` holds views into
/// `in` and `storage`. An error is reported as soon as `in` holds a byte that cannot continue
/// a valid head.
constexpr parse_result parse_request(std::string_view in, request_head& out, std::span<header> storage,
                                     const limits& lim = {}) noexcept {
    out = request_head{};
    head_scanner scanner;
    return scanner.parse(in, out, storage, lim);
}

/// Parses a response head. A response to HEAD, and 1xx/204/304 responses, have no body
/// whatever their headers say: pass `request_was_head` so the framing reflects it.
constexpr parse_result parse_response(std::string_view in, response_head& out, std::span<header> storage,
                                      bool request_was_head = false, const limits& lim = {}) noexcept {
    out = response_head{};
    bool bad = false;
    const std::size_t end = detail::find_line_end(in, 0, bad);
    if (bad) return parse_result::fail(400, "bare CR or LF in the status line");
    if (end == std::string_view::npos) {
        if (in.size() > lim.max_head) return parse_result::fail(431, "status line too long");
        return {};
    }
    const std::string_view line = in.substr(0, end);
    // HTTP/1.x SP 3DIGIT SP reason
    if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
        (line.size() > 12 && line[12] != ' '))
        return parse_result::fail(400, "malformed status line");
    int status = 0;
    for (std::size_t i = 9; i < 12; ++i) {
        if (line[i] < '0' || line[i] > '9') return parse_result::fail(400, "malformed status code");
        status = status * 10 + (line[i] - '0');
    }
    if (status < 100) return parse_result::fail(400, "malformed status code");
    out.version = line[7] == '1' ? 11 : 10;
    out.status = status;
    out.reason = line.size() > 13 ? line.substr(13) : std::string_view{};

    std::size_t count = 0;
    parse_result r = detail::parse_header_lines(in, end + 2, storage, count, lim);
    if (r.state != parse_state::complete) return r;
    out.headers = storage.first(count);
    limits body_limits = lim;
    body_limits.max_body = UINT64_MAX; // the client decides what it accepts
    const parse_result framing = detail::decide_framing(out, false, body_limits);
    if (framing.state == parse_state::error) return framing;
    if (request_was_head || status < 200 || status == 204 || status == 304) {
        out.framing = body_framing::none;
        out.content_length = 0;
    }
    return r;
}

/// Decodes a chunked body incrementally (RFC 9112 7.1), trailers included (validated,
/// then ignored). Feed it the bytes after the head; it reports data through a callback
/// and how many input bytes it consumed.
class chunked_decoder {
public:
    struct result {
        parse_state state = parse_state::incomplete; // complete: the last chunk and trailers are in
        std::size_t consumed = 0;
        int status = 0;
        std::string_view reason;
    };

    explicit constexpr chunked_decoder(std::uint64_t max_body = UINT64_MAX) noexcept : m_max_body(max_body) {}

    /// Consumes as much of `in` as it can; calls on_data(std::string_view) for body bytes.
    template <class OnData>
    constexpr result decode(std::string_view in, OnData&& on_data) noexcept {
        std::size_t pos = 0;
        while (pos < in.size()) {
            switch (m_state) {
            case state::size: {
                const char c = in[pos];
                const int digit = hex_value(c);
                if (digit >= 0) {
                    if (m_digits == 16) return fail(pos, 400, "chunk size too large");
                    m_size = m_size * 16 + static_cast<std::uint64_t>(digit);
                    ++m_digits;
                    ++pos;
                    break;
                }
                if (m_digits == 0) return fail(pos, 400, "malformed chunk size");
                m_state = state::ext_after_value;
                break; // the extension states take it from here, this byte included
            }
            // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] ), ext-value =
            // token / quoted-string (RFC 9112 7.1.1). Exactly this: parsers that disagree
            // about where a chunk line ends are a request-smuggling vector.
            case state::ext_after_value:
            case state::ext_before_semicolon:
            case state::ext_before_name:
            case state::ext_name:
            case state::ext_after_name:
            case state::ext_before_value:
            case state::ext_token_value:
            case state::ext_quoted:
            case state::ext_quoted_pair: {
                const char c = in[pos];
                if (++m_extension > 1024) return fail(pos, 400, "chunk extension too long");
                if (!step_extension(c)) return fail(pos, 400, "invalid chunk extension");
                ++pos;
                break;
            }
            case state::size_lf:
                if (in[pos] != '\n') return fail(pos, 400, "bare CR after a chunk size");
                ++pos;
                if (m_size == 0) {
                    m_state = state::trailer_start;
                } else {
                    if (m_size > m_max_body - m_total) return fail(pos, 413, "body too large");
                    m_total += m_size;
                    m_state = state::data;
                }
                break;
            case state::data: {
                const std::size_t n = static_cast<std::size_t>(
                    m_size < static_cast<std::uint64_t>(in.size() - pos) ? m_size : in.size() - pos);
                on_data(in.substr(pos, n));
                pos += n;
                m_size -= n;
                if (m_size == 0) m_state = state::data_cr;
                break;
            }
            case state::data_cr:
                if (in[pos] != '\r') return fail(pos, 400, "chunk data longer than its size");
                m_state = state::data_lf;
                ++pos;
                break;
            case state::data_lf:
                if (in[pos] != '\n') return fail(pos, 400, "bare CR after chunk data");
                ++pos;
                m_state = state::size;
                m_size = 0;
                m_digits = 0;
                m_extension = 0;
                break;
            case state::trailer_start:
                if (in[pos] == '\r') {
                    m_state = state::final_lf;
                    ++pos;
                } else {
                    if (in[pos] == ' ' || in[pos] == '\t') return fail(pos, 400, "obsolete line folding in trailers");
                    m_state = state::trailer_line;
                    m_line = 0;
                    m_colon = false;
                }
                break;
            case state::trailer_line: {
                const char c = in[pos];
                if (c == '\r') {
                    if (!m_colon) return fail(pos, 400, "trailer line without a colon");
                    m_state = state::trailer_lf;
                } else if (!detail::is_field_char(c) || (!m_colon && c != ':' && !detail::is_tchar(c))) {
                    return fail(pos, 400, "invalid trailer");
                } else if (c == ':' && !m_colon) {
                    if (m_line == 0) return fail(pos, 400, "invalid trailer");
                    m_colon = true;
                } else if (m_trailer_bytes + m_line > 8192) {
                    return fail(pos, 431, "trailers too large");
                }
                ++m_line;
                ++pos;
                break;
            }
            case state::trailer_lf:
                if (in[pos] != '\n') return fail(pos, 400, "bare CR in trailers");
                m_trailer_bytes += m_line + 2;
                ++pos;
                m_state = state::trailer_start;
                break;
            case state::final_lf:
                if (in[pos] != '\n') return fail(pos, 400, "bare CR after the last chunk");
                ++pos;
                m_state = state::done;
                return {parse_state::complete, pos, 0, {}};
            case state::done:
                return {parse_state::complete, pos, 0, {}};
            }
        }
        if (m_state == state::done) return {parse_state::complete, pos, 0, {}};
        return {parse_state::incomplete, pos, 0, {}};
    }

    std::uint64_t body_size() const noexcept { return m_total; }

private:
    enum class state : std::uint8_t {
        size, ext_after_value, ext_before_semicolon, ext_before_name, ext_name, ext_after_name, ext_before_value, ext_token_value,
        ext_quoted, ext_quoted_pair, size_lf, data, data_cr, data_lf, trailer_start, trailer_line, trailer_lf,
        final_lf, done
    };
    /// One byte of a chunk line after the size; false if it cannot continue the grammar.
    constexpr bool step_extension(char c) noexcept {
        const bool ws = c == ' ' || c == '\t';
        const auto u = static_cast<unsigned char>(c);
        switch (m_state) {
        case state::ext_after_value: // right after the size or a value: CRLF, ';' or BWS
            if (c == ';') return go(state::ext_before_name);
            if (ws) return go(state::ext_before_semicolon);
            return c == '\r' && go(state::size_lf);
        case state::ext_before_semicolon: // BWS must lead to ';' (no trailing whitespace)
            if (ws) return true;
            return c == ';' && go(state::ext_before_name);
        case state::ext_before_name:
            if (ws) return true;
            return detail::is_tchar(c) && go(state::ext_name);
        case state::ext_name:
            if (detail::is_tchar(c)) return true;
            if (ws) return go(state::ext_after_name);
            if (c == '=') return go(state::ext_before_value);
            if (c == ';') return go(state::ext_before_name);
            return c == '\r' && go(state::size_lf);
        case state::ext_after_name: // BWS must lead to '=' or ';'
            if (ws) return true;
            if (c == '=') return go(state::ext_before_value);
            return c == ';' && go(state::ext_before_name);
        case state::ext_before_value:
            if (ws) return true;
            if (c == '"') return go(state::ext_quoted);
            return detail::is_tchar(c) && go(state::ext_token_value);
        case state::ext_token_value:
            if (detail::is_tchar(c)) return true;
            if (ws) return go(state::ext_before_semicolon);
            if (c == ';') return go(state::ext_before_name);
            return c == '\r' && go(state::size_lf);
        case state::ext_quoted: // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
            if (c == '"') return go(state::ext_after_value);
            if (c == '\\') return go(state::ext_quoted_pair);
            return ws || (u >= 0x21 && u != 0x7f);
        case state::ext_quoted_pair: // "\" ( HTAB / SP / VCHAR / obs-text )
            return (ws || (u >= 0x21 && u != 0x7f)) && go(state::ext_quoted);
        default:
            return false;
        }
    }
    constexpr bool go(state next) noexcept {
        m_state = next;
        return true;
    }
    static constexpr int hex_value(char c) noexcept {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    }
    static constexpr result fail(std::size_t pos, int status, std::string_view reason) noexcept {
        return {parse_state::error, pos, status, reason};
    }

    std::uint64_t m_max_body;
    std::uint64_t m_size = 0;
    std::uint64_t m_total = 0;
    std::size_t m_extension = 0;
    std::size_t m_line = 0;
    std::size_t m_trailer_bytes = 0;
    unsigned m_digits = 0;
    bool m_colon = false;
    state m_state = state::size;
};

} // namespace tandem::http
