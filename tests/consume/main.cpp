// The smallest real consumer: one task, one timer, the loop's result — and the regression for
// the flags every consumer path must carry. run.sh builds this at -O0 from each installed .pc,
// from the CMake package and from the meson subproject: a million synchronously completing
// co_awaits only leave the stack flat when symmetric transfer is a tail call, which g++ at
// -O0 does only with -foptimize-sibling-calls (README, "g++ and tail calls").
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdio>

tandem::task<int> answer() {
    co_await tandem::sleep_for(std::chrono::milliseconds(1));
    co_return 42;
}

tandem::task<int> one() { co_return 1; }

tandem::task<long> deep_awaits() {
    long sum = 0;
    for (int i = 0; i < 1'000'000; ++i) sum += co_await one();
    co_return sum;
}

int main() {
    const int value = tandem::sync_wait(answer());
    std::printf("consumer got %d\n", value);
    const long sum = tandem::sync_wait(deep_awaits());
    std::printf("consumer awaited %ld synchronous tasks\n", sum);
    return value == 42 && sum == 1'000'000 ? 0 : 1;
}
