// The hived dashboard: every session at a glance, one session's live tail, and the operator's
// controls. Plain ES2020, no build step; docs/protocol.md is the contract it speaks.
//
// How it works: one WebSocket to /v1/ws, authenticated with a `hello` (browsers cannot set an
// Authorization header). Requests carry increasing ids and are answered by id (`request`).
// The page follows two topics at most: `sessions` (the table) and `session/<id>` (the tail of
// the selected session). For each topic it keeps the highest seq handled; after a drop it
// reconnects with backoff and subscribes again with `since` = that seq, so the server replays
// exactly what was missed, and anything at or below it is dropped. After a close on purpose
// (1000, a kick) it waits for the user's Reconnect, as docs/protocol.md asks of clients. Every
// string that comes from the server or an agent reaches the DOM through textContent, but an
// agent's Markdown, which goes through marked and DOMPurify (render.js).
//
// The open session's tail is a virtual list (tail.js): the newest TAIL_LIVE events come with
// its subscription, older ones are fetched with `session.events` as they scroll into view. A
// tool call's events make one card, drawn at its first event; a request keeps its answer (ours,
// another client's, or its withdrawal) so that a row drawn again shows it.
//
// While there is no connection the page says so in its header, dims the list, disables every
// control and shows nothing as needing a person: what it shows may be stale. What a session
// is doing (its Activity) is a phrase derived from its summary alone (`activityOf`), so that
// the list says the same thing however the page learnt of it.
"use strict";

const TOKEN_KEY = "hived.token";
const TAIL_LIVE = 500; // newest events of a session replayed when it is opened
const BACKOFF_FIRST_S = 1;
const BACKOFF_MAX_S = 30;
const STABLE_MS = 10000; // a connection that lived this long starts the backoff afresh
const MAX_PAGES = 1000; // pages of `sessions` read at most (a bound, never reached in use)
const PING_TIMEOUT_MS = 10000;
const OPERATOR_ROLES = new Set(["operator", "admin"]);
const REFUSED = new Set([4001, 4003]); // a refused token: retrying it would be refused again
const ON_PURPOSE = 1000; // closed on purpose (a kick): reconnect only when the user asks
const COLUMNS = ["name", "state", "activity", "agent", "cost", "tokens", "turns", "started"];
const ENDED = new Set(["EXITED", "FAILED", "FATAL", "LOST"]);
const ALERTING = new Set(["permission", "question"]); // waits that raise the alert
const CLOCK_MS = 30000; // relative times ("3m ago") are refreshed this often

const $ = (id) => document.getElementById(id);

