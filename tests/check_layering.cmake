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

# The HTTP parser, messages, router and JSON writer are pure too: bytes in, values out.
foreach(header task.hpp when.hpp sync.hpp error.hpp source_location.hpp codec.hpp detail/cancellable_wait.hpp
               http/parser.hpp http/header_list.hpp http/message.hpp http/router.hpp http/json.hpp http/server_options.hpp)
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
    if(file MATCHES "tandem/(net|signal|thread_pool|process_pool|codec|http)\\.hpp$|tandem/(http|process|net)/|detail/(pool_awaiter|zygote|process_channel)\\.hpp$")
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

# The layer table (DESIGN.md), for what the core check above does not cover. Each rule: a
# header, and tandem headers it must never reach (directly or through others).
function(tandem_forbid header pattern why)
    tandem_headers_reached("${header}" reached)
    foreach(file IN LISTS reached)
        if(file MATCHES "${pattern}")
            message(FATAL_ERROR "${header} reaches ${file}: ${why}")
        endif()
    endforeach()
endfunction()

# detail/ is the basement: it does not climb to the loop. One named floor is the exception,
# "detail (offload)": the pool-job lifecycle posts a finished job to its loop
# (detail/pool_job.hpp) and the run() awaiter suspends on one (detail/pool_awaiter.hpp).
set(detail_offload_floor pool_job.hpp pool_awaiter.hpp)
file(GLOB detail_headers RELATIVE "${INCLUDE_DIR}/tandem/detail" "${INCLUDE_DIR}/tandem/detail/*.hpp")
foreach(header IN LISTS detail_headers)
    list(FIND detail_offload_floor "${header}" on_offload_floor)
    if(on_offload_floor GREATER -1)
        continue()
    endif()
    tandem_forbid("detail/${header}" "tandem/loop\\.hpp$"
        "detail/ must not include the event loop (only the detail (offload) floor: ${detail_offload_floor})")
endforeach()

# The two pools are siblings: neither includes the other.
tandem_forbid(process_pool.hpp "tandem/thread_pool\\.hpp$" "the pools are siblings")
tandem_forbid(thread_pool.hpp "tandem/process_pool\\.hpp$" "the pools are siblings")

# The process/ wing stands below its face, and its ground floor (what a pool or a cluster
# forks, reaps and watches processes with) knows nothing of pools, jobs or the loop.
file(GLOB process_headers RELATIVE "${INCLUDE_DIR}/tandem" "${INCLUDE_DIR}/tandem/process/*.hpp")
foreach(header IN LISTS process_headers)
    tandem_forbid("${header}" "tandem/process_pool\\.hpp$" "the wing must not include its face")
    tandem_forbid("${header}" "tandem/thread_pool\\.hpp$" "the process wing does not need the thread pool")
endforeach()
foreach(header exit_status.hpp pidfd.hpp descriptors.hpp parent_death.hpp fork.hpp start_board.hpp channel.hpp zygote.hpp)
    tandem_forbid("process/${header}" "tandem/(loop|task|detail/pool_job)\\.hpp$"
        "the process wing's ground floor knows nothing of the loop, tasks or pool jobs")
endforeach()
# Leaves of the basement that every layer may use: they include no other tandem header.
foreach(header detail/dependent.hpp detail/trivial_vector.hpp detail/ring_queue.hpp)
    tandem_headers_reached("${header}" reached)
    list(LENGTH reached n)
    if(NOT n EQUAL 1)
        message(FATAL_ERROR "${header} includes other tandem headers: ${reached}")
    endif()
endforeach()
list(LENGTH detail_headers nd)
list(LENGTH process_headers np)
message(STATUS "layer table: ${nd} detail/ headers (the offload floor excepted) do not reach the loop; "
               "the pools do not include each other; ${np} process/ headers stay below their face")

# net/ is the I/O layer: none of it reaches a protocol. An address is a value: it does not
# reach the loop. Name resolution needs addresses and the loop, not sockets.
file(GLOB net_headers RELATIVE "${INCLUDE_DIR}/tandem" "${INCLUDE_DIR}/tandem/net/*.hpp")
foreach(header IN LISTS net_headers)
    tandem_forbid("${header}" "tandem/(http|process|cluster)/|tandem/(http|process_pool|cluster)\\.hpp$"
        "the I/O layer knows nothing of protocols or pools")
endforeach()
tandem_forbid(net/address.hpp "tandem/loop\\.hpp$" "an address is a value")
tandem_forbid(net/resolve.hpp "tandem/net/(socket|stream|tcp|unix|udp)\\.hpp$" "resolving opens no socket")
# http::server's implementation parts (http/detail/server_*.hpp) are reached through the
# server alone: the client side never pulls in the server.
tandem_forbid(http/client.hpp "tandem/http/(server|server_options|detail/server_[a-z]+)\\.hpp$" "the client does not need the server")
list(LENGTH net_headers nn)
message(STATUS "net/: ${nn} headers reach no protocol; address.hpp not the loop, resolve.hpp no socket")

# The cluster runs any protocol: cluster.hpp and its wing never reach http/.
tandem_forbid(cluster.hpp "tandem/http" "the cluster does not know HTTP")
message(STATUS "cluster.hpp: does not reach http/")

# Include cost: the standard headers that cost most and give tandem least come in through the
# lean headers in detail/ (libstdc++'s internal parts of <chrono>, <functional>, <algorithm>),
# and the map codec needs neither <map> nor <unordered_map> (bench/README.md, "Include cost").
file(GLOB_RECURSE all_headers "${INCLUDE_DIR}/tandem/*.hpp")
set(heavy_pattern "#[ \t]*include[ \t]*<(chrono|functional|algorithm|map|unordered_map)>")
foreach(file IN LISTS all_headers)
    if(file MATCHES "tandem/detail/std_(chrono|function|algorithm|map)\\.hpp$")
        continue()
    endif()
    file(STRINGS "${file}" heavy REGEX "${heavy_pattern}")
    if(heavy)
        message(FATAL_ERROR "${file} includes ${heavy}: include tandem/detail/std_chrono.hpp, std_function.hpp "
                            "or std_algorithm.hpp instead (a map type is recognised by shape in codec.hpp)")
    endif()
endforeach()
message(STATUS "no tandem header includes <chrono>, <functional>, <algorithm>, <map> or <unordered_map> directly")
