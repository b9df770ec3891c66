#!/usr/bin/env python3
"""Helpers of scripts/bench: registry access-log accounting, a 2-platform OCI
index pushed through the registry API, manifest digests, deploy event timings,
a load generator and its figures, and the markdown report. Standard library only.

    benchlib.py logcount LOG START END REPO REGISTRY_ROOT UA
    benchlib.py push-index REGISTRY REPO TAG
    benchlib.py digest REGISTRY REPO REF
    benchlib.py delete-repo REGISTRY REPO
    benchlib.py crash-timings DEPLOY_JSON ENGINE_EVENTS [STARTED_AT [CRASHED_ID]]
    benchlib.py segments DEPLOY_JSON T_START T_END
    benchlib.py load URL HOST OUT STOP_FILE READY_FILE
    benchlib.py load-figures LOAD DEPLOY_JSON OLD_VERSION
    benchlib.py swarm-figures LOAD STATUS OUT T_START T_END OLD_VERSION
    benchlib.py report RESULTS META OUT
"""

import gzip
import http.client
import hashlib
import io
import json
import os
import re
import statistics
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)

# Apache combined format, as the distribution registry writes it.
ACCESS = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "[^"]*" "(?P<ua>.*)"$'
)


# The registry's own (logrus) line for each answer: nanosecond time and duration.
LOGRUS_TIME = re.compile(r'^time="([^"]+)"')
LOGRUS_URI = re.compile(r'http\.request\.uri=("[^"]*"|\S+)')
LOGRUS_UA = re.compile(r'http\.request\.useragent=("(?:[^"\\]|\\.)*"|\S*)')
LOGRUS_DURATION = re.compile(r'http\.response\.duration=([0-9.]+)(ns|µs|us|ms|s)\b')
UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def logrus_time(s):
    # Python parses microseconds at most.
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?Z$", s)
    frac = (m[2] or ".0")[:7]
    return datetime.fromisoformat(m[1] + frac + "+00:00").timestamp()


