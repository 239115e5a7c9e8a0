"use strict";
// The collector's dashboard.  Everything shown comes from the nodes: any value may be of any type.
// Every formatter returns text or a DOM node for any input (a bad value is shown as such, in red),
// values only ever reach the page as text (textContent, attribute values, canvas fillText; never
// innerHTML), and every table and chart is rendered on its own, so one hostile value never blanks
// the page.
const S = { fleet: {}, anomalies: [], incidents: {}, probes: {}, heatmap: { rows: [] }, stats: {}, quarantine: [],
            link: {}, serverSkew: 0 };
const str = v => { try { return typeof v === "string" ? v : (v == null ? "" : (typeof v === "object" ? JSON.stringify(v) : String(v))); } catch (e) { return "?"; } };
const cut = (v, n) => str(v).slice(0, n || 300);
const obj = v => (v && typeof v === "object" && !Array.isArray(v)) ? v : {};
const arr = v => Array.isArray(v) ? v : [];
const fin = v => typeof v === "number" && isFinite(v);

// h("td", {class: "x", "data-id": id}, child, ...): children are nodes or text (strings are never parsed)
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (typeof v === "function") e.addEventListener(k, v);
    else e.setAttribute(k, cut(v));
  }
  for (const c of kids.flat(3)) if (c != null && c !== false && c !== "") e.append(c instanceof Node ? c : cut(c, 2000));
  return e;
}
const bad = v => h("span", { class: "bad", title: "not a valid value" }, cut(v));
const num = (v, digits) => v == null || v === "" ? "" : (fin(v) ? (digits == null ? String(v) : v.toFixed(digits)) : bad(v));
const list = v => Array.isArray(v) ? v.map(x => cut(x)).join(", ") : (v == null ? "" : bad(v));

// -- times: the viewer's time zone, with the date --------------------------------------------------
const TZ = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { return "UTC"; } })();
const TZ_OFFSET = (() => { try { return new Intl.DateTimeFormat("en-US", { timeZone: TZ, timeZoneName: "shortOffset" })
  .formatToParts(new Date()).find(p => p.type === "timeZoneName").value; } catch (e) { return ""; } })();
