"""One graph description -> ComfyUI's two workflow formats (UI 0.4 and API), plus the reverse check.

``Graph`` holds nodes (type, title, values by input name, links) and groups/notes. With a live
server's ``/object_info`` it writes:

- the API format ``{id: {"inputs", "class_type", "_meta": {"title"}}}`` (inputs in the node's
  /object_info order), and
- the UI format the frontend saves (``nodes`` with id/type/pos/size/inputs/outputs/
  widgets_values, ``links`` as ``[id, from, from_slot, to, to_slot, type]``, ``groups``,
  version 0.4). ``widgets_values`` follow the /object_info input order (required, then
  optional); a widget with a "control after generate" companion (see ``has_control``) is
  followed by its control value ("fixed"), as the frontend stores it. A widget driven by a link
  (``Out`` as its value) also gets a socket in ``inputs`` with ``"widget": {"name": ...}``.

The layout (layout.py): nodes and notes are moved down until no two boxes overlap, groups wrap
their members, ``to_ui`` raises if the result breaks the layout rule. Notes are Markdown notes
sized to their text. The file saves no view, so the frontend fits the graph to the window on load.

``ui_to_api`` converts a UI workflow back the way the frontend does (Note nodes dropped), so a
test can show the two files describe the same graph. Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from layout import COL_W, GROUP_FONT, PAD, ROW_H, TITLE_H, layout_problems, note_height, place, ui_boxes

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
NOTE_TYPES = ("Note", "MarkdownNote")


@dataclass(frozen=True)
class Out:
    """Output ``slot`` of node ``node`` (what a link starts from).

    Linked into a widget input (e.g. a FLOAT output into Stage's ``strength``), ``shown`` is the value the
    UI file stores for the widget (the frontend keeps a linked widget's value in ``widgets_values``; it
    is what the widget shows if the link is removed); None = the input's default.
    """

    node: int
    slot: int
    shown: object = None


@dataclass
class Node:
    id: int
    type: str
    title: str
    values: dict
    col: float
    row: float
    width: int = 320
    #: ``properties.models`` of the UI node: [{"name", "url", "directory"}], the files the frontend's
    #: missing-models dialog offers to download (it lists those whose name is a widget value).
    models: list[dict] = field(default_factory=list)


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)
    #: id, title, text, col, row, w, h
    notes: list[tuple[int, str, str, float, float, int, int]] = field(default_factory=list)
    groups: list[tuple[str, list[int], str]] = field(default_factory=list)  # title, member ids, colour

    def _next_id(self) -> int:
        return 1 + max([n.id for n in self.nodes] + [0])

    def add(self, type_: str, title: str, col: float, row: float, node_w: int = 320, **values) -> Node:
        node = Node(self._next_id(), type_, title, values, col, row, node_w)
        self.nodes.append(node)
        return node

    def note(self, title: str, text: str, col: float, row: float, width: int = 320) -> int:
        """A Markdown note at (col, row), as high as its text needs at ``width``. The title is drawn in the
        node font, readable when the whole graph is in view (the note's own type is small): say the gist."""
        nid = -1 - len(self.notes)  # numbered after every node by to_ui (node ids do not depend on notes)
        self.notes.append((nid, title, text, col, row, width, note_height(text, width)))
        return nid

    def group(self, title: str, members: list, color: str = "#3f789e") -> None:
        self.groups.append((title, [m if isinstance(m, int) else m.id for m in members], color))


def out(node: Node, slot: int = 0, shown: object = None) -> Out:
    return Out(node.id, slot, shown)


def input_specs(info: dict, type_: str) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) of a node's inputs, in /object_info order (required, then optional)."""
    entry = info[type_]["input"]
    order = info[type_].get("input_order") or {s: list(entry.get(s, {})) for s in ("required", "optional")}
    return [(name, entry[s][name], s == "optional") for s in ("required", "optional") for name in order.get(s, [])]


def is_widget(spec: list) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def has_control(spec: list, name: str) -> bool:
    """Whether the frontend adds a "control after generate" widget (stored after the value).

    As ComfyUI's frontend decides it: the input's ``control_after_generate`` flag, or, when the
    flag is absent, an INT named ``seed`` / ``noise_seed``.
    """
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def _check_node(info: dict, node: Node) -> None:
    if node.type not in info:
        raise KeyError(f"{node.type} is not in /object_info (is the pack installed and up to date?)")
    names = {name for name, _, _ in input_specs(info, node.type)}
    unknown = set(node.values) - names
    if unknown:
        raise KeyError(f"{node.type} ({node.title}): no input(s) {sorted(unknown)}; it has {sorted(names)}")


def to_api(graph: Graph, info: dict) -> dict:
    prompt = {}
    for node in graph.nodes:
        _check_node(info, node)
        inputs = {}
        for name, spec, _optional in input_specs(info, node.type):
            if name not in node.values:
                if is_widget(spec) and "default" in (spec[1] if len(spec) > 1 else {}):  # as the frontend sends it
                    inputs[name] = spec[1]["default"]
                continue
            v = node.values[name]
            inputs[name] = [str(v.node), v.slot] if isinstance(v, Out) else v
        prompt[str(node.id)] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": node.title}}
    return prompt


def _height(n_sockets: int, n_widgets: int) -> int:
    return 46 + 22 * n_sockets + 26 * n_widgets


def to_ui(graph: Graph, info: dict, extra_notes_color: str = "#432") -> dict:
    api = to_api(graph, info)
    by_id = {n.id: n for n in graph.nodes}
    links, ui_nodes, boxes = [], [], {}
    out_links: dict[tuple[int, int], list[int]] = {}
    for node in graph.nodes:  # links, in node then input order
        for name, _spec, _ in input_specs(info, node.type):
            v = node.values.get(name)
            if isinstance(v, Out):
                src = by_id[v.node]
                typ = info[src.type]["output"][v.slot]
                link_id = len(links) + 1
                links.append([link_id, v.node, v.slot, node.id, None, typ, name])
                out_links.setdefault((v.node, v.slot), []).append(link_id)
    order = {nid: i for i, nid in enumerate(_topo_order(graph))}
    for node in graph.nodes:
        inputs, widgets = [], []
        for name, spec, _ in input_specs(info, node.type):
            v = api[str(node.id)]["inputs"].get(name)
            link = next((link for link in links if link[3] == node.id and link[6] == name), None)
            if is_widget(spec):
                default = spec[1].get("default") if len(spec) > 1 else None
                if link is not None:  # a widget driven by a link: a socket with "widget", the value kept
                    link[4] = len(inputs)
                    inputs.append({"name": name, "type": spec[0], "widget": {"name": name}, "link": link[0]})
                    shown = node.values[name].shown
                    v = shown if shown is not None else default
                widgets.append(v if v is not None else default)
                if has_control(spec, name):
                    widgets.append("fixed")
                continue
            if link is not None:
                link[4] = len(inputs)
            inputs.append({"name": name, "type": spec[0], "link": link[0] if link else None})
        entry = info[node.type]
        outputs = [{"name": oname, "type": otype, "links": out_links.get((node.id, i), []), "slot_index": i}
                   for i, (oname, otype) in enumerate(zip(entry["output_name"], entry["output"], strict=True))]
        size = [node.width, _height(max(len(inputs), len(outputs)), len(widgets))]
        boxes[node.id] = ([40 + node.col * COL_W, 60 + node.row * ROW_H], size)
        ui_nodes.append({"id": node.id, "type": node.type, "pos": boxes[node.id][0], "size": size, "flags": {},
                         "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outputs,
                         "title": node.title, "properties": _properties(node),
                         "widgets_values": widgets})
    note_id = {nid: max([n.id for n in graph.nodes] + [0]) - nid for nid, *_ in graph.notes}  # -1 -> last + 1
    for nid, title, text, col, row, w, h in graph.notes:
        nid = note_id[nid]
        boxes[nid] = ([40 + col * COL_W, 60 + row * ROW_H], [w, h])
        ui_nodes.append({"id": nid, "type": "MarkdownNote", "pos": boxes[nid][0], "size": [w, h], "flags": {},
                         "order": len(graph.nodes) + len(ui_nodes), "mode": 0, "inputs": [], "outputs": [],
                         "title": title, "properties": {}, "widgets_values": [text],
                         "color": extra_notes_color, "bgcolor": "#653"})
    place(boxes, [(n.row, n.col, n.id) for n in graph.nodes] + [(row, col, note_id[nid]) for nid, _, _, col, row, _, _ in graph.notes])
    groups = []
    for title, members, color in graph.groups:
        members = [note_id.get(m, m) for m in members]
        x0 = min(boxes[m][0][0] for m in members) - PAD
        y0 = min(boxes[m][0][1] for m in members) - TITLE_H - GROUP_FONT * 1.4 - PAD
        x1 = max(boxes[m][0][0] + boxes[m][1][0] for m in members) + PAD
        y1 = max(boxes[m][0][1] + boxes[m][1][1] for m in members) + PAD
        groups.append({"title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color,
                       "font_size": GROUP_FONT})
    ui_nodes.sort(key=lambda n: n["id"])
    ui = {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links),
          "nodes": ui_nodes, "links": [link[:6] for link in links], "groups": groups, "config": {},
          "extra": {}, "version": 0.4}
    problems = layout_problems(*ui_boxes(ui))
    if problems:
        raise ValueError(f"{graph.name}: the layout breaks the rule: " + "; ".join(problems))
    return ui