/** What the page knows (a log out reloads the page, which forgets it all). */
const app = {
  ws: null,
  role: null, // set once `welcome` arrived: the connection may send requests
  nextId: 1,
  pending: new Map(), // request id -> {resolve, reject}
  topics: new Set(), // topics to subscribe again after a reconnect
  lastSeq: new Map(), // topic -> highest seq handled
  epochs: new Map(), // topic -> the epoch its lastSeq counts under (docs/protocol.md §6)
  holding: new Map(), // topic -> events that arrived while its subscribe was answered
  sessions: new Map(), // session id -> summary, plus `activity`
  rows: new Map(), // session id -> its <tr>
  templates: new Map(), // agent template name -> {description, cwd_choosable, takes_input, ...}
  focused: null, // the session id whose row has the keyboard focus (j/k)
  tail: null, // the open session's events (tail.js)
  calls: new Map(), // its tool calls: tool_use_id -> {seq, use, latest, result}
  requests: new Map(), // its requests: request_id -> {seq, event, answer}
  listings: new Set(), // per `sessions` list on its way: the ids events updated meanwhile
  listed: false, // a `sessions` list has arrived
  node: null, // in a cluster, the name of the node this page is connected to (from `welcome`)
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
  clearTimers(); // a countdown of the last loss must not overwrite what this attempt says
  $("reconnect").hidden = true;
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    showLogin("not connected");
    return;
  }
  showDashboard();
  setOnline(false);
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
  setOnline(false);
  const why = `disconnected from hived (closed${code ? ` ${code}` : ""}${reason ? `: ${reason}` : ""})`;
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
    showError("the server sent a frame that is not JSON", null);
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
  app.node = welcome.node || null;
  $("node-filter-label").hidden = !app.node; // a node filter only where there are nodes
  if (app.node) addNodeOption(app.node);
  setConn(`connected as ${welcome.token_name} (${welcome.role})`);
  const canOperate = OPERATOR_ROLES.has(welcome.role);
  for (const element of document.querySelectorAll(".operator")) element.hidden = !canOperate;
  setOnline(true);
  if (canOperate) loadTemplates().catch(quiet);
  if ($("costs").open) loadCosts(request).catch(quiet);
  startPinger(welcome.heartbeat_interval_s);
  window.hivedNotify.connected(request);
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
    if (reply.type === "error") showError(reply.message, null);
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
  const epoch = app.epochs.get(topic);
  // Events that arrive before the result are held: the result says where the topic stands.
  app.holding.set(topic, []);
  let result;
  try {
    const fields = since === undefined ? { topic } : { topic, since };
    if (since !== undefined && epoch !== undefined) fields.epoch = epoch; // where `since` counts
    result = await request("subscribe", fields);
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
  if (Number.isInteger(result.epoch)) app.epochs.set(topic, result.epoch);
  // Live only: events go on after last_seq. A reset, or below what we saw: the daemon lost
  // events it had streamed (killed inside its sync window) and numbers new ones from there.
  if (since === undefined || result.reset || result.last_seq < since) {
    app.lastSeq.set(topic, result.last_seq);
  }
  if (since === undefined || result.recovered) return;
  if (topic === "sessions") {
    loadSessions().catch(quiet);
  } else if (topic === tailTopic()) {
    // What the page holds past the loss may name other events now: drawn again from the store.
    if (result.reset) resetTail(result.last_seq);
    $("tail-note").textContent = result.reset
      ? "events of this session were lost when hived stopped abruptly; what is shown now is what it kept"
      : "some events of this session were dropped from history; what follows is newer";
    $("tail-note").hidden = false;
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

// -- the session list -----------------------------------------------------------------------

async function loadSessions() {
  const touched = new Set();
  app.listings.add(touched);
  const listed = { sessions: [] };
  try {
    // A reply is bounded in bytes; its `next` asks for the rest (at most MAX_PAGES pages).
    let before = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const fields = $("all").checked ? { all: true } : {};
      if (before !== null) fields.before = before;
      const reply = await request("sessions", fields);
      listed.sessions.push(...reply.sessions);
      before = reply.next ?? null;
      if (before === null) break;
    }
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
    if (!touched.has(summary.id)) upsert(summary);
  }
  renderEmpty();
}

async function loadTemplates() {
  const { agents } = await request("agents");
  const select = $("start-agent");
  const chosen = select.value;
  app.templates = new Map(agents.map((template) => [template.name, template]));
  select.replaceChildren(
    ...agents.map((template) => {
      const option = document.createElement("option");
      option.value = template.name;
      option.textContent = template.name;
      return option;
    }),
  );
  if (app.templates.has(chosen)) select.value = chosen;
  describeTemplate();
  renderDetail();
}

/** The start form follows the chosen template: its description, a folder where it may be
 * chosen, a prompt where its agent takes input. */
function describeTemplate() {
  const template = app.templates.get($("start-agent").value);
  const description = template ? template.description || "" : "";
  const format = template ? `${template.format} agent` : "";
  $("start-description").textContent = [description, format].filter(Boolean).join(" · ");
  const roots = template && template.cwd_choosable ? template.cwd_roots || [] : null;
  $("start-cwd-label").hidden = !roots;
  $("start-cwd").placeholder = roots ? `inside ${roots.join(", ")} (optional)` : "";
  $("start-prompt-label").hidden = Boolean(template && !template.takes_input);
}

function onSessionsEvent(event) {
  if (event.kind !== "state" || !event.session) return;
  const data = event.data || {};
  const known = app.sessions.get(event.session) || { id: event.session };
  const summary = data.summary || { ...known, state: data.state, reason: data.reason };
  for (const touched of app.listings) touched.add(event.session);
  upsert(summary);
  renderEmpty();
}

function upsert(summary) {
  const known = app.sessions.get(summary.id) || {};
  const merged = { ...known, ...summary };
  app.sessions.set(summary.id, merged);
  if (merged.node) addNodeOption(merged.node);
  if (shown(merged)) renderRow(merged);
  else removeRow(summary.id);
  if (summary.id === app.selected) renderDetail();
  countWaiting();
}

/** The list holds the sessions of the chosen node (in a cluster), without "show ended" only
 * the live ones; and always the open one. */
function shown(summary) {
  if (summary.id === app.selected) return true;
  const node = $("node-filter").value;
  return (!node || summary.node === node) && ($("all").checked || !ENDED.has(summary.state));
}

/** The node filter offers every node a session was seen on, in name order. */
function addNodeOption(node) {
  const select = $("node-filter");
  const names = [...select.options].map((option) => option.value);
  if (names.includes(node)) return;
  const option = document.createElement("option");
  option.value = node;
  option.textContent = node;
  const after = [...select.options].slice(1).find((other) => other.value > node);
  select.insertBefore(option, after || null);
}

function removeSession(id) {
  app.sessions.delete(id);
  removeRow(id);
}

function removeRow(id) {
  const row = app.rows.get(id);
  if (row) row.remove();
  app.rows.delete(id);
  if (app.focused === id) app.focused = null;
}

function renderEmpty() {
  $("empty").hidden = app.rows.size > 0 || !app.listed;
  const node = $("node-filter").value;
  const where = node ? ` on ${node}` : "";
  $("empty").textContent = $("all").checked ? `No sessions${where}.` : `No live sessions${where}.`;
}

/** What a WAITING session waits for: `permission` or `question` (a person must answer),
 * `done` (its turn ended) or `failed` (its turn ended in an error); "" when not waiting.
 * From the summary's `reason` (and `last_turn`, where the daemon reports it). */
function attentionOf(summary) {
  if (summary.state !== "WAITING") return "";
  if (summary.reason === "permission_request") return "permission";
  if (summary.reason === "question" || summary.reason === "elicitation") return "question";
  const turn = summary.last_turn;
  return turn && turn.ok === false ? "failed" : "done";
}

const STATE_PHRASES = {
  STARTING: "starting",
  RUNNING: "running",
  WORKING: "working",
  STALLED: "no output for a while",
  STOPPING: "stopping",
  BACKOFF: "waiting to restart",
  EXITED: "ended",
  FAILED: "failed",
  FATAL: "gave up: restarted too often",
  LOST: "lost",
  UNREACHABLE: "its node does not answer",
};

/** The Activity of a session: a phrase for a person, from its summary alone. */
function activityOf(summary) {
  const turn = summary.last_turn || {};
  switch (attentionOf(summary)) {
    case "permission":
      return "asks permission";
    case "question":
      return "has a question";
    case "failed":
      return `turn failed${turn.message || turn.error ? `: ${turn.message || turn.error}` : ""}`;
    case "done":
      return "turn done; waits for a prompt";
    default:
      break;
  }
  const phrase = STATE_PHRASES[summary.state] || String(summary.state || "").toLowerCase();
  const why = summary.reason;
  return ENDED.has(summary.state) && why && why !== phrase ? `${phrase} (${why})` : phrase;
}

function renderRow(summary) {
  let row = app.rows.get(summary.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.session = summary.id;
    row.tabIndex = -1;
    for (const column of COLUMNS) {
      const cell = document.createElement("td");
      cell.className = column;
      row.append(cell);
    }
    row.addEventListener("click", () => select(summary.id));
    row.addEventListener("focus", () => {
      app.focused = summary.id;
    });
    insertNewestFirst(row, summary.id);
    app.rows.set(summary.id, row);
  }
  const usage = summary.usage || {};
  const attention = attentionOf(summary);
  const cells = Object.fromEntries(COLUMNS.map((column, i) => [column, row.children[i]]));
  cells.name.textContent = summary.name || summary.id;
  cells.state.textContent = summary.state || "";
  // Only a live page may say that someone is needed: without a connection it may be stale.
  if (app.role && ALERTING.has(attention)) cells.state.append(span("needs", "needs you"));
  cells.activity.textContent = activityOf(summary);
  cells.agent.textContent = summary.agent || "";
  if (app.node && summary.node) cells.agent.append(span("node", ` on ${summary.node}`));
  cells.cost.textContent = money(usage.cost_usd);
  cells.tokens.textContent = `${tokens(usage.input_tokens)}/${tokens(usage.output_tokens)}`;
  cells.tokens.title = "tokens in/out";
  cells.turns.textContent = String(usage.turns || 0);
  cells.started.textContent = ago(summary.started_at);
  cells.started.title = summary.started_at ? new Date(summary.started_at).toLocaleString() : "";
  row.className = `state-${summary.state}`;
  if (attention) row.dataset.attention = attention;
  else delete row.dataset.attention;
  row.classList.toggle("selected", summary.id === app.selected);
  row.setAttribute("aria-selected", String(summary.id === app.selected));
}

function renderRows() {
  for (const summary of app.sessions.values()) if (app.rows.has(summary.id)) renderRow(summary);
}

/** Session ids are ULIDs: sorting them sorts by creation time. */
function insertNewestFirst(row, id) {
  const tbody = $("sessions").tBodies[0];
  const after = [...tbody.rows].find((other) => other.dataset.session < id);
  tbody.insertBefore(row, after || null);
}

/** The tab's title counts the sessions that wait for a person's answer (not a turn done). */
function countWaiting() {
  const waiting = app.role
    ? [...app.sessions.values()].filter((s) => ALERTING.has(attentionOf(s))).length
    : 0;
  document.title = waiting ? `(${waiting} need you) hived` : "hived";
}

/** `3m ago` (as hivectl says it); the exact local time is in the cell's title. */
function ago(iso) {
  if (!iso) return "";
  const seconds = Math.floor((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 0) return "just now";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)}${unit} ago`;
  }
  return `${seconds}s ago`;
}

/** `950`, `12.3k`, `4.1M`, as hivectl prints them. */
function tokens(count) {
  const value = Number(count || 0);
  if (value < 1000) return String(value);
  if (value < 1e6) return `${(value / 1000).toFixed(1)}k`;
  return `${(value / 1e6).toFixed(1)}M`;
}

// -- one session: header and live tail -----------------------------------------------------

function tailTopic() {
  return app.selected ? `session/${app.selected}` : null;
}

function select(id) {
  if (id === app.selected) {
    showDetail();
    return;
  }
  const previous = tailTopic();
  if (previous) {
    app.topics.delete(previous);
    app.lastSeq.delete(previous);
    app.epochs.delete(previous);
    request("unsubscribe", { topic: previous }).catch(quiet);
  }
  const before = app.selected;
  app.selected = id;
  // The session left is listed by the rules again (an ended one leaves the live list).
  const left = app.sessions.get(before);
  if (left) upsert(left);
  const row = app.rows.get(id);
  if (row) {
    renderRow(app.sessions.get(id));
    app.focused = id;
  }
  resetTail(0);
  $("detail").dataset.session = id;
  hideStopConfirm();
  showDetail();
  renderDetail();
  if (app.role) startTail(id).catch(quiet); // else onWelcome starts it
  window.hivedNotify.watching(id);
}

function showDetail() {
  $("detail").hidden = false;
  $("no-detail").hidden = true;
  document.body.classList.add("has-detail");
  // On a phone the open session replaces the list: start at its top.
  if (window.matchMedia("(max-width: 800px)").matches) window.scrollTo(0, 0);
  app.tail.schedule();
}

function closeDetail() {
  document.body.classList.remove("has-detail");
  window.hivedNotify.watching(null);
  const row = app.rows.get(app.selected);
  if (row) row.focus();
}

/** What the page knows of the open session's tool calls and requests, from its events. */
function resetTail(last) {
  app.calls = new Map(); // tool_use_id -> {seq, use, latest, result, asking}
  app.requests = new Map(); // request_id -> {seq, answer: {text, className} | undefined}
  $("tail-note").hidden = true;
  app.tail.reset(last);
}

/** Follow a session's tail from its newest TAIL_LIVE events: a live-only subscribe tells the
 * topic's last seq (its events are ignored: the topic is not followed yet), then the
 * subscription that counts replays from there. The older events are fetched with
 * `session.events` as the reader scrolls up to them (tail.js). */
async function startTail(id) {
  const topic = `session/${id}`;
  const probe = await request("subscribe", { topic });
  await request("unsubscribe", { topic });
  if (app.selected !== id || app.topics.has(topic)) return; // another one selected meanwhile
  if (app.tail.last < probe.last_seq) {
    if (app.tail.last === 0) app.tail.reset(probe.last_seq);
    else app.tail.extend(probe.last_seq);
  }
  if (!app.lastSeq.has(topic)) {
    app.lastSeq.set(topic, Math.max(0, probe.last_seq - TAIL_LIVE));
    if (Number.isInteger(probe.epoch)) app.epochs.set(topic, probe.epoch);
  }
  await subscribe(topic);
}

/** A page of the open session's events, from `since` (tail.js asks as it scrolls). */
async function fetchPage(since, limit) {
  const id = app.selected;
  const page = await request("session.events", { session: id, since, limit });
  if (app.selected !== id) return [];
  for (const event of page.events) noteEvent(event);
  return page.events;
}

function renderDetail() {
  const summary = app.sessions.get(app.selected) || { id: app.selected };
  const usage = summary.usage || {};
  $("detail-name").textContent = summary.name || summary.id;
  $("detail-state").textContent = summary.state ? `${summary.state}: ${activityOf(summary)}` : "";
  $("detail-state").className = summary.state ? `state-${summary.state}` : "";
  $("detail-meta").textContent = [
    summary.agent,
    money(usage.cost_usd),
    `${tokens(usage.input_tokens)}/${tokens(usage.output_tokens)} tokens`,
    `${usage.turns || 0} turns`,
  ].filter(Boolean).join(" · ");
  const ended = ENDED.has(summary.state);
  $("interrupt").hidden = ended;
  $("stop").hidden = ended;
  if (ended) hideStopConfirm();
  $("restart").hidden = Boolean(summary.observed);
  const template = app.templates.get(summary.agent);
  const takesInput = !template || template.takes_input;
  $("input-form").hidden = !OPERATOR_ROLES.has(app.role) || ended || !takesInput;
  $("ended-note").hidden = !ended && takesInput;
  $("ended-note").textContent = ended
    ? `This session has ended (${activityOf(summary)}).`
    : `A ${template ? template.format : ""} agent takes no input.`;
  updateControls();
}

function onTailEvent(event) {
  noteEvent(event);
  app.tail.add(event);
}

/** Keep what an event tells about the calls and requests of the tail; redraw the rows whose
 * look it changes (a card gets its result; a request its answer). */
function noteEvent(event) {
  const data = event.data || {};
  if (event.kind === "tool_use" || event.kind === "tool_result") {
    const id = data.tool_use_id || data.id;
    if (!id) return;
    const call = app.calls.get(id) || { seq: event.seq, use: null, latest: null, result: null };
    app.calls.set(id, call);
    if (event.kind === "tool_use") {
      if (!call.use || event.seq < call.use.seq) call.use = event;
      if (!call.latest || event.seq > call.latest.seq) call.latest = event;
    } else {
      call.result = event;
    }
    // The card is drawn at the call's first event; the others show nothing of their own.
    const seqs = [call.use, call.result].filter(Boolean).map((e) => e.seq);
    const first = Math.min(...seqs);
    if (first !== call.seq) app.tail.redraw(call.seq);
    call.seq = first;
    app.tail.redraw(call.seq);
  } else if (event.kind === "permission_request" && data.request_id) {
    const known = app.requests.get(data.request_id) || {};
    app.requests.set(data.request_id, { ...known, seq: event.seq, event });
    const call = app.calls.get(data.tool_use_id);
    if (call && !known.answer) {
      call.asking = data.request_id;
      app.tail.redraw(call.seq);
    }
  } else if (event.kind === "input" && data.request_id) {
    const approval = data.approval;
    if (approval) {
      const how = approval.allow ? (approval.always ? "always allowed" : "allowed") : "denied";
      answered(data.request_id, how + (approval.message ? `: ${approval.message}` : ""),
        approval.allow ? "allowed" : "denied");
    } else if (data.answers) {
      answered(data.request_id, `answered: ${Object.values(data.answers).join("; ")}`, "allowed");
    } else if (data.action) {
      answered(data.request_id, data.action === "accept" ? "accepted" : `${data.action}d`,
        data.action === "accept" ? "allowed" : "denied");
    }
  } else if (event.kind === "request_withdrawn" && data.request_id) {
    const known = app.requests.get(data.request_id);
    if (!known || !known.answer) answered(data.request_id, `withdrawn: ${data.reason || ""}`, "withdrawn");
  }
}

/** Show the answer to a request (ours, or another client's) in place of its form. */
function answered(requestId, text, className) {
  const known = app.requests.get(requestId) || {};
  app.requests.set(requestId, { ...known, answer: { text, className } });
  for (const call of app.calls.values()) {
    if (call.asking !== requestId) continue;
    call.asking = null;
    app.tail.redraw(call.seq);
  }
  if (known.seq) {
    const row = app.tail.rows.get(known.seq);
    if (row) row.classList.remove("open");
    app.tail.redraw(known.seq);
  }
}

/** The row of one event, or null for one folded into a tool call's card. */
function renderEvent(event) {
  const data = event.data || {};
  let call = null;
  if (event.kind === "tool_use" || event.kind === "tool_result") {
    call = app.calls.get(data.tool_use_id || data.id);
    if (call && call.seq !== event.seq) return null;
  }
  const item = document.createElement("li");
  item.dataset.seq = String(event.seq);
  item.dataset.kind = call && call.use ? "tool_use" : event.kind;
  const time = event.ts ? new Date(event.ts).toLocaleTimeString() : "";
  item.append(span("time", time), span("kind", call && call.use ? "tool call" : kindName(event)));
  if (call) {
    if (call.result && call.result.data.is_error) item.classList.add("failed");
    item.append(toolCard(call.use ? call : { ...call, use: event }));
  } else if (event.kind === "permission_request") {
    item.append(...requestNodes(event, item));
  } else {
    item.append(...describePlain(event, item));
  }
  return item;
}

// -- requests: permissions, questions, elicitations --------------------------------------------

function requestNodes(event, item) {
  const data = event.data || {};
  item.dataset.request = data.request_id || "";
  item.dataset.requestKind = data.request_kind || "permission";
  const nodes = [];
  const input = data.input && typeof data.input === "object" ? data.input : {};
  if (data.request_kind === "question") {
    nodes.push(span("tool", "has a question"));
  } else if (data.request_kind === "elicitation") {
    nodes.push(span("tool", `${data.mcp_server_name || data.server_name || "a tool"} asks for input`));
    if (data.message) nodes.push(markdown(data.message));
  } else {
    nodes.push(span("tool", `asks to run ${data.tool_name || "a tool"}`));
    nodes.push(span("body", keyArgument(input)));
    if (data.description && data.description !== input.description) nodes.push(span("hint", data.description));
    nodes.push(...toolDiffs(data.tool_name, input, data));
  }
  const known = app.requests.get(data.request_id) || {};
  if (known.answer) {
    nodes.push(span(`answer ${known.answer.className}`, known.answer.text));
    return nodes;
  }
  if (!OPERATOR_ROLES.has(app.role)) {
    nodes.push(span("answer", "waiting for an operator"));
    return nodes;
  }
  item.classList.add("open");
  if (data.request_kind === "question") nodes.push(questionForm(event, item, input));
  else if (data.request_kind === "elicitation") nodes.push(elicitationForm(event, item, data));
  else nodes.push(permissionControls(event, item, data));
  return nodes;
}

/** "Always allow" where the agent offers it: Claude's permission_suggestions of rules (what
 * hived sends back for it), the `options` of Codex and ACP agents. */
function offersAlways(data) {
  const suggestions = Array.isArray(data.permission_suggestions) ? data.permission_suggestions : [];
  if (suggestions.some((s) => s && s.type === "addRules")) return true;
  return Array.isArray(data.options) && data.options.includes("allow_always");
}

function permissionControls(event, item, data) {
  const answer = span("answer", "", "div");
  const reason = document.createElement("input");
  reason.className = "reason";
  reason.placeholder = "reason to deny (optional)";
  reason.setAttribute("aria-label", "reason to deny");
  answer.append(button("allow", "Allow", () => approve(event.session, item, true)));
  if (offersAlways(data)) {
    answer.append(button("always", "Always allow", () => approve(event.session, item, true, true)));
  }
  answer.append(reason, button("deny", "Deny", () => approve(event.session, item, false)));
  return answer;
}

let formCount = 0;

/** AskUserQuestion: each question's options as radio buttons (checkboxes where several may
 * be chosen), and a free answer; sent with `session.answer`. */
function questionForm(event, item, input) {
  const form = document.createElement("form");
  form.className = "answer question";
  const questions = Array.isArray(input.questions) ? input.questions : [];
  questions.forEach((question, qi) => {
    const set = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = question.header ? `${question.header}: ${question.question}` : question.question;
    set.append(legend);
    const name = `q${++formCount}-${qi}`;
    for (const option of Array.isArray(question.options) ? question.options : []) {
      const label = document.createElement("label");
      label.className = "option";
      const box = document.createElement("input");
      box.type = question.multiSelect ? "checkbox" : "radio";
      box.name = name;
      box.value = option.label;
      label.append(box, span("option-label", option.label));
      if (option.description) label.append(span("hint", option.description));
      set.append(label);
    }
    const other = document.createElement("input");
    other.className = "other";
    other.name = `${name}-other`;
    other.placeholder = "or another answer";
    other.setAttribute("aria-label", `another answer to: ${question.question}`);
    set.append(other);
    set.dataset.question = question.question;
    form.append(set);
  });
  const send = button("allow", "Answer", () => {});
  send.type = "submit";
  form.append(buttons(send, button("deny", "Decline", () => approve(event.session, item, false))));
  form.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const answers = {};
    for (const set of form.querySelectorAll("fieldset")) {
      const free = set.querySelector("input.other").value.trim();
      const chosen = [...set.querySelectorAll("input:checked")].map((box) => box.value);
      const said = free || chosen.join(", ");
      if (said) answers[set.dataset.question] = said;
    }
    if (!Object.keys(answers).length) {
      showError("choose an answer first", $("action-error"));
      return;
    }
    answer(event.session, item, { answers }, `answered: ${Object.values(answers).join("; ")}`);
  });
  return form;
}

/** An MCP elicitation: a field per property of its `requested_schema`; Accept, Decline or
 * Cancel sent with `session.answer`. */
function elicitationForm(event, item, data) {
  const form = document.createElement("form");
  form.className = "answer elicitation";
  const schema = data.requested_schema || {};
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = [];
  for (const [key, prop] of Object.entries(schema.properties || {})) {
    const label = document.createElement("label");
    label.append(span("option-label", `${prop.title || key}${required.has(key) ? " (required)" : ""}`));
    let control;
    if (Array.isArray(prop.enum)) {
      control = document.createElement("select");
      prop.enum.forEach((value, i) => {
        const option = document.createElement("option");
        option.value = String(value);
        option.textContent = String((prop.enumNames || [])[i] ?? value);
        control.append(option);
      });
    } else {
      control = document.createElement("input");
      control.type = prop.type === "boolean" ? "checkbox" : prop.type === "number" || prop.type === "integer" ? "number" : "text";
      if (prop.default !== undefined) {
        if (control.type === "checkbox") control.checked = Boolean(prop.default);
        else control.value = String(prop.default);
      }
    }
    control.required = required.has(key) && control.type !== "checkbox";
    label.append(control);
    if (prop.description) label.append(span("hint", prop.description));
    form.append(label);
    fields.push([key, prop, control]);
  }
  const accept = button("allow", "Accept", () => {});
  accept.type = "submit";
  const send = (action) => answer(event.session, item, { action }, action === "cancel" ? "cancelled" : `${action}d`);
  form.append(buttons(accept, button("deny", "Decline", () => send("decline")), button("cancel", "Cancel", () => send("cancel"))));
  form.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const content = {};
    for (const [key, prop, control] of fields) {
      if (control.type === "checkbox") content[key] = control.checked;
      else if (control.value === "") continue;
      else if (prop.type === "number" || prop.type === "integer") content[key] = Number(control.value);
      else content[key] = control.value;
    }
    answer(event.session, item, { action: "accept", content }, "accepted");
  });
  return form;
}

function buttons(...elements) {
  const row = document.createElement("div");
  row.className = "buttons";
  row.append(...elements);
  return row;
}

function button(className, text, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  element.disabled = !app.role;
  element.addEventListener("click", onClick);
  return element;
}

function answerControls(item) {
  return item.querySelectorAll(".answer button, .answer input, .answer select");
}

function approve(session, item, allow, always = false) {
  const controls = answerControls(item);
  for (const control of controls) control.disabled = true;
  const reason = item.querySelector("input.reason");
  const fields = { session, request_id: item.dataset.request, allow };
  if (always) fields.always = true;
  if (!allow && reason && reason.value.trim()) fields.message = reason.value.trim();
  const how = allow ? (always ? "always allowed" : "allowed") : "denied";
  act(request("session.approve", fields), $("action-error"))
    .then(() => answered(item.dataset.request, how + (fields.message ? `: ${fields.message}` : ""),
      allow ? "allowed" : "denied"))
    .catch(() => {
      for (const control of controls) control.disabled = false;
    });
}

function answer(session, item, fields, text) {
  const controls = answerControls(item);
  for (const control of controls) control.disabled = true;
  const className = fields.answers || fields.action === "accept" ? "allowed" : "denied";
  act(request("session.answer", { session, request_id: item.dataset.request, ...fields }), $("action-error"))
    .then(() => answered(item.dataset.request, text, className))
    .catch(() => {
      for (const control of controls) control.disabled = false;
    });
}

// -- transcript ------------------------------------------------------------------------------

const EXPORT_PAGES_MAX = 10000; // pages of session.export fetched for one download at most

/** The open session's transcript as a file: session.export's pages joined (it is fetched on
 * this connection, with this token; there is no URL to authenticate), saved from a blob. */
async function downloadTranscript() {
  const id = app.selected;
  const format = $("download-format").value;
  const parts = [];
  let cursor = null;
  for (let pages = 0; pages < EXPORT_PAGES_MAX; pages++) {
    const page = await request("session.export", cursor === null ? { session: id, format } : { session: id, format, cursor });
    parts.push(page.text);
    if (page.next === null || page.next === undefined) break;
    cursor = page.next;
  }
  const summary = app.sessions.get(id) || {};
  const name = String(summary.name || id).replace(/[^\w.-]+/g, "_");
  const type = format === "md" ? "text/markdown" : "application/x-ndjson";
  const url = URL.createObjectURL(new Blob(parts, { type: `${type};charset=utf-8` }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `${name}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// -- actions --------------------------------------------------------------------------------

/** Run an action: its error is shown next to it (`where`) and in the toast; a success clears
 * every error shown, so none outlives the next thing that worked. */
function act(promise, where) {
  return promise.then(
    (result) => {
      clearErrors();
      return result;
    },
    (error) => {
      showError(error instanceof LostError ? `not done: ${error.message}` : error.message, where);
      throw error;
    },
  );
}

function sessionAction(type) {
  if (!app.selected) return;
  act(request(type, { session: app.selected }), $("action-error")).catch(() => {});
}

function askStop() {
  const summary = app.sessions.get(app.selected) || {};
  $("stop-question").textContent = `Stop ${summary.name || app.selected}? Its agent is ended.`;
  $("stop-confirm").hidden = false;
  $("stop").hidden = true;
  $("stop-yes").focus();
}

function hideStopConfirm() {
  $("stop-confirm").hidden = true;
  const summary = app.sessions.get(app.selected) || {};
  $("stop").hidden = ENDED.has(summary.state);
}

function onStart(event) {
  event.preventDefault();
  const fields = { agent: $("start-agent").value };
  const prompt = $("start-prompt").value;
  const name = $("start-name").value.trim();
  const cwd = $("start-cwd").value.trim();
  if (prompt.trim() && !$("start-prompt-label").hidden) fields.prompt = prompt;
  if (name) fields.name = name;
  if (cwd && !$("start-cwd-label").hidden) fields.cwd = cwd;
  act(request("session.start", fields), $("start-error"))
    .then((started) => {
      $("start-prompt").value = "";
      $("start-name").value = "";
      select(started.session);
    })
    .catch(() => {});
}

function onInput(event) {
  event.preventDefault();
  const text = $("input-text").value;
  if (!app.selected || !text.trim()) return;
  act(request("session.input", { session: app.selected, text }), $("input-error"))
    .then(() => {
      $("input-text").value = "";
    })
    .catch(() => {});
}

// -- keyboard -------------------------------------------------------------------------------

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || $("dashboard").hidden) return;
  const target = event.target;
  if (target.closest && target.closest("input, textarea, select, button, summary")) {
    if (event.key !== "Escape") return;
  }
  const handler = KEYS[event.key];
  if (handler) {
    event.preventDefault();
    handler();
  }
}

