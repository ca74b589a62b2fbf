"""The LLVM CPU backend."""
