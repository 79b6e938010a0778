// tandem — the headers a response or a client request carries: name/value pairs in order,
// kept so that a typical message allocates nothing for them. The list holds a few headers in
// place before it takes heap memory; a header text of up to 23 characters is held in place,
// and a longer one equal to a text the library knows ("text/plain; charset=utf-8", ...)
// views the library's constant: `response::json(body)` allocates its body and nothing else.
//
// Layer: protocols. Pure: no loop, no sockets.
#pragma once

#include "tandem/detail/std_function.hpp"
#include "tandem/http/parser.hpp"

#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tandem::http {

namespace detail {
struct field_check;

/// Texts a header often carries that are too long to be held in place (field_text): the
/// library's own content types and a few common ones. A field_text equal to one of them views
/// this table's static storage; a caller's buffer is never viewed, so nothing dangles.
inline constexpr std::string_view well_known_texts[] = {
    "text/plain; charset=utf-8",
    "text/html; charset=utf-8",
    "application/json; charset=utf-8",
    "application/octet-stream",
    "application/problem+json",
    "application/x-www-form-urlencoded",
    "text/javascript; charset=utf-8",
    "text/plain; version=0.0.4; charset=utf-8", // Prometheus (metrics_handler)
    "Access-Control-Allow-Origin",
    "Strict-Transport-Security",
    "no-cache, no-store, must-revalidate",
};
/// The table's copy of `s`, or nullptr.
inline const std::string_view* well_known_text(std::string_view s) noexcept {
    for (const std::string_view& k : well_known_texts)
        if (k.size() == s.size() && std::memcmp(k.data(), s.data(), s.size()) == 0) return &k;
    return nullptr;
}
} // namespace detail

/// A header's name or value as a header_list keeps it, in one of three forms: up to
/// inline_capacity characters in place, a view of a text the library knows
/// (detail::well_known_texts), or its own heap copy of a longer one. Only the last
/// allocates. It reads like a std::string_view (it converts to one implicitly), is always
/// NUL-terminated, and never refers to a caller's buffer: a string, view or C string it is
/// built from is copied (a long std::string too: its buffer cannot be taken over), unless it
/// is well known, and then the view is of the library's static constant.
///
/// Moving one copies its 32 bytes and empties the source, with no allocation and no call:
/// a response's headers move from the handler to the server as cheaply as a few pointers.
class field_text {
public:
    /// Characters held in place (plus the NUL): every header name in common use, most values.
    static constexpr std::size_t inline_capacity = 23;

    field_text() noexcept { set_empty(); }
    field_text(std::string_view s) {
        if (s.size() <= inline_capacity) {
            if (!s.empty()) std::memcpy(m_s.buf, s.data(), s.size());
            m_s.buf[s.size()] = '\0';
            m_size = static_cast<std::uint32_t>(s.size());
            m_kind = kind::in_place;
        } else if (const std::string_view* known = detail::well_known_text(s)) {
            m_s.ptr = known->data();
            m_size = static_cast<std::uint32_t>(known->size());
            m_kind = kind::known;
            m_checks = value_ok; // every entry is made of field characters (tests/test_http_header_list.cpp checks it)
        } else {
            if (s.size() > max_size()) throw std::length_error("tandem::http: a header text longer than 4 GiB");
            char* p = static_cast<char*>(::operator new(s.size() + 1));
            std::memcpy(p, s.data(), s.size());
            p[s.size()] = '\0';
            m_s.ptr = p;
            m_size = static_cast<std::uint32_t>(s.size());
            m_kind = kind::heap;
        }
    }
    field_text(const std::string& s) : field_text(std::string_view(s)) {}
    /// Throws std::invalid_argument for a null pointer (std::string would throw too).
    field_text(const char* s) : field_text(checked(s)) {}

