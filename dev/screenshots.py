"""Screenshots of the shipped workflows as a user first sees them, in ComfyUI's real frontend.

Starts a ComfyUI server with this pack (the dev host, see docs/HOST.md) and a headless Chromium
(Debian's ``chromium``) at 1920x1080, opens each workflow of workflows/ the way a user does
(``app.loadGraphData``: no view is saved in the files, so the frontend fits the graph to the
window), closes the dialogs that loading opens (the test server has no models), and saves the
window as a small palette PNG in docs/screens/. Rerun after changing the workflows:

    .host/venv/bin/python dev/screenshots.py            # all eight
    .host/venv/bin/python dev/screenshots.py sdxl_cascade_4096 --out /tmp/screens
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import tempfile
from pathlib import Path

import browser
import hostenv
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
WF = REPO / "workflows"
OUT = REPO / "docs" / "screens"
COLORS = 48  # palette size: the UI's flat colours survive, the file stays small

SHOW_JS = """(async () => {
  const pinia = [...document.querySelectorAll('body *')].find(e => e.__vue_app__).__vue_app__.config.globalProperties.$pinia;
  const dialogs = pinia._s.get('dialog');
  const closeAll = () => { while (dialogs.dialogStack.length) dialogs.closeDialog({key: dialogs.dialogStack[0].key}); };
  closeAll();
  await window.app.loadGraphData(%s, true, true, %s);
  await new Promise(r => setTimeout(r, 800));
  closeAll();
  document.querySelectorAll('.p-toast-message').forEach(e => e.remove());
  window.app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 500));
  return window.app.canvas.ds.scale;
})()"""


async def shoot(port: int, url: str, names: list[str], out: Path) -> list[tuple[Path, float]]:
    written = []
    async with browser.frontend(port, url) as cdp:
        for name in names:
            scale = await cdp.eval(SHOW_JS % ((WF / f"{name}.json").read_text(), json.dumps(name)))
            shot = await cdp.call("Page.captureScreenshot", format="png")
            img = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
            path = out / f"{name}.png"
            img.quantize(COLORS, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
            written.append((path, scale))
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="workflow names (default: every workflows/*.json)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder for the PNGs (default {OUT.relative_to(REPO)})")
    args = ap.parse_args()
    names = args.names or sorted(p.stem for p in WF.glob("*.json"))
    args.out.mkdir(parents=True, exist_ok=True)
    hostenv.start()
    with tempfile.TemporaryDirectory() as tmp:
        server = hostenv.start_server(Path(tmp) / "comfy")
        try:
            with browser.chromium(Path(tmp) / "chromium", hostenv.free_port()) as port:
                written = asyncio.run(shoot(port, server.url + "/", names, args.out))
        finally:
            server.stop()
    for path, scale in written:
        print(f"{path} (zoom {scale:.2f}, {path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
