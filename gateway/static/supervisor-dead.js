// The console's dead tab (see supervisor.js for Console.tab): the dead letters with their
// reasons and filters, one letter's message (as text, never as markup), and, for operators,
// a Requeue button whose outcome is shown. Everything is built with textContent.
"use strict";

const DEAD_REFRESH_MS = 10_000;
const DEAD_TOPICS = ["gig.hire-requests.v1", "gig.worker-events.v1", "gig.offer-responses.v1",
  "gig.offers.v1", "gig.request-events.v1", "gig.dispatch-journal.v1", "gig.request-state.v1"];
const DEAD_CONSUMERS = ["dispatcher", "presence", "archiver", "gateway-fanout"];
// The server's reasons (English) in Chinese, by a phrase they contain.
const DEAD_REASONS = [
  ["holds only the first", "死信只保存了消息的开头，无法原样重投"],
  ["not valid UTF-8", "原消息不是有效的 UTF-8，死信保存的不是原始字节，无法重投"],
  ["does not match the message's size", "死信内容与原消息的大小和校验值不符，无法重投"],
  ["does not hold a message whole", "死信未完整保存原消息，无法重投"],
  ["only messages of the inbound topics", "只能重投入站主题的消息"],
  ["key was not kept whole", "原消息的键未完整保存，无法重投"],
  ["already ended on the log", "该需求已在日志中结束，不能再处理；请用新编号重新发布"],
  ["was requeued already", "该死信已重投过；确需再投，请勾选“强制”"],
  ["no dead letter", "归档中没有这封死信（最新的可能尚未归档）"],
];

const Dead = {
  section: null,
  operator: null,
  timer: null,
  letters: [],
  chosen: null,
};

function deadEl(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") el.textContent = v;
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c);
  return el;
}

function deadReasonZh(en) {
  const hit = DEAD_REASONS.find(([phrase]) => String(en).includes(phrase));
  return hit ? hit[1] : "";
}

function deadDateTime(ms) {
  const d = new Date(ms);
  const day = [d.getFullYear(), d.getMonth() + 1, d.getDate()]
    .map((n) => String(n).padStart(2, "0")).join("-");
  return day + " " + timeOfDay(ms);
}

function deadSize(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  return bytes < 1024 ? bytes + " B" : (bytes / 1024).toFixed(1) + " KiB";
}

function deadBuild(section) {
  section.replaceChildren();
  const consumers = deadEl("datalist", { id: "dead-consumers" },
    ...DEAD_CONSUMERS.map((c) => deadEl("option", { value: c })));
  const topic = deadEl("select", { id: "dead-source" },
    deadEl("option", { value: "", text: "全部 All" }),
    ...DEAD_TOPICS.map((t) => deadEl("option", { value: t, text: t })));
  const limit = deadEl("select", { id: "dead-limit" },
    ...[50, 100, 200, 500].map((n) => deadEl("option", { value: String(n), text: String(n) })));
  limit.value = "100";
  const form = deadEl("form", { id: "dead-filters", class: "dead-filters" },
    deadEl("label", {}, "消费者 Consumer ",
      deadEl("input", { id: "dead-consumer", list: "dead-consumers", maxlength: "100", autocomplete: "off" })),
    consumers,
    deadEl("label", {}, "来源主题 Source topic ", topic),
    deadEl("label", {}, "原因包含 Reason contains ",
      deadEl("input", { id: "dead-reason", maxlength: "200", autocomplete: "off" })),
    deadEl("label", {}, "从 From ", deadEl("input", { id: "dead-from", type: "datetime-local" })),
    deadEl("label", {}, "到 To ", deadEl("input", { id: "dead-to", type: "datetime-local" })),
    deadEl("label", {}, "最多 At most ", limit),
    deadEl("button", { type: "submit", id: "dead-search", text: "查询 Search" }));
  form.onsubmit = (e) => { e.preventDefault(); deadLoad(); };
  const head = deadEl("tr", {}, ...["时间 Time", "消费者 Consumer", "来源主题 Source topic",
    "键 Key", "原因 Reason", "大小 Size", "状态 State"].map((t) => deadEl("th", { scope: "col", text: t })));
  section.append(
    deadEl("h2", { text: "死信 Dead letters" }),
    deadEl("p", { class: "muted", text: "消费者无法处理的消息及原因。点一行查看内容" +
      (Console.isOperator() ? "，可重新投递。" : "。") + " Messages a consumer could not take, " +
      "with the reason. Click a row to see its message" +
      (Console.isOperator() ? " and requeue it." : ".") }),
    form,
    deadEl("p", { id: "dead-status", class: "muted", role: "status" }),
    deadEl("p", { id: "dead-error", class: "error", role: "alert" }),
    deadEl("div", { class: "dead-scroll" },
      deadEl("table", { id: "dead-table", class: "dead-table" },
        deadEl("thead", {}, head), deadEl("tbody", {}))),
    deadEl("div", { id: "dead-detail", class: "dead-detail hidden" }));
}

