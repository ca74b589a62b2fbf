"""The LLVM CPU backend: host capabilities, a JIT with an on-disk object cache, a persistent
thread pool, the LoopProgram code generator (:mod:`.codegen`, :mod:`.runtime`) and generated
kernels (an SGEMM with packing and explicit vector micro-kernels).

Nothing outside ``eqsat.backends`` imports this package yet; importing it loads llvmlite.
"""
