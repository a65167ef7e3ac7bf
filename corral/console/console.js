// Corral web console: plain JavaScript over the same HTTP API every client uses.
// The API key lives in sessionStorage (this tab only) and goes out as `x-api-key` on each API call.
// Event streams use fetch() on the SSE endpoint, since EventSource cannot send headers.
"use strict";

const KEY_STORAGE = "corral.apiKey";
const view = document.getElementById("view");
const nav = document.getElementById("nav");
const signoutButton = document.getElementById("signout");
let leaveView = () => {};

// --- small helpers -------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(text, extra) {
  return el("span", { class: `badge ${text} ${extra || ""}` }, text);
}

function when(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? timestamp : date.toLocaleString();
}

function textOf(content) {
  if (!Array.isArray(content)) return "";
  return content.map((block) => (block.type === "text" ? block.text : `[${block.type}]`)).join("\n");
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function tokens(usage) {
  usage = usage || {};
  return `${usage.input_tokens || 0} in / ${usage.output_tokens || 0} out`;
}

// --- the API ---------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || "error";
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

async function api(method, path, body) {
  const headers = { "x-api-key": apiKey() || "", accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const payload = await response.json().catch(() => null);
  if (response.status === 401) {
    signOut("Your API key was rejected; sign in again.");
    throw new ApiError(401, payload);
  }
  if (!response.ok) throw new ApiError(response.status, payload);
  return payload;
}

async function listAll(path, limit) {
  const items = [];
  let page = null;
  do {
    const separator = path.includes("?") ? "&" : "?";
    const result = await api("GET", `${path}${separator}limit=${limit}${page ? `&page=${encodeURIComponent(page)}` : ""}`);
    items.push(...result.data);
    page = result.next_page;
  } while (page);
  return items;
}

// Reads an SSE response body frame by frame; calls onEvent with each parsed JSON payload.
async function readStream(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let boundary;
    while ((boundary = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const frame = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
      let name = "";
      const data = [];
      for (const line of frame.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const content = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = content;
        else if (field === "data") data.push(content);
      }
      if (!name || name === "ping" || data.length === 0) continue;
      const payload = JSON.parse(data.join("\n"));
      if (name === "error") throw new ApiError(500, payload);
      onEvent(payload);
    }
  }
}

// --- sign-in -------------------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  renderSignIn(message);
}

function renderSignIn(message) {
  leaveView();
  leaveView = () => {};
  nav.hidden = true;
  signoutButton.hidden = true;
  const input = el("input", { type: "password", id: "api-key", placeholder: "sk-corral-…", autocomplete: "off", required: true });
  const notice = el("div", { class: "notice", hidden: !message }, message || "");
  const form = el(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        sessionStorage.setItem(KEY_STORAGE, input.value.trim());
        try {
          await api("GET", "/v1/sessions?limit=1");
        } catch (error) {
          if (error.status !== 401) {
            sessionStorage.removeItem(KEY_STORAGE);
            notice.textContent = `Could not reach the server: ${error.message}`;
            notice.hidden = false;
          }
          return;
        }
        if (!location.hash || location.hash === "#/signin") location.hash = "#/sessions";
        route();
      },
    },
    el("label", { for: "api-key" }, "API key"),
    input,
    el("button", { class: "primary", type: "submit" }, "Sign in"),
  );
  view.replaceChildren(
    el(
      "div",
      { class: "panel signin" },
      el("h1", {}, "Sign in to Corral"),
      el("p", { class: "muted" }, "The key stays in this browser tab only (sessionStorage)."),
      notice,
      form,
    ),
  );
  input.focus();
}

// --- sessions --------------------------------------------------------------------------------------------

