// Shared by the dashboard's pages. Text from tasks and dead letters (payloads, error
// messages, names) is untrusted: it only ever reaches the page through textContent or SVG
// text nodes, never as HTML.
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

async function api(path, body) {
  const options = {credentials: "same-origin", headers: {[CSRF_HEADER]: CSRF}};
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    const failure = new Error(error.message || response.statusText);
    failure.details = error.details;
    throw failure;
  }
  return data;
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "text") node.textContent = value ?? "";
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function row(table, values) {
  const tr = document.createElement("tr");
  for (const value of values) {
    const td = document.createElement("td");
    if (value instanceof Node) td.appendChild(value); else td.textContent = value ?? "";
    tr.appendChild(td);
  }
  table.tBodies[0].appendChild(tr);
  return tr;
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "";
}

function duration(seconds) {
  if (seconds == null) return "";
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function stateBadge(state) {
  return el("span", {className: "state state-" + state, text: state});
}

function taskLink(taskId) {
  return el("a", {href: TASK_PAGE.replace("TASK_ID", encodeURIComponent(taskId)), text: taskId});
}

function showResult(id, text, isError) {
  $(id).textContent = text;
  $(id).className = "result" + (isError ? " error" : "");
}

// `field=value` lines, as `taskctl dlq replay --set`: a value that parses as JSON is JSON,
// anything else a string.
function parseSets(text) {
  const sets = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw new Error(JSON.stringify(line) + " is not field=value");
    const raw = line.slice(at + 1);
    let value;
    try { value = JSON.parse(raw); } catch (_) { value = raw; }
    sets[line.slice(0, at).trim()] = value;
  }
  return sets;
}

function replayReport(r) {
  if (r.dry_run) {
    const fixes = (r.preview || []).length ? "; preview of the first: " +
      JSON.stringify(r.preview[0]) : "";
    return "Dry run: would replay " + r.selected + "; nothing changed" + fixes + ".";
  }
  return "Replayed " + r.done + " of " + r.selected + "; " + r.failed.length + " failed" +
    (r.task_ids && r.task_ids.length ? " (tasks: " + r.task_ids.slice(0, 5).join(", ") +
      (r.task_ids.length > 5 ? ", …" : "") + ")" : "") + ".";
}

// Stacked bars, one per point: series [{key, label, color}], each point {minute, key: n}.
function barChart(svg, points, series) {
  svg.replaceChildren();
  const width = 600, height = 150, pad = 22;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const totals = points.map((p) => series.reduce((sum, s) => sum + (p[s.key] || 0), 0));
  const top = Math.max(1, ...totals);
  const step = (width - pad) / Math.max(1, points.length);
  points.forEach((point, i) => {
    let y = height - pad;
    for (const s of series) {
      const value = point[s.key] || 0;
      if (!value) continue;
      const h = (value / top) * (height - 2 * pad);
      y -= h;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", pad + i * step + 0.5);
      rect.setAttribute("y", y);
      rect.setAttribute("width", Math.max(1, step - 1));
      rect.setAttribute("height", h);
      rect.setAttribute("fill", s.color);
      rect.dataset.series = s.key;
      const title = document.createElementNS(SVG, "title");
      title.textContent = when(point.minute).slice(11, 16) + " " + s.label + ": " + value;
      rect.appendChild(title);
      svg.appendChild(rect);
    }
  });
  axis(svg, width, height, pad, String(top), points);
}

// A line over the points that have a value (null: nothing happened that minute).
function lineChart(svg, points, valueOf, color, top, label) {
  svg.replaceChildren();
  const width = 600, height = 150, pad = 22;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const step = (width - pad) / Math.max(1, points.length);
  const coords = [];
  points.forEach((point, i) => {
    const value = valueOf(point);
    if (value == null) return;
    const x = pad + i * step + step / 2, y = height - pad - (value / top) * (height - 2 * pad);
    coords.push(x.toFixed(1) + "," + y.toFixed(1));
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", 2.5);
    dot.setAttribute("fill", color);
    const title = document.createElementNS(SVG, "title");
    title.textContent = when(point.minute).slice(11, 16) + " " + label(value);
    dot.appendChild(title);
    svg.appendChild(dot);
  });
  if (coords.length > 1) {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", 1.5);
    svg.insertBefore(line, svg.firstChild);
  }
  axis(svg, width, height, pad, label(top), points);
}

function axis(svg, width, height, pad, topLabel, points) {
  const text = (x, y, value, anchor) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x); t.setAttribute("y", y);
    t.setAttribute("font-size", 10); t.setAttribute("fill", "#667");
    t.setAttribute("text-anchor", anchor || "start");
    t.textContent = value;
    svg.appendChild(t);
  };
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("x1", pad); base.setAttribute("x2", width);
  base.setAttribute("y1", height - pad); base.setAttribute("y2", height - pad);
  base.setAttribute("stroke", "#c9ced8");
  svg.appendChild(base);
  text(2, pad, topLabel);
  text(2, height - pad, "0");
  if (points.length) {
    text(pad, height - 6, when(points[0].minute).slice(11, 16));
    text(width - 2, height - 6, when(points[points.length - 1].minute).slice(11, 16), "end");
  }
}

// Runs refresh now and every REFRESH_MS while the box is ticked and the page is visible;
// never two at once.
function autoRefresh(refresh) {
  let running = false;
  const tick = async () => {
    if (running || document.hidden || !$("auto-refresh").checked) return;
    running = true;
    try {
      await refresh();
      $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    } finally {
      running = false;
    }
  };
  setInterval(tick, REFRESH_MS);
  return tick;
}
