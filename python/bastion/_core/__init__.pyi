"""Type stub of ``bastion._core``, the pybind11 module built from csrc/bindings/*.cpp.

A stub package because the module has real submodules (``bastion._core.cpu``, ``bastion._core.cuda``
are in sys.modules): __init__.pyi types module.cpp + core.cpp, cpu.pyi cpu.cpp, cuda.pyi cuda.cpp.
There is no ``_core/__init__.py``: at run time the extension module ``_core.*.so`` is imported.
Keep the stubs in step with the bindings and with the contract tables of docs/ARCHITECTURE.md;
``python -m mypy.stubtest bastion._core`` compares them with the built module (on a build without
CUDA it reports the CUDA-only names as missing from the runtime, as it should).

Integers cross the boundary as C++ ``int``/``int64_t`` (OverflowError/TypeError outside their range),
pointers as ``tensor.data_ptr()`` ints and strides in elements. Names with a leading underscore exist
only in this stub (they type the dicts the bindings return).
"""

from typing import TypedDict

import numpy as np
import numpy.typing as npt

from . import cpu as cpu
from . import cuda as cuda

with_cuda: bool
"""True when the module was built with the CUDA kernels (BASTION_CUDA=ON)."""

cuda_archs: str
"""CMake's CUDA architectures of the build, e.g. ``"90a"`` or ``"80;90a"``; only with ``with_cuda``."""

def cuda_device_count() -> int:
    """Usable CUDA devices; 0 without a driver or GPU, and always 0 in a build without CUDA."""

class _SchedulerStats(TypedDict):
    num_total_blocks: int
    num_free_blocks: int  # allocatable now, evictable prefix-cached blocks included
    num_used_blocks: int
    num_running: int
    num_waiting: int
    prefix_cache_hits: int  # tokens
    prefix_cache_queries: int  # tokens
    num_preemptions: int
    kv_cache_usage: float  # 0..1

class StepOutput:
    """One scheduler step as numpy views into buffers the scheduler owns (valid until the next step()).

    R = ``num_reqs`` scheduled requests, T = ``num_tokens`` tokens, S = requests that sample.
    Not constructible from Python: ``Scheduler.step()`` makes them.
    """

    @property
    def req_ids(self) -> npt.NDArray[np.int64]:
        """[R] scheduled request ids, running ones first."""
    @property
    def num_scheduled_tokens(self) -> npt.NDArray[np.int32]:
        """[R] tokens of each request in this step."""
    @property
    def input_ids(self) -> npt.NDArray[np.int32]:
        """[T] the tokens to feed, request after request."""
    @property
    def positions(self) -> npt.NDArray[np.int64]:
        """[T] absolute positions."""
    @property
    def slot_mapping(self) -> npt.NDArray[np.int64]:
        """[T] block_id * block_size + offset; -1 = skip."""
    @property
    def cu_seqlens_q(self) -> npt.NDArray[np.int32]:
        """[R + 1] prefix sums of num_scheduled_tokens."""
    @property
    def seq_lens(self) -> npt.NDArray[np.int32]:
        """[R] tokens in the KV cache after this step (computed + scheduled)."""
    @property
    def block_table(self) -> npt.NDArray[np.int32]:
        """[R, max_blocks_per_seq] block ids, padded with 0."""
    @property
    def do_sample(self) -> npt.NDArray[np.uint8]:
        """[R] 1 when this step reaches the end of the request's known tokens."""
    @property
    def logits_indices(self) -> npt.NDArray[np.int64]:
        """[S] flat token index of the last token of each sampling request."""
    @property
    def preempted_ids(self) -> npt.NDArray[np.int64]:
        """Requests preempted by recompute in this step (requeued at the head)."""
    @property
    def finished_ids(self) -> npt.NDArray[np.int64]:
        """Requests finished or aborted since the previous step."""
    @property
    def num_reqs(self) -> int:
        """R."""
    @property
    def num_tokens(self) -> int:
        """T."""

class Scheduler:
    """Continuous-batching scheduler over a paged KV cache (C++).

    Thread-safe: ``step()`` plans without the GIL and the other methods wait for it. Request ids are
    int64 chosen by Python; a lower ``priority`` is served first.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        enable_prefix_caching: bool = True,
        policy: str = "fcfs",
        hash_seed: int = 0,
        long_prefill_token_threshold: int = 0,
    ) -> None:
        """``policy`` is ``"fcfs"`` or ``"priority"``; ``hash_seed`` in [0, 2**64); ValueError otherwise."""
    def add_request(
        self, req_id: int, prompt_token_ids: npt.ArrayLike, priority: int = 0, cache_salt: int = 0
    ) -> None:
        """Queue a request (``prompt_token_ids`` 1-D, cast to int32); ValueError on bad input."""
    def step(self) -> StepOutput:
        """Plan one step (GIL released) and return its StepOutput."""
    def update(self, sampled: npt.ArrayLike, finished: npt.ArrayLike) -> None:
        """Append the last step's sampled tokens and finish requests.

        ``sampled`` (1-D, cast to int32): the new token of each request of the last step with
        do_sample=1, in step order; ``finished`` (1-D, cast to int64): ids the engine stops after
        appending their token; their blocks are freed in this call.
        """
    def append_tokens(self, req_id: int, tokens: npt.ArrayLike) -> int:
        """Append unsampled (grammar-forced) tokens after update(); returns how many fit. ValueError on bad input.

        ``tokens`` (1-D, cast to int32) join the request's sequence as if sampled; its next step computes
        them with its last sampled token and samples after the last one. A request reaching the longest
        allowed sequence is finished (``finished_by_length``) and reported by the next step.
        """
    def abort(self, req_id: int) -> bool:
        """Free a request's blocks now; False if unknown or already finished."""
    def stats(self) -> _SchedulerStats:
        """Pool, queue and prefix-cache figures as a dict."""
    @property
    def block_size(self) -> int: ...
    @property
    def num_blocks(self) -> int: ...
    @property
    def max_blocks_per_seq(self) -> int:
        """Width of a ``StepOutput.block_table`` row."""
    # Per-request queries: ValueError for an unknown req_id.
    def num_cached_tokens(self, req_id: int) -> int:
        """Prefix-cache hit (tokens) of the request's last admission."""
    def num_preemptions(self, req_id: int) -> int:
        """Times the request was preempted."""
    def num_computed_tokens(self, req_id: int) -> int:
        """Tokens whose KV is computed (or scheduled in the last step)."""
    def num_tokens(self, req_id: int) -> int:
        """Prompt plus sampled tokens."""
    def finished_by_length(self, req_id: int) -> bool:
        """True if the scheduler stopped it at the longest allowed sequence."""
    # Test-only views of the block pool and the queues (copies, never views).
    def debug_block_tables(self) -> dict[int, list[int]]:
        """{req_id: [block ids]} of every request holding blocks."""
    def debug_ref_counts(self) -> npt.NDArray[np.int32]:
        """int32 [num_blocks]: reference count of every block."""
    def debug_free_list(self) -> list[int]:
        """Free block ids from the LRU end (reused next) to the MRU end."""
    def debug_cached_blocks(self) -> dict[int, int]:
        """{block_id: hash} of every block in the prefix-cache index."""
    def debug_running_ids(self) -> list[int]:
        """Running request ids in scheduling order."""
    def debug_waiting_ids(self) -> list[int]:
        """Waiting request ids from the head of the queue."""
    def check_invariants(self) -> None:
        """Raises RuntimeError naming the first broken scheduler invariant."""