async function renderSessions() {
  const notice = el("div", { class: "notice", hidden: true });
  const body = el("tbody");
  const agentSelect = el("select", { id: "new-agent", "aria-label": "Agent" });
  const environmentSelect = el("select", { id: "new-environment", "aria-label": "Environment" });
  const titleInput = el("input", { id: "new-title", placeholder: "Title (optional)" });
  const createForm = el(
    "form",
    {
      class: "newsession",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const session = await api("POST", "/v1/sessions", {
            agent: agentSelect.value,
            environment_id: environmentSelect.value,
            title: titleInput.value || null,
          });
          location.hash = `#/sessions/${session.id}`;
        } catch (error) {
          showNotice(notice, error);
        }
      },
    },
    agentSelect,
    environmentSelect,
    titleInput,
    el("button", { class: "primary", type: "submit" }, "New session"),
  );
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("h1", {}, "Sessions"), el("span", { class: "spacer" }), createForm),
    notice,
    el(
      "table",
      { id: "sessions" },
      el("thead", {}, el("tr", {}, ["Session", "Status", "Agent", "Tokens", "Active", "Created"].map((h) => el("th", {}, h)))),
      body,
    ),
  );
  const load = async () => {
    const page = await api("GET", "/v1/sessions?limit=100");
    body.replaceChildren(
      ...page.data.map((session) =>
        el(
          "tr",
          { class: "clickable", "data-id": session.id, onclick: () => (location.hash = `#/sessions/${session.id}`) },
          el("td", {}, el("div", {}, session.title || el("span", { class: "muted" }, "(untitled)")), el("div", { class: "mono muted" }, session.id)),
          el("td", {}, badge(session.status)),
          el("td", {}, session.agent.name, el("div", { class: "muted" }, session.agent.model.id)),
          el("td", {}, tokens(session.usage)),
          el("td", {}, `${(session.stats.active_seconds || 0).toFixed(1)} s`),
          el("td", {}, when(session.created_at)),
        ),
      ),
    );
    if (page.data.length === 0) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No sessions yet.")));
  };
  try {
    const [agents, environments] = await Promise.all([listAll("/v1/agents", 100), listAll("/v1/environments", 100)]);
    agentSelect.replaceChildren(...agents.map((a) => el("option", { value: a.id }, `${a.name} (${a.model.id})`)));
    environmentSelect.replaceChildren(...environments.map((e) => el("option", { value: e.id }, e.name)));
    await load();
  } catch (error) {
    showNotice(notice, error);
  }
  const timer = setInterval(() => load().catch(() => {}), 5000);
  leaveView = () => clearInterval(timer);
}

function showNotice(notice, error) {
  notice.textContent = error.type ? `${error.type}: ${error.message}` : String(error.message || error);
  notice.hidden = false;
}

