// The smallest real consumer: one task, one timer, the loop's result.
#include <tandem/tandem.hpp>

#include <chrono>
#include <cstdio>

tandem::task<int> answer() {
    co_await tandem::sleep_for(std::chrono::milliseconds(1));
    co_return 42;
}

int main() {
    const int value = tandem::sync_wait(answer());
    std::printf("consumer got %d\n", value);
    return value == 42 ? 0 : 1;
}
