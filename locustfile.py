"""`locust -f locustfile.py`: Locust at every node of a NodePort Service (see README).

The user class and the plugin live in the `harness` package; subclass NodePortUser here
to change the request (or use --path/--method/--body), wait time or weights.
"""

from harness.plugin.locustfile import NodePortUser

__all__ = ["NodePortUser"]