    field_text(const field_text& other)
        : m_s(other.m_s), m_size(other.m_size), m_kind(other.m_kind), m_checks(other.m_checks) {
        if (m_kind == kind::heap) {
            char* p = static_cast<char*>(::operator new(std::size_t(m_size) + 1));
            std::memcpy(p, other.m_s.ptr, std::size_t(m_size) + 1);
            m_s.ptr = p;
        }
    }
    field_text(field_text&& other) noexcept
        : m_s(other.m_s), m_size(other.m_size), m_kind(other.m_kind), m_checks(other.m_checks) {
        other.set_empty();
    }
    field_text& operator=(const field_text& other) {
        if (this != &other) *this = field_text(other); // copy first: a throw leaves *this as it was
        return *this;
    }
    field_text& operator=(field_text&& other) noexcept {
        if (this != &other) {
            free();
            m_s = other.m_s;
            m_size = other.m_size;
            m_kind = other.m_kind;
            m_checks = other.m_checks;
            other.set_empty();
        }
        return *this;
    }
    ~field_text() { free(); }

    std::string_view view() const noexcept { return {data(), m_size}; }
    operator std::string_view() const noexcept { return view(); }
    std::string str() const { return std::string(view()); }
    explicit operator std::string() const { return str(); }

    const char* data() const noexcept { return m_kind == kind::in_place ? m_s.buf : m_s.ptr; }
    const char* c_str() const noexcept { return data(); } // every form ends in a NUL
    std::size_t size() const noexcept { return m_size; }
    std::size_t length() const noexcept { return m_size; }
    bool empty() const noexcept { return m_size == 0; }
    static constexpr std::size_t max_size() noexcept { return 0xffff'fffe; }
    const char* begin() const noexcept { return data(); }
    const char* end() const noexcept { return data() + m_size; }
    char operator[](std::size_t i) const noexcept { return data()[i]; }
    char front() const noexcept { return data()[0]; }
    char back() const noexcept { return data()[m_size - 1]; }
    // The searches and tests of std::string_view (and of the std::string this text replaced),
    // so that `value.find("gzip")` or `value.starts_with("Bearer ")` reads as it did.
    static constexpr std::size_t npos = std::string_view::npos;
    template <class... Args>
    std::size_t find(Args&&... args) const noexcept(noexcept(std::string_view().find(args...))) {
        return view().find(args...);
    }
    template <class... Args>
    std::size_t rfind(Args&&... args) const noexcept(noexcept(std::string_view().rfind(args...))) {
        return view().rfind(args...);
    }
    template <class... Args>
    int compare(Args&&... args) const noexcept(noexcept(std::string_view().compare(args...))) {
        return view().compare(args...);
    }
    template <class Arg>
    bool starts_with(Arg&& arg) const noexcept {
        return view().starts_with(arg);
    }
    template <class Arg>
    bool ends_with(Arg&& arg) const noexcept {
        return view().ends_with(arg);
    }

    // Case-sensitive, like std::string's. Against anything else that views as a string
    // (std::string, a literal) a template, an exact match: no comparison is ambiguous, and
    // pairs of texts order (std::sort of a header list) with either compiler.
    friend bool operator==(const field_text& a, const field_text& b) noexcept { return a.view() == b.view(); }
    friend std::strong_ordering operator<=>(const field_text& a, const field_text& b) noexcept {
        return a.view() <=> b.view();
    }
    template <class Text>
        requires(!std::is_same_v<Text, field_text> && std::is_convertible_v<const Text&, std::string_view>)
    friend bool operator==(const field_text& a, const Text& b) noexcept {
        return a.view() == std::string_view(b);
    }
    template <class Text>
        requires(!std::is_same_v<Text, field_text> && std::is_convertible_v<const Text&, std::string_view>)
    friend std::strong_ordering operator<=>(const field_text& a, const Text& b) noexcept {
        return a.view() <=> std::string_view(b);
    }
    /// Streams the text (any std::ostream; <ostream> is the caller's to include).
    template <class Stream>
        requires requires(Stream& os, std::string_view v) { os << v; }
    friend Stream& operator<<(Stream& os, const field_text& t) {
        os << t.view();
        return os;
    }

private:
    friend struct detail::field_check;
    enum class kind : std::uint8_t { in_place, known, heap };
    // What detail::field_check found this text to be: a text never changes once built, and
    // an assignment brings the checks of the text it copies, so a mark stays true.
    static constexpr std::uint8_t name_ok = 1, value_ok = 2;
    /// Plain bytes either way, so copying the union copies whichever form it holds.
    union storage {
        char buf[inline_capacity + 1];
        const char* ptr; // known: the table's constant; heap: m_size + 1 bytes this text owns
    };

    static std::string_view checked(const char* s) {
        if (!s) throw std::invalid_argument("tandem::http: a header text from a null pointer");
        return s;
    }
    void set_empty() noexcept {
        m_s.buf[0] = '\0';
        m_size = 0;
        m_kind = kind::in_place;
        m_checks = 0;
    }
    void free() noexcept {
        // Unsized: clang does not declare the sized form unless -fsized-deallocation.
        if (m_kind == kind::heap) ::operator delete(const_cast<char*>(m_s.ptr));
    }

    storage m_s;
    std::uint32_t m_size;
    kind m_kind;
    std::uint8_t m_checks = 0;
};
static_assert(sizeof(field_text) == 32);

namespace detail {
/// Whether a header can be sent as given: the name a token, the value field characters only
/// (no CR, LF or NUL: a value echoed from a decoded query must not start a header of its
/// own). A text found valid remembers it, so the server's look at every header of a response
/// before sending it (headers is public: set_header's check may have been bypassed) is a
/// flag test for the headers set_header and the constructors already checked.
struct field_check {
    static constexpr bool valid(std::string_view name, std::string_view value) noexcept {
        return is_token(name) && skip_field_chars(value, 0, value.size()) == value.size();
    }
    static bool valid(const field_text& name, const field_text& value) noexcept {
        return ((name.m_checks & field_text::name_ok) || is_token(name.view())) &&
               ((value.m_checks & field_text::value_ok) ||
                skip_field_chars(value.view(), 0, value.size()) == value.size());
    }
    /// valid(), remembered by both texts when true.
    static bool valid_and_marked(field_text& name, field_text& value) noexcept {
        if (!valid(name, value)) return false;
        mark(name, value);
        return true;
    }
    /// For a header whose texts were checked as views (valid(string_view, string_view)).
    static void mark(field_text& name, field_text& value) noexcept {
        name.m_checks |= field_text::name_ok;
        value.m_checks |= field_text::value_ok;
    }
};
} // namespace detail

/// Header name/value pairs in the order they are sent or were received: a vector-like
/// sequence that holds inline_capacity headers in place and moves to the heap only beyond.
/// Elements are std::pair<field_text, field_text>, so `for (const auto& [name, value] :
/// list)` and `list.emplace_back("X-Name", value)` read as they did with a vector of string
/// pairs. Iterators and references are invalidated by any insertion or erasure (as a vector's
/// after it reallocates), and, unlike a vector's, by a move of the list (or of the response
/// holding it): headers in place move one by one, and so do views of their in-place texts
/// (response::header's result). A view of a well-known text stays valid for good.
class header_list {
public:
    using value_type = std::pair<field_text, field_text>;
    using size_type = std::size_t;
    using difference_type = std::ptrdiff_t;
    using reference = value_type&;
    using const_reference = const value_type&;
    using pointer = value_type*;
    using const_pointer = const value_type*;
    using iterator = value_type*;
    using const_iterator = const value_type*;
    using reverse_iterator = std::reverse_iterator<iterator>;
    using const_reverse_iterator = std::reverse_iterator<const_iterator>;

