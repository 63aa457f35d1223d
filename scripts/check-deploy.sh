#!/usr/bin/env bash
# Static checks of the deployment files (Dockerfile, deploy/docker-compose.yml, deploy/compose/,
# deploy/alertmanager/, deploy/k8s/, deploy/systemd/). Builds no image, starts no container and
# needs no cluster; checks whose tool is missing are skipped with a message. See docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."

skipped=()
step() { printf '==> %s\n' "$*"; }
skip() { printf 'SKIP: %s\n' "$*"; skipped+=("$*"); }
have() { command -v "$1" >/dev/null 2>&1; }

step "Dockerfile and .dockerignore"
grep -q '^FROM rust:1-bookworm AS builder' Dockerfile
grep -q '^FROM debian:bookworm-slim' Dockerfile
grep -q '^EXPOSE 9898' Dockerfile
grep -q '^USER ' Dockerfile
grep -q '^ENTRYPOINT \["salespulse"\]' Dockerfile
grep -qx 'target/' .dockerignore
# The crate manifests name test and bench targets under tests/ and benches/: they must be in the context.
if grep -Eqx '/?(tests|benches)/?' .dockerignore; then
  echo "FAIL: .dockerignore excludes tests/ or benches/, which cargo needs to load the workspace" >&2
  exit 1
fi

step "amtool check-config deploy/alertmanager/alertmanager.yml"
if have amtool; then
  amtool check-config deploy/alertmanager/alertmanager.yml
  # Routing of the labels deploy/prometheus/alerts.yml sets.
  route() {
    local want=$1; shift
    local got
    got=$(amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml "$@" 2>/dev/null)
    if [[ $got != "$want" ]]; then
      echo "FAIL: route for $* is '$got', want '$want'" >&2
      exit 1
    fi
  }
  route operator-page alertname=SalespulseScrapeDown severity=page audience=operator
  route operator-ticket alertname=SalespulseKafkaErrors severity=ticket audience=operator
  route sales-page alertname=SalespulseClientsWaitingTooLong severity=page audience=sales manager=m team=t
  route sales-ticket alertname=SalespulseTasksOverdue severity=ticket audience=sales manager=m team=t
  echo "routes: ok"
else
  skip "amtool not installed: alertmanager config not checked"
fi

step "promtool check config deploy/compose/prometheus.yml (loads deploy/prometheus/rules.yml, alerts.yml)"
if have promtool; then
  promtool check config deploy/compose/prometheus.yml
else
  skip "promtool not installed: prometheus config not checked"
fi

step "compose config -q deploy/docker-compose.yml"
compose=()
if have docker-compose; then
  compose=(docker-compose)
