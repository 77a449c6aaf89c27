"""The layout rule of the shipped workflows, and the placement that keeps it.

A node's box is its body plus the title bar the frontend draws above ``pos``. The rule: no two
boxes overlap, every node and note lies inside exactly one group (below the group's title) and
touches no other group, groups do not overlap. ``place`` moves a box down until it clears the
boxes placed before it; ``layout_problems`` lists what breaks the rule, for the generator, the
static test of the saved files and the browser test (which feeds it the frontend's own boxes).
Standard library only.
"""
from __future__ import annotations

import math
import re

COL_W, ROW_H = 360, 40  # layout grid: x per column, y per row unit
TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar drawn above a node's pos
GROUP_FONT = 24  # a group's title bar is 1.4 x its font size high
GAP, PAD = 30, 20  # between two boxes; between a group's edge and its members
#: A Markdown note's rendered text (the frontend's markdown widget at zoom 1, 10 px type): pixels per
#: character on average, per line and between paragraphs, and what the node keeps around the text
#: (width, height). The browser test checks that the text fits and the box is not much larger.
NOTE_CHAR_W, NOTE_LINE_H, NOTE_PARA_GAP, NOTE_MARGIN = 5.2, 12, 11, (40, 40)


def note_height(text: str, width: int) -> int:
    """Height a Markdown note needs for ``text`` at ``width``: paragraphs (blank-line separated) and list items
    wrap as blocks; link targets and emphasis marks are not shown."""
    per_line = max(1, int((width - NOTE_MARGIN[0]) / NOTE_CHAR_W))
    lines = paragraphs = 0
    for para in re.split(r"\n\s*\n", text.strip()):
        paragraphs += 1
        blocks: list[str] = []
        for line in para.splitlines():
            if not blocks or line.lstrip().startswith(("- ", "#")):
                blocks.append(line)
            else:
                blocks[-1] += " " + line.strip()
        for block in blocks:
            shown = re.sub(r"\]\([^)]*\)|[*`#\[]", "", block)
            lines += max(1, math.ceil(len(shown) / per_line))
    return math.ceil(NOTE_MARGIN[1] + NOTE_LINE_H * lines + NOTE_PARA_GAP * paragraphs)


def place(boxes: dict[int, tuple[list, list]], order: list[tuple[float, float, int]]) -> None:
    """Move boxes down (in ``order``: row, col, id) until each clears, by GAP, every box placed before it."""
    placed: list[int] = []
    for _row, _col, nid in sorted(order):
        pos, size = boxes[nid]
        moved = True
        while moved:
            moved = False
            for other in placed:
                (ox, oy), (ow, oh) = boxes[other]
                if pos[0] < ox + ow + GAP and ox < pos[0] + size[0] + GAP \
                        and pos[1] - TITLE_H < oy + oh + GAP and oy - TITLE_H < pos[1] + size[1] + GAP:
                    pos[1] = oy + oh + GAP + TITLE_H
                    moved = True
        placed.append(nid)


def overlap(a, b) -> float:
    """Area shared by two [x, y, w, h] boxes (0 when they only touch)."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def inside(inner, outer) -> bool:
    return (inner[0] >= outer[0] and inner[1] >= outer[1] and inner[0] + inner[2] <= outer[0] + outer[2]
            and inner[1] + inner[3] <= outer[1] + outer[3])


def ui_boxes(ui: dict) -> tuple[list[tuple[str, list]], list[tuple[str, list, float]]]:
    """(name, [x, y, w, h]) of every node with its title bar, and (title, bounding, title height) of every
    group, from a saved UI workflow (the sizes it saves; the frontend may still grow a node)."""
    boxes = [(f"{n.get('title') or n['type']} (#{n['id']})",
              [n["pos"][0], n["pos"][1] - TITLE_H, n["size"][0], n["size"][1] + TITLE_H]) for n in ui["nodes"]]
    groups = [(g["title"], g["bounding"], g.get("font_size", GROUP_FONT) * 1.4) for g in ui["groups"]]
    return boxes, groups


def layout_problems(boxes: list[tuple[str, list]], groups: list[tuple[str, list, float]]) -> list[str]:
    """What breaks the layout rule: overlapping boxes, a box not inside exactly one group's body (below its
    title) or sticking into another group, overlapping groups."""
    problems = []
    for i, (name, box) in enumerate(boxes):
        problems += [f"{name} overlaps {other}" for other, obox in boxes[i + 1:] if overlap(box, obox) > 0]
    for name, box in boxes:
        body = [t for t, g, th in groups if inside(box, [g[0], g[1] + th, g[2], g[3] - th])]
        touched = [t for t, g, _ in groups if overlap(box, g) > 0 and t not in body]
        if len(body) != 1 or touched:
            problems.append(f"{name} is not inside exactly one group (inside {body}, sticks into {touched})")
    for i, (title, g, _) in enumerate(groups):
        problems += [f"group {title} overlaps group {other}" for other, og, _ in groups[i + 1:] if overlap(g, og) > 0]
    return problems
