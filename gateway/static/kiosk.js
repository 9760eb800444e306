// The station kiosk: log in as the market's station, post requests, follow them, and keep the
// day's requests on a board: each one's status and every hired worker's job, live.
//
// The progress stream numbers its events (SSE id): the browser resumes after the last one it
// saw when it reconnects (Last-Event-ID), and the page drops any number it has shown already.
// A reload keeps the login (sessionStorage), the request followed and the posted forms
// (localStorage, for "post again").
"use strict";

const EVENT_TYPES = ["WaveSent", "RadiusWidened", "WorkerAssigned", "RequestFilled",
  "RequestExpired", "RequestCancelled", "RequestRejected", "JobChanged"];
const ENDED = new Set(["filled", "expired", "cancelled", "rejected"]);
const JOB_STATUS = {
  hired: "已录用 hired", arrived: "已到岗 arrived", done: "已完工 done",
  no_show: "未到岗 no-show", cancelled: "已取消 cancelled",
};
// The steps a station may report from each job status (the contract's transition rows).
const JOB_STEPS = {
  hired: ["arrived", "done", "no_show", "cancelled"], arrived: ["done", "cancelled"],
};
const STEP_LABEL = {
  arrived: "到岗 Arrived", done: "完工 Done", no_show: "未到 No-show", cancelled: "取消 Cancel",
};
const BOARD_EVERY_MS = 4000;
const REOPEN_MS = 5000;
const KEEP_BODIES = 100;

let auth = loadToken("kiosk");
let market = null;       // {name_zh, name_en} of the station's market
let followed = null;     // {id, lastId, stream, radius, reopen}
let boardTimer = null;
let boardShown = "";     // the board's JSON as last drawn, so an unchanged board is not redrawn
let refreshTimer = null;

// --- small helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function local(key, value) {
  if (value === undefined) {
    try { return JSON.parse(localStorage.getItem("kiosk:" + key) || "null"); } catch { return null; }
  }
  if (value === null) localStorage.removeItem("kiosk:" + key);
  else localStorage.setItem("kiosk:" + key, JSON.stringify(value));
  return value;
}

function skillName(skill) { return SKILLS[skill] || skill; }
function marketName(m) { return m ? `${m.name_zh} ${m.name_en}` : ""; }
function hhmm(ms) { return timeOfDay(ms).slice(0, 5); }

function showRefusal(id, prefix, err) {
  const r = refusalText(err);
  $(id).textContent = `${prefix[0]}：${r.zh} · ${prefix[1]}: ${r.en}`;
  return r;
}

// --- what an event says ----------------------------------------------------------------------

function describe(e) {
  switch (e.type) {
    case "WaveSent": {
      const n = e.candidates.filter((c) => c.outcome === "offered").length;
      if (n === 0) return `${e.radius_km} 公里内暂无空闲工人 / no free workers within ${e.radius_km} km`;
      return `已向 ${n} 位工人发出邀约 / offers sent to ${n} workers within ${e.radius_km} km`;
    }
    case "RadiusWidened": return `扩大范围到 ${e.radius_km} 公里 / widening the search to ${e.radius_km} km`;
    case "WorkerAssigned": return `已录用 ${e.assigned}/${e.headcount}：工人 ${e.worker_id} / worker ${e.worker_id} is coming`;
    case "RequestFilled": return `招满 / filled: all ${e.headcount} workers are coming`;
    case "RequestExpired": return `已过期 / expired with ${e.assigned} of ${e.headcount} workers`;
    case "RequestCancelled": return `已取消 / cancelled (${e.assigned} already assigned)`;
    case "RequestRejected": return `被拒绝 / rejected: ${e.reason}`;
    case "JobChanged": {
      const by = e.by === "worker" ? "工人报告 by the worker" : "驿站报告 by the station";
      const why = e.reason ? `：${e.reason}` : "";
      return `工人 ${e.worker_id}：${JOB_STATUS[e.status] || e.status}${why} (${by})`;
    }
    default: return e.type;
  }
}

