// header_list and field_text (tandem/http/header_list.hpp): headers held in place up to the
// inline capacity and on the heap beyond, well-known texts viewed rather than copied, and the
// response built on them. Its own executable: it counts allocations (replace_new.hpp), and
// refuses some to check that a failed growth leaves a list as it was.
#include "tandem/http/header_list.hpp"
#include "tandem/http/message.hpp"

#include "catch.hpp"
#include "replace_new.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {
thread_local std::size_t t_allocations = 0; // constant-initialised: safe inside operator new
thread_local int t_refuse_after = -1;       // refuse the allocation after this many more; -1: never
} // namespace

bool test_new_allowed(std::size_t) noexcept {
    if (t_refuse_after == 0) return false;
    if (t_refuse_after > 0) --t_refuse_after;
    ++t_allocations;
    return true;
}

namespace http = tandem::http;

namespace {

/// Allocations made on this thread while `fn` runs.
template <class F>
std::size_t allocations_in(F&& fn) {
    const std::size_t before = t_allocations;
    fn();
    return t_allocations - before;
}

bool is_well_known_storage(const char* p) {
    for (std::string_view k : http::detail::well_known_texts)
        if (p == k.data()) return true;
    return false;
}

// Every well-known text is too long to be held in place (else it would never be viewed) and
// made of field characters (field_text marks it a valid value without looking). Checked here
// rather than in the header, whose includers would all evaluate it.
static_assert([] {
    for (std::string_view k : http::detail::well_known_texts) {
        if (k.size() <= http::field_text::inline_capacity) return false;
        if (http::detail::skip_field_chars(k, 0, k.size()) != k.size()) return false;
    }
    return true;
}());

using model = std::vector<std::pair<std::string, std::string>>;

bool same(const http::header_list& list, const model& m) {
    if (list.size() != m.size() || list.empty() != m.empty()) return false;
    std::size_t i = 0;
    for (const auto& [n, v] : list) {
        if (n != m[i].first || v != m[i].second) return false;
        if (n.c_str()[n.size()] != '\0' || v.c_str()[v.size()] != '\0') return false;
        ++i;
    }
    return true;
}

constexpr std::size_t N = http::header_list::inline_capacity;

http::header_list filled(std::size_t count) {
    http::header_list list;
    for (std::size_t i = 0; i < count; ++i) list.emplace_back("X-" + std::to_string(i), std::string(40, char('a' + i % 26)));
    return list;
}

model filled_model(std::size_t count) {
    model m;
    for (std::size_t i = 0; i < count; ++i) m.emplace_back("X-" + std::to_string(i), std::string(40, char('a' + i % 26)));
    return m;
}

} // namespace

bool is_in_place(const http::field_text& t) {
    const char* p = t.data();
    const char* self = reinterpret_cast<const char*>(&t);
    return p >= self && p < self + sizeof t;
}

TEST_CASE("a well-known text is a view of the library's constant however it was given", "[http][header_list]") {
    // From a caller's buffer that then changes: the text does not point into it.
    std::string caller = "text/plain; charset=utf-8";
    const http::field_text t(std::string_view{caller});
    caller.assign(caller.size(), 'X');
    CHECK(t == "text/plain; charset=utf-8");
    CHECK(is_well_known_storage(t.data()));
    CHECK(std::strlen(t.c_str()) == t.size());
    if (TANDEM_TEST_REPLACES_NEW) {
        CHECK(allocations_in([] { const http::field_text x("text/html; charset=utf-8"); (void)x; }) == 0);
        CHECK(allocations_in([] { const http::field_text x(std::string_view("application/x-www-form-urlencoded")); (void)x; }) == 0);
    }
    // Copies and moves of a viewed text still view the constant.
    http::field_text copy = t;
    http::field_text moved = std::move(copy);
    CHECK(is_well_known_storage(moved.data()));
    CHECK(copy.empty());
    // One character off is not well known: copied.
    const std::string near = "text/plain; charset=utf-9";
    const http::field_text other(near);
    CHECK(other == near);
    CHECK(other.data() != near.data());
    CHECK_FALSE(is_well_known_storage(other.data()));
}

