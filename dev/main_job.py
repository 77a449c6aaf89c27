"""Main job (placeholder until the cascade lands): start the real host and list the pack's nodes."""
from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflows" / "api"))
import hostenv  # noqa: E402
from comfy_client import ComfyClient  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        server = hostenv.start_server(Path(tmp))
        try:
            info = ComfyClient(server.url).object_info()
            for name in sorted(n for n in info if n.startswith("SelfCascade")):
                logging.info("%s  (%s)", name, info[name]["category"])
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