// --- login -----------------------------------------------------------------------------------

async function lookUpMarket(id) {
  const cached = JSON.parse(sessionStorage.getItem("kiosk:market:" + id) || "null");
  if (cached) return cached;
  const m = await api("GET", `/api/v1/markets/${encodeURIComponent(id)}`);
  sessionStorage.setItem("kiosk:market:" + id, JSON.stringify(m));
  return m;
}

async function hintMarket() {
  const id = $("market").value.trim();
  if (!id) { $("market-hint").textContent = ""; return; }
  try { $("market-hint").textContent = marketName(await lookUpMarket(id)); }
  catch { $("market-hint").textContent = "未知的市场编号 · unknown market id"; }
}

async function showLogin() {
  const inside = Boolean(auth);
  for (const id of ["who", "post", "board"]) $(id).classList.toggle("hidden", !inside);
  $("login").classList.toggle("hidden", inside);
  if (!inside) return;
  $("who-text").textContent = `驿站 Station ${auth.subject}`;
  try {
    market = await lookUpMarket(auth.subject);
    $("who-text").textContent = `驿站 Station：${marketName(market)} (${auth.subject})`;
  } catch { /* the code stays */ }
}

async function login(dev) {
  $("login-error").textContent = "";
  const id = $("market").value.trim();
  try {
    auth = dev ? await devLogin("station", id)
      : await api("POST", "/api/v1/auth/station", null, { market_id: id, key: $("station-key").value.trim() });
    saveToken("kiosk", auth);
    await showLogin();
    startBoard();
  } catch (err) { showRefusal("login-error", ["登录失败", "Login failed"], err); }
}

function logout() {
  auth = null;
  sessionStorage.removeItem("kiosk:auth");
  local("following", null);
  unfollow();
  $("request").classList.add("hidden");
  stopBoard();
  showLogin();
}

// A refusal of the token: log in again.
function expired(err) {
  if (!err || err.status !== 401) return false;
  logout();
  $("login-error").textContent = "登录已过期，请重新登录 · Your login has expired: log in again.";
  return true;
}

// --- posting ---------------------------------------------------------------------------------

const FORM_FIELDS = {
  skill: "skill", headcount: "headcount", wage_yuan_per_day: "wage", deadline_min: "deadline",
  start_in_min: "start-at", contact: "contact", address: "address", note: "note",
};

function clearFieldErrors() {
  for (const input of Object.values(FORM_FIELDS)) {
    $(input + "-error").textContent = "";
    $(input).removeAttribute("aria-invalid");
  }
}

function showFieldErrors(fields) {
  for (const [name, [zh, en]] of Object.entries(fields)) {
    const input = FORM_FIELDS[name];
    if (!input) continue;
    $(input + "-error").textContent = `${zh} · ${en}`;
    $(input).setAttribute("aria-invalid", "true");
  }
}

// Minutes from now until the time of day chosen (tomorrow if it has passed today).
function startInMin() {
  const value = $("start-at").value;
  if (!value) return 0;
  const [h, m] = value.split(":").map(Number);
  const now = new Date();
  const at = new Date(now);
  at.setHours(h, m, 0, 0);
  if (at <= now) at.setDate(at.getDate() + 1);
  return Math.round((at - now) / 60000);
}

function formBody() {
  const body = {
    request_id: randomId("R-"), market_id: auth.subject, skill: $("skill").value,
    headcount: Number($("headcount").value), wage_yuan_per_day: Number($("wage").value),
    deadline_min: Number($("deadline").value), note: $("note").value.trim(),
    contact: $("contact").value.trim(), address: $("address").value.trim(),
  };
  const start = startInMin();
  if (start > 0) body.start_in_min = Math.min(start, 23 * 60);
  return body;
}

function rememberBody(body) {
  const bodies = local("bodies") || {};
  bodies[body.request_id] = { ...body, start_at: $("start-at").value, posted_at_ms: Date.now() };
  const ids = Object.keys(bodies);
  for (const old of ids.slice(0, Math.max(0, ids.length - KEEP_BODIES))) delete bodies[old];
  local("bodies", bodies);
}