TEST_CASE("a header text is held in place up to its inline capacity and copied to the heap beyond", "[http][header_list]") {
    constexpr std::size_t cap = http::field_text::inline_capacity;
    for (std::size_t n : {std::size_t(0), std::size_t(1), cap - 1, cap, cap + 1, std::size_t(1000)}) {
        INFO("length " << n);
        const std::string text(n, 'q');
        std::size_t made = 0;
        bool in_place = false, equal = false, terminated = false;
        made = allocations_in([&] {
            const http::field_text t(text);
            in_place = is_in_place(t);
            equal = t == text;
            terminated = t.c_str()[n] == '\0';
        });
        CHECK(equal);
        CHECK(terminated);
        CHECK(in_place == (n <= cap));
        if (TANDEM_TEST_REPLACES_NEW) CHECK(made == (n <= cap ? 0u : 1u));
        // A copy of a heap text is a heap text of its own; a move takes it and empties the source.
        http::field_text a(text);
        http::field_text b = a;
        CHECK(b == text);
        CHECK((n == 0 || b.data() != a.data()));
        const char* storage = a.data();
        http::field_text c = std::move(a);
        CHECK(c == text);
        CHECK(a.empty());
        CHECK(*a.c_str() == '\0');
        if (n > cap) CHECK(c.data() == storage);
    }
    // Past the largest text (4 GiB): refused before a byte is read or allocated.
    const char tiny[] = "x";
    CHECK_THROWS_AS(http::field_text(std::string_view(tiny, http::field_text::max_size() + 1)), std::length_error);
    // A long std::string is copied, not taken over: its buffer cannot be.
    std::string long_value(100, 'v');
    const http::field_text owned(std::move(long_value));
    CHECK(owned.size() == 100);
    CHECK(owned == std::string(100, 'v'));
}

TEST_CASE("field_text compares and prints like a string", "[http][header_list]") {
    const http::field_text a("abc"), b(std::string("abd")), known("application/json; charset=utf-8");
    CHECK(a == "abc");
    CHECK(a == std::string("abc"));
    CHECK(a == std::string_view("abc"));
    CHECK("abc" == a);
    CHECK(std::string("abc") == a);
    CHECK(a != b);
    CHECK(a < b);
    CHECK(b > "abc");
    CHECK(known == http::field_text(std::string("application/json; charset=utf-8")));
    CHECK(http::field_text() == "");
    CHECK(http::field_text().empty());
    CHECK(*http::field_text().c_str() == '\0');
    std::ostringstream os;
    os << a << '|' << known;
    CHECK(os.str() == "abc|application/json; charset=utf-8");
    const std::string s(a);
    CHECK(s == "abc");
    CHECK(a.str() == "abc");
    std::string joined = "x";
    joined.append(a).append(known);
    CHECK(joined == "xabcapplication/json; charset=utf-8");
    CHECK_THROWS_AS(http::field_text(static_cast<const char*>(nullptr)), std::invalid_argument);
    // What code written for a vector of string pairs does with one: sort it, copy it into a map.
    http::header_list list{{"B", "2"}, {"A", std::string(30, 'a')}, {"A", "1"}};
    std::sort(list.begin(), list.end());
    CHECK(list[0].second == "1");
    CHECK(list[2].first == "B");
    const std::map<std::string, std::string> by_name(list.begin(), list.end());
    CHECK(by_name.at("B") == "2");
}

TEST_CASE("field_text copy and move assignment cross both forms and survive self-assignment", "[http][header_list]") {
    const http::field_text known("text/html; charset=utf-8"), owned(std::string(50, 'o'));
    http::field_text t;
    t = owned;
    CHECK(t == owned);
    t = known;
    CHECK(is_well_known_storage(t.data()));
    t = owned;
    t = http::field_text(std::string(60, 'p'));
    CHECK(t == std::string(60, 'p'));
    http::field_text& alias = t;
    t = alias;
    CHECK(t == std::string(60, 'p'));
    t = std::move(alias);
    CHECK(t == std::string(60, 'p'));
    t = http::field_text("application/octet-stream");
    t = std::move(alias);
    CHECK(t == "application/octet-stream");
    CHECK(is_well_known_storage(t.data()));
}

