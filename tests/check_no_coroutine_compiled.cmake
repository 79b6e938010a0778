# Include cost: a translation unit that includes tandem.hpp and calls nothing must compile no
# coroutine. g++ at -O0 emits every non-template inline coroutine (its actor and destroy
# functions and all they call) in every TU that includes it, used or not; tandem's coroutines
# are templates so that they are compiled only where called (bench/README.md, "Include cost").
# A new non-template coroutine in a header shows here as a `[clone .actor]` symbol.
cmake_minimum_required(VERSION 3.25)
set(tu "${WORK_DIR}/include_only.cpp")
file(WRITE "${tu}" "#include <tandem/tandem.hpp>\n")
execute_process(COMMAND "${CXX}" -std=c++20 -O0 -I "${INCLUDE_DIR}" -c "${tu}" -o "${WORK_DIR}/include_only.o"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "compiling a TU that includes tandem/tandem.hpp failed")
endif()
execute_process(COMMAND "${NM}" -C "${WORK_DIR}/include_only.o" OUTPUT_VARIABLE symbols RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nm failed")
endif()
string(REGEX MATCHALL "[^\n]*\\[clone \\.actor\\][^\n]*" actors "${symbols}")
if(actors)
    list(JOIN actors "\n" listed)
    message(FATAL_ERROR "tandem.hpp alone compiles these coroutines (make them templates: "
                        "template <class = void>, and every non-template caller too):\n${listed}")
endif()
message(STATUS "tandem.hpp alone compiles no coroutine")
