"""bastion's HTTP service: OpenAI-compatible routes, jobs, auth and operations over a Gateway.

``build_app(gateway, config=ServerConfig(...))`` makes the FastAPI app (tests and other hosts reuse
it); ``python -m bastion serve`` runs it on uvicorn. Needs the ``server`` extra.
"""

from bastion.server.app import build_app, drain
from bastion.server.auth import KeyRing, Principal
from bastion.server.config import ServerConfig

__all__ = ["KeyRing", "Principal", "ServerConfig", "build_app", "drain"]
