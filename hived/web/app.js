// The hived dashboard: every session at a glance, one session's live tail, and the operator's
// controls. Plain ES2020, no build step; docs/protocol.md is the contract it speaks.
//
// How it works: one WebSocket to /v1/ws, authenticated with a `hello` (browsers cannot set an
// Authorization header). Requests carry increasing ids and are answered by id (`request`).
// The page follows two topics at most: `sessions` (the table) and `session/<id>` (the tail of
// the selected session). For each topic it keeps the highest seq handled; after a drop it
// reconnects with backoff and subscribes again with `since` = that seq, so the server replays
// exactly what was missed, and anything at or below it is dropped. After a close on purpose
// (1000, a kick) it waits for the user's Reconnect, as docs/protocol.md asks of clients. Every string that comes
// from the server or an agent reaches the DOM through textContent, never as markup.
"use strict";

const TOKEN_KEY = "hived.token";
const TAIL_MAX = 500; // items kept in #events; older ones are removed from the top
const BACKOFF_FIRST_S = 1;
const BACKOFF_MAX_S = 30;
const STABLE_MS = 10000; // a connection that lived this long starts the backoff afresh
const PING_TIMEOUT_MS = 10000;
const TEXT_MAX = 4000; // characters of one event shown; the rest is cut with a note
const OPERATOR_ROLES = new Set(["operator", "admin"]);
const REFUSED = new Set([4001, 4003]); // a refused token: retrying it would be refused again
const ON_PURPOSE = 1000; // closed on purpose (a kick): reconnect only when the user asks
const COLUMNS = ["name", "agent", "state", "activity", "cost", "tokens", "turns", "started"];

const $ = (id) => document.getElementById(id);

/** What the page knows (a log out reloads the page, which forgets it all). */
const app = {
  ws: null,
  role: null, // set once `welcome` arrived: the connection may send requests
  nextId: 1,
  pending: new Map(), // request id -> {resolve, reject}
  topics: new Set(), // topics to subscribe again after a reconnect
  lastSeq: new Map(), // topic -> highest seq handled
  holding: new Map(), // topic -> events that arrived while its subscribe was answered
  sessions: new Map(), // session id -> summary, plus `activity`
  rows: new Map(), // session id -> its <tr>
  agents: new Set(), // agent names seen, for the start form's datalist
  listings: new Set(), // per `sessions` list on its way: the ids events updated meanwhile
  listed: false, // a `sessions` list has arrived
  selected: null,
  attempt: 0, // reconnect attempts since a connection that lived STABLE_MS
  welcomedAt: 0, // when the connection now open was welcomed (Date.now())
  timers: [],
};

class RemoteError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** The request could not be sent or answered: the connection is gone. */
class LostError extends Error {}

// -- connection -----------------------------------------------------------------------------

function connect() {
  $("reconnect").hidden = true;
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    showLogin("not connected");
    return;
  }
  showDashboard();
  setConn("connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
  app.ws = ws;
  // The token goes in the first message, never in the URL: URLs end up in logs.
  ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "hello", token })));
  ws.addEventListener("message", (event) => {
    if (app.ws === ws) onFrame(event.data);
  });
  ws.addEventListener("close", (event) => {
    if (app.ws === ws) lost(event.code, event.reason);
  });
}

/** The connection ended (a close, or a ping that went unanswered): retry, or ask for a token. */
function lost(code, reason) {
  const ws = app.ws;
  app.ws = null;
  app.role = null;
  if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
  clearTimers();
  app.holding.clear();
  for (const waiter of app.pending.values()) waiter.reject(new LostError("connection lost"));
  app.pending.clear();
  const why = `closed${code ? ` ${code}` : ""}${reason ? `: ${reason}` : ""}`;
  if (REFUSED.has(code)) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(`refused (${why}); log in with a valid token`);
    return;
  }
  if (code === ON_PURPOSE) {
    // docs/protocol.md: a client does not come back by itself after a close on purpose.
    setConn(why);
    $("reconnect").hidden = false;
    return;
  }
  // A server that closes each connection at once (4029, say) must not be retried at the first
  // delay forever: the count starts afresh only after a connection that lived a while.
  if (app.welcomedAt && Date.now() - app.welcomedAt >= STABLE_MS) app.attempt = 0;
  app.welcomedAt = 0;
  // Exponential, capped, with jitter: many dashboards do not all come back at the same moment.
  const base = Math.min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** app.attempt);
  const delayMs = 1000 * Math.max(BACKOFF_FIRST_S, base * (0.5 + Math.random() / 2));
  app.attempt += 1;
  const due = Date.now() + delayMs;
  const show = () => {
    const left = Math.max(1, Math.ceil((due - Date.now()) / 1000));
    setConn(`${why}; reconnecting in ${left} s…`);
  };
  show();
  app.timers.push(setInterval(show, 1000), setTimeout(connect, delayMs));
}

