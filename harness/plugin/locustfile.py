"""The locustfile `nodeport-harness run` uses (the repo root's locustfile.py is the same).

Importing NodePortUser registers the plugin (options, discovery, recording, reports).
"""

from harness.plugin.users import NodePortUser

__all__ = ["NodePortUser"]
