// The hand-written containers under the loop (trivial_vector, fd_indexed, ring_queue), checked
// against std::vector and std::deque as models: random operation sequences (seeded, the seed
// printed), the edges of their growth, and requests too large to be met.
#include "tandem/detail/fd_indexed.hpp"
#include "tandem/detail/ring_queue.hpp"
#include "tandem/detail/trivial_vector.hpp"

#include "catch.hpp"
#include "replace_new.hpp"

#include <algorithm>
#include <any>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using tandem::detail::fd_indexed;
using tandem::detail::ring_queue;
using tandem::detail::trivial_vector;

namespace {

std::uint64_t seed_of() {
    const std::uint64_t seed = std::random_device{}();
    UNSCOPED_INFO("seed " << seed);
    return seed;
}

struct pod {
    std::uint64_t a;
    std::uint32_t b;
    bool operator==(const pod&) const = default;
};

template <class T>
bool same(const trivial_vector<T>& v, const std::vector<T>& model) {
    if (v.size() != model.size() || v.capacity() < v.size()) return false;
    for (std::size_t i = 0; i < model.size(); ++i)
        if (!(v[i] == model[i])) return false;
    return v.empty() == model.empty() && (model.empty() || (v.front() == model.front() && v.back() == model.back()));
}

} // namespace

TEST_CASE("trivial_vector follows std::vector through random operations", "[containers]") {
    const std::uint64_t seed = seed_of();
    std::mt19937_64 rng(seed);
    for (int round = 0; round < 50; ++round) {
        trivial_vector<pod> v, other;
        std::vector<pod> model, other_model;
        for (int step = 0; step < 400; ++step) {
            const pod value{rng(), static_cast<std::uint32_t>(rng())};
            switch (rng() % 9) {
            case 0:
            case 1:
                v.push_back(value);
                model.push_back(value);
                break;
            case 2: // its own element, at the moment the array grows too
                if (!model.empty()) {
                    const std::size_t i = rng() % model.size();
                    while (v.size() != v.capacity() && v.size() < 300) {
                        v.push_back(value);
                        model.push_back(value);
                    }
                    v.push_back(v[i]);
                    model.push_back(model[i]);
                }
                break;
            case 3:
                if (!model.empty()) {
                    v.pop_back();
                    model.pop_back();
                }
                break;
            case 4: {
                const std::size_t n = rng() % 70;
                v.resize(n);
                model.resize(n);
                break;
            }
            case 5: {
                const std::size_t n = rng() % 200, before = v.capacity();
                v.reserve(n);
                REQUIRE(v.capacity() >= n);
                REQUIRE(v.capacity() >= before);
                break;
            }
            case 6:
                if (!model.empty()) {
                    const std::size_t i = rng() % model.size();
                    REQUIRE(v.erase(v.begin() + i) == v.begin() + i);
                    model.erase(model.begin() + static_cast<std::ptrdiff_t>(i));
                }
                break;
            case 7:
                v.swap(other);
                model.swap(other_model);
                break;
            case 8:
                if (rng() % 8 == 0) {
                    v.clear();
                    model.clear();
                } else {
                    v.swap(v); // self-swap changes nothing
                }
                break;
            }
            REQUIRE(same(v, model));
            REQUIRE(same(other, other_model));
        }
    }
}

TEST_CASE("trivial_vector refuses a size whose bytes overflow, changing nothing", "[containers]") {
    trivial_vector<std::uint32_t> v;
    v.push_back(7);
    // n * sizeof(T) wraps to a few bytes: an array that small must not be taken for n elements.
    const std::size_t wraps = std::numeric_limits<std::size_t>::max() / sizeof(std::uint32_t) + 2;
    CHECK_THROWS_AS(v.reserve(wraps), std::bad_alloc);
    CHECK_THROWS_AS(v.resize(wraps), std::bad_alloc);
    CHECK_THROWS_AS(v.reserve(std::numeric_limits<std::size_t>::max()), std::bad_alloc);
    REQUIRE(v.size() == 1);
    CHECK(v.capacity() < 1000);
    CHECK(v[0] == 7);
    v.push_back(8); // still usable
    CHECK(v[1] == 8);
}

