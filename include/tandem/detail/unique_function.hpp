// tandem — move-only type-erased void() callable with small-buffer storage. Layer: detail.
// std::function needs copyable callables and std::move_only_function is C++23.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace tandem::detail {

class unique_function {
public:
    unique_function() noexcept = default;

    template <class F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, unique_function> && std::is_invocable_v<std::decay_t<F>&>)
    unique_function(F&& fn) { // NOLINT: implicit by design, like std::function
        using Fn = std::decay_t<F>;
        if constexpr (fits_inline<Fn>) {
            ::new (static_cast<void*>(m_storage)) Fn(static_cast<F&&>(fn));
            m_ops = &inline_ops<Fn>;
        } else {
            ::new (static_cast<void*>(m_storage)) Fn*(new Fn(static_cast<F&&>(fn)));
            m_ops = &heap_ops<Fn>;
        }
    }

    unique_function(unique_function&& other) noexcept : m_ops(std::exchange(other.m_ops, nullptr)) {
        if (m_ops) m_ops->move(m_storage, other.m_storage);
    }
    unique_function& operator=(unique_function&& other) noexcept {
        if (this != &other) {
            reset();
            m_ops = std::exchange(other.m_ops, nullptr);
            if (m_ops) m_ops->move(m_storage, other.m_storage);
        }
        return *this;
    }
    ~unique_function() { reset(); }

    explicit operator bool() const noexcept { return m_ops != nullptr; }
    void operator()() { m_ops->call(m_storage); }

private:
    static constexpr std::size_t inline_size = 3 * sizeof(void*);
    template <class Fn>
    static constexpr bool fits_inline = sizeof(Fn) <= inline_size && alignof(Fn) <= alignof(std::max_align_t) &&
                                        std::is_nothrow_move_constructible_v<Fn>;

    struct ops {
        void (*call)(void*);
        void (*move)(void* dst, void* src) noexcept; // move-constructs into dst, destroys src
        void (*destroy)(void*) noexcept;
    };
    template <class Fn>
    static constexpr ops inline_ops{
        [](void* p) { (*static_cast<Fn*>(p))(); },
        [](void* dst, void* src) noexcept {
            ::new (dst) Fn(std::move(*static_cast<Fn*>(src)));
            static_cast<Fn*>(src)->~Fn();
        },
        [](void* p) noexcept { static_cast<Fn*>(p)->~Fn(); },
    };
    template <class Fn>
    static constexpr ops heap_ops{
        [](void* p) { (**static_cast<Fn**>(p))(); },
        [](void* dst, void* src) noexcept { ::new (dst) Fn*(*static_cast<Fn**>(src)); },
        [](void* p) noexcept { delete *static_cast<Fn**>(p); },
    };

    void reset() noexcept {
        if (m_ops) std::exchange(m_ops, nullptr)->destroy(m_storage);
    }

    alignas(std::max_align_t) unsigned char m_storage[inline_size];
    const ops* m_ops = nullptr;
};

} // namespace tandem::detail
