#!/usr/bin/env python3
"""Checks a dstack compose file of deploy/dstack/ (raw, as measured) and, when given, the
resolved form from `docker-compose config` after prelaunch.sh. Usage:
  check_compose.py VARIANT RAW.yaml [RESOLVED.yaml SECRET...]
Exits 1 with a message naming the failed check."""
import re
import sys

import yaml

variant, raw_path = sys.argv[1], sys.argv[2]
resolved_path = sys.argv[3] if len(sys.argv) > 3 else None
secrets = sys.argv[4:]
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


raw_text = open(raw_path).read()
raw = yaml.safe_load(raw_text)
services = raw.get("services", {})
expected = {"direct": {"kmsd"}, "light": {"kmsd", "helios"}, "datadog": {"kmsd", "datadog"}}[variant]
check(set(services) == expected, f"services {sorted(services)} != {sorted(expected)}")
raw_dump = yaml.safe_dump(raw)  # without comments
check("auth-api" not in raw_dump, "refers to an auth-api service")
check("8000" not in raw_dump, "uses port 8000")
for name, svc in services.items():
    # images by digest through a required variable, never a tag
    img = svc.get("image", "")
    check(re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", img) is not None,
          f"{name}: image {img!r} is not a required ${{VAR:?...}} variable")
    check(svc.get("restart") == "always", f"{name}: restart policy is not 'always'")
    for part in ("command", "entrypoint"):
        text = " ".join(svc.get(part) or []) if isinstance(svc.get(part), list) else str(svc.get(part) or "")
        for bad in ("EXECUTION_RPC", "DD_API_KEY", "KMSD_ETH_RPC", "api_key", "apikey"):
            check(bad not in text, f"{name}: {part} mentions {bad} (secrets never go to argv)")
    env = svc.get("environment") or {}
    for k, v in (env.items() if isinstance(env, dict) else []):
        check(not ("RPC" in k and "${" in str(v)), f"{name}: secret {k} interpolated into the measured compose")
kmsd = services["kmsd"]
check("12001:12001" in [str(p).split(" ")[0] for p in kmsd.get("ports", [])], "kmsd does not publish 12001")
check(any(str(v).startswith("kms-data:/var/lib/kmsd") for v in kmsd.get("volumes", [])),
      "kmsd data volume kms-data:/var/lib/kmsd missing")
check("kms-data" in (raw.get("volumes") or {}), "named volume kms-data not declared")
check((kmsd.get("environment") or {}).get("KMSD_LISTEN") == "0.0.0.0:12001", "kmsd does not listen on 12001")
cmd = kmsd.get("command", [])
check("--auth=eth" in cmd, "kmsd not in --auth eth")
if variant == "light":
    h = services["helios"]
    check("18545:18545" in [str(p) for p in h.get("ports", [])], "helios does not publish 18545")
    check("--eth-rpc=http://helios:18545" in cmd, "kmsd does not ask helios")
    check(any("env_file" in h and "kmsd.env" in f for f in h["env_file"]), "helios gets no EXECUTION_RPC env file")
else:
    check(not any(c.startswith("--eth-rpc") for c in cmd), "direct RPC URL on kmsd's argv")
    check(any("kmsd.env" in f for f in kmsd.get("env_file", [])), "kmsd gets no secrets env file")
if variant == "datadog":
    labels = kmsd.get("labels", {})
    import json
    checks = json.loads(labels.get("com.datadoghq.ad.checks", "{}"))
    inst = checks.get("openmetrics", {}).get("instances", [{}])[0]
    check(inst.get("namespace") == "", "openmetrics namespace is not \"\"")
    check(inst.get("openmetrics_endpoint", "").endswith(":12001/metrics"), "openmetrics endpoint is not :12001/metrics")
    logs = json.loads(labels.get("com.datadoghq.ad.logs", "[]"))
    check(logs and logs[0].get("service") == "dstack-kms", "logs not tagged service:dstack-kms")
    check(any("datadog.env" in f for f in services["datadog"].get("env_file", [])), "agent gets no DD_API_KEY env file")
    check("DD_API_KEY" not in (services["datadog"].get("environment") or {}), "DD_API_KEY in the measured compose")

if resolved_path:
    res = yaml.safe_load(open(resolved_path))
    for name, svc in res["services"].items():
        check(re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", svc.get("image", "")) is not None,
              f"resolved {name}: image {svc.get('image')!r} not pinned by digest")
        for part in ("command", "entrypoint"):
            text = yaml.safe_dump(svc.get(part))
            for s in secrets:
                check(s not in text, f"resolved {name}: a secret is on the {part}")
    for s in secrets:
        check(s not in raw_text, "a secret is in the measured compose")
    # the secrets reach the containers' environment
    env_all = yaml.safe_dump({n: s.get("environment") for n, s in res["services"].items()})
    for s in secrets:
        check(s in env_all, "a secret does not reach any container's environment")

if errors:
    print(f"{raw_path}: " + "; ".join(errors))
    sys.exit(1)
print(f"{raw_path}: ok")
