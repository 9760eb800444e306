// The console's shell: login (supervisor or operator), tabs, and the hooks each tab's script
// registers. A tab script calls Console.tab(name, {show, hide}); `show` runs when the tab
// opens (and after login), `hide` when another opens. Console.auth holds the token and role.
"use strict";

const Console = {
  auth: null,
  tabs: {},
  current: null,
  tab(name, hooks) { this.tabs[name] = hooks; },
  get(path) { return api("GET", path, this.auth && this.auth.token); },
  post(path, body) { return api("POST", path, this.auth && this.auth.token, body); },
  isOperator() { return !!this.auth && this.auth.role === "operator"; },
  open(name) {
    if (this.current && this.tabs[this.current] && this.tabs[this.current].hide) {
      this.tabs[this.current].hide();
    }
    this.current = name;
    for (const b of document.querySelectorAll("#tabs button")) {
      b.setAttribute("aria-selected", String(b.dataset.tab === name));
    }
    for (const s of document.querySelectorAll("section.tab")) {
      s.classList.toggle("hidden", s.id !== "tab-" + name);
    }
    location.hash = name;
    const hooks = this.tabs[name];
    if (hooks && hooks.show) hooks.show($("tab-" + name));
  },
};

function consoleShow() {
  const on = !!Console.auth;
  $("login").classList.toggle("hidden", on);
  $("who").classList.toggle("hidden", !on);
  $("tabs").classList.toggle("hidden", !on);
  if (!on) {
    for (const s of document.querySelectorAll("section.tab")) s.classList.add("hidden");
    return;
  }
  $("who-text").textContent = (Console.isOperator() ? "运维 Operator " : "监管 Supervisor ")
    + Console.auth.subject;
  const wanted = location.hash.slice(1);
  Console.open(Console.tabs[wanted] || wanted === "province" ? (wanted || "province") : "province");
}

async function consoleLogin(token) {
  const me = await api("GET", "/api/v1/me", token);
  if (me.role !== "supervisor" && me.role !== "operator") {
    throw new Error("不是监管或运维令牌 / not a supervisor's or operator's token");
  }
  Console.auth = { token, role: me.role, subject: me.subject, expires_at_s: Date.now() / 1000 + 3600 };
  saveToken("supervisor", Console.auth);
  consoleShow();
}

window.addEventListener("DOMContentLoaded", () => {
  $("login-btn").onclick = () => consoleLogin($("token").value.trim())
    .catch((e) => { $("login-error").textContent = e.message; });
  $("dev-login-btn").onclick = async () => {
    try {
      const role = $("dev-role").value;
      const t = await devLogin(role, role === "operator" ? "ops" : "supervisor");
      await consoleLogin(t.token);
    } catch (e) { $("login-error").textContent = e.message; }
  };
  $("logout-btn").onclick = () => {
    sessionStorage.removeItem("supervisor:auth");
    Console.auth = null;
    consoleShow();
  };
  for (const b of document.querySelectorAll("#tabs button")) b.onclick = () => Console.open(b.dataset.tab);
  Console.auth = loadToken("supervisor");
  consoleShow();
});
