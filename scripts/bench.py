#!/usr/bin/env python3
"""End-to-end benchmark of salespulse on a real Kafka broker, against the consume ceiling
measured in the same run (`make bench`; not part of `make test`).

    scripts/bench.py                 the full run (about 15 minutes on 2 cores)
    scripts/bench.py --quick         small topics, one run: checks the harness works (about 2 minutes)
    scripts/bench.py --only scrape --managers 10000 --runs 1 --no-doc
                                     one phase at one manager count (about 2 minutes)
    KAFKA_BOOTSTRAP=... scripts/bench.py --only scrape --managers 10000 --reuse-topics --bin /tmp/old
                                     before/after: another binary on the topics of an earlier run

What it does, in order:
 1. Starts a broker with scripts/kafka.sh (or uses KAFKA_BOOTSTRAP) and fills topics of 8 partitions
    with `salespulse loadgen`: the same realistic mix (calls 30 %, messages 55 %, CRM changes 15 %,
    Zipf-skewed activity over the managers, event times over the last hour), once as protobuf and once
    as JSON with 10,000 managers, and protobuf topics with 1,000 and 100,000 managers. All of this
    happens before anything is timed.
 2. For each of `--runs` rounds and each throughput topic: the ceiling, `kcat` consuming the topic to
    /dev/null and Apache Kafka's ConsumerPerformance (`kafka-consumer-perf-test`); then a release
    `salespulse run` in a fresh consumer group until it has an outcome for every record. Progress is
    read from `/metrics?scope=self` (the daemon's own counters only, a few dozen series), 50 times a
    second. Rates count from the first applied record to the last, so group join and start-up are
    excluded, as they are from ConsumerPerformance's fetch rate.
 3. For each manager count: the same daemon run with a full `/metrics` scrape (OpenMetrics, as
    Prometheus asks) every --scrape-interval seconds while it ingests: latency p50/p99, body size, and
    the ingest rate with scrapes against the rate without.
 4. Rebuild, when the daemon has it (`salespulse_rebuild_*`): --rebuild-events events of 10,000
    managers over the last hour, consumed and committed by one daemon, then a second daemon in the
    same group replays them on start; the time until /readyz answers 200.
 5. Writes target/bench/results.json, rewrites the generated section of docs/performance.md and the
    plot docs/performance-e2e.png (throughput and peak RSS against manager count).
Every figure is a median over the runs; the report gives each as a ratio to the ceiling.
`--only` and `--managers` select phases and manager counts (the report then has only those);
`--save-bodies DIR` keeps the last full scrape of each scrape run, to see what a body is made of.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAFKA_SH = os.path.join(ROOT, "scripts", "kafka.sh")
BIN = os.path.join(ROOT, "target", "release", "salespulse")
OUT_DIR = os.path.join(ROOT, "target", "bench")
DOC = os.path.join(ROOT, "docs", "performance.md")
PLOT = os.path.join(ROOT, "docs", "performance-e2e.png")
BEGIN, END = "<!-- bench:begin (written by scripts/bench.py) -->", "<!-- bench:end -->"
OUTCOMES = (
    "salespulse_events_applied_total",
    "salespulse_events_rejected_total",
    "salespulse_events_duplicate_total",
    "salespulse_events_late_total",
    "salespulse_managers_overflow_events_total",
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Partitions of every generated topic.
PARTITIONS = 8
# Prometheus' default scrape_timeout.
SCRAPE_TIMEOUT = 10.0


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """The broker of the run: KAFKA_BOOTSTRAP, or one started here and stopped at the end."""

    def __init__(self):
        self.state = None
        self.bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
        if self.bootstrap:
            return
        self.state = tempfile.mkdtemp(prefix="salespulse-bench-kafka.")
        env = dict(os.environ, SALESPULSE_KAFKA_DIR=self.state)
        env.setdefault("SALESPULSE_KAFKA_HEAP_OPTS", "-Xmx1g -Xms1g")
        out = subprocess.run([KAFKA_SH, "start"], env=env, check=True, capture_output=True, text=True)
        self.bootstrap = out.stdout.strip().splitlines()[-1]
        log(f"broker started at {self.bootstrap} (state {self.state})")

    def env(self):
        env = dict(os.environ, KAFKA_BOOTSTRAP=self.bootstrap)
        if self.state:
            env["SALESPULSE_KAFKA_DIR"] = self.state
        return env

    def stop(self):
        if self.state:
            subprocess.run([KAFKA_SH, "stop"], env=self.env(), check=False)
            shutil.rmtree(self.state, ignore_errors=True)


def topic_partitions(broker, topic):
    """Partitions of `topic`, 0 if it does not exist. Lists every topic: asking for one by name
    (`kcat -L -t`) would make a broker with auto.create.topics.enable create it, with one
    partition, before loadgen could create it with eight."""
    out = subprocess.run(["kcat", "-L", "-b", broker.bootstrap, "-J"], capture_output=True, text=True)
    if out.returncode != 0:
        return 0
    for t in json.loads(out.stdout).get("topics", []):
        if t.get("topic") == topic and not t.get("err"):
            return len(t.get("partitions") or [])
    return 0


def topic_exists(broker, topic):
    partitions = topic_partitions(broker, topic)
    if partitions not in (0, PARTITIONS):
        raise RuntimeError(f"topic {topic} has {partitions} partitions, not {PARTITIONS}: delete it or use a fresh "
                           "broker (an earlier harness auto-created it by asking for its metadata)")
    return partitions == PARTITIONS


def topic_bytes(broker, topic):
    """Payload bytes of a topic, as loadgen reports them for the topics it writes."""
    out = subprocess.run(["kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q",
                          "-f", "%S\\n"], check=True, capture_output=True, text=True)
    return sum(int(n) for n in out.stdout.split())


def loadgen(broker, topic, events, managers, encoding, seed):
    started = time.perf_counter()
    out = subprocess.run(
        [BIN, "loadgen", "--bootstrap", broker.bootstrap, "--topic", topic, "--partitions", str(PARTITIONS),
         "--events", str(events), "--managers", str(managers), "--encoding", encoding, "--seed", str(seed)],
        check=True, capture_output=True, text=True, env=dict(os.environ, RUST_LOG="warn"),
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    partitions = topic_partitions(broker, topic)
    if partitions != PARTITIONS:
        raise RuntimeError(f"topic {topic} has {partitions} partitions, not {PARTITIONS}")
    log(f"loaded {topic}: {events} events, {summary['bytes'] / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s")
    return summary


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kcat_ceiling(broker, topic, events, size):
    cpu = children_cpu()
    started = time.perf_counter()
    subprocess.run(
        ["kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s"],
        check=True, stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    return {"events_per_s": events / seconds, "mb_per_s": size / seconds / 1e6, "seconds": seconds,
            "cpu_s_per_m": (children_cpu() - cpu) / events * 1e6}


def perf_test_ceiling(broker, topic, events):
    out = subprocess.run([KAFKA_SH, "perf-consume", topic, str(events)], env=broker.env(), check=True,
                         capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(header, values))
    consumed = int(float(row["data.consumed.in.nMsg"]))
    if consumed < events:
        raise RuntimeError(f"ConsumerPerformance read {consumed} of {events} records: {out.stdout}")
    return {"events_per_s": float(row["fetch.nMsg.sec"]), "mb_per_s": float(row["fetch.MB.sec"]) * 1.048576}


def parse_samples(body, names):
    total = {}
    for line in body.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            total[name] = total.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def http_get(url, accept=None, timeout=30):
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


OPENMETRICS = "application/openmetrics-text; version=1.0.0"
CURL = shutil.which("curl")


def scrape_once(url):
    """One full scrape as Prometheus asks for it: (seconds, body bytes), or None if it failed.

    Timed by curl (`time_total`: connect to last byte) when it is installed. Python's http.client
    reads a body of tens of megabytes slowly and unevenly (idle, 10k managers: 0.32-0.70 s where
    curl took 0.25-0.28 s for the same 90 MB), and under the GIL beside the harness's own polling:
    it measured the client, not the daemon. Prometheus reads as fast as curl does.
    """
    if CURL:
        result = subprocess.run(
            [CURL, "-s", "-o", "/dev/null", "--max-time", str(SCRAPE_TIMEOUT), "-H", f"Accept: {OPENMETRICS}",
             "-w", "%{http_code} %{time_total} %{size_download}", url],
            capture_output=True, text=True)
        fields = result.stdout.split()
        if result.returncode != 0 or len(fields) != 3 or fields[0] != "200":
            return None
        return float(fields[1]), int(fields[2])
    begin = time.perf_counter()
    try:
        _, body = http_get(url, accept=OPENMETRICS, timeout=SCRAPE_TIMEOUT)
    except (urllib.error.URLError, OSError):
        return None
    return time.perf_counter() - begin, len(body)


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# What the daemon's threads do, by their names: `apply-N` decode and apply records (the issue's
# "decode + apply"), `ingest` polls librdkafka and copies records into the apply batches, `rdk:*`
# are librdkafka's own (fetching, parsing record batches), the rest serves HTTP and housekeeping.
THREAD_ROLES = (("apply", "apply-"), ("poll", "ingest"), ("librdkafka", "rdk:"))


def thread_cpu_seconds(pid):
    """CPU seconds per thread role (THREAD_ROLES, else "other") of process `pid`."""
    roles = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        role = next((r for r, prefix in THREAD_ROLES if name.startswith(prefix)), "other")
        roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return roles


def proc_peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Daemon:
    """A release `salespulse run` consuming `topics` in consumer group `group`."""

    def __init__(self, broker, topics, group, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = os.path.join(workdir, f"{group}.toml")
        with open(config, "w") as f:
            f.write(f"""[kafka]