TEST_CASE("a header list holds inline_capacity headers without allocating and spills at one more", "[http][header_list]") {
    http::header_list list;
    CHECK(list.capacity() == N);
    for (std::size_t i = 0; i < N; ++i) {
        const std::size_t made = allocations_in([&] { list.emplace_back("X-" + std::to_string(i), "v"); });
        if (TANDEM_TEST_REPLACES_NEW) CHECK(made == 0);
    }
    CHECK(list.size() == N);
    CHECK(list.capacity() == N);
    const auto* in_place = list.data();
    const std::size_t spill = allocations_in([&] { list.emplace_back("X-spill", "v"); });
    if (TANDEM_TEST_REPLACES_NEW) CHECK(spill == 1);
    CHECK(list.data() != in_place);
    CHECK(list.size() == N + 1);
    CHECK(list.capacity() >= N + 1);
    for (std::size_t i = 0; i < N; ++i) CHECK(list[i].first == "X-" + std::to_string(i));
    CHECK(list.back().first == "X-spill");
    // Growth stays amortised: no reallocation per header.
    const std::size_t many = allocations_in([&] {
        for (int i = 0; i < 1000; ++i) list.emplace_back("Y", "w");
    });
    if (TANDEM_TEST_REPLACES_NEW) CHECK(many <= 12);
}

TEST_CASE("set_header replaces in place before and after the list spilled", "[http][header_list]") {
    for (std::size_t count : {std::size_t(0), std::size_t(1), N - 1, N, N + 1, 2 * N + 3}) {
        INFO("headers: " << count);
        http::header_list list = filled(count);
        model m = filled_model(count);
        // Replace the first and the last, case-insensitively, then add one new.
        if (count > 0) {
            http::detail::set_header(list, "x-0", "first");
            m[0].second = "first";
            const std::string last = "X-" + std::to_string(count - 1);
            http::detail::set_header(list, last, std::string(70, 'L'));
            m[count - 1].second = std::string(70, 'L');
        }
        http::detail::set_header(list, "New", "text/plain; charset=utf-8");
        m.emplace_back("New", "text/plain; charset=utf-8");
        CHECK(same(list, m));
        CHECK(list.front().first == m.front().first); // a replaced header keeps its name's case
        CHECK(http::detail::find_header(list, "NEW") == "text/plain; charset=utf-8");
        CHECK(is_well_known_storage(http::detail::header_value(list, "new")->data()));
    }
}

TEST_CASE("copies and moves of in-place and spilled lists are independent and leave the source empty", "[http][header_list]") {
    for (std::size_t count : {std::size_t(0), std::size_t(1), N, N + 1, 3 * N}) {
        INFO("headers: " << count);
        const model m = filled_model(count);
        http::header_list a = filled(count);
        http::header_list b = a; // copy
        CHECK(same(a, m));
        CHECK(same(b, m));
        if (count > 0) {
            b[0].second = "changed";
            CHECK(a[0].second == m[0].second);
        }
        http::header_list c = std::move(a); // move
        CHECK(same(c, m));
        CHECK(a.empty());
        CHECK(a.capacity() == N); // back in place
        a.emplace_back("Reused", "yes");
        CHECK(a.size() == 1);
        // Assignments across every pair of shapes.
        for (std::size_t other : {std::size_t(0), std::size_t(2), N, N + 2}) {
            http::header_list d = filled(other);
            d = c;
            CHECK(same(d, m));
            http::header_list e = filled(other);
            http::header_list tmp = c;
            e = std::move(tmp);
            CHECK(same(e, m));
            CHECK(tmp.empty());
            CHECK(tmp.capacity() == N);
        }
        // Self-assignment, through an alias so the compiler does not object.
        http::header_list& alias = c;
        c = alias;
        CHECK(same(c, m));
        c = std::move(alias);
        CHECK(same(c, m));
    }
}

TEST_CASE("emplace_back of one of the list's own headers survives the growth it causes", "[http][header_list]") {
    for (std::size_t count : {N, 2 * N}) {
        http::header_list list = filled(count);
        if (count > N) list.reserve(list.size()); // full, so the next header reallocates
        while (list.size() < list.capacity()) list.emplace_back("Pad", "p");
        const std::size_t before = list.size();
        list.push_back(list[0]);
        CHECK(list.size() == before + 1);
        CHECK(list.back() == list.front());
        CHECK(list.back().second == std::string(40, 'a'));
    }
}