const PARTS = new Intl.DateTimeFormat("en-US", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
function parts(d) { const p = {}; PARTS.formatToParts(d).forEach(x => { p[x.type] = x.value; }); return p; }
function localDateTime(d) { const p = parts(d); return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`; }
function localClock(d, seconds) { const p = parts(d); return seconds ? `${p.hour}:${p.minute}:${p.second}` : `${p.hour}:${p.minute}`; }
function localDate(d) { const p = parts(d); return `${p.year}-${p.month}-${p.day}`; }
const toDate = t => new Date(typeof t === "number" ? t * 1000 : (typeof t === "string" ? t : NaN));
// a time cell: date and time in the viewer's zone; the UTC time on hover
function tm(t) {
  if (t == null || t === "") return "";
  const d = toDate(t);
  if (isNaN(d.getTime())) return bad(t);
  return h("time", { datetime: d.toISOString(), title: d.toISOString().replace("T", " ").slice(0, 19) + " UTC" }, localDateTime(d));
}
const zoneLabel = `${TZ}${TZ_OFFSET ? " (" + TZ_OFFSET + ")" : ""}`;

// -- filters: relay, node, route, domain, outcome and free text, over everything the page holds ------
const FILTER = {};            // field -> chosen value ("" or absent: any)
const FIELDS = ["relay", "node", "route", "domain", "outcome"];
// does an item with these values pass the filters?  A field the item does not have (undefined)
// does not filter it; the text must be part of one of its values.
function keep(values) {
  for (const f of FIELDS) {
    const want = FILTER[f];
    if (!want || values[f] === undefined) continue;
    if (!arr(values[f]).map(str).includes(want)) return false;
  }
  const q = (document.getElementById("q").value || "").trim().toLowerCase();
  if (q) {
    const all = [...Object.values(values).flatMap(v => arr(v).map(str)), ...arr(values.text).map(str)];
    if (!all.some(v => v.toLowerCase().includes(q))) return false;
  }
  return true;
}
let shownCount = {};
function filtered(name, trs, valuesOf, items) {
  let n = 0;
  trs.forEach((tr, k) => { let ok = true; try { ok = keep(valuesOf(obj(arr(items)[k]))); } catch (e) { ok = true; }
    if (!ok) tr.classList.add("filtered-out"); else n++; });
  shownCount[name] = [n, trs.length];
  return trs;
}
const nodeNames = x => [`${str(x.site)}/${str(x.node)}`, str(x.node)];
const pathNames = i => str(obj(i.context).path || i.root_cause).split(" > ").concat(str(i.root_cause).split(" > "));

// -- tables ----------------------------------------------------------------------------------------
function rows(items, fn) {
  return arr(items).map(x => { try { return fn(obj(x)); } catch (e) { return h("tr", {}, h("td", { colspan: 9 }, bad(x))); } });
}
function fill(id, trs) { document.querySelector(`#${id} tbody`).replaceChildren(...trs); }
function section(name, fn) { try { fn(); } catch (e) { window.mailpulseRenderErrors = (window.mailpulseRenderErrors || 0) + 1; console.error(name, e); } }
function setText(id, v) { document.getElementById(id).replaceChildren(v instanceof Node ? v : cut(v)); }

function incidentRow(i) {
  const e = obj(i.evidence);
  return h("tr", { class: `sev-${cut(i.severity, 20)} ${i.state === "open" ? "" : "resolved"} incident`, "data-id": i.id,
    title: "open the incident's page", click: () => openIncident(str(i.id)) },
    h("td", {}, cut(i.state)), h("td", {}, cut(i.severity)),
    h("td", { class: "root-cause" }, h("b", {}, cut(obj(i.context).path || i.root_cause)),
      obj(i.context).path && obj(i.context).path !== i.root_cause ? h("div", { class: "muted" }, cut(i.root_cause)) : ""),
    h("td", {}, num(e.anomalies), "/", num(e.events)),
    h("td", {}, num(e.anomaly_rate), " (", e.sibling_rate == null ? "-" : num(e.sibling_rate), ", ", num(e.history_rate), ")"),
    h("td", {}, e.latency_p90_s == null ? "-" : num(e.latency_p90_s), " (", e.history_latency_p90_s == null ? "-" : num(e.history_latency_p90_s), ")"),
    h("td", {}, list(i.affected_nodes)), h("td", {}, list(i.affected_routes)), h("td", {}, tm(i.opened), badges(str(i.id))));
}
// acknowledged / silenced: what an operator said (S.actions, from the server)
function actionState(id) {
  const a = obj(obj(S.actions)[id]);
  return { acked: fin(a.acked) ? a : null, silenced: fin(a.silenced_until) && a.silenced_until > serverNow() ? a : null };
}
function badges(id) {
  const st = actionState(id);
  return [st.acked ? h("span", { class: "badge acked", title: `by ${str(st.acked.acked_by)}` }, "acknowledged") : "",
          st.silenced ? h("span", { class: "badge silenced" }, "silenced until ", tm(st.silenced.silenced_until)) : ""];
}
function sortedIncidents() {
  return Object.values(S.incidents).map(obj).sort((a, b) => (a.state !== "open") - (b.state !== "open") ||
    (Number(b.updated) || 0) - (Number(a.updated) || 0));
}

function render() {
  const inc = sortedIncidents();
  shownCount = {};
  section("incidents", () => fill("incidents", filtered("incidents", rows(inc, incidentRow), i => ({
    relay: pathNames(i), node: arr(i.affected_nodes), route: arr(i.affected_routes), text: [str(i.id), str(i.root_cause), str(obj(i.context).evidence),
      ...arr(obj(i.evidence).example_event_ids).map(v => str(v))] }), inc)));
  const fleet = Object.values(S.fleet).sort((a, b) => (str(obj(a).site) + str(obj(a).node)).localeCompare(str(obj(b).site) + str(obj(b).node)));
  section("fleet", () => fill("fleet", filtered("fleet", rows(fleet, f =>
    h("tr", { "data-node": `${str(f.site)}/${str(f.node)}` }, h("td", {}, `${str(f.site)}/${str(f.node)}`),
      h("td", { class: f.state === "online" && f.online !== false ? "online" : "offline" }, cut(f.state)),
      h("td", {}, cut(f.model_version)), h("td", {}, num(f.spool_depth)), h("td", {}, tm(f.ts)), h("td", {}, tm(f.last_seen)),
      h("td", { class: f.clock_skewed ? "skewed" : "" }, num(f.clock_offset_s, 3), f.clock_skewed ? " skewed" : ""))),
    f => ({ node: nodeNames(f), text: [str(f.model_version), str(f.state)] }), fleet)));
  const probes = Object.values(S.probes);
  section("probes", () => fill("probes", filtered("probes", rows(probes, p => h("tr", { class: "probe" }, h("td", {}, cut(p.route)), h("td", {}, cut(p.node)),
    h("td", {}, cut(p.outcome)), h("td", {}, fin(p.latency_ms) ? String(Math.round(p.latency_ms)) : num(p.latency_ms)), h("td", {}, num(p.psnr_db, 1)))),
    p => ({ node: nodeNames(p), route: [str(p.route)], outcome: [str(p.outcome)] }), probes)));
  const anomalies = arr(S.anomalies).slice(0, 50);
  section("anomalies", () => fill("anomalies", filtered("anomalies", rows(anomalies, a =>
    h("tr", { class: "anomaly", "data-id": a.id }, h("td", {}, tm(a.ts)), h("td", {}, `${str(a.site)}/${str(a.node)}`),
      h("td", {}, cut(a.kind)), h("td", {}, num(a.score)), h("td", {}, cut(a.feature)),
      h("td", {}, cut(a.route || (Array.isArray(a.relays) && a.relays.length ? a.relays.map(v => str(v)).join(" → ") : a.relay) || "")),
      h("td", {}, evLink(a.id)))),
    a => ({ node: nodeNames(a), relay: arr(a.relays), route: a.route ? [str(a.route)] : [], domain: a.domain ? [str(a.domain)] : [],
            outcome: a.outcome ? [str(a.outcome)] : [], text: [str(a.id), str(a.kind), str(a.feature)] }), anomalies)));
  section("quarantine", () => fill("quarantine", rows(S.quarantine, q => h("tr", { class: "quarantine", "data-reason": q.reason },
    h("td", {}, `${str(q.site)}/${str(q.node)}`), h("td", {}, cut(q.reason)), h("td", {}, num(q.count))))));
  section("link", () => { const l = obj(S.link);
    const kv = (k, v, id) => h("tr", {}, h("th", {}, k), h("td", { id }, v));
    fill("link", [kv("broker", l.connected ? "connected" : "disconnected", "link-state"), kv("reconnect attempts", num(l.reconnect_attempts)),
      kv("connection losses", num(l.connection_losses)), kv("last message", tm(l.last_message)), kv("last ingest", tm(l.last_ingest)),
      kv("acknowledgements, silences", S.actionsError ? h("span", { class: "bad" }, cut(S.actionsError, 400)) : "kept in the state folder", "actions-state")]);
    setText("broker", l.connected ? "connected" : "down");
    setText("last-ingest", tm(l.last_ingest) || "-"); });
  section("counters", () => { const st = obj(S.stats);
    setText("n-events", num(st.events ?? 0)); setText("n-anom", num(st.anomalies ?? 0));
    setText("n-dup", num(st.duplicates ?? 0)); setText("n-quar", num(st.quarantined ?? 0));
    setText("n-inc", String(inc.filter(i => i.state === "open").length)); });
  section("heatmap", drawHeatmap);
  section("intervals", drawIntervals);
  section("timeline", drawTimeline);
  section("incident page", renderIncidentPage);
  section("events", renderEvents);
  section("topology", drawTopology);
  section("filters", renderFilters);
}
// the choices of each filter: what the page holds (bounded), the chosen value kept
function renderFilters() {
  const seen = { relay: new Set(), node: new Set(), route: new Set(), domain: new Set(), outcome: new Set() };
  const add = (f, v) => { if (v != null && v !== "" && seen[f].size < 200) seen[f].add(str(v).slice(0, 100)); };
  const walk = n => { n = obj(n); add("relay", n.name); arr(n.children).forEach(walk); };
  arr(obj(S.topology).children).forEach(walk);
  Object.values(S.fleet).map(obj).forEach(f => add("node", `${str(f.site)}/${str(f.node)}`));
  Object.values(S.probes).map(obj).forEach(p => { add("route", p.route); add("outcome", p.outcome); add("node", `${str(p.site)}/${str(p.node)}`); });
  Object.values(S.incidents).map(obj).forEach(i => { arr(i.affected_nodes).forEach(n => add("node", n)); arr(i.affected_routes).forEach(r => add("route", r)); });
  [...arr(S.anomalies), ...arr(S.events)].map(obj).forEach(a => { add("node", `${str(a.site)}/${str(a.node)}`); arr(a.relays).forEach(r => add("relay", r));
    add("route", a.route); add("domain", a.domain); add("outcome", a.outcome); });
  for (const f of FIELDS) {
    const sel = document.getElementById(`f-${f}`), want = FILTER[f] || "";
    if (want) seen[f].add(want);
    const values = [...seen[f]].sort();
    const sig = values.join("\u0000");
    if (sel.dataset.sig !== sig) { sel.dataset.sig = sig; sel.replaceChildren(h("option", { value: "" }, "any"), ...values.map(v => h("option", { value: v }, v))); }
    sel.value = want;
  }
  const c = shownCount, parts = [];
  for (const [name, [n, all]] of Object.entries(c)) if (n !== all) parts.push(`${name} ${n} of ${all}`);
  setText("filter-count", parts.length ? "showing " + parts.join(", ") : "");
}
for (const f of FIELDS) document.getElementById(`f-${f}`).addEventListener("change", ev => setFilter(f, ev.currentTarget.value));
document.getElementById("f-clear").addEventListener("click", () => {
  for (const f of FIELDS) FILTER[f] = ""; document.getElementById("q").value = ""; searchEvents(); schedule(); });

// -- topology: the transmission-path tree, senders -> relays -> mailboxes --------------------------
const SVG = "http://www.w3.org/2000/svg";
function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) { if (typeof v === "function") e.addEventListener(k, v); else e.setAttribute(k, cut(v)); }
  for (const c of kids) if (c != null && c !== "") e.append(c instanceof Node ? c : cut(c, 2000));
  return e;
}
let topoShown = null;
function drawTopology() {
  const box = document.getElementById("topology"), topo = obj(S.topology);
  const sig = JSON.stringify([topo, FILTER.relay || "", S.actions]);
  if (sig === topoShown) return;            // unchanged: keep the drawing (and the hover)
  topoShown = sig;
  const drawn = [];
  window.mailpulseDrawn = Object.assign(window.mailpulseDrawn || {}, { topology: drawn });
  const roots = arr(topo.children).map(obj);
  if (!roots.length) { box.replaceChildren(h("p", { class: "muted" }, "no paths yet")); return; }
  // lay out: leaves one per row (depth first), a parent in the middle of its children
  let leaves = 0, depth = 1;
  const walk = (n, d) => { n._d = d; depth = Math.max(depth, d); const kids = arr(n.children).map(obj);
    n._kids = kids; if (!kids.length) n._y = leaves++; else { kids.forEach(k => walk(k, d + 1)); n._y = (kids[0]._y + kids[kids.length - 1]._y) / 2; } };
  roots.forEach(r => walk(r, 1));
  const colW = 200, boxW = 160, boxH = 24, rowH = 30, top = 34, width = Math.max(700, depth * colW + 40);
  const height = top + leaves * rowH + 54;
  const X = d => width - 20 - boxW - (d - 1) * colW, Y = n => top + n._y * rowH;
  const svg = sv("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "topology" });
  svg.append(sv("text", { x: X(1), y: 14 }, "receiving relays (mailbox side)"), sv("text", { x: 8, y: 14 }, "sending side (nodes, senders)"));
  const edges = sv("g", {}), nodes = sv("g", {});
  const visit = n => {
    const x = X(n._d), y = Y(n), state = ["ok", "degraded", "incident"].includes(n.state) ? n.state : "ok";
    const match = FILTER.relay && (str(n.name) === FILTER.relay || str(n.host) === FILTER.relay);
    const rate = fin(n.rate) ? `${(n.rate * 100).toFixed(0)} %` : "";
    const g = sv("g", { class: `topo-node topo-${state}-node`, "data-key": n.key, "data-state": state, "data-name": n.name,
      style: "cursor:pointer", click: () => { if (n.incident) openIncident(str(n.incident)); else setFilter("relay", str(n.name)); } },
      sv("title", {}, `${str(n.key)}\n${str(n.name)}: ${state}${n.incident ? " (incident " + str(n.incident) + ")" : ""}\n` +
        `${str(n.anomalies)} of ${str(n.events)} anomalous in the last ${str(topo.window_s)} s (history ${fin(n.history_rate) ? (n.history_rate * 100).toFixed(1) : "?"} %)`),
      sv("rect", { x, y: y - boxH / 2, width: boxW, height: boxH, rx: 4, class: `topo-${state}${match ? " topo-match" : ""}` }),
      sv("text", { x: x + 6, y: y + 4 }, str(n.name).slice(0, 18)),
      sv("text", { x: x + boxW - 6, y: y + 4, "text-anchor": "end", fill: "#555" }, rate));
    nodes.append(g);
    drawn.push({ key: str(n.key), name: str(n.name), state, depth: n._d, match: !!match });
    for (const k of n._kids) {
      const kx = X(k._d) + boxW, ky = Y(k), mx = (kx + x) / 2;
      edges.append(sv("path", { d: `M${kx},${ky} C${mx},${ky} ${mx},${y} ${x},${y}`, class: "topo-edge", "marker-end": "url(#arrow)" }));
      visit(k);
    }
  };
  roots.forEach(visit);
  const defs = sv("defs", {}, sv("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
    sv("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#999" })));
  // legend
  const lg = sv("g", {}); let lx = 8;
  for (const [st, label] of [["ok", "ok"], ["degraded", "degraded (anomaly rate well above its history)"], ["incident", "root cause of an open incident"]]) {
    lg.append(sv("rect", { x: lx, y: height - 40, width: 14, height: 12, class: `topo-${st}` }), sv("text", { x: lx + 18, y: height - 30 }, label));
    lx += 30 + label.length * 6;
  }
  lg.append(sv("text", { x: 8, y: height - 10, fill: "#555" }, `% = anomalous in the last ${str(topo.window_s)} s; arrows: the way mail went` +
    (fin(topo.truncated) && topo.truncated > 0 ? `; ${topo.truncated} more not shown` : "")));
  svg.append(defs, edges, nodes, lg);
  box.replaceChildren(svg);
}