async function renderSession(sessionId) {
  const controller = new AbortController();
  let active = true;
  leaveView = () => {
    active = false;
    controller.abort();
  };
  const notice = el("div", { class: "notice", hidden: true });
  const statusSlot = el("span");
  const usageSlot = el("b");
  const facts = el("div", { class: "facts" });
  const log = el("div", { class: "log panel", id: "event-log" });
  const input = el("textarea", { id: "message", placeholder: "Send a message to the agent…", rows: 2 });
  const sendButton = el("button", { class: "primary", type: "submit", id: "send" }, "Send");
  const interruptButton = el("button", { class: "danger", type: "button", id: "interrupt" }, "Interrupt");
  const seen = new Set();
  const toolCards = new Map();
  const streaming = new Map();

  const setStatus = (status) => statusSlot.replaceChildren(badge(status));
  const scroll = () => {
    log.scrollTop = log.scrollHeight;
  };
  const send = async (events) => {
    notice.hidden = true;
    try {
      await api("POST", `/v1/sessions/${sessionId}/events`, { events });
    } catch (error) {
      showNotice(notice, error);
      return false;
    }
    return true;
  };

  function toolCard(event) {
    const summary = event.name === "bash" && event.input && event.input.command ? event.input.command : pretty(event.input);
    const card = el(
      "div",
      { class: "tool", "data-tool-use": event.id },
      el("div", { class: "title" }, `Tool call: ${event.mcp_server_name ? `${event.mcp_server_name}/` : ""}${event.name}`,
        event.evaluated_permission && event.evaluated_permission !== "allow" ? el("span", { class: "mono" }, `permission: ${event.evaluated_permission}`) : null),
      el("div", { class: "label" }, "input"),
      el("pre", {}, summary),
    );
    if (event.evaluated_permission === "ask") {
      const answer = (result) => async () => {
        if (await send([{ type: "user.tool_confirmation", tool_use_id: event.id, result }])) actions.remove();
      };
      const actions = el("div", { class: "actions" },
        el("button", { class: "primary", type: "button", onclick: answer("allow") }, "Allow"),
        el("button", { class: "danger", type: "button", onclick: answer("deny") }, "Deny"));
      card.append(actions);
    }
    return card;
  }

  function render(event) {
    if (event.type === "event_start") {
      if (seen.has(event.event.id)) return;
      const bubble = el("div", { class: "msg agent streaming" }, el("span", { class: "who" }, "Agent"), el("span", { class: "text" }));
      streaming.set(event.event.id, bubble);
      log.append(bubble);
      return scroll();
    }
    if (event.type === "event_delta") {
      const bubble = streaming.get(event.event_id);
      if (bubble) bubble.querySelector(".text").append(event.delta.content.text);
      return scroll();
    }
    if (event.id && seen.has(event.id)) return;
    if (event.id) seen.add(event.id);
    switch (event.type) {
      case "user.message":
        log.append(el("div", { class: "msg user" }, el("span", { class: "who" }, "You"), textOf(event.content)));
        break;
      case "agent.message": {
        const bubble = streaming.get(event.id);
        const final = el("div", { class: "msg agent", "data-event": event.id }, el("span", { class: "who" }, "Agent"), textOf(event.content));
        if (bubble) bubble.replaceWith(final);
        else log.append(final);
        streaming.delete(event.id);
        break;
      }
      case "agent.tool_use":
      case "agent.mcp_tool_use":
      case "agent.custom_tool_use": {
        const card = toolCard(event);
        toolCards.set(event.id, card);
        log.append(card);
        break;
      }
      case "agent.tool_result":
      case "agent.mcp_tool_result":
      case "user.custom_tool_result": {
        const callId = event.tool_use_id || event.mcp_tool_use_id || event.custom_tool_use_id;
        const result = el("div", { class: `result ${event.is_error ? "error" : ""}` },
          el("div", { class: "label" }, event.is_error ? "error" : "output"), el("pre", {}, textOf(event.content) || "(no output)"));
        const card = toolCards.get(callId);
        if (card) {
          const actions = card.querySelector(".actions");
          if (actions) actions.remove();
          card.append(result);
        } else log.append(el("div", { class: "tool" }, result));
        break;
      }
      case "user.tool_confirmation":
        log.append(el("div", { class: "status-line" }, `tool call ${event.result === "allow" ? "allowed" : "denied"}`));
        break;
      case "user.interrupt":
        log.append(el("div", { class: "status-line" }, "interrupted"));
        break;
      case "session.error": {
        const error = event.error || {};
        const retry = error.retry_status ? ` (${error.retry_status.type})` : "";
        log.append(el("div", { class: "error-line" }, `${error.type}: ${error.message}${retry}`));
        break;
      }
      case "session.status_running":
        setStatus("running");
        log.append(el("div", { class: "status-line" }, "running"));
        break;
      case "session.status_idle": {
        setStatus("idle");
        const reason = (event.stop_reason && event.stop_reason.type) || "end_turn";
        log.append(el("div", { class: "status-line" }, `idle · ${reason}`));
        break;
      }
      case "session.status_rescheduled":
        setStatus("rescheduling");
        log.append(el("div", { class: "status-line" }, "rescheduled"));
        break;
      case "session.status_terminated":
        setStatus("terminated");
        log.append(el("div", { class: "status-line" }, "terminated"));
        break;
      case "session.usage":
        usageSlot.textContent = tokens(event.usage);
        return;
      case "session.deleted":
        active = false;
        log.append(el("div", { class: "error-line" }, "This session was deleted."));
        break;
      case "span.model_request_start":
      case "span.model_request_end":
        return;
      default:
        log.append(el("div", { class: "status-line" }, event.type));
    }
    scroll();
  }

  const composer = el(
    "form",
    {
      class: "composer",
      onsubmit: async (event) => {
        event.preventDefault();
        const text = input.value.trim();
        if (!text) return;
        sendButton.disabled = true;
        if (await send([{ type: "user.message", content: [{ type: "text", text }] }])) input.value = "";
        sendButton.disabled = false;
        input.focus();
      },
    },
    input,
    sendButton,
    interruptButton,
  );
  interruptButton.addEventListener("click", () => send([{ type: "user.interrupt" }]));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.metaKey || event.ctrlKey)) composer.requestSubmit();
  });

  view.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  let session;
  try {
    session = await api("GET", `/v1/sessions/${sessionId}`);
  } catch (error) {
    view.replaceChildren(el("p", {}, el("a", { href: "#/sessions" }, "← Sessions")), notice);
    return showNotice(notice, error);
  }
  setStatus(session.status);
  usageSlot.textContent = tokens(session.usage);
  facts.append(
    el("span", {}, "agent ", el("a", { href: `#/agents/${session.agent.id}` }, session.agent.name), ` v${session.agent.version}`),
    el("span", {}, "model ", el("b", {}, session.agent.model.id)),
    el("span", {}, "environment ", el("a", { href: `#/environments/${session.environment_id}` }, session.environment_id)),
    el("span", {}, "tokens ", usageSlot),
    el("span", { class: "mono" }, session.id),
  );
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/sessions" }, "← Sessions")),
    el("div", { class: "session-head" }, el("h1", {}, session.title || "Untitled session"), statusSlot),
    facts,
    notice,
    log,
    session.archived_at ? el("p", { class: "muted" }, "This session is archived (read-only).") : composer,
  );

  // Open the stream first, then read the history: nothing falls between the two; duplicates are skipped.
  const follow = async () => {
    let attempt = 0;
    while (active) {
      let buffered = [];
      let historyDone = false;
      try {
        const response = await fetch(`/v1/sessions/${sessionId}/events/stream?event_deltas[]=agent.message`, {
          headers: { "x-api-key": apiKey() || "" },
          signal: controller.signal,
        });
        if (response.status === 401) return signOut("Your API key was rejected; sign in again.");
        if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
        const reading = readStream(response, (event) => (historyDone ? render(event) : buffered.push(event)));
        const history = await listAll(`/v1/sessions/${sessionId}/events`, 1000);
        history.forEach(render);
        historyDone = true;
        buffered.forEach(render);
        buffered = [];
        attempt = 0;
        await reading;
      } catch (error) {
        if (!active) return;
        if (error.status && error.status !== 500) return showNotice(notice, error);
      }
      attempt += 1;
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 250 * 2 ** attempt)));
    }
  };
  follow();
  if (!session.archived_at) input.focus();
}

