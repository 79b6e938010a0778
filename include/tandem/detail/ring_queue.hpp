// tandem — growable FIFO ring buffer. Layer: detail.
// Steady state allocates nothing: capacity only grows (to a power of two) and is reused.
// Only the slots between the head and the tail hold objects: a growth does not construct a
// whole new array (it did: value-initialised, then move-assigned into), and a pop leaves no
// moved-from object behind. A post on the loop thread went from 24 to 16 ns
// (bench/README.md, "Sixth round").
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace tandem::detail {

template <class T>
class ring_queue {
public:
    ring_queue() = default;
    ~ring_queue() { clear(); ::operator delete(m_items); }
    ring_queue(const ring_queue&) = delete;
    ring_queue& operator=(const ring_queue&) = delete;

    bool empty() const noexcept { return m_size == 0; }
    std::size_t size() const noexcept { return m_size; }

    void push(T value) { emplace(std::move(value)); }
    /// Constructs the new back item in its slot: with parentheses where T has a matching
    /// constructor (so a T argument is moved, never taken as an initializer_list element, as
    /// T{t} does for std::vector<std::any>), else with braces (aggregates). An argument may
    /// refer to an item of this queue: on growth the new item is built before the old ones move.
    template <class... Args>
    void emplace(Args&&... args) {
        if (m_size == m_capacity) {
            grow_and_emplace(static_cast<Args&&>(args)...);
        } else {
            construct_at(m_items + ((m_head + m_size) & (m_capacity - 1)), static_cast<Args&&>(args)...);
        }
        ++m_size;
    }
    T pop() noexcept {
        T* slot = m_items + m_head;
        T value = std::move(*slot);
        slot->~T();
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
    template <class... Args>
    static void construct_at(T* slot, Args&&... args) {
        if constexpr (std::is_constructible_v<T, Args&&...>) {
            ::new (static_cast<void*>(slot)) T(static_cast<Args&&>(args)...);
        } else {
            ::new (static_cast<void*>(slot)) T{static_cast<Args&&>(args)...};
        }
    }

    /// Full: moves into storage twice as large, building the new back item there first (its
    /// arguments may refer to an old item). If that construction throws, nothing has changed.
    template <class... Args>
    void grow_and_emplace(Args&&... args) {
        static_assert(std::is_nothrow_move_constructible_v<T>); // nothing to undo if a move fails
        static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
        const std::size_t capacity = m_capacity ? m_capacity * 2 : 64;
        T* items = static_cast<T*>(::operator new(capacity * sizeof(T)));
        try {
            construct_at(items + m_size, static_cast<Args&&>(args)...);
        } catch (...) {
            ::operator delete(items);
            throw;
        }
        for (std::size_t i = 0; i < m_size; ++i) {
            T* from = m_items + ((m_head + i) & (m_capacity - 1));
            ::new (static_cast<void*>(items + i)) T(std::move(*from));
            from->~T();
        }
        ::operator delete(m_items);
        m_items = items;
        m_capacity = capacity;
        m_head = 0;
    }

    // Owned raw storage, not std::unique_ptr<T[]>: the loop holds several queues, and each
    // unique_ptr specialization costs every translation unit its instantiation (dependent.hpp).
    T* m_items = nullptr;
    std::size_t m_capacity = 0;
    std::size_t m_head = 0;
    std::size_t m_size = 0;
};

} // namespace tandem::detail
