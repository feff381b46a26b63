"""Triton kernels, installed as ``bastion.kernels``.

Import this package only where Triton is installed. Under ``TRITON_INTERPRET=1`` (set before the
import) the kernels run on CPU tensors, which is how CI verifies them.
"""
