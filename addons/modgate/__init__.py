"""modgate: a gate for Go module traffic, built as mitmproxy addons.

The pure core (protocol parsing, configuration, cache decisions) never imports
mitmproxy; the addons in `modgate.addons` translate flows into calls to it.
"""

__version__ = "0.1.0"
