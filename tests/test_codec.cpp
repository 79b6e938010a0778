#include "tandem/codec.hpp"

#include "catch.hpp"

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace {

enum class colour : std::uint8_t { red = 1, green = 2 };

struct point {
    int x;
    int y;
    bool operator==(const point&) const = default;
};

/// A user type with its own codec (not bytewise: it owns a string).
struct person {
    std::string name;
    std::vector<point> path;
    bool operator==(const person&) const = default;
};

template <class T>
T round_trip(const T& value) {
    const std::vector<std::byte> bytes = tandem::encode(value);
    REQUIRE(bytes.size() == tandem::encoded_size(value));
    return tandem::decode<T>(bytes.data(), bytes.size());
}

std::vector<std::byte> bytes_of(std::uint64_t count) {
    std::vector<std::byte> b(sizeof count);
    std::memcpy(b.data(), &count, sizeof count);
    return b;
}

} // namespace

template <>
inline constexpr bool tandem::bytewise_codec<point> = true;

template <>
struct tandem::codec<person> {
    static void encode(tandem::encoder& out, const person& p) { out(p.name)(p.path); }
    static person decode(tandem::decoder& in) {
        person p;
        p.name = in.get<std::string>();
        p.path = in.get<std::vector<point>>();
        return p;
    }
};

TEST_CASE("every built-in codec type round-trips", "[codec]") {
    CHECK(round_trip(42) == 42);
    CHECK(round_trip(-1.5) == -1.5);
    CHECK(round_trip(std::numeric_limits<std::uint64_t>::max()) == std::numeric_limits<std::uint64_t>::max());
    CHECK(round_trip(true));
    CHECK(round_trip('x') == 'x');
    CHECK(round_trip(colour::green) == colour::green);
    CHECK(round_trip(std::string()) == "");
    CHECK(round_trip(std::string("hello\0world", 11)) == std::string("hello\0world", 11));
    CHECK(round_trip(std::vector<int>{1, 2, 3}) == std::vector<int>{1, 2, 3});
    CHECK(round_trip(std::vector<std::string>{"a", "", "ccc"}) == std::vector<std::string>{"a", "", "ccc"});
    CHECK(round_trip(std::array<double, 3>{1, 2, 3}) == std::array<double, 3>{1, 2, 3});
    CHECK(round_trip(std::array<std::string, 2>{"x", "yz"}) == std::array<std::string, 2>{"x", "yz"});
    CHECK(round_trip(std::pair<int, std::string>{7, "seven"}) == std::pair<int, std::string>{7, "seven"});
    CHECK(round_trip(std::tuple<int, std::string, double>{1, "two", 3.0}) == std::tuple<int, std::string, double>{1, "two", 3.0});
    CHECK(round_trip(std::tuple<>{}) == std::tuple<>{});
    CHECK(round_trip(std::optional<std::string>{}) == std::nullopt);
    CHECK(round_trip(std::optional<std::string>{"here"}) == std::optional<std::string>{"here"});
    const std::map<std::string, std::vector<int>> m{{"a", {1}}, {"b", {}}, {"c", {2, 3}}};
    CHECK(round_trip(m) == m);
    const std::unordered_map<int, std::optional<std::pair<int, std::string>>> u{{1, std::nullopt}, {2, std::pair{3, "x"}}};
    CHECK(round_trip(u) == u);
    const std::vector<std::map<int, std::vector<std::optional<std::string>>>> nested{{{1, {"a", std::nullopt}}}, {}};
    CHECK(round_trip(nested) == nested);
}

namespace {
// A map that is neither std::map nor std::unordered_map: a sorted vector with their shape.
struct flat_map {
    using key_type = int;
    using mapped_type = std::string;
    std::vector<std::pair<int, std::string>> entries;
    std::size_t size() const { return entries.size(); }
    auto begin() const { return entries.begin(); }
    auto end() const { return entries.end(); }
    std::pair<std::vector<std::pair<int, std::string>>::iterator, bool> emplace(int k, std::string v) {
        auto at = entries.begin();
        while (at != entries.end() && at->first < k) ++at;
        if (at != entries.end() && at->first == k) return {at, false};
        return {entries.emplace(at, k, std::move(v)), true};
    }
    bool operator==(const flat_map&) const = default;
};
} // namespace

// Map-shaped types whose owners wrote their own codec, in the two C++20 ways: theirs is used.
struct map_with_requires_codec : std::map<int, int> {};
struct map_with_enable_if_codec : std::map<int, int> {};

