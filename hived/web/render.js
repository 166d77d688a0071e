// How the dashboard shows one piece of agent output: Markdown, terminal colours, tool calls as
// cards, file edits as unified diffs. Plain ES2020, no build step; loaded before app.js.
//
// Safety: agent text reaches the DOM in two ways only. Markdown goes through marked (the
// renderer) and then DOMPurify (the sanitizer), which returns DOM nodes with no script, no
// handler, no style and no image or form: what is left is structure and links. Everything else
// is set as textContent. The page's Content Security Policy would refuse to run a script that
// slipped through all the same.
"use strict";

const TEXT_MAX = 4000; // characters of one event's text shown; the rest is cut with a note
const RESULT_MAX = 20000; // characters of a folded tool result
const DIFF_LINES_MAX = 400; // lines of one diff shown

/** Elements with a class and text, the only way text goes in. */
function span(className, text, tag = "span") {
  const element = document.createElement(tag);
  element.className = className;
  element.textContent = text ?? "";
  return element;
}

function folded(label, ...content) {
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = label;
  details.append(summary, ...content);
  return details;
}

// -- text and terminal colours ----------------------------------------------------------------

// Terminal escape sequences: SGR (colours) are rendered, the rest (cursor moves, titles) and
// other control characters but tab and newline are removed, so a tail reads as text.
const ESCAPES = /\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f]/g;

function cut(text, max = TEXT_MAX) {
  const value = String(text ?? "");
  if (value.length <= max) return value;
  return `${value.slice(0, max)}… (${value.length - max} more characters)`;
}

/** Plain text: escapes and control characters removed, cut to TEXT_MAX. */
function clip(text, max = TEXT_MAX) {
  return cut(String(text ?? "").replace(ESCAPES, "").replace(CONTROLS, ""), max);
}

/** Text with its SGR colours as classes (`ansi-fg-1`, `ansi-bold`…); other escapes removed. */
function ansiNodes(text, max = TEXT_MAX) {
  const value = cut(String(text ?? ""), max);
  const nodes = [];
  let style = { fg: null, bg: null, bold: false };
  let at = 0;
  const push = (chunk) => {
    const clean = chunk.replace(CONTROLS, "");
    if (!clean) return;
    const classes = [];
    if (style.fg !== null) classes.push(`ansi-fg-${style.fg}`);
    if (style.bg !== null) classes.push(`ansi-bg-${style.bg}`);
    if (style.bold) classes.push("ansi-bold");
    nodes.push(classes.length ? span(classes.join(" "), clean) : document.createTextNode(clean));
  };
  for (const match of value.matchAll(ESCAPES)) {
    push(value.slice(at, match.index));
    at = match.index + match[0].length;
    if (match[2] === "m") style = sgr(style, match[1]);
  }
  push(value.slice(at));
  return nodes;
}

function sgr(style, params) {
  const next = { ...style };
  const codes = (params || "0").split(";").map((code) => Number(code || 0));
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(next, { fg: null, bg: null, bold: false });
    else if (code === 1) next.bold = true;
    else if (code === 22) next.bold = false;
    else if (code >= 30 && code <= 37) next.fg = code - 30;
    else if (code >= 90 && code <= 97) next.fg = code - 90 + 8;
    else if (code === 39) next.fg = null;
    else if (code >= 40 && code <= 47) next.bg = code - 40;
    else if (code >= 100 && code <= 107) next.bg = code - 100 + 8;
    else if (code === 49) next.bg = null;
    else if (code === 38 || code === 48) i += codes[i + 1] === 5 ? 2 : 4; // 256/true colour: skipped
  }
  return next;
}

function textBody(text, className = "body") {
  const body = span(className, "");
  body.append(...ansiNodes(text));
  return body;
}

// -- Markdown -----------------------------------------------------------------------------------

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  // Structure and links only: no image (the CSP refuses other hosts' anyway), no form, no style.
  FORBID_TAGS: ["img", "picture", "video", "audio", "svg", "math", "style", "form", "input",
    "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style", "class", "id"],
};
let purifyHooked = false;

const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);

