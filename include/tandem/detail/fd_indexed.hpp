// tandem — per-fd state in a plain array indexed by fd number. Layer: detail (includes nothing
// of tandem).
//
// Why not std::vector: the event loop's non-template members reach the fd table and the
// reactor, so std::vector's constexpr members (resize and what it calls) would be compiled in
// every translation unit that includes the loop (detail/dependent.hpp explains). This array
// does the little they need.
#pragma once

#include <cstddef>
#include <type_traits>

namespace tandem::detail {

/// One T per fd, value-initialized, grown to cover the largest fd seen (at least doubling).
template <class T>
class fd_indexed {
    static_assert(std::is_trivially_copyable_v<T>);

public:
    fd_indexed() = default;
    ~fd_indexed() { delete[] m_items; }
    fd_indexed(const fd_indexed&) = delete;
    fd_indexed& operator=(const fd_indexed&) = delete;

    /// True if fd has a slot (fd ≥ 0 and covered).
    bool known(int fd) const noexcept { return fd >= 0 && static_cast<std::size_t>(fd) < m_size; }
    /// fd's slot; requires known(fd).
    T& operator[](int fd) noexcept { return m_items[fd]; }
    const T& operator[](int fd) const noexcept { return m_items[fd]; }

    /// Makes a slot for fd (≥ 0). Throws std::bad_alloc and changes nothing.
    void cover(int fd) {
        const std::size_t need = static_cast<std::size_t>(fd) + 1;
        if (need <= m_size) return;
        std::size_t size = m_size < 32 ? 64 : 2 * m_size;
        if (size < need) size = need;
        T* bigger = new T[size]();
        for (std::size_t i = 0; i < m_size; ++i) bigger[i] = m_items[i];
        delete[] m_items;
        m_items = bigger;
        m_size = size;
    }

private:
    T* m_items = nullptr;
    std::size_t m_size = 0;
};

} // namespace tandem::detail
