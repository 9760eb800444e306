// The console's "province" and "requests" tabs (see supervisor.js for Console.tab).
//
// Province now: a day's figures per prefecture (GET /api/v1/console/province, asked again
// every few seconds while the tab is open), on a map of Hunan drawn here as SVG from the
// registry's coordinates (GET /api/v1/console/map): every market a dot (gig markets squares,
// micro-markets small circles), orange and larger with open requests; each prefecture the
// region its markets cover, its seat labelled. Clicking a prefecture shows its markets' figures;
// clicking a market searches its requests.
// Requests: search the archive; a request's timeline lists every candidate and reason, as
// `replay timeline --request` prints it.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const CHINA_TZ = "Asia/Shanghai";
const FIGURES = [
  ["open", "待派单", "open"], ["filled", "已招满", "filled"], ["expired", "已过期", "expired"],
  ["cancelled", "已取消", "cancelled"], ["rejected", "被拒绝", "rejected"],
  ["available", "可派工人", "available"], ["offered", "待答复", "offered"],
  ["busy", "在岗", "busy"],
];
const KIND = { gig: "零工市场 gig market", micro: "社区微市场 micro-market" };
const EVENT_ZH = {
  HireRequested: "发布需求", HireCancelled: "驿站取消", WaveSent: "派单波次",
  RadiusWidened: "扩大范围", OfferMade: "发出邀约", OfferAccepted: "接受邀约",
  OfferDeclined: "拒绝邀约", OfferWithdrawn: "撤回邀约", WorkerAssigned: "录用",
  RequestFilled: "已招满", RequestExpired: "已过期", RequestCancelled: "已取消",
  RequestRejected: "被拒绝", Hired: "通知录用", JobReported: "驿站报告", JobChanged: "工作变更",
};
const VERDICT_ZH = {
  offered: "已邀约", taken: "已被占用", already_offered: "此前已邀约", not_needed: "人数已够",
};

// --- small helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chinaTime(ms, withDate) {
  const opts = { timeZone: CHINA_TZ, hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (withDate) Object.assign(opts, { year: "numeric", month: "2-digit", day: "2-digit" });
  return new Date(ms).toLocaleString("zh-CN", opts);
}

function chinaToday() {
  return new Date().toLocaleDateString("sv-SE", { timeZone: CHINA_TZ });  // YYYY-MM-DD
}

// "2026-11-26T07:00" read as China Standard Time, in epoch ms (NaN when blank).
function chinaMs(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})$/.exec(text || "");
  if (!m) return NaN;
  return Date.UTC(+m[1], m[2] - 1, +m[3], +m[4], +m[5]) - 8 * 3600 * 1000;
}

function showError(node, e) { node.textContent = e ? (e.message || String(e)) : ""; }

// --- the map -----------------------------------------------------------------------------------