// Markup an agent writes in its Markdown (a <script>, an <img onerror>) is shown as the text it
// is: marked's renderer gives raw HTML back escaped. DOMPurify then cleans what marked made.
const MARKDOWN = new marked.Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    html(token) {
      return escapeHtml(token.text);
    },
    // The language travels as data-lang (DOMPurify keeps no class); highlighted afterwards.
    code(token) {
      const lang = (token.lang || "").match(/^\S*/)[0];
      const text = token.escaped ? token.text : escapeHtml(token.text);
      return `<pre><code data-lang="${escapeHtml(lang)}">${text}</code></pre>\n`;
    },
  },
});

// -- syntax colours (highlight.js) -----------------------------------------------------------

/** A language highlight.js knows, from a name or a file's extension; null when none. */
function languageOf(nameOrPath) {
  const name = String(nameOrPath || "").toLowerCase();
  const ext = name.includes(".") || name.includes("/") ? name.split(/[./]/).pop() : name;
  return ext && hljs.getLanguage(ext) ? ext : null;
}

/** Code as highlight.js's spans, sanitized down to <span class>; plain text without a known
 * language. */
function highlighted(code, language) {
  if (!language) return [document.createTextNode(code)];
  const html = hljs.highlight(code, { language, ignoreIllegals: true }).value;
  const spans = DOMPurify.sanitize(html, {
    RETURN_DOM_FRAGMENT: true,
    ALLOWED_TAGS: ["span"],
    ALLOWED_ATTR: ["class"],
  });
  return [...spans.childNodes];
}

/** Markdown as sanitized DOM nodes, in a `.markdown` block. */
function markdown(text) {
  const block = document.createElement("div");
  block.className = "body markdown";
  if (!purifyHooked) {
    // Links open elsewhere and tell nothing of the page.
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    });
    purifyHooked = true;
  }
  const html = MARKDOWN.parse(clip(text, TEXT_MAX * 4));
  block.append(DOMPurify.sanitize(html, PURIFY));
  for (const code of block.querySelectorAll("pre > code[data-lang]")) {
    code.replaceChildren(...highlighted(code.textContent, languageOf(code.dataset.lang)));
  }
  return block;
}

// -- diffs --------------------------------------------------------------------------------------

/** A unified diff of one file, from its old and new text (jsdiff), as a `.diff` block. */
function diffOf(path, oldText, newText, note = "") {
  const patch = Diff.structuredPatch(path, path, oldText ?? "", newText ?? "", "", "", {
    context: 3,
  });
  const lines = [];
  for (const hunk of patch.hunks) {
    lines.push(`@@ -${hunk.oldStart},${hunk.oldLines} +${hunk.newStart},${hunk.newLines} @@`);
    lines.push(...hunk.lines.filter((line) => !line.startsWith("\\")));
  }
  return diffBlock(path, lines, note);
}

/** A unified diff given as text (Codex's `diff` of a change). */
function diffText(path, text, note = "") {
  const lines = String(text ?? "").replace(/\n$/, "").split("\n");
  const body = lines.filter((line) => !/^(---|\+\+\+|diff |index )/.test(line));
  return diffBlock(path, body, note);
}

function diffBlock(path, lines, note) {
  const block = document.createElement("div");
  block.className = "diff";
  const added = lines.filter((l) => l.startsWith("+")).length;
  const removed = lines.filter((l) => l.startsWith("-")).length;
  const head = span("diff-file", path || "(file)");
  // Codex exec tells only which files changed and how, not the lines.
  const stat = lines.length ? [`+${added} −${removed}`, note] : [note];
  head.append(span("diff-stat", ` ${stat.filter(Boolean).join(" · ")}`));
  const pre = document.createElement("pre");
  const language = languageOf(path);
  for (const line of lines.slice(0, DIFF_LINES_MAX)) {
    // The sign stays in the text: colours are not the only signal.
    const kind = line.startsWith("@@") ? "hunk" : line[0] === "+" ? "add" : line[0] === "-" ? "del" : "ctx";
    const row = span(`diff-${kind}`, kind === "hunk" ? line : line.slice(0, 1));
    if (kind !== "hunk") row.append(...highlighted(clip(line.slice(1), 1000), language));
    row.append("\n");
    pre.append(row);
  }
  if (lines.length > DIFF_LINES_MAX) pre.append(span("diff-hunk", `… ${lines.length - DIFF_LINES_MAX} more lines\n`));
  block.append(head, pre);
  return block;
}

