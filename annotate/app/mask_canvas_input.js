// The mask canvas's input (annotate/app/mask_canvas.py runs it right after mask_canvas.js, in
// the same function): pointer (mouse, pen, touch), wheel, toolbar, keys, and what tests read.
// --- pointer, wheel, keys ---------------------------------------------------------------------
// Touch: one finger draws (polygon and region act on a tap, when the finger lifts); two fingers
// pinch to zoom and pan, taking back what the first finger had started.
const touches = new Map(); // active touch pointers: id -> screen point
// a region click's source chosen with a modifier, without touching the Region choice
function clickSource(event) {
  if (!event) return null;
  if (event.ctrlKey || event.metaKey) return 'model';
  if (event.altKey) return 'large';
  return event.shiftKey ? 'medium' : null;
}
const PRESS_SLOP = 4; // screen pixels a region-tool press may move and still be a click
const DRAGS_PAINT = new Set(['brush', 'eraser', 'region']); // tools whose right drag paints or erases
function startStroke(p, value) {
  snapshot();
  st.drag = { kind: 'stroke', last: [p.x, p.y], value, points: [[p.x, p.y]] };
  segment([p.x, p.y], [p.x, p.y], st.size / 2, value);
}
function clickAt(p, event) { // the one-point tools: a polygon vertex, a region click
  if (st.tool === 'polygon') {
    const first = st.points[0];
    if (first && st.points.length >= 3 && Math.hypot((first[0] - p.x) * st.scale, (first[1] - p.y) * st.scale) <= SNAP) {
      closePolygon();
    } else {
      st.points.push([p.x, p.y]);
      say(`polygon: ${st.points.length} vertices` + (st.points.length >= 3 ? ': click the first (circled) or press Enter' : ''));
    }
  } else if (st.tool === 'region') {
    const x = Math.floor(p.x), y = Math.floor(p.y);
    if (x < 0 || y < 0 || x >= st.width || y >= st.height) return;
    st.busy = true; root.dataset.busy = '1';
    const asked = (st.asks = (st.asks || 0) + 1);
    // Auto: the clicked pixel decides (off the mask adds the region, on it removes it)
    const mode = st.mode === 'auto' ? (st.mask[y * st.width + x] ? 'remove' : 'add') : st.mode;
    const source = clickSource(event);
    say(`${mode === 'add' ? 'adding' : 'removing'} the ${source ? source + ' ' : ''}region at (${x}, ${y})…`);
    trigger('region', source ? { x, y, mode, source } : { x, y, mode });
    setTimeout(() => { // no answer at all (the server gone): let the annotator go on drawing
      if (st.busy && st.asks === asked) { st.busy = false; root.dataset.busy = '0'; say('no answer from the server'); }
    }, BUSY_MS);
  }
  draw();
}
function pinchStart() {
  if (st.drag && st.drag.kind === 'stroke') { // the first finger's stroke is taken back
    st.mask = st.undo.pop();
    paintLayer(0, 0, st.width, st.height);
  }
  const [a, b] = [...touches.values()];
  st.drag = { kind: 'pinch', d0: Math.hypot(a.sx - b.sx, a.sy - b.sy) || 1, scale0: st.scale,
    ix: ((a.sx + b.sx) / 2 - st.panX) / st.scale, iy: ((a.sy + b.sy) / 2 - st.panY) / st.scale };
}
stage.addEventListener('pointerdown', (event) => {
  if (!st.mask) return;
  root.focus({ preventScroll: true });
  const p = toImage(event), touch = event.pointerType === 'touch';
  st.pointer = p;
  if (touch) {
    touches.set(event.pointerId, p);
    if (touches.size >= 2) {
      if (touches.size === 2) pinchStart();
      event.preventDefault();
      draw();
      return;
    }
  }
  if (event.button === 1 || st.tool === 'pan' || st.space) {
    st.drag = { kind: 'pan', sx: p.sx, sy: p.sy, panX: st.panX, panY: st.panY };
  } else if (st.busy || !(event.button === 0 || (event.button === 2 && DRAGS_PAINT.has(st.tool)))) {
    return;
  } else if (st.tool === 'brush' || st.tool === 'eraser') {
    // the right button does the other one: a right drag with the brush erases, with the eraser paints
    startStroke(p, (st.tool === 'brush') !== (event.button === 2) ? 1 : 0);
  } else if (touch) {
    st.drag = { kind: 'tap', p };
  } else if (st.tool === 'region') { // a click snaps a region, a drag paints (right: erases)
    const mods = { shiftKey: event.shiftKey, altKey: event.altKey, ctrlKey: event.ctrlKey, metaKey: event.metaKey };
    st.drag = { kind: 'press', p, button: event.button, mods };
  } else {
    clickAt(p, event);
  }
  stage.setPointerCapture(event.pointerId);
  event.preventDefault();
  draw();
});
stage.addEventListener('pointermove', (event) => {
  const p = toImage(event);
  st.pointer = p;
  if (event.pointerType === 'touch' && touches.has(event.pointerId)) touches.set(event.pointerId, p);
  const press = st.drag && st.drag.kind === 'press' ? st.drag : null;
  if (press && Math.hypot(p.sx - press.p.sx, p.sy - press.p.sy) > PRESS_SLOP) {
    startStroke(press.p, press.button === 2 ? 0 : 1); // the region tool's drag: a brush stroke from the press
  }
  const drag = st.drag;
  if (drag && drag.kind === 'pan') {
    st.panX = drag.panX + p.sx - drag.sx; st.panY = drag.panY + p.sy - drag.sy;
  } else if (drag && drag.kind === 'stroke') {
    segment(drag.last, [p.x, p.y], st.size / 2, drag.value);
    drag.last = [p.x, p.y]; drag.points.push([p.x, p.y]);
  } else if (drag && drag.kind === 'pinch' && touches.size >= 2) {
    const [a, b] = [...touches.values()];
    st.scale = Math.max(0.05, Math.min(64, (drag.scale0 * Math.hypot(a.sx - b.sx, a.sy - b.sy)) / drag.d0));
    st.panX = (a.sx + b.sx) / 2 - drag.ix * st.scale;
    st.panY = (a.sy + b.sy) / 2 - drag.iy * st.scale;
  } else if (drag && drag.kind === 'tap' && Math.hypot(p.sx - drag.p.sx, p.sy - drag.p.sy) > 10) {
    st.drag = null; // a drag, not a tap
  }
  draw();
});
function release(event) {
  touches.delete(event.pointerId);
  const drag = st.drag;
  if (drag && (drag.kind === 'pinch' || drag.kind === 'rest')) { // the other finger draws nothing
    st.drag = touches.size ? { kind: 'rest' } : null;
    return;
  }
  st.drag = null;
  if (drag && drag.kind === 'stroke') {
    st.log.push({ tool: drag.value ? 'brush' : 'eraser', value: drag.value, size: st.size, points: drag.points });
    say(`${drag.value ? 'brush' : 'eraser'} stroke (Ctrl+Z takes it back)`);
    commit();
  } else if (drag && drag.kind === 'tap' && event.type === 'pointerup') {
    clickAt(drag.p);
  } else if (drag && drag.kind === 'press' && event.type === 'pointerup' && drag.button === 0) {
    clickAt(drag.p, drag.mods);
  }
}
stage.addEventListener('pointerup', release);
stage.addEventListener('pointercancel', release);
stage.addEventListener('pointerenter', () => { st.over = true; });
stage.addEventListener('pointerleave', () => { st.over = false; draw(); });
stage.addEventListener('wheel', (event) => {
  if (!st.mask) return;
  event.preventDefault();
  const p = toImage(event);
  zoomAt(Math.exp(-event.deltaY * 0.0015), p.sx, p.sy);
}, { passive: false });
stage.addEventListener('contextmenu', (event) => event.preventDefault());

