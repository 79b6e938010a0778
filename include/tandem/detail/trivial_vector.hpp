// tandem — a growable array of trivially copyable values. Layer: detail (includes nothing of
// tandem).
//
// Why not std::vector: C++20 made its members constexpr, and clang compiles a constexpr
// function as soon as non-dependent code names it. The event loop is not a template and holds
// the timer queue, so std::vector there cost every translation unit that includes the loop the
// instantiation of vector, its allocator and its growth code (detail/dependent.hpp). This
// array does what the timer queue needs, with memcpy for moves.
#pragma once

#include <cstddef>
#include <cstring>
#include <new>
#include <type_traits>

namespace tandem::detail {

[[noreturn]] inline void throw_bad_alloc() { throw std::bad_alloc(); }

/// std::vector's interface, the part the timer queue uses, for trivially copyable T. Iterators
/// are pointers. Growth at least doubles; a failed allocation throws std::bad_alloc and
/// changes nothing.
template <class T>
class trivial_vector {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);
    static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);

public:
    trivial_vector() = default;
    ~trivial_vector() { ::operator delete(m_data); }
    trivial_vector(const trivial_vector&) = delete;
    trivial_vector& operator=(const trivial_vector&) = delete;

    std::size_t size() const noexcept { return m_size; }
    std::size_t capacity() const noexcept { return m_capacity; }
    bool empty() const noexcept { return m_size == 0; }

    T* data() noexcept { return m_data; }
    const T* data() const noexcept { return m_data; }
    T* begin() noexcept { return m_data; }
    T* end() noexcept { return m_data + m_size; }
    const T* begin() const noexcept { return m_data; }
    const T* end() const noexcept { return m_data + m_size; }
    T& operator[](std::size_t i) noexcept { return m_data[i]; }
    const T& operator[](std::size_t i) const noexcept { return m_data[i]; }
    T& front() noexcept { return m_data[0]; }
    const T& front() const noexcept { return m_data[0]; }
    T& back() noexcept { return m_data[m_size - 1]; }
    const T& back() const noexcept { return m_data[m_size - 1]; }

    void push_back(const T& value) {
        if (m_size == m_capacity) reallocate(m_capacity ? 2 * m_capacity : 1, value);
        else m_data[m_size] = value;
        ++m_size;
    }
    void pop_back() noexcept { --m_size; }
    void clear() noexcept { m_size = 0; }
    void reserve(std::size_t n) {
        if (n > m_capacity) reallocate(n);
    }
    /// New elements are value-initialized.
    void resize(std::size_t n) {
        reserve(n);
        for (std::size_t i = m_size; i < n; ++i) m_data[i] = T{};
        m_size = n;
    }
    /// Removes *at, keeping the order of the rest.
    T* erase(T* at) noexcept {
        std::memmove(static_cast<void*>(at), at + 1, static_cast<std::size_t>(end() - (at + 1)) * sizeof(T));
        --m_size;
        return at;
    }
    void swap(trivial_vector& other) noexcept {
        T* data = m_data;
        m_data = other.m_data;
        other.m_data = data;
        const std::size_t size = m_size, capacity = m_capacity;
        m_size = other.m_size;
        m_capacity = other.m_capacity;
        other.m_size = size;
        other.m_capacity = capacity;
    }

private:
    void reallocate(std::size_t capacity) {
        // capacity * sizeof(T) must not wrap: a few bytes taken for a huge capacity would be
        // written past (std::vector throws length_error there; bad_alloc is what we promise).
        if (capacity > static_cast<std::size_t>(-1) / sizeof(T)) throw_bad_alloc();
        T* fresh = static_cast<T*>(::operator new(capacity * sizeof(T)));
        if (m_size != 0) std::memcpy(static_cast<void*>(fresh), m_data, m_size * sizeof(T));
        ::operator delete(m_data);
        m_data = fresh;
        m_capacity = capacity;
    }
    /// reallocate, then appends `value` (which may live in the old array).
    void reallocate(std::size_t capacity, const T& value) {
        const T copy = value;
        reallocate(capacity);
        m_data[m_size] = copy;
    }

    T* m_data = nullptr;
    std::size_t m_size = 0;
    std::size_t m_capacity = 0;
};

} // namespace tandem::detail
