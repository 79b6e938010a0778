# Layering check: the core headers (and every tandem header they reach) include no OS header
# and not the event loop. The standard library may use OS headers internally (libstdc++'s
# <stop_token> reaches <unistd.h> for futexes); what matters is that tandem's core does not.
cmake_minimum_required(VERSION 3.25) # policies for if(IN_LIST) in script mode
set(os_header_pattern "#[ \t]*include[ \t]*<(sys/[a-z_]+\\.h|unistd\\.h|fcntl\\.h|poll\\.h|signal\\.h|csignal|netinet/[a-z_]+\\.h|arpa/[a-z_]+\\.h)>")

# The tandem headers that tandem/<header> reaches, as absolute paths.
function(tandem_headers_reached header out)
    execute_process(
        COMMAND "${CXX}" -std=c++20 -x c++ -M -I "${INCLUDE_DIR}" "${INCLUDE_DIR}/tandem/${header}"
        OUTPUT_VARIABLE deps RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "${header}: preprocessing failed")
    endif()
    string(REGEX MATCHALL "[^ \t\n\\\\]*/include/tandem/[^ \t\n\\\\]+" reached "${deps}")
    list(REMOVE_DUPLICATES reached)
    set(${out} "${reached}" PARENT_SCOPE)
endfunction()

foreach(header task.hpp when.hpp sync.hpp error.hpp source_location.hpp codec.hpp detail/cancellable_wait.hpp)
    tandem_headers_reached(${header} reached)
    foreach(file IN LISTS reached)
        if(file MATCHES "tandem/loop\\.hpp$")
            message(FATAL_ERROR "${header} reaches the event loop (${file})")
        endif()
        file(STRINGS "${file}" bad REGEX "${os_header_pattern}")
        if(bad)
            message(FATAL_ERROR "${header} reaches ${file}, which includes an OS header: ${bad}")
        endif()
    endforeach()
    list(LENGTH reached n)
    message(STATUS "${header}: ${n} tandem headers reached, none includes an OS header")
endforeach()

# The narrow umbrella: <tandem/core.hpp> is the loop and coroutines only, so a program that
# includes it pays for no socket, pool, process, signal or HTTP code (README, "Headers").
tandem_headers_reached(core.hpp reached)
foreach(file IN LISTS reached)
    if(file MATCHES "tandem/(net|signal|thread_pool|process_pool|codec|http)\\.hpp$|tandem/(http|process)/|detail/(pool_awaiter|zygote|process_channel)\\.hpp$")
        message(FATAL_ERROR "core.hpp reaches ${file}, which is not the core")
    endif()
endforeach()
list(LENGTH reached n)
message(STATUS "core.hpp: ${n} tandem headers reached, all of the core")

# The full umbrella: <tandem/tandem.hpp> reaches every public header (a new one is not forgotten).
tandem_headers_reached(tandem.hpp reached)
file(GLOB_RECURSE public RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/tandem/*.hpp")
foreach(header IN LISTS public)
    if(NOT header MATCHES "/detail/" AND NOT "${INCLUDE_DIR}/${header}" IN_LIST reached)
        message(FATAL_ERROR "tandem.hpp does not reach the public header ${header}")
    endif()
endforeach()
message(STATUS "tandem.hpp reaches every public header")
