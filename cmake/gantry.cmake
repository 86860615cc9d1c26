# One declarative call per library and per test, after Abseil's absl_cc_library/absl_cc_test.
#
#   gantry_library(NAME engine_gguf SRCS a.cpp b.cpp DEPS gantry_core)
#   gantry_library(NAME api SRCS openai.cpp DEPS gantry_engine_sampling PUBLIC_DEPS Boost::json)
#   gantry_test(NAME gguf_test SRCS gguf_test.cpp DEPS gantry_engine_gguf)
#   gantry_test(NAME integration_test SRCS ... PG_VARIANT)
#
# PG_VARIANT registers every test of the binary a second time, named <test>_pg and labelled `pg`,
# with GANTRY_TEST_STORE=postgresql: the servers the test starts keep their state in the shared
# PostgreSQL cluster of the run (tests/support/store_under_test.h, the gantry_pg fixture).
#
# Libraries are named gantry_<NAME>; includes are rooted at src/ ("engine/gguf/gguf.h").
# DEPS are PRIVATE: a library's users do not see them, so the build (not only the include
# discipline) keeps SQLite and Beast out of the logic libraries. PUBLIC_DEPS are for what the
# library's own headers include (Boost.JSON in api/ headers, say). Static libraries still carry
# PRIVATE deps to the final link.
function(gantry_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(gantry_${ARG_NAME} STATIC ${ARG_SRCS})
  target_include_directories(gantry_${ARG_NAME} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(gantry_${ARG_NAME} PRIVATE ${ARG_DEPS} PUBLIC ${ARG_PUBLIC_DEPS})
endfunction()

function(gantry_test)
  cmake_parse_arguments(ARG "PG_VARIANT" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_include_directories(${ARG_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${ARG_NAME} PRIVATE
    GANTRY_TEST_DATA_DIR="${GANTRY_TEST_DATA_DIR}"
    GANTRY_MODELS_DIR="${GANTRY_MODELS_DIR}"
    GANTRY_BINARY="${CMAKE_BINARY_DIR}/gantry")
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set(_props TIMEOUT ${ARG_TIMEOUT})
  if(ARG_LABELS)
    list(APPEND _props LABELS "${ARG_LABELS}")
  endif()
  gtest_discover_tests(${ARG_NAME} DISCOVERY_MODE PRE_TEST PROPERTIES ${_props})
  if(ARG_PG_VARIANT)
    gtest_discover_tests(${ARG_NAME} DISCOVERY_MODE PRE_TEST TEST_SUFFIX _pg
      TEST_LIST ${ARG_NAME}_pg_tests PROPERTIES TIMEOUT ${ARG_TIMEOUT})
    # gtest_discover_tests flattens list-valued PROPERTIES (two labels, two variables), so they
    # are set by a CTest script included after the discovered list exists.
    set(_pg_labels ${ARG_LABELS} pg)
    set(_pg_env GANTRY_TEST_STORE=postgresql GANTRY_TEST_PG_CLUSTER=${GANTRY_PG_TEST_CLUSTER_DIR})
    set(_pg_script ${CMAKE_CURRENT_BINARY_DIR}/${ARG_NAME}_pg_properties.cmake)
    file(WRITE ${_pg_script}
      "if(${ARG_NAME}_pg_tests)\n"
      "  set_tests_properties(\${${ARG_NAME}_pg_tests} PROPERTIES LABELS \"${_pg_labels}\"\n"
      "    ENVIRONMENT \"${_pg_env}\" FIXTURES_REQUIRED gantry_pg)\n"
      "endif()\n")
    set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${_pg_script})
    add_dependencies(${ARG_NAME} pg_test_cluster)
  endif()
endfunction()
