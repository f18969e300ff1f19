"""The attention explorer: one self-contained HTML file (inline CSS and JavaScript, the weights as
JSON inside it; no network, no CDN), which opens from disk in any browser.

Pick a layer and a head (or the mean of all heads); the lines view joins each query token (left)
to the keys it attends to (right: the same text, or an encoder-decoder's source for cross-attention), thicker and darker for more weight; the matrix view shows the
same numbers as a grid, masked cells in grey. Hovering a token highlights what it attends to.
After bertviz's head view (Vig 2019), written here in plain DOM code.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

from ..errors import LucidError
from ..files import write_atomic

MAX_VALUES = 4_000_000  # weights in one page (30 layers x 9 heads x 120 tokens squared); more: pick --layers

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.15em; margin: 0 0 .6em; }
#controls { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin-bottom: .8em; }
button { padding: .25em .8em; border: 1px solid #888; background: #f4f4f4; border-radius: 4px; cursor: pointer; }
button.on { background: #335; color: #fff; }
#status { min-height: 1.4em; color: #444; margin: .4em 0; }
.tok { cursor: default; font: 13px ui-monospace, monospace; }
.tok.active { font-weight: bold; fill: #b00; }
#lines path { fill: none; stroke: #2456a6; }
#lines path.dim { stroke-opacity: 0.04 !important; }
#matrix { border-collapse: collapse; font: 11px ui-monospace, monospace; }
#matrix td, #matrix th { width: 2.6em; height: 1.6em; text-align: center; padding: 0; }
#matrix th { font-weight: normal; white-space: nowrap; }
#matrix th.row { text-align: right; padding-right: .4em; }
#matrix td.masked { background: #ddd; color: #999; }
#matrix tr.active th.row { color: #b00; font-weight: bold; }
#matrix tr.active td { outline: 1px solid #b00; }
.hidden { display: none; }
</style></head><body>
<h1>__TITLE__</h1>
<div id="controls">
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <button id="view-lines" class="on">lines</button><button id="view-matrix">matrix</button>
</div>
<div id="status">Hover a token to see what it attends to.</div>
<svg id="lines"></svg>
<table id="matrix" class="hidden"></table>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const K = D.keys || D.tokens;  // the key tokens: the same text, or (cross-attention) the source
const T = D.tokens.length, S = K.length, H = D.n_heads;
const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
const svg = document.getElementById("lines"), table = document.getElementById("matrix");
const status = document.getElementById("status");
D.layers.forEach((layer, i) => layerSel.add(new Option("layer " + layer, i)));
headSel.add(new Option("all heads (mean)", -1));
for (let h = 0; h < H; h++) {
  const kv = D.n_kv_heads === H ? "" : " (kv " + Math.floor(h / (H / D.n_kv_heads)) + ")";
  headSel.add(new Option("head " + h + kv, h));
}

function weights() {  // the (T, S) matrix on show, rows = queries
  const li = Number(layerSel.value), h = Number(headSel.value);
  const at = (hh, q, k) => D.weights[li][hh][q * S + k];
  const m = [];
  for (let q = 0; q < T; q++) {
    const row = [];
    for (let k = 0; k < S; k++) {
      if (h >= 0) { row.push(at(h, q, k)); continue; }
      let s = 0; for (let hh = 0; hh < H; hh++) s += at(hh, q, k);
      row.push(s / H);
    }
    m.push(row);
  }
  return m;
}
const visible = (q, k) => D.visible[Number(layerSel.value)][q * S + k] === 1;

const esc = s => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function drawLines(m) {  // markup parsed inside <svg> is SVG: no namespace needed
  const row = 22, left = 150, right = 450, parts = [];
  svg.setAttribute("width", 620); svg.setAttribute("height", row * Math.max(T, S) + 20);
  for (let q = 0; q < T; q++) for (let k = 0; k < S; k++) {
    if (!visible(q, k) || m[q][k] < 0.01) continue;
    const y1 = 16 + q * row - 4, y2 = 16 + k * row - 4, mid = (left + right) / 2;
    parts.push(`<path d="M${left + 6},${y1} C${mid},${y1} ${mid},${y2} ${right - 6},${y2}" ` +
               `stroke-width="${(0.5 + 4 * m[q][k]).toFixed(2)}" stroke-opacity="${m[q][k].toFixed(3)}" ` +
               `data-q="${q}" data-k="${k}"></path>`);
  }
  D.tokens.forEach((tok, i) => {
    parts.push(`<text x="${left}" y="${16 + i * row}" text-anchor="end" class="tok query" data-index="${i}">${esc(tok)}</text>`);
  });
  K.forEach((tok, i) => parts.push(`<text x="${right}" y="${16 + i * row}" class="tok key" data-index="${i}">${esc(tok)}</text>`));
  svg.innerHTML = parts.join("");
}
svg.addEventListener("mouseover", e => {
  const t = e.target.closest(".tok");
  if (t) focus(t.classList.contains("query") ? "query" : "key", Number(t.dataset.index));
});
svg.addEventListener("mouseout", e => { if (e.target.closest(".tok")) focus(null, -1); });

function drawMatrix(m) {
  table.replaceChildren();
  const head = table.insertRow();
  head.appendChild(document.createElement("th"));
  K.forEach(tok => { const th = document.createElement("th"); th.textContent = tok; head.appendChild(th); });
  for (let q = 0; q < T; q++) {
    const tr = table.insertRow(); tr.dataset.q = q;
    const th = document.createElement("th"); th.className = "row tok"; th.textContent = D.tokens[q]; tr.appendChild(th);
    for (let k = 0; k < S; k++) {
      const td = tr.insertCell();
      if (!visible(q, k)) { td.className = "masked"; td.textContent = "\u2013"; continue; }
      const w = m[q][k];
      td.style.background = `rgba(36, 86, 166, ${w.toFixed(3)})`;
      td.style.color = w > 0.5 ? "#fff" : "#222";
      td.textContent = w.toFixed(2).replace(/^0/, "");
      td.title = `${D.tokens[q]} \u2192 ${K[k]}: ${w.toFixed(3)}`;
    }
    tr.addEventListener("mouseenter", () => focus("query", q));
    tr.addEventListener("mouseleave", () => focus(null, -1));
  }
}

function focus(side, index) {  // highlight one token's attention; side null: clear
  const m = weights();
  svg.querySelectorAll("path").forEach(p => {
    const mine = side === "query" ? Number(p.dataset.q) === index : Number(p.dataset.k) === index;
    p.classList.toggle("dim", side !== null && !mine);
  });
  svg.querySelectorAll(".tok").forEach(t => t.classList.toggle("active",
    side !== null && t.classList.contains(side) && Number(t.dataset.index) === index));
  table.querySelectorAll("tr").forEach(tr => tr.classList.toggle("active", side === "query" && Number(tr.dataset.q) === index));
  if (side === null) { status.textContent = "Hover a token to see what it attends to."; return; }
  const pairs = side === "query" ? m[index].map((w, k) => [w, k]).filter(([, k]) => visible(index, k))
                                 : m.map((row, q) => [row[index], q]).filter(([, q]) => visible(q, index));
  pairs.sort((a, b) => b[0] - a[0]);
  const named = side === "query" ? K : D.tokens;
  const top = pairs.slice(0, 3).map(([w, j]) => `${named[j]} ${w.toFixed(2)}`).join(", ");
  status.textContent = side === "query" ? `\u201c${D.tokens[index]}\u201d attends most to: ${top}`
                                        : `attending most to \u201c${K[index]}\u201d: ${top}`;
}

function draw() { const m = weights(); drawLines(m); drawMatrix(m); }
function show(view) {
  svg.classList.toggle("hidden", view !== "lines"); table.classList.toggle("hidden", view !== "matrix");
  document.getElementById("view-lines").classList.toggle("on", view === "lines");
  document.getElementById("view-matrix").classList.toggle("on", view === "matrix");
}
layerSel.addEventListener("change", draw); headSel.addEventListener("change", draw);
document.getElementById("view-lines").addEventListener("click", () => show("lines"));
document.getElementById("view-matrix").addEventListener("click", () => show("matrix"));
draw();
</script></body></html>
"""


