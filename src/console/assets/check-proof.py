#!/usr/bin/env python3
"""Checks a purpose-gate inclusion proof without purpose-gate (Python 3 standard library).

Usage: python3 check-proof.py proof-N.json

1. Recomputes the RFC 6962 Merkle root from the record's line and the audit path and compares
   it with the root in the signed checkpoint note.
2. Writes the note's signed text (PROOF.note) and its Ed25519 signature (PROOF.sig), so that
   the signature can be checked with OpenSSL against the log's public key:
     openssl pkeyutl -verify -pubin -inkey audit-pubkey.pem -rawin -in PROOF.note -sigfile PROOF.sig
"""
import base64, hashlib, json, sys

def h(b): return hashlib.sha256(b).digest()

proof = json.load(open(sys.argv[1]))
line = proof["line"].encode()
index, size = proof["leaf_index"], proof["tree_size"]
if not (0 <= index < size) or json.loads(line)["seq"] != proof["seq"] or index != proof["seq"] - 1:
    sys.exit("FAILED: the proof's record, index and size do not fit together")
r = h(b"\x00" + line)
fn, sn = index, size - 1
for p in (base64.b64decode(x) for x in proof["audit_path"]):
    if sn == 0: sys.exit("FAILED: audit path too long")
    if fn & 1 or fn == sn:
        r = h(b"\x01" + p + r)
        if not fn & 1:
            while fn and not fn & 1: fn >>= 1; sn >>= 1
    else:
        r = h(b"\x01" + r + p)
    fn >>= 1; sn >>= 1
if sn != 0: sys.exit("FAILED: audit path too short")
note = proof["checkpoint"]
body, _, sigs = note.partition("\n\n")
origin, tree_size, root = body.split("\n")[:3]
if int(tree_size) != size: sys.exit("FAILED: the checkpoint is for another tree size")
if base64.b64decode(root) != r: sys.exit("FAILED: the Merkle root does not match the checkpoint")
sig_lines = [l for l in sigs.split("\n") if l.startswith("\u2014 " + origin + " ")]
if not sig_lines: sys.exit("FAILED: the checkpoint carries no signature of `" + origin + "`")
sig = base64.b64decode(sig_lines[0].split(" ")[2])[4:]
if len(sig) != 64: sys.exit("FAILED: the checkpoint's signature is not an Ed25519 signature")
open(sys.argv[1] + ".note", "wb").write((body + "\n").encode())
open(sys.argv[1] + ".sig", "wb").write(sig)
print(f"ok: record seq {proof['seq']} is in the tree of {size} records of `{origin}`; now check the signature with openssl")
