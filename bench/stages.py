#!/usr/bin/env python3
"""Instructions per request by stage, from a callgrind profile (bench/cost.sh).

    stages.py FILE.cg COUNT

Reads the callgrind file and prints, per stage, the inclusive instructions (its own plus its
callees', recursive calls counted once) of the function(s) of that stage divided by COUNT. A
function is the machine function: code inlined into it from serde_json is counted with it. A stage whose code is inlined into its caller
(authentication and forwarding are async functions inlined into `Gate::process`) is counted as
the part of the caller that comes from the stage's source file.
"""
import re
import sys

# label, kind, pattern: kind `fn` sums every line whose function matches the pattern exactly;
# kind `at` takes lines `<file matching the first pattern>:<function matching the second>`.
STAGES = [
    ("connection task (hyper server + gate)", "fn", r"purpose_gate::listener::serve::\{\{closure\}\}::\{\{closure\}\}"),
    ("gate request path (Gate::process)", "fn", r"purpose_gate::gate::Gate::process::\{\{closure\}\}"),
    ("route match", "fn", r"purpose_gate::routes::RouteTable::resolve_request"),
    ("authenticate (JWT, token cache)", "at", (r".*/src/auth/.*", r"purpose_gate::gate::Gate::process::\{\{closure\}\}")),
    ("  of which token cache key (SHA-256)", "fn", r"purpose_gate::auth::cache::token_hash"),
    ("purpose headers", "fn", r"purpose_gate::purpose::parse_purpose"),
    ("request body / subjects (registry plug-in)", "fn", r"<purpose_gate::registry::.* as purpose_gate::registry::Registry>::subjects"),
    ("Cedar decisions (crates/policy), request and release", "fn", r"purpose_gate_policy::PolicyEngine::(decide|decide_in|request_base)"),
    ("  of which the request base (entities, context; once)", "fn", r"purpose_gate_policy::PolicyEngine::request_base"),
    ("  of which Cedar's evaluator (prepared policies)", "fn", r"purpose_gate_policy::compiled::Compiled::evaluate"),
    ("  release stage (one decision per person in the answer)", "fn", r"purpose_gate::gate::Gate::release"),
    ("audit record building", "fn", r"purpose_gate::gate::Gate::record"),
    ("audit append (encode, frame + hash chain, wait)", "fn", r"purpose_gate::gate::Gate::append::\{\{closure\}\}"),
    ("audit sequencer thread (frame, hash chain)", "fn", r"purpose_gate_audit::writer::sequence"),
    ("audit sync thread (write, fdatasync)", "fn", r"purpose_gate_audit::writer::Syncer::run"),
    ("forward (inner service: upstream client)", "fn", r"purpose_gate::gate::Gate::call_inner::\{\{closure\}\}"),
    ("answer read (registry plug-in)", "fn", r"<purpose_gate::registry::.* as purpose_gate::registry::Registry>::read"),
    ("answer cut down and minimised", "fn", r"purpose_gate::response::Answer::release_body"),
    ("store shipper (columns, COPY; with [store])", "fn", r"purpose_gate::store::ship::Shipper::run::\{\{closure\}\}"),
    ("  of which the columns of each line (scan or one pass, where not inlined)", "fn", r"purpose_gate::store::ship::(ShipLine::(new|hashed|framed|from_hot)|scan_framed)"),
    ("  of which lines read back from the segments", "fn", r"purpose_gate::store::ship::LocalTail::.*"),
    ("  of which SHA-256 of lines read back", "fn", r"purpose_gate::store::ship::line_hash"),
    ("store connection (tokio-postgres; with [store])", "fn", r"<tokio_postgres::connection::Connection<.*> as core::future::future::Future>::poll"),
    ("metrics", "fn", r"purpose_gate::metrics::.*"),
    ("tracing span per request", "fn", r"tracing::span::Span::new"),
]

def profile(path):
    """(total, {(function, file): inclusive}) from a callgrind file (names compressed or not)."""
    names = {}

    def name(v):
        m = re.match(r"\((\d+)\)(?: (.*))?$", v)
        if not m:
            return v
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), v)

    files = {}

    def file_name(v):
        m = re.match(r"\((\d+)\)(?: (.*))?$", v)
        if not m:
            return v
        if m.group(2) is not None:
            files[m.group(1)] = m.group(2)
        return files.get(m.group(1), v)

    incl = {}
    total = 0
    fn = fl = cur = cfn = None
    in_call = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if in_call:
                    in_call = False
                    if cfn == fn:  # a recursive call is already inside the caller's cost
                        continue
                key = (fn, cur)
                incl[key] = incl.get(key, 0) + cost
                continue
            k, _, v = line.partition("=")
            if k == "fl":
                fl = cur = file_name(v)
            elif k in ("fi", "fe"):
                cur = file_name(v)
            elif k == "fn":
                fn = name(v)
                cur = fl
            elif k == "cfn":
                cfn = name(v)
            elif k in ("cfi", "cfl"):
                file_name(v)
            elif k == "calls":
                in_call = True
            elif line.startswith("totals:"):
                total = int(line.split()[1])
    return total, incl


def main() -> int:
    path, count = sys.argv[1], int(sys.argv[2])
    total, incl = profile(path)
    rows = [(c, f or "", fn or "") for (fn, f), c in incl.items()]
    for label, kind, pattern in STAGES:
        if kind == "fn":
            rx = re.compile(pattern)
            v = sum(c for c, _, fn in rows if rx.fullmatch(fn))
        else:
            frx, fnrx = re.compile(pattern[0]), re.compile(pattern[1])
            v = sum(c for c, f, fn in rows if frx.fullmatch(f) and fnrx.fullmatch(fn))
        pct = 100 * v / total if total else 0
        print(f"    {label:<42} {v / count:9.0f}  {pct:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