bootstrap_servers = "{broker.bootstrap}"
group_id = "{group}"
topics = {json.dumps(topics)}
[http]
listen = "127.0.0.1:{self.port}"
[limits]
max_managers = 500000
[log]
level = "warn"
""")
        self.log = open(os.path.join(workdir, f"{group}.log"), "w")
        self.process = subprocess.Popen([BIN, "run", "--config", config], stdout=self.log, stderr=self.log)

    def outcomes(self):
        _, body = http_get(self.url + "/metrics?scope=self")
        return sum(parse_samples(body.decode(), OUTCOMES).values())

    def wait_until(self, what, check, timeout, interval=0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"salespulse exited with {self.process.returncode} while waiting for {what}")
            try:
                value = check()
                if value is not None:
                    return value
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(interval)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def consume_run(broker, topic, events, workdir, scrape_interval=None, save_body=None):
    """One daemon in a fresh group, from the first record to an outcome for every record."""
    group = f"bench-{topic}-{time.time_ns()}"
    daemon = Daemon(broker, [topic], group, workdir)
    scrapes = []
    failed_scrapes = []
    stop_scraping = threading.Event()
    try:
        first = daemon.wait_until("the first record", lambda: (lambda n: (time.perf_counter(), n) if n > 0 else None)(
            daemon.outcomes()), timeout=120, interval=0.005)
        started, done_at_start = first
        cpu_start = proc_cpu_seconds(daemon.process.pid)
        threads_start = thread_cpu_seconds(daemon.process.pid)

        def scraper():
            while not stop_scraping.wait(scrape_interval):
                scrape = scrape_once(daemon.url + "/metrics")
                if scrape is None:
                    # Prometheus would record a failed scrape (scrape_timeout); so does the report.
                    failed_scrapes.append(SCRAPE_TIMEOUT)
                else:
                    scrapes.append(scrape)

        thread = None
        if scrape_interval:
            thread = threading.Thread(target=scraper, daemon=True)
            thread.start()
        finished = daemon.wait_until(
            "an outcome for every record",
            lambda: time.perf_counter() if daemon.outcomes() >= events else None, timeout=1800)
        cpu = proc_cpu_seconds(daemon.process.pid) - cpu_start
        threads = thread_cpu_seconds(daemon.process.pid)
        stop_scraping.set()
        if thread:
            thread.join(timeout=60)
        peak_rss = proc_peak_rss(daemon.process.pid)
        _, body = http_get(daemon.url + "/metrics", timeout=300)
        series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
        if save_body:
            with open(save_body, "wb") as f:
                f.write(body)
        totals = parse_samples(body.decode(), set(OUTCOMES) | {"salespulse_managers"})
        counted = events - done_at_start
        result = {
            "events_per_s": counted / (finished - started),
            "seconds": finished - started,
            "counted": counted,
            "cpu_s_per_m": cpu / counted * 1e6,
            # Per thread role; a thread that ended during the run is missing from the end figure.
            "cpu_s_per_m_by_role": {role: max(0.0, seconds - threads_start.get(role, 0.0)) / counted * 1e6
                                    for role, seconds in threads.items()},
            "peak_rss": peak_rss,
            "managers": totals.get("salespulse_managers", 0),
            "applied": totals.get("salespulse_events_applied_total", 0),
            "not_applied": sum(v for k, v in totals.items() if k in OUTCOMES[1:]),
            "series": series,
        }
        if scrapes or failed_scrapes:
            # A failed scrape counts at the timeout, so it lands in the tail where it belongs.
            latencies = sorted([s[0] for s in scrapes] + [SCRAPE_TIMEOUT] * len(failed_scrapes))
            result["scrape"] = {
                "count": len(latencies),
                "failed": len(failed_scrapes),
                "p50_ms": 1000 * percentile(latencies, 0.50),
                "p99_ms": 1000 * percentile(latencies, 0.99),
                "max_ms": 1000 * latencies[-1],
                "body_bytes": statistics.median(s[1] for s in scrapes) if scrapes else 0,
            }
        return result
    finally:
        stop_scraping.set()
        daemon.stop()


def rebuild_run(broker, topic, events, workdir):
    """One daemon consumes and commits `topic`; a second one in the same group rebuilds from it."""
    group = f"bench-rebuild-{time.time_ns()}"
    first = Daemon(broker, [topic], group, workdir)
    try:
        first.wait_until("the first daemon to apply every record",
                         lambda: True if first.outcomes() >= events else None, timeout=3600, interval=0.5)
    finally:
        first.stop()  # the final synchronous commit
    started = time.perf_counter()
    second = Daemon(broker, [topic], group, workdir)
    try:
        def ready():
            status, _ = http_get(second.url + "/readyz")
            return time.perf_counter() if status == 200 else None

        def rebuilt():
            try:
                return ready()
            except urllib.error.HTTPError:
                return None

        finished = second.wait_until("the rebuild", rebuilt, timeout=3600, interval=0.05)
        _, body = http_get(second.url + "/metrics?scope=self")
        text = body.decode()
        if "salespulse_rebuild" not in text:
            return {"available": False}
        replayed = second.outcomes()
        return {"available": True, "seconds": finished - started, "events": events, "replayed": replayed,
                "events_per_s": replayed / (finished - started), "peak_rss": proc_peak_rss(second.process.pid)}
    finally:
        second.stop()


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def median_of(runs, key):
    return statistics.median(run[key] for run in runs)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "rustc": rustc,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


PHASES = ("throughput", "scrape", "rebuild")


def main():
    global BIN
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small topics and one run: a check of the harness")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=2_000_000, help="events per throughput topic")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between full scrapes")
    parser.add_argument("--rebuild-events", type=int, default=10_000_000)
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md and the plot")
    parser.add_argument("--only", action="append", choices=PHASES,
                        help="run only this phase (repeatable); implies --no-doc")
    parser.add_argument("--managers", action="append", type=int,
                        help="manager count of the scrape phase (repeatable) [1000, 10000, 100000]")
    parser.add_argument("--bin", default=BIN, help="the salespulse binary to measure [target/release/salespulse]")
    parser.add_argument("--reuse-topics", action="store_true",
                        help="name topics by content and load only those missing (with KAFKA_BOOTSTRAP: "
                             "several binaries measured on the same records)")
    parser.add_argument("--save-bodies", metavar="DIR", help="keep the last full scrape of each scrape run in DIR")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.events, args.rebuild_events = 1, 200_000, 300_000
        args.no_doc = True
    phases = args.only or PHASES
    manager_counts = args.managers or [1_000, 10_000, 100_000]
    if args.only or args.managers or args.bin != BIN:
        args.no_doc = True
    BIN = args.bin
    if not os.access(BIN, os.X_OK):
        sys.exit(f"bench: {BIN} missing: run `cargo build --release -p salespulse` (make bench does)")
    if args.save_bodies:
        os.makedirs(args.save_bodies, exist_ok=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="salespulse-bench.")
    broker = Broker()
    results = {"machine": machine(), "events": args.events, "runs": args.runs,
               "scrape_interval_s": args.scrape_interval}
    try:
        run_id = time.strftime("%H%M%S")
        wanted = []
        if "throughput" in phases:
            wanted += [("protobuf", 10_000), ("json", 10_000)]
        if "scrape" in phases:
            wanted += [("protobuf", m) for m in manager_counts if ("protobuf", m) not in wanted]
        topics, loaded = {}, {}
        for encoding, managers in wanted:
            # The seed depends only on what the topic holds, so reused topics hold the same records.
            # (JSON and protobuf of one manager count are the same events.)
            seed = managers
            name = f"bench-{encoding}-{managers}-{args.events}-s{seed}" if args.reuse_topics else \
                f"bench-{run_id}-{encoding}-{managers}"
            topics[(encoding, managers)] = name
            if args.reuse_topics and topic_exists(broker, name):
                loaded[(encoding, managers)] = {"bytes": topic_bytes(broker, name)}
                log(f"reusing {name}")
                continue
            loaded[(encoding, managers)] = loadgen(broker, name, args.events, managers, encoding, seed)

        throughput = {}
        for encoding in ("protobuf", "json") if "throughput" in phases else ():
            topic, size = topics[(encoding, 10_000)], loaded[(encoding, 10_000)]["bytes"]
            runs = []
            for run in range(args.runs):
                kcat = kcat_ceiling(broker, topic, args.events, size)
                perf = perf_test_ceiling(broker, topic, args.events)
                ours = consume_run(broker, topic, args.events, workdir)
                ours["mb_per_s"] = size * ours["counted"] / args.events / ours["seconds"] / 1e6
                log(f"{encoding} run {run + 1}: kcat {kcat['events_per_s']:,.0f}/s, perf-test "
                    f"{perf['events_per_s']:,.0f}/s, salespulse {ours['events_per_s']:,.0f}/s "
                    f"({ours['events_per_s'] / kcat['events_per_s']:.2f} of kcat), "
                    f"{ours['cpu_s_per_m']:.2f} CPU s per M ("
                    + ", ".join(f"{k} {v:.2f}" for k, v in sorted(ours["cpu_s_per_m_by_role"].items()))
                    + f"), peak RSS {ours['peak_rss'] / 2**20:.0f} MiB")
                runs.append({"kcat": kcat, "perf_test": perf, "salespulse": ours,
                             "ratio_kcat": ours["events_per_s"] / kcat["events_per_s"],
                             "ratio_perf_test": ours["events_per_s"] / perf["events_per_s"]})
            throughput[encoding] = {"bytes": size, "runs": runs}
            results["throughput"] = throughput
            save(results)

        by_managers = {}
        for managers in manager_counts if "scrape" in phases else ():
            topic = topics[("protobuf", managers)]
            runs = []
            for run in range(args.runs):
                body_file = os.path.join(args.save_bodies, f"metrics-{managers}-run{run + 1}.txt") \
                    if args.save_bodies else None
                quiet = consume_run(broker, topic, args.events, workdir)
                scraped = consume_run(broker, topic, args.events, workdir, scrape_interval=args.scrape_interval,
                                      save_body=body_file)
                log(f"{managers} managers run {run + 1}: {quiet['events_per_s']:,.0f}/s quiet, "
                    f"{scraped['events_per_s']:,.0f}/s scraped, scrape p99 "
                    f"{scraped.get('scrape', {}).get('p99_ms', float('nan')):.0f} ms, peak RSS "
                    f"{quiet['peak_rss'] / 2**20:.0f} MiB for {quiet['managers']:.0f} managers")
                runs.append({"quiet": quiet, "scraped": scraped})
            by_managers[managers] = runs
            results["by_managers"] = {str(k): v for k, v in by_managers.items()}
            save(results)

        if "rebuild" in phases:
            rebuild_topic = f"bench-{run_id}-rebuild"
            loadgen(broker, rebuild_topic, args.rebuild_events, 10_000, "protobuf", 99)
            results["rebuild"] = rebuild_run(broker, rebuild_topic, args.rebuild_events, workdir)
            log(f"rebuild: {results['rebuild']}")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    path = save(results)
    report = render_report(results)
    print(report)
    log(f"results in {path}")
    if not args.no_doc:
        write_doc(report)
        plot(results)


def save(results):
    """Writes what is measured so far, so a failure late in the run keeps the earlier phases."""
    path = os.path.join(OUT_DIR, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    return path


def render_report(results):
    m = results["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, Linux {m['kernel']}), {m['rustc']}; "
        f"{results['events']:,} events per topic, 8 partitions, median of {results['runs']} runs.",
    ]
    if "throughput" in results:
        lines += throughput_report(results)
    if "by_managers" in results:
        lines += managers_report(results)
    if "rebuild" in results:
        lines += rebuild_report(results)
    return "\n".join(lines) + "\n"


def throughput_report(results):
    lines = [
        "",
        "**Throughput** (10,000 managers; salespulse from its first applied record to an outcome for the last):",
        "",
        "| encoding | kcat ceiling ev/s | MB/s | perf-test ev/s | salespulse ev/s | MB/s | / kcat | target | "
        "CPU s per M events | of which decode + apply | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = {"protobuf": 0.8, "json": 0.6}
    for encoding, data in results["throughput"].items():
        runs = data["runs"]
        kcat = statistics.median(r["kcat"]["events_per_s"] for r in runs)
        kcat_mb = statistics.median(r["kcat"]["mb_per_s"] for r in runs)
        perf = statistics.median(r["perf_test"]["events_per_s"] for r in runs)
        ours = [r["salespulse"] for r in runs]
        ratio = statistics.median(r["ratio_kcat"] for r in runs)
        lines.append(
            f"| {encoding} | {kcat:,.0f} | {kcat_mb:.1f} | {perf:,.0f} | {median_of(ours, 'events_per_s'):,.0f} | "
            f"{median_of(ours, 'mb_per_s'):.1f} | **{ratio:.2f}** | {targets[encoding]} "
            f"{'met' if ratio >= targets[encoding] else 'missed'} | {median_of(ours, 'cpu_s_per_m'):.2f} | "
            f"{role_median(ours, 'apply'):.2f} (target 1) | {median_of(ours, 'peak_rss') / 2**20:.0f} |")
    roles = [role for role, _ in THREAD_ROLES] + ["other"]
    lines += ["", "CPU seconds per million events by thread (median): " + "; ".join(
        f"{encoding}: " + ", ".join(f"{role} {role_median([r['salespulse'] for r in data['runs']], role):.2f}"
                                    for role in roles)
        for encoding, data in results["throughput"].items()) + ". `apply` threads decode and apply records, "
        "`poll` takes them from librdkafka and copies them into the apply batches, `librdkafka` fetches and "
        "parses record batches."]
    return lines


def role_median(runs, role):
    return statistics.median(r.get("cpu_s_per_m_by_role", {}).get(role, float("nan")) for r in runs)


def managers_report(results):
    lines = [
        "",
        f"**By manager count** (protobuf; full OpenMetrics scrape every {results['scrape_interval_s']} s "
        "while ingesting; memory target 64 MiB + 16 KiB per manager):",
        "",
        "| managers | ev/s quiet | ev/s scraped | scraped / quiet | scrape p50 ms | p99 ms | failed (10 s) | "
        "body MB | series per manager | peak RSS MiB | RSS target MiB | decode + apply CPU s per M (quiet) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for managers, runs in results["by_managers"].items():
        quiet = [r["quiet"] for r in runs]
        scraped = [r["scraped"] for r in runs]
        scrapes = [r["scraped"]["scrape"] for r in runs if "scrape" in r["scraped"]]
        active = median_of(quiet, "managers")
        rss = median_of(quiet, "peak_rss") / 2**20
        target = 64 + 16 * active / 1024
        q, s = median_of(quiet, "events_per_s"), median_of(scraped, "events_per_s")
        p50 = statistics.median(x["p50_ms"] for x in scrapes) if scrapes else float("nan")
        p99 = max(x["p99_ms"] for x in scrapes) if scrapes else float("nan")
        body = statistics.median(x["body_bytes"] for x in scrapes) / 1e6 if scrapes else float("nan")
        # Series of the final scrape (every record applied), per manager held.
        per_manager = median_of(scraped, "series") / max(median_of(scraped, "managers"), 1) \
            if all("series" in r for r in scraped) else float("nan")
        failed = f"{sum(x.get('failed', 0) for x in scrapes)} of {sum(x['count'] for x in scrapes)}"
        lines.append(f"| {int(float(managers)):,} ({active:,.0f} active) | {q:,.0f} | {s:,.0f} | {s / q:.2f} | "
                     f"{p50:.0f} | {p99:.0f} | {failed} | {body:.1f} | {per_manager:.0f} | {rss:.0f} | {target:.0f} | "
                     f"{role_median(quiet, 'apply'):.2f} |")
    return lines


def rebuild_report(results):
    rebuild = results["rebuild"]
    lines = [""]
    if rebuild.get("available"):
        lines.append(f"**Rebuild**: {rebuild['events']:,} events of 10,000 managers over the last hour replayed "
                     f"on start in {rebuild['seconds']:.1f} s ({rebuild['events_per_s']:,.0f} ev/s; target 30 s).")
    else:
        lines.append("**Rebuild**: not measured: this build of the daemon reports no `salespulse_rebuild_*` "
                     "metrics.")
    return lines


def write_doc(report):
    with open(DOC) as f:
        text = f.read()
    block = f"{BEGIN}\n{report}\n![throughput and peak RSS against manager count](performance-e2e.png)\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## End to end on a real broker (`make bench`)\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(text)
    log(f"updated {DOC}")


def plot(results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing (pip install matplotlib): no plot")
        return
    counts = sorted(results["by_managers"], key=float)
    xs = [int(float(c)) for c in counts]
    quiet = [median_of([r["quiet"] for r in results["by_managers"][c]], "events_per_s") / 1e3 for c in counts]
    scraped = [median_of([r["scraped"] for r in results["by_managers"][c]], "events_per_s") / 1e3 for c in counts]
    rss = [median_of([r["quiet"] for r in results["by_managers"][c]], "peak_rss") / 2**20 for c in counts]
    target = [64 + 16 * median_of([r["quiet"] for r in results["by_managers"][c]], "managers") / 1024
              for c in counts]
    kcat = statistics.median(r["kcat"]["events_per_s"] for r in results["throughput"]["protobuf"]["runs"]) / 1e3
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(xs, quiet, "o-", label="salespulse")
    left.plot(xs, scraped, "s--", label=f"salespulse, scraped every {results['scrape_interval_s']} s")
    left.axhline(kcat, color="grey", linestyle=":", label="kcat ceiling (10k topic)")
    left.set(xscale="log", xlabel="managers", ylabel="thousand events/s", title="Ingest throughput (protobuf)")
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    right.plot(xs, rss, "o-", label="peak RSS")
    right.plot(xs, target, ":", color="grey", label="target 64 MiB + 16 KiB/manager")
    right.set(xscale="log", yscale="log", xlabel="managers", ylabel="MiB", title="Peak RSS")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=100)
    log(f"wrote {PLOT}")


if __name__ == "__main__":
    main()