TEST_CASE("a growth that runs out of memory leaves the list as it was", "[http][header_list]") {
    if (!TANDEM_TEST_REPLACES_NEW) {
        WARN("no operator new hook under ThreadSanitizer: nothing refused");
        return;
    }
    for (std::size_t count : {N, 2 * N}) {
        http::header_list list = filled(count);
        while (list.size() < list.capacity()) list.emplace_back("Pad", "p");
        http::header_list before = list;
        t_refuse_after = 0; // the new storage
        CHECK_THROWS_AS(list.emplace_back("X-Late", "v"), std::bad_alloc);
        t_refuse_after = 1; // the storage, then the value's copy of a long text
        CHECK_THROWS_AS(list.emplace_back("X-Late", std::string_view("a long value that is not well known")), std::bad_alloc);
        t_refuse_after = -1;
        CHECK(list == before);
        // A copy that fails half-way frees what it made (LeakSanitizer would say otherwise).
        t_refuse_after = 3;
        CHECK_THROWS_AS(http::header_list(before), std::bad_alloc);
        t_refuse_after = -1;
    }
}

TEST_CASE("erase pop_back clear and at behave like a vector's", "[http][header_list]") {
    http::header_list list = filled(N + 2);
    model m = filled_model(N + 2);
    list.erase(list.begin() + 1);
    m.erase(m.begin() + 1);
    CHECK(same(list, m));
    list.erase(list.begin(), list.begin() + 2);
    m.erase(m.begin(), m.begin() + 2);
    CHECK(same(list, m));
    list.erase(list.end(), list.end());
    CHECK(same(list, m));
    list.pop_back();
    m.pop_back();
    CHECK(same(list, m));
    CHECK_THROWS_AS(list.at(list.size()), std::out_of_range);
    list.clear();
    CHECK(list.empty());
    list = {{"A", "1"}, {"B", "application/json"}};
    CHECK(list.size() == 2);
    CHECK(list[1].second == "application/json");
    // insert at the front, the middle and the end, in place and across the spill.
    model expect{{"A", "1"}, {"B", "application/json"}};
    for (std::size_t i = 0; i < 2 * N; ++i) {
        const std::size_t at = i % 3 == 0 ? 0 : i % 3 == 1 ? list.size() / 2 : list.size();
        const std::string name = "I" + std::to_string(i), value(i * 7, 'z');
        const auto it = list.insert(list.begin() + static_cast<std::ptrdiff_t>(at), {name, value});
        expect.insert(expect.begin() + static_cast<std::ptrdiff_t>(at), {name, value});
        CHECK(it == list.begin() + static_cast<std::ptrdiff_t>(at));
        REQUIRE(same(list, expect));
    }
    // Inserting one of its own headers (taken by value before the list grows).
    list.insert(list.begin(), list.back());
    expect.insert(expect.begin(), expect.back());
    CHECK(same(list, expect));
    // swap between a spilled and an in-place list.
    http::header_list small{{"S", "1"}};
    swap(list, small);
    CHECK(same(small, expect));
    CHECK(list.size() == 1);
    list.swap(small);
    CHECK(same(list, expect));
}

TEST_CASE("a vector of string pairs converts to a header list", "[http][header_list]") {
    std::vector<std::pair<std::string, std::string>> v{{"A", "1"}, {"B", std::string(30, 'b')}};
    const http::header_list copied = v;
    CHECK(copied.size() == 2);
    CHECK(v[1].second.size() == 30); // copied from an lvalue
    const char* buffer = v[1].second.data();
    const http::header_list moved = std::move(v);
    CHECK(moved[1].second.data() != buffer); // a long text is copied, from an rvalue too
    CHECK(moved == copied);
}

