"""The CUDA backend: GPU-scheduled LoopPrograms → LLVM IR for NVPTX → PTX (``codegen``);
``toolchain`` finds libdevice and ptxas; ``program`` holds a model's kernels. Nothing here
needs a GPU. Loading and launching the PTX (the CUDA driver API) is not built: no GPU was
available to test it, and eqsat writes no artifact it has not verified."""

# the one line eqsat says wherever CUDA code would be written or run (CLI, pipeline, runtime)
NO_GPU = (
    "no GPU is present to verify CUDA code and eqsat writes only verified artifacts "
    "(--emit asm DIR writes the PTX of every kernel)"
)