template <class T>
    requires std::same_as<T, map_with_requires_codec>
struct tandem::codec<T> {
    static void encode(tandem::encoder& out, const T& m) {
        out(std::uint8_t{0xA1});
        out(static_cast<std::uint32_t>(m.size()));
    }
    static T decode(tandem::decoder& in) {
        if (in.get<std::uint8_t>() != 0xA1) throw tandem::codec_error("not mine");
        T m;
        for (std::uint32_t i = 0, n = in.get<std::uint32_t>(); i < n; ++i) m.emplace(static_cast<int>(i), 0);
        return m;
    }
};
template <class T>
struct tandem::codec<T, std::enable_if_t<std::is_same_v<T, map_with_enable_if_codec>>> {
    static void encode(tandem::encoder& out, const T&) { out(std::uint8_t{0xB2}); }
    static T decode(tandem::decoder& in) {
        if (in.get<std::uint8_t>() != 0xB2) throw tandem::codec_error("not mine");
        return {};
    }
};

TEST_CASE("maps are recognised by shape: any unique-key map works and a multimap has no codec", "[codec]") {
    flat_map m;
    m.emplace(3, "three");
    m.emplace(1, "one");
    CHECK(round_trip(m) == m);
    CHECK(tandem::encode(m) == tandem::encode(std::map<int, std::string>{{1, "one"}, {3, "three"}}));
    // A duplicate key is malformed for every map, the user's too.
    std::vector<std::byte> twice = tandem::encode(std::uint64_t{2}, 5, std::string("a"), 5, std::string("b"));
    CHECK_THROWS_AS(tandem::decode<flat_map>(twice.data(), twice.size()), tandem::codec_error);
    // emplace returns no bool for a multimap: its duplicates would not survive a decode.
    // A map-shaped type with a codec of its own gets that codec, however it was written.
    map_with_requires_codec mine;
    mine.emplace(7, 7);
    mine.emplace(9, 9);
    CHECK(tandem::encode(mine) == tandem::encode(std::uint8_t{0xA1}, std::uint32_t{2}));
    CHECK(round_trip(mine).size() == 2);
    CHECK(tandem::encode(map_with_enable_if_codec{}) == tandem::encode(std::uint8_t{0xB2}));
    CHECK(round_trip(map_with_enable_if_codec{}).empty());
    STATIC_REQUIRE_FALSE(tandem::detail::unique_key_map<std::multimap<int, int>>);
    STATIC_REQUIRE(tandem::detail::unique_key_map<std::unordered_map<std::string, int>>);
    STATIC_REQUIRE(tandem::detail::has_codec<std::map<int, std::vector<std::map<int, int>>>>);
}

namespace {
// A map whose entries name their members first and second, in the other order and beside a
// third (as a hash map that caches each key's hash might): the codec reads .first and .second,
// the shape unique_key_map asks for, not the members in declaration order.
struct cached_entry {
    int second;
    std::size_t hash;
    int first;
};
struct reordered_map {
    using key_type = int;
    using mapped_type = int;
    std::vector<cached_entry> entries;
    std::size_t size() const { return entries.size(); }
    auto begin() const { return entries.begin(); }
    auto end() const { return entries.end(); }
    std::pair<std::vector<cached_entry>::iterator, bool> emplace(int k, int v) {
        for (auto it = entries.begin(); it != entries.end(); ++it)
            if (it->first == k) return {it, false};
        entries.push_back(cached_entry{v, static_cast<std::size_t>(k) * 31, k});
        return {entries.end() - 1, true};
    }
    int at(int k) const {
        for (const cached_entry& e : entries)
            if (e.first == k) return e.second;
        throw std::out_of_range("no such key");
    }
};

// A user's partial specialisation on std::map itself beats the built-in map codec.
struct tagged {
    int n;
};
} // namespace

template <class C, class A>
struct tandem::codec<std::map<std::string, tagged, C, A>> {
    static void encode(tandem::encoder& out, const std::map<std::string, tagged, C, A>& m) {
        out(std::uint8_t{0xC3});
        out(static_cast<std::uint32_t>(m.size()));
    }
    static std::map<std::string, tagged, C, A> decode(tandem::decoder& in) {
        if (in.get<std::uint8_t>() != 0xC3) throw tandem::codec_error("not mine");
        std::map<std::string, tagged, C, A> m;
        for (std::uint32_t i = 0, n = in.get<std::uint32_t>(); i < n; ++i) m.emplace(std::to_string(i), tagged{0});
        return m;
    }
};

