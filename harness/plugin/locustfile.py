"""The locustfile `nodeport-harness run` uses, and the one import a locustfile of yours needs:
``from harness.plugin.locustfile import NodePortUser`` registers the plugin (options,
discovery, recording, reports) on Locust's events and gives the user class to subclass.
"""

import harness.plugin.listeners  # noqa: F401  (registers the plugin on Locust's events)
from harness.plugin.users import NodePortUser

__all__ = ["NodePortUser"]
