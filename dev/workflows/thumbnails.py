"""Thumbnails for the shipped workflows: a diagram of each UI graph drawn with PIL.

What the picture shows is the workflow's readable title and a one-line summary, large (ComfyUI's
templates browser titles a custom node pack's template with its file name and shows the thumbnail
as a square card, so the picture is where a readable title can go), above the graph itself
(groups, nodes, links) drawn from the UI JSON, not a rendered image: the pack ships no model
weights to render one with.
Called by build.py; ``python dev/workflows/build.py --thumbnails-only`` redraws all of them.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "workflows"  # the shipped workflows and their thumbnails
SIZE = (512, 512)  # the templates browser shows a square card
PACK_COLOR = (70, 130, 200)
CORE_COLOR = (90, 90, 96)
NOTE_COLOR = (110, 90, 50)


def _hex(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    return tuple(int(c[i:i + 2], 16) for i in (0, 2, 4))


def _fit_text(d: ImageDraw.ImageDraw, text: str, size: int, width: int, lines: int):
    """The font (shrinking from ``size``) and wrapped text that fit ``lines`` lines of ``width`` pixels."""
    for px in range(size, 11, -2):
        font = ImageFont.load_default(size=px)
        for chars in range(len(text), 8, -1):
            wrapped = textwrap.wrap(text, chars)
            if len(wrapped) <= lines and all(d.textlength(line, font=font) <= width for line in wrapped):
                return font, wrapped
    return ImageFont.load_default(size=12), textwrap.wrap(text, 40)[:lines]


def render(ui: dict, title: str, summary: str = "") -> Image.Image:
    """A square card: the title (large) and summary over the graph's layout scaled to fit."""
    img = Image.new("RGB", SIZE, (32, 32, 36))
    d = ImageDraw.Draw(img)
    y = 14
    font, lines = _fit_text(d, title, 40, SIZE[0] - 28, 2)
    for line in lines:
        d.text((14, y), line, fill=(255, 255, 255), font=font)
        y += int(font.size * 1.2)
    if summary:
        font, lines = _fit_text(d, summary, 24, SIZE[0] - 28, 2)
        for line in lines:
            d.text((14, y + 4), line, fill=(200, 200, 210), font=font)
            y += int(font.size * 1.25)
    top = y + 16
    boxes = [(n["pos"], n["size"]) for n in ui["nodes"]] + [((g["bounding"][0], g["bounding"][1]),
                                                               (g["bounding"][2], g["bounding"][3])) for g in ui["groups"]]
    x0 = min(p[0] for p, _ in boxes)
    y0 = min(p[1] for p, _ in boxes)
    x1 = max(p[0] + s[0] for p, s in boxes)
    y1 = max(p[1] + s[1] for p, s in boxes)
    scale = min((SIZE[0] - 16) / (x1 - x0), (SIZE[1] - top - 30) / (y1 - y0))

    def tr(x: float, y: float) -> tuple[float, float]:
        return 8 + (x - x0) * scale, top + (y - y0) * scale

    for g in ui["groups"]:
        bx, by, bw, bh = g["bounding"]
        c = _hex(g.get("color", "#3f789e"))
        d.rectangle([*tr(bx, by), *tr(bx + bw, by + bh)], fill=tuple(v // 3 for v in c), outline=c)
    centers = {n["id"]: n for n in ui["nodes"]}
    for _lid, src, _ss, dst, _ds, _typ in ui["links"]:
        a, b = centers[src], centers[dst]
        d.line([tr(a["pos"][0] + a["size"][0], a["pos"][1] + 15), tr(b["pos"][0], b["pos"][1] + 15)],
               fill=(200, 200, 120), width=1)
    font = ImageFont.load_default(size=11)
    for n in ui["nodes"]:
        (x, y), (w, h) = n["pos"], n["size"]
        note = "Note" in n["type"]
        color = NOTE_COLOR if note else PACK_COLOR if n["type"].startswith("SelfCascade") else CORE_COLOR
        d.rectangle([*tr(x, y), *tr(x + w, y + h)], fill=color, outline=(220, 220, 220))
        label = "Read me" if note else n.get("title") or n["type"]
        tx, ty = tr(x + 6, y + 4)
        max_chars = max(3, int(w * scale / 6))
        d.text((tx, ty), label[:max_chars], fill=(255, 255, 255), font=font)
    d.text((14, SIZE[1] - 22), "blue = Self-Cascade node", fill=PACK_COLOR, font=ImageFont.load_default(size=14))
    return img


def write_thumbnail(name: str, ui: dict, title: str, summary: str = "") -> Path:
    path = OUT / f"{name}.jpg"
    render(ui, title, summary).save(path, quality=85)
    return path

