#!/usr/bin/env python3
"""Helper of benches/load (python3 standard library only).

  load-helper.py keys OUT_DIR N PREFIX SEED
      N keygate keys in the exact format keygate checks (src/key/): `<prefix>_<32 base62>`
      + 6 base62 digits of CRC32 (IEEE) over `<prefix>_<random>`, most significant first.
      Deterministic for a SEED (benchmark keys, not secrets). Writes into OUT_DIR:
        keys.txt          one key a line (the first is the benchmark key)
        keys.jsonl        `keygate keys import` lines: hashed records (sha256 hex), never secrets
        keys-limited.jsonl  the same keys with a rate limit (1000000/s) and a quota (2^53)
                          that the load never reaches: what counting them costs
        keys.nginx.map    nginx map entries       "Bearer <key>" 1;
        keys.nginx.id.map   (nginx-same)          "Bearer <key>" "<key id>";
        keys.nginx.F.map    other identity fields "<key id>" "<value>";
        keys.haproxy.id.map, keys.haproxy.F.map   the same for haproxy-same
        keys.haproxy.map  haproxy map_str file    <key> 1
        unknown.txt       one well-formed key that is not in the set (expects 401 unknown_key)
  load-helper.py summary RESULTS_DIR MODE PEER...
      Reads RESULTS_DIR/<peer>.r<N>.txt (wrk output + cpu lines) and, when present,
      <peer>.r<N>.metrics.before/.after (keygate /metrics text); prints the table and
      writes RESULTS_DIR/runs.csv. MODE is `hit` or `miss`.
"""
import glob
import hashlib
import json
import os
import random
import re
import statistics
import sys
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LEN, CHECKSUM_LEN, ID_RANDOM_LEN = 32, 6, 16


def b62_u32(n):
    """src/key/base62.rs encode_u32_padded: 6 digits, most significant first."""
    out = []
    for _ in range(CHECKSUM_LEN):
        out.append(ALPHABET[n % 62])
        n //= 62
    return "".join(reversed(out))


def make_key(prefix, rng):
    head = prefix + "_" + "".join(rng.choice(ALPHABET) for _ in range(RANDOM_LEN))
    return head + b62_u32(zlib.crc32(head.encode()) & 0xFFFFFFFF)


def check_key(prefix, key):
    """src/key/mod.rs KeyFormat::check, for a self-test of what we generate."""
    if len(key) != len(prefix) + 1 + RANDOM_LEN + CHECKSUM_LEN or not key.startswith(prefix + "_"):
        return False
    body = key[len(prefix) + 1:]
    if not all(c in ALPHABET for c in body):
        return False
    split = len(key) - CHECKSUM_LEN
    n = 0
    for c in key[split:]:
        n = n * 62 + ALPHABET.index(c)
    return n == zlib.crc32(key[:split].encode()) & 0xFFFFFFFF


