// tandem — per-fd state in an array indexed by fd number. Layer: detail (basement).
//
// On a trivial_vector, not a std::vector: the event loop's non-template members reach the fd
// table and the reactor, and std::vector's constexpr members would be compiled in every
// translation unit that includes the loop (trivial_vector.hpp).
#pragma once

#include "tandem/detail/trivial_vector.hpp"

#include <cstddef>

namespace tandem::detail {

/// One T per fd, value-initialized, grown to cover the largest fd seen (at least doubling).
template <class T>
class fd_indexed {
public:
    /// True if fd has a slot (fd ≥ 0 and covered).
    bool known(int fd) const noexcept { return fd >= 0 && static_cast<std::size_t>(fd) < m_items.size(); }
    /// fd's slot; requires known(fd).
    T& operator[](int fd) noexcept { return m_items[static_cast<std::size_t>(fd)]; }
    const T& operator[](int fd) const noexcept { return m_items[static_cast<std::size_t>(fd)]; }

    /// Makes a slot for fd (≥ 0: the loop refuses a negative fd before it comes here, in
    /// add_io_waiter and watch_exclusive). Throws std::bad_alloc and changes nothing.
    void cover(int fd) {
        const std::size_t need = static_cast<std::size_t>(fd) + 1;
        const std::size_t size = m_items.size();
        if (need <= size) return;
        std::size_t grown = size < 32 ? 64 : 2 * size;
        m_items.resize(grown < need ? need : grown);
    }

private:
    trivial_vector<T> m_items;
};

} // namespace tandem::detail
