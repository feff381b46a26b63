"""GPU-free check of the CUDA kernels: every csrc/cuda/*.cu compiles for sm_90a with warnings as
errors, and ptxas's resource report shows no register spills in the attention kernels.

Needs only nvcc (no GPU, no CUDA build of bastion). Run with ``-s`` to see the register table.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

CUDA_DIR = Path(__file__).resolve().parents[2] / "csrc" / "cuda"
SOURCES = sorted(CUDA_DIR.glob("*.cu"))
ARCH = ["-gencode=arch=compute_90a,code=sm_90a"]
# Device and host warnings are errors here (CMake keeps host warnings non-fatal across host compilers).
FLAGS = ["-std=c++17", "-O3", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror", f"-I{CUDA_DIR}"]
STATIC_SMEM_LIMIT = 48 * 1024  # bytes a CTA may declare statically (no opt-in attribute needed)
# 2 dtypes x head_dim {64, 128} x GQA tiles {1, 2, 4, 8}
EXPECTED_DECODE_KERNELS = 16


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return str(default) if default.is_file() else None


NVCC = _find_nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH or in $CUDA_HOME/bin")


@dataclass
class KernelResources:
    """ptxas's report for one kernel."""

    name: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    smem_bytes: int


@dataclass
class Compiled:
    """One nvcc run: exit status, ptxas output and the kernels it reported."""

    source: Path
    returncode: int
    log: str
    kernels: list[KernelResources]


_ENTRY = re.compile(r"Function properties for (\S+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                    r"(\d+) bytes spill loads\s*\n.*?Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None or not names:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def parse_ptxas(log: str) -> list[KernelResources]:
    """Kernels and their resources from ``-Xptxas -v`` output (device functions have no 'Used' line)."""
    matches = list(_ENTRY.finditer(log))
    names = _demangle([m.group(1) for m in matches])
    return [
        KernelResources(name, int(m.group(5)), int(m.group(3)), int(m.group(4)), int(m.group(2)), int(m.group(6) or 0))
        for name, m in zip(names, matches, strict=True)
    ]


def _compile(source: Path, out_dir: Path) -> Compiled:
    cmd = [NVCC, *ARCH, *FLAGS, "-Xptxas", "-v", "-c", str(source), "-o", str(out_dir / f"{source.stem}.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    return Compiled(source, proc.returncode, log, parse_ptxas(log))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[Compiled]:
    """Every .cu compiled once, two at a time (the dev machines have two cores)."""
    out_dir = tmp_path_factory.mktemp("cuda_objs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: _compile(s, out_dir), SOURCES))
    print(f"\n{'kernel':<72} {'regs':>5} {'spill st/ld':>11} {'stack':>6} {'smem':>6}")
    for result in results:
        for k in result.kernels:
            short = k.name.replace("(anonymous namespace)::", "").split("(")[0].removeprefix("void ")
            print(f"{short:<72} {k.registers:>5} {k.spill_stores:>5}/{k.spill_loads:<5} {k.stack_bytes:>6} {k.smem_bytes:>6}")
    return results


def _kernels(compiled: list[Compiled]) -> list[KernelResources]:
    return [k for c in compiled for k in c.kernels]


def test_every_source_compiles_warning_free(compiled: list[Compiled]) -> None:
    assert SOURCES, f"no .cu files under {CUDA_DIR}"
    failed = {c.source.name: c.log for c in compiled if c.returncode != 0}
    assert not failed, "nvcc failed (warnings are errors):\n" + "\n".join(f"--- {n}\n{log}" for n, log in failed.items())


def test_every_decode_configuration_is_instantiated(compiled: list[Compiled]) -> None:
    names = [k.name for k in _kernels(compiled)]
    decode = [n for n in names if "paged_decode_kernel" in n]
    assert len(decode) == EXPECTED_DECODE_KERNELS, decode
    assert sum("decode_merge_kernel" in n for n in names) == 2, names  # fp16 and bf16
    assert any("reshape_and_cache_kernel" in n for n in names), names


def test_attention_kernels_do_not_spill(compiled: list[Compiled]) -> None:
    attention = [k for k in _kernels(compiled) if "decode" in k.name]
    assert attention, "ptxas reported no attention kernels"
    spilling = [k for k in attention if k.spill_stores or k.spill_loads]
    assert not spilling, f"register spills in: {[(k.name, k.registers, k.spill_stores, k.spill_loads) for k in spilling]}"


def test_static_shared_memory_fits_without_opt_in(compiled: list[Compiled]) -> None:
    too_big = [(k.name, k.smem_bytes) for k in _kernels(compiled) if k.smem_bytes > STATIC_SMEM_LIMIT]
    assert not too_big, too_big


def test_kv_cache_is_read_with_16_byte_vector_loads(tmp_path: Path) -> None:
    """The decode kernel's K/V loads must be single 128-bit streaming loads, not 8 scalar ones."""
    ptx = tmp_path / "decode.ptx"
    cmd = [NVCC, "-arch=compute_90a", *FLAGS, "-ptx", str(CUDA_DIR / "paged_decode_bf16_d128.cu"), "-o", str(ptx)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = ptx.read_text()
    assert re.search(r"ld\.global\.cs\.v4\.u32", text), "no 16-byte ld.global.cs.v4 in the decode kernel PTX"
    assert not re.search(r"ld\.global\.cs\.(u16|b16)", text), "K/V read with 2-byte loads"
