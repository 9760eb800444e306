// The worker's phone: log in, check in (by position or at a market) with up to five skills,
// receive offers on a WebSocket and answer them, get "hired" with the job's details, report
// arrival and the end of the job. A reload restores the login, the check-in, the live offers
// and the current job; a reconnect refreshes offers and jobs from the API (kept by id, so
// nothing is missed or shown twice).
"use strict";

const MAX_SKILLS = 5;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 15000;
const PROVINCE = { lonMin: 108.8, lonMax: 114.3, latMin: 24.6, latMax: 30.1 };
const ACTIVE = new Set(["hired", "arrived"]);
const STATUS_RANK = { hired: 0, arrived: 1, done: 2, no_show: 2, cancelled: 2 };
const JOB_STATUS = {
  hired: "已录用，请按时到达 / hired: please be there on time",
  arrived: "已到达，开工 / arrived: at work",
  done: "已完工 / job done",
  no_show: "记为未到 / marked as a no-show",
  cancelled: "工作已取消 / the job was cancelled",
};
const WITHDRAWN = {
  expired: "已过期 expired", filled: "已招满 filled", cancelled: "已取消 cancelled",
  request_expired: "需求已过期 request expired", too_late: "太迟了 too late",
};
const BACK_IN_POOL = "已回到待派池，会收到新的邀约 / back in the pool — you will get new offers";

let auth = loadAuth();
let socket = null;
let retryMs = RETRY_MIN_MS;
let retryTimer = null;
let link = "offline";                  // offline | connecting | connected
let position = null;                   // {lon, lat} once the browser gave one
let chosen = null;                     // the market picked in the list
let searchTimer = null;
let searchSeq = 0;
let skillNames = Object.entries(SKILLS).map(([skill, text]) => {
  const [zh, ...en] = text.split(" ");
  return { skill, name_zh: zh, name_en: en.join(" ") };
});
const offers = new Map();              // offer id -> OfferMade
const jobs = new Map();                // request id -> {hired, status, reason}
const marketNames = new Map();         // market id -> {name_zh, name_en}
let fresh = null;                      // offer ids that came or went on the socket during a refresh

// --- small helpers --------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "role" || k.startsWith("data-") || k.startsWith("aria-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== ""));
  return node;
}

function store(key) { return auth ? `worker:${auth.subject}:${key}` : null; }
function saveLocal(key, value) {
  const k = store(key);
  if (k) value === null ? localStorage.removeItem(k) : localStorage.setItem(k, JSON.stringify(value));
}
function readLocal(key) {
  const k = store(key);
  try { return k ? JSON.parse(localStorage.getItem(k) || "null") : null; } catch { return null; }
}

function loadAuth() {
  try {
    const data = JSON.parse(localStorage.getItem("worker:auth") || "null");
    return data && data.expires_at_s * 1000 > Date.now() ? data : null;
  } catch { return null; }
}

function showError(id, text) { $(id).textContent = text; }
function clearError(id) { $(id).textContent = ""; }

// What went wrong, in words a worker understands (both languages).
function explain(err) {
  const m = String(err && err.message || err);
  if (err instanceof TypeError) return "网络不通，请稍后再试 / no network: try again in a moment";
  if (m.startsWith("401")) return "登录已过期，请重新登录 / your login expired: log in again";
  if (m.startsWith("403")) return "无权操作 / not allowed: " + m.slice(5);
  if (m.startsWith("404")) return "找不到 / not found: " + m.slice(5);
  if (m.startsWith("409")) return "已处理过 / already done: " + m.slice(5);
  if (m.startsWith("422")) return "输入有误 / please check: " + m.slice(5);
  return "出错了 / something went wrong: " + m;
}

function expired(err) {
  if (!String(err && err.message).startsWith("401")) return false;
  logout("登录已过期，请重新登录 / your login expired: log in again");
  return true;
}

