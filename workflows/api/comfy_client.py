"""A small stdlib-only client for a running ComfyUI: /object_info, POST /prompt, /history, /upload/image.

Used by ``queue_workflow.py`` (the command-line client) and by the pack's tests.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class ComfyError(RuntimeError):
    """The server rejected a request or could not be reached; the message says why."""


class PromptRejected(ComfyError):
    """``POST /prompt`` failed validation; ``details`` holds the server's JSON answer."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


class ExecutionFailed(ComfyError):
    """The prompt was accepted but failed while running; ``details`` holds the history entry."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def describe_rejection(answer: dict) -> str:
    """Human-readable summary of a /prompt validation error answer."""
    lines = []
    err = answer.get("error") or {}
    if isinstance(err, dict):
        lines.append(f"{err.get('message', 'prompt rejected')}: {err.get('details', '')}".rstrip(": "))
    for node_id, info in (answer.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            lines.append(f"  node {node_id} ({info.get('class_type', '?')}): {e.get('message', '')}: {e.get('details', '')}")
    return "\n".join(lines) or json.dumps(answer)


class ComfyClient:
    """Talk to one ComfyUI server at ``url`` (e.g. ``http://127.0.0.1:8188``)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, data: dict | None = None) -> dict:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                answer = json.loads(payload)
            except ValueError:
                raise ComfyError(f"{path}: HTTP {e.code}: {payload[:500]!r}") from None
            if path == "/prompt":
                raise PromptRejected(describe_rejection(answer), answer) from None
            raise ComfyError(f"{path}: HTTP {e.code}: {answer}") from None
        except urllib.error.URLError as e:
            raise ComfyError(f"cannot reach ComfyUI at {self.url} ({e.reason}). Is the server running? "
                             "Start it with `python main.py` in your ComfyUI folder, or pass --server.") from None

    def object_info(self) -> dict:
        return self._request("/object_info")

    def queue(self, prompt: dict) -> str:
        """Queue an API-format prompt; returns its prompt_id. Raises PromptRejected on validation errors."""
        answer = self._request("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if answer.get("node_errors"):
            raise PromptRejected(describe_rejection(answer), answer)
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self._request(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.25, on_progress=None) -> dict:
        """Wait until the prompt finishes; returns its history entry, raises ExecutionFailed on error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None:
                status = entry.get("status", {})
                if status.get("status_str") == "error" or not status.get("completed", True):
                    msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                    text = msgs[0][1].get("exception_message", "").strip() if msgs else "execution failed"
                    node = msgs[0][1].get("node_type", "?") if msgs else "?"
                    raise ExecutionFailed(f"{node}: {text}", entry)
                return entry
            if on_progress:
                on_progress()
            time.sleep(poll)
        raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f}s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue and wait; returns the history entry."""
        return self.wait(self.queue(prompt), timeout=timeout)

    def queue_state(self, prompt_id: str) -> str:
        """'running', 'pending (N ahead)' or 'done/unknown' for ``prompt_id``, from ``GET /queue``."""
        q = self._request("/queue")
        if any(item[1] == prompt_id for item in q.get("queue_running", [])):
            return "running"
        pending = sorted(q.get("queue_pending", []), key=lambda item: item[0])
        for ahead, item in enumerate(pending):
            if item[1] == prompt_id:
                return f"pending ({ahead + len(q.get('queue_running', []))} ahead)"
        return "finishing"

    @staticmethod
    def output_images(entry: dict) -> list[dict]:
        """The images a finished prompt saved ({'filename', 'subfolder', 'type', 'node'}), in node order."""
        found = []
        for node_id, out in sorted(entry.get("outputs", {}).items(), key=lambda kv: (len(kv[0]), kv[0])):
            for img in out.get("images", []):
                found.append({**img, "node": node_id})
        return found

    def upload_image(self, path: str, overwrite: bool = True) -> str:
        """Upload a local image into the server's input/ (``POST /upload/image``, multipart); returns
        the name LoadImage takes (``subfolder/name`` when the server put it in a subfolder)."""
        import mimetypes
        import os

        with open(path, "rb") as f:
            data = f.read()
        boundary = uuid.uuid4().hex
        name = os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
             f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n",
            (f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\n'
             f"{'true' if overwrite else 'false'}\r\n").encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        req = urllib.request.Request(self.url + "/upload/image", data=b"".join(parts),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise ComfyError(f"/upload/image {name}: HTTP {e.code}: {e.read()[:300]!r}") from None
        except urllib.error.URLError as e:
            raise ComfyError(f"cannot reach ComfyUI at {self.url} ({e.reason}). Is the server running?") from None
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else answer["name"]

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        try:
            with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=self.timeout) as r:
                return r.read()
        except urllib.error.URLError as e:
            raise ComfyError(f"/view {filename}: {e}") from None