    /// Headers held without a heap allocation: a response's Content-Type and a few more.
    static constexpr size_type inline_capacity = 4;

    // User-provided, not defaulted: `header_list()` would otherwise zero the inline slots
    // first (value-initialisation), a few hundred bytes on every response built or moved.
    header_list() noexcept {}
    header_list(std::initializer_list<value_type> init) : header_list() {
        reserve(init.size());
        for (const value_type& h : init) emplace_back(h);
    }
    /// From any other sequence of name/value pairs, such as the std::vector of string pairs
    /// this list replaced: code that built one still compiles.
    template <class Range>
        requires(!std::is_same_v<std::remove_cvref_t<Range>, header_list>) &&
                requires(Range& r) {
                    r.begin() != r.end();
                    r.size();
                    requires std::is_constructible_v<value_type, decltype(*r.begin())>;
                }
    header_list(Range&& other) : header_list() {
        reserve(static_cast<size_type>(other.size()));
        for (const auto& h : other) emplace_back(h);
    }
    header_list(const header_list& other) : header_list() {
        reserve(other.m_size);
        for (const value_type& h : other) emplace_back(h);
    }
    header_list(header_list&& other) noexcept : header_list() { take(other); }
    header_list& operator=(const header_list& other) {
        if (this != &other) *this = header_list(other); // copy first: a throw leaves *this as it was
        return *this;
    }
    header_list& operator=(header_list&& other) noexcept {
        if (this != &other) {
            release();
            take(other);
        }
        return *this;
    }
    header_list& operator=(std::initializer_list<value_type> init) { return *this = header_list(init); }
    ~header_list() { release(); }