TEST_CASE("a map's entries are read by .first and .second and a user's std::map codec wins", "[codec]") {
    reordered_map m;
    m.emplace(1, 100);
    m.emplace(2, 200);
    CHECK(tandem::encode(m) == tandem::encode(std::map<int, int>{{1, 100}, {2, 200}}));
    const reordered_map back = round_trip(m);
    REQUIRE(back.size() == 2);
    CHECK(back.at(1) == 100);
    CHECK(back.at(2) == 200);
    // A comparator and an allocator of one's own: still std::map's codec, in the map's order.
    const std::map<int, std::string, std::greater<>> down{{1, "a"}, {2, "b"}, {3, "c"}};
    CHECK(round_trip(down) == down);
    CHECK(tandem::encode(down) == tandem::encode(std::uint64_t{3}, 3, std::string("c"), 2, std::string("b"), 1, std::string("a")));
    const std::map<std::string, tagged> mine{{"x", {1}}, {"y", {2}}};
    CHECK(tandem::encode(mine) == tandem::encode(std::uint8_t{0xC3}, std::uint32_t{2}));
    CHECK(round_trip(mine).size() == 2);
}

TEST_CASE("user types: bytewise opt-in and a codec specialization", "[codec]") {
    CHECK(round_trip(point{3, -4}) == point{3, -4});
    const std::vector<point> path{{1, 2}, {3, 4}};
    CHECK(tandem::encoded_size(path) == 8 + 2 * sizeof(point)); // one memcpy, no per-element framing
    CHECK(round_trip(path) == path);
    const person p{"ada", path};
    CHECK(round_trip(p) == p);
    CHECK(round_trip(std::vector<person>{p, {"bob", {}}}) == std::vector<person>{p, {"bob", {}}});
}

TEST_CASE("malformed input is a codec_error and never a huge allocation or an over-read", "[codec]") {
    // Counts far beyond the bytes that follow: rejected before anything is allocated.
    for (std::uint64_t count : {std::uint64_t{1} << 60, std::numeric_limits<std::uint64_t>::max(), std::uint64_t{3}}) {
        const auto b = bytes_of(count);
        CHECK_THROWS_AS(tandem::decode<std::string>(b.data(), b.size()), tandem::codec_error);
        CHECK_THROWS_AS(tandem::decode<std::vector<double>>(b.data(), b.size()), tandem::codec_error);
        CHECK_THROWS_AS(tandem::decode<std::vector<std::string>>(b.data(), b.size()), tandem::codec_error);
        using big_map = std::map<int, std::string>;
        CHECK_THROWS_AS(tandem::decode<big_map>(b.data(), b.size()), tandem::codec_error);
        if (count > 3) CHECK_THROWS_AS(tandem::decode<std::vector<std::tuple<>>>(b.data(), b.size()), tandem::codec_error);
    }
    // Elements that encode to nothing cannot be checked against the bytes: a small count is fine.
    const auto three = bytes_of(3);
    CHECK(tandem::decode<std::vector<std::tuple<>>>(three.data(), three.size()).size() == 3);
    // Truncation at every length of a valid message.
    const auto good = tandem::encode(std::map<std::string, std::vector<int>>{{"key", {1, 2, 3}}});
    for (std::size_t n = 0; n < good.size(); ++n) {
        std::vector<std::byte> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
        using map_type = std::map<std::string, std::vector<int>>;
        CHECK_THROWS_AS(tandem::decode<map_type>(cut.data(), cut.size()), tandem::codec_error);
    }
    // Trailing bytes, a bad optional flag, a duplicate map key.
    auto extra = tandem::encode(7);
    extra.push_back(std::byte{0});
    CHECK_THROWS_AS(tandem::decode<int>(extra.data(), extra.size()), tandem::codec_error);
    const std::byte flag[] = {std::byte{2}};
    CHECK_THROWS_AS(tandem::decode<std::optional<int>>(flag, 1), tandem::codec_error);
    auto dup = tandem::encode(std::uint64_t{2}, 1, 10, 1, 20);
    using int_map = std::map<int, int>;
    CHECK_THROWS_AS(tandem::decode<int_map>(dup.data(), dup.size()), tandem::codec_error);
}