def _properties(node: Node) -> dict:
    props: dict = {"Node name for S&R": node.type}
    if node.models:
        props["models"] = [dict(m) for m in node.models]
    return props


def _topo_order(graph: Graph) -> list[int]:
    deps = {n.id: {v.node for v in n.values.values() if isinstance(v, Out)} for n in graph.nodes}
    done: list[int] = []
    while len(done) < len(deps):
        ready = sorted(nid for nid, d in deps.items() if nid not in done and d <= set(done))
        if not ready:
            raise ValueError(f"{graph.name}: the graph has a cycle")
        done.extend(ready)
    return done


def ui_to_api(ui: dict, info: dict) -> dict:
    """Convert a UI-format workflow to API format as the frontend does (Note nodes dropped).

    Raises KeyError/ValueError on anything that does not fit /object_info: unknown node types,
    sockets that are not inputs of the node, widget counts that do not match, bad combo values,
    links between mismatched types.
    """
    links = {link[0]: link for link in ui["links"]}
    nodes = {n["id"]: n for n in ui["nodes"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in NOTE_TYPES or node.get("mode", 0) in (2, 4):  # notes, muted, bypassed
            continue
        if node["type"] not in info:
            raise KeyError(f"node {node['id']}: type {node['type']!r} is not in /object_info")
        specs = input_specs(info, node["type"])
        spec_names = {name for name, _, _ in specs}
        sockets = {}
        for inp in node.get("inputs", []):
            if inp["name"] not in spec_names:
                raise KeyError(f"node {node['id']} ({node['type']}): input {inp['name']!r} is not in /object_info")
            if inp.get("link") is not None:
                lid, src, src_slot, dst, dst_slot, typ = links[inp["link"]]
                src_type = nodes[src]["type"]
                if dst != node["id"] or info[src_type]["output"][src_slot] != typ:
                    raise ValueError(f"link {lid} does not fit node {src} ({src_type}) output {src_slot}")
                spec = dict((n, s) for n, s, _ in specs)[inp["name"]]
                if spec[0] != typ and spec[0] != "*":
                    raise ValueError(f"link {lid}: {typ} into {node['type']}.{inp['name']} ({spec[0]})")
                sockets[inp["name"]] = [str(src), src_slot]
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name, spec, optional in specs:
            if is_widget(spec):
                if not values:
                    raise ValueError(f"node {node['id']} ({node['type']}): too few widgets_values (at {name!r})")
                v = values.pop(0)
                if has_control(spec, name):
                    control = values.pop(0) if values else None
                    if control not in ("fixed", "increment", "decrement", "randomize"):
                        raise ValueError(f"node {node['id']}: {name} control value {control!r}")
                options = spec[0] if isinstance(spec[0], list) else (spec[1].get("options") if spec[0] == "COMBO" else None)
                if options is not None and v not in options and not _dynamic_combo(name):
                    raise ValueError(f"node {node['id']} ({node['type']}): {name}={v!r} is not one of {options[:8]}")
                inputs[name] = sockets.pop(name, v)
            elif name in sockets:
                inputs[name] = sockets.pop(name)
            elif not optional:
                raise ValueError(f"node {node['id']} ({node['type']}): required input {name!r} is not linked")
        if values:
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widgets_values left over: {values}")
        title = node.get("title") or info[node["type"]].get("display_name", node["type"])
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return prompt


def _dynamic_combo(name: str) -> bool:
    """File-list combos: their options depend on the user's model folders, not on the workflow."""
    return name in ("ckpt_name", "upsampler_name", "vae_name", "lora_name", "image")
