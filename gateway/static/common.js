// Shared by the pages: names of skills and statuses (Chinese, English), tokens, API calls.
"use strict";

const SKILLS = {
  bricklayer: "瓦工 bricklayer", carpenter: "木工 carpenter", electrician: "电工 electrician",
  plumber: "水管工 plumber", painter: "油漆工 painter", welder: "焊工 welder",
  rebar_worker: "钢筋工 rebar worker", tiler: "贴砖工 tiler",
  general_labourer: "普工 general labourer", mover: "搬运工 mover", cleaner: "保洁 cleaner",
  domestic_helper: "家政 domestic helper", caregiver: "护工 caregiver", cook: "厨师 cook",
  kitchen_helper: "帮厨 kitchen helper", waiter: "服务员 waiter", courier: "快递员 courier",
  driver: "司机 driver", warehouse_picker: "仓库拣货 warehouse picker", farmhand: "农工 farmhand",
};

const STATUS = {
  submitted: "已提交 submitted", open: "待派单 open", offering: "派单中 offering",
  filled: "已招满 filled", expired: "已过期 expired", cancelled: "已取消 cancelled",
  rejected: "被拒绝 rejected",
};

function $(id) { return document.getElementById(id); }

function fillSkills(select, chosen) {
  for (const [value, text] of Object.entries(SKILLS)) {
    const option = new Option(text, value, false, value === chosen);
    select.add(option);
  }
}

function saveToken(page, data) { sessionStorage.setItem(page + ":auth", JSON.stringify(data)); }
function loadToken(page) {
  const raw = sessionStorage.getItem(page + ":auth");
  if (!raw) return null;
  const data = JSON.parse(raw);
  return data.expires_at_s * 1000 > Date.now() ? data : null;
}

async function api(method, path, token, body) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    const err = new Error(response.status + ": " + detail);
    err.status = response.status;  // what refusalText() reads
    err.detail = data.detail;
    throw err;
  }
  return data;
}

async function devLogin(role, subject) {
  return api("POST", "/api/v1/auth/dev", null, { role, subject });
}

function randomId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The time of day of an epoch-ms instant, HH:MM:SS, in the browser's time zone.
function timeOfDay(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

// --- refusals in both languages --------------------------------------------------------------
// A 422's detail is one sentence or a list of {loc, msg, type}; each becomes a sentence in
// Chinese and English, also per field, so a form can show it next to its input.
const API_FIELDS = {
  request_id: ["需求编号", "Request id"], market_id: ["市场", "Market"], skill: ["工种", "Skill"],
  skills: ["工种", "Skills"], headcount: ["人数", "Number of workers"],
  wage_yuan_per_day: ["日薪", "Daily wage"], deadline_min: ["招人时限", "Time to fill"],
  start_in_min: ["开工时间", "Start time"], note: ["备注", "Note"], contact: ["联系方式", "Contact"],
  address: ["地址", "Address"], lon: ["经度", "Longitude"], lat: ["纬度", "Latitude"],
  reason: ["原因", "Reason"], step: ["步骤", "Step"], key: ["驿站密钥", "Station key"],
  subject: ["编号", "Id"], role: ["身份", "Role"], type: ["类型", "Type"], offer_id: ["邀约", "Offer"],
};
const API_SENTENCES = {
  "unknown market": ["未知的市场", "Unknown market."],
  "this request id is already in use": ["该需求编号已被使用，请重新发布", "This request id is already in use: post again."],
  "no such request": ["找不到该需求", "No such request."],
  "not allowed": ["无权操作", "Not allowed."],
  "the token is missing or not valid": ["请先登录", "Please log in."],
  "the token has expired": ["登录已过期，请重新登录", "Your login has expired: log in again."],
  "wrong market id or station key": ["市场编号或驿站密钥不对", "Wrong market id or station key."],
  "no such job: that worker was not hired for this request": ["该工人没有被录用做这个需求", "That worker was not hired for this request."],
  "give market_id: which market's requests": ["请指定市场", "Say which market."],
};
const STATUS_SENTENCES = {
  401: ["请重新登录", "Please log in again."], 403: ["无权操作", "Not allowed."],
  404: ["找不到", "Not found."], 409: ["与当前状态冲突", "Not possible in the current state."],
  422: ["输入有误", "Please check the input."],
};

// One field problem as [zh, en] (without the field's name).
function problemText(p) {
  const n = (String(p.msg).match(/-?\d+(\.\d+)?/) || [""])[0];
  switch (p.type) {
    case "missing": return ["必填", "is required"];
    case "greater_than": return [`必须大于 ${n}`, `must be more than ${n}`];
    case "greater_than_equal": return [`不能小于 ${n}`, `must be at least ${n}`];
    case "less_than": return [`必须小于 ${n}`, `must be less than ${n}`];
    case "less_than_equal": return [`不能大于 ${n}`, `must be at most ${n}`];
    case "string_too_long": case "too_long": return [`最多 ${n} 个字`, `must be at most ${n} characters`];
    case "string_too_short": case "too_short": return ["不能为空", "must not be empty"];
    case "string_pattern_mismatch": return ["只能用字母、数字和 _ . : -", "may use letters, digits and _ . : - only"];
    case "int_type": case "int_parsing": case "int_from_float": return ["必须是整数", "must be a whole number"];
    case "float_type": case "float_parsing": case "finite_number": return ["必须是数字", "must be a number"];
    case "literal_error": case "enum": return ["不是可选的值", "is not one of the choices"];
    case "extra_forbidden": return ["不认识这一项", "is not expected"];
    case "json_invalid": return ["内容无法读取", "could not be read"];
    default: return ["无效", "is not valid: " + p.msg];
  }
}

// What went wrong: {zh, en, fields: {name: [zh, en]}} for an error from api() (or the network).
function refusalText(err) {
  if (!err || err.status === undefined) {
    return { zh: "连不上服务器，请稍后再试", en: "Cannot reach the server: try again in a moment.", fields: {} };
  }
  const d = err.detail;
  if (Array.isArray(d)) {
    const fields = {};
    const zh = [], en = [];
    for (const p of d) {
      const loc = (p.loc || []).filter((x) => x !== "body");
      const name = String(loc[0] ?? "body");
      const label = API_FIELDS[name] || [name, name];
      const [pz, pe] = problemText(p);
      fields[name] = fields[name] || [pz, pe];
      zh.push(`${label[0]}${pz}`);
      en.push(`${label[1]} ${pe}.`);
    }
    return { zh: zh.join("；"), en: en.join(" "), fields };
  }
  const sentence = API_SENTENCES[String(d)];
  if (sentence) return { zh: sentence[0], en: sentence[1], fields: {} };
  const [zh, en] = STATUS_SENTENCES[err.status] || ["出错了，请稍后再试", "Something went wrong: try again in a moment."];
  return { zh, en: d ? `${en} (${d})` : en, fields: {} };
}
