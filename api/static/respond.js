// The applicant's page for one change request: /respond/{id}#token=...
//
// The token is the credential. It travels in the URL fragment, which browsers never send to a server (so it
// stays out of access logs) nor put in a Referer; the page moves it to sessionStorage and takes it out of the
// address bar at once, so a reload still works and a copied address does not carry it.
// Everything the map shows is also written out as text (areas, constraints), for screen readers.

const page = document.getElementById("page");
const requestId = page.dataset.request;
const statusBox = document.getElementById("status");
const AMEND = { current: "#d4351c", proposed: "#1d70b8", added: "#00703c", removed: "#f47738" };
const m2 = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });
const ha = new Intl.NumberFormat("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
const areaText = (a) => `${m2.format(a)} m² (${ha.format(a / 10000)} ha)`;
const when = (iso) =>
  new Date(iso).toLocaleString("en-GB", { timeZone: "Europe/London", dateStyle: "full", timeStyle: "short" });

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, v);
  node.append(...children.filter((c) => c != null));
  return node;
}

function token() {
  const key = `redline-token-${requestId}`;
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) {
    sessionStorage.setItem(key, fromLink);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return fromLink || sessionStorage.getItem(key);
}

function say(kind, heading, ...lines) {
  page.dataset.state = kind;
  statusBox.replaceChildren(
    el("div", { class: `notice ${kind === "error" || kind === "expired" || kind === "denied" ? "error" : kind === "done" ? "done" : ""}` },
      el("h2", { id: "status-heading", tabindex: "-1" }, heading),
      ...lines.map((line) => el("p", {}, line)),
    ),
  );
}

