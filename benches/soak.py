#!/usr/bin/env python3
"""Mixed-load soak client for benches/soak.sh (Python 3 standard library only).

Drives one running appliance on loopback for SOAK_SECS with THREADS workers: uploads, listings,
cold and warm renders, deletes, purges, and hostile requests (huge dynamic resizes, composition
with another image, very long operation chains, multipart bodies without a closing boundary,
slow bodies, a 1 GB Content-Length, broken images, bad JSON, hostile URLs). Samples the
server's RSS every 10 s, and at the end checks that every acknowledged upload that was not
deleted is still there with its bytes. Prints a summary; exits 1 on a 5xx other than 503 with
Retry-After or 507, or on a lost upload.

Environment: API, RENDER (host:port), KEY (root key), ORG, SOAK_SECS, THREADS, DARKROOM_PID,
SEED. Every address must be on loopback; nothing else is contacted.
"""

import hashlib
import http.client
import json
import os
import random
import socket
import struct
import sys
import threading
import time
import zlib

API = os.environ["API"]
RENDER = os.environ["RENDER"]
KEY = os.environ["KEY"]
ORG = os.environ.get("ORG", "soak")
SECS = float(os.environ.get("SOAK_SECS", "1800"))
THREADS = int(os.environ.get("THREADS", "4"))
PID = os.environ.get("DARKROOM_PID")
SEED = int(os.environ.get("SEED", "1"))
TIMEOUT = 60.0
BOUNDARY = "soakboundary7MA4YWxkTrZu0gW"

for addr in (API, RENDER):
    host = addr.rsplit(":", 1)[0]
    if not (host.startswith("127.") or host in ("localhost", "[::1]")):
        sys.exit(f"refusing to load a non-loopback address: {addr}")

lock = threading.Lock()
stats = {}  # kind -> {"statuses": {status: n}, "lat": [seconds]}
bad = []  # (kind, status, detail)
acked = {}  # hash -> sha1 of the uploaded bytes
deleted = set()
rss = []  # (t, kib)
started = time.monotonic()


def record(kind, status, latency, headers=None, detail=""):
    with lock:
        s = stats.setdefault(kind, {"statuses": {}, "lat": []})
        s["statuses"][status] = s["statuses"].get(status, 0) + 1
        s["lat"].append(latency)
        if isinstance(status, int) and status >= 500:
            retry = headers is not None and headers.get("Retry-After") is not None
            if not (status == 503 and retry) and status != 507:
                bad.append((kind, status, detail[:200]))


def png(width, height, rng):
    """A PNG of random-ish content (unique bytes per call), made with zlib only."""
    seed = rng.randrange(256)
    rows = b"".join(
        b"\x00" + bytes(((x * 7 + y * 3 + seed) & 0xFF) for x in range(width * 3))
        for y in range(height)
    )

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    text = chunk(b"tEXt", b"soak\x00" + str(rng.random()).encode())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + text + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b"")


def multipart(filename, data, closing=True):
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"filedata\"; filename=\"{filename}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + data + b"\r\n"
    if closing:
        body += f"--{BOUNDARY}--\r\n".encode()
    return body


