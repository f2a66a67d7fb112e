// Runs the waterfall page's script against a minimal stand-in for the browser's DOM
// (test_trace_waterfall.py): its controls are built, the chart drawn, a wheel zooms it.
const fs = require("fs");
const page = fs.readFileSync(process.argv[2], "utf8");
const data = page.match(/<script id="waterfall-data" type="application\/json">([\s\S]*?)<\/script>/)[1];
const script = page.match(/<script>\n([\s\S]*?)<\/script>\n<\/body>/)[1];
function el(tag) {
  const e = { tag, children: [], style: {}, listeners: {}, _html: "", value: "1", checked: true,
    appendChild(c) { this.children.push(c); return c; },
    addEventListener(t, f) { this.listeners[t] = f; },
    querySelector(sel) { const c = el(sel); this.children.push(c); return c; },
    getBoundingClientRect() { return { left: 0 }; },
    set innerHTML(h) { this._html = h; this.firstChild = el("first"); },
    get innerHTML() { return this._html; }, textContent: "" };
  return e;
}
const nodes = { "waterfall-data": { textContent: data }, controls: el("div"), chart: el("div") };
global.document = { getElementById: (id) => nodes[id], createElement: el };
global.window = { addEventListener() {} };
new Function("module", script)(undefined);
const chart = nodes.chart;
const before = chart.innerHTML;
chart.listeners.wheel({ preventDefault() {}, clientX: 500, deltaY: -1 });
console.log(JSON.stringify({ drawn: before.startsWith("<svg"), zoomed: chart.innerHTML !== before,
  controls: nodes.controls.children.length }));