function clearTimers() {
  for (const timer of app.timers) clearTimeout(timer); // clears intervals too
  app.timers = [];
}

function onFrame(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    showError("the server sent a frame that is not JSON");
    return;
  }
  // A frame holds one message or an array of them (the server coalesces).
  for (const message of Array.isArray(data) ? data : [data]) {
    if (message.type === "welcome") onWelcome(message);
    else if (message.type === "result" || message.type === "error") settle(message);
    else if (message.type === "event") onEvent(message);
    // Other types may come with later versions: ignored.
  }
}

function onWelcome(welcome) {
  app.role = welcome.role;
  app.welcomedAt = Date.now();
  setConn(`connected as ${welcome.token_name} (${welcome.role})`);
  const canOperate = OPERATOR_ROLES.has(welcome.role);
  for (const element of document.querySelectorAll(".operator")) element.hidden = !canOperate;
  startPinger(welcome.heartbeat_interval_s);
  // Until a list arrived: live events from now on, then the list (protocol.md §6). After
  // that, resuming the topic with `since` brings the table up to date.
  app.topics.add("sessions");
  for (const topic of [...app.topics]) {
    const subscribed = subscribe(topic);
    const list = topic === "sessions" && !app.listed;
    (list ? subscribed.then(loadSessions) : subscribed).catch(quiet);
  }
  // A session selected while disconnected, or whose tail had not started when it dropped.
  if (app.selected && !app.topics.has(tailTopic())) startTail(app.selected).catch(quiet);
}

/** Browsers do not show WebSocket pings to scripts: ask the server for a `ping` reply instead. */
function startPinger(intervalS) {
  const ws = app.ws;
  const ping = () => {
    const timeout = setTimeout(() => {
      if (app.ws === ws) lost(0, "no answer to ping");
    }, PING_TIMEOUT_MS);
    request("ping").then(() => clearTimeout(timeout), () => clearTimeout(timeout));
  };
  app.timers.push(setInterval(ping, 1000 * (intervalS || 20)));
}

/** Send a request; a promise of its `result`, rejected with its `error`. */
function request(type, fields = {}) {
  if (!app.ws || !app.role) return Promise.reject(new LostError("not connected"));
  const id = app.nextId++;
  app.ws.send(JSON.stringify({ ...fields, type, id }));
  return new Promise((resolve, reject) => app.pending.set(id, { resolve, reject }));
}

function settle(reply) {
  const waiter = app.pending.get(reply.id);
  if (!waiter) {
    if (reply.type === "error") showError(reply.message);
    return;
  }
  app.pending.delete(reply.id);
  if (reply.type === "result") waiter.resolve(reply.result);
  else waiter.reject(new RemoteError(reply.code, reply.message));
}

/** Subscribe (again) to a topic, from the last seq handled on it when there is one. */
async function subscribe(topic) {
  app.topics.add(topic);
  const since = app.lastSeq.get(topic);
  // Events that arrive before the result are held: the result says where the topic stands.
  app.holding.set(topic, []);
  let result;
  try {
    result = await request("subscribe", since === undefined ? { topic } : { topic, since });
  } finally {
    // By seq: an event still queued from an earlier subscription may come before the replay.
    const held = (app.holding.get(topic) || []).sort((a, b) => a.seq - b.seq);
    app.holding.delete(topic);
    if (result) tookEffect(topic, since, result);
    for (const event of held) onEvent(event);
  }
}

function tookEffect(topic, since, result) {
  if (!app.topics.has(topic)) return; // left meanwhile (another session was selected)
  // Live only: events go on after last_seq. Below what we saw: the daemon lost events it had
  // streamed (killed inside its sync window) and numbers new ones from there.
  if (since === undefined || result.last_seq < since) app.lastSeq.set(topic, result.last_seq);
  if (since === undefined || result.recovered) return;
  if (topic === "sessions") {
    loadSessions().catch(quiet);
  } else if (topic === tailTopic()) {
    addNote("some events of this session were dropped from history; what follows is newer");
    loadSessions().catch(quiet);
  }
}