async function post(event) {
  event.preventDefault();
  $("post-error").textContent = "";
  $("prefill-hint").classList.add("hidden");
  clearFieldErrors();
  const body = formBody();
  $("post-btn").disabled = true;
  try {
    await api("POST", "/api/v1/requests", auth.token, body);
    rememberBody(body);
    follow(body.request_id);
    refreshBoard();
  } catch (err) {
    if (expired(err)) return;
    const r = showRefusal("post-error", ["发布失败", "Not posted"], err);
    showFieldErrors(r.fields);
  } finally { $("post-btn").disabled = false; }
}

// Fill the form to post again: what was posted, changed as the advice says.
function prefill(view, change, hint) {
  const was = (local("bodies") || {})[view.request_id] || {};
  const remaining = Math.max(1, view.headcount - view.assigned);
  $("skill").value = view.skill;
  $("headcount").value = remaining;
  $("wage").value = Number(was.wage_yuan_per_day || $("wage").value);
  $("deadline").value = Number(was.deadline_min || $("deadline").value);
  for (const f of ["note", "contact", "address"]) $(f).value = was[f] || "";
  $("start-at").value = was.start_at || "";
  change();
  clearFieldErrors();
  $("prefill-hint").textContent = `${hint[0]}：已填好，请检查后点“发布” · ${hint[1]}: filled in, check it and press Post.`;
  $("prefill-hint").classList.remove("hidden");
  $("post").scrollIntoView({ behavior: "smooth", block: "start" });
  $("post-btn").focus({ preventScroll: true });
}

// --- following one request -------------------------------------------------------------------

function follow(requestId) {
  unfollow();
  followed = { id: requestId, lastId: 0, stream: null, radius: 0, reopen: null };
  local("following", requestId);
  $("request").classList.remove("hidden");
  $("request-id").textContent = requestId;
  $("log").replaceChildren();
  $("assignments").replaceChildren();
  $("outcome").classList.add("hidden");
  $("request-error").textContent = "";
  openStream();
  refresh();
}

function unfollow() {
  if (!followed) return;
  if (followed.stream) followed.stream.close();
  clearTimeout(followed.reopen);
  followed = null;
}

function setStreamState(state, text) {
  $("stream-state").dataset.state = state;
  $("stream-state").textContent = text;
}

function openStream() {
  const f = followed;
  const after = f.lastId ? `&last_event_id=${f.lastId}` : "";
  const url = `/api/v1/requests/${encodeURIComponent(f.id)}/events?token=${encodeURIComponent(auth.token)}${after}`;
  const stream = new EventSource(url);
  f.stream = stream;
  stream.onopen = () => setStreamState("live", "● 实时 live");
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) {
      // Refused (a lapsed login, a restart): open it again later, after the last event shown.
      setStreamState("closed", "连接中断，稍后重试 · disconnected, retrying");
      f.reopen = setTimeout(() => { if (followed === f) openStream(); }, REOPEN_MS);
    } else setStreamState("reconnecting", "重新连接中 · reconnecting…");
  };
  for (const type of EVENT_TYPES) stream.addEventListener(type, (msg) => onEvent(f, msg));
  stream.addEventListener("StreamEnd", () => {
    stream.close();
    setStreamState("ended", "已结束 · ended");
  });
}

function onEvent(f, msg) {
  if (followed !== f) return;
  const id = Number(msg.lastEventId);
  if (id && id <= f.lastId) return;  // shown already
  if (id) f.lastId = id;
  const e = JSON.parse(msg.data);
  if (e.radius_km) f.radius = Math.max(f.radius, e.radius_km);
  const li = el("li", { "data-id": String(id), "data-type": e.type },
    el("time", {}, timeOfDay(e.at_ms)), " " + describe(e));
  $("log").append(li);
  li.scrollIntoView({ block: "nearest" });
  refreshSoon();
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { refresh(); refreshBoard(); }, 200);
}

