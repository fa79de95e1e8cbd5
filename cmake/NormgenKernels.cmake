# Expands normgen kernel lists into Halide libraries and dispatch-table rows. The list
# (generators/kernels.list) is the single source of truth: nothing here names an op.
#
# In normgen's own build:
#   normgen_build_kernel_table(LIST <file> [TUNED <file>] GENERATOR <generator target>
#                              RUNTIME <runtime target> TABLE <output .inc> OUT_LIBS <var>)
# Each kernel becomes a static Halide library named after the kernel; the table file
# gets one `NORMGEN_KERNEL(...)` row per kernel and the header includes it needs.
# TUNED: a tuned table (schedules/tuned/, written by `normgen-tune export`) in the same
# grammar, whose lines carry the winning `schedule=`, usually a `shape=` (rows x cols,
# or N x C x spatial) and the `threads=` it was tuned at: the runtime prefers a kernel
# whose shape is the call's, then a tuned kernel without a shape, then the kernel
# list's — a tuned kernel only when the call runs on its thread count, and, when its
# line has `cpu=` (the tuning machine's instruction-set feature, e.g. avx512_zen4), only
# on CPUs that have that feature: a schedule tuned on one instruction set is no evidence
# for another (they are still compiled for every target, so they run anywhere when
# called directly, and NORMGEN_TUNED_ANY_CPU=1 dispatches them on any CPU, for tests).
#
# In a consumer project (installed with normgen; find_package(normgen) includes it):
#   normgen_add_kernels(TARGET <your target>
#                       [OPS <op>...] [DIRECTIONS fwd|bwd...] [DTYPES f32|f16|bf16...]
#                       [LAYOUTS contig|nchw|nhwc|strided...] [VARIANTS key=value...]
#                       [SHAPES [<op>:]<shape>...] [TUNED_TABLE <file>] [TARGETS <halide target>...])
# generates, from the installed generators, the kernels of the installed kernel list
# that pass the filters (default: all) for TARGETS (default: the targets normgen was
# built for), plus the TUNED_TABLE rows that pass them, adds them to <your target> with
# a source that registers them with the runtime when it loads (normgen/kernel_registry.h),
# and links <your target> to normgen::normgen. With SHAPES, the kernel-list lines give
# shape-specialized kernels instead of generic ones: a 2-D shape (rows x cols) for the
# row layouts (contig), N x C x spatial... (spatial dims multiplied) for nchw/nhwc;
# "<op>:" limits a shape to one op. Dispatch then prefers them at exactly that shape.
# Kernel names get the prefix "<your target>_" (as a C identifier), so
# normgen::last_kernel() tells them apart.
# Target strings per target class. CPU: multi-target, best first; the Halide runtime
# picks the first whose features this CPU has, the last is the baseline. Zen 4 gets
# its own feature (not the Sapphire Rapids one, whose AVX512-FP16/VNNI it lacks).
set(NORMGEN_X86_FEATURES "user_context-large_buffers" CACHE STRING "features added to every x86 target")
set(NORMGEN_CPU_TARGETS
    "x86-64-linux-avx-avx2-avx512-avx512_cannonlake-avx512_skylake-avx512_zen4-f16c-fma-sse41-${NORMGEN_X86_FEATURES}"
    "x86-64-linux-avx-avx2-f16c-fma-sse41-${NORMGEN_X86_FEATURES}"
    "x86-64-linux-sse41-${NORMGEN_X86_FEATURES}"
    CACHE STRING "Halide targets of the cpu kernels (multi-target, best first)")
# CUDA: one target. Compute capability 8.0 PTX runs on Ampere and (JIT-compiled by the
# driver) on every later GPU; Halide 21 knows no capability above 8.6. The host part
# only launches kernels, so its baseline ISA is enough.
set(NORMGEN_CUDA_TARGET "x86-64-linux-sse41-cuda-cuda_capability_80-${NORMGEN_X86_FEATURES}"
    CACHE STRING "Halide target of the cuda kernels (empty: no cuda kernels)")

