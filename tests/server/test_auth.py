"""The auth matrix over real HTTP: no key, wrong key, wrong scope, another tenant's job."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from bastion.server.auth import KeyRing, key_digest
from bastion.server.config import ServerConfig

from .server_process import KEYS, ServerProcess, headers

COMPLETION = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
JOB = {"endpoint": "/v1/completions", "body": COMPLETION}


@pytest.mark.parametrize(("who", "method", "path", "body", "status"), [
    (None, "POST", "/v1/completions", COMPLETION, 401),
    ("wrong", "POST", "/v1/completions", COMPLETION, 401),
    ("jobs_only", "POST", "/v1/completions", COMPLETION, 403),
    ("jobs_only", "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 403),
    ("gen_only", "POST", "/v1/completions", COMPLETION, 200),
    ("gen_only", "POST", "/v1/jobs", JOB, 403),
    ("gen_only", "GET", "/v1/jobs", None, 403),
    ("jobs_only", "POST", "/v1/jobs", JOB, 202),
    ("admin", "POST", "/v1/completions", COMPLETION, 200),
    (None, "GET", "/v1/models", None, 401),
    (None, "POST", "/tokenize", {"prompt": "x"}, 401),
    (None, "GET", "/health", None, 200),
    (None, "GET", "/ready", None, 200),
    (None, "GET", "/metrics", None, 200),
])
def test_auth_matrix(server: ServerProcess, who: str | None, method: str, path: str, body: dict | None,
                     status: int) -> None:
    h = {} if who is None else {"Authorization": "Bearer not-a-key-0123456789"} if who == "wrong" else headers(who)
    response = httpx.request(method, server.url + path, json=body, headers=h, timeout=60)
    assert response.status_code == status, response.text
    if status >= 400:
        error = response.json()["error"]
        assert error["type"] in ("authentication_error", "permission_error") and error["message"]


def test_x_api_key_header_is_accepted(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/v1/models", headers={"X-API-Key": KEYS["alice"]})
    assert response.status_code == 200


def test_another_tenants_job_is_404_not_403(server: ServerProcess) -> None:
    made = httpx.post(server.url + "/v1/jobs", json=JOB, headers=headers("alice"), timeout=60)
    assert made.status_code == 202
    job_id = made.json()["id"]
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/result"),
                         ("DELETE", f"/v1/jobs/{job_id}")):
        response = httpx.request(method, server.url + path, headers=headers("bob"), timeout=60)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "job_not_found"
    listed = httpx.get(server.url + "/v1/jobs", headers=headers("bob")).json()["data"]
    assert job_id not in {j["id"] for j in listed}
    # the same tenant, another key with the jobs scope, sees it
    assert httpx.get(server.url + f"/v1/jobs/{job_id}", headers=headers("jobs_only")).status_code == 200


def test_keys_are_kept_hashed_and_checked_in_full() -> None:
    ring = KeyRing.from_sources(f"sha256:{key_digest('k' * 20)}:t1:u1:generate;{'p' * 20}:t2")
    assert ring.authenticate("k" * 20).tenant == "t1"
    assert ring.authenticate("p" * 20).scopes == frozenset({"generate", "jobs"})
    assert ring.authenticate("k" * 19) is None and ring.authenticate("k" * 21) is None
    assert all("k" * 20 not in repr(d) for d, _ in ring._keys)
    with pytest.raises(ValueError, match="scopes"):
        KeyRing.from_sources(f"{'q' * 20}:t:u:write")
    with pytest.raises(ValueError, match="at least 16"):
        KeyRing.from_sources("short:t")


def test_no_key_refuses_to_bind_beyond_loopback() -> None:
    ServerConfig(host="127.0.0.1").check_bind(has_keys=False)
    with pytest.raises(ValueError, match="insecure-no-auth"):
        ServerConfig(host="0.0.0.0").check_bind(has_keys=False)
    ServerConfig(host="0.0.0.0", insecure_no_auth=True).check_bind(has_keys=False)
    ServerConfig(host="0.0.0.0").check_bind(has_keys=True)
    # the command refuses before loading anything: exit status 2 and a message naming the fix
    done = subprocess.run([sys.executable, "-m", "bastion", "serve", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                            "HOME": "/tmp"})
    assert done.returncode == 2 and "insecure-no-auth" in done.stderr


def test_metrics_can_require_the_admin_key(tmp_path) -> None:
    proc = ServerProcess(tmp_path, "--metrics-require-key")
    try:
        proc.wait_ready()
        assert httpx.get(proc.url + "/metrics").status_code == 401
        assert httpx.get(proc.url + "/metrics", headers=headers("alice")).status_code == 403
        scraped = httpx.get(proc.url + "/metrics", headers=headers("admin"))
        assert scraped.status_code == 200 and "vllm:num_requests_running" in scraped.text
        assert "bastion:http_requests_total" in scraped.text
    finally:
        proc.stop()