def log_lines(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return data.decode("utf-8", "replace").splitlines()


def blob_size(root, digest):
    algo, hexd = digest.split(":", 1)
    p = os.path.join(root, "docker/registry/v2/blobs", algo, hexd[:2], hexd, "data")
    try:
        return os.path.getsize(p)
    except OSError:
        return None


def tag_digest(root, repo, tag):
    p = os.path.join(
        root, "docker/registry/v2/repositories", repo, "_manifests/tags", tag, "current/link"
    )
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return None


def logcount(path, start, end, repo, root, ua):
    """Requests of one operation: those naming REPO, plus `/v2/` pings whose
    user agent contains UA (pings name no repository)."""
    prefix = f"/v2/{repo}/"
    out = {
        "manifest_requests": 0,
        "manifest_heads": 0,
        "blob_requests": 0,
        "ping_requests": 0,
        "get_bytes": 0,
        "upload_bytes": 0,
        "blob_bytes": 0,
        "upload_bytes_known": True,
        "sequence": [],
    }
    first_start = last_end = None
    for line in log_lines(path, int(start), int(end)):
        t = LOGRUS_TIME.match(line)
        if t and "response completed" in line:
            uri = LOGRUS_URI.search(line)
            uri = uri[1].strip('"') if uri else ""
            agent = LOGRUS_UA.search(line)
            ours = uri.startswith(prefix) or (
                uri in ("/v2/", "/v2") and ua and agent and ua in agent[1]
            )
            d = LOGRUS_DURATION.search(line)
            if ours and d:
                end_t = logrus_time(t[1])
                start_t = end_t - float(d[1]) * UNITS[d[2]]
                first_start = start_t if first_start is None else min(first_start, start_t)
                last_end = end_t if last_end is None else max(last_end, end_t)
            continue
        m = ACCESS.match(line)
        if not m:
            continue
        uri = m["uri"]
        if uri in ("/v2/", "/v2"):
            if ua and ua in m["ua"]:
                out["ping_requests"] += 1
                out["sequence"].append(f"{m['method']} /v2/ {m['status']}")
            continue
        if not uri.startswith(prefix):
            continue
        rest = uri[len(prefix):]
        method, status = m["method"], int(m["status"])
        # Digests shortened: the sequence is for reading.
        shown = re.sub(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}", r"\1…", rest.split("?")[0])
        out["sequence"].append(f"{method} {shown} {status}")
        nbytes = 0 if m["bytes"] == "-" else int(m["bytes"])
        if rest.startswith("manifests/"):
            out["manifest_requests"] += 1
            if method == "HEAD":
                out["manifest_heads"] += 1
            if method == "PUT" and status == 201:
                ref = rest[len("manifests/"):].split("?")[0]
                d = ref if ref.startswith("sha256:") else tag_digest(root, repo, ref)
                size = blob_size(root, d) if d else None
                if size is None:
                    out["upload_bytes_known"] = False
                else:
                    out["upload_bytes"] += size
        elif rest.startswith("blobs/"):
            out["blob_requests"] += 1
            if method == "PUT" and status == 201 and "digest=" in rest:
                d = re.search(r"digest=([a-z0-9]+(?::|%3A)[0-9a-f]+)", rest)
                size = blob_size(root, d[1].replace("%3A", ":")) if d else None
                if size is None:
                    out["upload_bytes_known"] = False
                else:
                    out["upload_bytes"] += size
                    out["blob_bytes"] += size
            if method == "GET":
                out["blob_bytes"] += nbytes
        else:
            continue
        # HEAD answers carry no body, whatever the log's size field says.
        if method == "GET":
            out["get_bytes"] += nbytes
    out["requests"] = out["manifest_requests"] + out["blob_requests"] + out["ping_requests"]
    # Reads and writes of manifests, the registry issue's budget (HEADs are allowed besides).
    out["manifest_transfers"] = out["manifest_requests"] - out["manifest_heads"]
    if first_start is not None:
        # From the start of the first answer to the end of the last, as the registry saw them.
        out["registry_span_s"] = round(last_end - first_start, 6)
    out["bytes"] = out["get_bytes"] + out["upload_bytes"]
    return out


def request(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, dict(r.headers), r.read()


def push_blob(registry, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        request("HEAD", f"http://{registry}/v2/{repo}/blobs/{digest}")
        return digest
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    _, headers, _ = request("POST", f"http://{registry}/v2/{repo}/blobs/uploads/")
    location = headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry}{location}"
    sep = "&" if "?" in location else "?"
    request(
        "PUT",
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    return digest


def put_manifest(registry, repo, ref, body, media_type):
    request(
        "PUT",
        f"http://{registry}/v2/{repo}/manifests/{ref}",
        data=body,
        headers={"Content-Type": media_type},
    )
    return "sha256:" + hashlib.sha256(body).hexdigest()


def layer(arch):
    """A real gzip'd tar layer with one file; returns (compressed, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = (f"release for {arch}\n".encode() + os.urandom(256 * 1024))
        info = tarfile.TarInfo(f"platform-{arch}")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    raw = raw.getvalue()
    return gzip.compress(raw, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def push_index(registry, repo, tag):
    manifests = []
    for arch in ("amd64", "arm64"):
        blob, diff_id = layer(arch)
        layer_digest = push_blob(registry, repo, blob)
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Cmd": ["/platform-" + arch]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode()
        config_digest = push_blob(registry, repo, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest,
                        "size": len(blob),
                    }
                ],
            }
        ).encode()
        mt = "application/vnd.oci.image.manifest.v1+json"
        digest = put_manifest(registry, repo, f"{tag}-{arch}", manifest, mt)
        manifests.append(
            {
                "mediaType": mt,
                "digest": digest,
                "size": len(manifest),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }
    ).encode()
    print(put_manifest(registry, repo, tag, index, "application/vnd.oci.image.index.v1+json"))


def digest(registry, repo, ref):
    """Digest and media type of a manifest, as the registry stores it."""
    _, headers, _ = request(
        "HEAD", f"http://{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}
    )
    headers = {k.lower(): v for k, v in headers.items()}
    print(headers["docker-content-digest"], headers.get("content-type", ""))


def delete_repo(registry, repo):
    """Delete every manifest of REPO (by digest; the tags go with them)."""
    try:
        _, _, body = request("GET", f"http://{registry}/v2/{repo}/tags/list")
    except urllib.error.HTTPError:
        return
    tags = json.loads(body).get("tags") or []
    digests = set()
    for tag in tags:
        try:
            _, headers, _ = request(
                "HEAD", f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}
            )
        except urllib.error.HTTPError:
            continue
        headers = {k.lower(): v for k, v in headers.items()}
        digests.add(headers["docker-content-digest"])
    for d in digests:
        try:
            request("DELETE", f"http://{registry}/v2/{repo}/manifests/{d}")
        except urllib.error.HTTPError:
            pass


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def read_deploy(path):
    """Events and outcome of one `deploy --output json` run, per host.

    Returns (first event time, last event time, hosts, outcome); each host
    maps to the first time of each phase and of the first healthy probes."""
    evs, outcome = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            obj = json.loads(line)
            if "seq" in obj:
                obj["t"] = parse_time(obj["time"])
                evs.append(obj)
            elif "outcome" in obj:
                outcome = obj
    if not evs:
        sys.exit(f"{path}: no events")
    hosts = {}
    for e in evs:
        h = e.get("host") or "fleet"
        rec = hosts.setdefault(h, {})
        if e.get("kind") == "transition":
            rec.setdefault(e["phase"], e["t"])
        elif e.get("kind") == "probe" and (e.get("result") or {}).get("status") == "healthy":
            if e["phase"] == "rolling_back" or "rolling_back" in rec:
                rec.setdefault("restored_healthy", e["t"])
            else:
                rec.setdefault("first_healthy", e["t"])
    return evs[0]["t"], evs[-1]["t"], hosts, outcome


def one_host(hosts):
    names = [h for h in hosts if h != "fleet"]
    if not names:
        sys.exit("no host events")
    return hosts[names[0]]


def diff(a, b):
    return None if a is None or b is None else round(b - a, 6)


def crash_timings(deploy_path, engine_events_path, started_at="", crashed_id="", subscriber_path=""):
    """Crash detection and restore of one rolled-back deploy.

    The engine's events are those of the crashing container only (its id is
    in the deploy's `switched` event): the old release's own `die`, when it
    is stopped, must not stand for the crash."""
    _, _, hosts, outcome = read_deploy(deploy_path)
    p = one_host(hosts)
    rb = p.get("rolling_back")
    starts, dies = [], []
    with open(engine_events_path) as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                eid = e.get("id") or (e.get("Actor") or {}).get("ID") or ""
                if crashed_id and not eid.startswith(crashed_id):
                    continue
                t = int(e["timeNano"]) / 1e9
                (starts if e.get("Action") == "start" else dies).append(t)
    if crashed_id:
        # Its start and its (first) exit, wherever they fall around the decision.
        before = starts[:1]
        exits = dies[:1]
    else:
        # The crashing container is the last one the engine started before the
        # decision (event times have millisecond resolution, hence the slack).
        before = [t for t in starts if rb is not None and t <= rb + 0.0005]
        exits = [t for t in dies if rb is not None and t <= rb + 0.0005]
    # How long the crashing container's `die` took to reach another subscriber.
    delivery = None
    if crashed_id and subscriber_path and os.path.exists(subscriber_path):
        with open(subscriber_path) as f:
            for line in f:
                arrived, _, text = line.partition(" ")
                try:
                    e = json.loads(text)
                except ValueError:
                    continue
                eid = e.get("id") or (e.get("Actor") or {}).get("ID") or ""
                if eid.startswith(crashed_id):
                    delivery = round(float(arrived) - int(e["timeNano"]) / 1e9, 6)
                    break
    out = {
        "die_delivery_s": delivery,
        "outcome": outcome and outcome.get("outcome"),
        "detect_s": diff(p.get("switched"), rb),
        "detect_engine_s": diff(max(before), rb) if before else None,
        "detect_exit_s": diff(max(exits), rb) if exits and rb is not None else None,
        "detect_startedat_s": diff(logrus_time(started_at.strip()), rb) if started_at.strip() else None,
        "restore_s": diff(rb, p.get("restored_healthy")),
        "restore_done_s": diff(rb, p.get("rolled_back")),
    }
    print(json.dumps(out))


def proxy_figures(text):
    """The medians of one run of the proxy_apps example, in seconds."""
    r = json.loads(text)
    out = {"load_requests": r["load_requests"], "load_failed": r["load_failed"],
           "load_hosts": r["load_hosts"]}
    for k in ("switch_ms", "switch_back_ms", "admin_change_ms", "admin_change_loaded_ms"):
        vals = r.get(k) or []
        if vals:
            out[k.replace("_ms", "_s")] = round(statistics.median(vals) / 1e3, 6)
            out[k.replace("_ms", "_max_s")] = round(max(vals) / 1e3, 6)
    return out


def segments(deploy_path, t0, t1):
    """Where a one-host deploy's wall time goes."""
    t0, t1 = float(t0), float(t1)
    first, last, hosts, _ = read_deploy(deploy_path)
    p = one_host(hosts)
    out = {
        "seg_start": diff(t0, first),
        "seg_prepare": diff(first, p.get("pulled")),
        "seg_switch": diff(p.get("pulled"), p.get("switched")),
        "seg_verify": diff(p.get("switched"), p.get("verified")),
        "seg_finish": diff(p.get("verified"), last),
        "seg_end": diff(last, t1),
    }
    out["own_s"] = round(out["seg_start"] + out["seg_end"], 6)
    print(json.dumps({k: v for k, v in out.items() if v is not None}))


# --- load ---------------------------------------------------------------------

LOAD_THREADS = 4
LOAD_RATE = 200  # requests per second, all threads together
LOAD_TIMEOUT = 1.0  # seconds; a slower answer is a failed request


def load(url, host, out, stop_file, ready_file):
    """GET URL from LOAD_THREADS threads at LOAD_RATE requests/s in all until
    STOP_FILE exists. Each request opens its own connection, as independent
    clients do, so a refused connection shows at once. READY_FILE is written
    at the first 200; every request (start, end, status, body or error) goes
    to OUT as JSON lines when the loop ends."""
    u = urllib.parse.urlsplit(url)
    path = u.path or "/"
    headers = {"Connection": "close"}
    if host:
        headers["Host"] = host
    period = LOAD_THREADS / LOAD_RATE
    records, lock = [], threading.Lock()
    stop, ready = threading.Event(), threading.Event()

    def worker(k):
        # Threads start staggered so the requests are spread over the period.
        due = time.monotonic() + k * period / LOAD_THREADS
        while not stop.is_set():
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t0 = time.time()
            status, body, error = None, "", None
            conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=LOAD_TIMEOUT)
            try:
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                # The whole body: a release dying mid-answer sends a 200
                # whose body never completes, which read() raises on.
                body = r.read().decode("utf-8", "replace").strip()
                status = r.status
            except Exception as e:  # every failure is a result here
                error = f"{type(e).__name__}: {e}"[:120]
            finally:
                conn.close()
            t1 = time.time()
            with lock:
                records.append({"t0": t0, "t1": t1, "status": status, "body": body[:64], "error": error})
            if status == 200 and not ready.is_set():
                ready.set()
                with open(ready_file, "w") as f:
                    f.write(f"{t1}\n")
            # Bounded rate: after a slow request the thread goes on from now,
            # it does not catch up with a burst.
            due = max(due + period, time.monotonic())

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    while not os.path.exists(stop_file):
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(LOAD_TIMEOUT + 1)
    with lock:
        done = sorted(records, key=lambda r: r["t0"])
    with open(out, "w") as f:
        for r in done:
            f.write(json.dumps(r) + "\n")


def deploy_result(path):
    """Events per host and the outcome of one `deploy --output json` run; a
    run that ended before any event (a refused config) has no events."""
    evs, outcome = [], None
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if "seq" in obj:
            evs.append(obj)
        elif "outcome" in obj:
            outcome = obj
    phases = {}
    for e in evs:
        if e.get("kind") == "transition" and e.get("host"):
            phases.setdefault(e["phase"], parse_time(e["time"]))
    return phases, outcome


def load_figures(load_path, deploy_path, old):
    """What the clients of the public address saw during one deploy."""
    recs = []
    with open(load_path) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    good = sorted((r for r in recs if r["status"] == 200), key=lambda r: r["t1"])
    failed = [r for r in recs if r["status"] != 200]
    out = {"requests": len(recs), "failed": len(failed)}
    if any("resent" in r for r in recs):
        out["resent"] = sum(1 for r in recs if r.get("resent"))
    if len(good) >= 2:
        gap = max(b["t1"] - a["t1"] for a, b in zip(good, good[1:]))
        # Failures after the last good answer are a gap that never closed.
        end = max(r["t1"] for r in recs)
        if failed and max(r["t1"] for r in failed) > good[-1]["t1"]:
            gap = max(gap, end - good[-1]["t1"])
        out["gap_ms"] = round(gap * 1000, 1)
    # In the order the requests were sent: answers in flight at a switch
    # complete out of order.
    served = []
    for r in sorted(good, key=lambda r: r["t0"]):
        if not served or served[-1] != r["body"]:
            served.append(r["body"])
    out["served"] = " → ".join(served)
    out["errors"] = sorted({(r["error"] or f"HTTP {r['status']}").split(":")[0] for r in failed})
    phases, outcome = deploy_result(deploy_path)
    if outcome is not None:
        out["outcome"] = outcome.get("outcome")
        hosts = outcome.get("hosts") or []
        sb = hosts[0].get("switch_back_ms") if hosts else None
        if sb is not None:
            out["switch_back_ms"] = sb
    # From the failure seen (the deploy's rolling_back event) to the first
    # answer of the old release at the public address; only when the public
    # address stopped serving the old release at all.
    rb = phases.get("rolling_back")
    left = bool(failed) or any(r["body"] != old for r in good)
    if rb is not None and left:
        back = [r["t1"] for r in good if r["body"] == old and r["t1"] >= rb]
        if back:
            out["restore_ms"] = round((back[0] - rb) * 1000, 1)
    return out


def swarm_figures(load_path, status_path, out_path, t0, t1, old):
    """What the clients of a Swarm service saw during one update, and when
    the tool (rollback's events, or Swarm's UpdateStatus) saw the failure.

    LOAD is `docker logs -t` of the load client (`TIME ok VERSION` or `TIME
    fail`), STATUS the service's UpdateStatus polled as `EPOCH JSON` lines,
    OUT the tool's output (rollback's JSON events, or docker's text). Times
    count from the update's start as Swarm records it (UpdateStatus
    StartedAt of `updating`), so neither tool's own start-up is in them."""
    t0, t1 = float(t0), float(t1)
    states = []
    with open(status_path) as f:
        for line in f:
            at, _, text = line.strip().partition(" ")
            try:
                st = json.loads(text) if text and text != "null" else {}
            except ValueError:
                continue
            states.append((float(at), st or {}))
    def stamp(st, field):
        """Swarm's own time of a status's FIELD, when it set one."""
        value = st.get(field) or ""
        try:
            return logrus_time(value) if value and not value.startswith("0001") else None
        except (AttributeError, ValueError):
            return None

    # The update's start: the first `updating` status that began after
    # the command did. A status left by the update before (its state
    # stays until the next) began earlier and is not this update's.
    begin = next((stamp(st, "StartedAt") for at, st in states
                  if at >= t0 and st.get("State") == "updating"
                  and (stamp(st, "StartedAt") or 0) >= t0 - 0.5), None) or t0
    ours = [(at, st) for at, st in states
            if at >= t0 and (stamp(st, "StartedAt") or 0) >= begin - 0.0005]
    seen = {}
    for at, st in ours:
        seen.setdefault(st.get("State"), (at, st))
    # Back on the old spec: Swarm's rollback of this update finished, or
    # (rollback's `rollback=previous`, an update of its own) the update
    # that began after this one did.
    back = next((stamp(st, "CompletedAt") for at, st in ours
                 if stamp(st, "CompletedAt") and (
                     st.get("State") == "rollback_completed"
                     or (st.get("State") == "completed" and stamp(st, "StartedAt") > begin + 0.0005))),
                None)
    done = next((stamp(st, "CompletedAt") for at, st in ours
                 if st.get("State") == "completed" and abs(stamp(st, "StartedAt") - begin) < 0.0005),
                None)
    out = {"start_lag_s": diff(t0, begin)}
    recs = []
    with open(load_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or parts[1] not in ("ok", "fail"):
                continue
            recs.append((logrus_time(parts[0]), parts[1] == "ok", parts[2] if len(parts) > 2 else ""))
    # From the first good answer on: the client's own start is not the update's.
    first = next((i for i, r in enumerate(recs) if r[1]), len(recs))
    recs = recs[first:]
    out["requests"] = len(recs)
    out["failed"] = sum(1 for r in recs if not r[1])
    served, changes = [], -1
    last = None
    for _, ok, v in recs:
        if ok and v != last:
            changes += 1
            last = v
            if v not in served:
                served.append(v)
    out["served"] = " → ".join(served)
    if changes > len(served) - 1:
        # DNS round robin over old and new tasks: answers alternate.
        out["served"] += f" ({changes} changes)"
    bad = [r for r in recs if not r[1] or r[2] != old]
    if bad:
        later = [r[0] for r in recs if r[0] > bad[-1][0]]
        if later:
            # Every answer from this one on came from the old release.
            out["old_only_s"] = diff(begin, later[0])
    phases, outcome = deploy_result(out_path)
    if phases:
        out["detect_s"] = diff(begin, phases.get("rolling_back"))
        out["verified_s"] = diff(begin, phases.get("rolled_back") or phases.get("verified"))
        out["outcome"] = outcome and outcome.get("outcome")
    elif "rollback_started" in seen:
        # Swarm keeps the update's StartedAt when it turns to its rollback:
        # the first poll that saw it is the time (within one poll, ~0.25 s).
        out["detect_s"] = diff(begin, seen["rollback_started"][0])
    out["swarm_done_s"] = diff(begin, back or done)
    out["swarm_states"] = " → ".join(s for s in seen if s)
    return {k: v for k, v in out.items() if v is not None}


# --- report -------------------------------------------------------------------


def load_results(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def med(rows, part, case, tool, metric):
    vals = [
        r["value"]
        for r in rows
        if r["part"] == part and r["case"] == case and r["tool"] == tool and r["metric"] == metric
        and r["value"] is not None
    ]
    if not vals:
        return None
    return statistics.median(vals), len(vals)


def texts(rows, part, case, tool, metric):
    return [
        r["value"]
        for r in rows
        if r["part"] == part and r["case"] == case and r["tool"] == tool and r["metric"] == metric
    ]


def fmt_s(v):
    if v is None:
        return "n/a"
    return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"


def fmt_bytes(v):
    if v is None:
        return "n/a"
    if v >= 1024 * 1024:
        return f"{v / 1048576:.1f} MiB"
    if v >= 1024:
        return f"{v / 1024:.1f} KiB"
    return f"{int(v)} B"


def fmt_n(v):
    return "n/a" if v is None else (f"{v:g}")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def report(results, meta_path, out_path):
    rows = load_results(results)
    with open(meta_path) as f:
        meta = json.load(f)
    m = lambda *a: (med(rows, *a) or (None, 0))[0]  # noqa: E731
    def n(part, case, tool, metric):
        """The number of runs, with the range of a time."""
        vals = [r["value"] for r in rows if r["part"] == part and r["case"] == case
                and r["tool"] == tool and r["metric"] == metric and r["value"] is not None]
        if len(vals) > 1 and metric.endswith("_s"):
            return f"{len(vals)}: {min(vals):.3f}–{max(vals):.3f} s"
        return str(len(vals))

    L = []
    w = L.append
    w(f"# Benchmarks{' (smoke run)' if meta['smoke'] else ''}")
    w("")
    w(
        "`rollback` against the pipeline it replaces (docker pull/tag/push, `docker image prune -a`, "
        "a bash health-poll loop) and against `skopeo`, measured side by side in one run of "
        "`scripts/bench` on one machine. Every figure is the **median of "
        f"{meta['runs']} run(s)**; every ratio is computed from medians of the same run."
    )
    w("")
    w("Run it: `scripts/bench` (this file, 5 runs), `scripts/bench --runs N`, "
      "`scripts/bench --parts 1,3` (some parts only), `scripts/bench --smoke` (1 run, "
      "1 MiB image, 1-2 hosts, a few minutes; writes `target/bench-smoke.md` and exits "
      "non-zero when a step breaks). Times in the tables are medians; the last column "
      "gives the number of runs and the range of the time.")
    w("")
    w("## Machine and versions")
    w("")
    w("| | |")
    w("|---|---|")
    for k in ("date", "cpu", "cores", "memory", "load", "kernel", "engine", "registry", "skopeo", "rollback", "commit"):
        w(f"| {k} | {meta.get(k, 'n/a')} |")
    w("")
    env = ("it uses the test environment as it runs" if "ROLLBACK_BENCH_NO_TEST_ENV" in meta["command"]
           else "it starts the test environment with `scripts/test-env`")
    w(f"Reproduce: `{meta['command']}` (from the repository root; {env}, "
      "builds `target/release/rollback`, and cleans up what it creates).")
    w("")
    w("Health timings of every `rollback` config in this run (small, so the bench takes "
      f"minutes): interval {meta['interval']}, timeout {meta['timeout']}, stable_for "
      f"{meta['stable_for']}, start_period 0s, deadline {meta['deadline']}; container "
      f"stop_timeout {meta['stop_timeout']} (the fixture app runs busybox `httpd` as PID 1, "
      "which does not stop on SIGTERM, so every switch waits that long for the old "
      f"container). Shell pollers use the same {meta['interval']} interval unless said otherwise.")
    w("")
    try:
        load1 = float(str(meta.get("load", "")).split()[0])
        cores = int(meta.get("cores", 0))
    except (ValueError, IndexError):
        load1, cores = 0.0, 0
    if cores and load1 > cores:
        w(f"The machine was busy with other work during this run (load average {load1:g} on "
          f"{cores} cores at the start): absolute times carry that noise; the ratios, "
          "measured side by side in the same minutes, less so.")
        w("")
    targets = []
    ran = {int(x) for x in str(meta["parts"]).split(",") if x}

    def skipped(k, title):
        if k in ran:
            return False
        w(f"## {title}")
        w("")
        w(f"Not measured in this run (`--parts {meta['parts']}`).")
        w("")
        return True

    # --- 1 -------------------------------------------------------------------
    if not skipped(1, "1. Backup/promotion copy inside one registry"):
        part1(w, m, n, rows, meta, targets)
    if not skipped(2, "2. Crash detection"):
        part2(w, m, n, meta, targets)
    if not skipped(3, "3. Restore time"):
        part3(w, m, n, meta, targets)
    if not skipped(4, "4. Overhead of the tool"):
        part4(w, m, n, meta, targets)
    if not skipped(5, "5. Fleet"):
        part5(w, m, n, meta)
    if not skipped(6, "6. An engine reached over SSH"):
        part6(w, m, n, meta)
    if not skipped(7, "7. Stop-first against `[proxy]` under load"):
        part7(w, m, n, rows, meta, targets)
    if not skipped(8, "8. Costs at scale and reactions at the limit"):
        part8(w, m, n, rows, meta)
    if not skipped(9, "9. HTTPS behind `[proxy]`: two apps on one proxy"):
        part9(w, m, n, rows, meta, targets)
    if not skipped(10, "10. A Swarm service: `rollback` against `docker service update` under load"):
        part10(w, m, n, rows, meta)
    finish(w, L, rows, targets, out_path)


def part1(w, m, n, rows, meta, targets):
    w("## 1. Backup/promotion copy inside one registry")
    w("")
    w("Copy `SRC` to a new tag `DST` in the same repository of the local registry "
      "(`127.0.0.1:15000`, CNCF distribution 2.8):")
    w("")
    w("- **rollback tag**: `rollback tag SRC DST` (registry-side: manifest read, manifest write).")
    w("- **pull+tag+push**: what pipelines do: the runner has no copy of the image "
      "(`docker image prune -a -f` before each run, not timed), then `docker pull SRC`, "
      "`docker tag SRC DST`, `docker push DST` (timed). It runs on an engine of its own "
      "started by the bench, so the prune touches nothing else.")
    w("- **skopeo copy**: `skopeo copy --all --src-tls-verify=false --dest-tls-verify=false "
      "docker://SRC docker://DST`.")
    w("")
    w("How requests and bytes are counted: the registry's access log (Apache combined lines) "
      "is read from the byte offset it had before the operation to the offset after it. "
      "Counted are the requests under `/v2/<bench repository>/` (split into `manifests/` reads "
      "and writes, `manifests/` HEADs, and `blobs/`, blob uploads included), plus `/v2/` version pings whose user agent is the "
      "tool's. Bytes moved = the body sizes of `GET` responses (the log's size field; `HEAD` "
      "answers carry no body and count 0) + the size of every blob or manifest whose upload "
      "completed (`PUT` answered 201), looked up in the registry's storage by digest, since "
      "the access log does not show request sizes. *First → last request* is the time "
      "from the start of the tool's first request to the end of its last, from the "
      "registry's own nanosecond log lines: the rest of the wall time is spent in the "
      "tool (process start, setup) and the engine.")
    w("")
    for case, title in (("image", f"{meta['pad_mib']} MiB single-platform image (`PAD_MIB={meta['pad_mib']}`)"),
                        ("index", "2-platform OCI index (linux/amd64 + linux/arm64)")):
        w(f"### {title}")
        w("")
        if case == "image" and meta.get("pad_size"):
            w(f"Image size: {meta['pad_size']}.")
            w("")
        w("| tool | wall time | time vs rollback | first → last request | manifest GET/PUT | manifest HEAD | blob requests | pings | bytes moved | blob bytes | runs: range |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        rb = m(1, case, "rollback", "wall_s")
        for tool, name in (("rollback", "rollback tag"), ("pipeline", "pull+tag+push"), ("skopeo", "skopeo copy --all")):
            wall = m(1, case, tool, "wall_s")
            w(
                f"| {name} | {fmt_s(wall)} | {fmt_ratio(ratio(wall, rb)) if tool != 'rollback' else '1x'} "
                f"| {fmt_s(m(1, case, tool, 'registry_span_s'))} "
                f"| {fmt_n(m(1, case, tool, 'manifest_transfers'))} | {fmt_n(m(1, case, tool, 'manifest_heads'))} "
                f"| {fmt_n(m(1, case, tool, 'blob_requests'))} "
                f"| {fmt_n(m(1, case, tool, 'ping_requests'))} | {fmt_bytes(m(1, case, tool, 'bytes'))} "
                f"| {fmt_bytes(m(1, case, tool, 'blob_bytes'))} "
                f"| {n(1, case, tool, 'wall_s')} |"
            )
        w("")
        seq = texts(rows, 1, case, "rollback", "sequence")
        if seq:
            w(f"The requests of `rollback tag` (first run): {seq[0]}. The HEAD of `DST` is "
              "what lets a repeated copy skip its PUT when `DST` already holds the digest.")
            w("")
        span = m(1, case, "rollback", "registry_span_s")
        if rb is not None and span is not None:
            w(f"Of `rollback tag`'s {fmt_s(rb)} of wall time, {fmt_s(span)} pass between its "
              f"first and last request; the other {fmt_s(rb - span)} are the process starting "
              "and setting up before the first request.")
            w("")
        if case == "image":
            pp = m(1, case, "pipeline", "wall_s")
            r = ratio(pp, rb)
            mt = m(1, case, "rollback", "manifest_transfers")
            heads = m(1, case, "rollback", "manifest_heads")
            targets.append(("rollback tag: 2 manifest requests, GET + PUT (HEADs allowed, as in the registry adapter's budget) (padded image)",
                            f"{fmt_n(mt)} (+ {fmt_n(heads)} HEAD)",
                            verdict(None if mt is None else mt <= 2)))
            targets.append(("rollback tag: 0 blob bytes (padded image)",
                            fmt_bytes(m(1, case, "rollback", "blob_bytes")),
                            verdict(None if m(1, case, "rollback", "blob_bytes") is None
                                    else m(1, case, "rollback", "blob_bytes") == 0)))
            targets.append((">= 20x faster than pull+tag+push (padded image)", fmt_ratio(r),
                            verdict(None if r is None else r >= 20)))
        else:
            src = texts(rows, 1, "index", "source", "digest")
            w("Digest of `DST` after the copy, compared with the source index:")
            w("")
            w("| | digest | media type | same as source |")
            w("|---|---|---|---|")
            if src:
                w(f"| source (`SRC`) | `{src[0]}` | {texts(rows, 1, 'index', 'source', 'media_type')[0]} | |")
            for tool, name in (("rollback", "rollback tag"), ("pipeline", "pull+tag+push"), ("skopeo", "skopeo copy --all")):
                d = texts(rows, 1, "index", tool, "digest")
                mt = texts(rows, 1, "index", tool, "media_type")
                if d:
                    same = all(x == src[0] for x in d) if src else None
                    w(f"| {name} | `{d[0]}` | {mt[0] if mt else ''} | {'yes' if same else '**no**'} ({len(d)} run(s)) |")
            w("")
            pd = texts(rows, 1, "index", "pipeline", "digest")
            pm = texts(rows, 1, "index", "pipeline", "media_type")
            if src and pd and any(x != src[0] for x in pd):
                w("`docker pull` of an index keeps only the engine's platform, and `docker push` "
                  f"uploads that single-platform manifest ({pm[0] if pm else ''}): `DST` is "
                  "not the release that was tagged, and an arm64 host deploying it gets no "
                  "image for its platform.")
                w("")



def part2(w, m, n, meta, targets):
    w("## 2. Crash detection")
    w("")
    w("A release that exits 1 at start (`MODE=crash`), replacing a healthy one. Time from the "
      "new container's start to the deploy's failure decision.")
    w("")
    w("- **rollback**: `rollback deploy --tag crash --output json`: from the `switched` event "
      "(new container started) to the first `rolling_back` transition. Cross-check: from the "
      "engine's own `start` event of the crashing container (`docker events`, nanosecond "
      "times) to the `rolling_back` event; from the crashed container's `State.StartedAt` "
      "(`docker inspect`, n/a when the container is gone); and from the engine's `die` event of the "
      "crashing container (matched by its id, from the `switched` event; the old release's own `die` "
      "does not count) to the decision, which is the reaction time of the watch. Its reference: the "
      "same `die` event's delivery to a second subscriber (`docker events`, stamped on arrival).")
    w("- **bash poll loop**: `docker run -d` of the crashing release, then what pipelines do: "
      "`curl` the health URL and look for `\"UP\"`, 5 tries 6 s apart; the decision is after the "
      "5th failure. Measured from the moment `docker run` returned.")
    w("")
    w("| tool | start → failure decision | time vs rollback | runs: range |")
    w("|---|---|---|---|")
    rb = m(2, "crash", "rollback", "detect_s")
    w(f"| rollback (events: switched → rolling_back) | {fmt_s(rb)} | 1x | {n(2, 'crash', 'rollback', 'detect_s')} |")
    x = m(2, "crash", "rollback", "detect_engine_s")
    w(f"| rollback (engine start event → rolling_back) | {fmt_s(x)} | | {n(2, 'crash', 'rollback', 'detect_engine_s')} |")
    x = m(2, "crash", "rollback", "detect_startedat_s")
    w(f"| rollback (container State.StartedAt → rolling_back) | {fmt_s(x)} | | {n(2, 'crash', 'rollback', 'detect_startedat_s')} |")
    x = m(2, "crash", "rollback", "detect_exit_s")
    w(f"| rollback (engine die event → rolling_back) | {fmt_s(x)} | | {n(2, 'crash', 'rollback', 'detect_exit_s')} |")
    x = m(2, "crash", "rollback", "die_delivery_s")
    w(f"| reference (engine die event → a second subscriber has it) | {fmt_s(x)} | | {n(2, 'crash', 'rollback', 'die_delivery_s')} |")
    pp = m(2, "crash", "pipeline", "detect_s")
    w(f"| bash poll loop (5 × 6 s) | {fmt_s(pp)} | {fmt_ratio(ratio(pp, rb))} | {n(2, 'crash', 'pipeline', 'detect_s')} |")
    w("")
    targets.append(("crash detected < 1 s", fmt_s(rb), verdict(None if rb is None else rb < 1)))



def part3(w, m, n, meta, targets):
    w("## 3. Restore time")
    w("")
    w("From the failure decision to the previous release answering healthy.")
    w("")
    w("- **rollback**: the crash deploys of part 2: from the `rolling_back` transition to the "
      "first healthy probe of the restored release; also to `rolled_back` (which adds the "
      f"`stable_for` {meta['stable_for']} proof).")
    w("- **prune + pull + run**: what pipelines do: `docker rm -f` of the failed container, "
      "`docker image prune -a -f` (the previous image goes with it), `docker run` of the "
      "previous tag (pulled again from the local registry), then poll until healthy. On the "
      "bench's own engine.")
    w("- **baseline**: `docker start` of a stopped container of the previous release, then "
      "poll until healthy: the least any tool can do.")
    w("")
    w("| tool | decision → healthy | time vs baseline | runs: range |")
    w("|---|---|---|---|")
    base = m(3, "restore", "baseline", "restore_s")
    rbh = m(3, "restore", "rollback", "restore_s")
    rbd = m(3, "restore", "rollback", "restore_done_s")
    pp = m(3, "restore", "pipeline", "restore_s")
    w(f"| baseline (docker start) | {fmt_s(base)} | 1x | {n(3, 'restore', 'baseline', 'restore_s')} |")
    w(f"| rollback (first healthy probe) | {fmt_s(rbh)} | {fmt_ratio(ratio(rbh, base))} | {n(3, 'restore', 'rollback', 'restore_s')} |")
    w(f"| rollback (rolled_back, after stable_for) | {fmt_s(rbd)} | {fmt_ratio(ratio(rbd, base))} | {n(3, 'restore', 'rollback', 'restore_done_s')} |")
    w(f"| prune + pull + run | {fmt_s(pp)} | {fmt_ratio(ratio(pp, base))} | {n(3, 'restore', 'pipeline', 'restore_s')} |")
    w("")
    r = ratio(rbh, base)
    targets.append(("restore within 1.2x of docker start", fmt_ratio(r), verdict(None if r is None else r <= 1.2)))



def part4(w, m, n, meta, targets):
    w("## 4. Overhead of the tool")
    w("")
    w("`/usr/bin/time -f '%e %M %U %S'` around the process: wall time, peak resident set, "
      "CPU time (user + system). A healthy deploy switches between two healthy releases, "
      "one host (the local engine), image already on the host.")
    w("")
    w("| command | wall time | peak RSS | CPU time | runs: range |")
    w("|---|---|---|---|---|")
    for case, name in (("status", "rollback status"), ("deploy", "rollback deploy (healthy)")):
        w(f"| {name} | {fmt_s(m(4, case, 'rollback', 'wall_s'))} | "
          f"{fmt_bytes(None if m(4, case, 'rollback', 'rss_kib') is None else m(4, case, 'rollback', 'rss_kib') * 1024)} | "
          f"{fmt_s(m(4, case, 'rollback', 'cpu_s'))} | {n(4, case, 'rollback', 'wall_s')} |")
    w("")
    w("Where a healthy deploy's wall time goes, from its event timestamps (medians):")
    w("")
    w("| segment | time | waits on |")
    w("|---|---|---|")
    for metric, name, on in (
        ("seg_start", "process start → first event", "the tool (config, engine and registry connections)"),
        ("seg_prepare", "first event → pulled", "engine (lock, inspect, pull) and registry (resolve)"),
        ("seg_switch", "pulled → switched", "engine (stop old, create and start new)"),
        ("seg_verify", "switched → verified", f"the app (health probes, stable_for {meta['stable_for']})"),
        ("seg_finish", "verified → last event", "registry (promotion) and engine (cleanup, unlock)"),
        ("seg_end", "last event → exit", "the tool (outcome, exit)"),
        ("own_s", "tool's own time (first and last rows)", ""),
    ):
        w(f"| {name} | {fmt_s(m(4, 'deploy', 'rollback', metric))} | {on} |")
    w("")
    w("The middle rows are time spent waiting on the engine, the registry or the app; "
      "CPU time above is what the tool itself computes during the whole deploy.")
    w("")
    rss = [m(4, c, "rollback", "rss_kib") for c in ("status", "deploy")]
    mx = None if None in rss else max(rss)
    targets.append(("peak RSS < 30 MiB", fmt_bytes(None if mx is None else mx * 1024),
                    verdict(None if mx is None else mx < 30 * 1024)))



def part5(w, m, n, meta):
    w("## 5. Fleet")
    w("")
    w("A healthy deploy (switching between two healthy releases) to 1, 2 and "
      f"{max(meta['fleet_hosts'])} hosts. Each host is a Docker engine on this machine "
      "(the local engine, the test environment's second engine, and more `dockerd` "
      "instances started by the bench with their own socket, data root and bridge), each "
      "publishing the app on its own loopback port and probed there (`[[hosts]] ports` and "
      "`health_url`). The image is already on every host (`docker save | docker load`).")
    w("")
    w("| hosts | batch | wall time | per host | time vs 1 host | runs: range |")
    w("|---|---|---|---|---|---|")
    one = m(5, "h1-b1", "rollback", "wall_s")
    for h in meta["fleet_hosts"]:
        for b in sorted({1, h}):
            case = f"h{h}-b{b}"
            wall = m(5, case, "rollback", "wall_s")
            w(f"| {h} | {b} | {fmt_s(wall)} | {fmt_s(None if wall is None else wall / h)} | "
              f"{fmt_ratio(ratio(wall, one))} | {n(5, case, 'rollback', 'wall_s')} |")
    w("")
    hmax = max(meta["fleet_hosts"])
    seq = m(5, f"h{hmax}-b1", "rollback", "wall_s")
    par = m(5, f"h{hmax}-b{hmax}", "rollback", "wall_s")
    if one is not None and seq is not None and hmax > 1:
        text = (f"With `batch = 1` (the pipeline's order, one host after another) each added "
                f"host adds {fmt_s((seq - one) / (hmax - 1))} to the deploy")
        if par is not None:
            text += (f"; with `batch = {hmax}` the {hmax} hosts are deployed together and take "
                     f"{fmt_ratio(ratio(par, one))} the time of one host")
        w(text + ".")
        w("")


def part6(w, m, n, meta):
    w("## 6. An engine reached over SSH")
    w("")
    w("The same healthy deploy (switching between two healthy releases, image already on "
      "the host) to the local engine, once over its Unix socket and once over "
      "`ssh://root@127.0.0.1:PORT` through the test environment's `sshd` (OpenSSH, ed25519 "
      "keys, the client key in `ssh-agent`), in alternating order within each run. Over "
      "SSH, `rollback` opens one master connection (`ControlMaster`) per engine and forwards "
      "the engine's socket on the host to a local socket through it (`ssh -O forward -L`), so "
      "every HTTP connection to the engine is a channel of the master with no process on "
      "either side (the docker CLI, for `DOCKER_HOST=ssh://`, runs `ssh HOST docker system "
      "dial-stdio` for every connection instead, which is what `rollback` falls back to where "
      "the server refuses socket forwarding).")
    w("")
    w("| engine | deploy wall time | process start → first event | first event → pulled | verified → last event | peak RSS | CPU time | `status` wall time | runs: range (deploy) |")
    w("|---|---|---|---|---|---|---|---|---|")
    for via, name in (("unix", "unix:///var/run/docker.sock"), ("ssh", "ssh://root@127.0.0.1")):
        rss = m(6, "deploy", via, "rss_kib")
        w(f"| {name} | {fmt_s(m(6, 'deploy', via, 'wall_s'))} | {fmt_s(m(6, 'deploy', via, 'seg_start'))} | "
          f"{fmt_s(m(6, 'deploy', via, 'seg_prepare'))} | {fmt_s(m(6, 'deploy', via, 'seg_finish'))} | "
          f"{fmt_bytes(None if rss is None else rss * 1024)} | {fmt_s(m(6, 'deploy', via, 'cpu_s'))} | "
          f"{fmt_s(m(6, 'status', via, 'wall_s'))} | {n(6, 'deploy', via, 'wall_s')} |")
    w("")
    u, s_ = m(6, "deploy", "unix", "wall_s"), m(6, "deploy", "ssh", "wall_s")
    cu, cs = m(6, "deploy", "unix", "seg_start"), m(6, "deploy", "ssh", "seg_start")
    if None not in (u, s_, cu, cs):
        text = (f"Reaching the engine over SSH costs {fmt_s(cs - cu)} at connect (process start → "
                "first event: the SSH handshake, key check and authentication, then the socket's "
                "forwarding and the first request through it)")
        if s_ >= u:
            text += (f"; the whole deploy takes {fmt_s(s_ - u)} more ({fmt_ratio(ratio(s_, u))} the "
                     "time over the socket)")
        else:
            text += (f"; the whole deploy's wall time ({fmt_s(s_)} over SSH, {fmt_s(u)} over the "
                     "socket) differs by less than its run-to-run spread")
        w(text + ". Later requests reuse the connection; a new HTTP connection (the event stream "
          "that watches the container, requests in parallel) opens a new channel of the master. "
          "The health checks do not go through SSH.")
        w("")


P7_RELEASES = {
    "slow": "healthy, listens 2 s after its start (`slow`, `SLOW_SECS=2`)",
    "crash": "exits 1 at start (`crash`)",
    "down": "answers `{\"status\":\"DOWN\"}` (`down`)",
    "flaky": "dies 4 s after its start, inside `stable_for` (`flaky`, `FLAKY_SECS=4`)",
}


def part7(w, m, n, rows, meta, targets):
    p7 = meta.get("p7") or {}
    w("## 7. Stop-first against `[proxy]` under load")
    w("")
    w("Four releases, each deployed over a healthy `v1` twice: **stop-first** "
      "(the app publishes its port itself, `[container] ports = [\"127.0.0.1:PORT:8080\"]`, "
      "`[health] http`) and **`[proxy]`** (start-first behind the proxy container: `listen` on a "
      "loopback port, `app_port = 8080`, `drain = "
      f"\"{p7.get('drain', 'n/a')}\"`, `[health] path = \"/health\"`, `json_pointer = \"/status\"`, "
      "`expect = \"UP\"`). Both with `stable_for` "
      f"{p7.get('stable_for', 'n/a')}, `deadline` {p7.get('deadline', 'n/a')}, interval "
      f"{meta['interval']}, probe timeout {p7.get('timeout', 'n/a')} (the proxy's direct probe is a "
      f"`docker exec` of `wget` in the proxy container), `stop_timeout` {meta['stop_timeout']}. "
      "Before each deploy `v1` serves the public address (deployed again when the case before "
      "left another release there). Every deploy goes to an engine the bench starts for itself, "
      "so the proxy container `rollback-proxy` and its network `rollback` are the bench's own "
      f"(booted by the first `[proxy]` deploy, publishing `{p7.get('listen', 'n/a')}`).")
    w("")
    w("During each deploy a load loop (`benchlib.py load`: 4 threads, 200 requests/s in all, a "
      "new connection per request, `GET /version`, 1 s timeout) runs on the public address (the "
      "app's port for stop-first, the proxy's `listen` for `[proxy]`) from before the deploy "
      "until 1 s after it ends, and records every request. **Failed requests**: answers other "
      "than 200, refused or reset connections and timeouts. **Longest gap**: the longest time "
      "between two good answers (their completion times). **Switch-back**: for `[proxy]`, the "
      "deploy's own `switch_back_ms` (failure seen → the proxy answering from the old release; "
      "in brackets the load loop's view: the `rolling_back` event → the first `v1` answer); "
      "stop-first reports none, so its figure is the load loop's (marked *load*); — when "
      "traffic never left `v1` or nothing was switched back. **Wall time**: the `rollback "
      "deploy` process. Measured with `" + meta["command"] + "` (this part alone: "
      "`scripts/bench --parts 7`).")
    w("")
    w("| release | deploy | exit | failed requests | longest gap | switch-back | wall time | served at the public address | runs: range |")
    w("|---|---|---|---|---|---|---|---|---|")

    def ms(v):
        return "—" if v is None else f"{v:.0f} ms"

    lost, sent = 0, 0
    for rel in p7.get("releases") or list(P7_RELEASES):
        for tool, name in (("stop-first", "stop-first"), ("proxy", "`[proxy]`")):
            vals = [r["value"] for r in rows if r["part"] == 7 and r["case"] == rel
                    and r["tool"] == tool and r["metric"] == "failed"]
            if not vals:
                w(f"| {rel} | {name} | n/a | n/a | n/a | n/a | n/a | not measured | 0 |")
                continue
            exits = sorted({int(x) for x in texts(rows, 7, rel, tool, "exit_code")})
            failed = m(7, rel, tool, "failed")
            reqs = m(7, rel, tool, "requests")
            shown = f"{failed:g} of {reqs:g}"
            if len(vals) > 1:
                shown += f" (max {max(vals):g})"
            if tool == "proxy":
                sb = m(7, rel, tool, "switch_back_ms")
                back = ms(sb)
                rm = m(7, rel, tool, "restore_ms")
                if rm is not None:
                    back += f" ({ms(rm)})"
                if rel in ("slow", "crash", "down"):
                    lost += sum(vals)
                    sent += sum(texts(rows, 7, rel, tool, "requests"))
            else:
                rm = m(7, rel, tool, "restore_ms")
                back = "—" if rm is None else f"{ms(rm)} *load*"
            served = texts(rows, 7, rel, tool, "served")
            w(f"| {rel} | {name} | {', '.join(map(str, exits))} | {shown} | "
              f"{ms(m(7, rel, tool, 'gap_ms'))} | {back} | {fmt_s(m(7, rel, tool, 'wall_s'))} | "
              f"{served[0] if served else 'n/a'} | {n(7, rel, tool, 'wall_s')} |")
    w("")
    w("The releases: " + "; ".join(f"**{k}** {v}" for k, v in P7_RELEASES.items()) + ". "
      "Expected exits: 0 for slow, 3 (rolled back) for the others. Figures are medians of the "
      "runs; *served* lists the releases that answered, in order, in the first run.")
    w("")
    measured = [r for r in rows if r["part"] == 7 and r["tool"] == "proxy" and r["metric"] == "failed"
                and r["case"] in ("slow", "crash", "down")]
    targets.append(("[proxy]: no request lost while a slow, crashing or DOWN release is deployed",
                    f"{lost:g} of {sent:g}" if measured else "n/a",
                    verdict(lost == 0 if measured else None)))


def fmt_ms(v):
    return "n/a" if v is None else f"{v * 1e3:.1f} ms"


def part8(w, m, n, rows, meta):
    w("## 8. Costs at scale and reactions at the limit")
    w("")
    w("Every figure beside the reference it is held against, both measured in this run. "
      "The fleet is simulated: the fakes of `rollback-core` (feature `mock`) under paused "
      "time, so the seconds of health checks are virtual and what is measured is the engine "
      "itself (`cargo run --release -p rollback-core --features mock --example fleet_scale -- "
      "--hosts N --batch B [--fail]`, one process per row; CPU time is the run time of the "
      "process's threads (`/proc/self/task/*/schedstat`), memory is the peak resident set `VmHWM` less the resident set "
      "before the fleet was built). The reference of the per-host growth is the same example "
      "with `--reference`: as many bare futures in the same batches under the same runtime, "
      "each holding about a host's heap (~14 KiB), awaiting a host's four probe timers and "
      "emitting its 13 events, with no rollback code; what it gains per host from the smaller "
      "to the larger fleet is what N live futures cost the runtime and the allocator. "
      "The proxy figures come from "
      "`cargo run --release -p rollback-proxy --example proxy_apps -- --apps N`: N apps "
      "routed by `Host` on one Caddy (the `caddy:2` stand-in), app0 switched forward and "
      f"back {meta.get('p8_switches', '?')} times while load loops (new connection per request) "
      "run on up to four of the other apps; its reference is one admin API change timed "
      "inside the proxy container (20 `wget` POSTs in a row under busybox `time`), under "
      "the same load loops and idle.")
    w("")
    hosts = meta.get("p8_hosts") or []
    apps = meta.get("p8_apps") or []

    def fleet(h, b, fail, metric):
        return m(8, f"h{h}-b{b}{'-fail' if fail else ''}", "fleet", metric)

    def per_host(h, b, fail, metric):
        v = fleet(h, b, fail, metric)
        return None if v is None else v / h

    def mem_per_host(h, b, fail):
        peak, start = fleet(h, b, fail, "rss_peak_kib"), fleet(h, b, fail, "rss_start_kib")
        return None if peak is None or start is None else (peak - start) / h

    # --- the one table ----------------------------------------------------
    w("| measurement | rollback | reference (same run) | goal | met |")
    w("|---|---|---|---|---|")
    big = hosts[-1] if hosts else None
    if big:
        # Below 100 hosts the process's fixed cost (runtime, allocator) dominates a per-host figure.
        sized = [h for h in hosts if h >= 100] or [big]
        cases = [(b, f) for b in ("1", "h") for f in (0, 1)]
        worst_cpu = max((per_host(h, b, f, "cpu_s") or 0) for h in sized for b in (1, h) for f in (0, 1))
        worst_mem = max((mem_per_host(h, b, f) or 0) for h in sized for b in (1, h) for f in (0, 1))
        w(f"| fleet on fakes: CPU time per host, worst of the rows of {sized[0]} hosts or more | {worst_cpu * 1e3:.3f} ms | | < 1 ms | {'yes' if worst_cpu < 1e-3 else '**no**'} |")
        w(f"| fleet on fakes: peak memory per host, worst of the rows of {sized[0]} hosts or more | {worst_mem:.1f} KiB | | < 100 KiB | {'yes' if worst_mem < 100 else '**no**'} |")
        small = hosts[-2] if len(hosts) > 1 else hosts[0]
        for b, f in cases:
            bs, bb = (1, 1) if b == "1" else (small, big)
            a, c = per_host(small, bs, f, "cpu_s"), per_host(big, bb, f, "cpu_s")
            ma, mc = mem_per_host(small, bs, f), mem_per_host(big, bb, f)
            if not (a and c):
                continue
            name = f"batch {'1' if b == '1' else '= hosts'}, {'failing' if f else 'healthy'}"
            ok = c / a <= 1.5 and (not ma or not mc or mc / ma <= 1.5)
            mem = f" (memory {mc / ma:.2f}x)" if ma and mc else ""
            ra = m(8, f"ref-h{small}-b{bs}", "fleet-ref", "cpu_s")
            rc = m(8, f"ref-h{big}-b{bb}", "fleet-ref", "cpu_s")
            # Their per-host cost is smaller, so a ratio alone overstates their growth:
            # the growth in ms per host is the figure to hold against rollback's.
            ref = (f"N bare futures with the same heap and wake-ups: {(rc / big) / (ra / small):.2f}x, "
                   f"{(rc / big - ra / small) * 1e3:+.3f} ms per host (rollback: {(c - a) * 1e3:+.3f} ms)"
                   if ra and rc else "")
            w(f"| fleet on fakes: per host at {big} hosts against {small} hosts, {name}: CPU | {c / a:.2f}x{mem} | {ref} | linear: ≤ 1.5x | {'yes' if ok else '**no**'} |")
        one = fleet(1, 1, 0, "virtual_s")
        v = fleet(big, 1, 0, "virtual_s")
        if one and v:
            w(f"| fleet on fakes: virtual time of {big} hosts, batch 1 | {v:.0f} s | batches × one host: {big * one:.0f} s | equal | {'yes' if abs(v - big * one) <= 0.01 * big * one else '**no**'} |")
    for a in apps:
        sw, sb = m(8, f"apps-{a}", "proxy", "switch_s"), m(8, f"apps-{a}", "proxy", "switch_back_s")
        ref = m(8, f"apps-{a}", "proxy", "admin_change_loaded_s")
        idle = m(8, f"apps-{a}", "proxy", "admin_change_s")
        ok = sw is not None and sb is not None and sw <= 0.05 and sb <= 0.05
        w(f"| switch / switch back of one app, {a} app(s) on the proxy{', others under load' if a > 1 else ''} | {fmt_ms(sw)} / {fmt_ms(sb)} | one admin change inside the container, under the same load: {fmt_ms(ref)}; idle: {fmt_ms(idle)} | ≤ 50 ms, flat | {'yes' if ok else '**no**'} |")
    for a in apps:
        f_, r_ = m(8, f"apps-{a}", "proxy", "load_failed"), m(8, f"apps-{a}", "proxy", "load_requests")
        if r_:
            w(f"| failed requests on the other apps while app0 switches, {a} app(s) | {f_:.0f} of {r_:.0f} | | 0 | {'yes' if not f_ else '**no**'} |")
    x, ref = m(2, "crash", "rollback", "detect_exit_s"), m(2, "crash", "rollback", "die_delivery_s")
    if x is not None:
        w(f"| die event → rollback's decision (part 2) | {fmt_ms(x)} | the event's delivery to a second subscriber: {fmt_ms(ref)} | < 20 ms | {'yes' if x < 0.02 else '**no**'} |")
    for rel in ("crash", "flaky"):
        sb = m(7, rel, "proxy", "switch_back_ms")
        ref = m(8, "apps-1", "proxy", "admin_change_s")
        if sb is not None:
            w(f"| failure seen → traffic on the old release (`switch_back_ms`, part 7, {rel}) | {sb:.0f} ms | one admin change inside the container: {fmt_ms(ref)} | ≤ 50 ms | {'yes' if sb <= 50 else '**no**'} |")
    st = m(6, "ssh-true", "ssh", "wall_s")
    for what, key, case in (("connect (process start → first event)", "seg_start", "deploy"),
                            ("`status`", "precise_s", "status"), ("a deploy", "wall_s", "deploy")):
        over, local = m(6, case, "ssh", key), m(6, case, "unix", key)
        if None not in (over, local, st):
            bound = 1.2 * st + local
            w(f"| over ssh://: {what} | {fmt_s(over)} | `ssh -o ControlMaster=no HOST true`: {fmt_s(st)}; over the socket: {fmt_s(local)} | ≤ {fmt_s(bound)} (1.2 × ssh + socket) | {'yes' if over <= bound else '**no**'} |")
    sw = m(8, "apps-1", "proxy-ssh", "switch_s")
    sb = m(8, "apps-1", "proxy-ssh", "switch_back_s")
    if sw is not None:
        w(f"| over ssh://: switch / switch back of one app | {fmt_ms(sw)} / {fmt_ms(sb)} | over the socket: {fmt_ms(m(8, 'apps-1', 'proxy', 'switch_s'))} / {fmt_ms(m(8, 'apps-1', 'proxy', 'switch_back_s'))} | stated | |")
    w("")

    # --- the fleet, row by row ---------------------------------------------
    if hosts:
        w("The simulated fleet, one process per row (healthy: every host takes the release; "
          "failing: the last host's release crashes 1 s after its start, and `rollback-all` "
          "reverts the hosts already switched):")
        w("")
        w("| hosts | batch | case | outcome | CPU time | CPU per host | peak memory per host | events per host | virtual time | batches × one host |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        one = fleet(1, 1, 0, "virtual_s")
        for h in hosts:
            for b in sorted({1, h}):
                for f in (0, 1):
                    case = f"h{h}-b{b}{'-fail' if f else ''}"
                    cpu = fleet(h, b, f, "cpu_s")
                    if cpu is None:
                        continue
                    outcome = (texts(rows, 8, case, "fleet", "outcome") or ["?"])[0]
                    mem = mem_per_host(h, b, f)
                    ev = per_host(h, b, f, "events")
                    v = fleet(h, b, f, "virtual_s")
                    batches = fleet(h, b, f, "batches")
                    expect = f"{batches * one:.0f} s" if one and batches and not f else ""
                    w(f"| {h} | {b} | {'failing' if f else 'healthy'} | {outcome} | {cpu:.2f} s | "
                      f"{cpu / h * 1e3:.3f} ms | {mem:.1f} KiB | {ev:.1f} | {v:.0f} s | {expect} |")
        w("")
        static = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fleet-growth.md")
        with open(static) as f:
            for line in f.read().rstrip("\n").split("\n"):
                w(line)
        w("")
    if apps:
        w("The proxy, per number of apps routed on it (medians; in brackets the slowest):")
        w("")
        w("| apps | switch | switch back | admin change inside the container, under load | idle | load loops: failed of requests |")
        w("|---|---|---|---|---|---|")
        for a, tool in [(a, "proxy") for a in apps] + [(1, "proxy-ssh")]:
            c = f"apps-{a}"
            sw = m(8, c, tool, "switch_s")
            if sw is None:
                continue
            name = f"{a} (ssh://)" if tool == "proxy-ssh" else str(a)
            w(f"| {name} | {fmt_ms(sw)} ({fmt_ms(m(8, c, tool, 'switch_max_s'))}) | "
              f"{fmt_ms(m(8, c, tool, 'switch_back_s'))} ({fmt_ms(m(8, c, tool, 'switch_back_max_s'))}) | "
              f"{fmt_ms(m(8, c, tool, 'admin_change_loaded_s'))} | "
              f"{fmt_ms(m(8, c, tool, 'admin_change_s'))} | "
              f"{m(8, c, tool, 'load_failed') or 0:.0f} of {m(8, c, tool, 'load_requests') or 0:.0f} |")
        w("")


# --- part 9: HTTPS behind [proxy] -------------------------------------------------

TLS_LOAD_THREADS = 2
TLS_LOAD_RATE = 40  # requests per second per loop; four loops run at once


def _tls_conn(port, host, cafile, timeout):
    """An HTTPS connection to 127.0.0.1:PORT that sends HOST as SNI and in
    Host, and verifies the certificate for HOST against CAFILE."""
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=cafile)
    # HTTP/1.1 only: the figures are the proxy's, not HTTP/2's GOAWAY at a config load.
    ctx.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
    conn._create_connection = lambda addr, *a, **kw: socket.create_connection(("127.0.0.1", addr[1]), *a, **kw)
    return conn


def _conn(scheme, port, host, cafile, timeout):
    if scheme == "https":
        return _tls_conn(port, host, cafile, timeout)
    return http.client.HTTPConnection("127.0.0.1", int(port), timeout=timeout)


def _get(conn, host, keep):
    headers = {"Host": host}
    if not keep:
        headers["Connection"] = "close"
    conn.request("GET", "/version", headers=headers)
    r = conn.getresponse()
    return r.status, r.read().decode("utf-8", "replace").strip()


def tls_get(port, host, cafile):
    """The body of one verified HTTPS GET /version, empty on any failure."""
    conn = _tls_conn(port, host, cafile, 2)
    try:
        status, body = _get(conn, host, False)
        print(body if status == 200 else "")
    except Exception:
        print("")
    finally:
        conn.close()


def tls_wait(port, host, cafile, want, limit):
    """Exit 0 at the first verified HTTPS answer WANT for HOST, 1 after LIMIT seconds."""
    end = time.monotonic() + float(limit)
    while time.monotonic() < end:
        conn = _tls_conn(port, host, cafile, 2)
        try:
            status, body = _get(conn, host, False)
            if status == 200 and body == want:
                return
        except Exception:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    sys.exit(1)


# A request that fails on a kept connection before any answer came: the
# server closed it while idle (a config load does, for every idle
# connection). Clients (curl, browsers, urllib3) send such a request again
# on a new connection, as HTTP allows for GET; so does the loop, and counts it.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def tls_load(port, host, cafile, mode, out, stop_file, ready_file):
    """GET https://HOST:PORT/version (SNI HOST, to 127.0.0.1, verified
    against CAFILE) from TLS_LOAD_THREADS threads at TLS_LOAD_RATE requests/s
    until STOP_FILE exists. MODE new: a new TLS connection per request;
    keep: one kept connection per thread, opened again after a failure.
    Records as `load` does, plus `resent` for a GET sent again once on a new
    connection after its kept one was found closed."""
    keep = mode == "keep"
    period = TLS_LOAD_THREADS / TLS_LOAD_RATE
    records, lock = [], threading.Lock()
    stop, ready = threading.Event(), threading.Event()

    def worker(k):
        due = time.monotonic() + k * period / TLS_LOAD_THREADS
        conn, used = None, False
        while not stop.is_set():
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t0 = time.time()
            status, body, error, resent = None, "", None, False
            for attempt in (0, 1):
                if conn is None:
                    conn, used = _tls_conn(port, host, cafile, LOAD_TIMEOUT), False
                try:
                    status, body = _get(conn, host, keep)
                    error = None
                    used = True
                    if not keep:
                        conn.close()
                        conn = None
                    break
                except Exception as e:
                    error = f"{type(e).__name__}: {e}"[:120]
                    was_used = used
                    conn.close()
                    conn = None
                    if keep and was_used and attempt == 0 and isinstance(e, STALE):
                        resent = True
                        continue
                    break
            t1 = time.time()
            with lock:
                records.append({"t0": t0, "t1": t1, "status": status, "body": body[:64],
                                "error": error, "resent": resent})
            if status == 200 and not ready.is_set():
                ready.set()
                with open(ready_file, "w") as f:
                    f.write(f"{t1}\n")
            due = max(due + period, time.monotonic())
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(TLS_LOAD_THREADS)]
    for t in threads:
        t.start()
    while not os.path.exists(stop_file):
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join(LOAD_TIMEOUT * 2 + 1)
    with lock:
        done = sorted(records, key=lambda r: r["t0"])
    with open(out, "w") as f:
        for r in done:
            f.write(json.dumps(r) + "\n")


def latency(scheme, port, host, cafile, mode, samples):
    """SAMPLES sequential GET /version to the proxy for HOST over SCHEME
    (http or https), a new connection each (MODE new) or one kept
    connection (keep), after 5 not counted: median and 95th percentile in ms."""
    samples = int(samples)
    keep = mode == "keep"
    times = []
    conn = None
    for i in range(samples + 5):
        if conn is None:
            conn = _conn(scheme, port, host, cafile, 5)
        t0 = time.perf_counter()
        status, body = _get(conn, host, keep)
        dt = time.perf_counter() - t0
        if status != 200:
            sys.exit(f"{scheme} {host}: HTTP {status} {body}")
        if not keep:
            conn.close()
            conn = None
        if i >= 5:
            times.append(dt * 1000)
    if conn is not None:
        conn.close()
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)]
    print(json.dumps({"median_ms": round(statistics.median(times), 3), "p95_ms": round(p95, 3),
                      "samples": samples}))


P9_RELEASES = {
    "healthy": "a healthy `v2`",
    "crash": "exits 1 at start (`crash`)",
    "down": "answers `{\"status\":\"DOWN\"}` (`down`)",
    "flaky": "dies 4 s after its start, after its first UP and inside `stable_for` (`flaky`, `FLAKY_SECS=4`)",
}


def part9(w, m, n, rows, meta, targets):
    p9 = meta.get("p9") or {}
    w("## 9. HTTPS behind `[proxy]`: two apps on one proxy")
    w("")
    w("Two apps, **a** and **b**, on one proxy container of the bench's own (`[proxy] name`, "
      "`listen` and `tls_listen` on loopback ports, `app_port = 8080`, `drain = "
      f"\"{p9.get('drain', 'n/a')}\"`), each with its own `host` and `tls = \"acme\"` from a local "
      "ACME CA: a Caddy `acme_server` on the proxy's network, which reaches the proxy's port 80 for "
      "the HTTP challenge under the apps' names (network aliases, as public DNS would). Clients "
      "send the app's name as SNI to 127.0.0.1 and verify the certificate against the CA's root. "
      f"Health: `stable_for` {p9.get('stable_for', 'n/a')}, `deadline` {p9.get('deadline', 'n/a')}, "
      f"interval {meta['interval']}, probe timeout {p9.get('timeout', 'n/a')}. Measured with `"
      + meta["command"] + "` (this part alone: `scripts/bench --parts 9`).")
    w("")
    w("### Failed requests on both apps while a deploys")
    w("")
    w("Before each deploy **a** serves `v1` over HTTPS (deployed again when the case before left "
      "another release). Four load loops run from before the deploy until 1 s after it "
      "(`benchlib.py tls-load`, each 2 threads, 40 requests/s, `GET /version`, 1 s timeout, "
      "HTTP/1.1): on **a** and on **b**, one with a **new TLS connection** per request and one "
      "with **keep-alive** (a connection per thread, kept). A keep-alive GET that finds its "
      "connection closed by the proxy before any answer (a config load closes idle connections) "
      "is sent once more on a new connection, as curl, browsers and urllib3 do; *resent* counts "
      "those, and only a request without an answer after that is failed. Figures: failed of "
      "requests (median of the runs; in brackets the most of one run).")
    w("")
    w("| release deployed to a | exit | a, new connection | a, keep-alive | b, new connection | b, keep-alive | a resent | b resent | wall time | served on a | runs |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    lost, sent = 0, 0
    for rel in meta.get("p9_releases") or list(P9_RELEASES):
        if not [r for r in rows if r["part"] == 9 and r["case"] == rel and r["metric"] == "failed"]:
            w(f"| {rel} | n/a | | | | | | | | not measured | 0 |")
            continue
        exits = sorted({int(x) for x in texts(rows, 9, rel, "deploy", "exit_code")})
        cells = []
        for tool in ("a-new", "a-keep", "b-new", "b-keep"):
            vals = texts(rows, 9, rel, tool, "failed")
            lost += sum(vals)
            sent += sum(texts(rows, 9, rel, tool, "requests"))
            shown = f"{m(9, rel, tool, 'failed'):g} of {m(9, rel, tool, 'requests'):g}"
            if len(vals) > 1:
                shown += f" ({max(vals):g})"
            cells.append(shown)
        resent = []
        for app in ("a", "b"):
            rs = 0
            for path_rows in [r for r in rows if r["part"] == 9 and r["case"] == rel
                              and r["tool"] == f"{app}-keep" and r["metric"] == "resent"]:
                rs += path_rows["value"]
            resent.append(f"{rs:g}")
        served = texts(rows, 9, rel, "a-new", "served")
        w(f"| {rel} | {', '.join(map(str, exits))} | {' | '.join(cells)} | {' | '.join(resent)} | "
          f"{fmt_s(m(9, rel, 'deploy', 'wall_s'))} | {served[0] if served else 'n/a'} | "
          f"{n(9, rel, 'deploy', 'wall_s')} |")
    w("")
    w("The releases: " + "; ".join(f"**{k}** {v}" for k, v in P9_RELEASES.items()
                                    if k in (meta.get("p9_releases") or P9_RELEASES)) + ". "
      "Expected exits: 0 for healthy, 3 (rolled back) for the others. *Resent* is the sum over "
      "the runs.")
    w("")
    measured = bool([r for r in rows if r["part"] == 9 and r["metric"] == "failed"])
    targets.append(("HTTPS behind [proxy]: no request lost on either app while one deploys "
                    "(healthy, crash, DOWN, dies after its first UP)",
                    f"{lost:g} of {sent:g}" if measured else "n/a",
                    verdict(lost == 0 if measured else None)))

    w("### TLS at the proxy against plain HTTP")
    w("")
    w(f"App **a** on the same proxy, first served over plain HTTP (no `tls`, the same `host`), then "
      f"over HTTPS: {meta.get('p9_samples', 'n/a')} sequential `GET /version` from one client "
      "(`benchlib.py latency`, Python's `http.client`, after 5 not counted), each on a new "
      "connection, and all on one kept connection.")
    w("")
    w("| connection | plain HTTP median | HTTPS median | added by TLS | plain HTTP p95 | HTTPS p95 |")
    w("|---|---|---|---|---|---|")
    for mode, name in (("new", "a new one per request (TCP + TLS handshake)"), ("keep", "kept (keep-alive)")):
        hm, tm = m(9, "plain", f"http-{mode}", "median_ms"), m(9, "tls", f"https-{mode}", "median_ms")
        hp, tp = m(9, "plain", f"http-{mode}", "p95_ms"), m(9, "tls", f"https-{mode}", "p95_ms")
        def f(v):
            return "n/a" if v is None else f"{v:.2f} ms"
        added = "n/a" if hm is None or tm is None else f"{tm - hm:+.2f} ms"
        w(f"| {name} | {f(hm)} | {f(tm)} | {added} | {f(hp)} | {f(tp)} |")
    w("")

    w("### Certificates: first deploy against a redeploy")
    w("")
    w("From the start of `rollback deploy` to the first HTTPS answer of the release that verifies "
      "against the CA's root (*to HTTPS*), and the ACME requests the CA answered in that time "
      "(its access log; *orders*: `new-order` requests). **First deploy**: the app's first "
      "deploy with `tls` (a had been served over plain HTTP; b had none). **Redeploy**: a new "
      "release of a with the same setup, without load (*redeploy*) and the healthy deploys under "
      "load above (*under load*, CA requests summed over the runs).")
    w("")
    w("| deploy | deploy wall time | to HTTPS | CA requests | orders |")
    w("|---|---|---|---|---|")
    for case, name in (("first-a", "first, a (plain HTTP before)"), ("first-b", "first, b"),
                       ("redeploy-a", "redeploy, a")):
        if m(9, case, "deploy", "wall_s") is None:
            w(f"| {name} | n/a | n/a | n/a | n/a |")
            continue
        w(f"| {name} | {fmt_s(m(9, case, 'deploy', 'wall_s'))} | {fmt_s(m(9, case, 'deploy', 'https_s'))} | "
          f"{m(9, case, 'deploy', 'ca_requests'):g} | {m(9, case, 'deploy', 'ca_orders'):g} |")
    loaded = texts(rows, 9, "redeploy", "deploy", "ca_requests")
    orders = texts(rows, 9, "redeploy", "deploy", "ca_orders")
    if loaded:
        w(f"| redeploy under load, a ({len(loaded)} deploys) | {fmt_s(m(9, 'healthy', 'deploy', 'wall_s'))} | — | "
          f"{sum(loaded):g} | {sum(orders):g} |")
    w("")
    re_req = texts(rows, 9, "redeploy-a", "deploy", "ca_requests") + loaded
    targets.append(("HTTPS: no CA request on a redeploy", f"{sum(re_req):g}" if re_req else "n/a",
                    verdict(sum(re_req) == 0 if re_req else None)))

P10_RELEASES = {
    "healthy": "a healthy `v2`",
    "crash": "exits 1 at start",
    "down": "serves `{\"status\":\"DOWN\"}` with status 200",
}


def part10(w, m, n, rows, meta):
    p10 = meta.get("p10") or {}
    w("## 9. A Swarm service: `rollback` against `docker service update` under load")
    w("")
    w("A replicated service (2 replicas, `endpoint_mode: dnsrr`, no routing mesh) on the test "
      "swarm (engine C of `scripts/test-env`, a single node), running `v1`, is updated to each "
      "release twice, each time on a service of its own:")
    w("")
    w("- **rollback**: `rollback deploy --tag RELEASE` with `[swarm] replicas = 2, port = 8080` "
      "and `[health] path = \"/health\"`, `json_pointer = \"/status\"`, `expect = \"UP\"`, "
      f"`interval = \"{p10.get('interval', 'n/a')}\"`, `stable_for = \"{p10.get('stable_for', 'n/a')}\"`. "
      "It writes the update (start-first, `FailureAction: pause`), probes every new task "
      "directly, and on a failure updates the service back with `rollback=previous`.")
    w("- **swarm**: `docker service update --update-order start-first --update-failure-action "
      "rollback --image REPO:RELEASE@DIGEST SERVICE` (it waits for the update, or Swarm's own "
      "rollback, to converge). The service was created with the HEALTHCHECK `rollback` builds "
      f"from `[health]` (`{p10.get('health_cmd', 'n/a')}`, interval and timeout "
      f"{p10.get('interval', 'n/a')}, 1 retry, no start period: the same as rollback's tasks get), "
      f"`--update-monitor {p10.get('monitor', 'n/a')}` (as long as rollback's `stable_for`) and "
      "`--rollback-order start-first`. Without a HEALTHCHECK, Swarm would take the DOWN release "
      "as healthy.")
    w("")
    w("Users reach the service by its name, so the load loop runs on the service's overlay "
      "network: a client container (busybox) doing `wget http://SERVICE:8080/version` with a 1 s "
      "timeout, then 20 ms of sleep, one line per request stamped by the engine (`docker logs "
      "-t`); it starts before the update and stops 3 s after the command ends. Times count from "
      "**the update's start as Swarm records it** (the service's `UpdateStatus.StartedAt` when "
      "it turns `updating`, polled every ~0.25 s for both tools), so neither command's own "
      "start-up is in them; *start-up* is the time from the command's start to that moment.")
    w("")
    w("- **failed requests**: wget failures (refused, reset, timed out, no address) out of all "
      "requests of the window.")
    w("- **failure acted on**: `rollback`: its `rolling_back` event; Swarm: the first poll that "
      "saw `UpdateStatus` turn `rollback_started` (Swarm keeps the update's `StartedAt` then, "
      "so this is accurate to one poll).")
    w("- **Swarm done**: `UpdateStatus.CompletedAt` of the update that ended it, for both: for "
      "a failing release, Swarm's own rollback (`rollback_completed`) or rollback's "
      "`rollback=previous` (`completed`), the old spec's tasks running again; for the healthy "
      "one, the update (`completed`). For `rollback`, *verified* is its `rolled_back` event: "
      "the restored tasks probed and stable through `stable_for` (for the healthy release, "
      "`verified`).")
    w("- **only v1 again**: until every later answer is `v1`; — when no request ever failed or "
      "got another release.")
    w("- **exit**: of the command. Measured with `" + meta["command"] + "` (this part alone: "
      "`scripts/bench --parts 10`).")
    w("")
    w(f"This part's run: {meta.get('date', 'n/a')}, commit {meta.get('commit', 'n/a')}, "
      f"{meta.get('rollback', 'n/a')}, load average {meta.get('load', 'n/a')}; the swarm's "
      "engine is the test environment's engine C (the machine's Docker, a single node).")
    w("")
    w("| release | tool | exit | failed requests | start-up | failure acted on | Swarm done | verified | only v1 again | wall time | served | Swarm's UpdateStatus | runs: range |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rel in p10.get("releases") or list(P10_RELEASES):
        for tool in ("rollback", "swarm"):
            vals = [r["value"] for r in rows if r["part"] == 10 and r["case"] == rel
                    and r["tool"] == tool and r["metric"] == "failed"]
            if not vals:
                w(f"| {rel} | {tool} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | not measured | | 0 |")
                continue
            exits = sorted({int(x) for x in texts(rows, 9, rel, tool, "exit_code")})
            shown = f"{m(10, rel, tool, 'failed'):g} of {m(10, rel, tool, 'requests'):g}"
            if len(vals) > 1:
                shown += f" (max {max(vals):g})"
            served = texts(rows, 9, rel, tool, "served")
            states = texts(rows, 9, rel, tool, "swarm_states")
            dash = lambda k: "—" if m(10, rel, tool, k) is None else fmt_s(m(10, rel, tool, k))  # noqa: E731
            w(f"| {rel} | {tool} | {', '.join(map(str, exits))} | {shown} | {dash('start_lag_s')} | "
              f"{dash('detect_s')} | {dash('swarm_done_s')} | {dash('verified_s')} | "
              f"{dash('old_only_s')} | {fmt_s(m(10, rel, tool, 'wall_s'))} | "
              f"{served[0] if served else 'n/a'} | {states[0] if states else ''} | "
              f"{n(10, rel, tool, 'wall_s')} |")
    w("")
    w("The releases: " + "; ".join(f"**{k}** {v}" for k, v in P10_RELEASES.items()
                                   if k in (p10.get("releases") or P10_RELEASES)) + ". "
      "`rollback` must exit 0 for healthy and 3 (rolled back) for the others. *served* lists "
      "the releases that answered, in order of their first answer, in the first run (with the "
      "number of changes when old and new tasks answered in turn).")
    w("")
    w("What the figures say:")
    w("")
    w("- **No request is lost by either tool** here, and that is the HEALTHCHECK's doing, not "
      "the update order's: with `endpoint_mode: dnsrr` a task enters the service's DNS only "
      "once its HEALTHCHECK passed, so a release that crashes or answers DOWN never gets a "
      "request, and start-first keeps the old tasks until then. (Issue #19's measurement of a "
      "plain stop-first `docker service update` lost 340 requests on a healthy update.)")
    w("- **`docker service update` exits 0 after Swarm rolled back by itself**: a pipeline "
      "that trusts its exit code promotes a release that does not run. `rollback` exits 3.")
    w("- **The DOWN release is acted on only when Swarm kills its task.** `rollback` sees "
      "`\"status\":\"DOWN\"` at its first probe, about a second after the update began, but "
      "before a release's first healthy answer an unhealthy one is retried until the deadline "
      "(as on every host); what ends the wait is Swarm stopping the unhealthy task (exit 137), "
      "after the task's stop grace period (Swarm's default 10 s: `[container] stop_timeout` "
      "is not applied to a service, and the fixture's `httpd` ignores SIGTERM). Swarm's own "
      "rollback waits for a kill too; its range above shows whether it took the first one "
      "(about 14 s here) or only a later one.")
    w("- **During a healthy update both serve old and new in turn**: the DNS round robin "
      "lists old and new tasks until the last old one stops.")
    fours = [r for r in rows if r["part"] == 10 and r["tool"] == "rollback"
             and r["metric"] == "exit_code" and r["value"] == 4]
    if fours:
        w(f"- **`rollback` exited 4 in {len(fours)} run(s)** ({', '.join(sorted({r['case'] for r in fours}))}): "
          "see *Failures during this run* below.")
    w("")


def finish(w, L, rows, targets, out_path):
    # Counted by the registry tests, or measured apart (the install), not
    # timed here: the same text every run.
    for name in ("registry-requests.md", "install.md"):
        static = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
        with open(static) as f:
            for line in f.read().rstrip("\n").split("\n"):
                w(line)
        w("")
    w("## Targets")
    w("")
    w("| target | measured | |")
    w("|---|---|---|")
    for t in targets:
        w(f"| {t[0]} | {t[1]} | {t[2]} |")
    w("")
    failures = [r for r in rows if r["metric"] == "failure"]
    if failures:
        w("## Failures during this run")
        w("")
        for r in failures:
            w(f"- part {r['part']} {r['case']} {r['tool']}: {r['value']}")
        w("")
    with open(out_path, "w") as f:
        f.write("\n".join(L))


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "logcount":
        print(json.dumps(logcount(*args)))
    elif cmd == "push-index":
        push_index(*args)
    elif cmd == "digest":
        digest(*args)
    elif cmd == "delete-repo":
        delete_repo(*args)
    elif cmd == "proxy-figures":
        print(json.dumps(proxy_figures(*args)))
    elif cmd == "crash-timings":
        crash_timings(*args)
    elif cmd == "segments":
        segments(*args)
    elif cmd == "load":
        load(*args)
    elif cmd == "load-figures":
        print(json.dumps(load_figures(*args), ensure_ascii=False))
    elif cmd == "tls-load":
        tls_load(*args)
    elif cmd == "tls-wait":
        tls_wait(*args)
    elif cmd == "tls-get":
        tls_get(*args)
    elif cmd == "latency":
        latency(*args)
    elif cmd == "swarm-figures":
        print(json.dumps(swarm_figures(*args), ensure_ascii=False))
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