# The instruction-set features a tuned line's `cpu=` may name (Halide's names; the
# runtime's table in kernel_table.cpp maps the same ones).
set(NORMGEN_CPU_FEATURE_NAMES "sse41|avx|avx2|fma|f16c|avx512|avx512_skylake|avx512_cannonlake|avx512_zen4|avx512_sapphirerapids")

# The target class of a list of Halide targets: cuda when they name the cuda feature.
function(_normgen_target_class out)
    set(c cpu)
    foreach (t IN LISTS ARGN)
        if (t MATCHES "(^|-)cuda(-|$)")
            set(c cuda)
        endif ()
    endforeach ()
    set(${out} "${c}" PARENT_SCOPE)
endfunction()

function(_normgen_abbrev key out)
    string(REPLACE "_" ";" parts "${key}")
    set(a "")
    foreach (p IN LISTS parts)
        string(SUBSTRING "${p}" 0 1 c)
        string(APPEND a "${c}")
    endforeach ()
    set(${out} "${a}" PARENT_SCOPE)
endfunction()

function(_normgen_norm_value v out)
    if (v STREQUAL "true")
        set(v 1)
    elseif (v STREQUAL "false")
        set(v 0)
    endif ()
    set(${out} "${v}" PARENT_SCOPE)
endfunction()

# Fails naming `who` unless every value matches ^(alternatives)$.
function(_normgen_check_values who what alternatives)
    foreach (v IN LISTS ARGN)
        if (NOT v MATCHES "^(${alternatives})$")
            string(REPLACE "|" ", " allowed "${alternatives}")
            message(FATAL_ERROR "${who}: unknown ${what} '${v}' (${allowed})")
        endif ()
    endforeach ()
endfunction()

