// Drawing a graph model as SVG: a layered layout (each layer a row,
// ordered by the barycentre of its neighbours), live counters on the
// ports, and the path of a trace highlighted.

const SVG = "http://www.w3.org/2000/svg";
const CHAR_W = 7.4;
const LINE_H = 15;
const GAP_X = 28;
const GAP_Y = 64;
const MARGIN = 24;
/** The counter lines of a port: received, sent, and what was not forwarded. */
const COUNTER_LINES = ["rx", "tx", "other"];

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function size(node) {
  const lines = [node.title, ...node.lines];
  if (node.counters) lines.push(...COUNTER_LINES.map(() => "rx 0000000 pkt, 0000.0 kB"));
  const widest = Math.max(...lines.map((l) => l.length));
  return { w: Math.max(96, Math.round(widest * CHAR_W) + 20), h: 12 + LINE_H * lines.length };
}

/** Orders each layer by the mean position of its neighbours in the layers already ordered. */
function order(layers, neighbours) {
  const index = new Map();
  const renumber = (layer) => layer.forEach((n, i) => index.set(n.id, i));
  layers.forEach((layer) => {
    layer.sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
    renumber(layer);
  });
  const sweep = (range, before) => {
    for (const i of range) {
      const weight = (n) => {
        const near = neighbours(n.id).filter((m) => before(i, m));
        if (near.length === 0) return index.get(n.id);
        return near.reduce((s, m) => s + index.get(m), 0) / near.length;
      };
      const keyed = layers[i].map((n) => [weight(n), n]);
      keyed.sort((a, b) => a[0] - b[0]);
      layers[i] = keyed.map(([, n]) => n);
      renumber(layers[i]);
    }
  };
  const rank = new Map(layers.flatMap((layer, i) => layer.map((n) => [n.id, i])));
  const down = [...layers.keys()].slice(1);
  for (let pass = 0; pass < 3; pass++) {
    sweep(down, (i, m) => rank.get(m) < i);
    sweep([...down].reverse().map((i) => i - 1), (i, m) => rank.get(m) > i);
  }
}

/** Places nodes: the widest layer packed, the others centred under their neighbours. */
function place(layers, neighbours, pos) {
  let y = MARGIN;
  for (const layer of layers) {
    const h = Math.max(...layer.map((n) => n.size.h));
    for (const n of layer) pos.set(n.id, { x: 0, y: y + (h - n.size.h) / 2, ...n.size });
    y += h + GAP_Y;
  }
  const widths = layers.map((l) => l.reduce((s, n) => s + n.size.w + GAP_X, -GAP_X));
  const widest = widths.indexOf(Math.max(...widths));
  const pack = (layer, want) => {
    let x = MARGIN;
    for (const n of layer) {
      const p = pos.get(n.id);
      p.x = Math.max(x, want(n) - p.w / 2);
      x = p.x + p.w + GAP_X;
    }
  };
  pack(layers[widest], () => 0);
  const centre = (id) => pos.get(id).x + pos.get(id).w / 2;
  const follow = (i, j) =>
    pack(layers[i], (n) => {
      const near = neighbours(n.id).filter((m) => layers[j].some((o) => o.id === m));
      return near.length ? near.reduce((s, m) => s + centre(m), 0) / near.length : 0;
    });
  for (let i = widest - 1; i >= 0; i--) follow(i, i + 1);
  for (let i = widest + 1; i < layers.length; i++) follow(i, i - 1);
  return y - GAP_Y + MARGIN;
}

function anchor(a, b) {
  if (Math.abs(a.y - b.y) < 1) {
    const [l, r] = a.x < b.x ? [a, b] : [b, a];
    return [l.x + l.w, l.y + l.h / 2, r.x, r.y + r.h / 2];
  }
  const [t, u] = a.y < b.y ? [a, b] : [b, a];
  return [t.x + t.w / 2, t.y + t.h, u.x + u.w / 2, u.y];
}

