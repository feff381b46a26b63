"""Grammars of structured outputs (llguidance): compile once per constraint, one matcher per request,
one bitmask per step. See docs/STRUCTURED_OUTPUTS.md."""

from bastion.sampling.grammar.bitmask import BitmaskFiller, allowed_tokens
from bastion.sampling.grammar.compiler import CompiledGrammar, GrammarCompiler, compiler_for
from bastion.sampling.grammar.matcher import GrammarMatcher

__all__ = ["BitmaskFiller", "CompiledGrammar", "GrammarCompiler", "GrammarMatcher", "allowed_tokens", "compiler_for"]