# The engine: kernel-list (and tuned-table) lines -> add_halide_library calls, the
# header includes and the NORMGEN_KERNEL rows. Options as in normgen_add_kernels.
function(_normgen_expand)
    cmake_parse_arguments(PARSE_ARGV 0 ARG "" "LIST;TUNED;GENERATOR;RUNTIME;PREFIX;WHO;OUT_LIBS;OUT_INCLUDES;OUT_ROWS"
                          "TARGETS;OPS;DIRECTIONS;DTYPES;LAYOUTS;VARIANTS;SHAPES")
    set(libs "")
    set(includes "")
    set(rows "")
    set(ops_seen "")
    _normgen_target_class(tclass ${ARG_TARGETS})
    set(suffix "")
    if (NOT tclass STREQUAL "cpu")
        set(suffix "_${tclass}")  # the same kernel-list line for another class of device
    endif ()
    _normgen_check_values("${ARG_WHO}: DTYPES" dtype "f32|f16|bf16" ${ARG_DTYPES})
    _normgen_check_values("${ARG_WHO}: LAYOUTS" layout "contig|strided|nchw|nhwc" ${ARG_LAYOUTS})
    _normgen_check_values("${ARG_WHO}: DIRECTIONS" direction "fwd|bwd" ${ARG_DIRECTIONS})
    set(variant_filter_keys "")
    set(variant_keys_seen "")
    set(shapes_used "")
    foreach (kv IN LISTS ARG_VARIANTS)
        if (NOT kv MATCHES "^([a-z_0-9]+)=([a-z0-9]+)$")
            message(FATAL_ERROR "${ARG_WHO}: VARIANTS expects key=value, got '${kv}'")
        endif ()
        list(APPEND variant_filter_keys "${CMAKE_MATCH_1}")
        _normgen_norm_value("${CMAKE_MATCH_2}" fv)
        set("want_${CMAKE_MATCH_1}" "${fv}")
    endforeach ()
    # SHAPES entries: "[op:]AxB[xC...]" -> op (or "*"), rank class and the dispatch shape.
    set(shape_entries "")
    foreach (s IN LISTS ARG_SHAPES)
        if (NOT s MATCHES "^(([a-z_]+):)?([1-9][0-9]*(x[1-9][0-9]*)+)$")
            message(FATAL_ERROR "${ARG_WHO}: SHAPES expects [op:]rows x cols or [op:]N x C x spatial..., got '${s}'")
        endif ()
        set(sop "${CMAKE_MATCH_2}")
        if (sop STREQUAL "")
            set(sop "*")
        endif ()
        string(REPLACE "x" ";" dims "${CMAKE_MATCH_3}")
        list(LENGTH dims rank)
        if (rank EQUAL 2)
            list(APPEND shape_entries "${sop}|row|${CMAKE_MATCH_3}")
        else ()
            list(GET dims 0 n)
            list(GET dims 1 c)
            list(SUBLIST dims 2 -1 sp)
            set(sprod 1)
            foreach (v IN LISTS sp)
                math(EXPR sprod "${sprod} * ${v}")
            endforeach ()
            list(APPEND shape_entries "${sop}|channel|${n}x${c}x${sprod}")
        endif ()
    endforeach ()
    list(REMOVE_DUPLICATES shape_entries)  # e.g. 4x8x5x5 and 4x8x25
    foreach (list_file IN ITEMS "${ARG_LIST}" "${ARG_TUNED}")
    if (list_file STREQUAL "")
        continue()
    endif ()
    if (NOT EXISTS "${list_file}")
        message(FATAL_ERROR "${ARG_WHO}: kernel list ${list_file} does not exist")
    endif ()
    set(is_tuned FALSE)
    if (list_file STREQUAL "${ARG_TUNED}")
        set(is_tuned TRUE)
    endif ()
    file(STRINGS "${list_file}" lines)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${list_file}")
    set(lineno 0)
    foreach (line IN LISTS lines)
        math(EXPR lineno "${lineno} + 1")
        set(where "${list_file}:${lineno}")
        string(REGEX REPLACE "#.*$" "" line "${line}")
        string(STRIP "${line}" line)
        if (line STREQUAL "")
            continue()
        endif ()
        separate_arguments(fields UNIX_COMMAND "${line}")
        list(LENGTH fields nf)
        if (nf LESS 4)
            message(FATAL_ERROR "${where}: expected '<op> <dir> dtypes=... layouts=...', got '${line}'")
        endif ()
        list(GET fields 0 op)
        list(GET fields 1 dir)
        if (NOT dir MATCHES "^(fwd|bwd)$")
            message(FATAL_ERROR "${where}: direction must be fwd or bwd, got '${dir}'")
        endif ()
        list(SUBLIST fields 2 -1 kvs)
        set(dtypes "")
        set(layouts "")
        set(schedule "")
        set(shape "")
        set(threads 0)
        set(cpu "")
        set(variant_keys "")
        foreach (kv IN LISTS kvs)
            if (NOT kv MATCHES "^([a-z_0-9]+)=(.+)$")
                message(FATAL_ERROR "${where}: expected key=value, got '${kv}'")
            endif ()
            set(k "${CMAKE_MATCH_1}")
            set(v "${CMAKE_MATCH_2}")
            if (k STREQUAL "dtypes")
                string(REPLACE "," ";" dtypes "${v}")
            elseif (k STREQUAL "layouts")
                string(REPLACE "," ";" layouts "${v}")
            elseif (k STREQUAL "schedule")
                if (NOT v MATCHES "^([a-z_0-9]+:-?[0-9]+)(,[a-z_0-9]+:-?[0-9]+)*$")
                    message(FATAL_ERROR "${where}: schedule= expects knob:value,knob:value, got '${v}'")
                endif ()
                set(schedule "${v}")
            elseif (k STREQUAL "shape")
                if (NOT v MATCHES "^[1-9][0-9]*(x[1-9][0-9]*)*$")
                    message(FATAL_ERROR "${where}: shape= expects sizes like 8192x1024, got '${v}'")
                endif ()
                set(shape "${v}")
            elseif (k STREQUAL "threads")
                if (NOT v MATCHES "^[1-9][0-9]*$")
                    message(FATAL_ERROR "${where}: threads= expects the thread count the schedule was tuned for, got '${v}'")
                endif ()
                set(threads "${v}")
            elseif (k STREQUAL "cpu")
                _normgen_check_values("${where}" cpu "${NORMGEN_CPU_FEATURE_NAMES}" "${v}")
                set(cpu "${v}")
            else ()
                list(APPEND variant_keys "${k}")
                string(REPLACE "," ";" "values_${k}" "${v}")
            endif ()
        endforeach ()
        _normgen_check_values("${where}" dtype "f32|f16|bf16" ${dtypes})
        _normgen_check_values("${where}" layout "contig|strided|nchw|nhwc" ${layouts})
        if (NOT dtypes OR NOT layouts)
            message(FATAL_ERROR "${where}: dtypes= and layouts= are required")
        endif ()
        list(APPEND ops_seen "${op}")
        # The consumer's filters.
        if ((ARG_OPS AND NOT op IN_LIST ARG_OPS) OR (ARG_DIRECTIONS AND NOT dir IN_LIST ARG_DIRECTIONS))
            continue()
        endif ()
        if (ARG_DTYPES)
            string(REPLACE ";" "|" dtype_re "${ARG_DTYPES}")
            list(FILTER dtypes INCLUDE REGEX "^(${dtype_re})$")
        endif ()
        if (ARG_LAYOUTS)
            string(REPLACE ";" "|" layout_re "${ARG_LAYOUTS}")
            list(FILTER layouts INCLUDE REGEX "^(${layout_re})$")
        endif ()
        # Shapes of this line's kernels: its own shape=, the consumer's SHAPES (lines of
        # the kernel list only), or "-" (generic).
        set(line_shapes "-")
        if (shape)
            set(line_shapes "*|any|${shape}")
        elseif (NOT is_tuned AND shape_entries)
            set(line_shapes "")
            foreach (e IN LISTS shape_entries)
                string(REPLACE "|" ";" ef "${e}")
                list(GET ef 0 sop)
                if (sop STREQUAL "*" OR sop STREQUAL op)
                    list(APPEND line_shapes "${e}")
                endif ()
            endforeach ()
        endif ()
        if (NOT dtypes OR NOT layouts OR NOT line_shapes)
            continue()
        endif ()
        list(APPEND variant_keys_seen ${variant_keys})
        list(SORT variant_keys)
        # Cross product of the variant parameters; each combo is "k=v@k=v".
        set(combos "-")
        foreach (k IN LISTS variant_keys)
            set(next "")
            foreach (c IN LISTS combos)
                foreach (v IN LISTS values_${k})
                    _normgen_norm_value("${v}" nv)
                    if (DEFINED want_${k} AND NOT nv STREQUAL want_${k})
                        continue()
                    endif ()
                    if (c STREQUAL "-")
                        list(APPEND next "${k}=${v}")
                    else ()
                        list(APPEND next "${c}@${k}=${v}")
                    endif ()
                endforeach ()
            endforeach ()
            set(combos "${next}")
        endforeach ()
        foreach (d IN LISTS dtypes)
            foreach (l IN LISTS layouts)
                foreach (c IN LISTS combos)
                    foreach (se IN LISTS line_shapes)
                    set(kshape "")
                    if (NOT se STREQUAL "-")
                        string(REPLACE "|" ";" ef "${se}")
                        list(GET ef 1 sclass)
                        list(GET ef 2 kshape)
                        if ((sclass STREQUAL "row" AND NOT l STREQUAL "contig") OR
                            (sclass STREQUAL "channel" AND NOT l MATCHES "^(nchw|nhwc)$"))
                            continue()
                        endif ()
                        list(APPEND shapes_used "${se}")
                    endif ()
                    set(name "${ARG_PREFIX}${op}_${dir}_${d}_${l}")
                    set(params dtype=${d} layout=${l})
                    set(variant "")
                    if (NOT c STREQUAL "-")
                        string(REPLACE "@" ";" pairs "${c}")
                        foreach (pv IN LISTS pairs)
                            string(REGEX MATCH "^([^=]+)=(.*)$" _ "${pv}")
                            set(pk "${CMAKE_MATCH_1}")
                            _normgen_norm_value("${CMAKE_MATCH_2}" pval)
                            _normgen_abbrev("${pk}" ab)
                            string(APPEND name "_${ab}${pval}")
                            list(APPEND params "${pv}")
                            if (variant)
                                string(APPEND variant ",")
                            endif ()
                            string(APPEND variant "${pk}=${pval}")
                        endforeach ()
                    endif ()
                    if (schedule)
                        list(APPEND params "schedule=${schedule}")
                    endif ()
                    # Shaped kernels are named by their shape, shape-generic tuned ones by their knobs.
                    if (kshape)
                        string(APPEND name "_s${kshape}")
                    elseif (schedule)
                        string(MD5 knob_hash "${schedule}")
                        string(SUBSTRING "${knob_hash}" 0 8 knob_hash)
                        string(APPEND name "_k${knob_hash}")
                    endif ()
                    if (NOT threads EQUAL 0)
                        string(APPEND name "_thr${threads}")
                    endif ()
                    string(APPEND name "${suffix}")
                    if (TARGET ${name})
                        message(FATAL_ERROR "${where}: kernel ${name} is listed twice")
                    endif ()
                    add_halide_library(${name} FROM ${ARG_GENERATOR}
                                       GENERATOR ${op}_${dir}
                                       FUNCTION_NAME ${name}
                                       TARGETS ${ARG_TARGETS}
                                       USE_RUNTIME ${ARG_RUNTIME}
                                       PARAMS ${params})
                    list(APPEND libs ${name})
                    string(APPEND includes "#include \"${name}.h\"\n")
                    string(APPEND rows "NORMGEN_KERNEL(${name}, \"${op}\", \"${dir}\", \"${d}\", \"${l}\", \"${variant}\", \"${kshape}\", \"${tclass}\", \"${schedule}\", ${threads}, \"${cpu}\")\n")
                    endforeach ()
                endforeach ()
            endforeach ()
        endforeach ()
    endforeach ()
    endforeach ()
    foreach (k IN LISTS variant_filter_keys)
        if (NOT k IN_LIST variant_keys_seen)
            message(FATAL_ERROR "${ARG_WHO}: VARIANTS names '${k}', which no kernel-list line has")
        endif ()
    endforeach ()
    foreach (e IN LISTS shape_entries)
        if (NOT e IN_LIST shapes_used)
            string(REPLACE "|" ";" ef "${e}")
            list(GET ef 0 sop)
            list(GET ef 1 sclass)
            list(GET ef 2 sshape)
            set(fits "row-layout (contig, rows x cols)")
            if (sclass STREQUAL "channel")
                set(fits "channel-layout (nchw/nhwc, N x C x spatial)")
            endif ()
            message(FATAL_ERROR "${ARG_WHO}: SHAPES entry ${sop}:${sshape} selects no kernel: no selected ${fits} "
                                "kernel of that op passes the filters")
        endif ()
    endforeach ()
    foreach (o IN LISTS ARG_OPS)
        if (NOT o IN_LIST ops_seen)
            list(REMOVE_DUPLICATES ops_seen)
            string(REPLACE ";" ", " known "${ops_seen}")
            message(FATAL_ERROR "${ARG_WHO}: OPS names '${o}', which the kernel list does not have (${known})")
        endif ()
    endforeach ()
    set(${ARG_OUT_LIBS} "${libs}" PARENT_SCOPE)
    set(${ARG_OUT_INCLUDES} "${includes}" PARENT_SCOPE)
    set(${ARG_OUT_ROWS} "${rows}" PARENT_SCOPE)
