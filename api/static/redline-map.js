// <redline-map>: draw, amend and check a red-line boundary in any page, served by redline itself.
//
//   <script type="module" src="https://redline.example/widget/redline-map.js"></script>
//   <redline-map mode="draw" centre="-2.36,51.38" zoom="16"></redline-map>
//
// Attributes: api (service base URL; default: where this script came from), mode (draw | amend | view),
// boundary (a boundary id to load), tiles (XYZ URL template; default: the service's own background map,
// from widget/basemap.json, when one is configured), tiles-attribution,
// centre ("lon,lat"), zoom, api-key (a key of scope "check": it is visible in the page).
// Property `value`: the boundary as a GeoJSON Feature (EPSG:4326); setting it loads, validates and checks it.
// Events: boundarychange {feature, area_m2, area_ha, validation}; constraintschange {native answer};
// basemap {configured, attribution | help} once the service says whether it has a background map;
// changerequest {the service's answer} after an officer sends an amendment.
//
// No framework and no build step. Leaflet and leaflet-geoman are vendored next to this file, so no request
// leaves the service's origin unless `tiles` names a tile server.

const LEAFLET = "leaflet-1.9.4";
const GEOMAN = "leaflet-geoman-free-2.20.2";
const VENDOR = new URL("vendor/", import.meta.url);
const DEFAULT_API = new URL("../", import.meta.url).href;
const CHECK_DELAY_MS = 400;
const VIEW_DELAY_MS = 250;
const MAX_LABELS = 15;
const DECIMALS = 1e7; // 7 decimal places of a degree: about a centimetre

const COLOURS = {
  "Heritage and conservation": "#912b88",
  Ecology: "#00703c",
  Flooding: "#1d70b8",
  Trees: "#4c6b1f",
  "General policy": "#b35900",
};
const AMEND = { current: "#d4351c", proposed: "#1d70b8", added: "#00703c", removed: "#f47738" };
const RELATIONS = {
  within: "the site lies within it",
  contains: "it lies within the site",
  overlaps: "it overlaps the site",
  touches: "it touches the site's edge only",
};

// --- loading the vendored libraries (once per page) ---------------------------------------------------
let libraries;
function addStylesheet(href) {
  if ([...document.querySelectorAll("link[rel=stylesheet]")].some((l) => l.href === href)) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = href;
  document.head.append(link);
}
function addScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}
function loadLibraries() {
  libraries ??= (async () => {
    addStylesheet(new URL(`${LEAFLET}/leaflet.css`, VENDOR).href);
    addStylesheet(new URL(`${GEOMAN}/leaflet-geoman.css`, VENDOR).href);
    const style = document.createElement("style");
    style.textContent = CSS;
    document.head.append(style);
    // Geoman is a classic script that extends the global L, so both load as classic scripts, in order.
    if (!window.L) await addScript(new URL(`${LEAFLET}/leaflet.js`, VENDOR).href);
    if (!window.L.PM) await addScript(new URL(`${GEOMAN}/leaflet-geoman.min.js`, VENDOR).href);
    return window.L;
  })();
  return libraries;
}

// --- geometry helpers ------------------------------------------------------------------------------------
const round = (v) => Math.round(v * DECIMALS) / DECIMALS;
const same = (a, b) => a[0] === b[0] && a[1] === b[1];

function signedArea(ring) {
  let sum = 0;
  for (let i = 0; i < ring.length - 1; i++) sum += ring[i][0] * ring[i + 1][1] - ring[i + 1][0] * ring[i][1];
  return sum / 2;
}
function closeRing(ring, exterior) {
  const out = ring.map((p) => [p[0], p[1]]);
  if (out.length && !same(out[0], out[out.length - 1])) out.push([...out[0]]);
  // RFC 7946: exterior rings counterclockwise, holes clockwise.
  if (out.length > 3 && (signedArea(out) < 0) === exterior) out.reverse();
  return out;
}
function normalisePolygon(rings) {
  return rings.map((ring, i) => closeRing(ring, i === 0));
}

/** A GeoJSON Feature (Polygon or MultiPolygon) from a Feature, geometry, FeatureCollection or JSON text. */
export function toFeature(input) {
  if (input == null) return null;
  let obj = typeof input === "string" ? JSON.parse(input) : input;
  if (obj.type === "FeatureCollection") {
    const polygons = [];
    for (const f of obj.features || []) {
      const g = f && f.geometry;
      if (g?.type === "Polygon") polygons.push(g.coordinates);
      else if (g?.type === "MultiPolygon") polygons.push(...g.coordinates);
    }
    if (!polygons.length) throw new Error("the FeatureCollection holds no polygon");
    obj = polygons.length === 1 ? { type: "Polygon", coordinates: polygons[0] } : { type: "MultiPolygon", coordinates: polygons };
  }
  const properties = obj.type === "Feature" ? { ...(obj.properties || {}) } : {};
  const geometry = obj.type === "Feature" ? obj.geometry : obj;
  if (!geometry || !["Polygon", "MultiPolygon"].includes(geometry.type)) {
    throw new Error(`a boundary is a Polygon or MultiPolygon, not ${geometry ? geometry.type : "nothing"}`);
  }
  const coordinates =
    geometry.type === "Polygon" ? normalisePolygon(geometry.coordinates) : geometry.coordinates.map(normalisePolygon);
  return { type: "Feature", properties, geometry: { type: geometry.type, coordinates } };
}

function latLngsOf(geometry) {
  const ring = (r) => r.slice(0, -1).map(([lon, lat]) => [lat, lon]);
  return geometry.type === "Polygon" ? geometry.coordinates.map(ring) : geometry.coordinates.map((p) => p.map(ring));
}