    iterator begin() noexcept { return m_data; }
    iterator end() noexcept { return m_data + m_size; }
    const_iterator begin() const noexcept { return m_data; }
    const_iterator end() const noexcept { return m_data + m_size; }
    const_iterator cbegin() const noexcept { return begin(); }
    const_iterator cend() const noexcept { return end(); }
    // Templates whose iterator type is a parameter, so that std::reverse_iterator (costly to
    // instantiate since C++20) is compiled only where one is asked for (README, "Headers").
    template <class It = iterator>
    std::reverse_iterator<It> rbegin() noexcept { return std::reverse_iterator<It>(end()); }
    template <class It = iterator>
    std::reverse_iterator<It> rend() noexcept { return std::reverse_iterator<It>(begin()); }
    template <class It = const_iterator>
    std::reverse_iterator<It> rbegin() const noexcept { return std::reverse_iterator<It>(end()); }
    template <class It = const_iterator>
    std::reverse_iterator<It> rend() const noexcept { return std::reverse_iterator<It>(begin()); }
    template <class It = const_iterator>
    std::reverse_iterator<It> crbegin() const noexcept { return std::reverse_iterator<It>(end()); }
    template <class It = const_iterator>
    std::reverse_iterator<It> crend() const noexcept { return std::reverse_iterator<It>(begin()); }
    pointer data() noexcept { return m_data; }
    const_pointer data() const noexcept { return m_data; }
    size_type size() const noexcept { return m_size; }
    bool empty() const noexcept { return m_size == 0; }
    size_type capacity() const noexcept { return m_capacity; }
    static constexpr size_type max_size() noexcept {
        return std::numeric_limits<difference_type>::max() / sizeof(value_type);
    }
    reference operator[](size_type i) noexcept { return m_data[i]; }
    const_reference operator[](size_type i) const noexcept { return m_data[i]; }
    reference at(size_type i) {
        if (i >= m_size) throw std::out_of_range("tandem::http::header_list::at");
        return m_data[i];
    }
    const_reference at(size_type i) const { return const_cast<header_list&>(*this).at(i); }
    reference front() noexcept { return m_data[0]; }
    const_reference front() const noexcept { return m_data[0]; }
    reference back() noexcept { return m_data[m_size - 1]; }
    const_reference back() const noexcept { return m_data[m_size - 1]; }

