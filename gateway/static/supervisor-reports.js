// The console's reports and what-if tabs (see supervisor.js for Console.tab).
//
// Reports: a window (China Standard Time), a grouping and a prefecture; the bureau's
// indicators per group in a table (every cell carries data-group and data-key), bar charts of
// the main ones (inline SVG, drawn here: no library, no CDN) and a CSV download.
// What-if: the latest `replay run` results, every run side by side, with the same charts.
// Everything is built with textContent and createElementNS: names are never read as markup.
"use strict";

const REP_CST_MS = 8 * 3600 * 1000;
const REP_SVG = "http://www.w3.org/2000/svg";
// The charts: (indicator, scale, unit).
const REP_CHARTS = [
  ["positions", 1, ""], ["job_seekers", 1, ""], ["positions_per_seeker", 1, ""],
  ["fill_rate", 100, "%"], ["fill_p50_s", 1, "s"], ["wage_mean", 1, "¥"],
];
const REP_WHATIF_CHARTS = [
  ["fill_rate", 100, "%"], ["first_offer_p50_s", 1, "s"], ["fill_p50_s", 1, "s"],
  ["distance_km", 1, "km"],
];
// Ratios (JSON does not tell 1.0 from 1): how many decimals they show; the rest are counts.
const REP_DECIMALS = { positions_per_seeker: 2, offers_per_assignment: 2, offers_gini: 3 };
const REP_COLOURS = ["#0b5cad", "#d97706", "#067647", "#7c3aed", "#b42318"];

const Rep = { meta: null, report: null, built: false, whatifBuilt: false };

function repEl(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") el.textContent = v;
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c);
  return el;
}

