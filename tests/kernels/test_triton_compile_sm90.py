"""Every Triton kernel compiles to an sm_90 cubin on this GPU-less machine, within H100 shared memory.

This directory's conftest turns on the interpreter, under which ``@triton.jit`` yields interpreter
objects that cannot be compiled; the compile checks therefore run in a subprocess WITHOUT
``TRITON_INTERPRET``, where the same modules decorate real JITFunctions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from bastion.kernels import compile_check

COMPILE_TIMEOUT_S = 600


def _run_without_interpreter(cache_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python with the interpreter off and a fresh Triton cache (so every kernel really compiles)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = cache_dir
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)


def test_every_kernel_compiles_for_sm90_within_shared_memory(tmp_path):
    proc = _run_without_interpreter(str(tmp_path), "-m", "bastion.kernels.compile_check", "--json")
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(compile_check.default_specs()), proc.stderr[-3000:]
    print("\nkernel (sm_90)                             shared bytes  regs  spill bytes  warps  compile s")
    for r in results:
        print(f"{r['name']:42s} {r.get('shared', 'FAILED'):>12}  {r.get('registers', '-'):>4}  "
              f"{r.get('local', '-'):>11}  {r.get('num_warps', '-'):>5}  {r.get('seconds', '-')}")
    failures = [r for r in results if not r["ok"]]
    assert not failures, failures
    assert all(r["has_cubin"] for r in results)
    assert all(r["shared"] <= compile_check.MAX_SHARED_BYTES for r in results)
    assert all(r["local"] == 0 for r in results)  # no register spills to local memory
    assert all(r["registers"] <= 255 for r in results)
    assert proc.returncode == 0
    names = " ".join(r["name"] for r in results)
    for kernel in ("unified", "split", "merge", "reshape_and_cache", "rms_norm", "rotary", "silu_and_mul", "sample"):
        assert kernel in names
    assert sum("bf16" in r["name"] for r in results) >= 7  # bf16 is only checkable here, not in the interpreter


def test_compile_check_rejects_a_dot_with_k_below_16_that_the_interpreter_accepts(tmp_path):
    # A P.V tl.dot over 8-key tiles runs fine in the interpreter but is illegal for fp16 MMA on sm_90.
    script = textwrap.dedent("""
        from bastion.kernels.compile_check import KernelSpec, _attention_constexprs, compile_spec, describe_failure
        spec = KernelSpec("tile 8", "attention_unified:unified_attention_kernel", "fp16",
                          _attention_constexprs(4, 64, 8, False, "tf32"))
        try:
            compile_spec(spec)
        except Exception as exc:
            print("REJECTED", describe_failure(exc))
        else:
            print("COMPILED")
    """)
    proc = _run_without_interpreter(str(tmp_path), "-c", script)
    assert "REJECTED" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "K >= 16" in proc.stdout  # the root cause names the MMA shape limit


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="only meaningful under the interpreter")
def test_interpreter_objects_are_refused_with_a_clear_message():
    with pytest.raises(RuntimeError, match="unset TRITON_INTERPRET"):
        compile_check.compile_spec(compile_check.default_specs()[0])