function note(text) {
  const li = el("li", {}, el("time", {}, clock(Date.now())), " " + text);
  $("answers").prepend(li);
  while ($("answers").children.length > 30) $("answers").lastChild.remove();
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString("zh-CN", { hour: "2-digit", minute: "2-digit" });
}

function when(ms) {
  if (!ms) return "尽快 / as soon as possible";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  const day = today ? "今天 today" : d.toLocaleDateString("zh-CN", { month: "numeric", day: "numeric" });
  return `${day} ${clock(ms)}`;
}

function skillText(skill) {
  const s = skillNames.find((x) => x.skill === skill);
  return s ? `${s.name_zh} ${s.name_en}` : skill;
}

function marketText(m) {
  const names = marketNames.get(m.market_id);
  const zh = m.market_name_zh || (names && names.name_zh) || "";
  const en = m.market_name_en || (names && names.name_en) || "";
  if (!zh && !en) lookUpMarket(m.market_id);
  return [zh, en].filter(Boolean).join(" ") || m.market_id;
}

async function lookUpMarket(id) {
  if (marketNames.has(id)) return;
  marketNames.set(id, null);
  try {
    marketNames.set(id, await api("GET", `/api/v1/markets/${encodeURIComponent(id)}`));
    renderOffers(); renderJob();
  } catch { /* the code stays shown */ }
}

// --- login ----------------------------------------------------------------------------------

function showLogin() {
  const in_ = Boolean(auth);
  $("login").classList.toggle("hidden", in_);
  for (const id of ["who", "checkin", "offers-box", "log-box"]) $(id).classList.toggle("hidden", !in_);
  if (!in_) { $("job-box").classList.add("hidden"); banner(); return; }
  $("who-text").textContent = `工人 Worker ${auth.subject}`;
  restore();
  connect();
}

async function login(dev) {
  clearError("login-error");
  try {
    if (dev) {
      auth = await devLogin("worker", $("worker-id").value.trim());
    } else {
      const token = $("token").value.trim();
      const me = await api("GET", "/api/v1/me", token);
      if (me.role !== "worker") throw new Error("403: 不是工人令牌 / not a worker's token");
      auth = { token, role: me.role, subject: me.subject, expires_at_s: Date.now() / 1000 + 3600 };
    }
    localStorage.setItem("worker:auth", JSON.stringify(auth));
    showLogin();
  } catch (err) { showError("login-error", "登录失败 / login failed: " + explain(err)); }
}

function logout(why) {
  auth = null;
  localStorage.removeItem("worker:auth");
  clearTimeout(retryTimer);
  if (socket) { const s = socket; socket = null; s.onclose = null; s.close(); }
  link = "offline";
  offers.clear(); jobs.clear();
  renderOffers(); renderJob();
  showLogin();
  if (why) showError("login-error", why);
}

// --- the socket -----------------------------------------------------------------------------

function connect() {
  if (socket || !auth) return;
  clearTimeout(retryTimer);
  if (auth.expires_at_s * 1000 <= Date.now()) { logout("登录已过期，请重新登录 / your login expired: log in again"); return; }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  link = "connecting";
  setConnection("连接中 connecting", "connecting");
  socket = new WebSocket(`${scheme}://${location.host}/ws/worker?token=${encodeURIComponent(auth.token)}`);
  socket.onmessage = (msg) => { try { receive(JSON.parse(msg.data)); } catch (e) { console.error(e); } };
  socket.onclose = () => {
    socket = null;
    link = "offline";
    setConnection("未连接 offline", "offline");
    if (!auth) return;
    // Capped exponential backoff with jitter: many phones come back at once after an outage.
    const wait = Math.round(retryMs * (0.8 + Math.random() * 0.4));
    retryTimer = setTimeout(connect, wait);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    banner(wait);
  };
}

function reconnectNow() {
  if (!auth || socket) return;
  retryMs = RETRY_MIN_MS;
  connect();
}