function featureOfLayer(layer) {
  // Leaflet's own toGeoJSON rounds to 6 decimals (10 cm); keep 7.
  const ring = (latlngs) => latlngs.map((ll) => [round(ll.lng), round(ll.lat)]);
  let latlngs = layer.getLatLngs();
  const depth = (a) => (Array.isArray(a) ? 1 + depth(a[0]) : 0);
  if (depth(latlngs) === 1) latlngs = [latlngs];
  if (depth(latlngs) === 2) return toFeature({ type: "Polygon", coordinates: latlngs.map(ring) });
  return toFeature({ type: "MultiPolygon", coordinates: latlngs.map((p) => p.map(ring)) });
}

function coordinatesText(feature) {
  if (!feature) return "";
  const polygons = feature.geometry.type === "Polygon" ? [feature.geometry.coordinates] : feature.geometry.coordinates;
  // One exterior ring a block: the text round-trips exactly through /widget/coordinates for a Polygon.
  return polygons.map((p) => p[0].slice(0, -1).map(([x, y]) => `${x}, ${y}`).join("\n")).join("\n\n");
}

const m2 = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });
const ha = new Intl.NumberFormat("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
const pct = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 1 });
const areaText = (a) => `${m2.format(a)} m² (${ha.format(a / 10000)} ha)`;

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children.flat().filter((c) => c != null && c !== false));
  return el;
}

let instances = 0;

// --- the element -----------------------------------------------------------------------------------------
export class RedlineMap extends HTMLElement {
  static observedAttributes = ["mode", "boundary", "tiles", "api-key"];

  constructor() {
    super();
    this._uid = `rl${++instances}`;
    this._feature = null;
    this._history = [];
    this._seq = 0;
    this._validation = null;
    this._answer = null;
    this._current = null; // amend mode: the stored current version
    this._boundaryView = null;
    this.apiKey = null;
    this._ready = new Promise((resolve) => (this._resolveReady = resolve));
  }

  // Public API ------------------------------------------------------------------------------------------
  get value() {
    return this._feature ? structuredClone(this._feature) : null;
  }
  set value(input) {
    const feature = toFeature(input);
    this._commit(feature, { source: "code", fit: true });
  }
  /** The last answer of /v1/validate for the current value (or the problem it returned). */
  get validation() {
    return this._validation;
  }
  /** The last native constraints answer. */
  get constraints() {
    return this._answer;
  }
  /** Load a stored boundary by id (GET /v1/boundaries/{id}); in amend mode it becomes the current version. */
  load(id) {
    return this._ready.then(() => this._loadBoundary(id));
  }
  /** Resolves when the map is ready. */
  get ready() {
    return this._ready;
  }
  get mode() {
    const mode = this.getAttribute("mode");
    return ["draw", "amend", "view"].includes(mode) ? mode : "draw";
  }
  get api() {
    const base = this.getAttribute("api") || DEFAULT_API;
    return base.endsWith("/") ? base : `${base}/`;
  }

  connectedCallback() {
    if (this._built) return;
    this._built = true;
    this._buildPanel();
    loadLibraries()
      .then((L) => this._initMap(L))
      .catch((err) => this._announce(`The map could not start: ${err.message}`, "error"));
  }

  attributeChangedCallback(name, before, after) {
    if (!this._map || before === after) return;
    if (name === "boundary" && after) this._loadBoundary(after);
    if (name === "mode") this._applyMode();
    if (name === "api-key") this.refresh();
  }

  /** Ask the service again (validation, check, map features), e.g. after `apiKey` changed. */
  refresh() {
    if (!this._map) return;
    this._scheduleBackground();
    if (this._feature) this._update("refresh");
  }

  // Layout -----------------------------------------------------------------------------------------------
  _buildPanel() {
    const id = (s) => `${this._uid}-${s}`;
    this.classList.add("redline-map");
    this._status = h("div", { class: "rl-status", role: "status", "aria-live": "polite", "aria-atomic": "true" });
    this._mapEl = h("div", {
      class: "rl-map",
      id: id("map"),
      "aria-label": "Map of the site. Arrow keys pan, plus and minus zoom. Without a mouse, enter the boundary as coordinates or upload a file.",
    });
    const button = (label, action, extra = {}) =>
      h("button", { type: "button", class: "rl-button", onclick: () => action.call(this), ...extra }, label);
    this._buttons = {
      draw: button("Draw boundary", this.startDrawing, { "aria-describedby": id("draw-help") }),
      finish: button("Finish shape", this._finishDrawing, { hidden: true }),
      undo: button("Undo", this.undo),
      clear: button("Clear", this.clear),
    };
    this._toolbar = h("div", { class: "rl-toolbar", role: "toolbar", "aria-label": "Boundary tools" }, Object.values(this._buttons));
    const drawHelp = h(
      "p",
      { class: "rl-help", id: id("draw-help") },
      "Click the map to add corners; click the first corner (or Finish shape) to close it. Drag a corner to move it, right-click a corner to delete it, drag a midpoint to add one. The line snaps to the constraint features shown.",
    );
    this._area = h("p", { class: "rl-area" }, "No boundary yet.");
    this._messages = h("ul", { class: "rl-messages", "aria-label": "Validation messages" });
    this._list = h("div", { class: "rl-constraints" });
    this._viewNote = h("p", { class: "rl-note" });

    this._coords = h("textarea", {
      id: id("coords"),
      rows: 6,
      spellcheck: "false",
      autocomplete: "off",
      "aria-describedby": id("coords-help"),
    });
    const coordsForm = h(
      "form",
      { class: "rl-coords", onsubmit: (e) => (e.preventDefault(), this._useCoordinates()) },
      h("label", { for: id("coords") }, "Boundary coordinates"),
      h(
        "p",
        { class: "rl-help", id: id("coords-help") },
        "One corner a line: longitude, latitude (e.g. -2.3614, 51.3812) or British National Grid easting, northing in metres (e.g. 375040 164790). Edit a line to move a corner, delete it to remove the corner.",
      ),
      this._coords,
      h("button", { type: "submit", class: "rl-button" }, "Use these coordinates"),
    );
    this._file = h("input", {
      type: "file",
      id: id("file"),
      accept: ".geojson,.json,.kml,.gpkg,.zip",
      onchange: () => this._uploadFile(),
    });
    const uploadForm = h(
      "div",
      { class: "rl-upload" },
      h("label", { for: id("file") }, "Upload a boundary file"),
      h("p", { class: "rl-help" }, "GeoJSON, KML, GeoPackage (.gpkg) or a zipped Shapefile (.zip); any coordinate system."),
      this._file,
    );
    this._entry = h("details", { class: "rl-entry" }, h("summary", {}, "Enter coordinates or upload a file"), coordsForm, uploadForm);
    // Keyboard users reach the form at once: open by default.
    this._entry.open = true;

    this._amend = this._buildAmendForm(id);
    this._legend = h("div", { class: "rl-legend" });
    this._panel = h(
      "div",
      { class: "rl-panel" },
      h("section", { "aria-label": "Boundary" }, this._area, this._messages),
      this._amend,
      this._list,
      this._legend,
      this._entry,
    );
    this.replaceChildren(
      h("div", { class: "rl-wrap" }, this._toolbar, drawHelp, h("div", { class: "rl-body" }, h("div", { class: "rl-mapbox" }, this._mapEl, this._viewNote), this._panel), this._status),
    );
    this._drawHelp = drawHelp;
    this.dataset.state = "empty";
  }