// -- the incident page: #incident=<id> -------------------------------------------------------------
const SEV_COLOUR = { critical: "#d32f2f", major: "#f57c00", minor: "#fbc02d" };
let pageId = null, pageScrolled = false;
const missing = new Set();
function hashId() {
  const m = /^#incident=(.+)$/.exec(location.hash);
  if (!m) return null;
  try { return decodeURIComponent(m[1]); } catch (e) { return m[1]; }
}
function openIncident(id) { location.hash = "incident=" + encodeURIComponent(id); }
function onHash() {
  pageId = hashId(); pageScrolled = false;
  if (pageId && !S.incidents[pageId]) fetchIncident(pageId);
  schedule();
}
async function fetchIncident(id) {
  try {
    const r = await fetch("api/incidents/" + encodeURIComponent(id), { credentials: "same-origin" });
    if (r.status === 404) missing.add(id);
    else if (r.ok) { const d = obj(await r.json()); if (str(d.id) === id && !S.incidents[id]) S.incidents[id] = d; }
  } catch (e) { console.warn("incident", e); }
  schedule();
}
const secs = v => v == null ? "-" : (fin(v) ? `${fmtSeconds(v)} s` : bad(v));
const pct = v => v == null ? "-" : (fin(v) ? `${(v * 100).toFixed(1)} %` : bad(v));
function evLink(id) {
  return h("a", { class: "evid", "data-event": id, title: "find this event", click: ev => { ev.preventDefault(); findEvent(str(id)); } }, cut(id));
}
function filterLink(field, value) {
  return h("a", { class: "id", "data-filter": `${field}=${str(value)}`, click: ev => { ev.preventDefault(); setFilter(field, str(value)); } }, cut(value));
}
let pageShown = null;
function renderIncidentPage() {
  const sec = document.getElementById("incident-page");
  if (!pageId) { sec.classList.add("hidden"); sec.replaceChildren(); pageShown = null; return; }
  sec.classList.remove("hidden");
  const i = S.incidents[pageId];
  const actions = obj(S.actions)[pageId];
  if (i && pageShown && pageShown.i === i && pageShown.id === pageId && pageShown.a === actions) return;   // unchanged
  pageShown = { i, id: pageId, a: actions };
  const close = h("a", { class: "id", href: "#", click: ev => { ev.preventDefault(); history.pushState(null, "", location.pathname); onHash(); } }, "close");
  if (!i) { sec.replaceChildren(h("h2", {}, `Incident ${cut(pageId, 80)} `, close),
    h("p", { class: "muted" }, missing.has(pageId) ? "This collector does not hold that incident (it may be old or from another collector)." : "loading ...")); return; }
  const inc = obj(i), e = obj(inc.evidence), ctx = obj(inc.context);
  const kv = (k, ...v) => h("tr", {}, h("th", {}, k), h("td", {}, ...v));
  const ev = h("table", { id: "incident-evidence" },
    kv(`anomalies / events (last ${fin(e.window_s) ? fmtSeconds(e.window_s) : "?"} s)`, h("span", { class: "ev-counts" }, num(e.anomalies), " / ", num(e.events))),
    kv("anomaly rate", h("span", { class: "ev-rate" }, pct(e.anomaly_rate))),
    kv("siblings' rate, own history", pct(e.sibling_rate), ", ", pct(e.history_rate)),
    kv("history's flags cluster by (1 = independent)", fin(e.history_dispersion) ? e.history_dispersion.toFixed(2) : "-"),
    kv("latency p50 / p90 / p99", h("span", { class: "ev-latency" }, secs(e.latency_p50_s), " / ", secs(e.latency_p90_s), " / ", secs(e.latency_p99_s))),
    kv("latency p90 before", secs(e.history_latency_p90_s)),
    kv("wait at the relay p50 (p90 before)", secs(e.hop_delay_p50_s), " (", secs(e.history_hop_delay_p90_s), ")"),
    kv("evidence of", h("span", { class: "ev-at live-tick" }, tm(inc.evidence_at))));
  const about = h("table", {},
    kv("relay", h("b", {}, cut(ctx.relay || inc.root_cause))), kv("path", cut(ctx.path || inc.root_cause)),
    kv("root cause (tree node)", cut(inc.root_cause)), kv("opened", tm(inc.opened)), kv("updated", tm(inc.updated)),
    kv("resolved", inc.resolved == null ? "-" : tm(inc.resolved)),
    kv("affected nodes", h("span", { id: "incident-nodes" }, ...arr(inc.affected_nodes).flatMap((n, k) => [k ? ", " : "", filterLink("node", n)]))),
    kv("affected routes", h("span", { id: "incident-routes" }, ...arr(inc.affected_routes).flatMap((n, k) => [k ? ", " : "", filterLink("route", n)]))));
  const hist = h("table", { id: "incident-history" }, h("tr", {}, h("th", {}, "time"), h("th", {}, "what"), h("th", {}, "severity")),
    ...rows(inc.history, p => h("tr", {}, h("td", {}, tm(p.t)), h("td", {}, cut(p.kind)), h("td", {}, cut(p.severity)))));
  const exRows = rows(ctx.examples, x => h("tr", { class: "example", "data-event": x.id },
    h("td", {}, tm(x.t ?? x.ts)), h("td", {}, `${str(x.site)}/${str(x.node)}`), h("td", {}, cut(x.kind)), h("td", {}, cut(x.domain)),
    h("td", {}, cut(x.route)), h("td", {}, cut(x.outcome), x.dsn ? ` (${str(x.dsn)})` : ""), h("td", {}, x.delay_s == null && fin(x.waited_s) ? secs(x.waited_s) : secs(x.delay_s)),
    h("td", { class: "hops" }, arr(x.hops).map(v => cut(v)).join(" → ")), h("td", {}, evLink(x.id))));
  const exTable = h("table", { id: "incident-examples" }, h("tr", {}, ...["time", "node", "kind", "to domain", "route", "outcome", "delay", "hops", "event"].map(t => h("th", {}, t))), ...exRows);
  const ids = arr(e.example_event_ids);
  sec.replaceChildren(
    h("h2", { class: `sev-${cut(inc.severity, 20)}` }, `Incident ${cut(inc.id, 80)}: ${str(inc.severity)} at ${str(ctx.relay || inc.root_cause)} (${str(inc.state)}) `, close),
    h("p", { class: "sentence" }, cut(ctx.evidence || "")),
    actionControls(str(inc.id)),
    h("div", { class: "grid" }, h("div", {}, h("h3", {}, "Evidence (live)"), ev), h("div", {}, h("h3", {}, "Where"), about)),
    h("h3", {}, "At this relay, per time bucket"), incidentChart(obj(inc.series)),
    h("h3", {}, "Example deliveries with their hops"), exRows.length ? exTable : h("p", { class: "muted" }, "none remembered"),
    h("p", {}, "events behind it: ", ...ids.flatMap((x, k) => [k ? ", " : "", evLink(x)])),
    h("h3", {}, "History"), hist);
  if (!pageScrolled) { pageScrolled = true; sec.scrollIntoView({ block: "start" }); }
  window.mailpulseIncidentPage = { id: pageId, renders: ((window.mailpulseIncidentPage || {}).renders || 0) + 1 };
}