const ProvinceMap = {
  W: 560, H: 0, PAD: 16,
  data: null, dots: new Map(), hulls: new Map(), counts: new Map(), node: null,
  project: null,

  async load() {
    if (!this.data) this.data = await Console.get("/api/v1/console/map");
    return this.data;
  },

  draw(onPick) {
    const { prefectures, markets } = this.data;
    const lons = markets.map((m) => m[2]), lats = markets.map((m) => m[3]);
    const [x0, x1, y0, y1] = [Math.min(...lons), Math.max(...lons), Math.min(...lats), Math.max(...lats)];
    const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
    const scale = (this.W - 2 * this.PAD) / ((x1 - x0) * k);
    this.H = Math.round((y1 - y0) * scale + 2 * this.PAD);
    this.project = (lon, lat) => [this.PAD + (lon - x0) * k * scale, this.PAD + (y1 - lat) * scale];
    const root = svg("svg", {
      viewBox: `0 0 ${this.W} ${this.H}`, class: "prov-map", role: "img",
      "aria-label": "湖南省市场分布图 Map of Hunan's markets",
    });
    const byPref = new Map();
    for (const m of markets) {
      if (!byPref.has(m[4])) byPref.set(m[4], []);
      byPref.get(m[4]).push(this.project(m[2], m[3]));
    }
    // Each prefecture: a disc around each of its markets, drawn as one group (its opacity
    // applied once), so the prefecture reads as a region and a click lands on the right one.
    const areas = svg("g", { class: "prov-areas" });
    prefectures.forEach((p, i) => {
      const area = svg("g", { class: "prov-area", "data-code": p.code, tabindex: "0", role: "button",
        "aria-label": `${p.name_zh} ${p.name_en}` });
      area.append(svg("title", {}, `${p.name_zh} ${p.name_en}`));
      for (const [x, y] of byPref.get(p.code) || []) {
        area.append(svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 7 }));
      }
      area.addEventListener("click", () => onPick(p.code));
      area.addEventListener("keydown", (e) => { if (e.key === "Enter") onPick(p.code); });
      // Pastel hues far apart for neighbouring codes: 14 steps of 5/14 of the circle.
      area.style.setProperty("--area", `hsl(${Math.round((i * 360 * 5) / 14) % 360}, 42%, 86%)`);
      this.hulls.set(p.code, area);
      areas.append(area);
    });
    root.append(areas);
    const dots = svg("g", { class: "prov-dots" });
    for (const m of markets.filter((x) => x[1] === "micro").concat(markets.filter((x) => x[1] !== "micro"))) {
      const [x, y] = this.project(m[2], m[3]);
      const dot = m[1] === "gig"
        ? svg("rect", { x: (x - 2.2).toFixed(1), y: (y - 2.2).toFixed(1), width: 4.4, height: 4.4, class: "prov-dot gig" })
        : svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 1.1, class: "prov-dot micro" });
      dot.dataset.market = m[0];
      dot.dataset.x = x; dot.dataset.y = y;
      dot.addEventListener("click", () => onPick(m[4]));
      this.dots.set(m[0], dot);
      dots.append(dot);
    }
    root.append(dots);
    this.hot = svg("g", { class: "prov-hot" });
    root.append(this.hot);
    const labels = svg("g", { class: "prov-labels" });
    const taken = prefectures.map((p) => this.project(p.seat_lon, p.seat_lat)).map(([x, y]) => [x - 4, y - 4, x + 4, y + 4]);
    for (const p of prefectures) {
      const [x, y] = this.project(p.seat_lon, p.seat_lat);
      labels.append(svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 3.2, class: "prov-seat" }));
      const [lx, ly, anchor] = labelPlace(x, y, 11 * [...p.name_zh].length + 5.5 * p.name_en.length + 24, taken);
      const label = svg("text", { x: lx.toFixed(1), y: ly.toFixed(1), "text-anchor": anchor, class: "prov-label", "data-code": p.code });
      label.append(svg("tspan", { class: "zh" }, p.name_zh));
      label.append(svg("tspan", { class: "en", dx: 3 }, p.name_en));
      const count = svg("tspan", { class: "count", dx: 4 }, "");
      label.append(count);
      this.counts.set(p.code, count);
      label.addEventListener("click", () => onPick(p.code));
      labels.append(label);
    }
    root.append(labels);
    this.node = root;
    return root;
  },

  // Markets with open requests: an orange circle over the dot, its area growing with them.
  paint(openMarkets, prefectures, selected) {
    this.hot.replaceChildren();
    for (const [id, n] of Object.entries(openMarkets)) {
      const dot = this.dots.get(id);
      if (!dot) continue;
      const r = 2.5 + 1.8 * Math.sqrt(n);
      const c = svg("circle", { cx: dot.dataset.x, cy: dot.dataset.y, r: r.toFixed(1), class: "prov-open", "data-market": id, "data-open": n });
      c.append(svg("title", {}, `${id}: ${n} 待派单 open`));
      this.hot.append(c);
    }
    for (const p of prefectures) {
      this.counts.get(p.code).textContent = p.figures.open ? `· ${p.figures.open}` : "";
      const area = this.hulls.get(p.code);
      area.classList.toggle("selected", p.code === selected);
      if (p.code === selected) area.parentNode.append(area);  // drawn last: whole, on top
    }
  },
};

// Where a seat's label goes: right and above it unless that covers a label or seat placed
// already (Zhuzhou and Xiangtan are 20 km apart); then below, then to the left.
function labelPlace(x, y, width, taken) {
  const tries = [[x + 5, y - 4, "start", x + 5, x + 5 + width], [x + 5, y + 13, "start", x + 5, x + 5 + width],
    [x - 5, y - 4, "end", x - 5 - width, x - 5], [x - 5, y + 13, "end", x - 5 - width, x - 5]];
  const free = (b) => !taken.some((o) => b[0] < o[2] && o[0] < b[2] && b[1] < o[3] && o[1] < b[3]);
  for (const [lx, ly, anchor, left, right] of tries) {
    const box = [left, ly - 10, right, ly + 2];
    if (free(box.map((v, i) => v + (i < 2 ? 0.5 : -0.5)))) {
      taken.push(box);
      return [lx, ly, anchor];
    }
  }
  taken.push([x + 5, y - 14, x + 5 + width, y - 2]);
  return [x + 5, y - 4, "start"];
}

