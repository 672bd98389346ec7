# Thin wrappers so each CMakeLists.txt in the tree is a few lines.
#
# Every loom target is a plain CMake target compiled with exceptions and RTTI (Debian's
# LLVM is built with RTTI), linked against the shared libMLIR/libLLVM so that links
# stay fast on two cores. MLIR-facing code still reports through emitError and
# LogicalResult; exceptions exist only for the protobuf/yaml/Z3/pybind11 boundaries.

set(LOOM_MLIR_LIBS MLIR LLVM)

# add_loom_library(Name SRCS... [LINK libs...])
function(add_loom_library name)
  cmake_parse_arguments(ARG "" "" "LINK;DEPENDS" ${ARGN})
  add_library(${name} STATIC ${ARG_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PUBLIC ${ARG_LINK})
  if(ARG_DEPENDS)
    add_dependencies(${name} ${ARG_DEPENDS})
  endif()
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# add_loom_dialect(Name) run in dialects/<name>/: tablegens <Name>.td into the build
# tree (<Name>Ops.h.inc, <Name>Attrs.h.inc, ...) and builds the dialect library
# LoomDialect<Name> from the .cpp files given.
function(add_loom_dialect name dialect_ns)
  cmake_parse_arguments(ARG "" "" "LINK" ${ARGN})
  set(LLVM_TARGET_DEFINITIONS ${name}.td)
  mlir_tablegen(${name}Ops.h.inc -gen-op-decls)
  mlir_tablegen(${name}Ops.cpp.inc -gen-op-defs)
  mlir_tablegen(${name}Dialect.h.inc -gen-dialect-decls -dialect=${dialect_ns})
  mlir_tablegen(${name}Dialect.cpp.inc -gen-dialect-defs -dialect=${dialect_ns})
  mlir_tablegen(${name}Attrs.h.inc -gen-attrdef-decls -attrdefs-dialect=${dialect_ns})
  mlir_tablegen(${name}Attrs.cpp.inc -gen-attrdef-defs -attrdefs-dialect=${dialect_ns})
  mlir_tablegen(${name}Enums.h.inc -gen-enum-decls)
  mlir_tablegen(${name}Enums.cpp.inc -gen-enum-defs)
  mlir_tablegen(${name}Interfaces.h.inc -gen-op-interface-decls)
  mlir_tablegen(${name}Interfaces.cpp.inc -gen-op-interface-defs)
  add_public_tablegen_target(Loom${name}IncGen)
  add_loom_library(LoomDialect${name} ${ARG_UNPARSED_ARGUMENTS}
    LINK ${LOOM_MLIR_LIBS} ${ARG_LINK} DEPENDS Loom${name}IncGen)
endfunction()

# add_loom_tool(name SRCS... [LINK libs...])
function(add_loom_tool name)
  cmake_parse_arguments(ARG "" "" "LINK" ${ARGN})
  add_executable(${name} ${ARG_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE ${ARG_LINK})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
endfunction()

# add_loom_unittest(name SRCS... LINK libs...): a gtest binary registered with ctest.
function(add_loom_unittest name)
  cmake_parse_arguments(ARG "" "" "LINK" ${ARGN})
  add_executable(${name} ${ARG_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE ${ARG_LINK} GTest::gtest GTest::gtest_main)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/unittests)
  add_dependencies(loom-unittests ${name})
  add_test(NAME ${name} COMMAND ${name})
endfunction()
