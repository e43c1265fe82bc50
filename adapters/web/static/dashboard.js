// sigstream live dashboard: one EventSource (/events), plain SVG, no libraries (the page works offline).
// Events: "snapshot" (the whole state), then "bar", "signal" and "news" (shapes: adapters/web/parsing.py).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const FEATURES = ["return_1", "return_5", "return_20", "volume_ratio", "volatility_20", "rsi_14", "macd",
  "bb_position", "atr_ratio", "vwap_distance"];
const LIMITS = { bars: 300, signals: 300, news: 50, feed: 30 };
const state = { symbols: new Map(), news: [], feed: [], updates: 0 };
let dirty = new Set();
let scheduled = false;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  const abs = Math.abs(value);
  if (digits !== undefined) return value.toFixed(digits);
  return abs >= 1000 ? value.toFixed(2) : abs >= 1 ? value.toFixed(4) : value.toPrecision(4);
}

function time(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function symbol(name) {
  let entry = state.symbols.get(name);
  if (!entry) {
    entry = { bars: [], signals: [], features: null, card: null };
    state.symbols.set(name, entry);
  }
  return entry;
}

function keep(list, limit) {
  if (list.length > limit) list.splice(0, list.length - limit);
}

function applyBar(bar) {
  const entry = symbol(bar.symbol);
  const last = entry.bars[entry.bars.length - 1];
  if (last && last.start === bar.start) entry.bars[entry.bars.length - 1] = bar;
  else entry.bars.push(bar);
  keep(entry.bars, LIMITS.bars);
  entry.features = bar;
  dirty.add(bar.symbol);
}

function applySignal(signal) {
  const entry = symbol(signal.symbol);
  if (entry.signals.some((s) => s.id === signal.id)) return;
  entry.signals.push(signal);
  keep(entry.signals, LIMITS.signals);
  state.feed.push(signal);
  keep(state.feed, LIMITS.feed);
  dirty.add(signal.symbol);
  dirty.add("#signals");
}

function applyNews(item) {
  const known = state.news.findIndex((n) => n.id === item.id);
  if (known >= 0) {
    state.news[known] = item;  // its headline arrived after its score
    dirty.add("#news");
    return;
  }
  state.news.push(item);
  keep(state.news, LIMITS.news);
  dirty.add("#news");
}

function applySnapshot(snapshot) {
  state.symbols.clear();
  state.news = [];
  state.feed = [];
  document.getElementById("symbols").replaceChildren();
  for (const [name, data] of Object.entries(snapshot.symbols)) {
    const entry = symbol(name);
    entry.bars = data.bars;
    entry.features = data.features;
    for (const s of data.signals) applySignal(s);
    dirty.add(name);
  }
  state.feed.sort((a, b) => a.ts_event - b.ts_event);
  for (const item of snapshot.news) applyNews(item);
  dirty.add("#signals");
  dirty.add("#news");
}

function card(name) {
  const entry = symbol(name);
  if (entry.card) return entry.card;
  const root = el("article", { class: "card", "data-symbol": name });
  const title = el("h3");
  title.append(el("span", { class: "name" }, name), el("span", { class: "price" }), el("span", { class: "last" }));
  const chart = svg("svg", { class: "chart", viewBox: "0 0 600 180", preserveAspectRatio: "none", role: "img" });
  chart.setAttribute("aria-label", `${name} price with signal markers`);
  const table = el("table", { class: "features" });
  root.append(title, chart, table);
  const list = document.getElementById("symbols");
  const placeholder = document.getElementById("no-symbols");
  if (placeholder) placeholder.remove();
  list.append(root);
  entry.card = { root, title, chart, table };
  return entry.card;
}

function priceAt(bars, ts) {
  // The close of the last bar that ended at or before ts (bars are in time order).
  let price = bars.length ? bars[0].close : null;
  for (const bar of bars) {
    if (bar.ts_event > ts) break;
    price = bar.close;
  }
  return price;
}

function drawChart(node, entry) {
  node.replaceChildren();
  const width = 600, height = 180, pad = 24;
  const bars = entry.bars.filter((b) => Number.isFinite(b.close));
  const times = bars.map((b) => b.ts_event).concat(entry.signals.map((s) => s.ts_event));
  if (!times.length) return;
  const prices = bars.map((b) => b.close);
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 === t0) { t0 -= 60000; t1 += 60000; }
  let lo = prices.length ? Math.min(...prices) : 0, hi = prices.length ? Math.max(...prices) : 1;
  if (hi === lo) { lo -= 1; hi += 1; }
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad);
  const y = (p) => height - pad - ((p - lo) / (hi - lo)) * (height - 2 * pad);
  if (bars.length) {
    const points = bars.map((b) => `${x(b.ts_event).toFixed(1)},${y(b.close).toFixed(1)}`).join(" ");
    node.append(svg("polyline", { class: "price-line", points }));
  }
  const hiLabel = svg("text", { class: "axis", x: 2, y: pad - 6 });
  hiLabel.textContent = fmt(hi);
  const loLabel = svg("text", { class: "axis", x: 2, y: height - 6 });
  loLabel.textContent = `${fmt(lo)}  ${time(t0)} → ${time(t1)}`;
  node.append(hiLabel, loLabel);
  for (const s of entry.signals) {
    const price = priceAt(bars, s.ts_event);
    const cx = x(s.ts_event), cy = price === null ? height / 2 : y(price);
    const size = s.signal === "HOLD" ? 2.5 : 6;
    const shape = s.signal === "BUY" ? `${cx},${cy + size + 4} ${cx - size},${cy + 2 * size + 4} ${cx + size},${cy + 2 * size + 4}`
      : s.signal === "SELL" ? `${cx},${cy - size - 4} ${cx - size},${cy - 2 * size - 4} ${cx + size},${cy - 2 * size - 4}` : null;
    const marker = shape ? svg("polygon", { points: shape }) : svg("circle", { cx, cy, r: size });
    marker.setAttribute("class", `marker ${s.signal}`);
    marker.setAttribute("data-signal-id", s.id);
    const tip = svg("title");
    tip.textContent = `${s.signal} ${fmt(s.confidence, 2)} at ${time(s.ts_event)} (${s.cause})`;
    marker.append(tip);
    node.append(marker);
  }
}

