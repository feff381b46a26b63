"""Command line: ``python -m bastion generate|chat|serve|audit ...``.

``generate`` and ``chat`` run the embedded default model (or ``--model``) and print the answer;
``serve [MODEL]`` runs the OpenAI-compatible HTTP service (``pip install "bastion[server]"``);
``audit verify PATH`` checks a hash-chained audit trail and names the first bad record.
"""

from __future__ import annotations

import argparse
import json
import sys


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="GGUF file or HF directory (default: embedded SmolLM2)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the output as JSON")


def _print_outputs(outputs: list, as_json: bool) -> None:
    for out in outputs:
        if as_json:
            print(json.dumps({
                "text": out.text, "token_ids": out.token_ids, "finish_reason": out.finish_reason,
                "prompt_tokens": len(out.prompt_token_ids),
                "time_to_first_token_s": out.metrics.time_to_first_token,
                "e2e_latency_s": out.metrics.e2e_latency,
            }))
        else:
            print(out.text)


def _run_model(args: argparse.Namespace) -> int:
    from bastion import LLM, SamplingParams
    from bastion.errors import BastionError

    # Bad flags and a missing or broken model are the user's input, not a bastion bug: one line on
    # stderr and exit status 2 (argparse's usage-error code), not a traceback.
    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                seed=args.seed)
        llm = LLM(model=args.model)
    except (BastionError, ValueError, OSError) as exc:
        print(f"python -m bastion {args.command}: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "generate":
            outputs = llm.generate(args.prompt, params, use_tqdm=False)
        else:
            messages = [{"role": "user", "content": p} for p in args.prompt]
            outputs = llm.chat(messages, params, use_tqdm=False)
    finally:
        llm.close()
    _print_outputs(outputs, args.json)
    return 0


def build_parser(serve_flags: bool = True) -> argparse.ArgumentParser:
    """The argument parser of ``python -m bastion``. ``serve_flags``: give ``serve`` its flags, which come
    from the settings models and import the engine (torch): only when ``serve`` is what runs."""
    from bastion.cli_audit import add_audit_parser

    parser = argparse.ArgumentParser(prog="python -m bastion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="complete one or more prompts")
    gen.add_argument("prompt", nargs="+")
    _add_engine_args(gen)
    chat = sub.add_parser("chat", help="answer a user message with the model's chat template")
    chat.add_argument("prompt", nargs="+", help="the user message (several words are joined)")
    _add_engine_args(chat)
    add_audit_parser(sub)
    serve_help = 'run the OpenAI-compatible HTTP service (pip install "bastion[server]")'
    try:
        if not serve_flags:
            raise ImportError
        from bastion.server.serve import build_parser as add_serve_parser
    except ImportError:  # another command runs, or the server extra is not installed (then `serve` says so)
        sub.add_parser("serve", help=serve_help, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    else:
        add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    given = sys.argv[1:] if argv is None else argv
    args = build_parser(serve_flags=bool(given) and given[0] == "serve").parse_args(argv)
    if args.command == "serve":
        try:
            from bastion.server.serve import run as serve
        except ImportError as exc:
            print(f'python -m bastion serve: error: {exc}; install it with: pip install "bastion[server]"',
                  file=sys.stderr)
            return 2
        return serve(args)
    if args.command == "audit":
        from bastion.cli_audit import run_audit

        return run_audit(args)
    if args.command == "chat" and len(args.prompt) > 1:
        # several words without quotes: one message
        args.prompt = [" ".join(args.prompt)]
    return _run_model(args)


if __name__ == "__main__":
    sys.exit(main())