function deadQuery() {
  const p = new URLSearchParams();
  const put = (name, value) => { if (value) p.set(name, value); };
  put("consumer", $("dead-consumer").value.trim());
  put("source_topic", $("dead-source").value);
  put("reason", $("dead-reason").value.trim());
  const from = $("dead-from").value, to = $("dead-to").value;
  if (from) p.set("from", String(new Date(from).getTime()));
  if (to) p.set("to", String(new Date(to).getTime()));
  p.set("limit", $("dead-limit").value);
  return p.toString();
}

async function deadLoad() {
  if (!Dead.section) return;
  try {
    const data = await Console.get("/api/v1/console/dead-letters?" + deadQuery());
    $("dead-error").textContent = "";
    Dead.letters = data.letters;
    deadTable(data.letters);
    const lag = data.archive_lag ? ` · 归档落后 ${data.archive_lag} 条 the archive is ` +
      `${data.archive_lag} records behind` : "";
    $("dead-status").textContent = `${data.letters.length} 封 letters` +
      (data.more ? " (还有更多 more match: narrow the filters)" : "") + lag;
  } catch (e) {
    const r = refusalText(e);
    $("dead-error").textContent = `${r.zh} ${r.en}`;
  }
}

function deadState(v) {
  if (v.requeued.length) return ["requeued", `已重投 requeued ×${v.requeued.length}`];
  return v.refusal ? ["stuck", "不可重投 cannot requeue"] : ["ready", "可重投 can requeue"];
}

function deadTable(letters) {
  const body = $("dead-table").tBodies[0];
  body.replaceChildren();
  if (!letters.length) {
    body.append(deadEl("tr", {}, deadEl("td", { colspan: "7", class: "muted",
      text: "没有符合条件的死信 No dead letters match." })));
    return;
  }
  for (const v of letters) {
    const [state, label] = deadState(v);
    const row = deadEl("tr", { tabindex: "0", data: { id: v.id, state } },
      deadEl("td", {}, deadEl("time", { text: deadDateTime(v.at_ms) })),
      deadEl("td", { text: v.consumer }),
      deadEl("td", { text: v.source_topic }),
      deadEl("td", { class: "dead-key", text: v.key ?? "—" }),
      deadEl("td", { class: "dead-reason", text: v.reason }),
      deadEl("td", { class: "num", text: deadSize(v.payload_bytes) }),
      deadEl("td", { class: "dead-state " + state, text: label }));
    row.setAttribute("aria-selected", String(v.id === Dead.chosen));
    row.onclick = () => deadOpen(v.id);
    row.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); deadOpen(v.id); } };
    body.append(row);
  }
}

async function deadOpen(id) {
  Dead.chosen = id;
  for (const tr of $("dead-table").tBodies[0].rows) {
    tr.setAttribute("aria-selected", String(tr.dataset.id === id));
  }
  const box = $("dead-detail");
  box.classList.remove("hidden");
  box.replaceChildren(deadEl("p", { class: "muted", text: "加载中… Loading…" }));
  try {
    deadDetail(await Console.get("/api/v1/console/dead-letters/" + encodeURIComponent(id)));
  } catch (e) {
    const r = refusalText(e);
    box.replaceChildren(deadEl("p", { class: "error", text: `${r.zh} ${r.en}` }));
  }
}