async function call(path, tokenValue, body) {
  const options = { headers: { Authorization: `Bearer ${tokenValue}` } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const res = await fetch(`/v1/change-requests/${encodeURIComponent(requestId)}${path}`, options);
  let json = null;
  try {
    json = await res.json();
  } catch {
    json = null;
  }
  return { res, json };
}

function refusal(res, problem) {
  const detail = problem?.detail || `the service answered HTTP ${res.status}`;
  if (res.status === 401 && String(problem?.type || "").endsWith("/link-expired")) {
    say("expired", "This link has expired", "The link in your email only works for a limited time, and that time has passed.", "Contact the planning officer who emailed you: they can send a new request.");
  } else if (res.status === 401 || res.status === 403) {
    say("denied", "This link does not open the request", "Check that you used the whole link from the email (it is long).", `The service said: ${detail}`);
  } else if (res.status === 404) {
    say("denied", "There is no such request", detail);
  } else {
    say("error", "Something went wrong", `The service said: ${detail}`, "Try again in a minute.");
  }
}

const CLOSED = {
  approved: (cr) => ["You approved this change", `It was approved on ${when(cr.decided_at)}. The proposed boundary is now your site's boundary (version ${cr.result_version}).`],
  auto_approved: (cr) => ["This change was approved automatically", `No answer was given by the deadline, so it was approved on ${when(cr.decided_at)}. The proposed boundary is now your site's boundary (version ${cr.result_version}).`],
  rejected: (cr) => ["You rejected this change", `It was rejected on ${when(cr.decided_at)}${cr.decision_reason ? ` with the reason: “${cr.decision_reason}”` : ""}. Your boundary has not changed.`],
  cancelled: (cr) => ["The planning officer withdrew this change", `It was cancelled on ${when(cr.decided_at)}${cr.decision_reason ? `: “${cr.decision_reason}”` : ""}. Your boundary has not changed and there is nothing to do.`],
  expired: (cr) => ["This request has expired", `Nobody answered it by ${when(cr.token_expires_at)}. Your boundary has not changed; contact the planning officer if it should.`],
};

function constraintItems(list, answer, empty) {
  const text = new Map((answer?.constraints || []).map((c) => [c.key, c.text]));
  if (!list.length) return [el("li", {}, empty)];
  return list.map((c) => {
    const names = (c.entities || []).map((e) => e.name || e.reference).filter(Boolean);
    return el("li", { "data-key": c.key }, el("strong", {}, text.get(c.key) || c.key), names.length ? `: ${names.join(", ")}` : "");
  });
}

function showFacts(cr) {
  document.getElementById("reason").textContent = cr.reason;
  document.getElementById("deadline").textContent =
    cr.state === "open"
      ? cr.auto_approval_due_at
        ? `Please answer by ${when(cr.auto_approval_due_at)}. If you do not answer by then, the change is approved automatically.`
        : `Please answer by ${when(cr.token_expires_at)}, when this link stops working.`
      : "";
  const row = (term, value, swatch) => [el("dt", {}, swatch || "", term), el("dd", {}, value)];
  const swatch = (colour) => el("span", { class: "area", style: `background:${colour}`, "aria-hidden": "true" });
  document.getElementById("facts").replaceChildren(
    ...row("Current boundary", `${areaText(cr.original_area_m2)} (version ${cr.base_version})`),
    ...row("Proposed boundary", areaText(cr.proposed_area_m2)),
    ...row("Land added", cr.area_added_m2 > 0 ? areaText(cr.area_added_m2) : "none", swatch(AMEND.added)),
    ...row("Land removed", cr.area_removed_m2 > 0 ? areaText(cr.area_removed_m2) : "none", swatch(AMEND.removed)),
  );
  document.getElementById("gained").replaceChildren(...constraintItems(cr.constraints_gained || [], cr.constraints, "None: the proposal adds no planning constraint."));
  document.getElementById("lost").replaceChildren(...constraintItems(cr.constraints_lost || [], cr.constraints, "None: every constraint that applied still applies."));
}

async function basemap(L, map) {
  try {
    const res = await fetch("/widget/basemap.json");
    if (!res.ok) return;
    const config = await res.json();
    if (!config.tiles?.length) return;
    L.tileLayer(config.tiles[0], { minZoom: config.minzoom ?? 0, maxNativeZoom: config.maxzoom ?? 19, maxZoom: 22, attribution: config.attribution || "" }).addTo(map);
    document.getElementById("attribution").textContent = config.attribution ? `Background map: ${config.attribution.replace(/<[^>]*>/g, "")}` : "";
  } catch {
    // No background map: the boundaries still show on the plain map.
  }
}

function showMap(cr) {
  const L = window.L;
  const map = L.map("map", { keyboard: true, zoomSnap: 0.5, maxZoom: 22 });
  L.control.scale({ imperial: false }).addTo(map);
  basemap(L, map);
  const style = (colour, extra = {}) => ({ color: colour, weight: 3, fill: false, interactive: false, ...extra });
  const area = (geometry, colour, cls) =>
    geometry && L.geoJSON(geometry, { interactive: false, style: () => ({ color: colour, weight: 1, fillColor: colour, fillOpacity: 0.45, className: cls }) }).addTo(map);
  area(cr.added, AMEND.added, "rl-added");
  area(cr.removed, AMEND.removed, "rl-removed");
  const current = L.geoJSON(cr.original, { style: () => style(AMEND.current, { className: "rl-current" }) }).addTo(map);
  const proposed = L.geoJSON(cr.proposed, { style: () => style(AMEND.proposed, { dashArray: "8 6", className: "rl-proposed" }) }).addTo(map);
  map.fitBounds(current.getBounds().extend(proposed.getBounds()), { padding: [30, 30], maxZoom: 19 });
  document.getElementById("map-summary").textContent = (
    `In words: the current boundary (${areaText(cr.original_area_m2)}) in solid red and the proposed boundary (${areaText(cr.proposed_area_m2)}) in dashed blue; ${cr.area_added_m2 > 0 ? `${areaText(cr.area_added_m2)} added in green` : "no land added"}, ${cr.area_removed_m2 > 0 ? `${areaText(cr.area_removed_m2)} removed in orange` : "no land removed"}.`
  );
}

function showState(cr) {
  const answer = document.getElementById("answer");
  if (cr.state === "open") {
    answer.hidden = false;
    say("open", "The planning officer asks you to approve a new boundary", "Look at the change below, then approve it or reject it with a reason.");
    return;
  }
  answer.hidden = true;
  document.getElementById("deadline").textContent = ""; // answered: no deadline any more
  const [heading, line] = (CLOSED[cr.state] || (() => [`This request is ${cr.state}`, ""]))(cr);
  say(cr.state === "approved" || cr.state === "auto_approved" || cr.state === "rejected" ? "done" : cr.state, heading, line);
}

async function act(tokenValue, path, body, button) {
  button.disabled = true;
  const { res, json } = await call(path, tokenValue, body);
  button.disabled = false;
  if (!res.ok) {
    if (res.status === 409) {
      // Decided meanwhile (by the deadline, or the officer withdrew it): show what happened.
      const again = await call("", tokenValue);
      if (again.res.ok) {
        showState(again.json);
        document.getElementById("status-heading").focus();
        return;
      }
    }
    refusal(res, json);
    document.getElementById("status-heading").focus();
    return;
  }
  showState(json);
  document.getElementById("status-heading").focus();
}

async function main() {
  const tokenValue = token();
  if (!tokenValue) {
    say("denied", "Open this page from the link in your email", "The link carries a code that shows the request is yours; this address has none.");
    return;
  }
  const { res, json } = await call("", tokenValue);
  if (!res.ok) {
    refusal(res, json);
    return;
  }
  const cr = json;
  document.getElementById("content").hidden = false;
  showFacts(cr);
  showMap(cr);
  showState(cr);
  document.getElementById("approve-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(tokenValue, "/approve", {}, e.submitter || e.target.querySelector("button"));
  });
  document.getElementById("reject-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const reason = document.getElementById("reject-reason");
    if (!reason.value.trim()) {
      reason.setAttribute("aria-invalid", "true");
      reason.focus();
      return;
    }
    act(tokenValue, "/reject", { reason: reason.value.trim() }, e.submitter || e.target.querySelector("button"));
  });
}

// Leaflet is a classic script: load it, then run.
const script = document.createElement("script");
script.src = "/widget/vendor/leaflet-1.9.4/leaflet.js";
script.onload = () => main().catch((err) => say("error", "Something went wrong", err.message));
script.onerror = () => say("error", "The map could not load", "Reload the page to try again.");
document.head.append(script);