function repSvg(tag, attrs, text) {
  const el = document.createElementNS(REP_SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// A China Standard Time "YYYY-MM-DDTHH:MM" (what the API reads) from epoch ms.
function repCst(ms) { return new Date(ms + REP_CST_MS).toISOString().slice(0, 16); }

function repDefinition(key) {
  return (Rep.meta ? Rep.meta.indicators : []).find((d) => d.key === key) || { zh: key, en: key, unit: "" };
}

// An indicator's value as a person reads it ("–" where nothing could be measured).
function repFormat(key, value) {
  if (value === null || value === undefined) return "–";
  const unit = repDefinition(key).unit;
  if (unit === "%") return (value * 100).toFixed(1) + "%";
  if (unit === "s") return value.toFixed(1) + " s";
  if (unit === "km") return value.toFixed(2) + " km";
  if (unit === "¥/day") return "¥" + value.toFixed(0);
  if (key in REP_DECIMALS) return value.toFixed(REP_DECIMALS[key]);
  return value.toLocaleString("en");
}

function repName(row) { return row.name_en ? row.name_zh + " " + row.name_en : row.name_zh; }

// --- charts ----------------------------------------------------------------------------------

// Horizontal bars: one line per category, one bar per series (runs side by side).
function repBars(title, unit, categories, series) {
  const labelW = 230, barW = 300, valueW = 80, rowH = 14 * series.length + 8;
  const width = labelW + barW + valueW, height = 26 + rowH * categories.length;
  const max = Math.max(1e-9, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const svg = repSvg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
    "aria-label": title, class: "rep-chart" });
  svg.append(repSvg("text", { x: 0, y: 16, class: "rep-chart-title" }, title + (unit ? ` (${unit})` : "")));
  categories.forEach((cat, i) => {
    const y = 26 + i * rowH;
    svg.append(repSvg("text", { x: labelW - 6, y: y + rowH / 2 + 4, "text-anchor": "end",
      class: "rep-chart-label" }, cat.length > 30 ? cat.slice(0, 29) + "…" : cat));
    series.forEach((s, k) => {
      const v = s.values[i];
      const w = v === null ? 0 : Math.max(1, (v / max) * barW);
      const bar = repSvg("rect", { x: labelW, y: y + 4 + k * 14, width: w, height: 12,
        fill: REP_COLOURS[k % REP_COLOURS.length] });
      bar.append(repSvg("title", {}, `${s.label}: ${cat}: ${v === null ? "–" : v}`));
      svg.append(bar);
      svg.append(repSvg("text", { x: labelW + w + 4, y: y + 14 + k * 14, class: "rep-chart-value" },
        v === null ? "–" : (Math.round(v * 100) / 100).toLocaleString("en")));
    });
  });
  return svg;
}

function repChartsOf(specs, categories, runs) {
  const box = repEl("div", { class: "rep-charts" });
  for (const [key, scale, unit] of specs) {
    const d = repDefinition(key);
    const series = runs.map((r) => ({
      label: r.label,
      values: r.rows.map((row) => (row ? (row[key] === null ? null : row[key] * scale) : null)),
    }));
    box.append(repEl("figure", { data: { indicator: key } }, repBars(d.zh + " " + d.en, unit, categories, series)));
  }
  return box;
}

function repLegend(labels) {
  const legend = repEl("p", { class: "rep-legend" });
  labels.forEach((label, k) => {
    legend.append(repEl("span", { class: "rep-swatch", style: `background:${REP_COLOURS[k % REP_COLOURS.length]}` }));
    legend.append(repEl("span", { text: label + "  " }));
  });
  return legend;
}

// --- the report tab --------------------------------------------------------------------------

function repBuild(section) {
  const by = repEl("select", { id: "rep-by" });
  for (const b of Rep.meta.by) by.add(new Option(b.zh + " " + b.en, b.key));
  const pref = repEl("select", { id: "rep-prefecture" });
  pref.add(new Option("全省 whole province", ""));
  for (const p of Rep.meta.prefectures) pref.add(new Option(p.zh + " " + p.en, p.code));
  const now = Date.now();
  const form = repEl("form", { id: "rep-form", class: "rep-form" },
    repEl("label", {}, "从 From (北京时间 CST) ", repEl("input", { id: "rep-from", type: "datetime-local", value: repCst(now - 24 * 3600e3) })),
    repEl("label", {}, "到 To ", repEl("input", { id: "rep-to", type: "datetime-local", value: repCst(now + 60e3) })),
    repEl("label", {}, "分组 By ", by),
    repEl("label", {}, "范围 Scope ", pref),
    repEl("button", { id: "rep-run", type: "submit", text: "生成报表 Report" }),
    repEl("button", { id: "rep-csv", type: "button", class: "secondary", text: "下载 CSV Download CSV" }));
  form.onsubmit = (e) => { e.preventDefault(); repLoad(); };
  section.replaceChildren(
    repEl("h2", { text: "统计报表 Reports" }),
    repEl("p", { class: "muted", text: "需求按发布时间计入窗口（北京时间），其结果无论何时发生都计入；求职人数 = 窗口内签到的不同工人。"
      + " Requests count in the window they were posted in (China Standard Time), with their outcomes whenever they came; job seekers = distinct workers who checked in in the window." }),
    form,
    repEl("p", { id: "rep-error", class: "error", role: "alert" }),
    repEl("p", { id: "rep-summary", class: "muted" }),
    repEl("p", { id: "rep-note", class: "muted" }),
    repEl("div", { id: "rep-table-box", class: "rep-table-box" }),
    repEl("div", { id: "rep-chart-box" }),
    repEl("a", { id: "rep-csv-link", class: "hidden", download: "report.csv", text: "CSV" }));
  $("rep-csv").onclick = () => repCsv();
  Rep.built = true;
}

function repQuery(format) {
  const q = new URLSearchParams({ by: $("rep-by").value, from: $("rep-from").value, to: $("rep-to").value });
  if ($("rep-prefecture").value) q.set("prefecture", $("rep-prefecture").value);
  if (format) q.set("format", format);
  return q.toString();
}

function repTable(doc) {
  const keys = doc.indicators.map((d) => d.key);
  const head = repEl("tr", {}, repEl("th", { text: "分组 Group" }),
    ...doc.indicators.map((d) => repEl("th", { title: d.en }, d.zh, repEl("br"), repEl("small", { text: d.en }))));
  const line = (row, cls) => repEl("tr", { class: cls, data: { group: row.group } },
    repEl("th", { scope: "row" }, row.name_zh, repEl("br"), repEl("small", { text: row.name_en })),
    ...keys.map((k) => repEl("td", { data: { key: k, group: row.group }, text: repFormat(k, row[k]) })));
  return repEl("table", { id: "rep-table", class: "rep-table" },
    repEl("thead", {}, head),
    repEl("tbody", {}, ...doc.rows.map((r) => line(r, "")), line(doc.total, "total")));
}

async function repLoad() {
  $("rep-error").textContent = "";
  try {
    const doc = await Console.get("/api/v1/console/reports?" + repQuery());
    Rep.report = doc;
    const t = doc.total;
    $("rep-summary").textContent = `${t.requests} 个需求 requests · ${t.positions} 个岗位 positions posted · `
      + `${t.job_seekers} 名求职者 job seekers · 求人倍率 ${repFormat("positions_per_seeker", t.positions_per_seeker)}`;
    $("rep-note").textContent = doc.note || "";
    $("rep-table-box").replaceChildren(repTable(doc));
    const cats = doc.chart.map(repName);
    $("rep-chart-box").replaceChildren(repChartsOf(REP_CHARTS, cats, [{ label: "", rows: doc.chart }]));
    $("tab-reports").dataset.state = "loaded";
  } catch (e) {
    $("rep-error").textContent = refusalTextOr(e);
    $("rep-table-box").replaceChildren();
    $("rep-chart-box").replaceChildren();
    $("rep-summary").textContent = "";
    $("tab-reports").dataset.state = "refused";
  }
}

function refusalTextOr(e) {
  return (e.status === 422 ? "无法生成报表 Cannot report: " : "出错 Error: ") + (typeof e.detail === "string" ? e.detail : e.message);
}

// The CSV comes with the token in a header, never in a URL: fetched, then saved from a blob.
async function repCsv() {
  $("rep-error").textContent = "";
  const response = await fetch("/api/v1/console/reports?" + repQuery("csv"), {
    headers: { Authorization: "Bearer " + Console.auth.token },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    $("rep-error").textContent = refusalTextOr({ status: response.status, detail: body.detail, message: response.statusText });
    return;
  }
  const link = $("rep-csv-link");
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(await response.blob());
  link.download = `report-${$("rep-by").value}-${$("rep-from").value.slice(0, 10)}.csv`;
  link.click();
}

async function repMeta() {
  if (!Rep.meta) Rep.meta = await Console.get("/api/v1/console/reports/meta");
}

Console.tab("reports", {
  async show(section) {
    try { await repMeta(); } catch (e) { section.textContent = refusalTextOr(e); return; }
    if (!Rep.built) repBuild(section);
    await repLoad();
  },
});

// --- the what-if tab -------------------------------------------------------------------------

function repWhen(ms) { return repCst(ms).replace("T", " "); }

function repSideBySide(result) {
  const overall = result.runs.map((r) => r.rows.find((row) => row.group === "all") || {});
  const head = repEl("tr", {}, repEl("th", { text: "指标 Indicator" }),
    ...result.runs.map((r) => repEl("th", { text: r.label + " (" + r.policy + ")" })));
  const body = Rep.meta.indicators.map((d) => repEl("tr", { data: { key: d.key } },
    repEl("th", { scope: "row" }, d.zh, repEl("br"), repEl("small", { text: d.en })),
    ...overall.map((row) => repEl("td", { text: repFormat(d.key, row[d.key]) }))));
  return repEl("table", { class: "rep-table rep-whatif-table" }, repEl("thead", {}, head), repEl("tbody", {}, ...body));
}

function repWhatifCharts(result) {
  const groups = result.runs[0].chart.map((row) => row.group);
  const names = result.runs[0].chart.map(repName);
  const runs = result.runs.map((r) => ({
    label: r.label, rows: groups.map((g) => r.chart.find((row) => row.group === g) || null),
  }));
  return repChartsOf(REP_WHATIF_CHARTS, names, runs);
}

function repResult(result) {
  const scope = result.scope.market || result.scope.prefecture || "全省 whole province";
  return repEl("article", { class: "rep-whatif", data: { file: result.file } },
    repEl("h3", { text: `${repWhen(result.from_ms)} – ${repWhen(result.to_ms)} (CST) · ${scope} · 按 by ${result.by}` }),
    repEl("p", { class: "muted", text: `推演于 run at ${repWhen(result.at_ms)} · 工人应答 responses: ${result.responses}` }),
    repSideBySide(result),
    repLegend(result.runs.map((r) => r.label)),
    repWhatifCharts(result));
}

async function repWhatif(section) {
  section.replaceChildren(repEl("h2", { text: "推演对比 What-if replays" }),
    repEl("p", { class: "muted", text: "最近几次 replay run 的结果，各方案并列。The latest `replay run` results, every run side by side." }));
  try {
    await repMeta();
    const found = await Console.get("/api/v1/console/whatif?limit=3");
    if (!found.results.length) {
      section.append(repEl("p", { id: "whatif-empty", text: "还没有推演结果：运行 replay run --policy batch … No replays yet: run `replay run --from … --to … --policy batch`." }));
    }
    for (const r of found.results) section.append(repResult(r));
    section.dataset.state = "loaded";
  } catch (e) {
    section.append(repEl("p", { class: "error", role: "alert", text: refusalTextOr(e) }));
  }
}

Console.tab("whatif", { show: repWhatif });
