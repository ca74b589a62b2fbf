"""The CUDA backend: GPU-scheduled LoopPrograms → LLVM IR for NVPTX → PTX (see ``codegen``);
``toolchain`` finds libdevice and ptxas. Nothing here needs a GPU; loading and launching the PTX
is not built yet."""
