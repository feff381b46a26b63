"""Retrieval: BM25 over a document set (the ``bm25s`` library), and the step that queries it.

``bm25s`` (sparse-matrix BM25, numpy + scipy, the ``pipeline`` extra) was chosen over a BM25 of our own:
it installs as a pure-Python wheel, indexes the bundled document set in ~6 ms and answers a query in
well under a millisecond, and it is maintained and scales to millions of documents.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.pipeline.policy import StepPolicy
from bastion.pipeline.result import PipelineError
from bastion.pipeline.step import Step, StepOutput
from bastion.pipeline.template import Template

if TYPE_CHECKING:
    from bastion.pipeline.context import RunContext


@dataclass(frozen=True)
class Document:
    """One searchable document."""

    id: str
    title: str
    text: str


def _bm25s() -> Any:
    try:
        return importlib.import_module("bm25s")
    except ImportError as e:
        raise PipelineError("retrieval needs bm25s: pip install 'bastion[pipeline]' (or pip install bm25s)") from e


class DocumentIndex:
    """A BM25 index (English stopwords removed, no stemming) over ``documents``."""

    def __init__(self, documents: Sequence[Document]) -> None:
        """Index the documents (at least one)."""
        if not documents:
            raise ValueError("DocumentIndex needs at least one document")
        bm25s = _bm25s()
        tokenization = importlib.import_module("bm25s.tokenization")
        self.documents = list(documents)
        self._tokenizer = tokenization.Tokenizer(stopwords="en", stemmer=None)
        corpus = [f"{d.title}\n{d.text}" for d in self.documents]
        tokens = self._tokenizer.tokenize(corpus, return_as="tuple", show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(tokens, show_progress=False)
        body = json.dumps([[d.id, d.title, d.text] for d in self.documents], ensure_ascii=False)
        self.fingerprint = hashlib.sha256(body.encode()).hexdigest()

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> DocumentIndex:
        """One document per ``*.md`` / ``*.txt`` file of ``path`` (sorted): id = file stem, title = its
        first line (without a leading ``#``), text = the rest."""
        files = sorted(p for p in Path(path).iterdir() if p.suffix in (".md", ".txt"))
        docs = []
        for p in files:
            title, _, text = p.read_text(encoding="utf-8").strip().partition("\n")
            docs.append(Document(p.stem, title.lstrip("# ").strip(), text.strip()))
        return cls(docs)

    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        """The ``k`` best documents with a positive score: ``{"id", "title", "text", "score"}``."""
        query_tokens = self._tokenizer.tokenize([query], update_vocab=False, return_as="tuple", show_progress=False)
        if not any(query_tokens.ids[0]):
            return []
        k = min(k, len(self.documents))
        indices, scores = self._bm25.retrieve(query_tokens, k=k, show_progress=False)
        return [{"id": self.documents[int(i)].id, "title": self.documents[int(i)].title,
                 "text": self.documents[int(i)].text, "score": round(float(s), 4)}
                for i, s in zip(indices[0], scores[0], strict=True) if s > 0]


class RetrievalStep(Step):
    """Search ``index`` with the rendered ``query`` template; the output is the list of hits."""

    kind = "retrieval"

    def __init__(self, name: str, query: str, index: DocumentIndex, *, k: int = 3,
                 policy: StepPolicy | None = None) -> None:
        """``k``: how many documents at most."""
        super().__init__(name, policy)
        if k < 1:
            raise ValueError(f"step {name!r}: k must be >= 1, got {k}")
        self.query = Template(query)
        self.index = index
        self.k = k

    @property
    def inputs(self) -> tuple[str, ...]:
        """The query's fields."""
        return self.query.fields

    def definition(self, ctx: RunContext) -> dict[str, Any]:
        """The query template, ``k`` and the document set's fingerprint."""
        return {"kind": self.kind, "query": self.query.text, "k": self.k, "index": self.index.fingerprint,
                **self.policy.describe()}

    async def run(self, ctx: RunContext, values: Mapping[str, Any], backend: str | None = None) -> StepOutput:
        """Search (microseconds: runs on the event loop)."""
        return StepOutput(self.index.search(self.query.render(values), self.k))
