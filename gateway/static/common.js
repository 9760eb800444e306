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
    throw new Error(response.status + ": " + detail);
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
