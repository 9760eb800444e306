// The station kiosk: log in as the market's station, post a request, follow it to the end.
"use strict";

let auth = loadToken("kiosk");
let current = null;   // the request id being followed
let stream = null;    // its EventSource
let poller = null;

function describe(e) {
  switch (e.type) {
    case "WaveSent": {
      const n = e.candidates.filter((c) => c.outcome === "offered").length;
      return `已推送 ${n} 个邀约 / offers sent to ${n} workers within ${e.radius_km} km`;
    }
    case "RadiusWidened": return `扩大范围 / widening the search to ${e.radius_km} km`;
    case "WorkerAssigned": return `已录用 ${e.assigned}/${e.headcount} / worker ${e.worker_id} is coming`;
    case "RequestFilled": return `招满 / filled: all ${e.headcount} workers are coming`;
    case "RequestExpired": return `已过期 / expired with ${e.assigned} of ${e.headcount} workers`;
    case "RequestCancelled": return `已取消 / cancelled (${e.assigned} already assigned)`;
    case "RequestRejected": return `被拒绝 / rejected: ${e.reason}`;
    default: return e.type;
  }
}

function showLogin() {
  const in_ = Boolean(auth);
  $("login").classList.toggle("hidden", in_);
  $("who").classList.toggle("hidden", !in_);
  $("post").classList.toggle("hidden", !in_);
  if (in_) $("who-text").textContent = `驿站 Station ${auth.subject}`;
}

async function login(dev) {
  $("login-error").textContent = "";
  const market = $("market").value.trim();
  try {
    auth = dev ? await devLogin("station", market)
      : await api("POST", "/api/v1/auth/station", null, { market_id: market, key: $("station-key").value.trim() });
    saveToken("kiosk", auth);
    showLogin();
  } catch (err) { $("login-error").textContent = "登录失败 / login failed: " + err.message; }
}

async function post() {
  $("post-error").textContent = "";
  const body = {
    request_id: randomId("R-"), market_id: auth.subject, skill: $("skill").value,
    headcount: Number($("headcount").value), wage_yuan_per_day: Number($("wage").value),
    deadline_min: Number($("deadline").value), note: $("note").value,
  };
  try {
    await api("POST", "/api/v1/requests", auth.token, body);
    follow(body.request_id);
  } catch (err) { $("post-error").textContent = "发布失败 / not posted: " + err.message; }
}

async function refresh() {
  if (!current) return;
  try {
    const v = await api("GET", "/api/v1/requests/" + current, auth.token);
    $("status").textContent = STATUS[v.status] || v.status;
    $("status").className = "status " + v.status;
    $("status").dataset.status = v.status;
    $("assigned").textContent = `已录用 Assigned: ${v.assigned} / ${v.headcount} · 邀约 offers out: ${v.offers_out}`;
    $("assignments").replaceChildren(...v.assignments.map((a) => {
      const li = document.createElement("li");
      li.textContent = `工人 Worker ${a.worker_id} (${a.distance_km.toFixed(1)} km)`;
      return li;
    }));
    const ended = ["filled", "expired", "cancelled", "rejected"].includes(v.status);
    $("cancel-btn").disabled = ended;
    if (ended && poller) { clearInterval(poller); poller = null; }
  } catch (err) { $("status").textContent = err.message; }
}

function follow(requestId) {
  current = requestId;
  $("request").classList.remove("hidden");
  $("request-id").textContent = requestId;
  $("log").replaceChildren();
  if (stream) stream.close();
  stream = new EventSource(`/api/v1/requests/${requestId}/events?token=${encodeURIComponent(auth.token)}`);
  const onEvent = (msg) => {
    const li = document.createElement("li");
    li.textContent = describe(JSON.parse(msg.data));
    $("log").append(li);
    refresh();
  };
  for (const type of ["WaveSent", "RadiusWidened", "WorkerAssigned", "RequestFilled",
    "RequestExpired", "RequestCancelled", "RequestRejected"]) {
    stream.addEventListener(type, onEvent);
  }
  if (poller) clearInterval(poller);
  poller = setInterval(refresh, 2000);
  refresh();
}

async function cancel() {
  try { await api("POST", `/api/v1/requests/${current}/cancel`, auth.token, { reason: "kiosk" }); }
  catch (err) { $("post-error").textContent = err.message; }
}

fillSkills($("skill"), "general_labourer");
$("login-btn").onclick = () => login(false);
$("dev-login-btn").onclick = () => login(true);
$("logout-btn").onclick = () => { auth = null; sessionStorage.removeItem("kiosk:auth"); showLogin(); };
$("post-btn").onclick = post;
$("cancel-btn").onclick = cancel;
showLogin();