/** The diffs a tool call makes, from its input (Claude Edit/Write/MultiEdit, Codex
 * fileChange) or its ACP `diffs`; [] for a tool that edits nothing. */
function toolDiffs(name, input, data) {
  const blocks = [];
  const acp = (data && data.diffs) || [];
  for (const d of acp) blocks.push(diffOf(d.path, d.oldText, d.newText));
  if (blocks.length) return blocks;
  const path = input.file_path || input.path || "";
  if ((name === "Edit" || name === "str_replace_based_edit_tool") && typeof input.old_string === "string") {
    blocks.push(diffOf(path, input.old_string, input.new_string, input.replace_all ? "every occurrence" : ""));
  } else if (name === "MultiEdit" && Array.isArray(input.edits)) {
    input.edits.forEach((edit, i) => {
      blocks.push(diffOf(path, edit.old_string, edit.new_string, `edit ${i + 1} of ${input.edits.length}`));
    });
  } else if (name === "Write" && typeof input.content === "string") {
    blocks.push(diffOf(path, "", input.content, "whole file written"));
  } else if ((name === "fileChange" || name === "file_change") && Array.isArray(input.changes)) {
    for (const change of input.changes) {
      const kind = typeof change.kind === "object" && change.kind ? change.kind.type : change.kind;
      if (typeof change.diff === "string" && change.diff) {
        blocks.push(/^(@@|---|diff )/m.test(change.diff)
          ? diffText(change.path, change.diff, kind)
          : diffOf(change.path, kind === "delete" ? change.diff : "", kind === "delete" ? "" : change.diff, kind));
      } else {
        blocks.push(diffBlock(change.path, [], kind || "changed"));
      }
    }
  }
  return blocks;
}

// -- tool calls -------------------------------------------------------------------------------

const KEY_ARGUMENTS = ["command", "file_path", "path", "pattern", "url", "query", "prompt", "description"];

/** A tool's key argument in one line: its command, path or pattern when it has one, else JSON. */
function keyArgument(input) {
  if (input === null || input === undefined) return "";
  if (typeof input !== "object") return clip(String(input), 300);
  for (const key of KEY_ARGUMENTS) {
    if (typeof input[key] === "string") return clip(input[key], 300);
    if (Array.isArray(input[key]) && key === "command") return clip(input[key].join(" "), 300);
  }
  if (Array.isArray(input.changes)) return input.changes.map((c) => c.path).join(", ");
  return clip(JSON.stringify(input), 300);
}

/** A tool result's content as text: a string, or a list of blocks (text blocks as text). */
function contentText(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return content === undefined ? "" : JSON.stringify(content, null, 2);
  return content
    .map((b) => (b && b.type === "text" ? b.text : b && b.type === "diff" ? "" : JSON.stringify(b)))
    .filter(Boolean)
    .join("\n");
}

