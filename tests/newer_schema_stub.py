"""Load the pack through ComfyUI's own ``nodes.load_custom_node`` and print what it registered, as JSON.

``--newer`` first stubs the schema features of newer ComfyUI releases onto the real 0.3.75 ``io`` module
(nothing newer can run here): a ``search_aliases`` field on ``io.Schema``, an ``advanced`` argument on the
widget inputs (echoed by ``as_dict`` as newer releases do), and core's KSampler under ``model/sampling``
(the newer menus). The fields copy the shapes of the newer ``comfy_api/latest/_io.py``. Without the flag the
real 0.3.75 host is used as it is. Run in a fresh interpreter by tests/test_foundation.py, with dev/ on
PYTHONPATH (for ``hostenv``).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _with_advanced(input_cls: type) -> type:
    class Newer(input_cls):
        def __init__(self, *args, advanced: bool | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.advanced = advanced

        def as_dict(self):
            return super().as_dict() | ({"advanced": True} if self.advanced else {})

    return Newer


def stub_newer_schema() -> None:
    """The newer schema fields on the running ``comfy_api.latest.io`` (see the module doc)."""
    from comfy_api.latest import io

    import nodes

    @dataclasses.dataclass
    class NewerSchema(io.Schema):
        search_aliases: list[str] = dataclasses.field(default_factory=list)

    io.Schema = NewerSchema
    for kind in (io.Int, io.Float, io.Combo, io.Boolean, io.String):
        kind.Input = _with_advanced(kind.Input)
    nodes.KSampler.CATEGORY = "model/sampling"


def main(newer: bool) -> None:
    import hostenv

    hostenv.prepare_in_process()
    import nodes

    if newer:
        stub_newer_schema()
    before = set(nodes.NODE_CLASS_MAPPINGS)
    ok = asyncio.run(nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    report = {"loaded": ok, "nodes": {}}
    for node_id in sorted(set(nodes.NODE_CLASS_MAPPINGS) - before):
        cls = nodes.NODE_CLASS_MAPPINGS[node_id]
        schema = cls.GET_SCHEMA()
        info = cls.GET_NODE_INFO_V1()
        advanced = sorted(name for section in info["input"].values() if isinstance(section, dict)
                          for name, spec in section.items() if len(spec) > 1 and spec[1].get("advanced"))
        report["nodes"][node_id] = {"category": info["category"], "advanced": advanced,
                                    "search_aliases": getattr(schema, "search_aliases", None)}
    print(json.dumps(report))


if __name__ == "__main__":
    main("--newer" in sys.argv[1:])
