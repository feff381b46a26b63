"""Which GPUs the compiled CUDA kernels run on, from CMake's architecture list (no CUDA needed to ask)."""

from __future__ import annotations


def runs_on(capability: tuple[int, int], archs: str) -> bool:
    """Whether kernels compiled for CMake's ``archs`` ("90a", "80;90a", "90-real", ...) run on a GPU of
    compute ``capability``: "XYa" only on exactly X.Y (arch-specific features are not forward
    compatible), "XY" on X.Y and later minors of X (same-major binary compatibility)."""
    major, minor = capability
    for arch in archs.replace(",", ";").split(";"):
        arch = arch.strip().split("-")[0]
        if not arch:
            continue
        exact = arch.endswith("a")
        digits = arch.rstrip("a")
        if not digits.isdigit() or len(digits) < 2:
            raise ValueError(f"unreadable CUDA architecture {arch!r} in {archs!r}")
        arch_major, arch_minor = int(digits[:-1]), int(digits[-1])
        if major == arch_major and (minor == arch_minor if exact else minor >= arch_minor):
            return True
    return False