    void reserve(size_type n) {
        if (n > m_capacity) reallocate(n);
    }
    /// Appends a header built from `args` (a name and a value, or a pair). `args` may refer to
    /// a header of this list: the new one is built before any is moved.
    template <class... Args>
    reference emplace_back(Args&&... args) {
        if (m_size < m_capacity) {
            value_type* p = ::new (m_data + m_size) value_type(static_cast<Args&&>(args)...);
            ++m_size;
            return *p;
        }
        const size_type cap = grown(m_size + 1);
        value_type* fresh = allocate(cap);
        try {
            ::new (fresh + m_size) value_type(static_cast<Args&&>(args)...);
        } catch (...) {
            deallocate(fresh, cap);
            throw;
        }
        adopt(fresh, cap);
        return m_data[m_size++];
    }
    /// Inserts a header built from `args` before `at`; the headers from `at` on move down, in
    /// order. `args` may refer to a header of this list (as for emplace_back).
    template <class... Args>
    iterator emplace(const_iterator at, Args&&... args) {
        const size_type index = static_cast<size_type>(at - m_data);
        emplace_back(static_cast<Args&&>(args)...);
        return rotate_in(index, 1);
    }
    /// Inserts `h` before `at`; the headers from `at` on move down, in order.
    iterator insert(const_iterator at, value_type h) { return emplace(at, std::move(h)); }
    /// Inserts the headers of [first, last) (name/value pairs of any kind) before `at`. Room
    /// is made first, so a header that fails to build leaves the list as it was.
    template <class Iterator>
        requires requires(Iterator i) { *i; ++i; }
    iterator insert(const_iterator at, Iterator first, Iterator last) {
        if constexpr (std::is_convertible_v<Iterator, const_pointer>) {
            const_pointer f = first;
            if (first != last && !std::less<const_pointer>()(f, m_data) && std::less<const_pointer>()(f, m_data + m_size)) {
                // The list's own headers: copied before room is made, which may move them, then
                // moved in (after the reserve, nothing here can throw).
                header_list copy;
                copy.insert(copy.end(), first, last);
                const size_type index = static_cast<size_type>(at - m_data), before = m_size;
                reserve(m_size + copy.m_size);
                for (value_type& h : copy) emplace_back(std::move(h));
                return rotate_in(index, m_size - before);
            }
        }
        const size_type index = static_cast<size_type>(at - m_data), before = m_size;
        if constexpr (requires { last - first; }) {
            const auto n = last - first;
            if (n > 0) {
                if (static_cast<size_type>(n) > max_size() - m_size)
                    throw std::length_error("tandem::http::header_list: too many headers");
                reserve(m_size + static_cast<size_type>(n));
            }
        }
        try {
            for (; first != last; ++first) emplace_back(*first);
        } catch (...) {
            while (m_size > before) pop_back();
            throw;
        }
        return rotate_in(index, m_size - before);
    }
    iterator insert(const_iterator at, std::initializer_list<value_type> init) {
        // Not through insert(at, first, last): that template would be compiled in every
        // includer. (A list's own headers cannot be in `init`.)
        const size_type index = static_cast<size_type>(at - m_data), before = m_size;
        reserve(m_size + init.size());
        try {
            for (const value_type& h : init) emplace_back(h);
        } catch (...) {
            while (m_size > before) pop_back();
            throw;
        }
        return rotate_in(index, m_size - before);
    }
    /// Replaces the headers with those of `init`; a throw leaves them as they were.
    void assign(std::initializer_list<value_type> init) { *this = header_list(init); }
    void swap(header_list& other) noexcept {
        header_list tmp(std::move(other));
        other = std::move(*this);
        *this = std::move(tmp);
    }
    friend void swap(header_list& a, header_list& b) noexcept { a.swap(b); }
    void push_back(const value_type& h) { emplace_back(h); }
    void push_back(value_type&& h) { emplace_back(std::move(h)); }
    void pop_back() noexcept { m_data[--m_size].~value_type(); }
    /// Removes the headers for which `pred` holds (found by argument-dependent lookup, as
    /// std::erase_if is for a vector); returns how many.
    template <class Pred>
    friend size_type erase_if(header_list& list, Pred pred) {
        iterator out = list.begin();
        for (iterator in = list.begin(); in != list.end(); ++in)
            if (!pred(std::as_const(*in))) {
                if (out != in) *out = std::move(*in);
                ++out;
            }
        const size_type removed = static_cast<size_type>(list.end() - out);
        list.erase(out, list.end());
        return removed;
    }
    /// Removes [first, last); the headers after it move up, in order.
    iterator erase(const_iterator first, const_iterator last) noexcept {
        value_type* to = m_data + (first - m_data);
        value_type* from = m_data + (last - m_data);
        if (to == from) return to;
        value_type* out = to;
        for (value_type* in = from; in != end(); ++in, ++out) *out = std::move(*in);
        while (end() != out) pop_back();
        return to;
    }
    iterator erase(const_iterator at) noexcept { return erase(at, at + 1); }
    void clear() noexcept {
        while (m_size) pop_back();
    }