def cmd_keys(out, n, prefix, seed):
    n = int(n)
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    keys, seen, ids = [], set(), set()
    while len(keys) < n + 1:  # one more: the unknown key
        k = make_key(prefix, rng)
        if k not in seen:
            seen.add(k)
            keys.append(k)
    unknown = keys.pop()
    assert all(check_key(prefix, k) for k in keys + [unknown])
    # CRC32 reference value (zlib.crc32 is IEEE, like crc32fast): a typo must not pass.
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert not check_key(prefix, keys[0][:-1] + ("0" if keys[0][-1] != "0" else "1"))
    now_ms = 1_700_000_000_000
    with open(os.path.join(out, "keys.txt"), "w") as f:
        f.write("\n".join(keys) + "\n")
    with open(os.path.join(out, "unknown.txt"), "w") as f:
        f.write(unknown + "\n")
    with open(os.path.join(out, "keys.jsonl"), "w") as f, \
            open(os.path.join(out, "keys-limited.jsonl"), "w") as limited:
        for i, k in enumerate(keys):
            while True:
                kid = "key_" + "".join(rng.choice(ALPHABET) for _ in range(ID_RANDOM_LEN))
                if kid not in ids:
                    ids.add(kid)
                    break
            # Every field of src/service/transfer.rs ExportedKey (deny_unknown_fields).
            rec = {
                "kind": "key",
                "id": kid,
                "sha256": hashlib.sha256(k.encode()).hexdigest(),
                "name": f"load-{i}",
                "org": "bench",
                "workspaces": ["*"],
                "type": "service",
                "owner": None,
                "roles": ["reader"],
                "inherit": False,
                "permissions": ["bench:read"],
                "expires_at": None,
                "metadata": {},
                "rate_limit": None,
                "state": "active",
                "created_at": now_ms,
                "created_by": "benches/load",
                "last_used_at": None,
                "revoked_at": None,
                "rotated_to": None,
            }
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            # The same key with a rate limit and a quota that the load never reaches
            # (keygate-limits, kg-redis-limits): what counting them costs.
            limited.write(json.dumps(dict(rec, rate_limit="1000000/s", quota=str(2**53)),
                                     separators=(",", ":")) + "\n")
    with open(os.path.join(out, "keys.nginx.map"), "w") as f:
        for k in keys:
            f.write(f'"Bearer {k}" 1;\n')
    # nginx-same / haproxy-same: the key's id by key, then one map per other identity
    # header by key id (a short lookup key), with the values keygate sends for the key
    # (src/auth.rs Identity::of: a service key's actor is its name; an org key, workspaces
    # ["*"], sends no workspace header).
    with open(os.path.join(out, "keys.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    fields = {
        "id": lambda r: r["id"],
        "name": lambda r: r["name"],
        "org": lambda r: r["org"],
        "type": lambda r: r["type"],
        "actor": lambda r: r["name"],
        "permissions": lambda r: ",".join(sorted(r["permissions"])),
    }
    with open(os.path.join(out, "keys.nginx.id.map"), "w") as f:
        for k, r in zip(keys, recs):
            f.write(f'"Bearer {k}" "{r["id"]}";\n')
    with open(os.path.join(out, "keys.haproxy.id.map"), "w") as f:
        for k, r in zip(keys, recs):
            f.write(f"{k} {r['id']}\n")
    for field, value in fields.items():
        if field == "id":
            continue
        with open(os.path.join(out, f"keys.nginx.{field}.map"), "w") as f:
            for r in recs:
                f.write(f'"{r["id"]}" "{value(r)}";\n')
        with open(os.path.join(out, f"keys.haproxy.{field}.map"), "w") as f:
            for r in recs:
                f.write(f"{r['id']} {value(r)}\n")
    with open(os.path.join(out, "keys.haproxy.map"), "w") as f:
        for k in keys:
            f.write(f"{k} 1\n")
    print(f"wrote {len(keys)} keys (+1 unknown) to {out}", file=sys.stderr)


# ---- summary ---------------------------------------------------------------------------
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def lat_ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", s.strip())
    if not m:
        return float("nan")
    if m.group(2) == "m":
        return float(m.group(1)) * 60e3
    return float(m.group(1)) * UNIT[m.group(2)]


def parse_wrk(path):
    txt = open(path).read()
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    r["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", txt)
    r["requests"] = int(m.group(1)) if m else 0
    r["secs"] = lat_ms(m.group(2) + m.group(3)) / 1e3 if m else float("nan")
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+(\S+)" % pct, txt, re.M)
        r["p" + pct] = lat_ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", txt)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    r["errors"] = sum(map(int, m.groups())) if m else 0
    r["cpu"] = "/".join(re.findall(r"^cpu\d+-busy%: (\d+)", txt, re.M))
    # The peer's CPU time per request, user and system (µs), from /proc/PID/stat.
    r["user_us"] = r["sys_us"] = None
    m = re.search(r"^peer-ticks: (\d+) (\d+) (\d+)", txt, re.M)
    if m and r["requests"]:
        hz = int(m.group(3))
        r["user_us"] = int(m.group(1)) * 1e6 / hz / r["requests"]
        r["sys_us"] = int(m.group(2)) * 1e6 / hz / r["requests"]
    return r


def parse_metrics(path):
    """Unlabelled samples of an OpenMetrics text, plus requests_total summed by code."""
    out = {}
    if not os.path.exists(path):
        return None
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        name, _, rest = line.partition(" ")
        try:
            v = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        if "{" in name:
            base, labels = name.split("{", 1)
            if base == "keygate_requests_total":
                m = re.search(r'code="([^"]*)"', labels)
                if m:
                    k = "code:" + m.group(1)
                    out[k] = out.get(k, 0) + v
            continue
        out[name] = v
    return out


def metric(d, name):
    """A counter by its base name: `keygate_x_total` (OpenMetrics) or `keygate_x`."""
    for n in (name + "_total", name):
        if n in d:
            return d[n]
    return None


def med(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else None


def fmt(x, spec, dash="-"):
    return dash if x is None else format(x, spec)


def cmd_summary(d, mode, *peers):
    rows, medians = [], {}
    csv = open(os.path.join(d, "runs.csv"), "w")
    csv.write("peer,round,rps,p50_ms,p99_ms,non2xx,socket_errors,cpu_busy_loadgen/peer,"
              "store_lookups_per_s,store_lookups_per_req,cache_hit_pct,bad_codes,"
              "peer_user_us_per_req,peer_sys_us_per_req\n")
    for p in peers:
        files = sorted(glob.glob(os.path.join(d, f"{p}.r*.txt")),
                       key=lambda f: int(re.search(r"\.r(\d+)\.txt$", f).group(1)))
        if not files:
            continue
        runs = []
        for f in files:
            r = parse_wrk(f)
            base = f[:-len(".txt")]
            before = parse_metrics(base + ".metrics.before")
            after = parse_metrics(base + ".metrics.after")
            r["lps"] = r["lpr"] = r["hit"] = None
            r["bad"] = ""
            if before is not None and after is not None:
                lb, la = metric(before, "keygate_store_lookups"), metric(after, "keygate_store_lookups")
                if lb is not None and la is not None and r["secs"] == r["secs"]:
                    r["lps"] = (la - lb) / r["secs"]
                    r["lpr"] = (la - lb) / r["requests"] if r["requests"] else None
                hb, ha = metric(before, "keygate_cache_hits"), metric(after, "keygate_cache_hits")
                mb, ma = metric(before, "keygate_cache_misses"), metric(after, "keygate_cache_misses")
                if None not in (hb, ha, mb, ma) and (ha - hb) + (ma - mb) > 0:
                    r["hit"] = 100.0 * (ha - hb) / ((ha - hb) + (ma - mb))
                bad = {k[5:]: after.get(k, 0) - before.get(k, 0)
                       for k in after if k.startswith("code:") and k != "code:ok"}
                r["bad"] = " ".join(f"{k}={v:.0f}" for k, v in sorted(bad.items()) if v)
            rnd = re.search(r"\.r(\d+)\.txt$", f).group(1)
            csv.write(f"{p},{rnd},{r['rps']:.0f},{r['p50']:.3f},{r['p99']:.3f},{r['non2xx']},"
                      f"{r['errors']},{r['cpu']},{fmt(r['lps'], '.0f', '')},"
                      f"{fmt(r['lpr'], '.3f', '')},{fmt(r['hit'], '.1f', '')},{r['bad']},"
                      f"{fmt(r['user_us'], '.2f', '')},{fmt(r['sys_us'], '.2f', '')}\n")
            runs.append(r)
        rps = [r["rps"] for r in runs]
        m = statistics.median(rps)
        medians[p] = m
        rows.append(dict(peer=p, n=len(runs), med=m, lo=min(rps), hi=max(rps),
                         p50=med(r["p50"] for r in runs), p99=med(r["p99"] for r in runs),
                         non2xx=sum(r["non2xx"] for r in runs), err=sum(r["errors"] for r in runs),
                         cpu=" ".join(r["cpu"] for r in runs),
                         lps=med(r["lps"] for r in runs), lpr=med(r["lpr"] for r in runs),
                         hit=med(r["hit"] for r in runs),
                         user=med(r["user_us"] for r in runs), sys=med(r["sys_us"] for r in runs),
                         bad="; ".join(r["bad"] for r in runs if r["bad"])))
    csv.close()
    if mode == "miss":
        base_name = "kg-hit" if "kg-hit" in medians else None
    else:
        base_name = next((b for b in ("nginx-plain", "keygate-auth") if b in medians), None)
    base = medians.get(base_name)
    col = f"/{base_name}" if base_name else "/-"
    if mode == "miss":
        hdr = (f"{'peer':<18}{'n':>2} {'req/s med':>10} {'min..max':>17} {'p50 ms':>7} {'p99 ms':>7} "
               f"{col:>8} {'lookups/s':>10} {'lkp/req':>8} {'hit%':>6} {'usr µs':>7} {'sys µs':>7} "
               f"{'non2xx':>7} {'err':>4}  cpu% wrk/peer")
    else:
        hdr = (f"{'peer':<18}{'n':>2} {'req/s med':>10} {'min..max':>17} {'p50 ms':>7} {'p99 ms':>7} "
               f"{col:>13} {'usr µs':>7} {'sys µs':>7} {'non2xx':>7} {'err':>4}  cpu% wrk/peer per run")
    print(hdr)
    for r in rows:
        ratio = f"{r['med'] / base:.2f}" if base else "-"
        line = (f"{r['peer']:<18}{r['n']:>2} {r['med']:>10.0f} {r['lo']:>8.0f}..{r['hi']:<7.0f} "
                f"{fmt(r['p50'], '7.3f'):>7} {fmt(r['p99'], '7.3f'):>7} ")
        if mode == "miss":
            line += (f"{ratio:>8} {fmt(r['lps'], '10.0f'):>10} {fmt(r['lpr'], '8.3f'):>8} "
                     f"{fmt(r['hit'], '6.1f'):>6} {fmt(r['user'], '7.2f'):>7} {fmt(r['sys'], '7.2f'):>7} ")
        else:
            line += f"{ratio:>13} {fmt(r['user'], '7.2f'):>7} {fmt(r['sys'], '7.2f'):>7} "
        line += f"{r['non2xx']:>7} {r['err']:>4}  {r['cpu']}"
        print(line)
    if mode != "miss" and "keygate-auth" in medians and "keygate-none" in medians:
        a, n = medians["keygate-auth"], medians["keygate-none"]
        print(f"keygate auth/none: {a / n:.3f} (req/s with key auth over req/s with auth: none)")
        for k in ("nginx-key", "haproxy-key"):
            plain = k.replace("-key", "-plain")
            if k in medians and plain in medians:
                print(f"{k.split('-')[0]} key/plain: {medians[k] / medians[plain]:.3f}")
    for peer in ("nginx-same", "haproxy-same"):
        if mode != "miss" and "keygate-auth" in medians and peer in medians:
            same = medians["keygate-auth"] / medians[peer]
            print(f"keygate-auth/{peer}: {same:.3f} (the same job: key check, identity, forwarding)")
    if mode != "miss" and "hyper-floor" in medians:
        f = medians["hyper-floor"]
        for k in ("keygate-auth", "keygate-none"):
            if k in medians:
                print(f"{k}/hyper-floor: {medians[k] / f:.3f} (what keygate's own work costs)")
    bad = [r for r in rows if r["non2xx"] or r["err"]]
    for r in rows:
        if r["bad"]:
            print(f"{r['peer']}: refusals seen in /metrics: {r['bad']}")
    if bad:
        print("WARNING: non-2xx responses or socket errors in: "
              + ", ".join(r["peer"] for r in bad) + " (those numbers are not comparable)")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("keys", "summary"):
        sys.exit(__doc__)
    if sys.argv[1] == "keys":
        cmd_keys(*sys.argv[2:6])
    else:
        cmd_summary(*sys.argv[2:])


if __name__ == "__main__":
    main()
