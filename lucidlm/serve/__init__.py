"""Serve a model over the OpenAI API: an ASGI app (Starlette, served by uvicorn) over a worker
thread that batches requests into the token engine as they come, and a chat page at / that
shows each token's probability and where it looked.

    from lucidlm import load
    from lucidlm.serve import Server
    model, tokenizer = load()
    url = Server(model, tokenizer).start_background()   # http://127.0.0.1:PORT; the API is under /v1
"""

from .app import Server, ServerOptions
from .scheduler import Scheduler

__all__ = ["Scheduler", "Server", "ServerOptions"]