TEST_CASE("fd_indexed keeps each fd's value across growth at the edges", "[containers]") {
    const std::uint64_t seed = seed_of();
    std::mt19937_64 rng(seed);
    fd_indexed<std::uint64_t> table;
    std::vector<std::uint64_t> model; // index: fd
    const int edges[] = {0, 63, 64, 65, 1023, 1024, 1025, 4095, 19999, 20000};
    std::vector<int> fds(std::begin(edges), std::end(edges));
    for (int i = 0; i < 200; ++i) fds.push_back(static_cast<int>(rng() % 20001));
    std::shuffle(fds.begin(), fds.end(), rng);
    CHECK_FALSE(table.known(-1));
    CHECK_FALSE(table.known(0));
    for (int fd : fds) {
        const auto i = static_cast<std::size_t>(fd);
        table.cover(fd);
        if (model.size() <= i) model.resize(i + 1, 0);
        REQUIRE(table.known(fd));
        REQUIRE(table[fd] == model[i]); // a fresh slot is zero, a known one kept its value
        const std::uint64_t value = rng();
        table[fd] = value;
        model[i] = value;
        for (std::size_t k = 0; k < model.size(); k += 1 + rng() % 97)
            REQUIRE(table[static_cast<int>(k)] == model[k]);
    }
    for (std::size_t k = 0; k < model.size(); ++k) REQUIRE(table[static_cast<int>(k)] == model[k]);
    CHECK_FALSE(table.known(-1));
    CHECK_FALSE(table.known(std::numeric_limits<int>::min()));
}

TEST_CASE("ring_queue follows std::deque through random pushes pops and swaps", "[containers]") {
    const std::uint64_t seed = seed_of();
    std::mt19937_64 rng(seed);
    for (int round = 0; round < 20; ++round) {
        ring_queue<std::unique_ptr<std::string>> q, other;
        std::deque<std::string> model, other_model;
        const auto check = [](const ring_queue<std::unique_ptr<std::string>>& r, const std::deque<std::string>& m) {
            REQUIRE(r.size() == m.size());
            REQUIRE(r.empty() == m.empty());
            for (std::size_t k = 0; k < m.size(); ++k) REQUIRE(*r.from_front(k) == m[k]);
        };
        int next = 0;
        for (int step = 0; step < 1500; ++step) {
            switch (rng() % 7) {
            case 0:
            case 1:
            case 2: { // long enough to live on the heap: a leak or a double free shows under ASan
                std::string s = "item " + std::to_string(next++) + std::string(24, 'x');
                q.push(std::make_unique<std::string>(s));
                model.push_back(std::move(s));
                break;
            }
            case 3:
                if (!model.empty()) {
                    REQUIRE(*q.pop() == model.front());
                    model.pop_front();
                }
                break;
            case 4:
                if (!model.empty()) {
                    const std::size_t k = 1 + rng() % model.size();
                    REQUIRE(*q.from_back(k) == model[model.size() - k]);
                }
                break;
            case 5:
                q.swap(other);
                model.swap(other_model);
                break;
            case 6:
                if (rng() % 10 == 0) {
                    q.clear();
                    model.clear();
                } else {
                    q.swap(q);
                }
                break;
            }
            check(q, model);
            check(other, other_model);
        }
    }
}

namespace {

// Counts the objects alive: every construction is matched by exactly one destruction.
struct counted {
    static inline int live = 0;
    static inline int throw_on = -1; // a constructor from int throws when given this value
    alignas(16) int value = 0;
    std::string text; // on the heap: a leak or a double free shows under ASan too
    explicit counted(int v) : value(v), text(32, char('a' + (v % 26 + 26) % 26)) {
        if (v == throw_on) throw std::runtime_error("counted: throw_on");
        ++live;
    }
    counted(const counted& o) : value(o.value), text(o.text) { ++live; }
    counted(counted&& o) noexcept : value(o.value), text(std::move(o.text)) { ++live; }
    counted& operator=(const counted&) = delete;
    ~counted() { --live; }
};

} // namespace