function setConnection(text, state) {
  $("connection").textContent = text;
  $("connection").dataset.state = state;
  banner();
}

function banner(waitMs) {
  const b = $("offline-banner");
  let text = "";
  if (!navigator.onLine) text = "手机没有网络：恢复后会自动重连 / You are offline: the page reconnects when the network is back";
  else if (auth && link === "offline") {
    const s = waitMs ? ` ${Math.ceil(waitMs / 1000)} s` : "";
    text = `连接中断，正在重连${s} / Connection lost: reconnecting${s ? " in" + s : ""}…`;
  }
  b.textContent = text;
  b.classList.toggle("hidden", !text);
}

function receive(m) {
  switch (m.type) {
    case "Welcome":
      retryMs = RETRY_MIN_MS;
      link = "connected";
      setConnection("已连接 connected", "connected");
      refresh();
      break;
    case "OfferMade": gotOffer(m); break;
    case "OfferWithdrawn": offerGone(m.offer_id, `邀约已撤回 / offer withdrawn: ${WITHDRAWN[m.reason] || m.reason}`); break;
    case "AnswerSent":
      offerGone(m.offer_id, m.answer === "accept"
        ? "已接受，等待确认 / accepted: waiting for the station to confirm" : "已拒绝 / declined");
      break;
    case "AnswerRefused":
      offerGone(m.offer_id, null);
      showError("offer-error", "未能提交 / not sent: " + m.reason);
      break;
    case "Hired": hired(m, true); break;
    case "JobChanged": jobChanged(m); break;
    case "Error": showError("offer-error", "出错了 / error: " + m.reason); break;
    default: if (m.reason) note(m.reason);
  }
}

// An offer that became a job is never shown again (a late resend of it, say).
function isJob(offerId) { return [...jobs.values()].some((j) => j.hired.offer_id === offerId); }

function gotOffer(o) {
  if (fresh) fresh.add(o.offer_id);
  if (o.expires_at_ms <= Date.now() || offers.has(o.offer_id) || isJob(o.offer_id)) return;
  offers.set(o.offer_id, o);
  renderOffers();
}

function offerGone(id, text) {
  if (fresh) fresh.add(id);
  offers.delete(id);
  renderOffers();
  if (text) note(text);
}

// After every (re)connect: what happened while the page was away. The socket listens before
// its Welcome, so whatever the API misses arrives on it; ids keep each offer and job once.
async function refresh() {
  fresh = new Set();
  const seen = fresh;
  try {
    const live = await api("GET", `/api/v1/workers/${encodeURIComponent(auth.subject)}/offers`, auth.token);
    const ids = new Set(live.map((o) => o.offer_id));
    for (const id of offers.keys()) if (!ids.has(id) && !seen.has(id)) offers.delete(id);
    for (const o of live) if (!seen.has(o.offer_id) && !isJob(o.offer_id)) offers.set(o.offer_id, o);
    renderOffers();
  } catch (err) { if (!expired(err)) showError("offer-error", explain(err)); }
  finally { if (fresh === seen) fresh = null; }
  await refreshJobs();   // returns at once if the login expired meanwhile
}

async function refreshJobs() {
  if (!auth) return;
  try {
    const list = await api("GET", `/api/v1/workers/${encodeURIComponent(auth.subject)}/jobs`, auth.token);
    for (const j of list) mergeJob(j.hired, j.status, j.reason || "");
    saveJobs();
    renderJob();
  } catch (err) {
    // 404: a gateway without the jobs route; the jobs this page saw are kept meanwhile.
    if (!String(err.message).startsWith("404") && !expired(err)) showError("job-error", explain(err));
  }
}

function mergeJob(h, status, reason) {
  const known = jobs.get(h.request_id);
  if (known && STATUS_RANK[known.status] >= STATUS_RANK[status]) return false;
  jobs.set(h.request_id, { hired: h, status, reason });
  if (offers.delete(h.offer_id)) renderOffers();
  return true;
}

