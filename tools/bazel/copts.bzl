"""Compiler flags for smbdirect's own code (third-party headers are included as system headers)."""

SMBDIRECT_COPTS = [
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wshadow",
    "-Wno-unused-parameter",
]