function onEvent(event) {
  const held = app.holding.get(event.topic);
  if (held) {
    held.push(event);
    return;
  }
  // A replay that overlaps what already arrived, or a double subscription: shown once only.
  if (!app.topics.has(event.topic) || event.seq <= (app.lastSeq.get(event.topic) || 0)) return;
  app.lastSeq.set(event.topic, event.seq);
  if (event.topic === "sessions") onSessionsEvent(event);
  else if (event.topic === tailTopic()) onTailEvent(event);
}

// -- the sessions table ---------------------------------------------------------------------

async function loadSessions() {
  const touched = new Set();
  app.listings.add(touched);
  let listed;
  try {
    listed = await request("sessions", $("all").checked ? { all: true } : {});
  } finally {
    app.listings.delete(touched);
  }
  app.listed = true;
  const ids = new Set(listed.sessions.map((summary) => summary.id));
  for (const id of [...app.rows.keys()]) {
    if (!ids.has(id) && !touched.has(id) && id !== app.selected) removeSession(id);
  }
  // An event that arrived meanwhile is at least as new as the list: it wins.
  for (const summary of listed.sessions) {
    const activity = (app.sessions.get(summary.id) || {}).activity || summary.reason || "";
    if (!touched.has(summary.id)) upsert({ ...summary, activity });
  }
}

function onSessionsEvent(event) {
  if (event.kind !== "state" || !event.session) return;
  const data = event.data || {};
  const known = app.sessions.get(event.session) || { id: event.session };
  const summary = data.summary || { ...known, state: data.state, reason: data.reason };
  for (const touched of app.listings) touched.add(event.session);
  // The tail of the selected session tells more (the tool) than a state change's reason.
  const tailKnows = event.session === app.selected && known.activity;
  upsert({ ...summary, activity: tailKnows ? known.activity : data.reason || "" });
}

function upsert(summary) {
  const known = app.sessions.get(summary.id) || {};
  const merged = { ...known, ...summary };
  app.sessions.set(summary.id, merged);
  if (merged.agent && !app.agents.has(merged.agent)) {
    app.agents.add(merged.agent);
    const option = document.createElement("option");
    option.value = merged.agent;
    $("agents").append(option);
  }
  renderRow(merged);
  if (summary.id === app.selected) renderDetail();
  countWaiting();
}

function removeSession(id) {
  app.sessions.delete(id);
  const row = app.rows.get(id);
  if (row) row.remove();
  app.rows.delete(id);
}

function renderRow(summary) {
  let row = app.rows.get(summary.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.session = summary.id;
    for (const column of COLUMNS) {
      const cell = document.createElement("td");
      cell.className = column;
      row.append(cell);
    }
    row.addEventListener("click", () => select(summary.id));
    insertNewestFirst(row, summary.id);
    app.rows.set(summary.id, row);
  }
  const usage = summary.usage || {};
  const cells = row.children;
  cells[0].textContent = summary.name || summary.id;
  cells[1].textContent = summary.agent || "";
  cells[2].textContent = summary.state || "";
  cells[2].title = summary.reason || "";
  cells[3].textContent = summary.activity || "";
  cells[4].textContent = money(usage.cost_usd);
  cells[5].textContent = String((usage.input_tokens || 0) + (usage.output_tokens || 0));
  cells[6].textContent = String(usage.turns || 0);
  cells[7].textContent = when(summary.started_at);
  row.className = `state-${summary.state}`;
  row.classList.toggle("selected", summary.id === app.selected);
}

/** Session ids are ULIDs: sorting them sorts by creation time. */
function insertNewestFirst(row, id) {
  const tbody = $("sessions").tBodies[0];
  const after = [...tbody.rows].find((other) => other.dataset.session < id);
  tbody.insertBefore(row, after || null);
}

/** The tab's title counts the sessions that wait for a person. */
function countWaiting() {
  const waiting = [...app.sessions.values()].filter((s) => s.state === "WAITING").length;
  document.title = waiting ? `(${waiting} waiting) hived` : "hived";
}

/** Local time; with the date when it is not today. */
function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

function money(usd) {
  return `$${Number(usd || 0).toFixed(4)}`;
}

// -- one session: header and live tail -----------------------------------------------------

function tailTopic() {
  return app.selected ? `session/${app.selected}` : null;
}

function select(id) {
  if (id === app.selected) return;
  const previous = tailTopic();
  if (previous) {
    app.topics.delete(previous);
    app.lastSeq.delete(previous);
    request("unsubscribe", { topic: previous }).catch(quiet);
  }
  const before = app.rows.get(app.selected);
  if (before) before.classList.remove("selected");
  app.selected = id;
  const row = app.rows.get(id);
  if (row) row.classList.add("selected");
  $("events").replaceChildren();
  $("detail").dataset.session = id;
  $("detail").hidden = false;
  renderDetail();
  if (app.role) startTail(id).catch(quiet); // else onWelcome starts it
}

