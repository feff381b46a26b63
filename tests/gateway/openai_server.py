"""A real OpenAI-compatible HTTP server on loopback (http.server in a thread), with fault modes.

The request's ``model`` picks the behaviour: ``ok``, ``slow``, ``cut`` (stream stops before
``[DONE]``), ``malformed`` (bad JSON event), ``error-event``, ``http-429`` / ``http-500`` /
``http-401`` / ``context`` (400 about context length). It streams ``SCRIPT`` word by word and
continues after a final assistant message when ``continue_final_message`` is set (vLLM's rule).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .fault_backends import SCRIPT

_ERRORS = {
    "http-429": (429, {"Retry-After": "2"}, "rate limit reached"),
    "http-500": (500, {}, "internal error"),
    "http-401": (401, {}, "invalid api key"),
    "context": (400, {}, "This model's maximum context length is 2048 tokens"),
}


def _continue_after(done: str) -> list[str]:
    rest = SCRIPT[len(done):] if SCRIPT.startswith(done) else SCRIPT
    words = rest.split(" ")
    return [p for p in (w if i == 0 else " " + w for i, w in enumerate(words)) if p]


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIServer

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        mode = body.get("model", "ok")
        if mode in _ERRORS:
            status, headers, message = _ERRORS[mode]
            payload = json.dumps({"error": {"message": message}}).encode()
            self.send_response(status)
            for k, v in {**headers, "Content-Type": "application/json", "Content-Length": str(len(payload))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
            return
        chat = self.path.endswith("/chat/completions")
        done = ""
        if chat and body.get("continue_final_message"):
            done = body["messages"][-1]["content"]
        elif not chat:
            done = body["prompt"][len(self.server.prompt_prefix(body["prompt"])):]
        pieces = _continue_after(done)[: body.get("max_tokens", 1000)]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            self._stream(mode, chat, pieces)
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnects += 1

    def _event(self, data: str) -> None:
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def _stream(self, mode: str, chat: bool, pieces: list[str]) -> None:
        for i, piece in enumerate(pieces):
            if mode == "cut" and i == 3:
                return  # connection closes with no [DONE]
            if mode == "malformed" and i == 2:
                self._event("{not json")
                return
            if mode == "error-event" and i == 2:
                self._event(json.dumps({"error": {"message": "engine crashed"}}))
                return
            if mode == "slow":
                time.sleep(0.3)
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            self._event(json.dumps({"choices": [choice]}))
        final = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else \
            {"index": 0, "text": "", "finish_reason": "stop"}
        self._event(json.dumps({"choices": [final]}))
        self._event(json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces)}}))
        self._event("[DONE]")


class OpenAIServer(ThreadingHTTPServer):
    """The loopback server; ``received`` lists every request, ``base_url`` is its /v1 root."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict] = []
        self.disconnects = 0
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @staticmethod
    def prompt_prefix(prompt: str) -> str:
        """Completions prompts are "<question>|<text so far>": the part before the bar is the question."""
        return prompt.split("|", 1)[0] + "|" if "|" in prompt else prompt

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
