"""Newer ComfyUI schema features, used only where the running ComfyUI offers them.

ComfyUI 0.3.75 is the tested floor. Later releases added, in ``comfy_api.latest.io``: a
``search_aliases`` field on ``Schema`` (extra words the node search matches), an ``advanced``
argument on inputs (the frontend folds such widgets away), and core menus under ``model/...``
(``KSampler`` in ``model/sampling``). Each is detected on the running ComfyUI, never assumed from a
version number, so one pack serves both: on 0.3.75 the schemas are exactly what they were.
"""
from __future__ import annotations

import dataclasses
import inspect
import sys

from comfy_api.latest import io

__all__ = ["advanced", "core_sampling_category", "schema", "supports_input_arg", "supports_schema_field"]

#: Schema fields the pack passes only where ``io.Schema`` has them.
OPTIONAL_SCHEMA_FIELDS = frozenset({"search_aliases"})
#: Core's sampling category on ComfyUI releases whose KSampler cannot be looked up (0.3.75's value).
FALLBACK_SAMPLING_CATEGORY = "sampling"


def supports_schema_field(name: str) -> bool:
    """True if the running ``io.Schema`` dataclass has a field ``name``."""
    return dataclasses.is_dataclass(io.Schema) and name in {f.name for f in dataclasses.fields(io.Schema)}


def supports_input_arg(input_cls: type, name: str) -> bool:
    """True if ``input_cls`` (e.g. ``io.Float.Input``) takes a keyword argument ``name``."""
    try:
        params = inspect.signature(input_cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def advanced(input_cls: type) -> dict:
    """``{"advanced": True}`` where ``input_cls`` takes it (the newer frontend folds the widget), else ``{}``."""
    return {"advanced": True} if supports_input_arg(input_cls, "advanced") else {}


def schema(**fields) -> io.Schema:
    """``io.Schema(**fields)`` without the optional newer fields the running ComfyUI lacks.

    Only :data:`OPTIONAL_SCHEMA_FIELDS` are ever dropped, so a misspelt field still fails loudly.
    """
    for name in OPTIONAL_SCHEMA_FIELDS & fields.keys():
        if not supports_schema_field(name):
            del fields[name]
    return io.Schema(**fields)


def core_sampling_category() -> str:
    """The category of core's KSampler in the running ComfyUI ("sampling" on 0.3.75, "model/sampling" later).

    Read from ComfyUI's own ``nodes`` module when it is loaded (it always is when ComfyUI loads the pack),
    so the pack's menu sits next to core's samplers in either layout.
    """
    core = sys.modules.get("nodes")
    category = getattr(getattr(core, "KSampler", None), "CATEGORY", None)
    return category if isinstance(category, str) and category else FALLBACK_SAMPLING_CATEGORY