function setSize(size) {
  st.size = Math.max(+sizeInput.min, Math.min(+sizeInput.max, size));
  sizeInput.value = String(st.size);
  root.dataset.size = String(st.size);
  draw();
}
function setOpacity(value) {
  st.opacity = Math.max(0, Math.min(1, value));
  opacityInput.value = String(st.opacity);
  root.dataset.opacity = st.opacity.toFixed(2);
  draw();
}
sizeInput.addEventListener('input', () => setSize(+sizeInput.value));
opacityInput.addEventListener('input', () => setOpacity(+opacityInput.value));
root.querySelectorAll('[data-tool]').forEach((b) => b.addEventListener('click', () => setTool(b.dataset.tool)));
root.querySelectorAll('[data-mode]').forEach((b) => b.addEventListener('click', () => setMode(b.dataset.mode)));
const actions = {
  undo: () => restore(st.undo, st.redo, 'undo'),
  redo: () => restore(st.redo, st.undo, 'redo'),
  close: () => closePolygon(),
  fit: () => fit(),
  'zoom-in': () => zoomAt(1.25, stage.clientWidth / 2, stage.clientHeight / 2),
  'zoom-out': () => zoomAt(0.8, stage.clientWidth / 2, stage.clientHeight / 2),
};
root.querySelectorAll('[data-action]').forEach((b) => b.addEventListener('click', () => {
  if (st.mask && !st.busy) actions[b.dataset.action]();
}));