TEST_CASE("random edits of a header list agree with a vector of strings", "[http][header_list]") {
    const std::uint32_t seed = std::random_device{}();
    std::printf("header_list property test seed: %u\n", seed);
    INFO("seed " << seed);
    std::mt19937 rng(seed);
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
    const std::string values[] = {"", "v", std::string(15, 's'), std::string(23, 'i'), std::string(24, 'l'), std::string(200, 'h'),
                                  "application/json", "text/plain; charset=utf-8", "text/event-stream"};
    for (int round = 0; round < 200; ++round) {
        http::header_list list;
        model m;
        for (int step = 0; step < 60; ++step) {
            const std::string name = "H" + std::to_string(pick(2 * N + 2));
            const std::string& value = values[pick(std::size(values))];
            switch (pick(8)) {
            case 0:
            case 1:
                list.emplace_back(name, std::string_view(value));
                m.emplace_back(name, value);
                break;
            case 2: {
                http::detail::set_header(list, name, value);
                auto it = m.begin();
                while (it != m.end() && !tandem::http::iequals(it->first, name)) ++it;
                if (it != m.end()) {
                    it->second = value;
                } else {
                    m.emplace_back(name, value);
                }
                break;
            }
            case 3:
                if (!m.empty()) {
                    const std::size_t at = pick(m.size());
                    list.erase(list.begin() + static_cast<std::ptrdiff_t>(at));
                    m.erase(m.begin() + static_cast<std::ptrdiff_t>(at));
                }
                break;
            case 4: {
                http::header_list copy = list;
                list = std::move(copy);
                break;
            }
            case 5: {
                http::header_list other = filled(pick(2 * N));
                other = list;
                list.clear();
                list = other;
                break;
            }
            case 6:
                if (pick(10) == 0) {
                    list.clear();
                    m.clear();
                }
                break;
            default: {
                http::header_list moved(std::move(list));
                list = std::move(moved);
                break;
            }
            }
            REQUIRE(same(list, m));
            REQUIRE(list.capacity() >= list.size());
        }
    }
}