def check_page_size(n_layers: int, n_heads: int, n_tokens: int, n_keys: int | None = None) -> None:
    n_keys = n_tokens if n_keys is None else n_keys
    if n_layers * n_heads * n_tokens * n_keys > MAX_VALUES:
        raise LucidError(f"{n_layers} layers x {n_heads} heads x {n_tokens}x{n_keys} tokens is too much for one page "
                         f"(at most {MAX_VALUES:,} weights): choose fewer --layers or a shorter text")


def write_explorer(view, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the explorer page for an AttentionView; returns the path."""
    L, H, T, S = view.weights.shape
    check_page_size(L, H, T, S)
    data = {"tokens": view.tokens, "keys": view.keys, "layers": view.layers, "n_heads": H, "n_kv_heads": view.n_kv_heads,
            "weights": [[[round(float(w), 3) for w in view.weights[i, h].ravel()] for h in range(H)]
                        for i in range(L)],
            "visible": [[int(v) for v in view.visible[i].ravel()] for i in range(L)]}
    # JSON inside <script>: "<", ">" and "&" are written as \u escapes, so no text ("</script>",
    # "<!--") can change how the HTML parser reads the element (as Django's json_script does).
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    title = title or f"Attention: {view.text or ''.join(view.tokens)}"[:200]
    # One pass, so a placeholder inside the title or the data is never substituted again.
    fill = {"__TITLE__": html.escape(title), "__DATA__": payload}
    page = re.sub("__TITLE__|__DATA__", lambda m: fill[m.group(0)], PAGE)
    path = Path(path)
    write_atomic(path, page)
    return path
