// The dCache view: plain DOM code over the plugin's JSON API (../api/...). Every value from the
// server is written with textContent, never as HTML, and names and paths are shown through visible()
// (or the server's "display" fields): bidi overrides and invisible characters appear as \uXXXX.
"use strict";
(() => {
  const API = "../api";
  const PAGE = 50;
  const state = { conn: null, path: "/", offset: 0, hasMore: false, selected: new Set(), source: null,
                  dags: [], access: {} };
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  };

  // The same rule as the backend's validation.visible(): controls, format characters (U+202E, ...),
  // private use, unassigned, separators and spaces other than U+0020 are written as \uXXXX.
  const HIDDEN = /[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}\p{Zl}\p{Zp}]|(?! )\p{Zs}/gu;
  const visible = (text) => String(text ?? "").replace(HIDDEN, (ch) => {
    const cp = ch.codePointAt(0);
    return cp <= 0xffff ? "\\u" + cp.toString(16).padStart(4, "0") : "\\U" + cp.toString(16).padStart(8, "0");
  });

  // Where the view may look on the chosen connection (null: dCache alone decides, for the user's own identity).
  const roots = () => (state.access[state.conn] || {}).roots ?? null;
  const within = (path, list) => list.some((r) => r === "/" || path === r || path.startsWith(r + "/"));
  function virtualChildren(path, list) {  // the next components from ``path`` towards each allowed root
    const base = path === "/" ? "/" : path + "/";
    const names = new Set();
    for (const r of list) if (r.startsWith(base) && r !== path) names.add(r.slice(base.length).split("/")[0]);
    return [...names].sort().map((n) => base + n);
  }

  function showIdentity() {
    const a = state.access[state.conn] || {};
    const box = $("#identity");
    if (a.identity === "own") box.textContent = "as your own dCache identity";
    else if (a.roots && a.roots.length) box.textContent = "as the site, read-only, within " + a.roots.map(visible).join(", ");
    else box.textContent = "nothing browsable: no dCache identity of yours is mapped";
  }

  function showError(message) {
    const box = $("#error");
    box.textContent = message || ""; box.hidden = !message;
  }

  async function call(path, options = {}) {
    const response = await fetch(API + path, { credentials: "same-origin", ...options });
    if (response.status === 401) { window.top.location.reload(); throw new Error("session expired"); }
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
      throw new Error((body && body.field ? body.field + ": " : "") + detail);
    }
    return body;
  }
  const q = (params) => new URLSearchParams(params).toString();

  const size = (n) => {
    if (n == null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : String(v)) + " " + units[i];
  };
  const when = (ms) => (ms == null ? "" : new Date(ms).toISOString().replace("T", " ").slice(0, 19));
  const badge = (text, cls) => el("span", { class: "badge " + (cls || text || ""), text: text || "" });
  const checksum = (sums) => {
    const keys = Object.keys(sums || {}); if (!keys.length) return "";
    const k = keys.includes("adler32") ? "adler32" : keys[0]; return k + ":" + sums[k];
  };

  // ---------------------------------------------------------------- tabs
  function showTab(name) {
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === name);
    for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "panel-" + name;
    if (name === "lag") loadLag();
    if (name === "runs") loadRunDags();
    if (name === "live" && !$("#live-path").dataset.touched) $("#live-path").value = state.path;
  }

  // ---------------------------------------------------------------- browse
  function crumbs(path) {
    const nav = $("#crumbs"); nav.replaceChildren();
    const parts = path.split("/").filter(Boolean);
    nav.append(el("a", { text: "/", onclick: () => browse("/") }));
    let acc = "";
    parts.forEach((p, i) => {
      acc += "/" + p; const target = acc;
      nav.append(el("a", { text: visible(p), onclick: () => browse(target) }));
      if (i < parts.length - 1) nav.append("/");
    });
  }

  function browseVirtual(path, children) {  // an ancestor of the allowed roots: their names only, no dCache call
    state.path = path; state.offset = 0; state.hasMore = false;
    $("#path-input").value = path; crumbs(path);
    const body = $("#listing tbody"); body.replaceChildren();
    for (const child of children) {
      const tr = el("tr", { "data-path": child, class: "virtual" });
      const box = el("input", { type: "checkbox", "aria-label": "select " + child }); box.disabled = true;
      tr.append(el("td", {}, box), el("td", { class: "name" }, el("a", { text: visible(child.split("/").pop()) + "/",
        onclick: () => browse(child) })), el("td", { colspan: "7", class: "muted", text: "allowed area" }));
      body.append(tr);
    }
    $("#prev").disabled = true; $("#next").disabled = true; $("#page-info").textContent = "";
  }

  async function browse(path, offset = 0) {
    showError("");
    const allowed = roots();
    if (allowed && !within(path, allowed)) {
      const children = virtualChildren(path, allowed);
      if (children.length) { browseVirtual(path, children); return; }
    }
    try {
      const data = await call("/browse?" + q({ conn: state.conn, path, offset, limit: PAGE }));
      state.path = data.path; state.offset = data.offset; state.hasMore = data.has_more;
      $("#path-input").value = data.path; crumbs(data.path);
      if (!data.is_dir) { await details(data.path); return; }
      const body = $("#listing tbody"); body.replaceChildren();
      for (const c of data.children) body.append(row(c));
      if (!data.children.length) body.append(el("tr", {}, el("td", { colspan: "9", class: "muted", text: "empty directory" })));
      $("#prev").disabled = data.offset === 0; $("#next").disabled = !data.has_more;
      $("#page-info").textContent = data.children.length
        ? `${data.offset + 1}–${data.offset + data.children.length}` : "";
    } catch (e) { showError(e.message); }
  }

  function row(c) {
    const tr = el("tr", { "data-path": c.path });
    const box = el("input", { type: "checkbox", "aria-label": "select " + (c.display ?? visible(c.name)) });
    if (c.is_dir) box.disabled = true;
    box.checked = state.selected.has(c.path);
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(c.path); else state.selected.delete(c.path);
      tr.classList.toggle("sel", box.checked); selection();
    });
    const link = el("a", { text: (c.display ?? visible(c.name)) + (c.is_dir ? "/" : ""),
      onclick: () => (c.is_dir ? browse(c.path) : details(c.path)) });
    const labels = el("td"); for (const l of c.labels || []) labels.append(badge(l, "label"));
    tr.append(el("td", {}, box), el("td", { class: "name" }, link), el("td", { text: c.is_dir ? "" : size(c.size) }),
      el("td", { class: "mono", text: when(c.mtime) }), el("td", { text: c.owner == null ? "" : String(c.owner) }),
      el("td", {}, c.locality ? badge(c.locality) : ""), el("td", { text: c.current_qos || "" }),
      el("td", { class: "mono", text: checksum(c.checksums) }), labels);
    return tr;
  }

  function selection() {
    const n = state.selected.size;
    $("#selection").textContent = n ? `${n} file${n > 1 ? "s" : ""} selected` : "No files selected";
    $("#run-btn").disabled = n === 0;
  }

  async function details(path) {
    showError("");
    const box = $("#details");
    try {
      const d = await call("/file?" + q({ conn: state.conn, path }));
      box.replaceChildren(el("h2", { text: d.display ?? visible(d.name) }),
        el("div", { class: "mono muted", text: d.display_path ?? visible(d.path) }));
      const dl = el("dl");
      const add = (k, v) => dl.append(el("dt", { text: k }), el("dd", {}, v instanceof Node ? v : String(v ?? "")));
      add("Type", d.type); add("Size", d.is_dir ? "" : `${size(d.size)} (${d.size ?? "?"} bytes)`);
      add("Modified", when(d.mtime)); add("Owner", `${d.owner ?? ""}:${d.group ?? ""}`);
      add("PNFS-ID", el("span", { class: "mono", text: d.pnfsid || "" }));
      add("Locality", d.locality ? badge(d.locality) : "");
      add("QoS", d.current_qos || ""); add("QoS target", d.target_qos || "—");
      add("Locations", (d.locations || []).join(", ") || "—");
      add("Labels", (d.labels || []).join(", ") || "—");
      box.append(dl, el("h3", { text: "Checksums" }));
      const sums = el("dl"); for (const [k, v] of Object.entries(d.checksums || {})) sums.append(el("dt", { text: visible(k) }), el("dd", { class: "mono", text: visible(v) }));
      box.append(sums, el("h3", { text: "Extended attributes" }));
      const xa = el("dl", { id: "xattrs" }); for (const [k, v] of Object.entries(d.xattrs || {})) xa.append(el("dt", { class: "mono", text: visible(k) }), el("dd", { class: "mono", text: visible(v) }));
      if (!Object.keys(d.xattrs || {}).length) xa.append(el("dd", { class: "muted", text: "none" }));
      box.append(xa, el("h3", { text: "Processed by" }));
      const runs = el("ul", { id: "runs" });
      for (const r of d.runs || []) {
        const href = `../../dags/${encodeURIComponent(r.dag_id)}/runs/${encodeURIComponent(r.run_id)}`;
        const li = el("li", {}, el("a", { href, target: "_top", text: `${r.dag_id} / ${r.run_id}` }));
        if (r.function) li.append(" ", badge(r.function, "label"));
        for (const o of r.outputs || []) li.append(el("div", { class: "mono muted", text: "→ " + visible(o.path) }));
        runs.append(li);
      }
      if (!(d.runs || []).length) runs.append(el("li", { class: "muted", text: "no run yet" }));
      box.append(runs);
      if (!d.is_dir) {
        box.append(el("div", { class: "row" }, el("button", { class: "primary", id: "run-this",
          text: "Run a function on this file…", onclick: () => openRun([d.path]) })));
      }
      box.hidden = false;
    } catch (e) { showError(e.message); }
  }

  // ---------------------------------------------------------------- run a function
  const paramOf = (p) => (p && typeof p === "object" && "schema" in p ? p : { value: p, schema: {} });

  async function openRun(paths) {
    showError("");
    const dialog = $("#run-dialog");
    dialog.dataset.paths = JSON.stringify(paths);
    $("#run-targets").textContent = paths.length === 1 ? visible(paths[0]) : `${paths.length} files: ${paths.slice(0, 3).map(visible).join(", ")}${paths.length > 3 ? ", …" : ""}`;
    $("#run-result").replaceChildren();
    try {
      if (!state.dags.length) state.dags = (await call("/dags")).dags;
    } catch (e) { showError(e.message); return; }
    const sel = $("#dag-select"); sel.replaceChildren();
    for (const d of state.dags) sel.append(el("option", { value: d.dag_id, text: d.dag_id + (d.may_trigger ? "" : " (not allowed)") }));
    if (!state.dags.length) sel.append(el("option", { value: "", text: "no DAG takes a 'paths' param" }));
    fields();
    dialog.showModal();
  }

  function fields() {
    const dag = state.dags.find((d) => d.dag_id === $("#dag-select").value);
    const box = $("#param-fields"); box.replaceChildren();
    $("#dag-desc").textContent = dag ? (dag.description || "") : "";
    $("#run-submit").disabled = !dag || !dag.may_trigger;
    if (!dag) return;
    for (const [name, raw] of Object.entries(dag.params)) {
      if (name === "paths") continue;
      const p = paramOf(raw); const s = p.schema || {}; let input;
      if (Array.isArray(s.enum)) {
        input = el("select"); for (const v of s.enum) input.append(el("option", { value: JSON.stringify(v), text: String(v) }));
        input.value = JSON.stringify(p.value);
      } else if (s.type === "boolean") {
        input = el("input", { type: "checkbox" }); input.checked = !!p.value;
      } else if (s.type === "object" || s.type === "array") {
        input = el("textarea"); input.value = JSON.stringify(p.value ?? (s.type === "array" ? [] : {}));
      } else if (s.type === "integer" || s.type === "number") {
        input = el("input", { type: "number" }); input.value = p.value ?? "";
      } else {
        input = el("input", { type: "text" }); input.value = p.value ?? "";
      }
      input.dataset.param = name; input.dataset.kind = Array.isArray(s.enum) ? "enum" : (s.type || "string");
      box.append(el("label", {}, el("span", { text: (s.title || name) + (p.description ? " — " + p.description : "") }), input));
    }
  }

  function collect() {
    const params = {};
    for (const input of document.querySelectorAll("#param-fields [data-param]")) {
      const kind = input.dataset.kind; const name = input.dataset.param;
      if (kind === "enum") params[name] = JSON.parse(input.value);
      else if (kind === "boolean") params[name] = input.checked;
      else if (kind === "object" || kind === "array") {
        try { params[name] = JSON.parse(input.value || "null"); } catch (e) { throw new Error(name + ": not valid JSON"); }
      } else if (kind === "integer" || kind === "number") params[name] = input.value === "" ? null : Number(input.value);
      else params[name] = input.value;
    }
    return params;
  }

  async function submitRun(event) {
    event.preventDefault();
    const out = $("#run-result"); out.replaceChildren();
    try {
      const body = { dag_id: $("#dag-select").value, paths: JSON.parse($("#run-dialog").dataset.paths),
                     params: collect(), conn: state.conn };
      const run = await call("/trigger", { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
      out.append("Run created: ", el("a", { href: run.url, target: "_top", id: "run-link", text: `${run.dag_id} / ${run.run_id}` }));
    } catch (e) { out.append(el("span", { class: "error-text", id: "run-error", text: "Not triggered: " + e.message })); }
  }

  // ---------------------------------------------------------------- live events
  function stopLive() {
    if (state.source) state.source.close();
    state.source = null; $("#live-stop").disabled = true; $("#live-start").disabled = false;
    $("#live-state").textContent = "not watching";
  }

  function startLive(event) {
    event.preventDefault(); stopLive(); showError("");
    const path = $("#live-path").value.trim() || "/";
    const source = new EventSource(API + "/events?" + q({ conn: state.conn, path }));
    state.source = source; $("#live-stop").disabled = false; $("#live-start").disabled = true;
    $("#live-state").textContent = "connecting…";
    source.addEventListener("ready", (m) => { const d = JSON.parse(m.data); $("#live-state").textContent = "watching " + (d.display_path ?? visible(d.path)); });
    source.addEventListener("failure", (m) => { $("#live-state").textContent = JSON.parse(m.data).message + " — reconnecting"; });
    source.addEventListener("storage", (m) => liveRow(JSON.parse(m.data)));
    source.onerror = () => {  // a refusal (403, 429) is JSON the EventSource cannot show: ask once, say why
      if (state.source !== source) return;
      $("#live-state").textContent = "disconnected — retrying";
      if (source.readyState === EventSource.CLOSED) {
        stopLive();
        fetch(API + "/events?" + q({ conn: state.conn, path }), { credentials: "same-origin" })
          .then(async (r) => { if (!r.ok) { const b = await r.json().catch(() => null); showError(b && b.detail ? b.detail : r.statusText); } if (r.body) r.body.cancel(); })
          .catch(() => {});
      }
    };
  }

  function liveRow(ev) {
    const status = el("td", { class: "status" }, badge("…", "filtered"));
    const tr = el("tr", { "data-path": ev.path, "data-kind": ev.kind },
      el("td", { class: "mono", text: ev.time.replace("T", " ").slice(0, 23) }), el("td", {}, badge(ev.kind, "label")),
      el("td", { class: "mono", text: (ev.display_path ?? visible(ev.path)) + (ev.is_dir ? "/" : "") }), status);
    $("#live-list").prepend(tr);
    while ($("#live-list").children.length > 200) $("#live-list").lastChild.remove();
    pollStatus(ev, status, 0);
  }

  async function pollStatus(ev, cell, attempt) {
    let s;
    try { s = await call("/events/status?" + q({ conn: state.conn, path: ev.path, kind: ev.kind, is_dir: ev.is_dir })); }
    catch (e) { cell.replaceChildren(el("span", { class: "muted", text: e.message })); return; }
    cell.replaceChildren();
    if (s.status === "processed") {
      cell.append(badge("processed", "processed"));
      for (const r of s.runs) cell.append(" ", el("a", { target: "_top", text: `${r.dag_id} / ${r.run_id}`,
        href: `../../dags/${encodeURIComponent(r.dag_id)}/runs/${encodeURIComponent(r.run_id)}` }));
      return;
    }
    if (s.status === "waiting") cell.append(badge("waiting", "waiting"), " ", el("span", { class: "muted", text: s.dags.join(", ") }));
    else {
      cell.append(badge("filtered out", "filtered"), " ", el("span", { class: "muted", text: s.reason || "" }));
      cell.closest("tr").classList.add("row-filtered");
      return;
    }
    if (attempt < 120) setTimeout(() => pollStatus(ev, cell, attempt + 1), 5000);
  }

  // ---------------------------------------------------------------- lag
  const secs = (v) => (v == null ? "—" : v < 120 ? `${v.toFixed(1)} s` : `${(v / 60).toFixed(1)} min`);
  const iso = (v) => (v ? v.replace("T", " ").slice(0, 19) : "—");
  async function loadLag() {
    showError("");
    const body = $("#lag-table tbody");
    const note = (text) => body.replaceChildren(el("tr", {}, el("td", { colspan: "6", class: "muted", text })));
    note("loading… (the lag is read through Airflow's API)");
    try {
      const data = await call("/lag");
      body.replaceChildren();
      for (const a of data.assets) {
        const recent = el("td"); for (const r of a.recent.slice(0, 5)) recent.append(el("div", { class: "mono", text: `${r.dag_id}: ${secs(r.lag_seconds)} (${r.files} file${r.files > 1 ? "s" : ""})` }));
        body.append(el("tr", {}, el("td", { class: "mono", text: a.uri }), el("td", { text: a.dags.join(", ") }),
          el("td", { class: "mono", text: iso(a.last_event) }), el("td", { class: "mono", text: iso(a.last_run_start) }),
          el("td", { text: secs(a.median_lag_seconds) }), recent));
      }
      if (!data.assets.length) note("no watched dCache asset");
    } catch (e) { note("could not load the lag: " + e.message); showError(e.message); }
  }

  // ---------------------------------------------------------------- runs (a chunked run, file by file)
  const runsState = { dag: null, run: null };
  async function loadRunDags() {
    showError("");
    try {
      if (!state.dags.length) state.dags = (await call("/dags")).dags;
      const select = $("#runs-dag"); const chosen = select.value;
      select.replaceChildren(...state.dags.filter((d) => "only_failed_of" in (d.params || {}))
        .map((d) => el("option", { value: d.dag_id, text: d.dag_id })));
      if (!select.options.length) { $("#runs-note").textContent = "no DAG here runs in chunks (only_failed_of)"; return; }
      if (chosen) select.value = chosen;
      await loadRuns();
    } catch (e) { showError(e.message); }
  }

  async function loadRuns() {
    runsState.dag = $("#runs-dag").value;
    try {
      const data = await call("/runs?" + q({ dag_id: runsState.dag }));
      const body = $("#runs-table tbody"); body.replaceChildren();
      for (const r of data.runs) {
        body.append(el("tr", { class: "clickable", onclick: () => showRunFiles(r.dag_run_id) },
          el("td", { class: "mono", text: visible(r.dag_run_id) }), el("td", {}, badge(r.state)),
          el("td", { class: "mono", text: iso(r.start_date) }), el("td", { text: visible(r.triggering_user_name || "") })));
      }
      if (!data.runs.length) body.append(el("tr", {}, el("td", { colspan: "4", class: "muted", text: "no runs" })));
    } catch (e) { showError(e.message); }
  }

  async function showRunFiles(runId) {
    runsState.run = runId; showError("");
    $("#rerun-result").textContent = "";
    try {
      const data = await call("/run?" + q({ dag_id: runsState.dag, run_id: runId }));
      $("#run-files").hidden = false;
      $("#run-title").textContent = visible(runId);
      const counts = Object.entries(data.counts).map(([k, v]) => `${v} ${k}`).join(", ") || "no files yet";
      $("#run-summary").textContent = `${data.state}: ${counts} (from the ${data.source})`;
      const btn = $("#rerun-btn");
      btn.hidden = !data.may_rerun; btn.textContent = `Re-run ${data.failed} failed`;
      const body = $("#run-files-table tbody"); body.replaceChildren();
      for (const f of data.files) {
        const timings = Object.entries(f.durations || {}).map(([s, d]) => `${s} ${d.toFixed(1)} s`).join(", ");
        body.append(el("tr", {}, el("td", { class: "mono", title: visible(f.path), text: f.name }),
          el("td", { text: f.chunk ?? "" }), el("td", {}, badge(f.outcome)),
          el("td", { text: f.stage || "" }), el("td", { class: "muted", text: timings }),
          el("td", { class: "reason", text: f.reason || "" })));
      }
    } catch (e) { showError(e.message); }
  }

  async function rerunFailed() {
    const out = $("#rerun-result"); out.textContent = "";
    try {
      const r = await call("/rerun", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ dag_id: runsState.dag, run_id: runsState.run }) });
      out.append("Started ", el("a", { href: r.url, target: "_top", class: "mono", text: visible(r.run_id) }),
        ` over the ${r.files} failed file(s).`);
      $("#rerun-btn").hidden = true;
      await loadRuns();
    } catch (e) { out.textContent = e.message; }
  }

  // ---------------------------------------------------------------- start
  async function init() {
    for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
    $("#path-form").addEventListener("submit", (e) => { e.preventDefault(); browse($("#path-input").value.trim()); });
    $("#prev").addEventListener("click", () => browse(state.path, Math.max(0, state.offset - PAGE)));
    $("#next").addEventListener("click", () => browse(state.path, state.offset + PAGE));
    $("#run-btn").addEventListener("click", () => openRun([...state.selected]));
    $("#dag-select").addEventListener("change", fields);
    $("#run-form").addEventListener("submit", submitRun);
    $("#run-cancel").addEventListener("click", () => $("#run-dialog").close());
    $("#live-form").addEventListener("submit", startLive);
    $("#live-stop").addEventListener("click", stopLive);
    $("#live-hide-filtered").addEventListener("change", (e) => $("#live-table").classList.toggle("hide-filtered", e.target.checked));
    $("#live-path").addEventListener("input", (e) => { e.target.dataset.touched = "1"; });
    $("#lag-refresh").addEventListener("click", loadLag);
    $("#runs-dag").addEventListener("change", loadRuns);
    $("#runs-refresh").addEventListener("click", () => (runsState.run ? showRunFiles(runsState.run) : null, loadRuns()));
    $("#rerun-btn").addEventListener("click", rerunFailed);
    $("#conn").addEventListener("change", () => { state.conn = $("#conn").value; state.selected.clear(); selection(); stopLive(); showIdentity(); browse("/"); });
    try {
      const data = await call("/connections");
      state.access = data.access || {};
      for (const c of data.connections) $("#conn").append(el("option", { value: c.conn_id, text: c.site ? `${c.conn_id} (${c.site})` : c.conn_id }));
      if (!data.connections.length) { showError("No dCache connection is configured."); return; }
      const params = new URLSearchParams(location.search);
      state.conn = params.get("conn") && data.connections.some((c) => c.conn_id === params.get("conn")) ? params.get("conn") : data.connections[0].conn_id;
      $("#conn").value = state.conn; showIdentity();
      await browse(params.get("path") || "/");
    } catch (e) { showError(e.message); }
  }
  document.addEventListener("DOMContentLoaded", init);
})();