TEST_CASE("ring_queue destroys every object it constructs exactly once", "[containers]") {
    const std::uint64_t seed = seed_of();
    std::mt19937_64 rng(seed);
    counted::live = 0;
    {
        for (int round = 0; round < 20; ++round) {
            ring_queue<counted> q, other;
            std::deque<int> model, other_model;
            const auto check = [](const ring_queue<counted>& r, const std::deque<int>& m) {
                REQUIRE(r.size() == m.size());
                for (std::size_t k = 0; k < m.size(); ++k) {
                    REQUIRE(r.from_front(k).value == m[k]);
                    REQUIRE(reinterpret_cast<std::uintptr_t>(&r.from_front(k)) % 16 == 0);
                }
            };
            int next = 0;
            for (int step = 0; step < 1500; ++step) {
                switch (rng() % 9) {
                case 0:
                case 1: q.push(counted(next)); model.push_back(next++); break;
                case 2:
                case 3: q.emplace(next); model.push_back(next++); break;
                case 4: // a throwing constructor leaves the queue as it was, even when it was full
                    counted::throw_on = next;
                    REQUIRE_THROWS_AS(q.emplace(next), std::runtime_error);
                    counted::throw_on = -1;
                    break;
                case 5:
                    if (!model.empty()) {
                        REQUIRE(q.pop().value == model.front());
                        model.pop_front();
                    }
                    break;
                case 6:
                    if (!model.empty()) { // an argument that refers to an item of the queue itself
                        const std::size_t k = 1 + rng() % model.size();
                        q.emplace(std::as_const(q).from_front(model.size() - k));
                        model.push_back(model[model.size() - k]);
                    }
                    break;
                case 7: q.swap(q); break; // self-swap changes nothing
                case 8:
                    if (rng() % 8 == 0) {
                        q.clear();
                        model.clear();
                    } else {
                        q.swap(other);
                        model.swap(other_model);
                    }
                    break;
                }
                check(q, model);
                check(other, other_model);
                REQUIRE(counted::live == static_cast<int>(model.size() + other_model.size()));
            }
        } // destroyed with items left
    }
    CHECK(counted::live == 0);
}

TEST_CASE("ring_queue growth at every power of two and after wrap-around keeps order and counts", "[containers]") {
    counted::live = 0;
    for (std::size_t offset : {std::size_t{0}, std::size_t{1}, std::size_t{37}, std::size_t{63}}) {
        ring_queue<counted> q;
        int next = 0, front = 0;
        for (std::size_t i = 0; i < 64; ++i) q.emplace(next++);
        for (std::size_t i = 0; i < offset; ++i) REQUIRE(q.pop().value == front++);
        for (std::size_t i = 0; i < offset; ++i) q.emplace(next++); // wraps around: full again
        for (int target = 128; target <= 2048; target *= 2) {
            while (static_cast<int>(q.size()) < target + 1) q.emplace(next++); // grows at each power of two
            REQUIRE(counted::live == static_cast<int>(q.size()));
            for (std::size_t k = 0; k < q.size(); ++k) REQUIRE(q.from_front(k).value == front + static_cast<int>(k));
            REQUIRE(q.from_back(1).value == next - 1);
        }
        // an argument aliasing the front item while the queue is full and must grow
        while ((q.size() & (q.size() - 1)) != 0) q.emplace(next++);
        q.emplace(q.from_front(0));
        REQUIRE(q.from_back(1).value == front);
        REQUIRE(q.from_back(1).text == q.from_front(0).text);
    }
    CHECK(counted::live == 0);
    ring_queue<counted> empty; // an empty queue, never grown, destroyed
    ring_queue<counted> cleared;
    cleared.emplace(1);
    cleared.clear();
    cleared.swap(empty);
    CHECK(counted::live == 0);
}

TEST_CASE("ring_queue pushes a T as itself and not as the only element of an initializer_list", "[containers]") {
    ring_queue<std::vector<std::any>> q;
    std::vector<std::any> v{1, 2, 3};
    q.push(v);
    q.emplace(v);
    q.emplace(std::size_t{4}); // a constructor argument: four empty anys, not one any holding 4
    CHECK(q.pop().size() == 3);
    CHECK(q.pop().size() == 3);
    CHECK(q.pop().size() == 4);
}

namespace {
std::size_t fail_new_of_size = 0; // operator new of exactly this many bytes throws bad_alloc
} // namespace

bool test_new_allowed(std::size_t n) noexcept { return fail_new_of_size == 0 || n != fail_new_of_size; }

TEST_CASE("ring_queue growth that cannot allocate leaves the queue as it was", "[containers]") {
    if (!TANDEM_TEST_REPLACES_NEW) {
        WARN("no operator new hook under ThreadSanitizer: nothing refused");
        return;
    }
    counted::live = 0;
    {
        ring_queue<counted> q;
        for (int i = 0; i < 64; ++i) q.emplace(i);
        fail_new_of_size = 128 * sizeof(counted);
        REQUIRE_THROWS_AS(q.emplace(64), std::bad_alloc);
        fail_new_of_size = 0;
        REQUIRE(q.size() == 64);
        REQUIRE(counted::live == 64);
        for (int i = 0; i < 64; ++i) REQUIRE(q.from_front(i).value == i);
        q.emplace(64);
        REQUIRE(q.size() == 65);
    }
    CHECK(counted::live == 0);
}