  _buildAmendForm(id) {
    this._diffText = h("dl", { class: "rl-diff" });
    this._reason = h("textarea", { id: id("reason"), rows: 3, required: true });
    this._amendIntro = h("p", {});
    return h(
      "form",
      { class: "rl-amend", hidden: true, onsubmit: (e) => (e.preventDefault(), this._sendChangeRequest()) },
      h("h3", {}, "Propose an amendment"),
      this._amendIntro,
      this._diffText,
      h("label", { for: id("reason") }, "Reason for the change (the applicant sees it)"),
      this._reason,
      h("button", { type: "submit", class: "rl-button rl-primary" }, "Send change request"),
    );
  }

  _initMap(L) {
    this.L = L;
    const [lon, lat] = (this.getAttribute("centre") || "-1.6,52.9").split(",").map(Number);
    const zoom = Number(this.getAttribute("zoom") || (this.hasAttribute("centre") ? 16 : 6));
    const map = (this._map = L.map(this._mapEl, { center: [lat, lon], zoom, maxZoom: 22, keyboard: true, zoomSnap: 0.5 }));
    L.control.scale({ imperial: false }).addTo(map);
    const tiles = this.getAttribute("tiles");
    if (tiles) L.tileLayer(tiles, { maxZoom: 22, maxNativeZoom: 19, attribution: this.getAttribute("tiles-attribution") || "" }).addTo(map);
    else this._loadBasemap(L, map);
    this._background = L.layerGroup().addTo(map);
    this._overlays = L.layerGroup().addTo(map);
    this._amendLayers = L.layerGroup().addTo(map);
    map.pm.setGlobalOptions({ snappable: true, snapDistance: 15, allowSelfIntersection: true });
    map.on("pm:create", (e) => {
      const feature = featureOfLayer(e.layer);
      e.layer.remove();
      this._drawing = false;
      this._showDrawingButtons();
      this._commit(feature, { source: "draw" });
    });
    map.on("pm:drawstart", () => {
      this._drawing = true;
      this._showDrawingButtons();
      this.dataset.state = "drawing";
      this._announce("Drawing: click the map to add corners; click the first corner or Finish shape to close the boundary. Escape cancels.");
    });
    map.on("pm:drawend", () => {
      this._drawing = false;
      this._showDrawingButtons();
      if (this.dataset.state === "drawing") this.dataset.state = this._feature ? this._settledState() : "empty";
    });
    map.on("moveend", () => this._scheduleBackground());
    this._mapEl.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this._drawing) map.pm.disableDraw();
    });
    this._applyMode();
    this._resolveReady();
    this._scheduleBackground();
    if (this._feature) this._render({ fit: true });
    const boundary = this.getAttribute("boundary");
    if (boundary) this._loadBoundary(boundary);
  }

  /** The service's own background map (GET widget/basemap.json): an archive or a key-holding proxy. */
  async _loadBasemap(L, map) {
    let config;
    try {
      const res = await fetch(new URL("widget/basemap.json", this.api));
      config = res.ok ? await res.json() : { configured: false, help: `the service answered HTTP ${res.status}` };
    } catch (err) {
      config = { configured: false, help: err.message };
    }
    this.basemap = config;
    if (config.configured && config.tiles?.length) {
      // Not new URL(): it would percent-encode the {z}/{x}/{y} placeholders.
      const template = config.tiles[0].startsWith("/") ? this.api + config.tiles[0].slice(1) : config.tiles[0];
      L.tileLayer(template, { minZoom: config.minzoom ?? 0, maxNativeZoom: config.maxzoom ?? 19, maxZoom: 22, attribution: config.attribution || "", className: "rl-basemap" }).addTo(map);
    }
    this.dataset.basemap = config.configured ? "on" : "off";
    this._dispatch("basemap", config);
  }

  _applyMode() {
    const mode = this.mode;
    const editable = mode !== "view";
    this._toolbar.hidden = !editable;
    this._drawHelp.hidden = !editable;
    this._entry.hidden = !editable;
    this._amend.hidden = mode !== "amend";
    this._buttons.draw.hidden = mode === "amend";
    this._buttons.clear.hidden = mode === "amend";
    this._drawHelp.textContent =
      mode === "amend"
        ? "Drag a corner of the dashed proposal to move it, right-click a corner to delete it, drag a midpoint to add one; it snaps to the current boundary and the constraint features shown."
        : "Click the map to add corners; click the first corner (or Finish shape) to close it. Drag a corner to move it, right-click a corner to delete it, drag a midpoint to add one. The line snaps to the constraint features shown.";
    this._render({});
  }

  _settledState() {
    if (!this._feature) return "empty";
    if (!this._validation) return "validating";
    return this._validation.valid ? (this._answer ? "checked" : "checking") : "invalid";
  }

  // Tools -----------------------------------------------------------------------------------------------
  startDrawing() {
    if (!this._map || this.mode !== "draw") return;
    this._map.pm.enableDraw("Polygon", { snappable: true, snapDistance: 15, allowSelfIntersection: true });
    this._mapEl.focus();
  }
  _finishDrawing() {
    const draw = this._map?.pm.Draw.Polygon;
    if (draw && typeof draw._finishShape === "function") draw._finishShape();
  }
  _showDrawingButtons() {
    this._buttons.finish.hidden = !this._drawing;
    this._buttons.draw.disabled = this._drawing;
  }
  undo() {
    if (this._drawing) {
      const draw = this._map.pm.Draw.Polygon;
      if (draw._layer && draw._layer.getLatLngs().length > 1 && typeof draw._removeLastVertex === "function") {
        draw._removeLastVertex();
        this._announce("Removed the last corner.");
      } else this._map.pm.disableDraw();
      return;
    }
    if (!this._history.length) {
      this._announce("Nothing to undo.");
      return;
    }
    const previous = this._history.pop();
    this._commit(previous ? JSON.parse(previous) : null, { source: "undo", record: false, fit: false });
  }
  clear() {
    if (this._drawing) this._map.pm.disableDraw();
    if (!this._feature) return;
    this._commit(null, { source: "clear" });
  }

  // The one path every change takes: drawing, editing, typing, uploading, undo, and setting `value`.
  _commit(feature, { source, record = true, fit = false, render = true }) {
    if (record && (this._feature || feature)) this._history.push(this._feature ? JSON.stringify(this._feature) : null);
    this._feature = feature;
    if (document.activeElement !== this._coords) this._coords.value = coordinatesText(feature);
    // An edit on the map already shows the new shape; redrawing would drop geoman's edit handles mid-gesture.
    if (render) this._render({ fit });
    this._update(source);
  }

  // Map rendering ----------------------------------------------------------------------------------------
  _render({ fit }) {
    const L = this.L;
    if (!this._map) return;
    if (this._siteLayer) {
      this._siteLayer.remove();
      this._siteLayer = null;
    }
    if (!this._feature) return;
    const amend = this.mode === "amend";
    const layer = L.polygon(latLngsOf(this._feature.geometry), {
      color: amend ? AMEND.proposed : AMEND.current,
      weight: 3,
      dashArray: amend ? "8 6" : null,
      fillOpacity: amend ? 0.05 : 0.1,
      className: "rl-site",
    }).addTo(this._map);
    layer.bindTooltip(amend ? "Proposed boundary" : "Site boundary", { sticky: true });
    if (this.mode !== "view") {
      layer.pm.enable({ allowSelfIntersection: true, snappable: true, snapDistance: 15, removeVertexOn: "contextmenu", draggable: false });
      layer.on("pm:edit", () => this._commit(featureOfLayer(layer), { source: "edit", render: false }));
    }
    this._siteLayer = layer;
    if (fit) this._map.fitBounds(layer.getBounds(), { padding: [40, 40], maxZoom: 19 });
  }

  _scheduleBackground() {
    clearTimeout(this._viewTimer);
    this._viewTimer = setTimeout(() => this._loadBackground(), VIEW_DELAY_MS);
  }

  async _loadBackground() {
    const b = this._map.getBounds();
    const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(6)).join(",");
    const seq = (this._viewSeq = (this._viewSeq || 0) + 1);
    let data;
    try {
      const res = await this._fetch(`widget/features?bbox=${bbox}`);
      if (!res.ok) {
        const p = await this._problem(res);
        if (p.auth && seq === this._viewSeq) this._viewNote.textContent = `Constraint features are not shown: ${p.message}`;
        return;
      }
      data = await res.json();
    } catch {
      return;
    }
    if (seq !== this._viewSeq) return;
    const L = this.L;
    this._background.clearLayers();
    L.geoJSON(data, {
      interactive: false,
      style: () => ({ color: "#505a5f", weight: 1, fillOpacity: 0.04, interactive: false, className: "rl-feature" }),
      pointToLayer: (_f, latlng) => L.circleMarker(latlng, { radius: 3, color: "#505a5f", weight: 1, fillOpacity: 0.6, interactive: false, className: "rl-feature" }),
    }).eachLayer((layer) => this._background.addLayer(layer));
    const n = data.features.length;
    const note = data.properties?.zoom_in
      ? "Zoom in to see the constraint layers (and snap to them)."
      : `${n} constraint feature${n === 1 ? "" : "s"} shown in grey${data.properties?.truncated ? " (the first ones only: zoom in for all)" : ""}; drawing snaps to them.`;
    this._viewNote.textContent = note;
    this.dataset.features = String(n);
  }

  // Talking to the service ------------------------------------------------------------------------------
  _fetch(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = this.apiKey || this.getAttribute("api-key");
    if (key) headers.set("Authorization", `Bearer ${key}`);
    return fetch(new URL(path, this.api), { ...options, headers });
  }
  _postJSON(path, body, signal) {
    return this._fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal });
  }
  /** The service's problem+json as {status, message, problem, auth}; auth: the key was missing or refused. */
  async _problem(res) {
    const auth = res.status === 401 || res.status === 403;
    try {
      const body = await res.json();
      return { status: res.status, auth, message: body.detail || body.title || `HTTP ${res.status}`, problem: body };
    } catch {
      return { status: res.status, auth, message: `the service answered HTTP ${res.status}` };
    }
  }

  async _update(source) {
    const seq = ++this._seq;
    clearTimeout(this._checkTimer);
    this._checkAbort?.abort();
    this._answer = null;
    this._validation = null;
    this._clearConstraints();
    this._amendLayers?.clearLayers();
    delete this.dataset.diff;
    if (!this._feature) {
      this.dataset.state = "empty";
      this._area.textContent = "No boundary yet.";
      this._messages.replaceChildren();
      this._dispatch("boundarychange", { feature: null, area_m2: null, area_ha: null, validation: null, source });
      this._announce("Boundary cleared.");
      return;
    }
    this.dataset.state = "validating";
    const feature = this._feature;
    let validation;
    try {
      const res = await this._postJSON("v1/validate", feature);
      if (res.ok) {
        const body = await res.json();
        validation = { ...body, valid: body.valid !== false };
      } else validation = { valid: false, ...(await this._problem(res)) };
      if (validation.auth) validation.valid = null; // unknown: the service would not say
    } catch (err) {
      validation = { valid: false, message: `the service could not be reached (${err.message})` };
    }
    if (seq !== this._seq) return;
    this._validation = validation;
    this._showValidation(validation);
    this._dispatch("boundarychange", {
      feature: structuredClone(feature),
      area_m2: validation.valid ? validation.area_m2 : null,
      area_ha: validation.valid ? validation.area_ha : null,
      validation,
      source,
    });
    if (validation.auth) {
      this.dataset.state = "unauthorised";
      return;
    }
    if (!validation.valid) {
      this.dataset.state = "invalid";
      return;
    }
    this.dataset.state = "checking";
    if (this.mode === "amend") this._showDiff(seq);
    this._checkTimer = setTimeout(() => this._check(seq, feature), CHECK_DELAY_MS);
  }

  _showValidation(v) {
    const items = [];
    if (v.valid) {
      this._area.textContent = `Area ${areaText(v.area_m2)}${v.perimeter_m != null ? `, perimeter ${m2.format(v.perimeter_m)} m` : ""}${v.grid_reference ? `, centred at ${v.grid_reference}` : ""}.`;
      for (const w of v.warnings || []) items.push(h("li", { class: "rl-warning" }, h("strong", {}, "Warning: "), w));
      this._announce(`Boundary area ${areaText(v.area_m2)}. Checking constraints.${v.warnings?.length ? ` ${v.warnings.length} warning(s): ${v.warnings.join(" ")}` : ""}`);
    } else if (v.auth) {
      // A refused key says nothing about the boundary: never report it as an invalid one.
      this._area.textContent = "Area: not measured (the service did not accept this page's API key).";
      const said = /[.!?]$/.test(v.message) ? v.message : `${v.message}.`;
      const text = `Not authorised: ${said}${v.status === 401 ? " Give the page an API key (the api-key attribute or the apiKey property)." : ""}`;
      items.push(h("li", { class: "rl-error rl-auth" }, text));
      this._announce(text, "error");
    } else {
      this._area.textContent = "Area: not measured until the boundary is valid.";
      items.push(h("li", { class: "rl-error" }, h("strong", {}, "The boundary is not valid: "), v.message));
      for (const e of v.problem?.errors || []) {
        if (e.detail && e.detail !== v.message) items.push(h("li", { class: "rl-error" }, e.detail));
      }
      this._announce(`The boundary is not valid: ${v.message}`, "error");
    }
    this._messages.replaceChildren(...items);
  }

  async _check(seq, feature) {
    const abort = (this._checkAbort = new AbortController());
    let answer;
    try {
      const res = await this._postJSON("v1/check", feature, abort.signal);
      if (!res.ok) {
        const p = await this._problem(res);
        if (seq !== this._seq) return;
        this.dataset.state = p.auth ? "unauthorised" : "error";
        const text = p.auth ? `The constraints were not checked: not authorised: ${p.message}` : `The constraints check failed: ${p.message}`;
        this._list.replaceChildren(h("p", { class: `rl-error${p.auth ? " rl-auth" : ""}` }, text));
        this._announce(text, "error");
        return;
      }
      answer = await res.json();
    } catch (err) {
      if (err.name === "AbortError" || seq !== this._seq) return;
      this.dataset.state = "error";
      this._announce(`The constraints check failed: ${err.message}`, "error");
      return;
    }
    if (seq !== this._seq) return;
    this._answer = answer;
    this._showConstraints(answer);
    this.dataset.state = "checked";
    this._dispatch("constraintschange", answer);
    this._loadOverlays(seq, feature, answer);
  }

  _clearConstraints() {
    this._list.replaceChildren();
    this._overlays?.clearLayers();
    delete this.dataset.overlays;
  }

  _dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  _announce(text, kind = "info") {
    // Replace the text so screen readers read the new message once (aria-atomic).
    this._status.textContent = text;
    this._status.dataset.kind = kind;
  }

  // Constraints: list and overlays ---------------------------------------------------------------------
  _entityLine(e, nearby) {
    const label = e.name || e.reference || `entity ${e.entity}`;
    // Fields the answer leaves null (no relation for a live entity, no overlap for a point) are left out, never printed.
    const parts = [RELATIONS[e.relation] || e.relation];
    if (e.overlap_m2 > 0 && e.overlap_pct != null) parts.push(`${pct.format(e.overlap_pct)}% of the site (${m2.format(e.overlap_m2)} m²)`);
    const said = parts.filter((p) => p != null && p !== "");
    return h("li", { "data-dataset": e.dataset, class: nearby ? "rl-nearby" : null }, h("span", { class: "rl-name" }, label), ` (${e.dataset})${said.length ? `: ${said.join(", ")}` : ""}`);
  }

  _showConstraints(answer) {
    const items = answer.constraints || [];
    const applies = items.filter((c) => c.status === "intersects");
    const nearby = items.filter((c) => (c.nearby || []).length && c.status !== "intersects");
    const unknown = items.filter((c) => c.status === "unknown");
    const clear = items.filter((c) => c.status === "clear" && !(c.nearby || []).length);
    const swatch = (c) => h("span", { class: "rl-swatch", style: `background:${COLOURS[c.category] || "#505a5f"}`, "aria-hidden": "true" });
    const section = (title, cls, list, render) =>
      list.length ? h("section", { class: cls }, h("h4", {}, title), h("ul", {}, list.map(render))) : null;
    // Through h(): it drops the sections that are empty (null), where replaceChildren would print "null".
    this._list.replaceChildren(
      ...h("div", {},
      h("h3", {}, "Planning constraints"),
      h("p", { class: "rl-summary" }, `${applies.length} apply, ${nearby.length} nearby only, ${unknown.length} not checked, ${clear.length} clear.`),
      section("Apply to this site", "rl-applies", applies, (c) =>
        h("li", { "data-key": c.key }, swatch(c), h("strong", {}, c.text || c.key), c.category ? ` — ${c.category} (${c.key})` : ` (${c.key})`, h("ul", {}, (c.entities || []).map((e) => this._entityLine(e, false)))),
      ),
      section("Nearby: touching or a sliver overlap, so they do not apply (dashed on the map)", "rl-nearby-list", nearby, (c) =>
        h("li", { "data-key": c.key }, h("strong", {}, c.key), h("ul", {}, c.nearby.map((e) => this._entityLine(e, true)))),
      ),
      section("Not checked (no data loaded: these are not 'clear')", "rl-unknown", unknown, (c) => h("li", { "data-key": c.key }, h("strong", {}, c.key), `: ${c.reason || "not checked"}`)),
      clear.length
        ? h("details", { class: "rl-clear" }, h("summary", {}, `Clear (${clear.length})`), h("ul", {}, clear.map((c) => h("li", { "data-key": c.key }, c.text || c.key))))
        : null,
      ).childNodes,
    );
    const named = (c) => {
      const names = (c.entities || []).map((e) => e.name || e.reference).filter(Boolean);
      const shown = names.slice(0, 3).join(", ") + (names.length > 3 ? ` and ${names.length - 3} more` : "");
      return `${c.text || c.key}${shown ? `: ${shown}` : ""}`;
    };
    const names = applies.filter((c) => c.key !== "designated").map(named);
    this._announce(
      applies.length
        ? `Constraints checked: ${applies.length} apply (${names.join("; ")}).${nearby.length ? ` ${nearby.length} nearby only.` : ""}`
        : `Constraints checked: none apply.${nearby.length ? ` ${nearby.length} nearby only.` : ""}${unknown.length ? ` ${unknown.length} not checked.` : ""}`,
    );
    this._legend.replaceChildren(
      h("h4", {}, "Key"),
      h(
        "ul",
        {},
        this.mode === "amend"
          ? h("li", {}, h("span", { class: "rl-line", style: `border-color:${AMEND.current}`, "aria-hidden": "true" }), "Solid red line: the current boundary")
          : null,
        h("li", {}, h("span", { class: `rl-line${this.mode === "amend" ? " rl-dashed" : ""}`, style: `border-color:${this.mode === "amend" ? AMEND.proposed : AMEND.current}`, "aria-hidden": "true" }), this.mode === "amend" ? "Dashed blue line: the proposed boundary" : "Red line: the site boundary"),
        ...[...new Set(applies.map((c) => c.category))].map((cat) =>
          h("li", {}, h("span", { class: "rl-swatch", style: `background:${COLOURS[cat] || "#505a5f"}`, "aria-hidden": "true" }), `Shaded and labelled: ${cat} constraints that apply`),
        ),
        nearby.length ? h("li", {}, h("span", { class: "rl-line rl-dashed", "aria-hidden": "true" }), "Grey dashed outline, label starting 'Nearby': touching only") : null,
        h("li", {}, h("span", { class: "rl-line rl-thin", "aria-hidden": "true" }), "Thin grey: other constraint features in view"),
      ),
    );
  }

  async _loadOverlays(seq, feature, answer) {
    const listed = (answer.constraints || []).some((c) => (c.status === "intersects" && c.key !== "designated" && c.entities?.length) || c.nearby?.length);
    if (!listed) {
      this.dataset.overlays = "0";
      return;
    }
    let data;
    try {
      // The service re-runs the check and sends the entities' geometry: their ids can exceed a JS number.
      const res = await this._postJSON("widget/overlays", { site: feature });
      if (!res.ok) throw new Error((await this._problem(res)).message);
      data = await res.json();
    } catch (err) {
      if (seq === this._seq) this._announce(`The constraint overlays could not be drawn: ${err.message}`, "error");
      return;
    }
    if (seq !== this._seq) return;
    const L = this.L;
    this._overlays.clearLayers();
    // Entities clipped to the same box (an AONB and a green belt around a small site) share a centre:
    // stack their labels rather than print one over the other.
    const slots = new Map();
    // Areas first, then points: a terrace of listed buildings would otherwise bury the conservation area.
    const rank = (f) => (f.geometry?.type === "Point" ? 2 : 0) + (f.properties.status === "nearby" ? 1 : 0);
    const labelled = new Set([...data.features].sort((a, b) => rank(a) - rank(b)).slice(0, MAX_LABELS));
    for (const f of data.features) {
      const isNear = f.properties.status === "nearby";
      const colour = isNear ? "#505a5f" : COLOURS[f.properties.category] || "#505a5f";
      const kind = isNear ? "rl-overlay rl-overlay-nearby" : "rl-overlay rl-overlay-applies";
      const style = isNear
        ? { color: colour, weight: 2, dashArray: "4 6", fillOpacity: 0, className: kind }
        : { color: colour, weight: 2, fillColor: colour, fillOpacity: 0.25, className: kind };
      const layer = L.geoJSON(f, {
        interactive: false,
        style: () => ({ ...style, interactive: false }),
        pointToLayer: (_f, latlng) => L.circleMarker(latlng, { ...style, radius: 6, fillOpacity: isNear ? 0 : 0.8, interactive: false }),
      });
      const name = f.properties.name || f.properties.reference || `entity ${f.properties.entity}`;
      const text = `${isNear ? "Nearby: " : ""}${name} (${f.properties.dataset})`;
      if (labelled.has(f)) {
        const point = f.geometry?.type === "Point";
        const at = f.properties.label ? L.latLng(f.properties.label[1], f.properties.label[0]) : layer.getBounds().getCenter();
        const slot = `${at.lat.toFixed(5)},${at.lng.toFixed(5)}`;
        const stacked = slots.get(slot) || 0;
        slots.set(slot, stacked + 1);
        L.tooltip({
          permanent: true,
          direction: point ? "right" : "center",
          offset: point ? [8, 22 * stacked] : [0, 22 * stacked],
          className: `rl-label${isNear ? " rl-label-nearby" : ""}`,
          opacity: 0.9,
        })
          .setLatLng(at)
          .setContent(h("span", {}, text)) // a node, not a string: Leaflet would read a string as HTML
          .addTo(this._overlays);
      }
      layer.addTo(this._overlays);
    }
    this._siteLayer?.bringToFront();
    if (data.features.length > MAX_LABELS) {
      this._viewNote.textContent = `${data.features.length} constraint features meet the site; the map labels ${MAX_LABELS} of them (areas first) and the list names them all.`;
    }
    this.dataset.overlays = String(data.features.length);
  }

  // Boundaries stored in the service (amend and view) --------------------------------------------------
  async _loadBoundary(id) {
    this._announce(`Loading boundary ${id}.`);
    let view;
    try {
      const res = await this._fetch(`v1/boundaries/${encodeURIComponent(id)}`);
      if (!res.ok) throw new Error((await this._problem(res)).message);
      view = await res.json();
    } catch (err) {
      this.dataset.state = "error";
      this._announce(`Boundary ${id} could not be loaded: ${err.message}`, "error");
      this._messages.replaceChildren(h("li", { class: "rl-error" }, `Boundary ${id} could not be loaded: ${err.message}`));
      return;
    }
    this._boundaryView = view;
    this._current = toFeature(view.site);
    this._history = [];
    this._showCurrent();
    this._commit(toFeature(view.site), { source: "load", record: false, fit: true });
  }

  _showCurrent() {
    const L = this.L;
    this._currentLayer?.remove();
    if (this.mode !== "amend" || !this._current) return;
    const v = this._boundaryView;
    this._currentLayer = L.polygon(latLngsOf(this._current.geometry), { color: AMEND.current, weight: 3, fill: false, interactive: false, className: "rl-current" })
      .bindTooltip(`Current boundary, version ${v.version}`, { sticky: false })
      .addTo(this._map);
    this._amendIntro.textContent = `Boundary ${v.reference ? `for ${v.reference} ` : ""}version ${v.version}, ${areaText(v.area_m2)}. The current boundary is the solid red line; your proposal is the dashed blue line: edit it on the map or with coordinates.`;
  }

  async _showDiff(seq) {
    if (!this._current || !this._feature) return;
    let diff;
    try {
      const res = await this._postJSON("widget/diff", { current: this._current, proposed: this._feature });
      if (!res.ok) throw new Error((await this._problem(res)).message);
      diff = await res.json();
    } catch (err) {
      if (seq === this._seq) this._announce(`The change could not be measured: ${err.message}`, "error");
      return;
    }
    if (seq !== this._seq) return;
    const L = this.L;
    this._amendLayers.clearLayers();
    const area = (geometry, colour, label, cls) => {
      if (!geometry) return;
      L.geoJSON(geometry, { interactive: false, style: () => ({ color: colour, weight: 1, fillColor: colour, fillOpacity: 0.45, dashArray: cls === "rl-removed" ? "3 4" : null, className: cls }) })
        .bindTooltip(label, { permanent: true, direction: "center", className: "rl-label" })
        .addTo(this._amendLayers);
    };
    area(diff.added, AMEND.added, `Added ${m2.format(diff.area_added_m2)} m²`, "rl-added");
    area(diff.removed, AMEND.removed, `Removed ${m2.format(diff.area_removed_m2)} m²`, "rl-removed");
    const row = (term, colour, text) => [h("dt", {}, h("span", { class: "rl-swatch", style: `background:${colour}`, "aria-hidden": "true" }), term), h("dd", {}, text)];
    this._diffText.replaceChildren(
      ...row("Area added (green, solid edge)", AMEND.added, `${areaText(diff.area_added_m2)}`),
      ...row("Area removed (orange, dashed edge)", AMEND.removed, `${areaText(diff.area_removed_m2)}`),
    );
    this._currentLayer?.bringToFront();
    this._siteLayer?.bringToFront();
    this.dataset.diff = diff.added || diff.removed ? "changed" : "unchanged";
    this._diff = diff;
  }

  async _sendChangeRequest() {
    const reason = this._reason.value.trim();
    if (!reason) {
      this._announce("Give a reason for the change: the applicant sees it.", "error");
      this._reason.focus();
      return;
    }
    if (!this._validation?.valid) {
      this._announce("The proposed boundary is not valid yet; correct it before sending.", "error");
      return;
    }
    const id = this._boundaryView?.id || this.getAttribute("boundary");
    try {
      const res = await this._postJSON(`v1/boundaries/${encodeURIComponent(id)}/change-requests`, {
        site: this._feature,
        reason,
        base_version: this._boundaryView?.version,
      });
      if (!res.ok) throw new Error((await this._problem(res)).message);
      const sent = await res.json();
      this._dispatch("changerequest", sent);
      this.dataset.changeRequest = sent.id;
      this._announce(`Change request sent (${sent.state}): ${areaText(sent.area_added_m2)} added, ${areaText(sent.area_removed_m2)} removed. The applicant must approve it.`);
    } catch (err) {
      this._announce(`The change request was not sent: ${err.message}`, "error");
    }
  }

  // Keyboard and file entry ----------------------------------------------------------------------------
  async _useCoordinates() {
    try {
      const res = await this._postJSON("widget/coordinates", { text: this._coords.value });
      if (!res.ok) throw new Error((await this._problem(res)).message);
      const feature = toFeature(await res.json());
      feature.properties = {};
      this._commit(feature, { source: "coordinates", fit: true });
    } catch (err) {
      this._messages.replaceChildren(h("li", { class: "rl-error" }, `Coordinates not used: ${err.message}`));
      this._announce(`Coordinates not used: ${err.message}`, "error");
    }
  }

  async _uploadFile() {
    const file = this._file.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const res = await this._fetch("widget/upload", { method: "POST", body: form });
      if (!res.ok) throw new Error((await this._problem(res)).message);
      const body = await res.json();
      const feature = toFeature(body.geometry);
      this._commit(feature, { source: "upload", fit: true });
      if (body.properties?.warnings?.length) this._announce(`${file.name}: ${body.properties.warnings.join(" ")}`);
    } catch (err) {
      this._messages.replaceChildren(h("li", { class: "rl-error" }, `${file.name} could not be used: ${err.message}`));
      this._announce(`${file.name} could not be used: ${err.message}`, "error");
    }
  }
}