elif have docker && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
fi
if ((${#compose[@]})); then
  "${compose[@]}" -f deploy/docker-compose.yml config -q
  echo "${compose[*]} config: ok"
else
  skip "neither docker-compose nor the docker compose plugin is installed: compose file not checked"
fi

have_yaml=0
if have python3 && python3 -c 'import yaml' 2>/dev/null; then
  have_yaml=1
fi

step "compose bind mounts exist and ports are published on 127.0.0.1 only"
if ((have_yaml)); then
  python3 - <<'PY'
import os, sys, yaml
base = "deploy"
doc = yaml.safe_load(open(os.path.join(base, "docker-compose.yml")))
bad = []
for name, svc in doc["services"].items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            if not os.path.exists(os.path.join(base, src)):
                bad.append(f"{name}: mount source {src} does not exist")
    for p in svc.get("ports", []):
        if not str(p).startswith("127.0.0.1:"):
            bad.append(f"{name}: port {p} is not bound to 127.0.0.1")
build = doc["services"]["salespulse"]["build"]
if not os.path.isfile(os.path.join(base, build["context"], build.get("dockerfile", "Dockerfile"))):
    bad.append("salespulse: build context has no Dockerfile")
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/salespulse.yml"))
want = prov["providers"][0]["options"]["path"]
mounts = [v.split(":")[1] for v in doc["services"]["grafana"]["volumes"] if v.startswith("./grafana/dashboards:")]
if mounts != [want]:
    bad.append(f"grafana: dashboards mounted at {mounts}, provisioning expects {want}")
if bad:
    sys.exit("FAIL:\n  " + "\n  ".join(bad))
print("compose mounts and ports: ok")
PY
else
  skip "python3 with PyYAML not available: compose mounts not checked"
fi

step "Kubernetes manifests deploy/k8s/*.yaml"
if ((have_yaml)); then
  python3 - <<'PY'
import glob, sys, yaml
docs = {}
bad = []
for path in sorted(glob.glob("deploy/k8s/*.yaml")):
    for d in yaml.safe_load_all(open(path)):
        if d is None:
            continue
        for key in ("apiVersion", "kind"):
            if not d.get(key):
                bad.append(f"{path}: no {key}")
        if not (d.get("metadata") or {}).get("name"):
            bad.append(f"{path}: no metadata.name")
        docs[d.get("kind")] = d
        print(f"  {path}: {d.get('apiVersion')} {d.get('kind')} {d.get('metadata', {}).get('name')}")
for kind in ("Deployment", "ConfigMap", "Service", "PodMonitor", "PodDisruptionBudget"):
    if kind not in docs:
        bad.append(f"no {kind} manifest")
if bad:
    sys.exit("FAIL:\n  " + "\n  ".join(bad))

dep, svc, cm = docs["Deployment"], docs["Service"], docs["ConfigMap"]
pod = dep["spec"]["template"]
c = pod["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
def probe_port(pr):
    port = pr["httpGet"]["port"]
    return ports.get(port) if isinstance(port, str) else port
if c["readinessProbe"]["httpGet"]["path"] != "/readyz":
    bad.append("readinessProbe path is not /readyz")
if c["livenessProbe"]["httpGet"]["path"] != "/healthz":
    bad.append("livenessProbe path is not /healthz")
for which in ("readinessProbe", "livenessProbe"):
    if probe_port(c[which]) != 9898:
        bad.append(f"{which} does not target port 9898")
target = svc["spec"]["ports"][0]["targetPort"]
target = ports.get(target) if isinstance(target, str) else target
if target not in ports.values():
    bad.append(f"Service targetPort {target} matches no container port {sorted(ports.values())}")
sel = dep["spec"]["selector"]["matchLabels"]
labels = pod["metadata"]["labels"]
for name, s in (("Service", svc["spec"]["selector"]),
                ("PodMonitor", docs["PodMonitor"]["spec"]["selector"]["matchLabels"]),
                ("PodDisruptionBudget", docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]),
                ("Deployment", sel)):
    if any(labels.get(k) != v for k, v in s.items()):
        bad.append(f"{name} selector {s} does not match the pod labels {labels}")
pm = docs["PodMonitor"]["spec"]
if pm["podMetricsEndpoints"][0]["port"] not in ports:
    bad.append("PodMonitor port name matches no container port")
if labels.get(pm.get("jobLabel")) != "salespulse":
    bad.append('PodMonitor jobLabel does not yield job="salespulse" (the rules select it)')
ann = pod["metadata"].get("annotations", {})
if ann.get("prometheus.io/scrape") != "true" or int(ann.get("prometheus.io/port", 0)) not in ports.values():
    bad.append("prometheus.io scrape annotations missing or on the wrong port")
if dep["spec"]["replicas"] < 2 or docs["PodDisruptionBudget"]["spec"].get("minAvailable") != 1:
    bad.append("expected replicas >= 2 and PDB minAvailable 1")
if not pod["spec"].get("securityContext", {}).get("runAsNonRoot"):
    bad.append("pod securityContext is not runAsNonRoot")
cms = [v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v]
if cm["metadata"]["name"] not in cms:
    bad.append("the Deployment does not mount the ConfigMap")
if 'listen = "0.0.0.0:9898"' not in cm["data"]["salespulse.toml"]:
    bad.append("ConfigMap http.listen is not 0.0.0.0:9898 (probes and scrapes reach the pod IP)")
if bad:
    sys.exit("FAIL:\n  " + "\n  ".join(bad))
print("k8s manifests: ok")
PY
else
  skip "python3 with PyYAML not available: k8s manifests not checked (apt-get install -y python3-yaml)"
fi

step "systemd-analyze verify deploy/systemd/salespulse.service"
if have systemd-analyze; then
  # verify insists that ExecStart's binary exists: point it at the local build when there is one,
  # else at /bin/true; everything else in the unit is verified as written.
  bin=/bin/true
  [[ -x target/debug/salespulse ]] && bin=$PWD/target/debug/salespulse
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  sed "s|/usr/local/bin/salespulse|$bin|g" deploy/systemd/salespulse.service >"$tmp/salespulse.service"
  out=$(systemd-analyze verify "$tmp/salespulse.service" 2>&1) || { echo "$out" >&2; exit 1; }
  if [[ -n $out ]]; then
    echo "$out" >&2
    echo "FAIL: systemd-analyze verify printed warnings" >&2
    exit 1
  fi
  echo "systemd unit: ok (ExecStart binary substituted with $bin)"
else
  skip "systemd-analyze not installed: systemd unit not checked"
fi

step "salespulse check-config on the compose and k8s configs"
if [[ -x target/debug/salespulse ]]; then
  target/debug/salespulse check-config --config deploy/compose/salespulse.toml
  if ((have_yaml)); then
    python3 -c 'import yaml,sys; sys.stdout.write(yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]["salespulse.toml"])' \
      >"${tmp:-/tmp}/k8s-salespulse.toml"
    target/debug/salespulse check-config --config "${tmp:-/tmp}/k8s-salespulse.toml"
  fi
else
  skip "target/debug/salespulse not built: salespulse configs not checked"
fi

if ((${#skipped[@]})); then
  printf 'skipped: %s\n' "${skipped[@]}"
fi
# Kubernetes schemas, offline (kubernetes-validate bundles them). The PodMonitor is a custom
# resource the bundled schemas do not know; its keys are checked above.
if have kubernetes-validate; then
  kubernetes-validate --quiet deploy/k8s/deployment.yaml deploy/k8s/service.yaml \
    deploy/k8s/configmap.yaml deploy/k8s/pdb.yaml
  echo "k8s: deployment, service, configmap, pdb valid against the bundled Kubernetes schemas"
else
  skip "kubernetes-validate not installed: k8s schemas not checked (python3 -m pip install kubernetes-validate)"
fi

echo "OK: deployment files checked"
