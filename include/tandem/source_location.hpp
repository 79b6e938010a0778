// tandem — source_location that works on every supported compiler.
// clang 14 cannot use libstdc++ 12's std::source_location (it lacks
// __builtin_source_location), but g++ and clang both have __builtin_FILE/LINE/FUNCTION.
// Layer: core (no OS headers).
#pragma once

namespace tandem {

class source_location {
public:
    static constexpr source_location current(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE(),
                                             const char* function = __builtin_FUNCTION()) noexcept {
        source_location loc;
        loc.m_file = file;
        loc.m_line = line;
        loc.m_function = function;
        return loc;
    }
    constexpr source_location() noexcept = default;
    constexpr const char* file_name() const noexcept { return m_file; }
    constexpr unsigned line() const noexcept { return m_line; }
    constexpr const char* function_name() const noexcept { return m_function; }

private:
    const char* m_file = "";
    const char* m_function = "";
    unsigned m_line = 0;
};

} // namespace tandem