    friend bool operator==(const header_list& a, const header_list& b) noexcept {
        if (a.m_size != b.m_size) return false;
        for (size_type i = 0; i < a.m_size; ++i)
            if (a.m_data[i] != b.m_data[i]) return false;
        return true;
    }

private:
    bool spilled() const noexcept { return m_data != inline_slots(); }
    value_type* inline_slots() noexcept { return reinterpret_cast<value_type*>(m_inline); }
    const value_type* inline_slots() const noexcept { return reinterpret_cast<const value_type*>(m_inline); }

    /// Moves the last `n` headers to `index`, the ones from `index` on after them, in order.
    iterator rotate_in(size_type index, size_type n) noexcept {
        iterator to = m_data + index;
        for (size_type k = 0; k < n; ++k)
            for (iterator p = m_data + (m_size - n + k); p != to + k; --p) std::swap(*p, *(p - 1));
        return to;
    }
    size_type grown(size_type needed) const {
        if (needed > max_size()) throw std::length_error("tandem::http::header_list: too many headers");
        const size_type doubled = m_capacity > max_size() / 2 ? max_size() : m_capacity * 2;
        return doubled > needed ? doubled : needed;
    }
    static value_type* allocate(size_type n) {
        static_assert(alignof(value_type) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
        return static_cast<value_type*>(::operator new(n * sizeof(value_type)));
    }
    static void deallocate(value_type* p, size_type) noexcept { ::operator delete(p); }
    /// Moves the headers into `fresh` (capacity `cap`), which becomes the storage.
    void adopt(value_type* fresh, size_type cap) noexcept {
        for (size_type i = 0; i < m_size; ++i) {
            ::new (fresh + i) value_type(std::move(m_data[i]));
            m_data[i].~value_type();
        }
        if (spilled()) deallocate(m_data, m_capacity);
        m_data = fresh;
        m_capacity = cap;
    }
    void reallocate(size_type cap) {
        if (cap > max_size()) throw std::length_error("tandem::http::header_list: too many headers");
        adopt(allocate(cap), cap);
    }
    /// Destroys the headers and frees the heap storage: back to empty and in place.
    void release() noexcept {
        clear();
        if (spilled()) deallocate(m_data, m_capacity);
        m_data = inline_slots();
        m_capacity = inline_capacity;
    }
    /// Takes other's headers (this list is empty and in place); other is left empty.
    void take(header_list& other) noexcept {
        if (other.spilled()) {
            m_data = other.m_data;
            m_capacity = other.m_capacity;
            m_size = other.m_size;
            other.m_data = other.inline_slots();
            other.m_capacity = inline_capacity;
            other.m_size = 0;
            return;
        }
        for (size_type i = 0; i < other.m_size; ++i) ::new (m_data + i) value_type(std::move(other.m_data[i]));
        m_size = other.m_size;
        // A moved-from field_text is empty and in place, owning nothing: its destructor would
        // do nothing, so the slots are simply reused (a response moves three times a request).
        other.m_size = 0;
    }

    value_type* m_data = inline_slots();
    size_type m_size = 0;
    size_type m_capacity = inline_capacity;
    alignas(value_type) unsigned char m_inline[inline_capacity * sizeof(value_type)];
};

namespace detail {
/// The first header called `name` (case-insensitive), or nullptr. The one lookup behind
/// response::header, client_response::header and the client's own checks.
inline const field_text* header_value(const header_list& headers, std::string_view name) noexcept {
    for (const auto& [n, v] : headers)
        if (iequals(n, name)) return &v;
    return nullptr;
}
inline std::string_view find_header(const header_list& headers, std::string_view name) noexcept {
    const field_text* v = header_value(headers, name);
    return v ? v->view() : std::string_view();
}
inline bool has_header(const header_list& headers, std::string_view name) noexcept {
    return header_value(headers, name) != nullptr;
}
/// Replaces the first header called `name` (case-insensitive), or appends it.
inline void set_header(header_list& headers, field_text name, field_text value) {
    for (auto& [n, v] : headers)
        if (iequals(n, name)) {
            v = std::move(value);
            return;
        }
    headers.emplace_back(std::move(name), std::move(value));
}
} // namespace detail

} // namespace tandem::http
