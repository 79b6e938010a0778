# Layering check: the core headers (and every tandem header they reach) include no OS header
# and not the event loop. The standard library may use OS headers internally (libstdc++'s
# <stop_token> reaches <unistd.h> for futexes); what matters is that tandem's core does not.
set(os_header_pattern "#[ \t]*include[ \t]*<(sys/[a-z_]+\\.h|unistd\\.h|fcntl\\.h|poll\\.h|signal\\.h|csignal|netinet/[a-z_]+\\.h|arpa/[a-z_]+\\.h)>")
# Every file the preprocessor reads for tandem/<header>.
function(header_dependencies header out)
    execute_process(
        COMMAND "${CXX}" -std=c++20 -x c++ -M -I "${INCLUDE_DIR}" "${INCLUDE_DIR}/tandem/${header}"
        OUTPUT_VARIABLE deps RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "${header}: preprocessing failed")
    endif()
    set(${out} "${deps}" PARENT_SCOPE)
endfunction()

foreach(header task.hpp when.hpp sync.hpp error.hpp source_location.hpp codec.hpp)
    header_dependencies(${header} deps)
    string(REGEX MATCHALL "[^ \t\n\\\\]*/include/tandem/[^ \t\n\\\\]+" reached "${deps}")
    list(REMOVE_DUPLICATES reached)
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

# The cluster runs any protocol: cluster.hpp and its wing never reach http/.
header_dependencies(cluster.hpp deps)
if(deps MATCHES "tandem/http")
    message(FATAL_ERROR "cluster.hpp reaches the HTTP layer")
endif()
message(STATUS "cluster.hpp: does not reach http/")