function saveJobs() {
  const recent = [...jobs.values()].filter((j) => j.hired.at_ms > Date.now() - 24 * 3600e3);
  saveLocal("jobs", recent);
}

function hired(h, live) {
  offers.delete(h.offer_id);
  renderOffers();
  if (!mergeJob(h, "hired", "")) return;
  saveJobs();
  renderJob();
  if (!live) return;
  note(`已录用 / hired: ${marketText(h)}`);
  notify("你被录用了 You are hired", `${marketText(h)} · ${when(h.start_at_ms)} · ${h.wage_yuan_per_day} 元/天`, h.offer_id);
  $("job-box").scrollIntoView({ behavior: "smooth", block: "start" });
}

function jobChanged(c) {
  const job = jobs.get(c.request_id);
  if (!job) { refreshJobs(); return; }
  if (!mergeJob(job.hired, c.status, c.reason || "")) return;
  clearError("job-error");   // the job moved on: an earlier refusal no longer matters
  saveJobs();
  renderJob();
  note(`${JOB_STATUS[c.status] || c.status}${c.reason ? "：" + c.reason : ""}`);
  if (!ACTIVE.has(c.status)) note(BACK_IN_POOL);
}

function notify(title, body, tag) {
  if (navigator.vibrate) navigator.vibrate([200, 100, 200]);
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try { new Notification(title, { body, tag, lang: "zh-CN" }); } catch { /* phones need a service worker */ }
}

function askNotifications() {
  // Only on a tap (browsers refuse the prompt otherwise), and only once.
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
}

// --- offers ---------------------------------------------------------------------------------

function answer(offerId, type) {
  clearError("offer-error");
  if (type === "accept") askNotifications();
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type, offer_id: offerId }));
    return;
  }
  api("POST", "/api/v1/answers", auth.token, { type, offer_id: offerId })
    .then((r) => receive(r))
    .catch((err) => { if (!expired(err)) showError("offer-error", explain(err)); });
}

function secondsLeft(o) { return Math.max(0, Math.round((o.expires_at_ms - Date.now()) / 1000)); }

function offerCard(o) {
  const left = secondsLeft(o);
  const others = o.headcount > 1 ? `招 ${o.headcount} 人 / ${o.headcount} workers needed` : "招 1 人 / 1 worker needed";
  const yes = el("button", { class: "accept", onclick: () => answer(o.offer_id, "accept") }, "接受 Accept");
  const no = el("button", { class: "secondary decline", onclick: () => answer(o.offer_id, "decline") }, "拒绝 Decline");
  return el("article", { class: "offer", "data-offer-id": o.offer_id },
    el("div", { class: "wage" }, `${o.wage_yuan_per_day} 元/天 yuan/day`),
    el("div", { class: "what" }, `${skillText(o.skill)} · ${others}`),
    o.note ? el("p", { class: "note" }, o.note) : null,
    el("div", { class: "start" }, "开工 Start: " + when(o.start_at_ms)),
    el("div", { class: "market" }, "地点 Where: " + marketText(o)),
    o.address ? el("div", { class: "address" }, "地址 Address: " + o.address) : null,
    el("div", { class: "muted" }, `距离 distance ${o.distance_km.toFixed(1)} km`),
    el("div", { class: "countdown", "data-offer-id": o.offer_id }, countdown(left)),
    el("div", { class: "row" }, yes, no));
}

function countdown(left) { return `剩余 ${left} 秒 / ${left} s left to answer`; }

function renderOffers() {
  const now = Date.now();
  for (const [id, o] of offers) if (o.expires_at_ms <= now) offers.delete(id);
  $("no-offers").classList.toggle("hidden", offers.size > 0);
  const list = [...offers.values()].sort((a, b) => a.expires_at_ms - b.expires_at_ms);
  $("offers").replaceChildren(...list.map(offerCard));
}