/** Draws `model` into `svg`, replacing what was there. */
export function draw(svg, model) {
  svg.replaceChildren();
  const adjacency = new Map(model.nodes.map((n) => [n.id, []]));
  for (const e of model.edges) {
    adjacency.get(e.from)?.push(e.to);
    adjacency.get(e.to)?.push(e.from);
  }
  const neighbours = (id) => adjacency.get(id) || [];
  const byLayer = new Map();
  for (const n of model.nodes) {
    n.size = size(n);
    if (!byLayer.has(n.layer)) byLayer.set(n.layer, []);
    byLayer.get(n.layer).push(n);
  }
  const layers = [...byLayer.keys()].sort((a, b) => a - b).map((k) => byLayer.get(k));
  if (layers.length === 0) {
    el("text", { x: MARGIN, y: 40, class: "empty" }, svg).textContent = "This tenant has no devices yet.";
    svg.setAttribute("viewBox", "0 0 400 80");
    return;
  }
  order(layers, neighbours);
  const pos = new Map();
  const height = place(layers, neighbours, pos);
  const width = Math.max(...[...pos.values()].map((p) => p.x + p.w)) + MARGIN;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);

  const edgeLayer = el("g", { class: "edges" }, svg);
  const labelLayer = el("g", { class: "labels" }, svg);
  for (const e of model.edges) {
    if (!pos.has(e.from) || !pos.has(e.to)) continue;
    const [x1, y1, x2, y2] = anchor(pos.get(e.from), pos.get(e.to));
    const g = el("g", { class: "edge " + e.kind, "data-id": e.id, "data-from": e.from, "data-to": e.to, "data-ports": e.ports.join(" ") }, edgeLayer);
    el("line", { x1, y1, x2, y2 }, g);
    if (e.label) {
      // On a white box, so that a highlighted line does not cross the text.
      const [x, y] = [(x1 + x2) / 2, (y1 + y2) / 2];
      const w = e.label.length * 6.8 + 8;
      el("rect", { x: x - w / 2, y: y - 9, width: w, height: 17, rx: 3, class: "label-bg" }, labelLayer);
      const t = el("text", { x, y: y + 4, class: "edge-label", "text-anchor": "middle" }, labelLayer);
      t.textContent = e.label;
    }
  }
  const nodeLayer = el("g", { class: "nodes" }, svg);
  for (const n of model.nodes) {
    const p = pos.get(n.id);
    const classes = ["node", n.kind];
    if (n.alive === true) classes.push("alive");
    if (n.alive === false) classes.push("dead");
    if (n.health) classes.push("health-" + n.health);
    const g = el("g", { class: classes.join(" "), "data-id": n.id, "data-name": n.name, transform: `translate(${p.x},${p.y})` }, nodeLayer);
    if (n.portId) g.setAttribute("data-port", n.portId);
    el("rect", { width: p.w, height: p.h, rx: n.kind === "router" || n.kind === "uplink" ? 14 : 4 }, g);
    const lines = [n.title, ...n.lines];
    lines.forEach((line, i) => {
      const t = el("text", { x: 10, y: 20 + i * LINE_H, class: i === 0 ? "title" : "detail" }, g);
      t.textContent = line;
    });
    if (n.counters) {
      COUNTER_LINES.forEach((line, i) => {
        const y = 20 + (lines.length + i) * LINE_H;
        const t = el("text", { x: 10, y, class: "counters", "data-port": n.portId, "data-line": line }, g);
        t.textContent = i === 0 ? "counters …" : "";
      });
    }
    const tip = el("title", {}, g);
    tip.textContent = n.title + (n.portId ? " (" + n.portId + ")" : "");
  }
}

function bytes(n) {
  if (n < 1000) return n + " B";
  if (n < 1e6) return (n / 1e3).toFixed(1) + " kB";
  if (n < 1e9) return (n / 1e6).toFixed(1) + " MB";
  return (n / 1e9).toFixed(1) + " GB";
}

/** The text of one counter line of `sample`; `rate` is packets per second. */
function counterLine(line, sample, rate) {
  if (line === "rx") return `rx ${sample.rx_packets} pkt, ${bytes(sample.rx_bytes)}`;
  if (line === "tx") return `tx ${sample.tx_packets} pkt, ${bytes(sample.tx_bytes)}`;
  const parts = [];
  if (sample.rx_answered) parts.push(`answered ${sample.rx_answered}`);
  if (sample.rx_held) parts.push(`held ${sample.rx_held}`);
  if (sample.rx_dropped) parts.push(`dropped ${sample.rx_dropped}`);
  if (rate) parts.push(`${rate} pkt/s`);
  return parts.join(", ");
}

/** Shows per-port counters; `previous` (same shape) gives the rates. */
export function showCounters(svg, samples, previous, seconds, served) {
  const before = new Map((previous || []).map((s) => [s.port_id, s]));
  const now = new Map(samples.map((s) => [s.port_id, s]));
  for (const text of svg.querySelectorAll("text.counters")) {
    const sample = now.get(text.dataset.port);
    const node = text.parentNode;
    const first = text.dataset.line === "rx";
    if (!sample) {
      text.textContent = !first ? "" : served ? "not served on this host" : "no counters here";
      node.classList.remove("busy");
      continue;
    }
    const old = before.get(sample.port_id);
    const delta = old ? sample.rx_packets + sample.tx_packets - old.rx_packets - old.tx_packets : 0;
    const rate = seconds > 0 ? Math.round(delta / seconds) : 0;
    text.textContent = counterLine(text.dataset.line, sample, rate);
    node.classList.toggle("busy", rate > 0);
  }
}

/** Clears a highlighted path. */
export function clearPath(svg) {
  svg.classList.remove("tracing", "verdict-deliver", "verdict-drop", "verdict-reply", "verdict-local");
  for (const e of svg.querySelectorAll(".on-path, .drop-here")) e.classList.remove("on-path", "drop-here");
}

/** Highlights the devices, links and ports `trace` (the JSON of POST /v1/trace) crossed from `ingress`. */
export function showPath(svg, trace, ingress) {
  clearPath(svg);
  const devices = [];
  for (const step of trace.steps) {
    const id = step.device && step.device.id;
    if (id && devices[devices.length - 1] !== id) devices.push(id);
  }
  const ends = new Set([ingress, ...trace.outputs.map((o) => o.port), ...trace.replies.map((r) => r.port)]);
  const mark = (e) => e && e.classList.add("on-path");
  for (const id of devices) mark(svg.querySelector(`.node[data-id="${id}"]`));
  for (const port of ends) mark(svg.querySelector(`.node[data-port="${port}"]`));
  const hops = new Set();
  for (let i = 1; i < devices.length; i++) {
    hops.add(devices[i - 1] + " " + devices[i]);
    hops.add(devices[i] + " " + devices[i - 1]);
  }
  for (const edge of svg.querySelectorAll(".edge")) {
    const pair = edge.dataset.from + " " + edge.dataset.to;
    const ports = edge.dataset.ports.split(" ");
    const endpoint = edge.classList.contains("attach") && ports.some((p) => ends.has(p));
    if (hops.has(pair) || endpoint) mark(edge);
  }
  if (trace.verdict === "drop" && devices.length) {
    svg.querySelector(`.node[data-id="${devices[devices.length - 1]}"]`)?.classList.add("drop-here");
  }
  svg.classList.add("tracing", "verdict-" + trace.verdict);
}
