"use strict";
// modgate's waterfall, interactive (waterfall.py embeds this in the HTML it writes, with
// the session's records as JSON in #waterfall-data). No build step, nothing fetched.
// Wheel over the chart zooms the time axis around the pointer, dragging pans, and the
// controls filter by kind, outcome and module and switch between one row per module and
// one row per request. `render` is pure (tests run it under node).
const WF = (() => {
  const ROW = 18, PAD = 16, CHAR = 7.3, TIMELINE = 880, FONT = 12;
  const INK = "#1d2430", MUTED = "#5c6675", GRID = "#e3e7ed";

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => (
      { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function ms(seconds) {
    const v = seconds * 1000;
    return v >= 100 ? v.toFixed(0) : v.toFixed(1);
  }

  function tickStep(spanMs) {
    const raw = Math.max(spanMs, 1) / 8;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
    return 10 * power;
  }

  // The records the filters let through, in time order.
  function visible(data, state) {
    const needle = (state.module || "").toLowerCase();
    return data.records.filter((r) =>
      !state.hiddenKinds.has(r.k) && !state.hiddenOutcomes.has(r.o) &&
      (!needle || r.g.toLowerCase().includes(needle)));
  }

  // The chart as an SVG string, and what it shows.
  function render(data, state) {
    const all = data.records;
    const t0 = all.length ? Math.min(...all.map((r) => r.s)) : 0;
    const span = Math.max(all.length ? Math.max(...all.map((r) => r.e)) - t0 : 0, 0.001);
    const from = state.from ?? 0, to = state.to ?? span;
    const scale = TIMELINE / Math.max(to - from, 1e-6);
    const recs = visible(data, state);
    const groups = new Map();
    for (const r of recs) {
      if (!groups.has(r.g)) groups.set(r.g, []);
      groups.get(r.g).push(r);
    }
    const labels = state.grouped ? [...groups.keys()] : [...groups.keys(), ...recs.map((r) => "  " + r.l)];
    const labelW = Math.min(440, Math.max(160, Math.round(Math.max(10, ...labels.map((l) => l.length)) * CHAR) + 12));
    const x0 = PAD + labelW, top = PAD + 10 + ROW;
    const rows = state.grouped ? groups.size : groups.size + recs.length;
    const width = x0 + TIMELINE + 120 + PAD, height = top + rows * ROW + PAD;
    const out = [];
    const x = (t) => x0 + (t - t0 - from) * scale;
    const step = tickStep((to - from) * 1000);
    for (let tick = Math.ceil(from * 1000 / step) * step; tick <= to * 1000 + 1e-9; tick += step) {
      const tx = x0 + (tick / 1000 - from) * scale;
      out.push(`<line x1="${tx.toFixed(1)}" y1="${top - 4}" x2="${tx.toFixed(1)}" y2="${top + rows * ROW}" stroke="${GRID}"/>`);
      const label = step >= 1000 ? `${+(tick / 1000).toFixed(3)}s` : `${+tick.toFixed(3)}ms`;
      out.push(`<text x="${tx.toFixed(1)}" y="${top - 8}" fill="${MUTED}" text-anchor="middle">${label}</text>`);
    }
    let y = top, bars = 0;
    const bar = (r, yy) => {
      if (x(r.e) < x0 || x(r.s) > x0 + TIMELINE) return;  // outside the zoomed view
      const left = Math.max(x(r.s), x0), right = Math.min(Math.max(x(r.e), left + 2), x0 + TIMELINE);
      const wait = Math.max(0, Math.min(right - left, x(r.s + r.w) - left));
      const colour = data.colours[r.o] || MUTED;
      const tip = `<title>${esc(r.t)}</title>`;
      if (wait >= 1) out.push(`<rect x="${left.toFixed(1)}" y="${yy + 4}" width="${wait.toFixed(1)}" height="${ROW - 8}" fill="${colour}" fill-opacity="0.45">${tip}</rect>`);
      out.push(`<rect class="bar" x="${(left + wait).toFixed(1)}" y="${yy + 4}" width="${Math.max(right - left - wait, 2).toFixed(1)}" height="${ROW - 8}" fill="${colour}">${tip}</rect>`);
      bars++;
    };
    let i = 0;
    for (const [name, members] of groups) {
      if (!state.grouped || i++ % 2 === 0) out.push(`<rect x="${PAD}" y="${y}" width="${width - 2 * PAD}" height="${ROW}" fill="#f1f4f8"/>`);
      out.push(`<text x="${PAD + 4}" y="${y + ROW - 5}" font-weight="bold">${esc(name)}</text>`);
      if (state.grouped) {
        members.forEach((r) => bar(r, y));
        y += ROW;
        continue;
      }
      y += ROW;
      for (const r of members) {
        out.push(`<text x="${PAD + 4}" y="${y + ROW - 5}" fill="${MUTED}">  ${esc(r.l)}</text>`);
        bar(r, y);
        y += ROW;
      }
    }
    out.push(`<line x1="${x0}" y1="${top}" x2="${x0}" y2="${top + rows * ROW}" stroke="${MUTED}"/>`);
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="${FONT}" fill="${INK}">` +
      `<rect width="100%" height="100%" fill="#fff"/>${out.join("")}</svg>`;
    return { svg, rows, bars, shown: recs.length, x0, scale, from, to, span };
  }

  // Zoom around the time under x (factor < 1 zooms in), kept within the session.
  function zoom(view, x, factor) {
    const at = view.from + (x - view.x0) / view.scale;
    const width = Math.min(view.span, Math.max(0.0005, (view.to - view.from) * factor));
    let from = at - (at - view.from) * (width / (view.to - view.from));
    from = Math.max(0, Math.min(from, view.span - width));
    return { from, to: from + width };
  }

  function init() {
    const data = JSON.parse(document.getElementById("waterfall-data").textContent);
    const state = { grouped: true, module: "", hiddenKinds: new Set(), hiddenOutcomes: new Set(), from: null, to: null };
    const controls = document.getElementById("controls"), chart = document.getElementById("chart");
    let view = null;
    const draw = () => {
      view = render(data, state);
      chart.innerHTML = view.svg;
      count.textContent = `${view.shown} of ${data.records.length} requests`;
    };
    const add = (html) => { const span = document.createElement("span"); span.innerHTML = html; controls.appendChild(span); return span; };
    const title = add(`<b>${esc(data.title)}</b>`);
    title.style.flexBasis = "100%";
    const viewSel = add(`<label>view <select><option value="1">one row per module</option><option value="0">one row per request</option></select></label>`).querySelector("select");
    viewSel.onchange = () => { state.grouped = viewSel.value === "1"; draw(); };
    const filter = add(`<label>module <input type="search" placeholder="filter"></label>`).querySelector("input");
    filter.oninput = () => { state.module = filter.value; draw(); };
    const boxes = (name, values, hidden) => {
      const span = add(`${name}: `);
      for (const v of values) {
        const label = document.createElement("label");
        label.innerHTML = `<input type="checkbox" checked> ${esc(v)}`;
        label.firstChild.onchange = (e) => { e.target.checked ? hidden.delete(v) : hidden.add(v); draw(); };
        span.appendChild(label);
      }
    };
    boxes("kind", [...new Set(data.records.map((r) => r.k))].sort(), state.hiddenKinds);
    boxes("outcome", [...new Set(data.records.map((r) => r.o))].sort(), state.hiddenOutcomes);
    const reset = add(`<button>whole session</button>`).firstChild;
    reset.onclick = () => { state.from = state.to = null; draw(); };
    const count = add("");
    chart.addEventListener("wheel", (e) => {
      if (!view) return;
      e.preventDefault();
      const box = chart.querySelector("svg").getBoundingClientRect();
      Object.assign(state, zoom(view, e.clientX - box.left, e.deltaY < 0 ? 0.8 : 1.25));
      draw();
    }, { passive: false });
    let dragging = null;
    chart.addEventListener("mousedown", (e) => { dragging = { x: e.clientX, from: view.from, to: view.to }; });
    window.addEventListener("mouseup", () => { dragging = null; });
    window.addEventListener("mousemove", (e) => {
      if (!dragging) return;
      const width = dragging.to - dragging.from;
      const from = Math.max(0, Math.min(view.span - width, dragging.from - (e.clientX - dragging.x) / view.scale));
      state.from = from; state.to = from + width;
      draw();
    });
    draw();
  }

  return { render, visible, zoom, init };
})();

if (typeof module !== "undefined" && module.exports) module.exports = WF;
else WF.init();