async function refresh() {
  const f = followed;
  if (!f) return;
  try {
    const v = await api("GET", "/api/v1/requests/" + encodeURIComponent(f.id), auth.token);
    if (followed === f) showRequest(v);
  } catch (err) {
    if (!expired(err)) showRefusal("request-error", ["读取失败", "Could not read it"], err);
  }
}

function showRequest(v) {
  $("status").textContent = STATUS[v.status] || v.status;
  $("status").className = "status " + v.status;
  $("status").dataset.status = v.status;
  $("assigned").textContent = `已录用 Assigned: ${v.assigned} / ${v.headcount} · 邀约中 offers out: ${v.offers_out}`;
  $("assignments").replaceChildren(...jobsOf(v).map((j) => jobRow(v, j, "request-error")));
  $("cancel-btn").disabled = ENDED.has(v.status);
  showOutcome(v);
}

function jobsOf(v) {
  if (v.jobs && v.jobs.length) return v.jobs;
  return v.assignments.map((a) => ({ ...a, status: "hired" }));
}

// One hired worker's job, with the steps the station may report now.
function jobRow(v, j, errorId) {
  const buttons = (JOB_STEPS[j.status] || []).map((step) => el("button", {
    type: "button", class: `job-step ${step === "no_show" || step === "cancelled" ? "danger" : step === "done" ? "ok" : ""}`,
    "data-step": step, textContent: STEP_LABEL[step],
    onclick: (ev) => reportJob(v.request_id, j.worker_id, step, ev.currentTarget, errorId),
  }));
  return el("li", { class: "job", "data-worker": j.worker_id, "data-status": j.status },
    el("span", { class: "who" }, `工人 Worker ${j.worker_id} (${j.distance_km.toFixed(1)} km)`),
    el("span", { class: "badge job-" + j.status }, JOB_STATUS[j.status] || j.status),
    buttons.length ? el("span", { class: "steps" }, ...buttons) : null);
}

async function reportJob(requestId, workerId, step, button, errorId) {
  let reason = "";
  if (step === "no_show" || step === "cancelled") {
    const asked = prompt(`${STEP_LABEL[step]}：工人 ${workerId}\n原因（可不填）· Reason (optional)`, "");
    if (asked === null) return;
    reason = asked.trim().slice(0, 200);
  }
  $(errorId).textContent = "";
  button.disabled = true;
  try {
    const path = `/api/v1/requests/${encodeURIComponent(requestId)}/jobs/${encodeURIComponent(workerId)}`;
    await api("POST", path, auth.token, { step, reason });
    refreshSoon();
  } catch (err) {
    if (!expired(err)) showRefusal(errorId, ["未能报告", "Not reported"], err);
    button.disabled = false;
  }
}

// What to do next, once a request ended short of its headcount.
function showOutcome(v) {
  const box = $("outcome");
  const short = (v.status === "expired" || v.status === "rejected") && v.assigned < v.headcount;
  box.classList.toggle("hidden", !short);
  box.dataset.status = v.status;
  if (!short) { box.replaceChildren(); return; }
  const missing = v.headcount - v.assigned;
  const reached = followed && followed.radius ? followed.radius : null;
  const lines = [];
  if (v.status === "rejected") {
    lines.push(el("p", { class: "lead" }, `需求被拒绝 · The request was refused: ${v.reason}`));
  } else {
    lines.push(el("p", { class: "lead" }, v.assigned === 0
      ? "没有招到人 · No one was found."
      : `只招到 ${v.assigned}/${v.headcount} 人，还差 ${missing} 人 · Only ${v.assigned} of ${v.headcount} workers are coming: ${missing} more needed.`));
    if (reached) lines.push(el("p", {}, `已搜索到 ${reached} 公里范围 · The search reached ${reached} km.`));
    lines.push(el("p", {}, "下一步 · What next:"));
  }
  const was = (local("bodies") || {})[v.request_id] || {};
  const wage = Number(was.wage_yuan_per_day || $("wage").value) || 250;
  const raised = Math.min(5000, Math.ceil((wage * 1.2) / 10) * 10);
  const deadline = Number(was.deadline_min || $("deadline").value) || 10;
  const longer = Math.min(1440, Math.max(deadline * 2, 20));
  const actions = el("div", { class: "row" },
    el("button", { type: "button", id: "again-wider-btn", textContent: `扩大范围：给 ${longer} 分钟再发 · Widen the search: ${longer} min`,
      onclick: () => prefill(v, () => { $("deadline").value = longer; }, ["扩大范围", "Widen the search"]) }),
    el("button", { type: "button", id: "again-wage-btn", class: "ok", textContent: `提高日薪到 ${raised} 元 · Raise the wage to ${raised}`,
      onclick: () => prefill(v, () => { $("wage").value = raised; }, ["提高日薪", "Raise the wage"]) }),
    el("button", { type: "button", id: "again-btn", class: "secondary", textContent: "按原样再发 · Post again",
      onclick: () => prefill(v, () => {}, ["再发一次", "Post again"]) }));
  box.replaceChildren(...lines, actions);
}

