"""The floor of the stack: mitmproxy answering module-proxy requests from memory.

    python scripts/benchlib/bare_addon.py DIR PROXY_PORT GOPROXY_PORT CONFDIR HTTP2
    mitmdump -s scripts/benchlib/bare_addon.py --set bench_tree=DIR

Run as a script (under `python -O`, as `modgate run` runs), it uses the mitmproxy that
`modgate run` uses (`lean_master`: only the addons modgate loads, same modes); in
mitmdump, it pays for mitmdump's thirty-odd other addons on every request, which modgate
does not.

Each file of the proxy tree DIR is read once, on its first request, and then answered
from memory with `Response.make`: no routing, no store, no checks. The benchmark
compares modgate with this to see what modgate itself costs on top of mitmproxy.
"""

from __future__ import annotations

import asyncio
import sys
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


async def main(tree: str, port: int, goport: int, confdir: str, http2: bool) -> None:
    from mitmproxy import options

    from modgate.cli import REVERSE_TARGET, lean_master

    modes = [f"regular@{port}", f"reverse:{REVERSE_TARGET}@{goport}"]
    opts = options.Options(listen_host="127.0.0.1", confdir=confdir, mode=modes)
    master = lean_master(opts)
    master.addons.add(Bare())
    opts.update(connection_strategy="lazy", http2=http2, bench_tree=tree)
    await master.run()


if __name__ == "__main__":
    tree, port, goport, confdir, http2 = sys.argv[1:]
    asyncio.run(main(tree, int(port), int(goport), confdir, http2 == "true"))
