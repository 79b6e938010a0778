# A file that must not compile, and the words its diagnostic must contain (each a regex):
#   cmake -DCXX=... -DINCLUDE_DIR=... -DSOURCE=... -DEXPECT="a;b" -P check_compile_fail.cmake
# Catches both regressions: the misuse compiling after all, and the error turning back into
# pages of template noise that never says what to do.
execute_process(
    COMMAND "${CXX}" -std=c++20 -fsyntax-only -I "${INCLUDE_DIR}" "${SOURCE}"
    OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(rc EQUAL 0)
    message(FATAL_ERROR "${SOURCE} compiled, but must not")
endif()
foreach(pattern IN LISTS EXPECT)
    if(NOT err MATCHES "${pattern}")
        message(FATAL_ERROR "${SOURCE}: the diagnostic does not say `${pattern}`:\n${err}")
    endif()
endforeach()
string(REGEX MATCHALL "error:" errors "${err}")
list(LENGTH errors n)
if(n GREATER 3)
    message(FATAL_ERROR "${SOURCE}: ${n} errors, expected one clear one:\n${err}")
endif()
message(STATUS "${SOURCE}: fails to compile with ${n} error(s), naming what it must")
