// The page: log in, pick a tenant, draw it, poll its counters, trace.

import { ApiError, call, clearToken, listAll, listIfAllowed, setToken, token } from "./api.js";
import { buildModel } from "./model.js";
import { clearPath, draw, showCounters, showPath } from "./draw.js";

const TOPOLOGY_EVERY_MS = 10000;
const COUNTERS_EVERY_MS = 2000;
const $ = (id) => document.getElementById(id);

const state = {
  tenant: null,
  admin: false,
  drawn: "",
  lastTrace: null,
  counters: null,
  countersAt: 0,
  timers: [],
};

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function showLogin(message) {
  state.timers.forEach(clearInterval);
  state.timers = [];
  clearToken();
  $("login").hidden = false;
  $("view").hidden = true;
  $("logout").hidden = true;
  $("tenant-label").hidden = true;
  $("who").textContent = "";
  $("login-error").textContent = message || "";
  setStatus("", "login");
  $("token").focus();
}

/** Reports an error; a rejected token sends the user back to log in. */
function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    showLogin("The API refused this token.");
  } else {
    setStatus(String(error.message || error), "error");
  }
}

async function fetchTopology(tenant) {
  const [tenants, routers, bridges, ports, hosts, loadBalancers, pools, members] = await Promise.all([
    listAll("/v1/tenants"),
    listAll("/v1/routers"),
    listAll("/v1/bridges"),
    listAll("/v1/ports"),
    state.admin ? listAll("/v1/hosts") : null,
    listAll("/v1/load_balancers?tenant_id=" + tenant),
    listAll("/v1/pools?tenant_id=" + tenant),
    listAll("/v1/members?tenant_id=" + tenant),
  ]);
  return { tenants, routers, bridges, ports, hosts, loadBalancers, pools, members };
}

function fillPortChoices(choices) {
  const select = $("trace-port");
  const kept = select.value;
  select.replaceChildren(
    ...choices.map((c) => {
      const option = document.createElement("option");
      option.value = c.id;
      option.textContent = c.label;
      return option;
    }),
  );
  if (choices.some((c) => c.id === kept)) select.value = kept;
}

async function refreshTopology() {
  const tenant = state.tenant;
  const data = await fetchTopology(tenant);
  if (tenant !== state.tenant) return;
  const model = buildModel(data, tenant);
  const key = JSON.stringify(model);
  if (key !== state.drawn) {
    state.drawn = key;
    const svg = $("graph");
    draw(svg, model);
    fillPortChoices(model.choices);
    if (state.lastTrace) showPath(svg, state.lastTrace.trace, state.lastTrace.port);
    await refreshCounters();
  }
  const name = data.tenants.find((t) => t.id === tenant)?.name || tenant;
  const devices = model.nodes.filter((n) => n.kind === "router" || n.kind === "bridge").length;
  setStatus(`tenant ${name}: ${devices} devices, ${model.choices.length} ports`, "ready");
}

async function refreshCounters() {
  const answer = await call("GET", "/v1/port_counters?tenant_id=" + state.tenant);
  const now = performance.now();
  const seconds = state.countersAt ? (now - state.countersAt) / 1000 : 0;
  const served = answer.hosts.length > 0;
  showCounters($("graph"), answer.items, state.counters, seconds, served);
  state.counters = answer.items;
  state.countersAt = now;
  $("counters-note").textContent = served
    ? `Counters from the datapath of host ${answer.hosts.map((h) => h.slice(0, 8)).join(", ")} (this server's agent), every ${COUNTERS_EVERY_MS / 1000} s.`
    : "This API server runs no datapath: per-port counters are on each agent's /metrics.";
  $("graph").dataset.countersAt = String(Date.now());
}

async function selectTenant(id) {
  state.tenant = id;
  state.drawn = "";
  state.counters = null;
  state.countersAt = 0;
  state.lastTrace = null;
  sessionStorage.setItem("plexus-tenant", id);
  $("trace-output").textContent = "";
  $("trace-verdict").textContent = "";
  setStatus("loading…", "loading");
  await refreshTopology();
}

async function start() {
  $("login").hidden = true;
  $("view").hidden = false;
  $("logout").hidden = false;
  setStatus("loading…", "loading");
  const tenants = await listAll("/v1/tenants");
  // Only the admin may list hosts: one probe decides which view this is.
  state.admin = (await listIfAllowed("/v1/hosts")) !== null;
  $("who").textContent = state.admin ? "admin" : "tenant token";
  const select = $("tenant");
  select.replaceChildren(
    ...tenants.map((t) => {
      const option = document.createElement("option");
      option.value = t.id;
      option.textContent = t.name;
      return option;
    }),
  );
  $("tenant-label").hidden = false;
  if (tenants.length === 0) {
    setStatus("no tenants", "ready");
    return;
  }
  const saved = sessionStorage.getItem("plexus-tenant");
  const first = tenants.find((t) => t.id === saved) || tenants.find((t) => t.name !== "provider") || tenants[0];
  select.value = first.id;
  await selectTenant(first.id);
  state.timers.push(setInterval(() => refreshTopology().catch(failed), TOPOLOGY_EVERY_MS));
  state.timers.push(setInterval(() => refreshCounters().catch(failed), COUNTERS_EVERY_MS));
}

async function runTrace(event) {
  event.preventDefault();
  const port = $("trace-port").value;
  const body = {
    port_id: port,
    dst_ip: $("trace-dst").value.trim(),
    protocol: $("trace-proto").value,
  };
  if (body.protocol !== "icmp") body.dst_port = Number($("trace-dport").value);
  const verdict = $("trace-verdict");
  verdict.className = "";
  try {
    const answer = await call("POST", "/v1/trace", body);
    state.lastTrace = { trace: answer.trace, port };
    verdict.textContent = "verdict: " + answer.trace.verdict;
    verdict.className = "verdict-" + answer.trace.verdict;
    $("trace-output").textContent = answer.summary + "\n" + answer.text;
    showPath($("graph"), answer.trace, port);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return failed(error);
    state.lastTrace = null;
    clearPath($("graph"));
    verdict.textContent = "cannot trace: " + error.message;
    verdict.className = "error";
    $("trace-output").textContent = "";
  }
}

function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    $("token").value = "";
    try {
      await call("GET", "/v1/tenants?limit=1");
    } catch (error) {
      return showLogin(error instanceof ApiError && error.status === 401 ? "The API refused this token." : String(error.message));
    }
    start().catch(failed);
  });
  $("logout").addEventListener("click", () => showLogin(""));
  $("tenant").addEventListener("change", (event) => selectTenant(event.target.value).catch(failed));
  $("trace-form").addEventListener("submit", (event) => runTrace(event).catch(failed));
  $("trace-clear").addEventListener("click", () => {
    state.lastTrace = null;
    clearPath($("graph"));
    $("trace-output").textContent = "";
    $("trace-verdict").textContent = "";
  });
  $("graph").addEventListener("click", (event) => {
    const node = event.target.closest(".node[data-port]");
    if (node) $("trace-port").value = node.dataset.port;
  });
}

wire();
if (token()) start().catch(failed);
else showLogin("");