endfunction()

# normgen's own build: the kernel list (+ tuned table) -> libraries and kernel_table.inc.
function(normgen_build_kernel_table)
    cmake_parse_arguments(PARSE_ARGV 0 ARG "" "LIST;TUNED;GENERATOR;RUNTIME;TABLE;OUT_LIBS" "")
    _normgen_expand(LIST "${ARG_LIST}" TUNED "${ARG_TUNED}" GENERATOR "${ARG_GENERATOR}" RUNTIME "${ARG_RUNTIME}"
                    TARGETS ${NORMGEN_CPU_TARGETS} WHO "normgen_build_kernel_table"
                    OUT_LIBS libs OUT_INCLUDES includes OUT_ROWS rows)
    if (NORMGEN_CUDA_TARGET)  # the kernel list again for CUDA (the tuned tables are per CPU target)
        _normgen_expand(LIST "${ARG_LIST}" GENERATOR "${ARG_GENERATOR}" RUNTIME "${ARG_RUNTIME}"
                        TARGETS ${NORMGEN_CUDA_TARGET} WHO "normgen_build_kernel_table"
                        OUT_LIBS cuda_libs OUT_INCLUDES cuda_includes OUT_ROWS cuda_rows)
        list(APPEND libs ${cuda_libs})
        string(APPEND includes "${cuda_includes}")
        string(APPEND rows "${cuda_rows}")
    endif ()
    set(content "// MACHINE GENERATED — DO NOT EDIT.\n// Regenerate: cmake configure (cmake/NormgenKernels.cmake) from ${ARG_LIST} ${ARG_TUNED}.\n// Halide ${Halide_VERSION}; cpu targets: ${NORMGEN_CPU_TARGETS}; cuda target: ${NORMGEN_CUDA_TARGET}\n#ifdef NORMGEN_KERNEL_INCLUDES\n${includes}#else\n${rows}#endif\n")
    file(CONFIGURE OUTPUT "${ARG_TABLE}" CONTENT "${content}" @ONLY)
    set(${ARG_OUT_LIBS} "${libs}" PARENT_SCOPE)
