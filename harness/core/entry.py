"""Entry plans: which node (or LoadBalancer) each request of a user enters through.

``--entry``: all (round-robin over nodes, each user at its own offset), random, single (the
first node or ``--node NAME``: what the naive client does), sticky (each user keeps one node,
like DNS round-robin) and lb (the Service's LoadBalancer ingress). Pure.
"""

from __future__ import annotations

from harness.core.model import Target
from harness.core.runinfo import ENTRY_STRATEGIES
from harness.errors import HarnessError

LB_ENTRY = "lb"  # the entry label of --entry lb (its row in spread.json's entry_nodes)


def entry_plan(target: Target, strategy: str, user_index: int, node_name: str | None = None):
    """The (label, base URL) list a user cycles through, and whether it picks at random."""
    nodes = target.targeted_nodes
    if strategy == "lb":
        url = target.lb_url()
        if not url:
            raise HarnessError(
                f"--entry lb: service {target.service.name} has no LoadBalancer ingress; "
                "use --entry all, or make it type LoadBalancer (nodeport-harness expose "
                f"{target.service.name} --type LoadBalancer)"
            )
        return [(LB_ENTRY, url)]
    if not nodes:
        raise HarnessError("no node to send traffic to: discovery found no targeted node")
    if strategy == "single":
        if node_name:
            match = [n for n in target.nodes if n.name == node_name and n.address]
            if not match:
                raise HarnessError(
                    f"--node {node_name}: no such node with an address; nodes: "
                    + ", ".join(n.name for n in nodes)
                )
            node = match[0]
        else:
            node = nodes[0]
        return [(node.name, target.node_url(node))]
    if strategy == "sticky":
        node = nodes[user_index % len(nodes)]
        return [(node.name, target.node_url(node))]
    plan = [(n.name, target.node_url(n)) for n in nodes]
    if strategy == "all":
        # Start each user at its own offset so the fleet is balanced from the first request.
        shift = user_index % len(plan)
        return plan[shift:] + plan[:shift]
    if strategy == "random":
        return plan
    raise HarnessError(f"--entry {strategy!r}: use one of {', '.join(ENTRY_STRATEGIES)}")
