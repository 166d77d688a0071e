// The Costs panel: what the agents cost per day, per template or per session over a chosen
// period, from the `usage` request (docs/protocol.md), as a small uPlot bar chart and a table.
// Loaded before app.js; `loadCosts(request)` is called when the panel is opened or changed.
"use strict";

const DAY_MS = 86400000;

/** The period chosen, as the request's `since`/`until` (ISO UTC, or null: unbounded). */
function costsPeriod() {
  const choice = document.getElementById("costs-period").value;
  const today = new Date();
  today.setUTCHours(0, 0, 0, 0);
  if (choice === "all") return { since: null, until: null };
  if (choice === "today") return { since: today.toISOString(), until: null };
  if (choice === "custom") {
    const since = document.getElementById("costs-since").value;
    const until = document.getElementById("costs-until").value;
    // The "to" day is included: the period ends at the start of the next day.
    const end = until ? new Date(Date.parse(`${until}T00:00:00Z`) + DAY_MS).toISOString() : null;
    return { since: since ? `${since}T00:00:00Z` : null, until: end };
  }
  const days = Number(choice);
  return { since: new Date(today.getTime() - (days - 1) * DAY_MS).toISOString(), until: null };
}

function showCustom() {
  const custom = document.getElementById("costs-period").value === "custom";
  document.getElementById("costs-since-label").hidden = !custom;
  document.getElementById("costs-until-label").hidden = !custom;
}

let costsChart = null;
let costsAsked = 0;

async function loadCosts(request) {
  showCustom();
  const by = document.getElementById("costs-by").value;
  const asked = ++costsAsked;
  const error = document.getElementById("costs-error");
  let usage;
  try {
    usage = await request("usage", { by, ...costsPeriod() });
  } catch (failure) {
    if (asked !== costsAsked) return;
    error.textContent =
      failure.code === "unknown_type"
        ? "This hived does not report costs yet (no usage request)."
        : `Costs not loaded: ${failure.message}`;
    error.hidden = false;
    return;
  }
  if (asked !== costsAsked) return; // a later choice is on its way
  error.hidden = true;
  renderCostsTable(by, usage);
  renderCostsChart(by, usage);
}

const KEY_NAMES = { day: "Day (UTC)", template: "Template", session: "Session", cwd: "Folder" };

function costsRow(cells, tag = "td") {
  const row = document.createElement("tr");
  cells.forEach((text, i) => {
    const cell = document.createElement(i === 0 ? "th" : tag);
    if (i === 0) cell.scope = "row";
    cell.textContent = text;
    row.append(cell);
  });
  return row;
}

function costsCells(label, figures) {
  return [
    label,
    money(figures.cost_usd),
    `${tokens(figures.input_tokens)}/${tokens(figures.output_tokens)}`,
    String(figures.turns || 0),
    String(figures.sessions || 0),
  ];
}

function renderCostsTable(by, usage) {
  document.getElementById("costs-key").textContent = KEY_NAMES[by] || by;
  const table = document.getElementById("costs-table");
  table.tBodies[0].replaceChildren(...usage.rows.map((row) => costsRow(costsCells(row.label || row.key, row))));
  table.tFoot.replaceChildren(costsRow(costsCells("Total", usage.total)));
  if (!usage.rows.length) {
    const empty = costsRow(["Nothing spent in this period", "", "", "", ""]);
    table.tBodies[0].append(empty);
  }
}

/** Bars of cost: one per day (the days between without use at $0), or one per row. */
function renderCostsChart(by, usage) {
  const holder = document.getElementById("costs-chart");
  if (costsChart) costsChart.destroy();
  costsChart = null;
  holder.replaceChildren();
  // One bar per category; days run from the first to the last with use, $0 between.
  let ys = [];
  let labels = [];
  if (by === "day" && usage.rows.length) {
    const costByDay = new Map(usage.rows.map((row) => [row.key, row.cost_usd || 0]));
    const first = Date.parse(`${usage.rows[0].key}T00:00:00Z`);
    const last = Date.parse(`${usage.rows[usage.rows.length - 1].key}T00:00:00Z`);
    for (let t = first; t <= last && labels.length < 3660; t += DAY_MS) {
      const key = new Date(t).toISOString().slice(0, 10);
      ys.push(costByDay.get(key) || 0);
      labels.push(key.slice(5));
    }
  } else {
    const rows = usage.rows.slice(0, 20);
    ys = rows.map((row) => row.cost_usd || 0);
    labels = rows.map((row) => String(row.label || row.key).slice(0, 12));
  }
  let xs = ys.map((_, i) => i);
  const total = money(usage.total.cost_usd);
  holder.setAttribute(
    "aria-label",
    `bar chart of cost per ${by}: ${labels.length} bars, ${total} in all; the table below has the figures`,
  );
  if (!xs.length) return;
  if (xs.length === 1) {
    // One bar needs a range around it to be drawn.
    xs = [-1, 0, 1];
    ys = [null, ys[0], null];
    labels = ["", labels[0], ""];
  }
  const every = Math.max(1, Math.ceil(labels.length / 8)); // labels that fit under the bars
  const width = Math.max(240, holder.clientWidth || 320);
  costsChart = new uPlot(
    {
      width,
      height: 150,
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      series: [
        {},
        {
          label: "cost (USD)",
          stroke: "#2f6fdb",
          fill: "rgba(47, 111, 219, 0.35)",
          paths: uPlot.paths.bars({ size: [0.7, 48] }),
          points: { show: false },
        },
      ],
      axes: [
        {
          splits: () => xs.filter((x, i) => i % every === 0),
          values: (u, splits) => splits.map((x) => labels[xs.indexOf(x)] ?? ""),
        },
        { size: 56, values: (u, splits) => splits.map((v) => `$${v.toFixed(v < 0.1 ? 3 : 2)}`) },
      ],
    },
    [xs, ys],
    holder,
  );
}
