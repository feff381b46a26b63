"""``HeadSigner``: when and how the writer signs tree heads over its sink's Merkle tree.

A head is due once ``every`` records wait unsigned, or ``interval_s`` seconds after the last head
while any record waits, or when forced (``AuditLog.checkpoint`` and close). The writer asks only
after the records in the tree are durable, so a head never covers a record a crash could lose.
Timestamps never go back (a clock stepped backwards repeats the last one). Each head is fsynced to
the heads log before it is handed to the witness; a witness that fails is logged and skipped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from bastion.audit.heads import HeadEntry, HeadLog, SignedTreeHead, heads_path_for
from bastion.audit.keys import AuditKeyError, SigningKey
from bastion.audit.merkle import CompactRange
from bastion.audit.sinks import AuditError

log = logging.getLogger(__name__)


class HeadSigner:
    """Owns the heads log of one trail and signs heads with ``key`` on the schedule above."""

    def __init__(self, trail: str | os.PathLike[str], key: SigningKey, *, every: int, interval_s: float,
                 witness: Callable[[SignedTreeHead], object] | None = None) -> None:
        self.trail = os.fspath(trail)
        self.key = key
        self.every = every
        self.interval_s = interval_s
        self.witness = witness
        self.heads = HeadLog(heads_path_for(trail))
        self.last_at = time.monotonic()

    @property
    def head(self) -> SignedTreeHead | None:
        """The latest signed head (None before the first)."""
        return self.heads.last.head if self.heads.last is not None else None

    def resume(self) -> CompactRange:
        """The tree's frontier at the last head, checked against its signature (empty for a new trail)."""
        last = self.heads.last
        if last is None:
            return CompactRange()
        problem = last.head.verify(self.key.verify_key)
        if problem is not None:
            raise AuditKeyError(f"audit trail {self.trail}: its last tree head does not verify with the signing key "
                                f"given (key id {self.key.key_id[:16]}...): {problem}; either this is not the "
                                "trail's key, or the heads log was altered (run: python -m bastion audit verify)")
        try:
            return last.compact_range()
        except ValueError as e:
            raise AuditError(f"heads log {self.heads.path}: last head: {e}") from None

    def unsigned(self, tree: CompactRange) -> int:
        """Records in ``tree`` that no signed head covers yet."""
        head = self.head
        return tree.size - (head.tree_size if head is not None else 0)

    def deadline(self, tree: CompactRange) -> float | None:
        """The monotonic time by which a head is due (None when nothing waits)."""
        return self.last_at + self.interval_s if self.unsigned(tree) > 0 else None

    def maybe_sign(self, tree: CompactRange, leaves: list[bytes], force: bool = False) -> SignedTreeHead | None:
        """Sign and write a head over ``tree`` if one is due; ``leaves`` (those it adds) is emptied.

        A failure to write the head raises (the caller stops the trail); a failing witness does not.
        """
        unsigned = self.unsigned(tree)
        if unsigned == 0 or not (force or unsigned >= self.every or time.monotonic() - self.last_at >= self.interval_s):
            return None
        last = self.head
        timestamp = max(int(time.time() * 1000), last.timestamp_ms if last is not None else 0)
        head = SignedTreeHead.sign(self.key, tree.size, tree.root(), timestamp)
        self.heads.append(HeadEntry(head, list(leaves), tree.hashes))
        leaves.clear()
        self.last_at = time.monotonic()
        if self.witness is not None:
            try:
                self.witness(head)
            except Exception as e:  # a witness that is down must not stop the trail; it gets the next head
                log.warning("audit log %s: witness hook failed on tree head %d (%s: %s)", self.trail,
                            head.tree_size, type(e).__name__, e)
        return head

    def close(self) -> None:
        """Close the heads log."""
        self.heads.close()
