"""Every kernel eqsat generates for every example model assembles with ptxas for every
architecture the CUDA backend targets (sm_80, sm_90), and the registers and shared memory ptxas
reports fit the kernel's launch configuration (issue 20's CI target).

The models are the ``small`` examples lowered without the e-graph (its rewrites change which
kernels exist, not how a kernel class is emitted; ``eqsat compile --target cuda`` on the
optimized default-size models was checked by hand). The largest register count seen is printed
(``-s``) for the record."""

from __future__ import annotations

import pytest

from eqsat.backends.cuda.codegen import compile_program
from eqsat.backends.cuda.toolchain import ARCHS, check_launch, libdevice_path, ptxas, ptxas_path
from eqsat.egraph.onnx_io import import_onnx
from eqsat.examples import build_example, example_names
from eqsat.lower.gpu_schedule import schedule_program
from eqsat.lower.lower import lower

pytestmark = [
    pytest.mark.skipif(ptxas_path() is None, reason="ptxas not found (nvidia-cuda-nvcc)"),
    pytest.mark.skipif(libdevice_path() is None, reason="libdevice.10.bc not found"),
]
# ~20 s for all seven together here (nasrnn, 32 kernels, the longest at ~8 s): in the default
# run, since this is the check CI makes of the CUDA backend


@pytest.mark.parametrize("name", example_names())
def test_every_kernel_assembles_and_fits_its_launch(name):
    program = schedule_program(lower(import_onnx(build_example(name, "small"))).program)
    kernels = compile_program(program)
    assert len(kernels) == len(program.kernels) > 0
    most = 0
    for gk in kernels:
        lau = gk.launch
        assert lau.tile or lau.rows or lau.thread_var, f"{gk.symbol} runs as one thread"
        for arch in ARCHS:
            (report,) = ptxas(gk.ptx[arch], arch)
            assert report.kernel == gk.symbol
            check_launch(report, lau.block)
            assert report.shared_bytes == (2 * 16 * 16 * 4 if lau.tile is not None else 0)
            most = max(most, report.registers)
    print(f"{name}: {len(kernels)} kernels × {len(ARCHS)} archs, at most {most} registers")