/** Follow a session's tail from its newest TAIL_MAX events, not from its first: a live-only
 * subscribe tells the topic's last seq (its events are ignored: the topic is not followed
 * yet), then the subscription that counts replays from there. A long session does not send
 * the page its whole history. */
async function startTail(id) {
  const topic = `session/${id}`;
  const probe = await request("subscribe", { topic });
  await request("unsubscribe", { topic });
  if (app.selected !== id || app.topics.has(topic)) return; // another one selected meanwhile
  app.lastSeq.set(topic, Math.max(0, probe.last_seq - TAIL_MAX));
  await subscribe(topic);
}

function renderDetail() {
  const summary = app.sessions.get(app.selected) || { id: app.selected };
  $("detail-name").textContent = summary.name || summary.id;
  $("detail-agent").textContent = summary.agent || "";
  $("detail-state").textContent = summary.state || "";
  $("detail-state").className = summary.state ? `state-${summary.state}` : "";
  $("detail-cost").textContent = money((summary.usage || {}).cost_usd);
}

function onTailEvent(event) {
  const list = $("events");
  const follow = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
  list.append(renderEvent(event));
  while (list.children.length > TAIL_MAX) list.firstElementChild.remove();
  if (follow) list.scrollTop = list.scrollHeight;
  const approval = event.kind === "input" && (event.data || {}).approval;
  if (approval) answered(approval.request_id, approval.allow);
  noteActivity(event);
}

/** The row's activity: the tool just used, or what kind of thing happened last. */
function noteActivity(event) {
  const summary = app.sessions.get(event.session);
  if (!summary || event.kind === "state") return;
  const data = event.data || {};
  const tool = data.name || data.tool_name;
  summary.activity = ["tool_use", "permission_request"].includes(event.kind) && tool
    ? `${event.kind === "tool_use" ? "ran" : "asks for"} ${tool}` : event.kind;
  renderRow(summary);
}

function addNote(text) {
  const item = document.createElement("li");
  item.className = "note";
  item.textContent = text;
  $("events").append(item);
}

function renderEvent(event) {
  const item = document.createElement("li");
  item.dataset.seq = String(event.seq);
  item.dataset.kind = event.kind;
  const when = event.ts ? new Date(event.ts).toLocaleTimeString() : "";
  item.append(span("time", when), span("kind", event.kind));
  item.append(...describe(event, item));
  return item;
}

/** The nodes that show one event, by kind (protocol.md §7; unknown kinds as compact JSON). */
function describe(event, item) {
  const data = event.data || {};
  switch (event.kind) {
    case "message":
      return [span("body", clip(data.text))];
    case "thinking":
      return [span("body thinking", clip(data.thinking))];
    case "tool_use":
      return [span("tool", data.name), span("body", summarize(data.input))];
    case "tool_result":
      item.classList.toggle("failed", Boolean(data.is_error));
      return [span("body", clip(contentText(data.content)))];
    case "text":
    case "stderr":
      return [span("body", clip(data.line))];
    case "state": {
      const why = data.reason ? ` (${data.reason})` : "";
      return [span("body", `${data.previous || "–"} → ${data.state}${why}`)];
    }
    case "input":
      return [span("body", inputText(data))];
    case "result":
      item.classList.toggle("failed", Boolean(data.is_error));
      return [span("body", resultText(data))];
    case "permission_request":
      return permissionNodes(event, item);
    case "init":
      return [span("body", `model ${data.model || "?"} in ${data.cwd || "?"}`)];
    case "hook":
      return [span("body", data.hook_event_name || "")];
    default:
      return [span("body", clip(JSON.stringify(data)))];
  }
}

function inputText(data) {
  const by = data.by ? ` (by ${data.by})` : "";
  if (data.approval) {
    const { allow, request_id: id, message } = data.approval;
    return `${allow ? "allowed" : "denied"} request ${id}${message ? `: ${message}` : ""}${by}`;
  }
  if (data.interrupt) return `interrupt${by}`;
  return `${clip(data.text)}${by}`;
}

function resultText(data) {
  const parts = [`turn ended: ${money(data.total_cost_usd)}`];
  if (data.num_turns !== undefined) parts.push(`${data.num_turns} turns`);
  if (data.duration_ms !== undefined) parts.push(`${(data.duration_ms / 1000).toFixed(1)} s`);
  if (data.is_error) parts.push(`error: ${data.subtype || ""}`);
  return parts.join(", ");
}

