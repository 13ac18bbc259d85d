// Draws the flame graph held in the JSON element #data: a call tree in
// preorder, three numbers a node (depth, name index, total). Frame names
// are the profiled program's: they reach the page only through
// textContent and the canvas, never as markup.
"use strict";
(function () {
  const ROW = 17;
  const data = JSON.parse(document.getElementById("data").textContent);
  const canvas = document.getElementById("graph");
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("tip");
  const status = document.getElementById("status");
  const matched = document.getElementById("matched");
  const search = document.getElementById("search");

  // Rebuild the tree. A node's x is where it starts, counted in samples
  // from the root's left edge; its children follow one another from it.
  const nodes = [];
  const last = [];
  let depthMax = 0;
  for (let i = 0; i + 2 < data.nodes.length; i += 3) {
    const depth = data.nodes[i], total = data.nodes[i + 2];
    const parent = depth > 0 ? last[depth - 1] : null;
    if (depth > 0 && !parent) continue;
    const n = { name: String(data.names[data.nodes[i + 1]]), depth, total, self: total, parent, x: 0, end: 0, hit: false };
    if (parent) {
      n.x = parent.end;
      parent.end += total;
      parent.self -= total;
    }
    n.end = n.x;
    last[depth] = n;
    last.length = depth + 1;
    nodes.push(n);
    depthMax = Math.max(depthMax, depth);
  }
  const root = nodes[0];
  let zoom = root;
  let rows = [];

  const pct = (part, whole) => (whole > 0 ? (100 * part / whole).toFixed(2) : "0.00") + "%";
  const count = (v) => v.toLocaleString("en-US") + " " + data.unit;

  // A warm colour from the name, so that a frame keeps its colour
  // whatever the zoom.
  function colour(name) {
    let h = 2166136261;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
    h >>>= 0;
    return "hsl(" + (h % 50) + "," + (70 + (h >> 8) % 25) + "%," + (55 + (h >> 16) % 15) + "%)";
  }

  function isAncestor(a, n) {
    for (let p = n; p; p = p.parent) if (p === a) return true;
    return false;
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    // Canvases taller than about 32k pixels are not drawn at all.
    const shown = Math.min(depthMax + 1, Math.floor(32000 / ROW));
    const height = shown * ROW;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.height = height + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    const scale = width / zoom.total;
    const charWidth = ctx.measureText("m").width;
    rows = [];
    for (const n of nodes) {
      if (n.depth >= shown) continue;
      const inZoom = isAncestor(zoom, n);
      const above = !inZoom && isAncestor(n, zoom);
      if (!inZoom && !above) continue;
      const x0 = above ? 0 : (n.x - zoom.x) * scale;
      const w = above ? width : n.total * scale;
      if (w < 0.5) continue;
      const y = (shown - 1 - n.depth) * ROW;
      ctx.fillStyle = n.hit ? "#c58be0" : colour(n.name);
      ctx.globalAlpha = above ? 0.55 : 1;
      ctx.fillRect(x0, y, Math.max(w - 0.5, 0.5), ROW - 1);
      ctx.globalAlpha = 1;
      (rows[n.depth] = rows[n.depth] || []).push({ n, x0, x1: x0 + w });
      const room = Math.floor((w - 6) / charWidth);
      if (room >= 3) {
        const label = n.name.length <= room ? n.name : n.name.slice(0, room - 1) + "\u2026";
        ctx.fillStyle = "#000";
        ctx.fillText(label, x0 + 3, y + ROW / 2);
      }
    }
  }

  function at(ev) {
    const r = canvas.getBoundingClientRect();
    const shown = canvas.clientHeight / ROW;
    const depth = shown - 1 - Math.floor((ev.clientY - r.top) / ROW);
    const x = ev.clientX - r.left;
    for (const c of rows[depth] || []) if (x >= c.x0 && x < c.x1) return c.n;
    return null;
  }

  function describe(n) {
    let s = n.name + "\n" + count(n.total) + ", " + pct(n.total, root.total) + " of all";
    if (zoom !== root && isAncestor(zoom, n)) s += ", " + pct(n.total, zoom.total) + " of " + zoom.name;
    return s + "\nself " + count(n.self) + ", " + pct(n.self, root.total);
  }

  canvas.addEventListener("mousemove", (ev) => {
    const n = at(ev);
    if (!n) {
      tip.style.display = "none";
      return;
    }
    tip.textContent = describe(n);
    status.textContent = n.name + "  " + count(n.total) + " (" + pct(n.total, root.total) + ")";
    tip.style.display = "block";
    const left = Math.min(ev.clientX + 12, window.innerWidth - tip.offsetWidth - 4);
    const top = ev.clientY + 16 + tip.offsetHeight > window.innerHeight ? ev.clientY - tip.offsetHeight - 8 : ev.clientY + 16;
    tip.style.left = Math.max(left, 0) + "px";
    tip.style.top = top + "px";
    tip.style.whiteSpace = "pre-wrap";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  canvas.addEventListener("click", (ev) => {
    const n = at(ev);
    if (n) {
      zoom = n;
      draw();
    }
  });
  document.getElementById("reset").addEventListener("click", () => { zoom = root; draw(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      zoom = zoom.parent || root;
      draw();
    }
  });

  // Search: a regular expression, or the text as typed when it is not
  // one. What matched is counted once, not again in a matching callee.
  search.addEventListener("input", () => {
    const q = search.value;
    let re = null;
    if (q) {
      try { re = new RegExp(q); } catch (e) { re = new RegExp(q.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")); }
    }
    let sum = 0;
    for (const n of nodes) {
      n.hit = re !== null && n !== root && re.test(n.name);
      let under = false;
      for (let p = n.parent; p; p = p.parent) if (p.hit) under = true;
      if (n.hit && !under) sum += n.total;
    }
    matched.textContent = re ? "matched " + count(sum) + " (" + pct(sum, root.total) + ")" : "";
    draw();
  });

  window.addEventListener("resize", draw);
  draw();
})();
