// A second translation unit of test_codec, built with TANDEM_FULL_STD_HEADERS: tandem's lean
// standard headers (detail/std_chrono.hpp, std_function.hpp, std_algorithm.hpp, std_map.hpp)
// then include the public <chrono>, <functional>, <algorithm>, <map> and <unordered_map>, as on
// a standard library other than libstdc++. The whole library must compile and behave the same
// that way, and a program written against tandem's former includes must compile unchanged.
#define TANDEM_FULL_STD_HEADERS 1
#include "tandem/tandem.hpp"

#include <string>
#include <vector>

namespace {
// Before catch.hpp, which includes standard headers of its own: everything this uses must come
// through tandem.hpp. It is what the README promises the macro gives back.
struct former_includes {
    std::map<int, std::string> ordered{{1, "one"}};
    std::unordered_map<std::string, int> hashed{{"two", 2}};
    int invoked = std::invoke([](int n) { return n + 1; }, 1);
    int bound = std::bind([](int a, int b) { return a * b; }, std::placeholders::_1, 3)(2);
    std::chrono::year_month_day day{std::chrono::year{2026} / 11 / 27};
    std::vector<int> sorted() const {
        std::vector<int> v{3, 1, 2};
        std::ranges::sort(v);
        return v;
    }
};
} // namespace

#include "catch.hpp"

TEST_CASE("with TANDEM_FULL_STD_HEADERS the library compiles from the public standard headers", "[codec]") {
    using namespace std::chrono_literals;
    tandem::event_loop loop;
    std::function<int(int)> twice = [](int n) { return 2 * n; };
    auto body = [&]() -> tandem::task<int> {
        co_await tandem::sleep_for(1ms);
        co_return twice(21);
    };
    CHECK(loop.run(body()) == 42);
    const former_includes f;
    const auto bytes = tandem::encode(f.ordered);
    CHECK(tandem::decode<std::map<int, std::string>>(bytes.data(), bytes.size()) == f.ordered);
    const auto hashed = tandem::encode(f.hashed);
    CHECK(tandem::decode<std::unordered_map<std::string, int>>(hashed.data(), hashed.size()) == f.hashed);
    CHECK(f.invoked == 2);
    CHECK(f.bound == 6);
    CHECK(f.day.ok());
    CHECK(f.sorted() == std::vector<int>{1, 2, 3});
}
