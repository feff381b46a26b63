"""Pure-Python reference of bastion's scheduling policy (the C++ core in csrc/core).

Same algorithm, same decisions, same block ids: a correctness oracle for the C++ scheduler
(tests/core diff the two step by step) and the baseline of bench/bench_scheduler.py. Written as
idiomatic Python in the nano-vllm style (OrderedDict LRU free list, tuple hashes), not slowed on
purpose. See csrc/core/scheduler.h for the policy in words.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class RefRequest:
    """State of one sequence: its tokens, progress and block table."""

    req_id: int
    tokens: list[int]
    priority: int
    arrival: int
    extra: int  # the cache salt (tenant) mixed into every block hash
    num_computed: int = 0
    block_ids: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    num_indexed: int = 0
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    status: str = "waiting"  # waiting | running | finished
    finished_by_length: bool = False

    def order_key(self) -> tuple[int, int]:
        """(priority, arrival): smaller is served first under the priority policy."""
        return (self.priority, self.arrival)


class RefBlockPool:
    """Ref-counted blocks, LRU free list (OrderedDict), lazily evicted hash index with token check."""

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.ref_cnt = [0] * num_blocks
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.index: dict[int, int] = {}  # hash -> block id
        self.content: dict[int, tuple[int, int, tuple[int, ...], tuple[int, int]]] = {}  # block -> key

    def allocate(self, n: int) -> list[int]:
        """Pop n blocks from the LRU end, evicting stale hashes; caller checked len(free) >= n."""
        out = []
        for _ in range(n):
            block, _ = self.free.popitem(last=False)
            key = self.content.pop(block, None)
            if key is not None and self.index.get(key[0]) == block:
                del self.index[key[0]]
            self.ref_cnt[block] = 1
            out.append(block)
        return out

    def touch(self, block: int) -> None:
        """Add a reference to a prefix-hit block, taking it off the free list if unreferenced."""
        if self.ref_cnt[block] == 0:
            del self.free[block]
        self.ref_cnt[block] += 1

    def free_blocks(self, blocks: list[int]) -> None:
        """Drop one reference per block in reverse order; unreferenced blocks go to the MRU end."""
        for block in reversed(blocks):
            self.ref_cnt[block] -= 1
            if self.ref_cnt[block] == 0:
                self.free[block] = None

    def lookup(self, h: int, parent: int, tokens: tuple[int, ...], extra: tuple[int, int]) -> int:
        """Cached block with exactly this content, or -1."""
        block = self.index.get(h, -1)
        if block >= 0 and self.content[block] != (h, parent, tokens, extra):
            return -1
        return block

    def cache(self, block: int, h: int, parent: int, tokens: tuple[int, ...], extra: tuple[int, int]) -> None:
        """Index a full block unless it or an identical block is indexed already."""
        if block in self.content or h in self.index:
            return
        self.index[h] = block
        self.content[block] = (h, parent, tokens, extra)


@dataclass(slots=True)
class RefStepOutput:
    """Flat arrays of one step, same fields and dtypes as bastion._core.StepOutput."""

    req_ids: np.ndarray
    num_scheduled_tokens: np.ndarray
    input_ids: np.ndarray
    positions: np.ndarray
    slot_mapping: np.ndarray
    cu_seqlens_q: np.ndarray
    seq_lens: np.ndarray
    block_table: np.ndarray
    do_sample: np.ndarray
    logits_indices: np.ndarray
    preempted_ids: np.ndarray
    finished_ids: np.ndarray


class RefScheduler:
    """The C++ Scheduler's policy in Python: same constructor, add_request/step/update/abort API."""

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
        if policy not in ("fcfs", "priority"):
            raise ValueError(f"policy must be 'fcfs' or 'priority', got {policy!r}")
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_len = min(max_model_len, num_blocks * block_size)
        self.max_blocks_per_seq = -(-self.max_len // block_size)
        self.policy = policy
        self.threshold = long_prefill_token_threshold
        self.seed_hash = hash(("bastion-seed", hash_seed))
        self.pool = RefBlockPool(num_blocks, block_size, enable_prefix_caching)
        self.requests: dict[int, RefRequest] = {}
        self.running: list[RefRequest] = []
        self.waiting: deque[RefRequest] = deque()
        self.sampling: list[RefRequest] = []
        self.pending_finished: list[int] = []
        self.next_arrival = 0

    # ---- requests -------------------------------------------------------------------------
    def add_request(self, req_id: int, prompt_token_ids: Iterable[int], priority: int = 0, cache_salt: int = 0) -> None:
        """Queue a request (ValueError on a duplicate id, empty prompt or one that can never fit)."""
        tokens = [int(t) for t in prompt_token_ids]
        if req_id in self.requests:
            raise ValueError(f"request {req_id}: id is already in use")
        if not tokens or len(tokens) > self.max_len:
            raise ValueError(f"request {req_id}: prompt of {len(tokens)} tokens cannot fit ({self.max_len} max)")
        req = RefRequest(req_id, tokens, priority, self.next_arrival, cache_salt)
        self.next_arrival += 1
        self.requests[req_id] = req
        self._enqueue(req, at_head=False)

    def _enqueue(self, req: RefRequest, at_head: bool) -> None:
        if self.policy == "priority":
            pos = next((i for i, w in enumerate(self.waiting) if req.order_key() < w.order_key()),
                       len(self.waiting))
            self.waiting.insert(pos, req)
        elif at_head:
            self.waiting.appendleft(req)
        else:
            self.waiting.append(req)

    def _finish(self, req: RefRequest) -> None:
        if req.status == "finished":
            return
        if req.status == "waiting":
            self.waiting.remove(req)
        self.pool.free_blocks(req.block_ids)
        req.block_ids, req.num_indexed, req.status = [], 0, "finished"
        self.pending_finished.append(req.req_id)

    def update(self, sampled: Iterable[int], finished: Iterable[int]) -> None:
        """Append the last step's sampled tokens, then finish the given ids (and length-capped ones)."""
        sampled = list(sampled)
        if len(sampled) != len(self.sampling):
            raise ValueError(f"sampled has {len(sampled)} tokens, expected {len(self.sampling)}")
        for req, tok in zip(self.sampling, sampled, strict=True):
            if req.status == "running":
                req.tokens.append(int(tok))
        for req_id in finished:
            self._finish(self.requests[int(req_id)])
        for req in self.sampling:
            if req.status == "running" and len(req.tokens) >= self.max_len:
                req.finished_by_length = True
                self._finish(req)
        self.sampling = []
        self.running = [r for r in self.running if r.status == "running"]

    def abort(self, req_id: int) -> bool:
        """Free the request's blocks now; False if unknown or finished."""
        req = self.requests.get(req_id)
        if req is None or req.status == "finished":
            return False
        if req.status == "running":
            self.running.remove(req)
        self._finish(req)
        return True

    def stats(self) -> dict[str, int]:
        """Queue sizes and pool usage (the subset of the C++ stats the benchmark needs)."""
        used = sum(1 for r in self.pool.ref_cnt if r)
        return {"num_running": len(self.running), "num_waiting": len(self.waiting), "num_used_blocks": used,
                "num_free_blocks": len(self.pool.free)}

    # ---- KV cache -------------------------------------------------------------------------
    def _hashes(self, req: RefRequest, num_full: int) -> list[int]:
        bs = self.block_size
        for i in range(len(req.block_hashes), num_full):
            parent = req.block_hashes[i - 1] if i else self.seed_hash
            req.block_hashes.append(hash((parent, tuple(req.tokens[i * bs:(i + 1) * bs]), req.extra)))
        return req.block_hashes

    def _find_cached_prefix(self, req: RefRequest) -> list[int]:
        if not self.pool.enable_caching:
            return []
        bs, hits = self.block_size, []
        hashes = self._hashes(req, (len(req.tokens) - 1) // bs)
        for i, h in enumerate(hashes[:(len(req.tokens) - 1) // bs]):
            parent = hashes[i - 1] if i else self.seed_hash
            block = self.pool.lookup(h, parent, tuple(req.tokens[i * bs:(i + 1) * bs]), req.extra)
            if block < 0:
                break
            hits.append(block)
        return hits

    def _allocate_slots(self, req: RefRequest, n: int, hits: list[int]) -> bool:
        total = req.num_computed + len(hits) * self.block_size + n
        new = max(0, -(-total // self.block_size) - len(req.block_ids) - len(hits))
        evictable = sum(1 for b in hits if self.pool.ref_cnt[b] == 0)
        if new + evictable > len(self.pool.free):
            return False
        for b in hits:
            self.pool.touch(b)
        req.block_ids += hits
        req.num_indexed = max(req.num_indexed, len(hits))
        req.block_ids += self.pool.allocate(new)
        return True

    def _index_full_blocks(self, req: RefRequest) -> None:
        num_full = min(req.num_computed, len(req.tokens)) // self.block_size
        if not self.pool.enable_caching or num_full <= req.num_indexed:
            return
        bs, hashes = self.block_size, self._hashes(req, num_full)
        for i in range(req.num_indexed, num_full):
            parent = hashes[i - 1] if i else self.seed_hash
            self.pool.cache(req.block_ids[i], hashes[i], parent, tuple(req.tokens[i * bs:(i + 1) * bs]), req.extra)
        req.num_indexed = num_full

    # ---- scheduling -----------------------------------------------------------------------
    def _chunk(self, req: RefRequest, computed: int, budget: int) -> int:
        n = len(req.tokens) - computed
        if self.threshold > 0:
            n = min(n, self.threshold)
        return max(0, min(n, budget, self.max_len - computed))

    def _preempt(self, victim: RefRequest, plan: dict[int, tuple[RefRequest, int]], preempted: list[int]) -> int:
        """Recompute-preempt `victim`; returns the tokens it gives back to the budget."""
        self.running.remove(victim)
        _, given_back = plan.pop(victim.req_id, (victim, 0))
        self.pool.free_blocks(victim.block_ids)
        victim.block_ids, victim.num_indexed, victim.num_computed = [], 0, 0
        victim.status = "waiting"
        victim.num_preemptions += 1
        self._enqueue(victim, at_head=True)
        preempted.append(victim.req_id)
        return given_back

    def step(self) -> RefStepOutput:
        """Plan one step: running first (preempting on block shortage), then waiting admissions."""
        finished_ids = self.pending_finished
        self.pending_finished = []
        for req_id in finished_ids:
            del self.requests[req_id]
        budget = self.max_num_batched_tokens
        plan: dict[int, tuple[RefRequest, int]] = {}  # insertion order = output order
        preempted: list[int] = []
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = self._chunk(req, req.num_computed, budget)
            if n == 0:
                i += 1
                continue
            while not self._allocate_slots(req, n, []):
                victim = (max(self.running, key=RefRequest.order_key) if self.policy == "priority"
                          else self.running[-1])
                if self.running.index(victim) < i:
                    i -= 1
                budget += self._preempt(victim, plan, preempted)
                if victim is req:
                    break
            if req.status != "running":
                break
            plan[req.req_id] = (req, n)
            budget -= n
            i += 1
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            hits = self._find_cached_prefix(req)
            n = self._chunk(req, len(hits) * self.block_size, budget)
            if n == 0 or not self._allocate_slots(req, n, hits):
                break
            self.waiting.popleft()
            req.status, req.num_computed = "running", len(hits) * self.block_size
            req.num_cached_tokens = req.num_computed
            self.running.append(req)
            plan[req.req_id] = (req, n)
            budget -= n
        return self._build_output(list(plan.values()), preempted, finished_ids)

    def _build_output(self, plan: list[tuple[RefRequest, int]], preempted: list[int],
                      finished_ids: list[int]) -> RefStepOutput:
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        block_table = np.zeros((len(plan), self.max_blocks_per_seq), dtype=np.int32)
        do_sample = np.zeros(len(plan), dtype=np.uint8)
        self.sampling = []
        for r, (req, n) in enumerate(plan):
            start = req.num_computed
            input_ids += req.tokens[start:start + n]
            positions += range(start, start + n)
            slots += [req.block_ids[p // bs] * bs + p % bs for p in range(start, start + n)]
            block_table[r, :len(req.block_ids)] = req.block_ids
            req.num_computed = start + n
            if req.num_computed == len(req.tokens):
                do_sample[r] = 1
                self.sampling.append(req)
            self._index_full_blocks(req)
        counts = np.array([n for _, n in plan], dtype=np.int32)
        cu = np.zeros(len(plan) + 1, dtype=np.int32)
        np.cumsum(counts, out=cu[1:])
        return RefStepOutput(
            req_ids=np.array([req.req_id for req, _ in plan], dtype=np.int64),
            num_scheduled_tokens=counts,
            input_ids=np.array(input_ids, dtype=np.int32),
            positions=np.array(positions, dtype=np.int64),
            slot_mapping=np.array(slots, dtype=np.int64),
            cu_seqlens_q=cu,
            seq_lens=np.array([req.num_computed for req, _ in plan], dtype=np.int32),
            block_table=block_table,
            do_sample=do_sample,
            logits_indices=(cu[1:][do_sample == 1] - 1).astype(np.int64),
            preempted_ids=np.array(preempted, dtype=np.int64),
            finished_ids=np.array(finished_ids, dtype=np.int64),
        )
