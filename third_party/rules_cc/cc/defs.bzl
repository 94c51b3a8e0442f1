"""Forwards rules_cc's macros to Bazel 4.2's native C++ rules.

Debian's bazel-rules-cc is too new for bazel-bootstrap 4.2.3, and the build is offline,
so this local stand-in keeps load("@rules_cc//cc:defs.bzl", ...) working.
"""

cc_library = native.cc_library
cc_binary = native.cc_binary
cc_test = native.cc_test
cc_import = native.cc_import
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
objc_library = native.objc_library