const CSS = `
redline-map { display: block; font-family: system-ui, sans-serif; color: #0b0c0c; }
redline-map .rl-body { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
redline-map .rl-mapbox { flex: 2 1 420px; min-width: 0; }
redline-map .rl-map { height: var(--redline-map-height, 480px); background: #f3f2f1; border: 1px solid #b1b4b6; }
redline-map .rl-panel { flex: 1 1 300px; min-width: 260px; max-height: var(--redline-panel-height, 640px); overflow: auto; }
redline-map .rl-toolbar { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 8px; }
redline-map .rl-button { min-height: 36px; min-width: 44px; padding: 6px 12px; font: inherit; border: 2px solid #0b0c0c; background: #fff; color: #0b0c0c; border-radius: 0; cursor: pointer; }
redline-map .rl-button:disabled { color: #505a5f; border-color: #b1b4b6; cursor: default; }
redline-map .rl-primary { background: #00703c; color: #fff; border-color: #002d18; }
redline-map :focus-visible, redline-map .leaflet-container:focus-visible { outline: 3px solid #ffdd00 !important; outline-offset: 0; box-shadow: 0 0 0 6px #0b0c0c !important; }
redline-map .rl-help, redline-map .rl-note { color: #505a5f; font-size: 0.9em; margin: 4px 0; }
redline-map .rl-area { font-weight: 600; }
redline-map .rl-messages { padding-left: 1.2em; }
redline-map .rl-error { color: #d4351c; }
redline-map .rl-warning { color: #594d00; }
redline-map textarea { width: 100%; box-sizing: border-box; font-family: ui-monospace, monospace; border: 2px solid #0b0c0c; }
redline-map label { display: block; font-weight: 600; margin-top: 8px; }
redline-map .rl-swatch { display: inline-block; width: 1em; height: 1em; margin-right: 6px; vertical-align: -2px; border: 1px solid #0b0c0c; }
redline-map .rl-line { display: inline-block; width: 1.6em; height: 0; margin-right: 6px; vertical-align: middle; border-top: 3px solid #505a5f; }
redline-map .rl-line.rl-dashed { border-top-style: dashed; }
redline-map .rl-line.rl-thin { border-top-width: 1px; }
redline-map .rl-legend ul, redline-map .rl-constraints ul { padding-left: 1.2em; }
redline-map .rl-legend > ul, redline-map .rl-constraints section > ul { list-style: none; padding-left: 0; }
redline-map .rl-nearby { font-style: italic; }
redline-map .rl-status { margin-top: 8px; padding: 6px 8px; border-left: 4px solid #1d70b8; background: #f3f2f1; min-height: 1.4em; }
redline-map .rl-status[data-kind=error] { border-left-color: #d4351c; }
redline-map .rl-diff dt { font-weight: 600; }
redline-map .rl-diff dd { margin: 0 0 6px 1.6em; }
redline-map .leaflet-tooltip.rl-label { background: rgba(255,255,255,0.92); border: 1px solid #0b0c0c; color: #0b0c0c; font-size: 12px; padding: 1px 4px; box-shadow: none; }
redline-map .leaflet-tooltip.rl-label-nearby { font-style: italic; border-style: dashed; }
`;

if (!customElements.get("redline-map")) customElements.define("redline-map", RedlineMap);