async function cancel() {
  if (!followed || !confirm("确定取消这个需求？ · Cancel this request?")) return;
  try {
    await api("POST", `/api/v1/requests/${encodeURIComponent(followed.id)}/cancel`, auth.token, { reason: "kiosk" });
    refreshSoon();
  } catch (err) { if (!expired(err)) showRefusal("request-error", ["未能取消", "Not cancelled"], err); }
}

// --- the board -------------------------------------------------------------------------------

function startBoard() {
  stopBoard();
  refreshBoard();
  boardTimer = setInterval(() => { if (!document.hidden) refreshBoard(); }, BOARD_EVERY_MS);
}

function stopBoard() {
  clearInterval(boardTimer);
  boardTimer = null;
  boardShown = "";
}

async function refreshBoard() {
  if (!auth) return;
  try {
    const rows = await api("GET", "/api/v1/requests", auth.token);
    $("board-error").textContent = "";
    const text = JSON.stringify(rows);
    if (text === boardShown) return;
    boardShown = text;
    $("board-empty").classList.toggle("hidden", rows.length > 0);
    $("board-list").replaceChildren(...rows.map(boardRow));
  } catch (err) {
    if (!expired(err)) showRefusal("board-error", ["看板未更新", "Board not updated"], err);
  }
}

function boardRow(v) {
  const was = (local("bodies") || {})[v.request_id];
  const when = was ? `${hhmm(was.posted_at_ms)} 发布 posted` : `截止 until ${hhmm(v.deadline_at_ms)}`;
  const wage = was ? ` · ${was.wage_yuan_per_day} 元/天` : "";
  const head = el("div", { class: "head" },
    el("strong", {}, skillName(v.skill)),
    el("span", { class: "count" }, ` ${v.assigned}/${v.headcount} 人${wage}`),
    el("span", { class: "badge status-" + v.status, "data-status": v.status }, STATUS[v.status] || v.status),
    el("span", { class: "muted" }, when));
  const open = el("button", { type: "button", class: "secondary follow-btn", textContent: "查看 Follow",
    onclick: () => { follow(v.request_id); $("request").scrollIntoView({ behavior: "smooth" }); } });
  const jobs = jobsOf(v);
  return el("li", { class: "board-row", "data-request": v.request_id, "data-status": v.status },
    head,
    jobs.length ? el("ul", { class: "jobs" }, ...jobs.map((j) => jobRow(v, j, "board-error"))) : null,
    el("div", { class: "row" }, open));
}

// --- start -----------------------------------------------------------------------------------

fillSkills($("skill"), "general_labourer");
$("login-btn").onclick = () => login(false);
$("dev-login-btn").onclick = () => login(true);
$("logout-btn").onclick = logout;
$("post-form").onsubmit = post;
$("cancel-btn").onclick = cancel;
$("market").onchange = hintMarket;
showLogin();
hintMarket();
if (auth) {
  startBoard();
  const was = local("following");
  if (was) follow(was);
}
