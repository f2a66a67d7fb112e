"""The floor of the stack: mitmproxy answering module-proxy requests from memory.

    mitmdump -s scripts/benchlib/bare_addon.py --set bench_tree=DIR

Each file of the proxy tree DIR is read once, on its first request, and then answered
from memory with `Response.make`: no routing, no store, no checks. The benchmark
compares modgate with this to see what modgate itself costs on top of mitmproxy.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from mitmproxy import ctx, http

TYPES = {"zip": "application/zip", "info": "application/json", "mod": "text/plain"}


class Bare:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def load(self, loader: object) -> None:
        loader.add_option("bench_tree", str, "", "proxy tree to serve")  # type: ignore[attr-defined]

    def running(self) -> None:
        print("bare: ready", flush=True)

    def request(self, flow: http.HTTPFlow) -> None:
        path = unquote(flow.request.path.split("?", 1)[0])
        body = self.files.get(path)
        if body is None:
            file = Path(ctx.options.bench_tree) / path.lstrip("/")
            if ".." in path or not file.is_file():
                flow.response = http.Response.make(404, b"not found\n")
                return
            body = self.files[path] = file.read_bytes()
        kind = path.rsplit(".", 1)[-1] if "/@v/" in path else "info"
        flow.response = http.Response.make(
            200, body, {"Content-Type": TYPES.get(kind, "text/plain")}
        )


addons = [Bare()]