// the acknowledge / silence controls: built once per incident (a live update keeps what was typed)
let controls = null;
function actionControls(id) {
  if (!controls || controls.id !== id) {
    const note = h("input", { type: "text", id: "action-note", placeholder: "note (optional)", maxlength: 200, size: 30 });
    const dur = h("select", { id: "silence-for" }, ...[["15 min", 900], ["1 hour", 3600], ["4 hours", 14400], ["1 day", 86400], ["1 week", 604800]]
      .map(([t, v]) => h("option", { value: v }, t)));
    dur.value = "3600";
    const status = h("span", { id: "action-status" }), err = h("span", { id: "action-error", class: "bad" });
    const post = (what, body) => act(id, what, Object.assign({ note: note.value }, body), err);
    controls = { id, status, el: h("div", { id: "incident-actions" }, h("p", {}, status), h("p", {},
      h("button", { id: "ack", click: () => post("ack", {}) }, "Acknowledge"),
      h("button", { id: "silence", click: () => post("silence", { duration_s: Number(dur.value) }) }, "Silence"), "for ", dur, " ",
      h("button", { id: "clear-action", click: () => post("clear", {}) }, "Clear"), note, " ", err)) };
  }
  const st = actionState(id), parts = [];
  if (st.acked) parts.push(h("span", { class: "badge acked" }, "acknowledged"), ` by ${str(st.acked.acked_by) || "?"} at `, tm(st.acked.acked), ". ");
  if (st.silenced) parts.push(h("span", { class: "badge silenced" }, "silenced"), ` by ${str(st.silenced.silenced_by) || "?"} until `, tm(st.silenced.silenced_until),
    ": no alert mail until then. ");
  if (!st.acked && !st.silenced) parts.push("Alerts go out as usual. ");
  const note = obj(obj(S.actions)[id]).note;
  if (note) parts.push(`Note: ${str(note)}`);
  controls.status.replaceChildren(...parts.map(p => p instanceof Node ? p : cut(p)));
  return controls.el;
}
async function act(id, what, body, err) {
  err.textContent = "";
  try {
    const r = await fetch(`api/incidents/${encodeURIComponent(id)}/${what}`, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const d = obj(await r.json().catch(() => ({})));
    if (!r.ok) { err.textContent = `${what} failed: ${str(d.error || r.status)}`; return; }
    S.actions = Object.assign({}, S.actions, { [id]: d }); schedule();
  } catch (e) { err.textContent = `${what} failed: ${str(e)}`; }
}

// the incident's chart: anomaly rate (bars, %) and latency p90 (line, s) per bucket, one time axis
function incidentChart(se) {
  const c = h("canvas", { id: "incident-chart", width: 1300, height: 230 });
  const g = c.getContext("2d");
  const drawn = { ticks: [], legend: [], y: [] };
  window.mailpulseDrawn = Object.assign(window.mailpulseDrawn || {}, { incident: drawn });
  const rate = arr(se.anomaly_rate), p90 = arr(se.latency_p90_s), n = Math.max(rate.length, p90.length);
  const t0 = fin(se.t0) ? se.t0 : 0, bs = fin(se.bucket_s) && se.bucket_s > 0 ? se.bucket_s : 10;
  g.font = "11px sans-serif";
  if (!n || !t0) { g.fillStyle = "#888"; g.fillText("no series yet", 10, 20); return c; }
  const left = 70, right = c.width - 200, w = (right - left) / n;
  const panel = (top, height, label, max, unit, fmt) => {
    g.strokeStyle = "#ccc"; g.strokeRect(left, top, right - left, height); g.fillStyle = "#333"; g.textAlign = "right";
    for (const f of [0, 0.5, 1]) { const l = `${fmt(max * f)} ${unit}`; g.fillText(l, left - 6, top + height - f * height + 4); drawn.y.push(l); }
    g.save(); g.translate(12, top + height / 2); g.rotate(-Math.PI / 2); g.textAlign = "center"; g.fillText(label, 0, 0); g.restore();
    g.textAlign = "left";
  };
  // anomaly rate, 0..100 %
  const top1 = 8, h1 = 80;
  panel(top1, h1, "anomalous", 100, "%", v => v.toFixed(0));
  rate.forEach((v, j) => { if (!fin(v)) return; g.fillStyle = v >= 0.5 ? "#d32f2f" : "#5b8def";
    const bh = Math.max(0, Math.min(1, v)) * h1; g.fillRect(left + j * w + 1, top1 + h1 - bh, Math.max(w - 2, 1), bh); });
  // latency p90, 0..max s
  const top2 = top1 + h1 + 16, h2 = 80;
  let max = 0; p90.forEach(v => { if (fin(v) && v > max) max = v; });
  max = max > 0 ? max * 1.1 : 1;
  panel(top2, h2, "latency p90", max, "s", fmtSeconds);
  g.strokeStyle = "#1f2a44"; g.lineWidth = 2; g.beginPath(); let pen = false;
  p90.forEach((v, j) => { if (!fin(v)) { pen = false; return; } const x = left + (j + 0.5) * w, y = top2 + h2 - Math.max(0, v) / max * h2;
    if (pen) g.lineTo(x, y); else g.moveTo(x, y); pen = true; });
  g.stroke(); g.lineWidth = 1;
  timeAxis(g, left, right, top2 + h2 + 2, t0, t0 + n * bs, drawn);
  // legend
  const lx = right + 16; g.textAlign = "left";
  g.fillStyle = "#d32f2f"; g.fillRect(lx, 12, 14, 9); g.fillStyle = "#333"; g.fillText("≥ 50 % anomalous", lx + 18, 21);
  g.fillStyle = "#5b8def"; g.fillRect(lx, 28, 14, 9); g.fillStyle = "#333"; g.fillText("< 50 % anomalous", lx + 18, 37);
  g.strokeStyle = "#1f2a44"; g.lineWidth = 2; g.beginPath(); g.moveTo(lx, top2 + 10); g.lineTo(lx + 14, top2 + 10); g.stroke(); g.lineWidth = 1;
  g.fillText("latency p90 (s)", lx + 18, top2 + 14);
  g.fillStyle = "#555"; g.fillText(`${bs} s per bucket`, lx, top2 + 34);
  drawn.legend.push("≥ 50 % anomalous", "< 50 % anomalous", "latency p90 (s)");
  drawn.rate = rate.filter(fin).length; drawn.p90 = p90.filter(fin).length;
  return c;
}

// -- the incident timeline -------------------------------------------------------------------------
let timelineBars = [];
function serverNow() { return Date.now() / 1000 + S.serverSkew; }
function drawTimeline() {
  const c = document.getElementById("timeline");
  const incs = Object.values(S.incidents).map(obj).filter(i => fin(i.opened)).sort((a, b) => b.opened - a.opened).slice(0, 15);
  const rowH = 18, top = 6, axisH = 36, left = 300, right = c.width - 170;
  c.height = Math.max(112, top + incs.length * rowH + axisH);
  const g = c.getContext("2d"); g.clearRect(0, 0, c.width, c.height); g.font = "11px sans-serif"; g.textAlign = "left";
  const drawn = { rows: [], ticks: [], legend: [] };
  window.mailpulseDrawn = Object.assign(window.mailpulseDrawn || {}, { timeline: drawn });
  timelineBars = [];
  if (!incs.length) { g.fillStyle = "#888"; g.fillText("no incidents", 10, 20); return; }
  const now = serverNow();
  // at least the last 15 min, at most the last week (older starts are cut at the left edge)
  const first = Math.max(now - 7 * 86400, Math.min(now - 900, ...incs.map(i => i.opened)));
  const t0 = first - 0.03 * (now - first), t1 = now;
  const X = t => Math.min(right + 8, Math.max(left, left + (right - left) * (t - t0) / Math.max(t1 - t0, 1)));
  incs.forEach((i, k) => {
    const y = top + k * rowH, ctx = obj(i.context), end = fin(i.resolved) ? i.resolved : now;
    const label = `${str(ctx.relay || i.root_cause).slice(0, 30)}`;
    g.fillStyle = "#222"; g.font = "bold 11px sans-serif"; g.fillText(label, 4, y + 12);
    g.font = "11px sans-serif"; g.fillStyle = "#888"; g.fillText(`${str(i.id).slice(0, 14)} ${i.state === "open" ? "open" : "resolved"}`, 150, y + 12);
    // one segment per severity period (history points), then the points themselves
    const pts = arr(i.history).map(obj).filter(p => fin(p.t));
    let from = i.opened, sev = str((pts[0] || i).severity);
    const seg = (a, b, s) => { g.fillStyle = SEV_COLOUR[s] || "#999"; g.fillRect(X(a), y + 3, Math.max(X(b) - X(a), 2), rowH - 6); };
    pts.forEach(p => { if (p.kind === "severity") { seg(from, p.t, sev); from = p.t; sev = str(p.severity); } });
    seg(from, end, i.state === "open" ? str(i.severity) : sev);
    if (i.state === "open" && X(end) - X(i.opened) > 12) { g.fillStyle = "#222"; g.fillText("▶", X(end) + 2, y + 13); }
    for (const p of pts) {
      const x = X(p.t); g.fillStyle = "#111";
      if (p.kind === "opened") { g.beginPath(); g.arc(x, y + rowH / 2, 4, 0, 7); g.fill(); }
      else if (p.kind === "resolved") g.fillRect(x - 3, y + rowH / 2 - 3, 7, 7);
      else { g.beginPath(); g.moveTo(x, y + 3); g.lineTo(x + 4, y + rowH / 2); g.lineTo(x, y + rowH - 3); g.lineTo(x - 4, y + rowH / 2); g.fill(); }
    }
    if (fin(i.evidence_at) && i.state === "open") { g.strokeStyle = "#1f2a44"; g.beginPath(); g.moveTo(X(i.evidence_at), y + 1); g.lineTo(X(i.evidence_at), y + rowH - 1); g.stroke(); }
    timelineBars.push({ id: str(i.id), y0: y, y1: y + rowH });
    drawn.rows.push({ id: str(i.id), label, x0: X(i.opened), x1: X(end), points: pts.map(p => str(p.kind)) });
  });
  timeAxis(g, left, right, top + incs.length * rowH + 2, t0, t1, drawn);
  // legend: colours by severity and the marks
  let ly = top + 4; const lx = right + 16;
  for (const [s, col] of Object.entries(SEV_COLOUR)) { g.fillStyle = col; g.fillRect(lx, ly, 14, 9); g.fillStyle = "#333"; g.fillText(s, lx + 18, ly + 9); drawn.legend.push(s); ly += 14; }
  g.fillStyle = "#111"; g.beginPath(); g.arc(lx + 7, ly + 5, 4, 0, 7); g.fill(); g.fillStyle = "#333"; g.fillText("opened", lx + 18, ly + 9); ly += 14;
  g.fillStyle = "#111"; g.beginPath(); g.moveTo(lx + 7, ly); g.lineTo(lx + 11, ly + 5); g.lineTo(lx + 7, ly + 10); g.lineTo(lx + 3, ly + 5); g.fill();
  g.fillStyle = "#333"; g.fillText("severity changed", lx + 18, ly + 9); ly += 14;
  g.fillStyle = "#111"; g.fillRect(lx + 4, ly + 2, 7, 7); g.fillStyle = "#333"; g.fillText("resolved", lx + 18, ly + 9); ly += 14;
  g.strokeStyle = "#1f2a44"; g.beginPath(); g.moveTo(lx + 7, ly); g.lineTo(lx + 7, ly + 10); g.stroke(); g.fillText("evidence updated", lx + 18, ly + 9);
  drawn.legend.push("opened", "severity changed", "resolved", "evidence updated");
}
document.getElementById("timeline").addEventListener("click", ev => {
  const c = ev.currentTarget, r = c.getBoundingClientRect(), y = (ev.clientY - r.top) * c.height / r.height;
  const bar = timelineBars.find(b => y >= b.y0 && y < b.y1);
  if (bar) openIncident(bar.id);
});

// -- events: search the recent anomalous events the collector holds --------------------------------
S.events = []; S.eventsQuery = "";
let searchTimer = null, searchSeq = 0;
function currentQuery() {
  const q = new URLSearchParams();
  const v = document.getElementById("q").value.trim(); if (v) q.set("q", v);
  for (const [k, val] of Object.entries(FILTER)) if (val) q.set(k, val);
  q.set("limit", "200");
  return q.toString();
}
async function searchEvents() {
  const query = currentQuery(), seq = ++searchSeq;
  try {
    const r = await fetch("api/events?" + query, { credentials: "same-origin" });
    const d = obj(await r.json());
    if (seq !== searchSeq) return;
    S.events = arr(d.events); S.eventsQuery = query;
  } catch (e) { console.warn("search", e); }
  window.mailpulseSearches = (window.mailpulseSearches || 0) + 1;
  schedule();
}
function searchSoon() { clearTimeout(searchTimer); searchTimer = setTimeout(searchEvents, 250); }
function findEvent(id) {
  document.getElementById("q").value = id;
  searchEvents().then(() => document.getElementById("events-section").scrollIntoView({ block: "start" }));
}
function renderEvents() {
  const active = !!(document.getElementById("q").value.trim() || FIELDS.some(f => FILTER[f]));
  document.getElementById("events-section").classList.toggle("hidden", !active);
  fill("events", rows(S.events, x => h("tr", { class: "event", "data-event": x.id },
    h("td", {}, tm(x.t ?? x.ts)), h("td", {}, cut(x.id)), h("td", {}, `${str(x.site)}/${str(x.node)}`), h("td", {}, cut(x.kind)),
    h("td", {}, cut(x.domain)), h("td", {}, cut(x.route)), h("td", {}, cut(x.outcome)), h("td", {}, x.delay_s == null && fin(x.waited_s) ? secs(x.waited_s) : secs(x.delay_s)),
    h("td", {}, arr(x.hops).map(v => cut(v)).join(" → ")))));
  const asked = [...new URLSearchParams(S.eventsQuery).entries()].filter(([k]) => k !== "limit").map(([k, v]) => `${k} ${v}`).join(", ");
  setText("events-count", `${arr(S.events).length} found by the collector for: ${asked || "everything"}`);
}
function setFilter(field, value) {
  FILTER[field] = value; searchEvents(); schedule();
  document.getElementById("filter-bar").scrollIntoView({ block: "start" });
}
document.getElementById("q").addEventListener("input", () => { searchSoon(); schedule(); });

// -- charts ----------------------------------------------------------------------------------------
// nice time ticks for [t0, t1] seconds: every 10 s ... 1 day, at most ~8
function timeTicks(t0, t1, most) {
  const steps = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const span = Math.max(t1 - t0, 1);
  const step = steps.find(s => span / s <= (most || 8)) || 86400 * Math.ceil(span / 86400 / (most || 8));
  const off = (() => { const d = new Date(t0 * 1000); const p = parts(d);   // align ticks to the local clock
    const local = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second) / 1000; return local - Math.floor(t0); })();
  const out = [];
  for (let t = Math.ceil((t0 + off) / step) * step - off; t <= t1 && out.length < 50; t += step) out.push(t);
  return { ticks: out, step };
}
// the time axis under a plot from x0 to x1 (pixels) for [t0, t1]; labels in the viewer's zone
function timeAxis(g, x0, x1, y, t0, t1, record) {
  const { ticks, step } = timeTicks(t0, t1, Math.max(2, Math.floor((x1 - x0) / 90)));
  if (record) { record.ticks = []; record.axis = `time (${zoneLabel})`; }
  g.strokeStyle = "#888"; g.fillStyle = "#333"; g.font = "11px sans-serif"; g.textAlign = "center";
  g.beginPath(); g.moveTo(x0, y); g.lineTo(x1, y); g.stroke();
  let lastDay = "";
  for (const t of ticks) {
    const x = x0 + (x1 - x0) * (t - t0) / Math.max(t1 - t0, 1e-9);
    g.beginPath(); g.moveTo(x, y); g.lineTo(x, y + 4); g.stroke();
    const d = new Date(t * 1000), day = localDate(d);
    g.fillText(localClock(d, step < 60), x, y + 15);
    if (record) record.ticks.push([t, localClock(d, step < 60)]);
    if (day !== lastDay) { g.fillStyle = "#777"; g.fillText(day, x, y + 27); g.fillStyle = "#333"; lastDay = day; }
  }
  g.textAlign = "right"; g.fillStyle = "#555";
  g.fillText(`time (${zoneLabel})`, x1, y + 27); g.textAlign = "left";
}
// the end of a text that fits ``width`` pixels ("…" in front when cut)
function fitLeft(g, text, width) {
  let t = text.slice(-200);
  if (g.measureText(t).width <= width) return t;
  while (t.length > 1 && g.measureText("…" + t).width > width) t = t.slice(1);
  return "…" + t;
}
const heatColour = x => `hsl(${Math.round(120 - 120 * x)}, 75%, ${Math.round(85 - 40 * x)}%)`;
function fmtSeconds(v) { return v < 1 ? v.toPrecision(2) : (v < 10 ? v.toFixed(1) : v.toFixed(0)); }
function drawHeatmap() {
  const c = document.getElementById("heatmap"), hm = obj(S.heatmap);
  const rs = arr(hm.rows).map(obj).filter(r => Array.isArray(r.values) && r.values.length).slice(0, 40);
  const rowH = 20, top = 8, axisH = 36, left = 300, legendW = 150;
  const drawn = { rows: [], paths: [], ticks: [], legend: [] };
  window.mailpulseDrawn = Object.assign(window.mailpulseDrawn || {}, { heatmap: drawn });
  c.height = Math.max(96, top + rs.length * rowH + axisH);
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height); g.font = "11px sans-serif"; g.textAlign = "left";
  if (!rs.length) { g.fillStyle = "#888"; g.fillText("no latency data yet", 10, 20); return; }
  const n = Math.min(200, rs[0].values.length), right = c.width - legendW, w = (right - left) / n;
  let max = 0; rs.forEach(r => r.values.forEach(v => { if (fin(v) && v > max) max = v; }));
  const scale = v => Math.log1p(Math.max(v, 0)) / Math.log1p(max || 1);
  rs.forEach((r, i) => {
    const y = top + i * rowH, path = str(r.hop), name = str(r.name || path.split(" > ").slice(-1)[0]);
    g.fillStyle = "#222"; g.font = "bold 11px sans-serif"; g.fillText(name.slice(0, 24), 4, y + rowH * 0.7);
    drawn.rows.push(name.slice(0, 24)); drawn.paths.push(str(r.path_names || path).slice(-200));
    g.fillStyle = "#888"; g.font = "11px sans-serif";
    g.fillText(fitLeft(g, str(r.path_names || path), left - 136), 130, y + rowH * 0.7);
    r.values.slice(0, n).forEach((v, j) => {
      g.fillStyle = fin(v) ? heatColour(scale(v)) : "#f0f0f0";
      g.fillRect(left + j * w, y, Math.max(w - 1, 1), rowH - 1);
    });
  });
  // time axis: bucket j covers [t0 + j*bucket_s, t0 + (j+1)*bucket_s)
  const t0 = fin(hm.t0) ? hm.t0 : 0, bs = fin(hm.bucket_s) && hm.bucket_s > 0 ? hm.bucket_s : 10;
  if (t0 > 0) timeAxis(g, left, right, top + rs.length * rowH + 2, t0, t0 + n * bs, drawn);
  // the colour legend, with units
  const lx = right + 30, ly = top, lh = Math.max(40, rs.length * rowH - 4);
  for (let k = 0; k < lh; k++) { g.fillStyle = heatColour(1 - k / lh); g.fillRect(lx, ly + k, 14, 1); }
  g.strokeStyle = "#888"; g.strokeRect(lx, ly, 14, lh);
  g.fillStyle = "#333"; g.font = "11px sans-serif";
  const inv = x => Math.expm1(x * Math.log1p(max || 1));
  for (const x of [1, 0.5, 0]) { const l = `${fmtSeconds(inv(x))} s`; g.fillText(l, lx + 18, ly + (1 - x) * lh + 4); drawn.legend.push(l); }
  g.fillStyle = "#f0f0f0"; g.fillRect(lx, ly + lh + 8, 14, 10); g.fillStyle = "#555"; g.fillText("no data", lx + 18, ly + lh + 17);
  g.save(); g.translate(lx - 6, ly + lh / 2); g.rotate(-Math.PI / 2); g.textAlign = "center";
  g.fillText("median delay (s, log scale)", 0, 0); g.restore(); drawn.legend_title = "median delay (s, log scale)";
  g.fillStyle = "#555"; g.fillText(`${bs} s per column`, lx, ly + lh + 32);
}

