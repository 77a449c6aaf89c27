"""The ComfyUI layer: V3 nodes that adapt ComfyUI types to the pure-torch core in ``upsampler/``.

Every node module lists its nodes in a ``NODES`` tuple; the extension collects them. Node ids
(``SelfCascade...``) are an interface: saved workflows refer to them, never rename one.
"""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import pivot, renoise, stage, train, untrained, upsamplers, upscale

#: Modules that contribute nodes, in menu order.
NODE_MODULES = (pivot, renoise, stage, upscale, upsamplers, untrained, train)


def all_nodes() -> list[type[io.ComfyNode]]:
    """Every node class of the pack."""
    return [node for module in NODE_MODULES for node in module.NODES]


class SelfCascadeExtension(ComfyExtension):
    """Self-Cascade node pack."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()
