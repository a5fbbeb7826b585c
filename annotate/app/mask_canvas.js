// The mask canvas (annotate/app/mask_canvas.py): one canvas with the picture, the mask over it at
// an opacity that is only a drawing setting, wheel zoom and drag pan, brush / eraser, polygon
// (snaps shut on its first vertex), region clicks sent to Python, undo / redo and shortcuts.
// Run by gr.HTML's js_on_load: `element`, `trigger`, `props` and `watch` are given. This file holds
// the state, the drawing, the edits and the value; mask_canvas_input.js (run after it) the input.
const root = element.querySelector('.mc-root');
const stage = root.querySelector('.mc-stage');
const screen = root.querySelector('.mc-screen');
const status = root.querySelector('.mc-status');
const sizeInput = root.querySelector('.mc-size');
const opacityInput = root.querySelector('.mc-opacity');
const ctx = screen.getContext('2d');
const SNAP = 8; // screen pixels: a polygon click this close to the first vertex closes it
const MAX_UNDO = 20;
const BUSY_MS = 180000; // the longest a region click may take (the first model-map click runs the model)
const TOOLS = { b: 'brush', e: 'eraser', p: 'polygon', r: 'region', h: 'pan' };
const st = {
  key: null, width: 0, height: 0, mask: null, picture: null, layer: null, layerData: null,
  scale: 1, panX: 0, panY: 0, tool: 'brush', mode: 'auto', size: +sizeInput.value,
  opacity: +opacityInput.value, points: [], undo: [], redo: [], busy: false, drag: null,
  pointer: null, over: false, space: false, revision: 0, log: [], fitted: false,
};
const colour = (props.mask_colour || '#ff2e88').replace('#', '');
const rgb = [0, 2, 4].map((i) => parseInt(colour.slice(i, i + 2), 16));

function say(text) { status.textContent = text; }
function setTool(tool) {
  st.tool = tool;
  if (tool !== 'polygon') st.points = [];
  root.querySelectorAll('[data-tool]').forEach((b) => b.classList.toggle('mc-on', b.dataset.tool === tool));
  root.dataset.tool = tool;
  draw();
}
function setMode(mode) {
  st.mode = mode;
  root.querySelectorAll('[data-mode]').forEach((b) => b.classList.toggle('mc-on', b.dataset.mode === mode));
  root.dataset.mode = mode;
}
function fit() {
  const w = stage.clientWidth, h = stage.clientHeight;
  if (!st.width || !w || !h) { st.fitted = false; return; }
  st.fitted = true;
  st.scale = Math.min(w / st.width, h / st.height);
  st.panX = (w - st.width * st.scale) / 2;
  st.panY = (h - st.height * st.scale) / 2;
  draw();
}
function zoomAt(factor, sx, sy) {
  const scale = Math.max(0.05, Math.min(64, st.scale * factor));
  st.panX = sx - ((sx - st.panX) * scale) / st.scale;
  st.panY = sy - ((sy - st.panY) * scale) / st.scale;
  st.scale = scale;
  draw();
}
function toImage(event) {
  const rect = stage.getBoundingClientRect();
  const sx = event.clientX - rect.left, sy = event.clientY - rect.top;
  return { sx, sy, x: (sx - st.panX) / st.scale, y: (sy - st.panY) / st.scale };
}