// --- province now ------------------------------------------------------------------------------

const Province = {
  section: null, timer: null, selected: null, day: null, last: null,

  build(section) {
    this.section = section;
    section.replaceChildren(
      el("h2", {}, "全省实况 Province now"),
      el("div", { class: "prov-bar" },
        el("label", {}, "日期 Day ", el("input", { id: "prov-day", type: "date" })),
        el("button", { id: "prov-today", class: "secondary", type: "button" }, "今天 Today"),
        el("span", { id: "prov-updated", class: "prov-updated", "aria-live": "polite" })),
      el("p", { id: "prov-error", class: "error", role: "alert" }),
      el("div", { id: "prov-total", class: "prov-total" }),
      el("div", { class: "prov-layout" },
        el("figure", { class: "prov-figure" },
          el("div", { id: "prov-map" }, "地图加载中 loading the map …"),
          el("figcaption", { class: "prov-legend" },
            el("span", { class: "key gig" }), "零工市场 gig market ",
            el("span", { class: "key micro" }), "社区微市场 micro-market ",
            el("span", { class: "key open" }), "有待派单需求 open requests (越大越多 larger: more) ",
            el("span", { class: "key seat" }), "市州政府驻地 prefecture seat")),
        el("div", { class: "prov-side" },
          el("div", { class: "prov-scroll" }, el("table", { id: "prov-table", class: "prov-table" })),
          el("div", { id: "prov-drill", class: "prov-drill" }))));
    $("prov-day").value = this.day = chinaToday();
    $("prov-day").onchange = () => { this.day = $("prov-day").value || chinaToday(); this.refresh(); };
    $("prov-today").onclick = () => { $("prov-day").value = this.day = chinaToday(); this.refresh(); };
  },

  async show(section) {
    if (this.section !== section) this.build(section);
    try {
      await ProvinceMap.load();
      if (!ProvinceMap.node) $("prov-map").replaceChildren(ProvinceMap.draw((code) => this.pick(code)));
    } catch (e) { showError($("prov-error"), e); }
    this.refresh();
  },

  hide() { clearTimeout(this.timer); this.timer = null; },

  pick(code) {
    this.selected = this.selected === code ? null : code;
    this.refresh();
  },

  async refresh() {
    clearTimeout(this.timer);
    let wait = 3;
    try {
      const q = new URLSearchParams({ day: this.day });
      if (this.selected) q.set("prefecture", this.selected);
      const data = await Console.get("/api/v1/console/province?" + q);
      wait = data.poll_s || wait;
      this.last = data;
      this.render(data);
      showError($("prov-error"), null);
    } catch (e) {
      showError($("prov-error"), e);
    }
    if (Console.current === "province") this.timer = setTimeout(() => this.refresh(), wait * 1000);
  },

  render(data) {
    const lag = data.archive_lag === null ? "无归档进程 no archiver yet" : `归档延迟 archive lag ${data.archive_lag}`;
    $("prov-updated").textContent = `更新于 updated ${chinaTime(data.at_ms)} · ${lag}`;
    $("prov-total").replaceChildren(...FIGURES.map(([key, zh, en]) =>
      el("div", { class: "prov-card " + key, "data-figure": key },
        el("span", { class: "n" }, data.total[key]), el("span", { class: "what" }, `${zh} ${en}`))));
    this.renderTable(data);
    if (ProvinceMap.node) ProvinceMap.paint(data.open_markets, data.prefectures, this.selected);
    this.renderDrill(data);
  },

  renderTable(data) {
    const head = el("tr", {}, el("th", { scope: "col" }, "市州 Prefecture"),
      ...FIGURES.map(([, zh, en]) => el("th", { scope: "col" }, zh, el("br"), el("small", {}, en))));
    const rows = data.prefectures.map((p) => el("tr", {
      "data-code": p.code, tabindex: "0", "aria-selected": String(p.code === this.selected),
      onclick: () => this.pick(p.code), onkeydown: (e) => { if (e.key === "Enter") this.pick(p.code); },
    }, el("th", { scope: "row" }, `${p.name_zh} `, el("small", {}, p.name_en)),
      ...FIGURES.map(([key]) => el("td", { "data-figure": key }, p.figures[key]))));
    const total = el("tr", { class: "total" }, el("th", { scope: "row" }, "全省 ", el("small", {}, "Hunan")),
      ...FIGURES.map(([key]) => el("td", { "data-figure": key }, data.total[key])));
    $("prov-table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows, total));
  },

  renderDrill(data) {
    const box = $("prov-drill");
    const p = data.prefectures.find((x) => x.code === this.selected);
    if (!p) {
      box.replaceChildren(el("p", { class: "hint" }, "点击地图或表格中的市州查看其市场 Click a prefecture on the map or in the table to see its markets."));
      return;
    }
    const head = el("tr", {}, el("th", { scope: "col" }, "市场 Market"),
      ...FIGURES.map(([, zh, en]) => el("th", { scope: "col" }, zh, el("br"), el("small", {}, en))));
    const rows = data.markets.map((m) => el("tr", {
      "data-market": m.market_id, tabindex: "0", title: "查询该市场的需求 search this market's requests",
      onclick: () => Requests.forMarket(m.market_id),
    }, el("th", { scope: "row" }, `${m.name_zh} `, el("small", {}, `${m.name_en} · ${m.market_id} · ${KIND[m.kind] || m.kind}`)),
      ...FIGURES.map(([key]) => el("td", { "data-figure": key }, m.figures[key]))));
    box.replaceChildren(
      el("h3", {}, `${p.name_zh} ${p.name_en}: `,
        el("small", {}, `今日有动态的市场 ${p.active} / ${p.markets} markets active`)),
      rows.length
        ? el("div", { class: "prov-scroll" }, el("table", { class: "prov-table prov-markets" }, el("thead", {}, head), el("tbody", {}, ...rows)))
        : el("p", { class: "hint" }, "今日暂无动态 Nothing yet today."));
  },
};

// --- requests --------------------------------------------------------------------------------

const Requests = {
  section: null,

  build(section) {
    this.section = section;
    const skill = el("select", { id: "rq-skill" }, el("option", { value: "" }, "全部工种 any skill"));
    fillSkills(skill, "");
    const status = el("select", { id: "rq-status" }, el("option", { value: "" }, "全部状态 any status"));
    for (const s of ["open", "filled", "expired", "cancelled", "rejected"]) status.add(new Option(STATUS[s], s));
    section.replaceChildren(
      el("h2", {}, "需求查询 Request search"),
      el("form", { id: "rq-form", class: "rq-form" },
        el("label", {}, "需求编号 Request id", el("input", { id: "rq-id", maxlength: "140", autocomplete: "off" })),
        el("label", {}, "市场编号 Market id", el("input", { id: "rq-market", maxlength: "140", autocomplete: "off", placeholder: "G4301001" })),
        el("label", {}, "工种 Skill", skill),
        el("label", {}, "状态 Status", status),
        el("label", {}, "从 From (北京时间 China time)", el("input", { id: "rq-from", type: "datetime-local" })),
        el("label", {}, "到 To", el("input", { id: "rq-to", type: "datetime-local" })),
        el("label", {}, "条数 Limit", el("input", { id: "rq-limit", type: "number", min: "1", max: "200", value: "50" })),
        el("button", { id: "rq-search", type: "submit" }, "查询 Search")),
      el("p", { class: "hint" }, "不填时间：最近一天；填需求编号：不限时间。Without times: the last day; with a request id: any time."),
      el("p", { id: "rq-error", class: "error", role: "alert" }),
      el("p", { id: "rq-count", class: "hint", "aria-live": "polite" }),
      el("div", { class: "prov-scroll" }, el("table", { id: "rq-results", class: "prov-table rq-table" })),
      el("div", { id: "rq-timeline", class: "rq-timeline" }));
    $("rq-form").onsubmit = (e) => { e.preventDefault(); this.search(); };
  },

  show(section) {
    if (this.section !== section) { this.build(section); this.search(); }
  },

  forMarket(marketId) {
    const section = $("tab-requests");
    if (this.section !== section) this.build(section);
    $("rq-id").value = "";
    $("rq-market").value = marketId;
    Console.open("requests");
    this.search();
  },

  query() {
    const q = new URLSearchParams();
    const put = (name, value) => { if (value !== "" && value !== null && !Number.isNaN(value)) q.set(name, value); };
    put("request_id", $("rq-id").value.trim());
    put("market_id", $("rq-market").value.trim());
    put("skill", $("rq-skill").value);
    put("status", $("rq-status").value);
    put("from", chinaMs($("rq-from").value));
    put("to", chinaMs($("rq-to").value));
    put("limit", $("rq-limit").value);
    return q;
  },

  async search() {
    showError($("rq-error"), null);
    try {
      const found = await Console.get("/api/v1/console/requests?" + this.query());
      this.renderResults(found);
    } catch (e) { showError($("rq-error"), e); }
  },

  renderResults(found) {
    $("rq-count").textContent = `${found.requests.length} 条 requests, ${chinaTime(found.from_ms, true)} – ${found.to_ms >= 4e12 ? "…" : chinaTime(found.to_ms, true)}`;
    const cols = [["需求 Request"], ["发布 Posted"], ["市场 Market"], ["工种 Skill"], ["人数 Headcount"],
      ["日薪 Wage ¥"], ["状态 Status"], ["邀约 Offers"], ["录用 Assigned"]];
    const head = el("tr", {}, ...cols.map(([t]) => el("th", { scope: "col" }, t)));
    const rows = found.requests.map((r) => el("tr", {
      "data-request": r.request_id, "data-status": r.status, tabindex: "0",
      onclick: () => this.timeline(r.request_id), onkeydown: (e) => { if (e.key === "Enter") this.timeline(r.request_id); },
    },
    el("td", { class: "mono" }, r.request_id),
    el("td", {}, chinaTime(r.posted_at_ms, true)),
    el("td", {}, `${r.market_zh} `, el("small", {}, `${r.market_en} · ${r.market_id}`)),
    el("td", {}, SKILLS[r.skill] || r.skill),
    el("td", { class: "num" }, r.headcount),
    el("td", { class: "num" }, r.wage_yuan_per_day),
    el("td", { class: "status " + r.status }, STATUS[r.status] || r.status),
    el("td", { class: "num" }, r.offers),
    el("td", { class: "num" }, `${r.assigned} / ${r.headcount}`)));
    $("rq-results").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  },

  async timeline(requestId) {
    const box = $("rq-timeline");
    box.replaceChildren(el("p", { class: "hint" }, `${requestId} …`));
    for (const tr of document.querySelectorAll("#rq-results tbody tr")) {
      tr.setAttribute("aria-selected", String(tr.dataset.request === requestId));
    }
    try {
      const t = await Console.get(`/api/v1/console/requests/${encodeURIComponent(requestId)}/timeline`);
      this.renderTimeline(box, t);
      box.scrollIntoView({ block: "start" });
    } catch (e) { box.replaceChildren(el("p", { class: "error", role: "alert" }, e.message)); }
  },

  renderTimeline(box, t) {
    const items = t.events.map((e) => {
      const li = el("li", { class: "tl-event", "data-type": e.type },
        el("time", {}, e.clock),
        el("span", { class: "tl-type" }, `${EVENT_ZH[e.type] || ""} ${e.type}`),
        el("span", { class: "tl-line" }, e.lines[0]));
      if (e.candidates) li.append(this.candidates(e.candidates));
      else if (e.lines.length > 1) li.append(el("pre", { class: "tl-more" }, e.lines.slice(1).join("\n")));
      return li;
    });
    box.replaceChildren(
      el("h3", {}, `时间线 ${t.title}`),
      el("p", { class: "hint" }, "北京时间 China Standard Time; 每个候选工人及原因 every candidate and the reason."),
      el("ol", { class: "tl-list" }, ...items),
      el("details", { class: "tl-text" },
        el("summary", {}, "命令行文本 As `replay timeline` prints it"),
        el("pre", { id: "rq-timeline-text" }, t.text)));
  },

  candidates(list) {
    const head = el("tr", {}, ...["工人 Worker", "距离 km", "评分 Score", "结果 Outcome"].map((x) => el("th", { scope: "col" }, x)));
    const rows = list.map((c) => el("tr", { "data-worker": c.worker_id, "data-outcome": c.outcome },
      el("td", { class: "mono" }, c.worker_id),
      el("td", { class: "num" }, c.distance_km.toFixed(2)),
      el("td", { class: "num" }, c.score.toFixed(3)),
      el("td", {}, `${VERDICT_ZH[c.outcome] || ""} — ${c.verdict}`)));
    return el("table", { class: "prov-table tl-candidates" }, el("thead", {}, head), el("tbody", {}, ...rows));
  },
};

Console.tab("province", { show: (s) => Province.show(s), hide: () => Province.hide() });
Console.tab("requests", { show: (s) => Requests.show(s) });