// Once a second: only the countdowns change; the cards (and their buttons) stay put, so a
// tap never lands on a node that was just replaced.
function tick() {
  let gone = false;
  for (const o of offers.values()) {
    if (o.expires_at_ms <= Date.now()) { gone = true; continue; }
    const c = document.querySelector(`.countdown[data-offer-id="${CSS.escape(o.offer_id)}"]`);
    if (c) c.textContent = countdown(secondsLeft(o));
  }
  if (gone) renderOffers();
}

// --- the job --------------------------------------------------------------------------------

function currentJob() {
  const all = [...jobs.values()].sort((a, b) => b.hired.at_ms - a.hired.at_ms);
  return all.find((j) => ACTIVE.has(j.status)) || all[0] || null;
}

function contactNode(contact) {
  if (!contact) return "驿站 the station";
  const phone = contact.replace(/[\s()-]/g, "");
  return /^\+?\d{5,20}$/.test(phone) ? el("a", { class: "tel", href: "tel:" + phone }, "☎ " + contact) : contact;
}

function renderJob() {
  const job = currentJob();
  $("job-box").classList.toggle("hidden", !job || !auth);
  if (!job) return;
  const h = job.hired;
  const active = ACTIVE.has(job.status);
  const others = h.others > 0 ? `另有 ${h.others} 人同去 / ${h.others} other${h.others > 1 ? "s" : ""} coming too`
    : "只有你一人 / only you";
  $("job-box").dataset.status = job.status;
  $("job-title").textContent = active ? "你被录用了 You are hired" : "工作结束 The job has ended";
  $("job").replaceChildren(
    el("div", { class: "wage" }, `${h.wage_yuan_per_day} 元/天 yuan/day · ${skillText(h.skill)}`),
    h.note ? el("p", { class: "note" }, h.note) : null,
    el("div", { class: "start" }, "开工 Start: " + when(h.start_at_ms)),
    el("div", { class: "market" }, "地点 Where: " + marketText(h)),
    h.address ? el("div", { class: "address" }, "地址 Address: " + h.address) : null,
    el("div", { class: "contact" }, "联系 Contact: ", contactNode(h.contact)),
    el("div", { class: "others" }, others));
  $("arrived-btn").classList.toggle("hidden", job.status !== "hired");
  $("done-btn").classList.toggle("hidden", !active);
  const status = JOB_STATUS[job.status] + (job.reason ? "：" + job.reason : "");
  $("job-state").textContent = active ? status : `${status}. ${BACK_IN_POOL}`;
  $("job-state").dataset.state = active ? job.status : "pool";
}

async function reportStep(step) {
  const job = currentJob();
  if (!job || !ACTIVE.has(job.status)) return;
  clearError("job-error");
  const buttons = [$("arrived-btn"), $("done-btn")];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await api("POST", `/api/v1/worker/jobs/${encodeURIComponent(job.hired.request_id)}`, auth.token, { step });
    $("job-state").textContent = "已发送，等待确认 / sent: waiting for confirmation";
  } catch (err) { if (!expired(err)) showError("job-error", explain(err)); }
  finally { buttons.forEach((b) => { b.disabled = false; }); }
}

// --- check-in -------------------------------------------------------------------------------

async function loadSkills() {
  try { skillNames = await api("GET", "/api/v1/skills"); } catch { /* the built-in names stay */ }
  renderSkills();
}

function renderSkills(skills) {
  const ticked = new Set(skills || chosenSkills());
  if (ticked.size === 0) ticked.add("general_labourer");
  $("skills").replaceChildren(...skillNames.map((s) => el("label", { class: "check" },
    el("input", { type: "checkbox", value: s.skill, checked: ticked.has(s.skill), onchange: limitSkills }),
    el("span", {}, `${s.name_zh} ${s.name_en}`))));
  limitSkills();
}

