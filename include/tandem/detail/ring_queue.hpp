// tandem — growable FIFO ring buffer. Layer: detail.
// Steady state allocates nothing: capacity only grows (to a power of two) and is reused.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace tandem::detail {

template <class T>
class ring_queue {
public:
    ring_queue() = default;
    ~ring_queue() { delete[] m_items; }
    ring_queue(const ring_queue&) = delete;
    ring_queue& operator=(const ring_queue&) = delete;

    bool empty() const noexcept { return m_size == 0; }
    std::size_t size() const noexcept { return m_size; }

    void push(T value) {
        if (m_size == m_capacity) grow();
        m_items[(m_head + m_size) & (m_capacity - 1)] = std::move(value);
        ++m_size;
    }
    T pop() noexcept {
        T value = std::move(m_items[m_head]);
        m_head = (m_head + 1) & (m_capacity - 1);
        --m_size;
        return value;
    }
    /// The k-th item from the front (0: the next to pop). Requires k < size().
    const T& from_front(std::size_t k) const noexcept { return m_items[(m_head + k) & (m_capacity - 1)]; }
    /// The k-th item from the back (1: the newest). Requires 1 <= k <= size().
    T& from_back(std::size_t k) noexcept { return m_items[(m_head + m_size - k) & (m_capacity - 1)]; }
    void clear() noexcept {
        while (m_size) (void)pop();
    }
    void swap(ring_queue& other) noexcept {
        std::swap(m_items, other.m_items);
        std::swap(m_capacity, other.m_capacity);
        std::swap(m_head, other.m_head);
        std::swap(m_size, other.m_size);
    }

private:
    void grow() {
        static_assert(std::is_nothrow_move_assignable_v<T>); // nothing to undo if a move fails
        const std::size_t capacity = m_capacity ? m_capacity * 2 : 64;
        T* items = new T[capacity]();
        for (std::size_t i = 0; i < m_size; ++i) items[i] = std::move(m_items[(m_head + i) & (m_capacity - 1)]);
        delete[] m_items;
        m_items = items;
        m_capacity = capacity;
        m_head = 0;
    }

    // Owned. A raw array, not std::unique_ptr<T[]>: the loop holds several queues, and each
    // unique_ptr specialization costs every translation unit its instantiation (dependent.hpp).
    T* m_items = nullptr;
    std::size_t m_capacity = 0;
    std::size_t m_head = 0;
    std::size_t m_size = 0;
};

} // namespace tandem::detail
