"""Load modgate into mitmproxy's own tools: `mitmweb -s addons/modgate_addons.py`."""

from modgate.addons import all_addons

addons = all_addons()