// --- agents and environments -------------------------------------------------------------------------------

function toolNames(agent) {
  return (agent.tools || [])
    .map((tool) => (tool.type === "custom" ? tool.name : tool.type === "mcp_toolset" ? `mcp:${tool.mcp_server_name}` : tool.type))
    .join(", ");
}

function facts(pairs) {
  return el("div", { class: "grid2 panel" }, pairs.flatMap(([key, value]) => [el("div", { class: "k" }, key), el("div", { class: "v" }, value === null || value === undefined || value === "" ? "—" : value)]));
}

async function renderAgents() {
  const notice = el("div", { class: "notice", hidden: true });
  const body = el("tbody");
  view.replaceChildren(
    el("h1", {}, "Agents"),
    notice,
    el("table", { id: "agents" }, el("thead", {}, el("tr", {}, ["Agent", "Model", "Version", "Tools", "Updated"].map((h) => el("th", {}, h)))), body),
  );
  try {
    const agents = await listAll("/v1/agents", 100);
    body.replaceChildren(
      ...agents.map((agent) =>
        el(
          "tr",
          { class: "clickable", onclick: () => (location.hash = `#/agents/${agent.id}`) },
          el("td", {}, agent.name, el("div", { class: "mono muted" }, agent.id)),
          el("td", {}, agent.model.id),
          el("td", {}, `v${agent.version}`),
          el("td", {}, toolNames(agent) || "—"),
          el("td", {}, when(agent.updated_at)),
        ),
      ),
    );
    if (agents.length === 0) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No agents yet.")));
  } catch (error) {
    showNotice(notice, error);
  }
}