function typing(target) {
  const tag = (target && target.tagName) || '';
  return tag === 'TEXTAREA' || tag === 'SELECT' || (tag === 'INPUT' && !['range', 'button', 'radio', 'checkbox'].includes(target.type))
    || (target && target.isContentEditable);
}
document.addEventListener('keydown', (event) => {
  if (!st.mask || typing(event.target) || !root.isConnected) return;
  if (!(root.contains(document.activeElement) || st.over)) return;
  const key = event.key.toLowerCase(), ctrl = event.ctrlKey || event.metaKey;
  let done = true;
  if (ctrl && key === 'z') (event.shiftKey ? actions.redo : actions.undo)();
  else if (ctrl && key === 'y') actions.redo();
  else if (ctrl || event.altKey) done = false;
  else if (TOOLS[key]) setTool(TOOLS[key]);
  else if (key === 'x') setMode({ auto: 'add', add: 'remove', remove: 'auto' }[st.mode]);
  else if (key === '[') setSize(st.size - 2);
  else if (key === ']') setSize(st.size + 2);
  else if (key === ',') setOpacity(st.opacity - 0.05);
  else if (key === '.') setOpacity(st.opacity + 0.05);
  else if (key === 'enter' && st.points.length) closePolygon();
  else if (key === 'escape' && st.points.length) { st.points = []; say('polygon dropped'); draw(); }
  else if (key === 'backspace' && st.points.length) actions.undo();
  else if (key === '0') fit();
  else if (key === '+' || key === '=') actions['zoom-in']();
  else if (key === '-') actions['zoom-out']();
  else if (key === ' ') st.space = true;
  else done = false;
  if (done && !st.busy) event.preventDefault();
});
document.addEventListener('keyup', (event) => { if (event.key === ' ') st.space = false; });
new ResizeObserver(() => (st.fitted ? draw() : fit())).observe(stage); // a hidden tab shown: fit then

// what the browser tests read: the mask shown, the view, what each edit did
root.maskCanvas = {
  state: () => ({ key: st.key, width: st.width, height: st.height, scale: st.scale, panX: st.panX, panY: st.panY,
    tool: st.tool, mode: st.mode, size: st.size, opacity: st.opacity, points: st.points.length,
    undo: st.undo.length, busy: st.busy, revision: st.revision }),
  shown: () => { // the layer drawn on screen, read back from its pixels: 1 where the mask is
    const d = st.layer.getContext('2d').getImageData(0, 0, st.width, st.height).data;
    let out = '';
    for (let i = 0; i < st.width * st.height; i++) out += d[4 * i + 3] ? '1' : '0';
    return out;
  },
  log: () => st.log,
};
setTool('brush'); setMode('auto'); setSize(st.size); setOpacity(st.opacity);
watch('value', receive);
if (props.value && props.value.mask) receive();