function duration(fromTs, toTs) {
  if (!fromTs || !toTs) return "";
  const ms = new Date(toTs) - new Date(fromTs);
  if (!(ms >= 0)) return "";
  return ms < 1000 ? `${ms} ms` : ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60000)} min`;
}

/** One tool call as a card: its tool, key argument, status, duration, diffs, result folded.
 * `call` holds its `use` event, the `latest` update of it and its `result` event (or nulls),
 * and `asking`: whether a permission request for it waits for an answer. */
function toolCard(call) {
  const use = call.use || call.result;
  const latest = call.latest || use;
  const data = latest.data || {};
  const name = data.name || (use.data || {}).name || "tool";
  const input = data.input && typeof data.input === "object" ? data.input : {};
  const card = document.createElement("div");
  card.className = "card";
  const head = document.createElement("div");
  head.className = "card-head";
  const result = call.result ? call.result.data || {} : null;
  const failed = Boolean(result && result.is_error);
  const status = call.result ? (failed ? "failed" : "done") : call.asking ? "asking" : "running";
  // A word and a sign, not only a colour.
  const words = { running: "… running", asking: "⏸ asks permission", done: "✓ done", failed: "✗ failed" };
  head.append(span("tool", name), span("arg", keyArgument(input)), span(`status status-${status}`, words[status]));
  const took = call.result ? duration(use.ts, call.result.ts) : "";
  if (took) head.append(span("took", took));
  card.append(head);
  card.append(...toolDiffs(name, input, { diffs: (result && result.diffs) || data.diffs }));
  if (call.result) {
    const text = contentText(result.content);
    const lines = text ? text.split("\n").length : 0;
    if (lines) {
      const pre = document.createElement("pre");
      pre.className = "result";
      pre.append(...ansiNodes(text, RESULT_MAX));
      const details = folded(`result: ${lines} line${lines === 1 ? "" : "s"}`, pre);
      if (failed) details.open = true;
      card.append(details);
    }
  }
  return card;
}

// -- the other kinds ----------------------------------------------------------------------------

function money(usd) {
  return `$${Number(usd || 0).toFixed(4)}`;
}

function resultText(data) {
  const parts = [money(data.total_cost_usd)];
  if (data.num_turns !== undefined) parts.push(`${data.num_turns} turns`);
  if (data.duration_ms !== undefined) parts.push(`${(data.duration_ms / 1000).toFixed(1)} s`);
  if (data.is_error) parts.push(`error: ${data.subtype || ""}`);
  return parts.join(", ");
}

function inputText(data) {
  const by = data.by ? ` (by ${data.by})` : "";
  if (data.approval) {
    const { allow, request_id: id, message, always } = data.approval;
    const how = allow ? (always ? "always allowed" : "allowed") : "denied";
    return `${how} request ${id}${message ? `: ${message}` : ""}${by}`;
  }
  if (data.answers) {
    const said = Object.entries(data.answers).map(([q, a]) => `${q} → ${a}`).join("; ");
    return `answered request ${data.request_id}: ${said}${by}`;
  }
  if (data.action) return `${data.action} request ${data.request_id}${by}`;
  if (data.interrupt) return `interrupt${by}`;
  return `${clip(data.text)}${by}`;
}

const KIND_NAMES = {
  message: "message",
  tool_use: "tool call",
  tool_result: "tool result",
  permission_request: "asks permission",
  request_withdrawn: "withdrawn",
  result: "turn ended",
  agent_event: "agent event",
};

function kindName(event) {
  const data = event.data || {};
  if (event.kind === "permission_request") {
    if (data.request_kind === "question") return "asks you";
    if (data.request_kind === "elicitation") return "asks for input";
  }
  return KIND_NAMES[event.kind] || event.kind;
}

/** The nodes that show one event of a kind that needs no state of the page (protocol.md §7;
 * unknown kinds folded as JSON). Tool calls and requests are app.js's: they change. */
function describePlain(event, item) {
  const data = event.data || {};
  switch (event.kind) {
    case "message":
      return [markdown(data.text)];
    case "thinking":
      return [folded("thinking", textBody(data.thinking, "body thinking"))];
    case "text":
    case "stderr":
      return [textBody(data.line)];
    case "state": {
      const why = data.reason ? ` (${data.reason})` : "";
      return [span("body", `${data.previous || "–"} → ${data.state}${why}`)];
    }
    case "input":
      return [span("body", inputText(data))];
    case "result":
      item.classList.toggle("failed", Boolean(data.is_error));
      return [span("body", `${data.is_error ? "✗ " : ""}${resultText(data)}`)];
    case "request_withdrawn":
      return [span("body", `request ${data.request_id || ""} withdrawn: ${data.reason || ""}`)];
    case "init":
      return [span("body", `model ${data.model || "?"} in ${data.cwd || "?"}`)];
    case "hook":
      return [span("body", data.hook_event_name || "")];
    case "agent_event":
      // An agent's own object hived does not map (a protocol line): its type, details folded.
      return [folded(data.type || data.subtype || "details", span("body", clip(JSON.stringify(data, null, 2))))];
    default:
      return [folded("details", span("body", clip(JSON.stringify(data, null, 2))))];
  }
}