endfunction()

# A consumer project's kernels (see the top of this file).
function(normgen_add_kernels)
    cmake_parse_arguments(PARSE_ARGV 0 ARG "" "TARGET;TUNED_TABLE"
                          "OPS;DIRECTIONS;DTYPES;LAYOUTS;VARIANTS;SHAPES;TARGETS")
    set(who "normgen_add_kernels(TARGET ${ARG_TARGET})")
    if (ARG_UNPARSED_ARGUMENTS)
        message(FATAL_ERROR "${who}: unknown arguments: ${ARG_UNPARSED_ARGUMENTS}")
    endif ()
    if (NOT ARG_TARGET OR NOT TARGET "${ARG_TARGET}")
        message(FATAL_ERROR "${who}: TARGET must name an existing executable or library target")
    endif ()
    get_target_property(type "${ARG_TARGET}" TYPE)
    if (NOT type MATCHES "^(EXECUTABLE|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$")
        message(FATAL_ERROR "${who}: TARGET is a ${type}; the kernels register themselves from a static "
                            "initializer, which a static library's linker would drop: use an executable, "
                            "a shared/module library or an OBJECT library")
    endif ()
    if (NOT TARGET normgen::generators OR NOT NORMGEN_KERNEL_LIST)
        message(FATAL_ERROR "${who}: needs an installed normgen: find_package(normgen) first")
    endif ()
    if (ARG_TUNED_TABLE AND NOT IS_ABSOLUTE "${ARG_TUNED_TABLE}")
        set(ARG_TUNED_TABLE "${CMAKE_CURRENT_SOURCE_DIR}/${ARG_TUNED_TABLE}")
    endif ()
    if (NOT TARGET Halide::Runtime)  # imported targets are per directory
        find_package(Halide "${NORMGEN_HALIDE_VERSION}" EXACT REQUIRED HINTS "${NORMGEN_HALIDE_DIR}")
    endif ()
    set(targets "${ARG_TARGETS}")
    if (NOT targets)
        set(targets ${NORMGEN_CPU_TARGETS})
    endif ()
    # The runtime passes each call's error collector as Halide's user_context, and
    # tensors of any size (as its own kernels take them).
    set(with_uc "")
    foreach (t IN LISTS targets)
        foreach (feature IN ITEMS user_context large_buffers)
            if (NOT t MATCHES "(^|-)${feature}(-|$)")
                string(APPEND t "-${feature}")
            endif ()
        endforeach ()
        list(APPEND with_uc "${t}")
    endforeach ()
    string(MAKE_C_IDENTIFIER "${ARG_TARGET}" prefix)  # kernel names are C functions
    set(rt "${prefix}_normgen_runtime")
    add_halide_runtime("${rt}" TARGETS ${with_uc})
    _normgen_target_class(tclass ${with_uc})
    if (NOT tclass STREQUAL "cpu")
        # Consumer runtimes are registered without normgen's CUDA context hooks.
        message(FATAL_ERROR "${who}: TARGETS names a cuda target; consumer kernels are CPU kernels "
                            "(normgen's own library carries the CUDA kernels)")
    endif ()
    _normgen_expand(LIST "${NORMGEN_KERNEL_LIST}" TUNED "${ARG_TUNED_TABLE}" GENERATOR normgen::generators
                    RUNTIME "${rt}" TARGETS ${with_uc} PREFIX "${prefix}_" WHO "${who}"
                    OPS ${ARG_OPS} DIRECTIONS ${ARG_DIRECTIONS} DTYPES ${ARG_DTYPES} LAYOUTS ${ARG_LAYOUTS}
                    VARIANTS ${ARG_VARIANTS} SHAPES ${ARG_SHAPES}
                    OUT_LIBS libs OUT_INCLUDES includes OUT_ROWS rows)
    if (NOT libs)
        message(FATAL_ERROR "${who}: the filters select no kernel")
    endif ()
    list(LENGTH libs nlibs)
    message(STATUS "${who}: ${nlibs} kernel(s)")
    set(src "${CMAKE_CURRENT_BINARY_DIR}/${ARG_TARGET}_normgen_kernels.cpp")
    set(content [=[
// MACHINE GENERATED by normgen_add_kernels(TARGET @ARG_TARGET@) — DO NOT EDIT.
// Registers @nlibs@ kernel(s) with the normgen runtime while this binary is loaded.
#include <normgen/kernel_registry.h>

#include <HalideRuntime.h>

#include <cstdio>

@includes@
namespace {
#define NORMGEN_KERNEL(fn, op, dir, dtype, layout, variant, shape, target, schedule, threads, cpu) \
    {{#fn, op, dir, dtype, layout, variant, shape, target, schedule, threads, cpu}, &fn##_argv, &fn##_metadata},
const normgen::ExternalKernel kKernels[] = {
@rows@};
#undef NORMGEN_KERNEL
constexpr size_t kCount = sizeof(kKernels) / sizeof(kKernels[0]);

struct Registration {
    Registration() {
        normgen::Status s = normgen::register_kernels(
            kKernels, kCount,
            {halide_set_error_handler, halide_set_num_threads, halide_set_custom_can_use_target_features,
             halide_set_custom_malloc, halide_set_custom_free, halide_set_custom_do_par_for});
        if (!s.ok()) std::fprintf(stderr, "normgen: @ARG_TARGET@'s kernels are not used: %s\n", s.message().c_str());
    }
    ~Registration() { normgen::unregister_kernels(kKernels, kCount); }
} registration;
}  // namespace
]=])
    file(CONFIGURE OUTPUT "${src}" CONTENT "${content}" @ONLY)
    target_sources("${ARG_TARGET}" PRIVATE "${src}")
    target_link_libraries("${ARG_TARGET}" PRIVATE ${libs} "${rt}" normgen::normgen)
    if (type MATCHES "^(SHARED|MODULE)_LIBRARY$")
        # Keep this Halide runtime's symbols private to the library, so that another
        # library's runtime (or the application's) cannot interpose on them.
        target_link_options("${ARG_TARGET}" PRIVATE "LINKER:--exclude-libs,lib${rt}.a")
    endif ()
endfunction()