const KEYS = {
  j: () => moveFocus(1),
  k: () => moveFocus(-1),
  Enter: () => {
    if (app.focused) select(app.focused);
  },
  n: () => nextNeedingYou(),
  a: () => answerFocused(true),
  d: () => answerFocused(false),
  Escape: () => closeDetail(),
};

function visibleRows() {
  return [...$("sessions").tBodies[0].rows];
}

function moveFocus(step) {
  const rows = visibleRows();
  if (!rows.length) return;
  const at = rows.findIndex((row) => row.dataset.session === (app.focused || app.selected));
  const next = rows[Math.min(rows.length - 1, Math.max(0, at < 0 ? 0 : at + step))];
  app.focused = next.dataset.session;
  if (document.body.classList.contains("has-detail") && window.matchMedia("(max-width: 800px)").matches) {
    closeDetail();
  }
  next.focus();
}

/** Open the next session (after the focused one, round) that waits for a person's answer. */
function nextNeedingYou() {
  const rows = visibleRows();
  const at = rows.findIndex((row) => row.dataset.session === (app.focused || app.selected));
  for (let i = 1; i <= rows.length; i++) {
    const row = rows[(Math.max(at, -1) + i + rows.length) % rows.length];
    if (ALERTING.has(row.dataset.attention)) {
      select(row.dataset.session);
      app.focused = row.dataset.session;
      row.focus();
      return;
    }
  }
}

