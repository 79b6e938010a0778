// A second translation unit of test_codec, built with TANDEM_FULL_STD_HEADERS: tandem's lean
// standard headers (detail/std_chrono.hpp, std_function.hpp, std_algorithm.hpp) then include
// the public <chrono>, <functional> and <algorithm>, as on a standard library other than
// libstdc++. The whole library must compile and behave the same that way.
#define TANDEM_FULL_STD_HEADERS 1
#include "tandem/tandem.hpp"

#include "catch.hpp"

#include <chrono>
#include <map>
#include <string>

TEST_CASE("with TANDEM_FULL_STD_HEADERS the library compiles from the public standard headers", "[codec]") {
    using namespace std::chrono_literals;
    tandem::event_loop loop;
    std::function<int(int)> twice = [](int n) { return 2 * n; };
    auto body = [&]() -> tandem::task<int> {
        co_await tandem::sleep_for(1ms);
        co_return twice(21);
    };
    CHECK(loop.run(body()) == 42);
    const std::map<int, std::string> m{{1, "one"}};
    const auto bytes = tandem::encode(m);
    CHECK(tandem::decode<std::map<int, std::string>>(bytes.data(), bytes.size()) == m);
}
