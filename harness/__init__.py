"""nodeport-harness: load-test a Kubernetes NodePort Service and see where the traffic goes."""

from harness.errors import HarnessError

__version__ = "0.1.0"
__all__ = ["HarnessError", "__version__"]
