"""Random add / step+update / abort sequences on tiny pools, checking every invariant after each step.

The test keeps its own model of every request (tokens, computed tokens, admission segment) and
cross-checks the scheduler's flat outputs, block tables and ref counts against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from .core_helpers import NO_IDS, core, make_scheduler

StepOutput = core.StepOutput


@dataclass
class Model:
    """What the test expects of one request."""

    tokens: list[int]
    status: str = "waiting"
    computed: int = 0
    segment_tokens: int = 0  # cached hit + scheduled tokens since the last admission
    recomputed: list[int] = field(default_factory=list)  # segment_tokens of each preempted admission


class SchedulerMachine(RuleBasedStateMachine):
    """Drives bastion._core.Scheduler with random traffic and checks it against `Model`s."""

    @initialize(num_blocks=st.integers(4, 24), block_size=st.integers(1, 4), max_num_seqs=st.integers(1, 6),
                budget=st.integers(1, 24), max_model_len=st.integers(4, 64), caching=st.booleans(),
                policy=st.sampled_from(["fcfs", "priority"]), threshold=st.sampled_from([0, 0, 2, 7]))
    def setup(self, num_blocks: int, block_size: int, max_num_seqs: int, budget: int, max_model_len: int,
              caching: bool, policy: str, threshold: int) -> None:
        """A tiny pool and limits, so preemption and eviction happen often."""
        self.s = make_scheduler(num_blocks, block_size, max_num_seqs, budget, max_model_len,
                                enable_prefix_caching=caching, policy=policy, long_prefill_token_threshold=threshold)
        self.cfg = dict(num_blocks=num_blocks, bs=block_size, seqs=max_num_seqs, budget=budget, policy=policy,
                        threshold=threshold, max_len=min(max_model_len, num_blocks * block_size))
        self.models: dict[int, Model] = {}
        self.unreported: list[int] = []
        self.next_id = 0

    @rule(prompt=st.lists(st.integers(0, 2), min_size=1, max_size=40), priority=st.integers(0, 2),
          salt=st.integers(0, 1))
    def add(self, prompt: list[int], priority: int, salt: int) -> None:
        """Add a request (tiny alphabet: prefix hits are frequent); unfittable prompts must be rejected."""
        req_id, self.next_id = self.next_id, self.next_id + 1
        if len(prompt) > self.cfg["max_len"]:
            try:
                self.s.add_request(req_id, np.array(prompt, dtype=np.int32))
            except ValueError:
                return
            raise AssertionError("a prompt that can never fit was accepted")
        self.s.add_request(req_id, np.array(prompt, dtype=np.int32), priority=priority, cache_salt=salt)
        self.models[req_id] = Model(tokens=list(prompt))

    @precondition(lambda self: any(m.status != "finished" for m in self.models.values()))
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        """Abort a live request; it is reported in the next step's finished_ids."""
        live = sorted(i for i, m in self.models.items() if m.status != "finished")
        req_id = data.draw(st.sampled_from(live))
        assert self.s.abort(req_id)
        self.models[req_id].status = "finished"
        self.unreported.append(req_id)

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One step, every cross-check, then random samples and finishes."""
        was_running = {i for i, m in self.models.items() if m.status == "running"}
        was_waiting = any(m.status == "waiting" for m in self.models.values())
        out = self.s.step()
        assert sorted(out.finished_ids.tolist()) == sorted(self.unreported)
        for req_id in self.unreported:
            del self.models[req_id]
        self.unreported = []
        self.check_preempted(out)
        self.check_scheduled(out, was_running)
        if was_waiting and not was_running:
            assert out.num_reqs >= 1, "an empty pool must admit the head of the queue"
        self.check_blocks(out)
        self.s.check_invariants()
        self.sample_and_finish(out, data)

    def check_preempted(self, out: StepOutput) -> None:
        """Preempted requests were running, leave the plan, and (fcfs) head the waiting queue."""
        preempted = out.preempted_ids.tolist()
        for req_id in preempted:
            m = self.models[req_id]
            assert m.status == "running"
            m.status, m.computed = "waiting", 0
            assert m.segment_tokens <= len(m.tokens)
            m.recomputed.append(m.segment_tokens)
        assert not set(preempted) & set(out.req_ids.tolist())
        if self.cfg["policy"] == "fcfs" and preempted:
            assert self.s.debug_waiting_ids()[: len(preempted)] == preempted[::-1]

    def check_scheduled(self, out: StepOutput, was_running: set[int]) -> None:
        """Caps hold and each request is fed exactly its next tokens at the right positions."""
        cfg = self.cfg
        assert out.num_tokens <= cfg["budget"] and out.num_reqs <= cfg["seqs"]
        assert len(self.s.debug_running_ids()) <= cfg["seqs"]
        ids = out.req_ids.tolist()
        first_new = next((r for r, i in enumerate(ids) if i not in was_running), len(ids))
        assert all(i not in was_running for i in ids[first_new:]), "running requests must come first"
        for r, req_id in enumerate(ids):
            m = self.models[req_id]
            if m.status == "waiting":
                m.status = "running"
                m.computed = m.segment_tokens = self.s.num_cached_tokens(req_id)
                assert m.computed % cfg["bs"] == 0 and m.computed < len(m.tokens)
            n = int(out.num_scheduled_tokens[r])
            lo = int(out.cu_seqlens_q[r])
            assert 0 < n and (cfg["threshold"] == 0 or n <= cfg["threshold"])
            assert out.positions[lo:lo + n].tolist() == list(range(m.computed, m.computed + n))
            assert out.input_ids[lo:lo + n].tolist() == m.tokens[m.computed:m.computed + n]
            m.computed += n
            m.segment_tokens += n
            assert out.seq_lens[r] == m.computed <= cfg["max_len"]
            assert out.do_sample[r] == (m.computed == len(m.tokens))

    def check_blocks(self, out: StepOutput) -> None:
        """Ref counts match holders, only cached blocks are shared, slots match block tables."""
        bs, tables = self.cfg["bs"], self.s.debug_block_tables()
        holders = np.zeros(self.cfg["num_blocks"], dtype=np.int64)
        for req_id, blocks in tables.items():
            assert self.models[req_id].status == "running"
            assert len(blocks) * bs >= self.models[req_id].computed
            np.add.at(holders, blocks, 1)
        refs = self.s.debug_ref_counts()
        assert (holders == refs).all()
        shared = np.flatnonzero(refs > 1)
        assert set(shared.tolist()) <= set(self.s.debug_cached_blocks()), "only prefix-cached blocks are shared"
        stats = self.s.stats()
        assert stats["num_free_blocks"] + stats["num_used_blocks"] == stats["num_total_blocks"]
        assert stats["num_free_blocks"] == len(self.s.debug_free_list()) == int((refs == 0).sum())
        for r, req_id in enumerate(out.req_ids.tolist()):
            row = out.block_table[r]
            assert row[: len(tables[req_id])].tolist() == tables[req_id]
            lo, hi = out.cu_seqlens_q[r], out.cu_seqlens_q[r + 1]
            pos = out.positions[lo:hi]
            assert (out.slot_mapping[lo:hi] == row[pos // bs] * bs + pos % bs).all()

    def sample_and_finish(self, out: StepOutput, data: st.DataObject) -> None:
        """Feed random tokens back, finish some, and check finished ones computed all but the last token."""
        sampling = out.req_ids[out.do_sample == 1].tolist()
        sampled = data.draw(st.lists(st.integers(0, 2), min_size=len(sampling), max_size=len(sampling)))
        finished = [i for i in sampling if data.draw(st.booleans(), label=f"finish {i}")]
        self.s.update(np.array(sampled, dtype=np.int32), np.array(finished, dtype=np.int64) if finished else NO_IDS)
        for req_id, tok in zip(sampling, sampled, strict=True):
            m = self.models[req_id]
            m.tokens.append(tok)
            if req_id in finished or self.s.finished_by_length(req_id):
                assert req_id in finished or len(m.tokens) >= self.cfg["max_len"]
                # The last admission computed every token but the one just sampled.
                assert m.segment_tokens == len(m.tokens) - 1
                m.status = "finished"
                self.unreported.append(req_id)

    @invariant()
    def queue_sizes_match_the_model(self) -> None:
        """Running and waiting counts agree with the model after every rule."""
        if not hasattr(self, "s"):
            return
        stats = self.s.stats()
        assert stats["num_running"] == sum(m.status == "running" for m in self.models.values())
        assert stats["num_waiting"] == sum(m.status == "waiting" for m in self.models.values())


SchedulerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow])
TestSchedulerMachine = SchedulerMachine.TestCase
