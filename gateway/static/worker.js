// The worker's phone: log in, check in, receive offers on a WebSocket and answer them.
"use strict";

let auth = loadToken("worker");
let socket = null;
let retryMs = 500;
const offers = new Map();   // offer id -> OfferMade

function showLogin() {
  const in_ = Boolean(auth);
  $("login").classList.toggle("hidden", in_);
  for (const id of ["who", "checkin", "offers-box"]) $(id).classList.toggle("hidden", !in_);
  if (in_) { $("who-text").textContent = `工人 Worker ${auth.subject}`; connect(); }
}

async function login(dev) {
  $("login-error").textContent = "";
  try {
    if (dev) {
      auth = await devLogin("worker", $("worker-id").value.trim());
    } else {
      const token = $("token").value.trim();
      const me = await api("GET", "/api/v1/me", token);
      auth = { token, role: me.role, subject: me.subject, expires_at_s: Date.now() / 1000 + 3600 };
    }
    saveToken("worker", auth);
    showLogin();
  } catch (err) { $("login-error").textContent = "登录失败 / login failed: " + err.message; }
}

function connect() {
  if (socket) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/worker?token=${encodeURIComponent(auth.token)}`);
  socket.onopen = () => { retryMs = 500; };
  socket.onmessage = (msg) => receive(JSON.parse(msg.data));
  socket.onclose = () => {
    socket = null;
    $("connection").textContent = "未连接 offline";
    $("connection").dataset.state = "offline";
    if (auth) setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

function receive(m) {
  switch (m.type) {
    case "Welcome":
      $("connection").textContent = "已连接 connected";
      $("connection").dataset.state = "connected";
      break;
    case "OfferMade": offers.set(m.offer_id, m); render(); break;
    case "OfferWithdrawn": offers.delete(m.offer_id); note(`邀约已撤回 / offer withdrawn (${m.reason})`); render(); break;
    case "AnswerSent":
      offers.delete(m.offer_id);
      note(m.answer === "accept" ? "已接受，等待确认 / accepted: you are hired if places remain"
        : "已拒绝 / declined");
      render();
      break;
    case "AnswerRefused": offers.delete(m.offer_id); note("未能提交 / not sent: " + m.reason); render(); break;
    default: if (m.reason) note(m.reason);
  }
}

function note(text) {
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + " " + text;
  $("answers").prepend(li);
}

function answer(offerId, type) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type, offer_id: offerId }));
}

function render() {
  const now = Date.now();
  for (const [id, o] of offers) if (o.expires_at_ms <= now) offers.delete(id);
  $("no-offers").classList.toggle("hidden", offers.size > 0);
  $("offers").replaceChildren(...Array.from(offers.values(), (o) => {
    const div = document.createElement("div");
    div.className = "offer";
    div.dataset.offerId = o.offer_id;
    const left = Math.max(0, Math.round((o.expires_at_ms - now) / 1000));
    div.innerHTML = `<div class="wage">${o.wage_yuan_per_day} 元/天 yuan/day</div>
      <div>${SKILLS[o.skill] || o.skill} · 距离 ${o.distance_km.toFixed(1)} km · 市场 market ${o.market_id}</div>
      <div class="muted">剩余 ${left} 秒 / ${left} s left</div>`;
    const yes = document.createElement("button");
    yes.textContent = "接受 Accept"; yes.className = "accept"; yes.onclick = () => answer(o.offer_id, "accept");
    const no = document.createElement("button");
    no.textContent = "拒绝 Decline"; no.className = "secondary decline"; no.onclick = () => answer(o.offer_id, "decline");
    div.append(yes, no);
    return div;
  }));
}

async function checkIn() {
  try {
    await api("POST", "/api/v1/worker/check-in", auth.token,
      { market_id: $("market").value.trim(), skills: [$("skill").value] });
    $("checkin-state").textContent = "已签到，等待邀约 / checked in: waiting for offers";
    $("checkin-state").dataset.state = "checked-in";
  } catch (err) { $("checkin-state").textContent = "签到失败 / check-in failed: " + err.message; }
}

async function goOffline() {
  try { await api("POST", "/api/v1/worker/offline", auth.token); $("checkin-state").textContent = "已下线 / offline"; }
  catch (err) { $("checkin-state").textContent = err.message; }
}

$("worker-id").value = randomId("W-");
fillSkills($("skill"), "general_labourer");
$("login-btn").onclick = () => login(false);
$("dev-login-btn").onclick = () => login(true);
$("logout-btn").onclick = () => {
  auth = null; sessionStorage.removeItem("worker:auth");
  if (socket) socket.close();
  showLogin();
};
$("checkin-btn").onclick = checkIn;
$("offline-btn").onclick = goOffline;
setInterval(render, 1000);
showLogin();