function chosenSkills() { return [...document.querySelectorAll("#skills input:checked")].map((i) => i.value); }

function limitSkills() {
  const n = chosenSkills().length;
  $("skills-count").textContent = `${n}/${MAX_SKILLS}`;
  for (const box of document.querySelectorAll("#skills input")) {
    box.disabled = !box.checked && n >= MAX_SKILLS;
    box.parentElement.classList.toggle("disabled", box.disabled);
  }
}

function skillsOrError() {
  const skills = chosenSkills();
  if (skills.length === 0) { showError("checkin-error", "请至少选一个工种 / choose at least one skill"); return null; }
  return skills;
}

function inProvince(p) {
  return p.lon >= PROVINCE.lonMin && p.lon <= PROVINCE.lonMax && p.lat >= PROVINCE.latMin && p.lat <= PROVINCE.latMax;
}

function locate() {
  return new Promise((resolve, reject) => {
    if (!navigator.geolocation) { reject(new Error("这个浏览器不能定位 / this browser cannot locate you")); return; }
    navigator.geolocation.getCurrentPosition(
      (p) => resolve({ lon: p.coords.longitude, lat: p.coords.latitude }),
      (e) => reject(new Error(e.code === 1 ? "未允许定位 / location not allowed" : "无法定位 / location unavailable")),
      { enableHighAccuracy: false, timeout: 15000, maximumAge: 60000 });
  });
}

async function checkInHere() {
  clearError("checkin-error");
  askNotifications();
  const skills = skillsOrError();
  if (!skills) return;
  let here;
  try { here = await locate(); } catch (err) {
    showError("checkin-error", `${err.message}：请在下面选择市场 / pick a market below`);
    $("market").focus();
    return;
  }
  position = here;
  searchMarkets();
  if (!inProvince(here)) {
    showError("checkin-error", "你的位置不在服务区（湖南）/ you are outside the service area (Hunan): pick a market below");
    return;
  }
  const label = `我的位置 my position (${here.lat.toFixed(4)}, ${here.lon.toFixed(4)})`;
  await sendCheckIn({ lon: here.lon, lat: here.lat, skills }, label);
}

async function checkInAtMarket() {
  clearError("checkin-error");
  askNotifications();
  const skills = skillsOrError();
  if (!skills) return;
  const market = chosen || await exactMarket($("market").value);
  if (!market) { showError("checkin-error", "请先在列表中选择市场 / pick a market from the list first"); return; }
  await sendCheckIn({ market_id: market.market_id, skills }, `${market.name_zh} ${market.name_en} (${market.market_id})`);
}

async function exactMarket(text) {
  const q = text.trim();
  if (!q) return null;
  try {
    const [first] = await api("GET", `/api/v1/markets?q=${encodeURIComponent(q)}&limit=1`);
    return first && first.market_id.toLowerCase() === q.toLowerCase() ? first : null;
  } catch { return null; }
}

async function sendCheckIn(body, label) {
  try {
    await api("POST", "/api/v1/worker/check-in", auth.token, body);
    const state = { label, skills: body.skills, at_ms: Date.now() };
    saveLocal("checkin", state);
    showCheckIn(state);
    note("已签到 / checked in: " + label);
  } catch (err) { if (!expired(err)) showError("checkin-error", "签到失败 / check-in failed: " + explain(err)); }
}

function showCheckIn(state) {
  const s = $("checkin-state");
  if (!state) { s.textContent = "未签到 / not checked in"; s.dataset.state = "out"; return; }
  s.textContent = `已签到，等待邀约 / checked in, waiting for offers: ${state.label} · `
    + `${state.skills.map(skillText).join("、")} · ${clock(state.at_ms)}`;
  s.dataset.state = "checked-in";
}

async function goOffline() {
  clearError("checkin-error");
  try {
    await api("POST", "/api/v1/worker/offline", auth.token);
    saveLocal("checkin", null);
    showCheckIn(null);
    $("checkin-state").textContent = "已下线，不再接收邀约 / offline: no more offers";
  } catch (err) { if (!expired(err)) showError("checkin-error", explain(err)); }
}

