// tandem — the remote call: how process_pool turns fn(args...) into a job frame and back.
// What a job's function may be (a function pointer, or a capture-less lambda rebuilt in the
// worker), which types its arguments travel as, the entry points a worker runs (call_entry,
// map_entry), and the decoding of a worker's reply.
//
// Layer: process. Knows the codec and the channel's payloads; knows nothing of pools, workers
// or the loop.
#pragma once

#include "tandem/codec.hpp"
#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_function.hpp"
#include "tandem/error.hpp"
#include "tandem/process/channel.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem::detail {

/// What a job's function is: a pointer (its address travels) or a stateless callable type
/// (default-constructed in the worker).
template <class Fn>
inline constexpr bool remote_callable =
    (std::is_pointer_v<Fn> && std::is_function_v<std::remove_pointer_t<Fn>>) ||
    (std::is_class_v<Fn> && std::is_empty_v<Fn> && std::is_default_constructible_v<Fn>);

template <class Fn>
Fn resolve_callable(std::uintptr_t bits) {
    if constexpr (std::is_pointer_v<Fn>) {
        return reinterpret_cast<Fn>(bits);
    } else {
        (void)bits;
        return Fn{};
    }
}

template <class Fn>
std::uintptr_t callable_bits(const Fn& fn) {
    if constexpr (std::is_pointer_v<Fn>) {
        return reinterpret_cast<std::uintptr_t>(fn);
    } else {
        (void)fn;
        return 0;
    }
}

/// The argument types a job carries: a function pointer's parameters (decayed), otherwise
/// the decayed types passed.
template <class Fn, class... Args>
struct remote_params {
    using type = std::tuple<std::decay_t<Args>...>;
};
template <class R, class... P, class... Args>
struct remote_params<R (*)(P...), Args...> {
    using type = std::tuple<std::decay_t<P>...>;
};
template <class R, class... P, class... Args>
struct remote_params<R (*)(P...) noexcept, Args...> {
    using type = std::tuple<std::decay_t<P>...>;
};

template <class Fn, class Params>
struct remote_result;
template <class Fn, class... A>
struct remote_result<Fn, std::tuple<A...>> {
    using type = std::remove_cvref_t<std::invoke_result_t<Fn&, A&&...>>;
};

template <class Fn, class... Args>
using remote_result_t = typename remote_result<Fn, typename remote_params<Fn, Args...>::type>::type;

template <class R, class Fn, class... A>
outgoing_payload call_entry(std::uintptr_t fn_bits, const std::byte* data, std::size_t size) {
    decoder in(data, size, &populate_pages);
    std::tuple<A...> args{codec<A>::decode(in)...}; // braced: decoded left to right
    if (in.remaining() != 0) throw codec_error("tandem: trailing bytes after a job's arguments");
    Fn fn = resolve_callable<Fn>(fn_bits);
    if constexpr (std::is_void_v<R>) {
        std::apply(fn, std::move(args));
        return outgoing_payload{};
    } else {
        const R result = std::apply(fn, std::move(args));
        return outgoing_payload::of(result);
    }
}

template <class R, class Fn, class T>
outgoing_payload map_entry(std::uintptr_t fn_bits, const std::byte* data, std::size_t size) {
    const std::vector<T> items = tandem::decode<std::vector<T>>(data, size, &populate_pages);
    Fn fn = resolve_callable<Fn>(fn_bits);
    std::vector<R> results;
    results.reserve(items.size());
    for (const T& x : items) results.push_back(fn(x));
    return outgoing_payload::of(results);
}

template <class R, class Fn, class Params>
struct entry_for;
template <class R, class Fn, class... A>
struct entry_for<R, Fn, std::tuple<A...>> {
    static constexpr job_entry value = &call_entry<R, Fn, A...>;
    template <class... Args>
    static outgoing_payload encode(Args&&... args) {
        return encode_as<A...>(static_cast<Args&&>(args)...);
    }

private:
    template <class... Want, class... Args>
    static outgoing_payload encode_as(Args&&... args) {
        // Values of the parameter's own type are encoded in place (a 64 MiB vector is not
        // copied first); others are converted, as the call would.
        return outgoing_payload::of(param_view<Want>(static_cast<Args&&>(args))...);
    }
    template <class Want, class Arg>
    static decltype(auto) param_view(Arg&& arg) {
        if constexpr (std::is_same_v<std::remove_cvref_t<Arg>, Want>) {
            return static_cast<const Want&>(arg);
        } else {
            return Want(static_cast<Arg&&>(arg));
        }
    }
};

/// The worker's reply as an R, or its exception as a remote_error.
template <class R>
R decode_reply(const incoming_frame& f, bool& decoded) {
    try {
        if (f.header.kind() == frame_kind::error) {
            auto [type, what] = tandem::decode<dependent_t<std::pair<std::string, std::string>, R>>(f.data(), f.size());
            throw remote_error(std::move(type), std::move(what));
        }
        if constexpr (std::is_void_v<R>) {
            if (f.size() != 0) throw codec_error("tandem: trailing bytes after a void result");
        } else {
            return tandem::decode<R>(f.data(), f.size(), &populate_pages);
        }
    } catch (const codec_error&) {
        decoded = false;
        throw;
    }
}

} // namespace tandem::detail
