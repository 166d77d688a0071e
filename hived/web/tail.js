// One session's tail as a virtual list: every seq of the session has a slot, but only the rows
// on screen (and a margin around them) are in the DOM, and only the events near them are
// fetched. A session of 100k events scrolls as one of a hundred. Loaded before app.js.
//
// How it works: the slots 1..last are laid out by height in a Fenwick tree (prefix sums in
// O(log n)): a slot is ESTIMATE_PX until its row has been drawn and measured, 0 when it shows
// nothing of its own (a tool result folded into its call's card, an event gone from history).
// A paint finds the slots under the visible part of the list, draws them between two spacers
// whose heights stand for the rest, measures them, and keeps the row the reader looked at where
// it was (or the newest at the bottom while following). Slots not loaded yet draw as "loading"
// and ask `fetchPage` for the events from the first of them. Paints run in a microtask, not a
// frame callback, so a page whose timers are stopped (tests) still draws.
"use strict";

const ESTIMATE_PX = 30;
const OVERSCAN_PX = 1200; // drawn above and below the visible part
const ROWS_MAX = 300; // drawn at most at once
const PAGE = 200; // events fetched at once
const RETRY_MS = 500; // after a page that brought nothing

/** Heights of slots 0..n-1 with prefix sums and search in O(log n); grows by doubling. */
class Heights {
  constructor() {
    this.size = 0;
    this.values = new Float64Array(1024);
    this.tree = new Float64Array(1025);
  }

  grow(size, value) {
    if (size <= this.size) return;
    if (size > this.values.length) {
      let capacity = this.values.length;
      while (capacity < size) capacity *= 2;
      const values = new Float64Array(capacity);
      values.set(this.values.subarray(0, this.size));
      this.values = values;
      this.values.fill(value, this.size, size);
      this.size = size;
      this.rebuild();
      return;
    }
    for (let i = this.size; i < size; i++) {
      this.values[i] = 0;
      this.size = i + 1;
      this.set(i, value);
    }
  }

  rebuild() {
    this.tree = new Float64Array(this.values.length + 1);
    for (let i = 0; i < this.values.length; i++) {
      const j = i + 1;
      this.tree[j] += this.values[i];
      const parent = j + (j & -j);
      if (parent <= this.values.length) this.tree[parent] += this.tree[j];
    }
  }

  get(i) {
    return this.values[i];
  }

  set(i, value) {
    const delta = value - this.values[i];
    if (!delta) return;
    this.values[i] = value;
    for (let j = i + 1; j < this.tree.length; j += j & -j) this.tree[j] += delta;
  }

  /** The sum of the heights of slots 0..i-1. */
  before(i) {
    let sum = 0;
    for (let j = Math.min(i, this.size); j > 0; j -= j & -j) sum += this.tree[j];
    return sum;
  }

  total() {
    return this.before(this.size);
  }

  /** The slot at offset `y` (the last one past the end). */
  at(y) {
    let index = 0;
    let step = 1;
    while (step * 2 < this.tree.length) step *= 2;
    let left = y;
    for (; step > 0; step >>= 1) {
      const next = index + step;
      if (next < this.tree.length && next <= this.size && this.tree[next] <= left) {
        index = next;
        left -= this.tree[next];
      }
    }
    return Math.min(index, Math.max(0, this.size - 1));
  }
}

class VirtualTail {
  /** `list`: the scrolling <ol>; `hooks`: {fetchPage(since, limit) → Promise<events>,
   * row(event) → <li> or null (shows nothing of its own)}. */
  constructor(list, hooks) {
    this.list = list;
    this.hooks = hooks;
    this.top = document.createElement("li");
    this.bottom = document.createElement("li");
    for (const spacer of [this.top, this.bottom]) {
      spacer.className = "spacer";
      spacer.setAttribute("aria-hidden", "true");
    }
    list.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.reset(0);
  }

  /** Forget everything: a session of `last` events, none loaded, following its newest. */
  reset(last) {
    this.generation = (this.generation || 0) + 1;
    this.events = new Map(); // seq -> event, or null for a seq gone from history
    this.rows = new Map(); // seq -> its <li> while drawn (or kept: it holds typed input)
    this.heights = new Heights();
    this.last = 0;
    this.fetching = false;
    this.follow = true;
    this.scheduled = false;
    this.list.replaceChildren(this.top, this.bottom);
    this.extend(last);
    this.schedule();
  }

  extend(last) {
    if (last <= this.last) return;
    this.last = last;
    this.heights.grow(last, ESTIMATE_PX);
  }

  /** An event arrived (live, or replayed by a subscribe). */
  add(event) {
    this.extend(event.seq);
    this.events.set(event.seq, event);
    this.rows.delete(event.seq);
    this.schedule();
  }

  /** The row of `seq` must be drawn afresh (its card changed). */
  redraw(seq) {
    const row = this.rows.get(seq);
    if (row && row.isConnected) row.remove();
    this.rows.delete(seq);
    this.schedule();
  }

  toStart() {
    this.follow = false;
    this.list.scrollTop = 0;
    this.schedule();
  }

  toEnd() {
    this.follow = true;
    this.list.scrollTop = this.list.scrollHeight;
    this.schedule();
  }

