#!/usr/bin/env python3
"""Abusive clients for benches/abuse.sh: each kind of hostile request from issue 11, in a loop,
against a server on loopback, until a deadline. Standard library only.

    abuse.py HOST PORT SECONDS

Prints one line per kind: how many were sent and which statuses came back (or how the connection
ended). Every loop is bounded by the deadline, and every socket has a timeout, so the script stops
by itself.
"""

import collections
import json
import socket
import sys
import threading
import time

HOST, PORT, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
DEADLINE = time.monotonic() + SECONDS
RESULTS = collections.defaultdict(collections.Counter)
LOCK = threading.Lock()


def record(kind, outcome):
    with LOCK:
        RESULTS[kind][outcome] += 1


def alive():
    return time.monotonic() < DEADLINE


def request(method, path, body=b"", headers=None, timeout=35.0):
    """One request on a fresh connection; returns the status (or what went wrong) and the body size."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{PORT}", "Connection: close"]
    for k, v in (headers or {}).items():
        head.append(f"{k}: {v}")
    if body:
        head.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    try:
        with socket.create_connection((HOST, PORT), timeout=timeout) as s:
            s.sendall(raw)
            size, first = 0, b""
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                if not first:
                    first = chunk[:64]
                size += len(chunk)
        if not first:
            return "closed", 0
        return first.split(b" ", 2)[1].decode("latin-1"), size
    except socket.timeout:
        return "timeout", 0
    except OSError as e:
        return type(e).__name__, 0


def loop(kind, make):
    while alive():
        method, path, body, headers = make()
        status, _ = request(method, path, body, headers)
        record(kind, status)


XML = {"Content-Type": "application/fhir+xml"}
JSON = {"Content-Type": "application/fhir+json"}


def deep_xml():
    body = '<Parameters xmlns="http://hl7.org/fhir">' + "<a>" * 1500
    return "POST", "/fhir/CodeSystem/$lookup", body.encode(), XML


def many_attributes():
    attrs = " ".join(f'a{i}="1"' for i in range(80_000))
    body = f'<Parameters xmlns="http://hl7.org/fhir" {attrs}></Parameters>'
    return "POST", "/fhir/CodeSystem/$lookup", body.encode(), XML


def namespaces():
    decls = " ".join(f'xmlns:n{i}="urn:x:{i}"' for i in range(50_000))
    body = f'<Parameters xmlns="http://hl7.org/fhir" {decls}></Parameters>'
    return "POST", "/fhir/CodeSystem/$lookup", body.encode(), XML


def big_batch():
    entry = {"request": {"method": "GET", "url": "ValueSet/postcodes-all/$expand?count=50000"}}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry] * 40}
    return "POST", "/fhir", json.dumps(bundle).encode(), JSON


def long_filter():
    return "GET", "/fhir/ValueSet/postcodes-all/$expand?filter=" + "t+" * 100_000, b"", None


def chain_is_a():
    n = 20_000
    concepts = [{"code": "c0", "display": "c0"}]
    concepts += [
        {"code": f"c{i}", "display": f"c{i}", "property": [{"code": "parent", "valueCode": f"c{i - 1}"}]}
        for i in range(1, n + 1)
    ]
    cs = {
        "resourceType": "CodeSystem", "url": "urn:abuse:chain", "version": "1", "status": "active",
        "content": "complete", "hierarchyMeaning": "is-a",
        "property": [{"code": "parent", "uri": "http://hl7.org/fhir/concept-properties#parent", "type": "code"}],
        "concept": concepts,
    }
    vs = {
        "resourceType": "ValueSet", "status": "active",
        "compose": {"include": [{"system": "urn:abuse:chain", "filter": [{"property": "concept", "op": "is-a", "value": "c0"}]}]},
    }
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "valueSet", "resource": vs}, {"name": "tx-resource", "resource": cs}, {"name": "count", "valueInteger": 10}]}
    body = json.dumps(params).encode()
    return lambda: ("POST", "/fhir/ValueSet/$expand", body, JSON)


def cache_start():
    return "GET", "/fhir/$cache-control?mode=start", b"", None


def long_url():
    return "GET", "/fhir/CodeSystem/$lookup?code=" + "x" * 100_000, b"", None


def big_headers():
    return "GET", "/fhir/metadata", b"", {f"X-H{i}": "v" * 100 for i in range(2_000)}


def bad_bytes():
    return "GET", "/fhir/CodeSystem/%FF\x7f", b"", None


def slow_headers(connections):
    """Connections that send their headers one byte a second: the server must close them."""
    socks = []
    for _ in range(connections):
        try:
            s = socket.create_connection((HOST, PORT), timeout=2)
            s.sendall(b"G")
            socks.append(s)
        except OSError as e:
            record("slow headers", type(e).__name__)
    while alive() and socks:
        time.sleep(1)
        for s in list(socks):
            try:
                s.sendall(b"E")
            except OSError:
                record("slow headers", "closed by server")
                socks.remove(s)
    for s in socks:
        record("slow headers", "still open at the end")
        s.close()


def idle(connections):
    """Idle keep-alive connections after one request: the server must close them."""
    socks = []
    for _ in range(connections):
        try:
            s = socket.create_connection((HOST, PORT), timeout=2)
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            s.recv(4096)
            socks.append(s)
        except OSError as e:
            record("idle keep-alive", type(e).__name__)
    while alive() and socks:
        time.sleep(1)
        for s in list(socks):
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    record("idle keep-alive", "closed by server")
                    socks.remove(s)
            except BlockingIOError:
                pass
            except OSError:
                record("idle keep-alive", "closed by server")
                socks.remove(s)
    for s in socks:
        record("idle keep-alive", "still open at the end")
        s.close()


KINDS = [
    ("deep XML (1,500 levels)", deep_xml),
    ("XML, 80,000 attributes", many_attributes),
    ("XML, 50,000 namespace declarations", namespaces),
    ("batch of 40 × $expand count=50000", big_batch),
    ("$expand filter of 100,000 words", long_filter),
    ("is-a over a 20,000-deep supplied chain", chain_is_a()),
    ("$cache-control mode=start", cache_start),
    ("100 KB URL", long_url),
    ("2,000 headers", big_headers),
    ("bad path bytes", bad_bytes),
]

threads = [threading.Thread(target=loop, args=k, daemon=True) for k in KINDS]
threads.append(threading.Thread(target=slow_headers, args=(200,), daemon=True))
threads.append(threading.Thread(target=idle, args=(1000,), daemon=True))
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=max(0.0, DEADLINE - time.monotonic()) + 40)

print("| abusive request | sent | answers |")
print("|---|---|---|")
for kind in [k for k, _ in KINDS] + ["slow headers", "idle keep-alive"]:
    c = RESULTS.get(kind, collections.Counter())
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))
    print(f"| {kind} | {sum(c.values())} | {answers} |")