async function renderAgent(agentId) {
  const notice = el("div", { class: "notice", hidden: true });
  view.replaceChildren(el("p", {}, el("a", { href: "#/agents" }, "← Agents")), notice);
  try {
    const [agent, versions] = await Promise.all([api("GET", `/v1/agents/${agentId}`), listAll(`/v1/agents/${agentId}/versions`, 100)]);
    view.append(
      el("div", { class: "session-head" }, el("h1", {}, agent.name), agent.archived_at ? badge("archived") : badge(`v${agent.version}`)),
      facts([
        ["id", el("span", { class: "mono" }, agent.id)],
        ["model", agent.model.id],
        ["description", agent.description],
        ["system prompt", agent.system],
        ["tools", toolNames(agent)],
        ["MCP servers", (agent.mcp_servers || []).map((s) => `${s.name} (${s.url})`).join(", ")],
        ["created", when(agent.created_at)],
      ]),
      el("h2", {}, "Versions"),
      el(
        "table",
        { id: "versions" },
        el("thead", {}, el("tr", {}, ["Version", "Model", "System prompt", "Tools", "Updated"].map((h) => el("th", {}, h)))),
        el("tbody", {}, versions.map((v) => el("tr", {}, el("td", {}, `v${v.version}`), el("td", {}, v.model.id), el("td", {}, (v.system || "—").slice(0, 120)), el("td", {}, toolNames(v) || "—"), el("td", {}, when(v.updated_at))))),
      ),
    );
  } catch (error) {
    showNotice(notice, error);
  }
}

function networking(environment) {
  const config = environment.config || {};
  if (config.type !== "cloud") return config.type || "—";
  const net = config.networking || {};
  if (net.type !== "limited") return net.type;
  return `limited${net.allowed_hosts && net.allowed_hosts.length ? ` (${net.allowed_hosts.join(", ")})` : ""}`;
}

async function renderEnvironments() {
  const notice = el("div", { class: "notice", hidden: true });
  const body = el("tbody");
  view.replaceChildren(
    el("h1", {}, "Environments"),
    notice,
    el("table", { id: "environments" }, el("thead", {}, el("tr", {}, ["Environment", "Type", "Networking", "Created"].map((h) => el("th", {}, h)))), body),
  );
  try {
    const environments = await listAll("/v1/environments", 100);
    body.replaceChildren(
      ...environments.map((environment) =>
        el(
          "tr",
          { class: "clickable", onclick: () => (location.hash = `#/environments/${environment.id}`) },
          el("td", {}, environment.name, el("div", { class: "mono muted" }, environment.id)),
          el("td", {}, environment.config.type),
          el("td", {}, networking(environment)),
          el("td", {}, when(environment.created_at)),
        ),
      ),
    );
    if (environments.length === 0) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No environments yet.")));
  } catch (error) {
    showNotice(notice, error);
  }
}

async function renderEnvironment(environmentId) {
  const notice = el("div", { class: "notice", hidden: true });
  view.replaceChildren(el("p", {}, el("a", { href: "#/environments" }, "← Environments")), notice);
  try {
    const environment = await api("GET", `/v1/environments/${environmentId}`);
    view.append(
      el("div", { class: "session-head" }, el("h1", {}, environment.name), environment.archived_at ? badge("archived") : null),
      facts([
        ["id", el("span", { class: "mono" }, environment.id)],
        ["description", environment.description],
        ["networking", networking(environment)],
        ["config", el("pre", { class: "mono" }, pretty(environment.config))],
        ["created", when(environment.created_at)],
      ]),
    );
  } catch (error) {
    showNotice(notice, error);
  }
}

// --- routing -----------------------------------------------------------------------------------------------

function route() {
  if (!apiKey()) return renderSignIn();
  leaveView();
  leaveView = () => {};
  nav.hidden = false;
  signoutButton.hidden = false;
  const parts = (location.hash.replace(/^#\/?/, "") || "sessions").split("/");
  const [section, id] = parts;
  for (const link of nav.querySelectorAll("a")) link.classList.toggle("active", link.dataset.section === section);
  if (section === "sessions" && id) return renderSession(id);
  if (section === "agents" && id) return renderAgent(id);
  if (section === "agents") return renderAgents();
  if (section === "environments" && id) return renderEnvironment(id);
  if (section === "environments") return renderEnvironments();
  return renderSessions();
}

signoutButton.addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