function deadFacts(d) {
  const facts = [
    ["编号 Id", d.id], ["时间 Time", deadDateTime(d.at_ms)], ["消费者 Consumer", d.consumer],
    ["来源 Source", `${d.source_topic}[${d.partition}]@${d.offset}`], ["键 Key", d.key ?? "—"],
    ["原因 Reason", d.reason], ["大小 Size", deadSize(d.payload_bytes)],
    ["SHA-256", d.payload_sha256 ?? "—"],
  ];
  for (const r of d.requeued) {
    facts.push(["已重投 Requeued", `${r.operator} · ${deadDateTime(r.at_ms)} → [${r.partition}]@${r.offset}` +
      (r.forced ? " (强制 forced)" : "") + (r.note ? " · " + r.note : "")]);
  }
  return deadEl("dl", { class: "dead-facts" },
    ...facts.flatMap(([k, v]) => [deadEl("dt", { text: k }), deadEl("dd", { text: v })]));
}

function deadDetail(d) {
  const box = $("dead-detail");
  const parts = [
    deadEl("h3", { text: "死信 Letter " + d.id }),
    deadFacts(d),
    deadEl("h4", { text: "消息内容（纯文本）Message (as text)" }),
    deadEl("pre", { id: "dead-payload", class: "dead-payload", text: d.payload }),
  ];
  if (d.refusal) {
    parts.push(deadEl("p", { id: "dead-refusal", class: "error",
      text: `不可重投：${deadReasonZh(d.refusal) || "见英文说明"} Cannot be requeued: ${d.refusal}` }));
  } else if (Console.isOperator()) {
    parts.push(deadRequeueForm(d));
  } else {
    parts.push(deadEl("p", { class: "muted", text: "只有运维可以重投。Only an operator may requeue." }));
  }
  box.replaceChildren(...parts);
}

function deadRequeueForm(d) {
  const force = deadEl("input", { type: "checkbox", id: "dead-force" });
  const note = deadEl("input", { id: "dead-note", maxlength: "200", autocomplete: "off",
    placeholder: "为何重投 why, in a few words" });
  const btn = deadEl("button", { type: "button", id: "dead-requeue", class: "danger",
    text: "重新投递 Requeue" });
  const outcome = deadEl("p", { id: "dead-outcome", role: "status", data: { state: "idle" } });
  btn.onclick = () => deadRequeue(d.id, force.checked, note.value.trim(), btn, outcome);
  return deadEl("div", { class: "dead-requeue" },
    deadEl("p", { class: "muted", text: `把原消息按原键重新发到 ${d.source_topic}，并记入操作日志。` +
      ` Puts the message back on ${d.source_topic} with its key, audited on the log.` }),
    deadEl("label", {}, "备注 Note ", note),
    deadEl("label", { class: "check" }, force, d.requeued.length
      ? "强制（已重投过）Force: it was requeued before" : "强制 Force"),
    btn, outcome);
}

async function deadRequeue(id, force, note, btn, outcome) {
  btn.disabled = true;
  outcome.className = "";
  outcome.dataset.state = "busy";
  outcome.textContent = "重投中… Requeueing…";
  try {
    const done = await Console.post(
      "/api/v1/console/dead-letters/" + encodeURIComponent(id) + "/requeue", { force, note });
    outcome.dataset.state = "done";
    outcome.className = "ok-text";
    outcome.textContent = `已重投到 ${done.source_topic}[${done.partition}]@${done.offset}，` +
      `已记录 ${done.operator}。 Requeued to ${done.source_topic}[${done.partition}]@${done.offset}` +
      `, audited as ${done.operator}.`;
    deadLoad();
  } catch (e) {
    const r = refusalText(e);
    const detail = typeof e.detail === "string" ? e.detail : "";
    outcome.dataset.state = "refused";
    outcome.className = "error";
    outcome.textContent = (deadReasonZh(detail) || r.zh) + " " + (detail || r.en);
  } finally {
    btn.disabled = false;
  }
}

Console.tab("dead", {
  show(section) {
    if (Dead.section !== section || Dead.operator !== Console.isOperator()) {
      Dead.section = section;
      Dead.operator = Console.isOperator();  // the page differs by role: build it anew
      Dead.chosen = null;
      deadBuild(section);
    }
    deadLoad();
    clearInterval(Dead.timer);
    Dead.timer = setInterval(deadLoad, DEAD_REFRESH_MS);
  },
  hide() {
    clearInterval(Dead.timer);
    Dead.timer = null;
  },
});