TEST_CASE("many headers spill grow copy and free", "[http][header_list]") {
    http::header_list list;
    for (int i = 0; i < 100'000; ++i) list.emplace_back("X-" + std::to_string(i), i % 2 ? "application/json" : "v");
    http::header_list copy = list;
    CHECK(copy == list);
    CHECK(http::detail::find_header(copy, "x-99999") == "application/json");
    list = http::header_list();
    CHECK(list.empty());
    CHECK(list.capacity() == N);
}

TEST_CASE("a typical response allocates nothing beyond a body longer than the short-string buffer", "[http][header_list]") {
    if (!TANDEM_TEST_REPLACES_NEW) {
        WARN("no operator new hook under ThreadSanitizer: nothing counted");
        return;
    }
    // Nothing Catch does runs inside the counted lambdas: its macros may allocate.
    std::string body = R"({"message":"Hello from tandem"})";
    bool typed = false;
    const std::size_t json = allocations_in([&] {
        const http::response r = http::response::json(std::move(body));
        typed = r.header("content-type") == "application/json"; // a view into r: read while r lives
    });
    CHECK(json == 0);
    CHECK(typed);
    CHECK(allocations_in([] { const http::response r = http::response::text("pong"); }) == 0);
    CHECK(allocations_in([] { const http::response r(204); }) == 0);
    CHECK(allocations_in([] {
              const http::response r = http::response::stream("text/event-stream", [](http::body_writer&) -> tandem::task<void> { co_return; });
          }) == 0);
    // A response moved (as the handler's promise and the server do) allocates nothing either.
    std::size_t kept = 0;
    CHECK(allocations_in([&] {
              http::response r = http::response::text("pong");
              r.set_header("Cache-Control", "no-store");
              http::response moved = std::move(r);
              http::response again(std::move(moved));
              kept = again.headers.size();
          }) == 0);
    CHECK(kept == 2);
}

TEST_CASE("a view of a well-known content type outlives its response", "[http][header_list]") {
    std::string_view type;
    {
        const http::response r = http::response::text(std::string(100, 'b'));
        type = r.header("content-type");
    }
    CHECK(type == "text/plain; charset=utf-8");
    CHECK(is_well_known_storage(type.data()));
}

TEST_CASE("the response's header paths still refuse what would split it", "[http][header_list]") {
    http::response r(200, "x");
    CHECK_THROWS_AS(r.set_header("X", http::field_text(std::string("a\r\nSet-Cookie: x=1"))), std::invalid_argument);
    CHECK_THROWS_AS(r.set_header("X", std::string_view("a\nb")), std::invalid_argument);
    CHECK_THROWS_AS(r.set_header(std::string("Bad Name"), "v"), std::invalid_argument);
    CHECK_THROWS_AS(http::response(200, "x", "text/html\r\nX-Injected: 1"), std::invalid_argument);
    CHECK_THROWS_AS(http::response::stream("text/event-stream\r\n", nullptr), std::invalid_argument);
    // A refused header changes nothing.
    CHECK(r.headers.size() == 1);
    CHECK(r.header("content-type") == "text/plain; charset=utf-8");
    // The replaced Content-Type of a streamed response is a content type still.
    const http::response s = http::response::stream("text/event-stream", nullptr);
    CHECK(s.header("Content-Type") == "text/event-stream");
    CHECK(s.headers.size() == 1);
}

TEST_CASE("a header checked once and then replaced is checked again", "[http][header_list]") {
    using check = http::detail::field_check;
    http::field_text name("X-Fine"), value("text/plain; charset=utf-8");
    CHECK(check::valid_and_marked(name, value));
    CHECK(check::valid(name, value));
    // Assignment brings the new text's own state: unchecked, so it is scanned (and refused).
    value = std::string_view("a\r\nSet-Cookie: x=1");
    CHECK_FALSE(check::valid(name, value));
    value = http::field_text(std::string(100, 'v') + "\n");
    CHECK_FALSE(check::valid(name, value));
    name = "Bad Name";
    value = "ok";
    CHECK_FALSE(check::valid(name, value));
    // A copy or a move of a checked text is as valid as the text.
    http::field_text good_name("X-A"), good_value(std::string(40, 'g'));
    CHECK(check::valid_and_marked(good_name, good_value));
    http::field_text n2 = good_name, v2 = std::move(good_value);
    CHECK(check::valid(n2, v2));
    // The moved-from text is empty: a valid value, not a valid name.
    CHECK_FALSE(check::valid(good_value, v2));
    // A refused pair is not marked.
    http::field_text bad_name("A B"), some_value("v");
    CHECK_FALSE(check::valid_and_marked(bad_name, some_value));
    CHECK_FALSE(check::valid(bad_name, some_value));
    // Every check refuses a CR, LF or NUL at each position of each form (in place, heap).
    for (std::size_t length : {std::size_t(1), std::size_t(23), std::size_t(24), std::size_t(100)}) {
        for (std::size_t at = 0; at < length; ++at) {
            for (char bad : {'\r', '\n', '\0'}) {
                std::string text(length, 'x');
                text[at] = bad;
                http::field_text n("X"), v(text);
                REQUIRE_FALSE(check::valid_and_marked(n, v));
                REQUIRE_FALSE(check::valid(n, v));
                REQUIRE_THROWS_AS(http::response(200, "x").set_header("X", text), std::invalid_argument);
                REQUIRE_THROWS_AS(http::response(200, "x", text), std::invalid_argument);
            }
        }
    }
}

TEST_CASE("the response head lists in-place and spilled headers in order", "[http][header_list]") {
    for (std::size_t count : {std::size_t(0), N - 1, N, N + 1, 40 * N}) {
        INFO("headers: " << count);
        http::response r = http::response::json("{}");
        for (std::size_t i = 0; i < count; ++i) r.set_header("X-" + std::to_string(i), std::to_string(i));
        std::string head;
        http::append_response_head(head, 11, r.status, r.headers, http::head_framing{r.body.size(), false, false});
        std::size_t at = head.find("Content-Type: application/json\r\n");
        CHECK(at != std::string::npos);
        for (std::size_t i = 0; i < count; ++i) {
            const std::size_t next = head.find("X-" + std::to_string(i) + ": " + std::to_string(i) + "\r\n", at);
            REQUIRE(next != std::string::npos);
            at = next;
        }
        CHECK(head.ends_with("Content-Length: 2\r\n\r\n"));
    }
}

TEST_CASE("a field_text never views a caller's buffer at any size", "[http][header_list]") {
    // Every size around the in-place edge, every well-known text, a prefix of each and each
    // with its last character changed: the text survives its source being overwritten, and
    // only an exact well-known text is a view (of the library's constant, not of the buffer).
    std::vector<std::string> sources;
    for (std::size_t n = 0; n <= 50; ++n) sources.push_back(std::string(n, char('a' + n % 26)));
    for (std::string_view k : http::detail::well_known_texts) {
        sources.emplace_back(k);
        sources.emplace_back(k.substr(0, k.size() - 1));
        std::string changed(k);
        changed.back() = char(changed.back() ^ 1);
        sources.push_back(changed);
        sources.push_back(std::string(k) + " ");
    }
    for (const std::string& source : sources) {
        INFO("text: \"" << source << "\"");
        std::string buffer = source;
        std::vector<http::field_text> texts;
        texts.emplace_back(buffer);
        texts.emplace_back(std::string_view(buffer));
        texts.emplace_back(buffer.c_str());
        http::header_list list;
        list.emplace_back(buffer, std::string_view(buffer));
        const bool known = http::detail::well_known_text(source) != nullptr;
        std::fill(buffer.begin(), buffer.end(), '#');
        for (const http::field_text& t : texts) {
            CHECK(t == source);
            CHECK(t.c_str()[t.size()] == '\0');
            CHECK(t.data() != buffer.data());
            CHECK(is_well_known_storage(t.data()) == known);
            CHECK((t.size() <= http::field_text::inline_capacity) == is_in_place(t));
        }
        CHECK(list.front().first == source);
        CHECK(list.front().second == source);
    }
}

TEST_CASE("swap between every pair of shapes keeps the headers and what was checked", "[http][header_list]") {
    using check = http::detail::field_check;
    auto marked = [](std::size_t count, char tag) {
        http::header_list list;
        for (std::size_t i = 0; i < count; ++i) {
            http::field_text n("X-" + std::string(1, tag) + std::to_string(i)), v(std::string(i * 7, tag));
            REQUIRE(check::valid_and_marked(n, v));
            list.emplace_back(std::move(n), std::move(v));
        }
        return list;
    };
    const std::size_t shapes[] = {0, 1, N, N + 1, 5 * N};
    for (std::size_t a_count : shapes) {
        for (std::size_t b_count : shapes) {
            INFO(a_count << " and " << b_count);
            http::header_list a = marked(a_count, 'a'), b = marked(b_count, 'b');
            const http::header_list a0 = a, b0 = b;
            a.swap(b);
            CHECK(a == b0);
            CHECK(b == a0);
            swap(a, b);
            CHECK(a == a0);
            CHECK(b == b0);
            std::swap(a, b);
            CHECK(a == b0);
            CHECK(b == a0);
            a.swap(a);
            CHECK(a == b0);
            for (const auto& [n, v] : a) CHECK(check::valid(n, v));
            // An unchecked bad header swapped in is refused; the checked ones still pass.
            http::header_list bad{{"X-Bad", std::string_view("a\r\nb")}};
            a.swap(bad);
            CHECK_FALSE(check::valid(a.front().first, a.front().second));
            CHECK(bad == b0);
            for (const auto& [n, v] : bad) CHECK(check::valid(n, v));
        }
    }
}

TEST_CASE("running out of memory at every allocation of every header operation leaks nothing and keeps the list whole", "[http][header_list]") {
    if (!TANDEM_TEST_REPLACES_NEW) {
        WARN("no operator new hook under ThreadSanitizer: nothing refused");
        return;
    }
    const std::string long_value(60, 'v');
    const model source_model = [&] {
        model m;
        for (std::size_t i = 0; i < 2 * N + 1; ++i)
            m.emplace_back(i % 2 ? "X-" + std::to_string(i) : "X-Long-Name-" + std::string(20, 'n') + std::to_string(i),
                           i % 3 ? long_value : "short");
        return m;
    }();
    const http::header_list source(source_model);
    for (std::size_t count : {std::size_t(0), N - 1, N, N + 1, 3 * N}) {
        const model start_model = filled_model(count);
        // Each operation, with the k-th allocation refused, k = 0 until it succeeds.
        const std::vector<std::pair<const char*, void (*)(http::header_list&, const http::header_list&, const model&)>> ops = {
            {"copy-assign", [](http::header_list& l, const http::header_list& s, const model&) { l = s; }},
            {"from-vector", [](http::header_list& l, const http::header_list&, const model& m) { l = m; }},
            {"initializer", [](http::header_list& l, const http::header_list&, const model&) {
                 l = {{"X-A", std::string(40, 'i')}, {"X-B", "b"}, {std::string(30, 'c'), std::string(30, 'c')},
                      {"X-D", "d"}, {"X-E", std::string(25, 'e')}};
             }},
            {"push-back", [](http::header_list& l, const http::header_list& s, const model&) { l.push_back(s.front()); }},
            {"insert", [](http::header_list& l, const http::header_list& s, const model&) { l.insert(l.begin(), s.back()); }},
            {"own-header", [](http::header_list& l, const http::header_list&, const model&) {
                 if (!l.empty()) l.push_back(l.back());
             }},
            {"reserve", [](http::header_list& l, const http::header_list&, const model&) { l.reserve(l.capacity() + 9); }},
        };
        for (const auto& [name, op] : ops) {
            INFO(name << " on " << count << " headers");
            bool done = false;
            for (int k = 0; !done && k < 200; ++k) {
                http::header_list list = filled(count);
                t_refuse_after = k;
                try {
                    op(list, source, source_model);
                    done = true;
                } catch (const std::bad_alloc&) {
                }
                t_refuse_after = -1;
                if (!done) REQUIRE(same(list, start_model)); // refused: as it was
                // Whole either way: it copies, grows and frees (LeakSanitizer checks the rest).
                http::header_list copy = list;
                REQUIRE(copy == list);
                list.emplace_back("X-After", long_value);
                REQUIRE(list.back().second == long_value);
            }
            CHECK(done);
        }
    }
}

TEST_CASE("the vector and string idioms of the former header vector still read the same", "[http][header_list]") {
    // Against the vector of string pairs the list replaced, at every shape and position.
    for (std::size_t count : {std::size_t(0), std::size_t(1), N - 1, N, N + 1, 3 * N}) {
        for (std::size_t at = 0; at <= count; ++at) {
            INFO(count << " headers, at " << at);
            http::header_list list = filled(count);
            model m = filled_model(count);
            const model more = {{"X-In-1", "one"}, {"X-In-2", std::string(40, '2')}, {"X-In-3", "three"}};
            list.insert(list.begin() + at, more.begin(), more.end());
            m.insert(m.begin() + at, more.begin(), more.end());
            REQUIRE(same(list, m));
            list.emplace(list.begin() + at, "X-Emplaced", std::string(30, 'e'));
            m.emplace(m.begin() + at, "X-Emplaced", std::string(30, 'e'));
            REQUIRE(same(list, m));
            list.insert(list.begin(), {{"X-A", "a"}, {"X-B", "b"}});
            m.insert(m.begin(), {{"X-A", "a"}, {"X-B", "b"}});
            REQUIRE(same(list, m));
            // Inserting the list's own headers (room is made before any is read).
            const model self(m.begin(), m.begin() + 2);
            list.insert(list.begin() + at, list.begin(), list.begin() + 2);
            m.insert(m.begin() + at, self.begin(), self.end());
            REQUIRE(same(list, m));
            model reversed(list.rbegin(), list.rend());
            REQUIRE(reversed == model(m.rbegin(), m.rend()));
            const std::size_t removed = erase_if(list, [](const auto& h) { return h.first.starts_with("X-In") || h.second.find('2') == 0; });
            const std::size_t removed_m = std::erase_if(m, [](const auto& h) { return h.first.starts_with("X-In") || h.second.find('2') == 0; });
            CHECK(removed == removed_m);
            REQUIRE(same(list, m));
        }
    }
    // A range insert that fails half-way leaves the list as it was.
    if (TANDEM_TEST_REPLACES_NEW) {
        const model more = {{"X-1", std::string(40, '1')}, {"X-2", std::string(40, '2')}, {"X-3", std::string(40, '3')}};
        for (int k = 0; k < 8; ++k) {
            http::header_list list = filled(N);
            t_refuse_after = k;
            bool refused = false;
            try {
                list.insert(list.begin() + 1, more.begin(), more.end());
            } catch (const std::bad_alloc&) {
                refused = true;
            }
            t_refuse_after = -1;
            if (refused) CHECK(same(list, filled_model(N)));
        }
    }
    http::header_list list;
    list.assign({{"Content-Type", "application/json; charset=utf-8"}, {"Authorization", "Bearer abc.def"}});
    const http::field_text& auth = list.back().second;
    CHECK(auth.starts_with("Bearer "));
    CHECK(auth.ends_with("def"));
    CHECK(auth.find("abc") == 7);
    CHECK(auth.find('.') == 10);
    CHECK(auth.rfind('e') == 12);
    CHECK(auth.find("zzz") == http::field_text::npos);
    CHECK(auth.compare("Bearer abc.def") == 0);
    CHECK(auth.compare(0, 6, "Bearer") == 0);
    CHECK(auth.front() == 'B');
    CHECK(auth.back() == 'f');
    CHECK(list.front().second.find("json") != std::string::npos);
}
