// tandem — codec<T>: typed byte encoding of process-pool arguments and results (no pickle,
// no schema). Both ends are forks of one binary, so the encoding is the machine's own:
// native byte order and sizes, no versioning.
//
// Layer: offload. Knows nothing of pools, pipes or the loop: bytes in, values out.
//
// Built in: arithmetic types, enums, std::string, std::vector, std::array, std::pair,
// std::tuple, std::optional, maps with unique keys (std::map, std::unordered_map, or any type
// with their key_type, mapped_type and emplace), nested. A vector or array of
// bytewise elements (arithmetic, enums, and types opted in with bytewise_codec) is one memcpy.
// User types either opt in as bytewise or specialize codec:
//
//   template <> struct tandem::codec<point> {
//       static void encode(tandem::encoder& out, const point& p) { out(p.x); out(p.y); }
//       static point decode(tandem::decoder& in) { return {in.get<int>(), in.get<int>()}; }
//   };
//
// A decoder never trusts a length it reads: every read is bounds-checked, and a container's
// element count is checked against the bytes left before anything is allocated, so a
// malformed message is a codec_error, never a huge allocation or an over-read.
#pragma once

#include "tandem/detail/dependent.hpp"
#include "tandem/detail/std_map.hpp"

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace tandem {

/// A message that does not decode: truncated, an impossible length, trailing bytes.
class codec_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Opt a trivially copyable user type into byte-for-byte copying. Only for types whose bytes
/// mean the same in another process: no pointers, no handles.
template <class T>
inline constexpr bool bytewise_codec = std::is_arithmetic_v<T> || std::is_enum_v<T>;

class encoder;
class decoder;

namespace detail {
template <class T>
inline constexpr bool no_codec_for = false; // dependent: fires only when instantiated
} // namespace detail

namespace detail {
/// What codec<T> is when nothing more specialised matches: a map's codec for a type shaped like
/// one (defined below), else one static_assert that names the type (in the "required from"
/// lines above it) and the two ways to opt in, instead of pages of template errors.
template <class T>
struct default_codec;

template <class T>
struct no_codec {
    static_assert(no_codec_for<T>,
                  "tandem: no codec<T> for this type (named in the instantiation above). Opt in with "
                  "`template <> inline constexpr bool tandem::bytewise_codec<T> = true;` for a trivially "
                  "copyable type without pointers, or specialize `tandem::codec<T>` with static encode(encoder&, "
                  "const T&) and decode(decoder&) (see codec.hpp)");
    using unsupported = void;
    // Declared so the failed assertion is the only error; never defined.
    static void encode(encoder&, const T&);
    static T decode(decoder&);
};
} // namespace detail

/// Specialize for your own types (see the header comment). Maps are served by this primary
/// template itself, not by a specialisation, so that any specialisation of a user's, however
/// written (on the type, with `requires`, or with the second parameter), is the one chosen.
template <class T, class = void>
struct codec : detail::default_codec<T> {};

/// Writes encoded bytes. A counting encoder (no buffer) only measures, so a payload is sized
/// first and then encoded once, straight into its destination.
class encoder {
public:
    encoder() noexcept = default; // counting
    encoder(std::byte* data, std::size_t capacity) noexcept : m_data(data), m_capacity(capacity) {}

    void write(const void* bytes, std::size_t n) {
        if (m_data) {
            if (n > m_capacity - m_size) throw codec_error("tandem: encoder overflow (size changed between passes)");
            if (n != 0) std::memcpy(m_data + m_size, bytes, n);
        }
        m_size += n;
    }
    template <class T>
    encoder& operator()(const T& value) {
        codec<T>::encode(*this, value);
        return *this;
    }
    std::size_t size() const noexcept { return m_size; }

private:
    std::byte* m_data = nullptr;
    std::size_t m_capacity = 0;
    std::size_t m_size = 0;
};

class decoder {
public:
    /// `prepare_bulk`, if given, is called on the storage of a large bytewise array before it
    /// is filled (a transport can fault its pages in one go: much faster than one by one).
    decoder(const std::byte* data, std::size_t size, void (*prepare_bulk)(void*, std::size_t) = nullptr) noexcept
        : m_pos(data), m_end(data + size), m_prepare(prepare_bulk) {}

    void read(void* out, std::size_t n) {
        if (n > remaining()) throw codec_error("tandem: truncated message");
        if (n != 0) std::memcpy(out, m_pos, n);
        m_pos += n;
    }
    template <class T>
    T get() {
        return codec<T>::decode(*this);
    }
    std::size_t remaining() const noexcept { return static_cast<std::size_t>(m_end - m_pos); }
    /// Reads a container's element count and checks that that many elements, each taking at
    /// least `min_element_size` bytes, fit in what is left.
    std::size_t get_count(std::size_t min_element_size) {
        std::uint64_t n = 0;
        read(&n, sizeof n);
        const std::size_t floor = min_element_size == 0 ? 1 : min_element_size;
        if (n > remaining() / floor && !(min_element_size == 0 && n <= max_empty_elements))
            throw codec_error("tandem: element count exceeds the message");
        return static_cast<std::size_t>(n);
    }
    /// Elements that encode to nothing (empty tuples) cannot be checked against the bytes.
    static constexpr std::uint64_t max_empty_elements = 1u << 16;

    /// Called with storage about to receive `n` bytes of bulk data.
    void prepare_bulk(void* storage, std::size_t n) const noexcept {
        if (m_prepare && n >= bulk_threshold) m_prepare(storage, n);
    }
    static constexpr std::size_t bulk_threshold = std::size_t{1} << 20;

private:
    const std::byte* m_pos;
    const std::byte* m_end;
    void (*m_prepare)(void*, std::size_t) = nullptr;
};

namespace detail {

template <class T>
concept has_codec = !requires { typename codec<T>::unsupported; } && requires(encoder& e, decoder& d, const T& v) {
    codec<T>::encode(e, v);
    { codec<T>::decode(d) } -> std::same_as<T>;
};

/// The fewest bytes any value of T encodes to (bounds container counts while decoding).
template <class T>
struct min_encoded_size : std::integral_constant<std::size_t, 1> {};

} // namespace detail

/// Bytewise types: their object representation.
template <class T>
struct codec<T, std::enable_if_t<bytewise_codec<T>>> {
    static_assert(std::is_trivially_copyable_v<T>, "tandem: bytewise_codec needs a trivially copyable type");
    static void encode(encoder& out, const T& v) { out.write(&v, sizeof v); }
    static T decode(decoder& in) {
        T v;
        in.read(&v, sizeof v);
        return v;
    }
};

template <>
struct codec<std::string> {
    static void encode(encoder& out, const std::string& s) {
        const std::uint64_t n = s.size();
        out.write(&n, sizeof n);
        out.write(s.data(), s.size());
    }
    static std::string decode(decoder& in) {
        const std::size_t n = in.get_count(1);
        std::string s;
        s.reserve(n);
        in.prepare_bulk(s.data(), n);
        s.resize(n);
        in.read(s.data(), n);
        return s;
    }
};

template <class T, class A>
struct codec<std::vector<T, A>> {
    static void encode(encoder& out, const std::vector<T, A>& v) {
        const std::uint64_t n = v.size();
        out.write(&n, sizeof n);
        if constexpr (bytewise_codec<T>) {
            out.write(v.data(), v.size() * sizeof(T));
        } else {
            for (const T& x : v) codec<T>::encode(out, x);
        }
    }
    static std::vector<T, A> decode(decoder& in) {
        const std::size_t n = in.get_count(detail::min_encoded_size<T>::value);
        std::vector<T, A> v;
        if constexpr (bytewise_codec<T>) {
            v.reserve(n);
            in.prepare_bulk(v.data(), n * sizeof(T));
            v.resize(n);
            in.read(v.data(), n * sizeof(T));
        } else {
            v.reserve(n);
            for (std::size_t i = 0; i < n; ++i) v.push_back(codec<T>::decode(in));
        }
        return v;
    }
};

template <class T, std::size_t N>
struct codec<std::array<T, N>> {
    static void encode(encoder& out, const std::array<T, N>& a) {
        if constexpr (bytewise_codec<T>) {
            out.write(a.data(), sizeof a);
        } else {
            for (const T& x : a) codec<T>::encode(out, x);
        }
    }
    static std::array<T, N> decode(decoder& in) {
        if constexpr (bytewise_codec<T>) {
            std::array<T, N> a;
            in.read(a.data(), sizeof a);
            return a;
        } else {
            return [&]<std::size_t... I>(std::index_sequence<I...>) {
                // Braced initialization evaluates left to right.
                return std::array<T, N>{((void)I, codec<T>::decode(in))...};
            }(std::make_index_sequence<N>{});
        }
    }
};

template <class... T>
struct codec<std::tuple<T...>> {
    static void encode(encoder& out, const std::tuple<T...>& t) {
        std::apply([&](const T&... x) { (codec<T>::encode(out, x), ...); }, t);
    }
    static std::tuple<T...> decode(decoder& in) {
        return std::tuple<T...>{codec<T>::decode(in)...}; // braced: left to right
    }
};

template <class A, class B>
struct codec<std::pair<A, B>> {
    static void encode(encoder& out, const std::pair<A, B>& p) {
        codec<A>::encode(out, p.first);
        codec<B>::encode(out, p.second);
    }
    static std::pair<A, B> decode(decoder& in) { return std::pair<A, B>{codec<A>::decode(in), codec<B>::decode(in)}; }
};

template <class T>
struct codec<std::optional<T>> {
    static void encode(encoder& out, const std::optional<T>& o) {
        const std::uint8_t engaged = o.has_value();
        out.write(&engaged, 1);
        if (o) codec<T>::encode(out, *o);
    }
    static std::optional<T> decode(decoder& in) {
        std::uint8_t engaged = 0;
        in.read(&engaged, 1);
        if (engaged > 1) throw codec_error("tandem: malformed optional");
        if (!engaged) return std::nullopt;
        return codec<T>::decode(in);
    }
};

namespace detail {

template <class Map>
struct map_codec {
    using key = typename Map::key_type;
    using mapped = typename Map::mapped_type;
    static void encode(encoder& out, const Map& m) {
        const std::uint64_t n = m.size();
        out.write(&n, sizeof n);
        // .first and .second, what unique_key_map asks of an entry: a structured binding would
        // take an entry's members in declaration order, whatever they are called.
        for (const auto& entry : m) {
            codec<key>::encode(out, entry.first);
            codec<mapped>::encode(out, entry.second);
        }
    }
    static Map decode(decoder& in) {
        const std::size_t n = in.get_count(min_encoded_size<key>::value + min_encoded_size<mapped>::value);
        Map m;
        for (std::size_t i = 0; i < n; ++i) {
            key k = codec<key>::decode(in);
            mapped v = codec<mapped>::decode(in);
            if (!m.emplace(std::move(k), std::move(v)).second) throw codec_error("tandem: duplicate key in a map");
        }
        return m;
    }
};

template <class T>
    requires bytewise_codec<T>
struct min_encoded_size<T> : std::integral_constant<std::size_t, sizeof(T)> {};
template <>
struct min_encoded_size<std::string> : std::integral_constant<std::size_t, 8> {};
template <class T, class A>
struct min_encoded_size<std::vector<T, A>> : std::integral_constant<std::size_t, 8> {};
template <class T, std::size_t N>
struct min_encoded_size<std::array<T, N>> : std::integral_constant<std::size_t, N * min_encoded_size<T>::value> {};
template <class... T>
struct min_encoded_size<std::tuple<T...>> : std::integral_constant<std::size_t, (std::size_t{0} + ... + min_encoded_size<T>::value)> {};
template <class A, class B>
struct min_encoded_size<std::pair<A, B>>
    : std::integral_constant<std::size_t, min_encoded_size<A>::value + min_encoded_size<B>::value> {};

} // namespace detail

namespace detail {

/// A map whose keys are unique: std::map, std::unordered_map, and the like. Recognised by shape
/// rather than named, so this header need not include <map> and <unordered_map> (a tenth of a
/// billion compiler instructions in every translation unit, used by few) and other maps work too.
/// A multimap's emplace returns no bool, so multimaps are not maps here.
template <class M>
concept unique_key_map = requires(M& m, const M& c, typename M::key_type&& k, typename M::mapped_type&& v) {
    typename M::key_type;
    typename M::mapped_type;
    { c.size() } -> std::convertible_to<std::size_t>;
    { m.emplace(std::move(k), std::move(v)).second } -> std::convertible_to<bool>;
    c.begin()->first;
    c.begin()->second;
};

template <class T>
struct default_codec : no_codec<T> {};
template <unique_key_map M>
struct default_codec<M> : map_codec<M> {};

} // namespace detail

/// The encoded size of values, without encoding them.
template <class... T>
std::size_t encoded_size(const T&... values) {
    encoder counter;
    (counter(values), ...);
    return counter.size();
}

/// Encodes values into a new byte vector (tests, custom transports).
template <class... T>
std::vector<std::byte> encode(const T&... values) {
    // Named through T, so that clang compiles the vector's members only where encode is used
    // (detail/dependent.hpp). (The return type stays plain: the class is needed anyway.)
    detail::dependent_t<std::vector<std::byte>, void(const T&...)> bytes(encoded_size(values...));
    encoder out(bytes.data(), bytes.size());
    (out(values), ...);
    return bytes;
}

/// Decodes one T that must fill the bytes exactly.
template <class T>
T decode(const std::byte* data, std::size_t size, void (*prepare_bulk)(void*, std::size_t) = nullptr) {
    decoder in(data, size, prepare_bulk);
    T value = codec<T>::decode(in);
    if (in.remaining() != 0) throw codec_error("tandem: trailing bytes after a message");
    return value;
}

} // namespace tandem