  onScroll() {
    if (this.painting) return;
    const list = this.list;
    this.follow = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
    this.schedule();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.paint();
    });
  }

  paint() {
    const list = this.list;
    if (!list.isConnected || list.offsetParent === null) return; // hidden: painted when shown
    this.painting = true;
    try {
      for (let round = 0; round < 3 && this.paintOnce(); round++);
    } finally {
      this.painting = false;
    }
  }

  /** Draw the slots on screen; true when measuring changed heights (paint again). */
  paintOnce() {
    const list = this.list;
    const heights = this.heights;
    if (this.follow) list.scrollTop = list.scrollHeight;
    const view = list.clientHeight;
    const anchor = this.anchor();
    const y = list.scrollTop;
    let from = heights.at(Math.max(0, y - OVERSCAN_PX));
    let to = heights.at(y + view + OVERSCAN_PX);
    if (to - from >= ROWS_MAX) {
      const middle = heights.at(y);
      from = Math.max(from, middle - Math.floor(ROWS_MAX / 3));
      to = Math.min(to, from + ROWS_MAX - 1);
    }
    const wanted = [];
    let missing = null;
    for (let i = from; i <= to && i < this.last; i++) {
      const seq = i + 1;
      const row = this.rowOf(seq);
      if (row === null) {
        heights.set(i, 0);
        continue;
      }
      if (row.classList.contains("pending") && missing === null) missing = seq;
      wanted.push(row);
    }
    this.place(wanted);
    this.top.style.height = `${heights.before(from)}px`;
    let changed = false;
    for (const row of wanted) {
      const i = Number(row.dataset.slot) - 1;
      const height = row.offsetHeight;
      if (height && heights.get(i) !== height) {
        heights.set(i, height);
        changed = true;
      }
    }
    this.top.style.height = `${heights.before(from)}px`;
    this.bottom.style.height = `${Math.max(0, heights.total() - heights.before(to + 1))}px`;
    if (this.follow) list.scrollTop = list.scrollHeight;
    else if (anchor && anchor.row.isConnected) list.scrollTop = anchor.row.offsetTop - anchor.offset;
    if (missing !== null) this.fetchFrom(missing);
    return changed;
  }

  /** The first drawn row at or below the top of the view, and how far below it is. */
  anchor() {
    const y = this.list.scrollTop;
    for (let row = this.top.nextElementSibling; row && row !== this.bottom; row = row.nextElementSibling) {
      if (row.offsetTop + row.offsetHeight > y) return { row, offset: row.offsetTop - y };
    }
    return null;
  }

  /** A slot's row: its <li>, a "loading" one while its event is not loaded, or null when it
   * shows nothing of its own. */
  rowOf(seq) {
    let row = this.rows.get(seq);
    if (row) return row;
    if (!this.events.has(seq)) {
      row = document.createElement("li");
      row.className = "pending";
      row.textContent = "loading…";
    } else {
      const event = this.events.get(seq);
      row = event ? this.hooks.row(event) : null;
      if (!row) return null;
    }
    row.dataset.slot = String(seq);
    this.rows.set(seq, row);
    return row;
  }

  /** Put `wanted` between the spacers without moving a row that stays (a focused field keeps
   * its focus): the others are taken out first, then the new ones put in their places. */
  place(wanted) {
    const list = this.list;
    const keep = new Set(wanted);
    for (let node = this.top.nextSibling; node && node !== this.bottom; ) {
      const next = node.nextSibling;
      if (!keep.has(node)) node.remove();
      node = next;
    }
    let cursor = this.top.nextSibling;
    for (const row of wanted) {
      if (row === cursor) cursor = cursor.nextSibling;
      else list.insertBefore(row, cursor);
    }
    // Rows that are not drawn are forgotten, but for those holding what a person typed.
    for (const [seq, row] of this.rows) {
      if (!row.isConnected && !row.classList.contains("open")) this.rows.delete(seq);
    }
  }

  /** Load the events from `seq` on (one request at a time). */
  fetchFrom(seq) {
    if (this.fetching) return;
    this.fetching = true;
    const generation = this.generation;
    const since = seq - 1;
    this.hooks
      .fetchPage(since, PAGE)
      .then(
        (events) => {
          if (generation !== this.generation) return;
          const first = events.length ? events[0].seq : null;
          // Below the first one returned, nothing is left in history (retention took it).
          for (let s = seq; first !== null && s < first; s++) this.settle(s, null);
          for (const event of events) this.settle(event.seq, event);
          // Nothing yet (the store is behind the stream): ask again a little later.
          if (first === null) setTimeout(() => this.fetched(generation), RETRY_MS);
          else this.fetched(generation);
        },
        // The connection is gone: the next paint after reconnecting asks again.
        () => this.fetched(generation, false),
      );
  }

  /** A fetched event (or null: gone) takes its slot, unless a live one came first. */
  settle(seq, event) {
    if (this.events.has(seq)) return;
    this.events.set(seq, event);
    this.rows.delete(seq); // its "loading" row
  }

  fetched(generation, again = true) {
    if (generation !== this.generation) return;
    this.fetching = false;
    if (again) this.schedule();
  }
}