/** A tool's input in one line: its command, path or pattern when it has one, else JSON. */
function summarize(input) {
  if (!input || typeof input !== "object") return clip(String(input ?? ""));
  for (const key of ["command", "file_path", "path", "pattern", "url", "query", "prompt"]) {
    if (typeof input[key] === "string") return clip(input[key]);
  }
  return clip(JSON.stringify(input));
}

/** A tool result's content: a string, or a list of blocks (text blocks shown as text). */
function contentText(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return JSON.stringify(content ?? "");
  return content.map((b) => (b && b.type === "text" ? b.text : JSON.stringify(b))).join("\n");
}

function permissionNodes(event, item) {
  const data = event.data || {};
  item.dataset.request = data.request_id || "";
  const answer = span("answer", "");
  if (OPERATOR_ROLES.has(app.role)) {
    for (const allow of [true, false]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = allow ? "allow" : "deny";
      button.textContent = allow ? "Allow" : "Deny";
      button.addEventListener("click", () => approve(event.session, item, allow));
      answer.append(button);
    }
  } else {
    answer.textContent = "waiting for an operator";
  }
  const tool = span("tool", `asks to run ${data.tool_name || "a tool"}`);
  return [tool, span("body", summarize(data.input)), answer];
}

function approve(session, item, allow) {
  const buttons = item.querySelectorAll("button");
  for (const button of buttons) button.disabled = true;
  request("session.approve", { session, request_id: item.dataset.request, allow })
    .then(() => answered(item.dataset.request, allow))
    .catch((error) => {
      for (const button of buttons) button.disabled = false;
      report(error);
    });
}

/** Show the answer to a permission request (ours, or another client's) in place of buttons. */
function answered(requestId, allow) {
  for (const item of $("events").querySelectorAll('li[data-kind="permission_request"]')) {
    if (item.dataset.request !== requestId) continue;
    const answer = item.querySelector(".answer");
    answer.textContent = allow ? "allowed" : "denied";
    answer.className = `answer ${allow ? "allowed" : "denied"}`;
  }
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text ?? "";
  return element;
}

function clip(text) {
  const value = String(text ?? "");
  if (value.length <= TEXT_MAX) return value;
  return `${value.slice(0, TEXT_MAX)}… (${value.length - TEXT_MAX} more characters)`;
}

// -- actions --------------------------------------------------------------------------------

function sessionAction(type) {
  if (!app.selected) return;
  request(type, { session: app.selected }).catch(report);
}

function onStart(event) {
  event.preventDefault();
  const fields = { agent: $("start-agent").value.trim() };
  const prompt = $("start-prompt").value;
  const name = $("start-name").value.trim();
  if (prompt.trim()) fields.prompt = prompt;
  if (name) fields.name = name;
  request("session.start", fields)
    .then((started) => {
      $("start-prompt").value = "";
      $("start-name").value = "";
      select(started.session);
    })
    .catch(report);
}

function onInput(event) {
  event.preventDefault();
  const text = $("input-text").value;
  if (!app.selected || !text.trim()) return;
  request("session.input", { session: app.selected, text })
    .then(() => {
      $("input-text").value = "";
    })
    .catch(report);
}

// -- login, state of the page ---------------------------------------------------------------

function onLogin(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  clearTimers();
  connect();
}

/** Forget the token; a fresh page then starts with nothing of the last connection. */
function logOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  const ws = app.ws;
  app.ws = null; // its close event is ours: no reconnect
  if (ws) ws.close(1000, "logged out");
  location.reload();
}

function showLogin(message) {
  $("login").hidden = false;
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  setConn(message);
  $("token").focus();
}

function showDashboard() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
}

function setConn(text) {
  $("conn").textContent = text;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

/** An action failed: say why (an `error` reply's message, or that the connection is gone). */
function report(error) {
  showError(error instanceof LostError ? `not done: ${error.message}` : error.message);
}

/** For the page's own requests: a lost connection is repaired by reconnecting, not reported. */
function quiet(error) {
  if (!(error instanceof LostError)) report(error);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", logOut);
  $("reconnect").addEventListener("click", connect);
  $("error").addEventListener("click", () => {
    $("error").hidden = true;
  });
  $("all").addEventListener("change", () => loadSessions().catch(quiet));
  $("start-form").addEventListener("submit", onStart);
  $("input-form").addEventListener("submit", onInput);
  $("input-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("input-form").requestSubmit();
  });
  for (const action of ["interrupt", "stop", "restart"]) {
    $(action).addEventListener("click", () => sessionAction(`session.${action}`));
  }
  connect();
});
