// salespulse live page: polls the JSON API (docs/api.md) and draws the team table, sparklines and
// the ingest panel. No framework, no external asset: everything is served by the daemon itself.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const refreshMs = Math.max(500, Number(params.get("refresh")) || 2000);
  const PAGE_WINDOWS = ["5m", "1h", "shift", "today"];
  const state = {
    window: params.get("window") || "1h",
    team: params.get("team") || "",
    sortKey: "manager",
    sortDir: 1,
    thresholds: {},
    view: null,
    previousTopics: null,
    timer: null,
    inFlight: false,
  };

  const $ = (selector) => document.querySelector(selector);
  const status = $("#status");

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function number(value, digits) {
    if (value === null || value === undefined) return "–";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits || 0 });
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function time(ms) {
    if (ms === null || ms === undefined) return "–";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  // The alert rules' thresholds (GET /api/v1/thresholds, read from the shipped rule file): a value
  // at or past the threshold is "bad", from three quarters of it on "warn". `atLeast` follows the
  // rule's comparison (>= for counts, > for times).
  function level(value, name, atLeast) {
    const threshold = state.thresholds[name];
    if (value === null || value === undefined || threshold === undefined) return "";
    if (atLeast ? value >= threshold : value > threshold) return "bad";
    if (value >= 0.75 * threshold) return "warn";
    return "";
  }

  // What the alert rules compare with the anomaly threshold: the response-time score only when
  // above the baseline (SalespulseResponseTimeAboveBaseline), the others either way
  // (SalespulseAnomalyScoreHigh on abs()).
  function alertScore(anomaly) {
    return anomaly.signal === "response_time_p90" ? anomaly.score : Math.abs(anomaly.score);
  }

  function topAnomaly(row) {
    let top = null;
    for (const a of row.anomalies) {
      if (top === null || alertScore(a) > alertScore(top)) top = a;
    }
    return top;
  }

  function sortValue(row, key) {
    if (key === "anomaly") {
      const top = topAnomaly(row);
      return top === null ? null : alertScore(top);
    }
    if (key === "sparkline_total") {
      return row.calls_sparkline ? row.calls_sparkline.reduce((a, b) => a + b, 0) : null;
    }
    return row[key];
  }

  function compare(a, b) {
    const x = sortValue(a, state.sortKey);
    const y = sortValue(b, state.sortKey);
    // Absent values sort last in either direction.
    if (x === null || x === undefined) return y === null || y === undefined ? a.manager.localeCompare(b.manager) : 1;
    if (y === null || y === undefined) return -1;
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return order * state.sortDir || a.manager.localeCompare(b.manager);
  }

  function sparkline(points, spec) {
    const ns = "http://www.w3.org/2000/svg";
    const width = 120;
    const height = 24;
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    const max = Math.max(1, ...points);
    const step = points.length > 1 ? width / (points.length - 1) : width;
    const coords = points.map((p, i) => (i * step).toFixed(1) + "," + (height - 1 - (p / max) * (height - 2)).toFixed(1));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#0969da");
    line.setAttribute("stroke-width", "1.5");
    svg.appendChild(line);
    const title = document.createElementNS(ns, "title");
    const minutes = spec ? spec.bucket_seconds / 60 : 0;
    title.textContent = "Calls per " + minutes + " min, oldest first: " + points.join(" ");
    svg.appendChild(title);
    return svg;
  }

  function drawWindows(view) {
    const nav = $("#windows");
    const offered = PAGE_WINDOWS.filter((w) => view.windows.includes(w));
    for (const w of view.windows) if (!offered.includes(w)) offered.push(w);
    if (nav.dataset.offered !== offered.join(",")) {
      nav.replaceChildren();
      for (const w of offered) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = w;
        button.dataset.window = w;
        button.addEventListener("click", () => {
          state.window = w;
          refresh();
        });
        nav.appendChild(button);
      }
      nav.dataset.offered = offered.join(",");
    }
    for (const button of nav.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.window === view.window));
    }
  }

  function drawTeams(view) {
    const select = $("#team");
    const teams = [...new Set(view.managers.map((m) => m.team).filter((t) => t))].sort();
    const known = [...select.options].slice(1).map((o) => o.value);
    if (known.join("\n") !== teams.join("\n")) {
      select.replaceChildren(select.options[0]);
      for (const team of teams) {
        const option = document.createElement("option");
        option.value = team;
        option.textContent = team;
        select.appendChild(option);
      }
      select.value = teams.includes(state.team) ? state.team : "";
    }
  }

  function drawManagers() {
    const view = state.view;
    const tbody = $("#managers tbody");
    const rows = view.managers.filter((m) => !state.team || m.team === state.team).sort(compare);
    const fragment = document.createDocumentFragment();
    for (const m of rows) {
      const tr = document.createElement("tr");
      tr.dataset.manager = m.manager;
      cell(tr, m.manager, "text").dataset.col = "manager";
      cell(tr, m.team || "–", "text").dataset.col = "team";
      const values = [
        ["calls", number(m.calls), ""],
        ["successful_contacts", number(m.successful_contacts), ""],
        ["talk_seconds", duration(m.talk_seconds), ""],
        ["messages", number(m.messages), ""],
        ["dialogs_active", number(m.dialogs_active), ""],
        ["clients_waiting", number(m.clients_waiting), ""],
        ["oldest_wait_seconds", duration(m.oldest_wait_seconds), level(m.oldest_wait_seconds, "oldest_wait_seconds", false)],
        ["response_p90_seconds", duration(m.response_p90_seconds), level(m.response_p90_seconds, "response_p90_seconds", false)],
        ["tasks_overdue", number(m.tasks_overdue), level(m.tasks_overdue, "tasks_overdue", true)],
        ["plan_completion", m.plan_completion === null ? "–" : number(100 * m.plan_completion, 0) + " %", ""],
      ];
      for (const [key, text, className] of values) {
        const td = cell(tr, text, m[key] === null ? "none" : className);
        td.dataset.col = key;
        if (m[key] !== null) td.dataset.value = String(m[key]);
      }
      const top = topAnomaly(m);
      const flags = [];
      if (m.silent) flags.push("silent");
      if (top !== null) flags.push(top.signal + " " + (top.score >= 0 ? "+" : "") + top.score.toFixed(1));
      const anomaly = cell(tr, flags.length ? flags.join(", ") : "–");
      anomaly.dataset.col = "anomaly";
      anomaly.className = m.silent ? "bad" : top === null ? "none" : level(alertScore(top), "anomaly_score", false);
      const spark = cell(tr, "", "spark");
      spark.dataset.col = "calls_sparkline";
      if (m.calls_sparkline) {
        spark.dataset.value = m.calls_sparkline.join(",");
        spark.appendChild(sparkline(m.calls_sparkline, view.sparkline));
      } else {
        spark.textContent = "–";
        spark.classList.add("none");
      }
      fragment.appendChild(tr);
    }
    tbody.replaceChildren(fragment);
    $("#empty").hidden = view.managers.length > 0;
    for (const th of document.querySelectorAll("#managers th")) {
      th.setAttribute("aria-sort", th.dataset.key === state.sortKey ? (state.sortDir > 0 ? "ascending" : "descending") : "none");
    }
    const head = $("#sparkline-head");
    head.title = view.sparkline
      ? "Finished calls per " + view.sparkline.bucket_seconds / 60 + "-minute bucket of the " + view.sparkline.window + " window (event time), oldest first; the last point is the current bucket"
      : "No one-hour sliding window is configured";
  }

  function drawIngest(ingest) {
    const topics = $("#topics tbody");
    const previous = state.previousTopics;
    topics.replaceChildren();
    for (const t of ingest.topics) {
      const tr = document.createElement("tr");
      tr.dataset.topic = t.topic;
      cell(tr, t.topic);
      cell(tr, t.partitions.map((p) => p.partition + "@" + (p.next_offset === null ? "–" : p.next_offset)).join(" "));
      cell(tr, number(t.received)).dataset.col = "received";
      let rate = "–";
      const before = previous && previous.topics.find((p) => p.topic === t.topic);
      if (before && ingest.at_ms > previous.at_ms) {
        rate = number(((t.received - before.received) * 1000) / (ingest.at_ms - previous.at_ms), 1);
      }
      cell(tr, rate).dataset.col = "rate";
      const age = cell(tr, t.record_age_seconds === null ? "–" : duration(t.record_age_seconds) + " ago");
      age.dataset.col = "record_age";
      const rejected = Object.entries(t.rejected).map(([reason, n]) => reason + " " + n).join(", ");
      cell(tr, rejected || "0", rejected ? "bad" : "").dataset.col = "rejected";
      topics.appendChild(tr);
    }
    state.previousTopics = ingest;
    const streams = $("#streams tbody");
    streams.replaceChildren();
    for (const s of ingest.streams) {
      const tr = document.createElement("tr");
      tr.dataset.stream = s.stream;
      cell(tr, s.stream);
      cell(tr, number(s.applied)).dataset.col = "applied";
      cell(tr, number(s.late));
      cell(tr, time(s.last_event_at_ms));
      cell(tr, s.last_event_at_ms === null ? "–" : duration(Math.max(0, ingest.at_ms - s.last_event_at_ms) / 1000));
      streams.appendChild(tr);
    }
    const sources = $("#sources tbody");
    sources.replaceChildren();
    for (const s of ingest.sources) {
      const tr = document.createElement("tr");
      tr.dataset.source = s.source;
      cell(tr, s.source);
      cell(tr, number(s.events));
      cell(tr, number(s.errors), s.errors ? "bad" : "");
      sources.appendChild(tr);
    }
    $("#sources").hidden = ingest.sources.length === 0;
    const rejectedTotal = Object.values(ingest.rejected).reduce((a, b) => a + b, 0);
    const kafka = ingest.kafka.up === null ? "" : ingest.kafka.up ? "Kafka up · " : "Kafka DOWN (last contact " + duration(ingest.kafka.contact_age_seconds) + " ago) · ";
    $("#ingest-totals").textContent =
      kafka + "Managers held " + ingest.managers + " · rejected " + rejectedTotal +
      " · duplicates " + ingest.duplicates.offset + " by offset, " + ingest.duplicates.event_id + " by event id" +
      " · over the manager cap " + ingest.overflow;
    const rejects = $("#rejects tbody");
    rejects.replaceChildren();
    for (const r of ingest.recent_rejects) {
      const tr = document.createElement("tr");
      cell(tr, time(r.at_ms));
      cell(tr, r.topic);
      cell(tr, String(r.partition));
      cell(tr, String(r.offset));
      cell(tr, r.reason).dataset.col = "reason";
      cell(tr, r.error, "text");
      rejects.appendChild(tr);
    }
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  async function refresh() {
    if (state.inFlight) return;
    state.inFlight = true;
    clearTimeout(state.timer);
    const asked = state.window;
    try {
      const [view, ingest] = await Promise.all([
        getJson("api/v1/managers?window=" + encodeURIComponent(asked)),
        getJson("api/v1/ingest"),
      ]);
      state.view = view;
      drawWindows(view);
      drawTeams(view);
      drawManagers();
      drawIngest(ingest);
      status.classList.remove("error");
      status.textContent = "window " + view.window + " · " + view.managers.length + " managers · updated " + time(view.at_ms);
      status.dataset.window = view.window;
      status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
    } catch (error) {
      // Shown on the page; the next poll retries.
      status.classList.add("error");
      status.textContent = "update failed: " + error.message;
    } finally {
      state.inFlight = false;
      state.timer = setTimeout(refresh, refreshMs);
    }
  }

  async function start() {
    try {
      state.thresholds = (await getJson("api/v1/thresholds")).thresholds;
    } catch (error) {
      status.textContent = "thresholds unavailable: " + error.message;
    }
    for (const th of document.querySelectorAll("#managers th")) {
      th.addEventListener("click", () => {
        if (state.sortKey === th.dataset.key) state.sortDir = -state.sortDir;
        else {
          state.sortKey = th.dataset.key;
          state.sortDir = th.dataset.type === "text" ? 1 : -1;
        }
        if (state.view) drawManagers();
      });
    }
    $("#team").addEventListener("change", (event) => {
      state.team = event.target.value;
      if (state.view) drawManagers();
    });
    refresh();
  }

  start();
})();