// --- drawing ---------------------------------------------------------------------------------
function paintLayer(x0, y0, x1, y1) { // the mask's pixels in the coloured layer, in a box
  if (!st.layer) return;
  x0 = Math.max(0, x0); y0 = Math.max(0, y0); x1 = Math.min(st.width, x1); y1 = Math.min(st.height, y1);
  if (x1 <= x0 || y1 <= y0) return;
  const d = st.layerData.data;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = y * st.width + x, j = 4 * i;
      d[j] = rgb[0]; d[j + 1] = rgb[1]; d[j + 2] = rgb[2]; d[j + 3] = st.mask[i] ? 255 : 0;
    }
  }
  st.layer.getContext('2d').putImageData(st.layerData, 0, 0, x0, y0, x1 - x0, y1 - y0);
}
function draw() {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(stage.clientWidth * dpr)), h = Math.max(1, Math.round(stage.clientHeight * dpr));
  if (screen.width !== w || screen.height !== h) { screen.width = w; screen.height = h; }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (!st.picture) return;
  ctx.imageSmoothingEnabled = false;
  ctx.setTransform(dpr * st.scale, 0, 0, dpr * st.scale, dpr * st.panX, dpr * st.panY);
  ctx.drawImage(st.picture, 0, 0);
  ctx.globalAlpha = st.opacity; // only how the layer is drawn: the mask itself never changes
  ctx.drawImage(st.layer, 0, 0);
  ctx.globalAlpha = 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const at = (p) => [st.panX + p[0] * st.scale, st.panY + p[1] * st.scale];
  if (st.points.length) {
    ctx.strokeStyle = '#00c2ff'; ctx.lineWidth = 2; ctx.beginPath();
    st.points.forEach((p, i) => { const [x, y] = at(p); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    if (st.pointer && st.over) ctx.lineTo(st.pointer.sx, st.pointer.sy);
    ctx.stroke();
    const [fx, fy] = at(st.points[0]);
    ctx.strokeStyle = '#ffffff'; ctx.beginPath(); ctx.arc(fx, fy, SNAP, 0, 2 * Math.PI); ctx.stroke();
    ctx.fillStyle = '#00c2ff';
    st.points.forEach((p) => { const [x, y] = at(p); ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fill(); });
  }
  if (st.pointer && st.over && (st.tool === 'brush' || st.tool === 'eraser')) {
    ctx.strokeStyle = st.tool === 'brush' ? '#ff2e88' : '#00c2ff'; ctx.lineWidth = 1.5; ctx.beginPath();
    ctx.arc(st.pointer.sx, st.pointer.sy, (st.size / 2) * st.scale, 0, 2 * Math.PI); ctx.stroke();
  }
  root.dataset.scale = st.scale.toFixed(4);
}

// --- edits (every one on st.mask, one byte per pixel, 1 = in the mask) -------------------------
function snapshot() {
  st.undo.push(st.mask.slice());
  if (st.undo.length > MAX_UNDO) st.undo.shift();
  st.redo = [];
}
function segment(a, b, radius, value) { // pixels whose centre lies within radius of segment a-b
  const x0 = Math.floor(Math.min(a[0], b[0]) - radius), x1 = Math.ceil(Math.max(a[0], b[0]) + radius);
  const y0 = Math.floor(Math.min(a[1], b[1]) - radius), y1 = Math.ceil(Math.max(a[1], b[1]) + radius);
  const dx = b[0] - a[0], dy = b[1] - a[1], len2 = dx * dx + dy * dy, r2 = radius * radius;
  for (let y = Math.max(0, y0); y < Math.min(st.height, y1 + 1); y++) {
    for (let x = Math.max(0, x0); x < Math.min(st.width, x1 + 1); x++) {
      const px = x + 0.5 - a[0], py = y + 0.5 - a[1];
      const t = len2 ? Math.max(0, Math.min(1, (px * dx + py * dy) / len2)) : 0;
      const ex = px - t * dx, ey = py - t * dy;
      if (ex * ex + ey * ey <= r2) st.mask[y * st.width + x] = value;
    }
  }
  paintLayer(x0, y0, x1 + 1, y1 + 1);
}
function polygonSpans(points) { // even-odd rule at pixel centres, half-open spans [y, from, to)
  const ys = points.map((p) => p[1]), spans = [];
  const y0 = Math.max(0, Math.floor(Math.min(...ys))), y1 = Math.min(st.height, Math.ceil(Math.max(...ys)) + 1);
  for (let y = y0; y < y1; y++) {
    const yc = y + 0.5, xs = [];
    for (let i = 0; i < points.length; i++) {
      const [ax, ay] = points[i], [bx, by] = points[(i + 1) % points.length];
      if ((ay <= yc) !== (by <= yc)) xs.push(ax + ((yc - ay) * (bx - ax)) / (by - ay));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      const from = Math.max(0, Math.ceil(xs[k] - 0.5)), to = Math.min(st.width, Math.ceil(xs[k + 1] - 0.5));
      if (to > from) spans.push([y, from, to]);
    }
  }
  return { spans, y0, y1 };
}
function fillPolygon(points, value) { // value null (Auto): cut out if over half of it is mask, else add
  const { spans, y0, y1 } = polygonSpans(points);
  if (value === null) {
    let inside = 0, on = 0;
    for (const [y, from, to] of spans) for (let x = from; x < to; x++) { inside += 1; on += st.mask[y * st.width + x]; }
    value = 2 * on > inside ? 0 : 1;
  }
  for (const [y, from, to] of spans) st.mask.fill(value, y * st.width + from, y * st.width + to);
  paintLayer(0, y0, st.width, y1);
  return value;
}
function closePolygon() {
  if (st.points.length < 3) { say(`a polygon needs 3 vertices, it has ${st.points.length}`); return; }
  snapshot();
  const value = fillPolygon(st.points, st.mode === 'auto' ? null : st.mode === 'add' ? 1 : 0);
  st.log.push({ tool: 'polygon', value, points: st.points });
  say(`polygon ${value ? 'added' : 'cut out'} (${st.points.length} vertices)`);
  st.points = [];
  commit();
}
function restore(from, to, what) {
  if (st.points.length && what === 'undo') { st.points.pop(); say('last vertex taken back'); draw(); return; }
  if (!from.length) { say(`nothing to ${what}`); return; }
  to.push(st.mask);
  st.mask = from.pop();
  paintLayer(0, 0, st.width, st.height);
  st.log.push({ tool: what });
  say(`${what} (${st.undo.length} more to undo)`);
  commit();
}
function commit() { // the value Python reads: the mask as a 0/255 PNG
  const c = document.createElement('canvas');
  c.width = st.width; c.height = st.height;
  const image = new ImageData(st.width, st.height), d = image.data;
  for (let i = 0; i < st.mask.length; i++) {
    const v = st.mask[i] ? 255 : 0;
    d[4 * i] = v; d[4 * i + 1] = v; d[4 * i + 2] = v; d[4 * i + 3] = 255;
  }
  c.getContext('2d').putImageData(image, 0, 0);
  st.revision += 1;
  props.value = { key: st.key, width: st.width, height: st.height, mask: c.toDataURL('image/png') };
  root.dataset.revision = String(st.revision);
  draw();
}
function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error('the picture could not be read'));
    image.src = url;
  });
}
async function receive() { // a value from Python: a new picture, or a new mask for this one
  const v = props.value;
  if (!v || typeof v !== 'object' || !v.mask) { st.busy = false; root.dataset.busy = '0'; return; }
  try {
    const fresh = !!v.image;
    const [picture, mask] = await Promise.all([fresh ? loadImage(v.image) : null, loadImage(v.mask)]);
    if (fresh) {
      st.picture = picture; st.width = v.width; st.height = v.height;
      st.layer = document.createElement('canvas'); st.layer.width = v.width; st.layer.height = v.height;
      st.layerData = new ImageData(v.width, v.height);
      st.undo = []; st.redo = []; st.points = []; st.log = [];
    } else if (v.key !== st.key) { // an answer about a picture no longer shown (another one opened since)
      return;
    } else if (v.width !== st.width || v.height !== st.height) {
      throw new Error('the mask does not fit the picture shown: reopen the item');
    }
    const before = fresh ? null : st.mask;
    const c = document.createElement('canvas');
    c.width = v.width; c.height = v.height;
    const g = c.getContext('2d');
    g.drawImage(mask, 0, 0);
    const d = g.getImageData(0, 0, v.width, v.height).data;
    st.mask = new Uint8Array(v.width * v.height);
    for (let i = 0; i < st.mask.length; i++) st.mask[i] = d[4 * i] > 127 ? 1 : 0;
    if (before && st.mask.some((m, i) => m !== before[i])) { // an edit made in Python: undoable here
      st.undo.push(before);
      if (st.undo.length > MAX_UNDO) st.undo.shift();
      st.redo = [];
    }
    st.key = v.key;
    paintLayer(0, 0, st.width, st.height);
    if (fresh) fit(); else draw();
    if (v.message) say(v.message);
    root.dataset.key = String(v.key);
    root.dataset.loaded = String((+root.dataset.loaded || 0) + 1);
  } catch (err) {
    say(String(err.message || err));
  } finally {
    st.busy = false; root.dataset.busy = '0';
  }
}
