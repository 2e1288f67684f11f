"""Does the API keep answering while a large artifact is uploaded, unpacked and hashed?

A real ``entrega server`` receives a release of ``--mib`` MiB (random bytes, so gzip
cannot shrink it: the body is as large as the artifact) through the signed webhook, while
another client asks ``/healthz`` every 10 ms. The figure that matters is the worst
``/healthz`` latency during the upload: the target is under 100 ms for 256 MiB (before
issue 10 the server did not answer for 25-28 s). Building the tarball is not timed.

    python -m bench.upload [--json] [--mib 256]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from entrega.waiting import wait_until_sync

SECRET = "bench-upload-secret"
CHUNK = 1 << 20

CONFIG = """\
app: bench
server: {{listen: "127.0.0.1:{server}"}}
auth: {{webhook_secret_env: ENTREGA_BENCH_SECRET, max_body_bytes: {limit}}}
run:
  command: "{python} -m http.server $PORT"
environments:
  - name: production
    router: {{kind: embedded, listen: "127.0.0.1:{router}"}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_artifact(path: Path, size_bytes: int) -> Path:
    """A .tar.gz of random files adding up to ``size_bytes`` (gzip level 1: quick to
    make, and random bytes do not compress anyway)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        left, index = size_bytes, 0
        while left > 0:
            data = os.urandom(min(left, 16 * CHUNK))
            info = tarfile.TarInfo(f"blob-{index:03d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            left -= len(data)
            index += 1
    return path


def multipart_body(version: str, artifact: Path, into: Path) -> tuple[Path, str]:
    boundary = "entregabench" + os.urandom(6).hex()
    body = into / "body"
    with body.open("wb") as out, artifact.open("rb") as src:
        for name, value in (("version", version), ("deploy", "false")):
            out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                      f"\r\n\r\n{value}\r\n".encode())
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
                  f'filename="build.tar.gz"\r\nContent-Type: application/gzip\r\n\r\n'
                  .encode())
        while chunk := src.read(CHUNK):
            out.write(chunk)
        out.write(f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def sign(path: Path, secret: str) -> str:
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            mac.update(chunk)
    return "sha256=" + mac.hexdigest()


def upload_while_polling(api: str, body: Path, content_type: str, signature: str,
                         *, poll_every_s: float = 0.01) -> dict[str, Any]:
    """POST the body to ``/api/v1/releases`` while polling ``/healthz``; returns the
    answer, the upload's duration and the health latencies (ms)."""
    latencies: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get(api + "/healthz").raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(poll_every_s)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    def chunks() -> Any:
        with body.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    started = time.perf_counter()
    try:
        response = httpx.post(api + "/api/v1/releases", content=chunks(),
                              headers={"Content-Type": content_type,
                                       "Content-Length": str(body.stat().st_size),
                                       "X-Entrega-Signature-256": signature},
                              timeout=httpx.Timeout(30, read=600))
        upload_s = time.perf_counter() - started
    finally:
        done.set()
        poller.join(timeout=30)
    ordered = sorted(latencies) or [0.0]
    return {"status": response.status_code, "answer": response.json(),
            "upload_s": round(upload_s, 3), "healthz_requests": len(latencies),
            "healthz_p99_ms": round(ordered[min(len(ordered) - 1,
                                                int(0.99 * len(ordered)))], 1),
            "healthz_median_ms": round(statistics.median(ordered), 1),
            "healthz_max_ms": round(ordered[-1], 1)}


def run(size_mib: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="entrega-bench-upload-") as tmp:
        root = Path(tmp)
        artifact = make_artifact(root / "build.tar.gz", size_mib * CHUNK)
        body, content_type = multipart_body("v1", artifact, root)
        signature = sign(body, SECRET)
        port = free_port()
        (root / "entrega.yaml").write_text(CONFIG.format(
            server=port, router=free_port(), python=sys.executable,
            limit=body.stat().st_size + CHUNK))
        api = f"http://127.0.0.1:{port}"
        log = (root / "server.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "entrega", "server", "-c",
                                   str(root / "entrega.yaml")], cwd=root, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  env={**os.environ, "ENTREGA_BENCH_SECRET": SECRET})
        try:
            def healthy() -> bool:
                if server.poll() is not None:
                    raise SystemExit("the server did not start:\n"
                                     + (root / "server.log").read_text()[-2000:])
                try:
                    return httpx.get(api + "/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            if not wait_until_sync(healthy, timeout_s=30, interval_s=0.1):
                raise SystemExit("the server did not start:\n"
                                 + (root / "server.log").read_text()[-2000:])
            result = upload_while_polling(api, body, content_type, signature)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
            # The router outlives the server by design: stop it too.
            subprocess.run([sys.executable, "-m", "entrega", "down", "-c",
                            str(root / "entrega.yaml")], cwd=root, stdout=log,
                           stderr=subprocess.STDOUT, timeout=60, check=False)
            log.close()
        if result["status"] != 201:
            raise SystemExit(f"the upload was refused: {result['answer']}")
        return {"artifact_bytes": artifact.stat().st_size, "upload_s": result["upload_s"],
                "healthz_p99_ms": result["healthz_p99_ms"],
                "healthz_max_ms": result["healthz_max_ms"],
                "healthz_requests": result["healthz_requests"],
                "command": f"python -m bench.upload --json --mib {size_mib}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--mib", type=int, default=256, help="artifact size in MiB")
    args = parser.parse_args(argv)
    result = run(args.mib)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"artifact      {result['artifact_bytes'] / CHUNK:.0f} MiB")
        print(f"upload        {result['upload_s']:.2f} s (received, unpacked, hashed)")
        print(f"/healthz      p99 {result['healthz_p99_ms']} ms, max "
              f"{result['healthz_max_ms']} ms over {result['healthz_requests']} requests "
              "(target < 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
