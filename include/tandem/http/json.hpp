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

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tandem::http {

/// Appends `text` to `out` as a JSON string literal (quotes included): `"` `\` and control
/// characters are escaped; other bytes (UTF-8) pass as they are.
inline void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
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

class json {
public:
    json& object() { return open('{'); }
    json& array() { return open('['); }
    /// Closes the innermost open object or array.
    json& end() {
        if (m_open.empty() || m_key_due_value) throw std::logic_error("tandem::http::json: nothing to end");
        m_out += m_open.back() == '{' ? '}' : ']';
        m_open.pop_back();
        m_first = false;
        return *this;
    }
    /// The next member's name (inside an object).
    json& key(std::string_view name) {
        if (m_open.empty() || m_open.back() != '{' || m_key_due_value)
            throw std::logic_error("tandem::http::json: a key outside an object");
        comma();
        append_json_string(m_out, name);
        m_out += ':';
        m_key_due_value = true;
        return *this;
    }
    json& value(std::string_view s) {
        before_value();
        append_json_string(m_out, s);
        return *this;
    }
    json& value(const char* s) { return value(std::string_view(s)); }
    json& value(const std::string& s) { return value(std::string_view(s)); }
    json& value(bool b) {
        before_value();
        m_out += b ? "true" : "false";
        return *this;
    }
    json& value(std::nullptr_t) {
        before_value();
        m_out += "null";
        return *this;
    }
    template <class Number>
        requires(std::is_arithmetic_v<Number> && !std::is_same_v<Number, bool> && !std::is_same_v<Number, char>)
    json& value(Number n) {
        before_value();
        if constexpr (std::is_floating_point_v<Number>) {
            if (!std::isfinite(n)) { // JSON has no NaN or infinity
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
    json& field(std::string_view name, const T& v) {
        key(name);
        return value(v);
    }

    /// The text; everything opened must have been ended.
    const std::string& str() const {
        if (!m_open.empty() || m_key_due_value) throw std::logic_error("tandem::http::json: unfinished");
        return m_out;
    }

private:
    json& open(char bracket) {
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
    std::vector<char> m_open;
    bool m_first = true;
    bool m_key_due_value = false;
};

} // namespace tandem::http