// -- per-route latency with its prediction interval ----------------------------------------------
// one chart per route: each delivery's latency (a dot; above its interval a red ▲, below a blue ▼)
// and the interval in force when it arrived as a shaded band, log-scale seconds, time in the viewer's zone
const IV_SIDE = { above: "#c62828", below: "#1f4fbf" };
function drawIntervals() {
  const iv = obj(S.intervals), routes = arr(iv.routes).map(obj).slice(0, 12);
  const level = fin(iv.level) && iv.level > 0 && iv.level < 1 ? iv.level : 0.9, pct = `${Math.round(level * 100)} %`;
  const drawn = { routes: [], level: pct };
  window.mailpulseDrawn = Object.assign(window.mailpulseDrawn || {}, { intervals: drawn });
  const box = document.getElementById("intervals");
  if (!routes.length) { box.replaceChildren(h("p", { class: "muted" }, "no deliveries yet")); return; }
  const out = [];
  for (const r of routes) {
    const pts = arr(r.points).filter(p => Array.isArray(p) && fin(p[0]) && fin(p[1]) && p[1] > 0).slice(-300);
    const cn = k => { const v = obj(r.counts)[k]; return fin(v) && v >= 0 ? v : 0; };
    const n = cn("inside") + cn("above") + cn("below");
    const cov = n ? `inside ${cn("inside")} of ${n} (${(100 * cn("inside") / n).toFixed(1)} %), above ${cn("above")}, below ${cn("below")}` : "";
    out.push(h("h3", { class: "iv-route" }, cut(r.route, 200), h("span", { class: "muted" }, cov)));
    const c = h("canvas", { class: "iv-chart", width: 1300, height: 170, "data-route": cut(r.route, 200) });
    out.push(c);
    const g = c.getContext("2d"), rec = { route: cut(r.route, 200), points: pts.length, band: 0, above: 0, below: 0, inside: 0, y: [], legend: [] };
    drawn.routes.push(rec);
    g.font = "11px sans-serif";
    if (!pts.length) { g.fillStyle = "#888"; g.fillText("no deliveries yet", 10, 20); continue; }
    const good = p => fin(p[2]) && fin(p[3]) && p[2] > 0 && p[3] > 0;
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) for (const v of good(p) ? [p[1], p[2], p[3]] : [p[1]]) { lo = Math.min(lo, Math.log2(v)); hi = Math.max(hi, Math.log2(v)); }
    if (hi - lo < 1) { const m = (hi + lo) / 2; lo = m - 0.5; hi = m + 0.5; }
    lo -= 0.1 * (hi - lo); hi += 0.1 * (hi - lo);
    let t0 = pts[0][0], t1 = pts[pts.length - 1][0];
    if (t1 - t0 < 10) { t0 = t1 - 10; }
    const left = 70, right = c.width - 200, top = 8, ph = 120;
    const X = t => left + (right - left) * (t - t0) / (t1 - t0), Y = v => top + ph - (Math.log2(v) - lo) / (hi - lo) * ph;
    g.strokeStyle = "#ccc"; g.strokeRect(left, top, right - left, ph);
    g.fillStyle = "#333"; g.textAlign = "right";
    for (const f of [0, 0.5, 1]) { const l = `${fmtSeconds(2 ** (lo + f * (hi - lo)))} s`; g.fillText(l, left - 6, top + ph - f * ph + 4); rec.y.push(l); }
    g.save(); g.translate(12, top + ph / 2); g.rotate(-Math.PI / 2); g.textAlign = "center"; g.fillText("latency (s, log)", 0, 0); g.restore();
    // the band: each delivery's interval from halfway to the previous delivery to halfway to the next
    g.fillStyle = "rgba(91, 141, 239, 0.28)";
    pts.forEach((p, k) => {
      if (!good(p)) return;
      const x = X(p[0]), xa = k ? (X(pts[k - 1][0]) + x) / 2 : x, xb = k + 1 < pts.length ? (x + X(pts[k + 1][0])) / 2 : x + 2;
      const ya = Y(p[3]), yb = Y(p[2]);
      g.fillRect(xa, ya, Math.max(xb - xa, 1), Math.max(yb - ya, 1)); rec.band += 1;
    });
    // the deliveries
    for (const p of pts) {
      const x = X(p[0]), y = Y(p[1]), side = str(p[4]);
      if (side === "above" || side === "below") {
        g.fillStyle = IV_SIDE[side]; g.beginPath();
        if (side === "above") { g.moveTo(x, y - 5); g.lineTo(x - 4, y + 3); g.lineTo(x + 4, y + 3); }
        else { g.moveTo(x, y + 5); g.lineTo(x - 4, y - 3); g.lineTo(x + 4, y - 3); }
        g.closePath(); g.fill(); rec[side] += 1;
      } else { g.fillStyle = "#333"; g.fillRect(x - 1.5, y - 1.5, 3, 3); rec.inside += 1; }
    }
    timeAxis(g, left, right, top + ph + 2, t0, t1, rec);
    // legend, with units
    const lx = right + 16; g.textAlign = "left";
    g.fillStyle = "rgba(91, 141, 239, 0.28)"; g.fillRect(lx, 10, 14, 9); g.fillStyle = "#333"; g.fillText(`${pct} interval`, lx + 18, 19);
    g.fillRect(lx + 5, 29, 3, 3); g.fillText("delivery latency (s)", lx + 18, 35);
    g.fillStyle = IV_SIDE.above; g.beginPath(); g.moveTo(lx + 7, 42); g.lineTo(lx + 3, 50); g.lineTo(lx + 11, 50); g.fill();
    g.fillStyle = "#333"; g.fillText("above its interval", lx + 18, 51);
    g.fillStyle = IV_SIDE.below; g.beginPath(); g.moveTo(lx + 7, 68); g.lineTo(lx + 3, 60); g.lineTo(lx + 11, 60); g.fill();
    g.fillStyle = "#333"; g.fillText("below its interval", lx + 18, 67);
    rec.legend.push(`${pct} interval`, "delivery latency (s)", "above its interval", "below its interval");
  }
  box.replaceChildren(...out);
}