/** a/d: answer the open session's oldest unanswered request; `a` on a question or an
 * elicitation goes to its form (it needs an answer, not a yes). */
function answerFocused(allow) {
  if (!app.role || !OPERATOR_ROLES.has(app.role)) return;
  const item = $("events").querySelector('li[data-kind="permission_request"].open');
  if (!item) return;
  if (allow && item.dataset.requestKind !== "permission") {
    const field = item.querySelector(".answer input, .answer select");
    if (field) field.focus();
    return;
  }
  approve(app.selected, item, allow);
}

// -- login, state of the page ---------------------------------------------------------------

function onLogin(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
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
  setOnline(true); // nothing on screen to mark as stale
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

/** Connected (welcomed) or not: the look of the list and whether controls may be used. */
function setOnline(online) {
  document.body.classList.toggle("offline", !online);
  renderRows();
  countWaiting();
  updateControls();
}

function updateControls() {
  const offline = !app.role;
  for (const control of $("dashboard").querySelectorAll("button, input, select, textarea")) {
    if (control.id === "back" || (control.closest("li") && !control.closest("li.open"))) continue;
    control.disabled = offline;
  }
}

function showError(message, where) {
  for (const element of document.querySelectorAll(".form-error")) element.hidden = true;
  if (where) {
    where.textContent = message;
    where.hidden = false;
  }
  $("toast-text").textContent = message;
  $("toast").hidden = false;
}

function clearErrors() {
  $("toast").hidden = true;
  for (const element of document.querySelectorAll(".form-error")) element.hidden = true;
}

/** For the page's own requests: a lost connection is repaired by reconnecting, not reported. */
function quiet(error) {
  if (!(error instanceof LostError)) showError(error.message, null);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", logOut);
  $("reconnect").addEventListener("click", connect);
  $("toast-close").addEventListener("click", clearErrors);
  $("all").addEventListener("change", () => {
    for (const summary of [...app.sessions.values()]) upsert(summary);
    loadSessions().catch(quiet);
  });
  $("node-filter").addEventListener("change", () => {
    for (const summary of [...app.sessions.values()]) upsert(summary);
    renderEmpty();
  });
  $("start-agent").addEventListener("change", describeTemplate);
  $("start-form").addEventListener("submit", onStart);
  $("input-form").addEventListener("submit", onInput);
  $("input-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("input-form").requestSubmit();
  });
  $("interrupt").addEventListener("click", () => sessionAction("session.interrupt"));
  $("restart").addEventListener("click", () => sessionAction("session.restart"));
  $("stop").addEventListener("click", askStop);
  $("stop-no").addEventListener("click", hideStopConfirm);
  $("stop-yes").addEventListener("click", () => {
    hideStopConfirm();
    sessionAction("session.stop");
  });
  $("back").addEventListener("click", closeDetail);
  const costs = () => {
    if ($("costs").open) loadCosts(request).catch(quiet);
  };
  $("costs").addEventListener("toggle", costs);
  for (const id of ["costs-period", "costs-by", "costs-since", "costs-until"]) {
    $(id).addEventListener("change", costs);
  }
  app.tail = new VirtualTail($("events"), { fetchPage, row: renderEvent });
  $("to-start").addEventListener("click", () => app.tail.toStart());
  $("to-end").addEventListener("click", () => app.tail.toEnd());
  $("download").addEventListener("click", () => {
    act(downloadTranscript(), $("action-error")).catch(() => {});
  });
  document.addEventListener("keydown", onKey);
  setInterval(renderRows, CLOCK_MS); // "3m ago" moves on
  const linked = new URLSearchParams(location.search).get("session"); // a notification's link
  if (linked) select(linked);
  connect();
});
