// The cortex dashboard: polls GET /admin/dashboard, draws nodes, models and recent requests,
// and acts through the admin API. The admin key lives in sessionStorage only (this tab).
"use strict";

const KEY = "cortex-admin-key";
const POLL_MS = 2000;
const COLORS = ["#0969da", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#cf222e", "#57606a"];
let last = null;
let timer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "onclick") node.addEventListener("click", value);
    else if (name === "style") Object.assign(node.style, value);  // CSSOM: allowed by the CSP
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = "Bearer " + key;
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.statusText;
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function say(text, isError = false) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

function mb(value) {
  return typeof value === "number" ? `${Math.round(value).toLocaleString()} MB` : "-";
}

function seconds(value) {
  if (typeof value !== "number") return "-";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function ago(stamp) {
  if (typeof stamp !== "number" || stamp <= 0) return "never";
  const s = Math.max(0, Date.now() / 1000 - stamp);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${(s / 3600).toFixed(1)}h ago`;
}

// -- actions -------------------------------------------------------------------------------

async function act(question, method, path, body, done) {
  if (!window.confirm(question)) return;
  say(`${question.replace(/\?$/, "")}…`);
  try {
    const result = await api(method, path, body);
    say(done(result));
  } catch (error) {
    say(error.message, true);
  }
  refresh();
}

const actions = {
  load: (model, node) => act(
    `Load ${model}${node ? " on " + node : ""}?`, "POST", "/admin/models/load",
    node ? { model, node } : { model },
    (r) => `loaded ${r.model} on ${r.node}` +
      (r.evictions.length ? `, evicting ${r.evictions.map((e) => e.model).join(", ")}` : "")),
  unload: (model, node) => act(
    `Unload ${model}${node ? " from " + node : " everywhere"}?`, "POST", "/admin/models/unload",
    node ? { model, node } : { model },
    (r) => `unloaded ${r.model} from ${r.unloaded_from.join(", ") || "nowhere"}`),
  pin: (model) => act(
    `Pin ${model} (keep it loaded, never evict it)?`, "POST", "/admin/models/pin", { model },
    (r) => `pinned ${r.model}, loaded on ${r.loaded_on}`),
  unpin: (model) => act(
    `Unpin ${model}?`, "POST", "/admin/models/unpin", { model }, (r) => `unpinned ${r.model}`),
  cordon: (node) => act(
    `Cordon ${node} (no new loads there)?`, "POST", `/admin/nodes/${encodeURIComponent(node)}/cordon`,
    undefined, () => `cordoned ${node}`),
  uncordon: (node) => act(
    `Uncordon ${node}?`, "POST", `/admin/nodes/${encodeURIComponent(node)}/uncordon`, undefined,
    () => `uncordoned ${node}`),
  drain: (node) => act(
    `Drain ${node}: move its models elsewhere and unload them?`, "POST",
    `/admin/nodes/${encodeURIComponent(node)}/drain`, undefined,
    (r) => `${node} ${r.state}: ` + [
      ...r.moved.map((m) => `moved ${m.model} to ${m.to}`),
      ...r.unloaded.map((m) => `unloaded ${m}`),
      ...r.stayed.map((m) => `kept ${m.model} (${m.reason})`),
    ].join("; ")),
};

function button(label, action, ...args) {
  return el("button", {
    type: "button", "data-action": label, "data-target": args.filter(Boolean).join("@"),
    onclick: () => actions[action](...args),
  }, label);
}

// -- drawing -------------------------------------------------------------------------------

function nodeState(node) {
  if (!node.up) return "down";
  if (node.draining) return "draining";
  if (node.cordoned) return "cordoned";
  return "up";
}

function drawNodes(data) {
  const cards = data.nodes.map((node) => {
    const state = nodeState(node);
    const capacity = node.memory_capacity_mb;
    const loaded = node.models.filter((m) => ["loaded", "loading", "unloading"].includes(m.state));
    const segments = [];
    const legend = [];
    loaded.forEach((model, i) => {
      const color = COLORS[i % COLORS.length];
      if (capacity && model.memory_mb) {
        const width = Math.min(100, (100 * model.memory_mb) / capacity);
        segments.push(el("span", { style: { width: `${width}%`, background: color }, title: model.id }));
      }
      legend.push(el("span", { style: { color } }, "■ "), `${model.id} ${mb(model.memory_mb)}  `);
    });
    const used = capacity != null && node.memory_free_mb != null ? capacity - node.memory_free_mb : null;
    const devices = node.devices.map((d) =>
      `${d.kind}:${d.index} ${d.name}` + (d.memory_total_mb ? ` (${mb(d.memory_total_mb)})` : ""));
    return el("div", { class: "card", "data-node": node.name, "data-state": state },
      el("h3", {}, node.name, el("span", { class: `badge ${state}` }, state)),
      el("div", { class: "muted" }, `${node.kind} · ${node.endpoint}`),
      el("div", {}, devices.join(", ") || "no devices reported"),
      node.error ? el("div", { class: "error" }, node.error) : null,
      el("div", { class: "bar", title: "memory: used by model / free" }, segments),
      el("div", { class: "legend" }, legend,
        `used ${mb(used)} of ${mb(capacity)}, free ${mb(node.memory_free_mb)}`),
      el("div", { class: "muted" },
        `in flight ${node.in_flight} · waiting ${node.waiting} · load cycles ${node.load_cycles}`),
      el("div", {},
        node.cordoned ? button("uncordon", "uncordon", node.name) : button("cordon", "cordon", node.name),
        node.draining ? null : button("drain", "drain", node.name)));
  });
  document.getElementById("nodes").replaceChildren(...cards);
}

function drawModels(data) {
  const waiting = Object.fromEntries(data.nodes.map((n) => [n.name, n.waiting]));
  const cordoned = Object.fromEntries(data.nodes.map((n) => [n.name, n.cordoned || !n.up]));
  const rows = data.models.map((model) => {
    const stats = model.stats || {};
    const states = model.nodes.map((where) => {
      // The node's {phase, fraction, bytes, total_bytes} while loading: "loading: pulling 42%".
      const p = where.progress;
      const pct = p && typeof p.fraction === "number" ? ` ${Math.round(p.fraction * 100)}%` : "";
      const progress = p && typeof p === "object" ? `: ${p.phase || "loading"}${pct}` : "";
      return el("div", { "data-where": where.node },
        el("span", { class: `state-${where.state}` }, where.state + progress), ` on ${where.node}`,
        where.state === "loaded" ? button("unload", "unload", model.id, where.node) : null);
    });
    const inFlight = model.nodes.reduce((sum, w) => sum + (w.in_flight || 0), 0);
    const queue = model.nodes.filter((w) => w.state === "loaded")
      .reduce((sum, w) => sum + (waiting[w.node] || 0), 0);
    const lastUsed = Math.max(0, ...model.nodes.map((w) => w.last_used_at || 0));
    const pinned = model.pinned || model.nodes.some((w) => w.pinned);
    const loadable = model.loadable_on.filter((n) => !model.loaded_on.includes(n) && !cordoned[n]);
    return el("tr", { "data-model": model.id },
      el("td", { class: "id" }, model.id,
        model.aliases.length ? el("div", { class: "muted" }, model.aliases.join(", ")) : null),
      el("td", {}, states.length ? states : el("span", { class: "muted" }, "not loaded")),
      el("td", {}, pinned ? "yes" : ""),
      el("td", {}, inFlight),
      el("td", {}, queue),
      el("td", {}, typeof stats.tokens_per_s_p50 === "number" ? stats.tokens_per_s_p50.toFixed(0) : "-"),
      el("td", {}, `${seconds(stats.ttft_p50_s)} / ${seconds(stats.ttft_p95_s)}`),
      el("td", {}, stats.requests || 0),
      el("td", {}, ago(lastUsed)),
      el("td", {},
        loadable.map((node) => button(`load on ${node}`, "load", model.id, node)),
        pinned ? button("unpin", "unpin", model.id) : button("pin", "pin", model.id)));
  });
  document.querySelector("#models tbody").replaceChildren(...rows);
  const select = document.getElementById("placement-model");
  const chosen = select.value;
  select.replaceChildren(...data.models.map((m) => el("option", { value: m.id }, m.id)));
  if (chosen) select.value = chosen;
}

function drawRecent(data) {
  const errorsOnly = document.getElementById("errors-only").checked;
  const rows = data.recent.filter((r) => !errorsOnly || r.status >= 400).map((r) =>
    el("tr", { class: r.status >= 400 ? "error" : "" },
      el("td", {}, new Date(r.at * 1000).toLocaleTimeString()),
      el("td", {}, r.dialect), el("td", { class: "id" }, r.model), el("td", {}, r.node),
      el("td", {}, r.status), el("td", {}, seconds(r.ttft_s)),
      el("td", {}, `${r.prompt_tokens} / ${r.completion_tokens}`),
      el("td", {}, seconds(r.duration_s))));
  document.querySelector("#recent tbody").replaceChildren(...rows);
}

function draw(data) {
  last = data;
  const up = data.nodes.filter((n) => n.up).length;
  document.getElementById("summary").textContent =
    `${up} of ${data.nodes.length} nodes up · ${data.models.length} models · ` +
    `strategy ${data.strategy} · v${data.version}`;
  document.getElementById("updated").textContent =
    `updated ${new Date(data.generated_at * 1000).toLocaleTimeString()}`;
  drawNodes(data);
  drawModels(data);
  drawRecent(data);
}

// -- polling and the key -------------------------------------------------------------------

async function refresh() {
  try {
    const data = await api("GET", "/admin/dashboard");
    document.getElementById("login").hidden = true;
    document.getElementById("board").hidden = false;
    document.getElementById("logout").hidden = !sessionStorage.getItem(KEY);
    draw(data);
  } catch (error) {
    if (error.status === 401) {
      document.getElementById("board").hidden = true;
      document.getElementById("login").hidden = false;
      if (sessionStorage.getItem(KEY)) {
        document.getElementById("login-error").textContent = "that key was refused";
        sessionStorage.removeItem(KEY);
      }
    } else {
      document.getElementById("summary").textContent = `cannot reach the gateway: ${error.message}`;
    }
  }
}

function start() {
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("key").value);
    document.getElementById("key").value = "";
    document.getElementById("login-error").textContent = "";
    refresh();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    refresh();
  });
  document.getElementById("errors-only").addEventListener("change", () => last && drawRecent(last));
  document.getElementById("placement").addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = document.getElementById("placement-model").value;
    const out = document.getElementById("placement-result");
    try {
      const plan = await api("GET", `/admin/placement?model=${encodeURIComponent(model)}`);
      const evictions = plan.evictions.map((e) => `  evict ${e.model} from ${e.node} (${mb(e.memory_mb)}, ${e.reason})`);
      out.textContent = [`${plan.model}: ${plan.action} on ${plan.node}`, `  ${plan.reason}`,
        ...evictions].join("\n");
    } catch (error) {
      out.textContent = error.message;
    }
  });
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
