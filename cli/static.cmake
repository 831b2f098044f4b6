# The static kmsctl (-DKMSCTL_STATIC=ON, included by the top-level CMakeLists.txt): builds the
# libraries a client needs (common, attest without the vTPM producer, crypto, the RPC client)
# and kmsctl with the enclave command set, linked -static. See docs/nitro-enclave.md.

# Static archives only: pkg-config names the libraries, find_library must pick the .a files.
set(CMAKE_FIND_LIBRARY_SUFFIXES .a)
set(CMAKE_POSITION_INDEPENDENT_CODE OFF)
pkg_check_modules(OPENSSL REQUIRED IMPORTED_TARGET openssl>=3.0)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(SECP256K1 REQUIRED IMPORTED_TARGET libsecp256k1)
find_package(Threads REQUIRED)

# libcurl: a prefix given with KMSCTL_CURL_PREFIX, else one built here from Debian's source.
set(KMSCTL_CURL_PREFIX "" CACHE PATH
    "A static libcurl (PREFIX/lib/libcurl.a, PREFIX/include); empty: build one with cli/static-curl.sh")
set(curl_prefix "${KMSCTL_CURL_PREFIX}")
if(NOT curl_prefix)
  set(curl_prefix "${CMAKE_BINARY_DIR}/static-curl")
  message(STATUS "kmsctl static: building libcurl from Debian's curl source into ${curl_prefix}")
  execute_process(COMMAND bash "${PROJECT_SOURCE_DIR}/cli/static-curl.sh" "${curl_prefix}"
                  RESULT_VARIABLE curl_rc)
  if(NOT curl_rc EQUAL 0)
    message(FATAL_ERROR "kmsctl static: cli/static-curl.sh failed (${curl_rc})")
  endif()
endif()
if(NOT EXISTS "${curl_prefix}/lib/libcurl.a")
  message(FATAL_ERROR "kmsctl static: no ${curl_prefix}/lib/libcurl.a")
endif()
# The name the libraries link (PkgConfig::CURL in the dynamic build).
add_library(PkgConfig::CURL STATIC IMPORTED)
set_target_properties(PkgConfig::CURL PROPERTIES
  IMPORTED_LOCATION "${curl_prefix}/lib/libcurl.a"
  INTERFACE_INCLUDE_DIRECTORIES "${curl_prefix}/include"
  INTERFACE_COMPILE_DEFINITIONS CURL_STATICLIB
  INTERFACE_LINK_LIBRARIES "PkgConfig::OPENSSL;Threads::Threads")

add_subdirectory(common)
add_subdirectory(attest)
add_subdirectory(common/crypto)
add_subdirectory(replication)
add_subdirectory(cli)
