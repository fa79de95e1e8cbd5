# The ARM check: configure a cross build (cmake/toolchains/aarch64-linux-gnu.cmake) of
# the kernel list for arm-64-linux, its runtime and C++ tests, with the host build's
# generators; build it; run its C++ tests under qemu-aarch64 (ctest in the cross tree).
# Arguments: SOURCE_DIR, HOST_BUILD_DIR, WORK_DIR, HALIDE_DIR, GENERATOR.
function(run)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
    if (NOT rc EQUAL 0)
        list(JOIN ARGN " " cmd)
        message(FATAL_ERROR "arm64: '${cmd}' failed (${rc})")
    endif ()
endfunction()

if (NOT EXISTS "${WORK_DIR}/CMakeCache.txt")
    run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}" -G "${GENERATOR}"
        -DCMAKE_BUILD_TYPE=Release
        -DCMAKE_TOOLCHAIN_FILE=${SOURCE_DIR}/cmake/toolchains/aarch64-linux-gnu.cmake
        -DHalide_DIR=${HALIDE_DIR}
        -DNORMGEN_HOST_GENERATORS=${HOST_BUILD_DIR}/normgen_generators
        "-DNORMGEN_CPU_TARGETS=arm-64-linux-user_context-large_buffers"
        -DNORMGEN_CUDA_TARGET=
        -DNORMGEN_TUNED_TABLE=)
endif ()
cmake_host_system_information(RESULT ncpu QUERY NUMBER_OF_LOGICAL_CORES)
run("${CMAKE_COMMAND}" --build "${WORK_DIR}" -j ${ncpu})
run("${CMAKE_CTEST_COMMAND}" --test-dir "${WORK_DIR}" --output-on-failure)
