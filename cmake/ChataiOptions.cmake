# Project-wide compiler settings: warnings, sanitizers and the component helper.

set(CHATAI_WARNING_FLAGS
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wno-missing-field-initializers>)

if(CHATAI_SANITIZE)
  string(REPLACE "," ";" _chatai_sanitizers "${CHATAI_SANITIZE}")
  foreach(_s IN LISTS _chatai_sanitizers)
    if(NOT _s MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "CHATAI_SANITIZE: unknown sanitizer '${_s}' (use address,undefined or thread)")
    endif()
  endforeach()
  add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=${CHATAI_SANITIZE}>
                      $<$<COMPILE_LANGUAGE:C,CXX>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:C,CXX>:-fno-sanitize-recover=undefined>)
  add_link_options(-fsanitize=${CHATAI_SANITIZE})
endif()

# Consumers of a sanitized build (installed or not) must link the sanitizer runtime too.
function(chatai_export_sanitizer target)
  if(CHATAI_SANITIZE)
    target_link_options(${target} INTERFACE -fsanitize=${CHATAI_SANITIZE})
  endif()
endfunction()

# chatai_add_component(NAME SOURCES... [DEPENDS targets...])
# Declares the static library chatai_NAME (exported as chatai::NAME).
function(chatai_add_component name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS;PRIVATE_DEPENDS" ${ARGN})
  add_library(chatai_${name} STATIC ${ARG_SOURCES})
  add_library(chatai::${name} ALIAS chatai_${name})
  set_target_properties(chatai_${name} PROPERTIES EXPORT_NAME ${name})
  target_include_directories(chatai_${name} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_options(chatai_${name} PRIVATE ${CHATAI_WARNING_FLAGS})
  target_link_libraries(chatai_${name} PUBLIC ${ARG_DEPENDS} PRIVATE ${ARG_PRIVATE_DEPENDS})
  chatai_export_sanitizer(chatai_${name})
  install(TARGETS chatai_${name} EXPORT chataiTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
  set_property(GLOBAL APPEND PROPERTY CHATAI_COMPONENTS chatai_${name})
endfunction()
