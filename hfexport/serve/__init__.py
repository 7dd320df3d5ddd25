"""`hfexport serve`: an OpenAI-compatible HTTP server over the torch-free runtime, with dynamic batching.

Installed by `pip install "hfexport[serve]"` (uvicorn + starlette on top of the runtime; no torch, no
transformers). `create_app(models, config)` is the ASGI app; `serve(bundles, config)` loads bundles and
runs it on uvicorn until SIGTERM or Ctrl-C, letting in-flight requests finish.
"""

from __future__ import annotations

from hfexport.serve.config import ModelSettings, ServeConfig

__all__ = ["ModelSettings", "ServeConfig", "create_app", "load_models", "serve"]


def __getattr__(name: str):
    # Lazy, so reading the config types does not import starlette and uvicorn.
    if name == "create_app":
        from hfexport.serve.app import create_app

        return create_app
    if name in ("load_models", "serve"):
        from hfexport.serve import server

        return getattr(server, name)
    raise AttributeError(name)