function drawSymbol(name) {
  const entry = symbol(name);
  const view = card(name);
  const lastBar = entry.bars[entry.bars.length - 1];
  view.title.querySelector(".price").textContent = lastBar ? fmt(lastBar.close) : "";
  const lastSignal = entry.signals[entry.signals.length - 1];
  const last = view.title.querySelector(".last");
  last.textContent = lastSignal ? `${lastSignal.signal} ${fmt(lastSignal.confidence, 2)}` : "";
  last.className = `last label ${lastSignal ? lastSignal.signal : ""}`;
  drawChart(view.chart, entry);
  const features = (entry.features && entry.features.features) || (lastSignal && lastSignal.features) || {};
  const rows = [];
  for (let i = 0; i < FEATURES.length; i += 2) {
    const row = el("tr");
    for (const name2 of FEATURES.slice(i, i + 2)) {
      row.append(el("td", {}, name2), el("td", { "data-feature": name2 }, fmt(features[name2])));
    }
    rows.push(row);
  }
  view.table.replaceChildren(...rows);
}

function drawSignals() {
  const list = document.getElementById("signals");
  const items = state.feed.slice().reverse().map((s) => {
    const li = el("li", { "data-signal-id": s.id });
    li.append(el("span", { class: `label ${s.signal}` }, s.signal), document.createTextNode(` ${s.symbol} `),
      el("span", {}, fmt(s.confidence, 2)), el("div", { class: "muted" }, `${time(s.ts_event)} · ${s.cause}`));
    return li;
  });
  list.replaceChildren(...items);
}

function drawNews() {
  const list = document.getElementById("news");
  const items = state.news.slice().reverse().map((n) => {
    const li = el("li", { "data-news-id": n.id });
    const headline = n.headline || n.id;
    const text = n.url ? el("a", { href: n.url, target: "_blank", rel: "noopener noreferrer" }, headline)
      : el("span", {}, headline);
    li.append(el("span", { class: `label ${n.label}` }, `${n.label} ${fmt(n.confidence, 2)}`),
      document.createTextNode(" "), text,
      el("div", { class: "muted" }, `${time(n.ts_event)} · ${n.symbols.join(", ") || "no symbol"} · ` +
        `bear ${fmt(n.scores.bearish, 2)} / neu ${fmt(n.scores.neutral, 2)} / bull ${fmt(n.scores.bullish, 2)}`));
    return li;
  });
  list.replaceChildren(...items);
}

function render() {
  scheduled = false;
  const todo = dirty;
  dirty = new Set();
  for (const key of todo) {
    if (key === "#signals") drawSignals();
    else if (key === "#news") drawNews();
    else drawSymbol(key);
  }
  document.getElementById("counts").textContent =
    `${state.symbols.size} symbols · ${state.updates} updates · ${state.news.length} news`;
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    window.requestAnimationFrame(render);
  }
}

function setStatus(kind, text) {
  const node = document.getElementById("status");
  node.className = `status ${kind}`;
  node.dataset.status = kind;
  node.textContent = text;
}

function connect() {
  const source = new EventSource("/events");
  const on = (kind, apply) => source.addEventListener(kind, (event) => {
    apply(JSON.parse(event.data));
    state.updates += 1;
    schedule();
  });
  on("snapshot", (snapshot) => { applySnapshot(snapshot); setStatus("live", "live"); });
  on("bar", applyBar);
  on("signal", applySignal);
  on("news", applyNews);
  source.onerror = () => setStatus("down", "reconnecting…");  // EventSource retries by itself
}

connect();