// --- the market picker ----------------------------------------------------------------------

function searchSoon() {
  chosen = null;
  $("market-chosen").textContent = "";
  clearTimeout(searchTimer);
  searchTimer = setTimeout(searchMarkets, 250);
}

async function searchMarkets() {
  const seq = ++searchSeq;
  const params = new URLSearchParams({ q: $("market").value.trim().slice(0, 60), limit: "10" });
  if (position) { params.set("lon", position.lon.toFixed(5)); params.set("lat", position.lat.toFixed(5)); }
  try {
    const found = await api("GET", "/api/v1/markets?" + params);
    if (seq !== searchSeq) return;   // a newer search is on its way
    for (const m of found) marketNames.set(m.market_id, m);
    renderMarkets(found);
  } catch (err) { showError("checkin-error", explain(err)); }
}

function renderMarkets(found) {
  if (found.length === 0) {
    $("market-list").replaceChildren(el("p", { class: "muted" }, "没有找到 / no market found"));
    return;
  }
  $("market-list").replaceChildren(...found.map((m) => el("button", {
    class: "choice", type: "button", role: "option", "data-market-id": m.market_id,
    "aria-selected": String(Boolean(chosen) && chosen.market_id === m.market_id),
    onclick: () => choose(m),
  }, el("span", { class: "name" }, `${m.name_zh} ${m.name_en}`),
    el("span", { class: "muted" }, ` ${m.market_id}`
      + (m.distance_km === null || m.distance_km === undefined ? "" : ` · ${m.distance_km.toFixed(1)} km`)))));
}

function choose(m) {
  chosen = m;
  for (const b of document.querySelectorAll("#market-list .choice")) {
    b.setAttribute("aria-selected", String(b.dataset.marketId === m.market_id));
  }
  $("market-chosen").textContent = `已选 selected: ${m.name_zh} ${m.name_en} (${m.market_id})`;
  clearError("checkin-error");
}

// --- start ----------------------------------------------------------------------------------

function restore() {
  const saved = readLocal("checkin");
  showCheckIn(saved);
  if (saved) renderSkills(saved.skills);
  for (const j of readLocal("jobs") || []) mergeJob(j.hired, j.status, j.reason || "");
  renderJob();
}

$("worker-id").value = randomId("W-");
$("login-btn").onclick = () => login(false);
$("dev-login-btn").onclick = () => login(true);
$("logout-btn").onclick = () => {
  if (auth) { saveLocal("checkin", null); saveLocal("jobs", null); }
  logout(null);
};
$("geo-btn").onclick = checkInHere;
$("checkin-btn").onclick = checkInAtMarket;
$("offline-btn").onclick = goOffline;
$("arrived-btn").onclick = () => reportStep("arrived");
$("done-btn").onclick = () => reportStep("done");
$("market").oninput = searchSoon;
$("market").onkeydown = (e) => { if (e.key === "Enter") { e.preventDefault(); checkInAtMarket(); } };
window.addEventListener("online", () => { banner(); reconnectNow(); });
window.addEventListener("offline", () => banner());
// A phone freezes a page in the background: look again when it comes back.
document.addEventListener("visibilitychange", () => { if (!document.hidden) reconnectNow(); });
// Where location is allowed already, the picker lists the nearest markets (no prompt here:
// the browser asks only when the worker taps "check in where I am").
async function knownPosition() {
  try {
    const p = await navigator.permissions.query({ name: "geolocation" });
    if (p.state !== "granted") return;
    position = await locate();
    if (!$("market").value.trim()) searchMarkets();
  } catch { /* the picker stays in registry order */ }
}

setInterval(tick, 1000);
renderSkills();
loadSkills();
searchMarkets();
knownPosition();
showLogin();