def request(kind, addr, method, path, body=None, headers=None, key=True):
    """One HTTP request; records status (or 'no answer') and latency. Returns (status, body)."""
    h = dict(headers or {})
    if key:
        h["Api-Key"] = KEY
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(addr, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        record(kind, resp.status, time.monotonic() - t0, resp.headers, f"{method} {path[:120]} {data[:120]!r}")
        return resp.status, data
    except (OSError, http.client.HTTPException) as e:
        record(kind, "no answer", time.monotonic() - t0, None, f"{method} {path[:120]}: {e}")
        return None, b""
    finally:
        conn.close()


def raw(kind, addr, payload, dribble=None, wait=5.0):
    """Sends raw bytes (optionally dribbling `dribble` more, slowly), half-closes, reads the status."""
    host, port = addr.rsplit(":", 1)
    t0 = time.monotonic()
    status = "no answer"
    try:
        with socket.create_connection((host, int(port)), timeout=wait) as s:
            s.sendall(payload)
            if dribble:
                for i in range(0, len(dribble), 8):
                    s.sendall(dribble[i : i + 8])
                    time.sleep(0.25)
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            answer = b""
            while b"\r\n" not in answer:
                part = s.recv(4096)
                if not part:
                    break
                answer += part
            if answer.startswith(b"HTTP/1.1 "):
                status = int(answer[9:12])
            head = answer.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    except (OSError, ValueError):
        head = ""
    headers = {"Retry-After": "x"} if "retry-after:" in head else {}
    record(kind, status, time.monotonic() - t0, headers, payload[:100].decode("latin-1"))


def some_hash(rng):
    with lock:
        live = [h for h in acked if h not in deleted]
    return rng.choice(live) if live else None


def upload(rng):
    data = png(rng.randrange(16, 400), rng.randrange(16, 300), rng)
    body = multipart("soak.png", data)
    status, answer = request(
        "upload", API, "POST", f"/sourceimages/{ORG}", body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    if status == 200:
        for item in json.loads(answer)["items"]:
            with lock:
                acked[item["hash"]] = hashlib.sha1(data).hexdigest()


def hostile(rng):
    h = some_hash(rng) or "c421f4e8d8c8"
    h2 = some_hash(rng) or h
    choice = rng.randrange(11)
    ctype = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    host, port = API.rsplit(":", 1)
    if choice == 0:
        request("hostile huge resize", RENDER, "GET", f"/{ORG}/dynamic/resize-width-10000-height-10000-mode-absolute/{h}.avif", key=False)
    elif choice == 1:
        request("hostile composition", RENDER, "GET", f"/{ORG}/dynamic/composition-secondary_image-{h2}-mode-foreground-width-5000-height-5000/{h}.png", key=False)
    elif choice == 2:
        chain = "--".join(f"resize-width-{rng.randrange(10, 2000)}" for _ in range(rng.randrange(50, 400)))
        request("hostile long chain", RENDER, "GET", f"/{ORG}/dynamic/{chain}/{h}.jpg", key=False)
    elif choice == 3:
        body = multipart("x.png", png(8, 8, rng), closing=False)
        head = (
            f"POST /sourceimages/{ORG} HTTP/1.1\r\nHost: {host}\r\nApi-Key: {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        raw("hostile no closing boundary", API, head + body)
    elif choice == 4:
        body = multipart("x.png", png(8, 8, rng))
        head = (
            f"POST /sourceimages/{ORG} HTTP/1.1\r\nHost: {host}\r\nApi-Key: {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        raw("hostile slow body", API, head + body[:20], dribble=body[20:80], wait=30.0)
    elif choice == 5:
        head = (
            f"POST /sourceimages/{ORG} HTTP/1.1\r\nHost: {host}\r\nApi-Key: {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\n"
        ).encode()
        raw("hostile 1 GB length", API, head + multipart("x.png", png(8, 8, rng))[:200])
    elif choice == 6:
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(10, 2000)))
        if rng.random() < 0.5:
            junk = png(20, 20, rng)[:-30] + junk[:40]
        request("hostile broken image", API, "POST", f"/sourceimages/{ORG}", multipart("broken.jpg", junk), ctype)
    elif choice == 7:
        body = rng.choice([b'{"operations": [', b"[{\"name\":\"resize\",\"options\":{\"width\":1e999}}]", b"\xff\xfe", b"{}" * 5000])
        request("hostile bad json", API, "PUT", f"/stacks/{ORG}/bad-{rng.randrange(5)}", body)
    elif choice == 8:
        path = "/" + "".join(rng.choice(["%00", "%ff", "..", "/", "-", "--", "[", "]", "%2F", "a"]) for _ in range(rng.randrange(1, 3000)))
        request("hostile url", RENDER, "GET", f"/{ORG}{path}.jpg", key=False)
    elif choice == 9:
        request("hostile url", RENDER, "GET", f"/{ORG}/thumb/{h}.jpg?sig=zz&sigopts=%7B&v=%7B%22a", key=False)
    else:
        request("hostile url", API, "GET", f"/sourceimages/{ORG}?limit=-1&offset=99999999999999999999&sort=%00")


def worker(index):
    rng = random.Random(SEED * 1000 + index)
    deadline = started + SECS
    while time.monotonic() < deadline:
        r = rng.random()
        h = some_hash(rng)
        if r < 0.15 or h is None:
            upload(rng)
        elif r < 0.25:
            request("list", API, "GET", f"/sourceimages/{ORG}?limit=20")
        elif r < 0.40:
            request("render cold", RENDER, "GET", f"/{ORG}/thumb/resize-width-{rng.randrange(20, 600)}/{h}.jpg", key=False)
        elif r < 0.62:
            request("render warm", RENDER, "GET", f"/{ORG}/thumb/{h}.{rng.choice(['jpg', 'png', 'webp'])}", key=False)
        elif r < 0.66:
            status, _ = request("delete", API, "DELETE", f"/sourceimages/{ORG}/{h}")
            if status in (200, 204):
                with lock:
                    deleted.add(h)
        elif r < 0.69:
            if rng.random() < 0.7:
                request("purge", API, "DELETE", f"/sourceimages/{ORG}/{h}/cache")
            else:
                request("purge", API, "DELETE", f"/stacks/{ORG}/thumb/cache")
        else:
            hostile(rng)


def sampler(stop):
    while not stop.wait(10):
        sample()


def sample():
    if not PID:
        return
    try:
        with open(f"/proc/{PID}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return
    t = time.monotonic() - started
    with lock:
        rss.append((t, kib))
        total = sum(sum(s["statuses"].values()) for s in stats.values())
    print(f"t={t:7.0f}s rss={kib / 1024:8.1f} MiB requests={total}", flush=True)


def p(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    stop = threading.Event()
    sample()
    threading.Thread(target=sampler, args=(stop,), daemon=True).start()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    sample()

    # Every acknowledged upload that was not deleted must still be there, with its bytes.
    lost = []
    for h, sha1 in sorted(acked.items()):
        if h in deleted:
            continue
        status, data = request("final check", API, "GET", f"/sourceimages/{ORG}/{h}/download")
        if status != 200 or hashlib.sha1(data).hexdigest() != sha1:
            lost.append((h, status))

    print()
    print(f"{'kind':30} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses")
    for kind in sorted(stats):
        s = stats[kind]
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(s["statuses"].items(), key=lambda kv: str(kv[0])))
        lat = s["lat"]
        print(f"{kind:30} {len(lat):7d} {p(lat, .5) * 1000:8.1f} {p(lat, .99) * 1000:8.1f} {max(lat) * 1000:8.1f}  {statuses}")
    if rss:
        kib = [k for _, k in rss]
        third = max(1, len(kib) // 3)
        print(
            f"\nRSS MiB: start {kib[0] / 1024:.1f}, max {max(kib) / 1024:.1f}, end {kib[-1] / 1024:.1f}; "
            f"max of first third {max(kib[:third]) / 1024:.1f}, of last third {max(kib[-third:]) / 1024:.1f}"
        )
    live = len([h for h in acked if h not in deleted])
    print(f"uploads acknowledged {len(acked)}, deleted {len(deleted)}, checked {live}, lost {len(lost)}")
    for h, status in lost[:20]:
        print(f"  lost: {h} (download answered {status})")
    print(f"5xx other than 503 with Retry-After or 507: {len(bad)}")
    for kind, status, detail in bad[:20]:
        print(f"  {kind}: {status} {detail}")
    sys.exit(1 if bad or lost else 0)


if __name__ == "__main__":
    main()