// -- live updates ----------------------------------------------------------------------------------
const key = (...p) => p.map(str).join("/");
function apply(kind, d) {
  if (kind === "state") {
    d = obj(d);
    S.fleet = {}; arr(d.fleet).map(obj).forEach(f => { S.fleet[key(f.site, f.node)] = f; });
    S.anomalies = arr(d.anomalies); S.incidents = {}; arr(d.incidents).map(obj).forEach(i => { S.incidents[str(i.id)] = i; });
    S.probes = {}; arr(d.probes).map(obj).forEach(p => { S.probes[key(p.site, p.node, p.route)] = p; });
    S.heatmap = obj(d.heatmap); S.stats = obj(d.stats); S.quarantine = arr(d.quarantine); S.link = obj(d.link);
    if (fin(d.server_time)) S.serverSkew = d.server_time - Date.now() / 1000;
    S.actions = obj(d.actions); S.topology = obj(d.topology); S.actionsError = d.actions_error;
    S.intervals = obj(d.intervals);
  } else if (kind === "anomaly") {
    d = obj(d);
    // after a resync snapshot the newest anomalies may arrive once more: keep one row per id
    if (!S.anomalies.some(a => obj(a).id === d.id)) { S.anomalies.unshift(d); S.anomalies.length = Math.min(S.anomalies.length, 50); }
  }
  else if (kind === "incident") { d = obj(d); S.incidents[str(d.id)] = d; }
  else if (kind === "action") { d = obj(d); S.actions = Object.assign({}, S.actions, { [str(d.id)]: d }); }
  else if (kind === "fleet") { d = obj(d); S.fleet[key(d.site, d.node)] = d; }
  else if (kind === "probe") { d = obj(d); S.probes[key(d.site, d.node, d.route)] = d; }
  else if (kind === "heatmap") S.heatmap = obj(d);
  else if (kind === "topology") S.topology = obj(d);
  else if (kind === "intervals") S.intervals = obj(d);
  else if (kind === "stats") S.stats = obj(d);
  else if (kind === "health") { d = obj(d); S.link = obj(d.link); S.quarantine = arr(d.quarantine); }
  window.mailpulseUpdates = (window.mailpulseUpdates || 0) + 1;
  document.getElementById("last").textContent = "updated " + localClock(new Date(), true);
}
let pending = false;
function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } }
document.getElementById("tz").textContent = zoneLabel;
const es = new EventSource("events");
for (const k of ["state", "anomaly", "incident", "action", "topology", "fleet", "probe", "heatmap", "intervals", "stats", "health"])
  es.addEventListener(k, m => {
    let d; try { d = JSON.parse(m.data); } catch (e) { window.mailpulseBadMessages = (window.mailpulseBadMessages || 0) + 1; return; }
    try { apply(k, d); } catch (e) { window.mailpulseRenderErrors = (window.mailpulseRenderErrors || 0) + 1; console.error(k, e); }
    schedule(); });
window.addEventListener("hashchange", onHash);
onHash();
searchEvents();
es.onopen = () => { const e = document.getElementById("conn"); e.textContent = "live"; e.className = "live"; };
es.onerror = () => { const e = document.getElementById("conn"); e.textContent = "reconnecting"; e.className = "down"; };
