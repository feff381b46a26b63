"""Triton kernels: the ``bastion.kernels`` package.

Import this package only where Triton is installed. Under ``TRITON_INTERPRET=1`` (set before the
import) the kernels run on CPU tensors, which is how CI verifies them; ``compile_check`` compiles
them for sm_90 without a GPU. The functions below follow the "Ops contract" of docs/ARCHITECTURE.md
(same names and signatures as ``bastion.ops`` minus ``backend``) and assume validated inputs.
"""

from .activation import silu_and_mul, silu_and_mul_kernel
from .attention import DEFAULT_NUM_SMS, make_plan, merge_splits, paged_attention, split_kv_partials
from .attention_plan import AttentionPlan, choose_num_splits, plan_attention
from .kv_cache import reshape_and_cache
from .rms_norm import rms_norm
from .rotary import rotary_embedding
from .sampling import sample
from .token_bitmask import apply_token_bitmask


def interpreted() -> bool:
    """True when these kernels were decorated under ``TRITON_INTERPRET=1`` and so run on CPU tensors."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(silu_and_mul_kernel, InterpretedFunction)


__all__ = [
    "DEFAULT_NUM_SMS", "apply_token_bitmask", "interpreted", "AttentionPlan", "choose_num_splits", "make_plan",
    "merge_splits", "paged_attention",
    "plan_attention", "reshape_and_cache", "rms_norm", "rotary_embedding", "sample", "silu_and_mul",
    "split_kv_partials",
]
