// tandem — a small JSON writer for handlers: objects, arrays, strings (escaped), numbers,
// booleans and null, with the commas placed for you. A handler that echoes a path segment or
// a query value cannot emit invalid JSON through it.
//
//   http::json j;
//   j.object().field("message", "Hello").field("n", 42).key("tags").array().value("a").end().end();
//   co_return http::response::json(j.str());
//
// Layer: protocols, pure (no I/O). Misuse (a value where a key is due, end() with nothing
// open, str() with something open) throws std::logic_error.
#pragma once

#include "tandem/fwd.hpp"
#include "tandem/detail/dependent.hpp"

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tandem::http {

namespace detail {
/// The length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no overlongs,
/// no surrogates, nothing past U+10FFFF), or 0 if it is not one.
constexpr std::size_t utf8_sequence(std::string_view s) noexcept {
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    const unsigned char c = b(0);
    std::size_t n;
    unsigned char lo = 0x80, hi = 0xbf; // the range of the second byte
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else return 0;
    if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
    for (std::size_t i = 2; i < n; ++i)
        if (b(i) < 0x80 || b(i) > 0xbf) return 0;
    return n;
}
} // namespace detail

/// Appends `text` to `out` as a JSON string literal (quotes included): `"` `\` and control
/// characters are escaped; well-formed UTF-8 passes as it is, and each byte that is not part
/// of one (a percent-decoded %ff) becomes U+FFFD, so the output is valid JSON (RFC 8259 8.1).
/// (A template, so that only a caller compiles it: detail/dependent.hpp.)
template <class Deferred = void>
inline void append_json_string(std::string& to, std::string_view text) {
    tandem::detail::dependent_t<std::string, Deferred>& out = to;
    out += '"';
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char ch = text[i];
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x80) {
            const std::size_t n = detail::utf8_sequence(text.substr(i));
            if (n == 0) {
                out += "\xef\xbf\xbd";
            } else {
                out.append(text.substr(i, n));
                i += n - 1;
            }
            continue;
        }
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char esc[8];
                std::snprintf(esc, sizeof esc, "\\u%04x", c);
                out += esc;
            } else {
                out += ch;
            }
        }
    }
    out += '"';
}

/// The writer: a class template's one instantiation behind an alias, so that a translation
/// unit that writes no JSON compiles none of its bodies (README, "Headers").
// (declared, with the alias tandem::http::json, in fwd.hpp)

template <class Deferred>
class basic_json {
public:
    basic_json& object() { return open('{'); }
    basic_json& array() { return open('['); }
    /// Closes the innermost open object or array.
    basic_json& end() {
        if (m_open.empty() || m_key_due_value) throw std::logic_error("tandem::http::json: nothing to end");
        m_out += m_open.back() == '{' ? '}' : ']';
        m_open.pop_back();
        m_first = false;
        return *this;
    }
    /// The next member's name (inside an object).
    basic_json& key(std::string_view name) {
        if (m_open.empty() || m_open.back() != '{' || m_key_due_value)
            throw std::logic_error("tandem::http::json: a key outside an object");
        comma();
        append_json_string(m_out, name);
        m_out += ':';
        m_key_due_value = true;
        return *this;
    }
    basic_json& value(std::string_view s) {
        before_value();
        append_json_string(m_out, s);
        return *this;
    }
    basic_json& value(const char* s) { return value(std::string_view(s)); }
    basic_json& value(const std::string& s) { return value(std::string_view(s)); }
    basic_json& value(bool b) {
        before_value();
        m_out += b ? "true" : "false";
        return *this;
    }
    basic_json& value(std::nullptr_t) {
        before_value();
        m_out += "null";
        return *this;
    }
    template <class Number>
        requires(std::is_arithmetic_v<Number> && !std::is_same_v<Number, bool> && !std::is_same_v<Number, char>)
    basic_json& value(Number n) {
        before_value();
        if constexpr (std::is_floating_point_v<Number>) {
            // JSON has no NaN or infinity; n - n is 0 for every finite n and NaN for the rest (no
            // <cmath> for includers to compile, bench/README.md "Include cost").
            if (!(n - n == 0)) {
                m_out += "null";
                return *this;
            }
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.17g", static_cast<double>(n));
            m_out += buf;
        } else {
            m_out += std::to_string(n);
        }
        return *this;
    }
    /// key(name).value(v) in one call.
    template <class T>
    basic_json& field(std::string_view name, const T& v) {
        key(name);
        return value(v);
    }

    /// The text; everything opened must have been ended.
    const std::string& str() const {
        if (!m_open.empty() || m_key_due_value) throw std::logic_error("tandem::http::json: unfinished");
        return m_out;
    }

private:
    basic_json& open(char bracket) {
        before_value();
        m_out += bracket;
        m_open.push_back(bracket);
        m_first = true;
        return *this;
    }
    void comma() {
        if (!m_first) m_out += ',';
        m_first = false;
    }
    void before_value() {
        if (m_key_due_value) {
            m_key_due_value = false;
            return;
        }
        if (!m_open.empty() && m_open.back() == '{') throw std::logic_error("tandem::http::json: a value where a key is due");
        if (m_open.empty() && !m_out.empty()) throw std::logic_error("tandem::http::json: two top-level values");
        comma();
    }

    std::string m_out;
    tandem::detail::dependent_t<std::vector<char>, Deferred> m_open; // detail/dependent.hpp says why
    bool m_first = true;
    bool m_key_due_value = false;
};

} // namespace tandem::http
