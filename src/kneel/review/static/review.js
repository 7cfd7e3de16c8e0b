/* kneel review: the page. Talks to the JSON API of kneel/review/app.py; every change is saved at once (PUT), with the
 * knee's version so that another tab's work is never overwritten silently (409: the knee is reloaded).
 * Coordinates: see geometry.js (original pixels <-> view pixels, pixel centres at integers). */
(function () {
  "use strict";
  const G = window.KneelGeometry;
  const SVG = "http://www.w3.org/2000/svg";
  const N = 16;
  const TIBIA = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const FEMUR = [9, 10, 11, 12, 13, 14, 15];
  const KNEE_SIZE = 560;       // view pixels of the knee view
  const FILM_SIDE = 1200;      // longer side of the film picture
  const BOX_MARGIN_MM = 15;    // knee box: landmarks' bounding box plus this

  const state = {
    films: [],            // summaries from /api/films, server order (uncertain first)
    progress: { reviewed: 0, total: 0 },
    filter: "all",
    film: null,           // detail of the current film
    side: null,           // current knee side
    knees: {},            // side -> {points, status, version, predicted}
    centre: null,         // [x, y] original pixels at the centre of the knee view
    undo: [],             // [{filmId, side, status, points}] states before each change
    saving: Promise.resolve(),
  };

  const $ = (id) => document.getElementById(id);

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function message(text, isError) {
    const box = $("message");
    box.textContent = text || "";
    box.className = isError ? "error" : "";
  }

  async function api(method, url, body) {
    const init = { method: method, headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    return { status: response.status, data: data };
  }

  function detailText(data, status) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && Array.isArray(data.detail)) return data.detail.map((d) => d.msg).join("; ");
    return "HTTP " + status;
  }

  /* ------------------------------------------------------------------ film list */
  function matches(film, filter) {
    const knees = film.knees;
    switch (filter) {
      case "unreviewed": return film.status === "ok" && knees.some((k) => k.review === "unreviewed");
      case "uncertain": return knees.some((k) => k.quality === "uncertain");
      case "corrected": return knees.some((k) => k.review === "corrected");
      case "flagged": return knees.some((k) => k.review === "flagged");
      case "no_knee": return film.status === "no_knee" || knees.some((k) => k.review === "absent");
      case "failed": return film.status === "failed";
      default: return true;
    }
  }

  function visibleFilms() {
    return state.films.filter((f) => matches(f, state.filter));
  }

  function renderProgress() {
    const p = state.progress;
    $("progress-text").textContent = p.reviewed + " / " + p.total + " knees reviewed";
    $("progress-bar").style.width = (p.total ? (100 * p.reviewed) / p.total : 0) + "%";
  }

  function renderList() {
    const list = $("films");
    list.textContent = "";
    for (const film of visibleFilms()) {
      const item = document.createElement("li");
      item.dataset.id = film.id;
      if (state.film && state.film.id === film.id) item.className = "current";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = film.file;
      name.title = film.reason || film.file;
      item.appendChild(name);
      if (film.status !== "ok") {
        const chip = document.createElement("span");
        chip.className = "chip s-" + film.status;
        chip.textContent = film.status.replace("_", " ");
        item.appendChild(chip);
      }
      for (const knee of film.knees) {
        const chip = document.createElement("span");
        chip.className = "chip q-" + (knee.quality || "none") + " r-" + knee.review;
        const radius = knee.max_uncertainty_mm == null ? "" : " " + knee.max_uncertainty_mm.toFixed(1) + " mm";
        chip.textContent = knee.side + radius;
        chip.title = "knee " + knee.side + ": " + (knee.quality || "added by hand") + ", " + knee.review;
        chip.addEventListener("click", (event) => { event.stopPropagation(); openFilm(film.id, knee.side); });
        item.appendChild(chip);
      }
      item.addEventListener("click", () => openFilm(film.id, null));
      list.appendChild(item);
    }
    renderProgress();
  }

  async function loadList() {
    const { status, data } = await api("GET", "/api/films");
    if (status !== 200) { message("cannot list the films: " + detailText(data, status), true); return; }
    state.films = data.films;
    state.progress = data.progress;
    renderList();
  }

  /* ------------------------------------------------------------------ film and knee state */
  function kneeState(side) {
    const knee = state.film.knee[side];
    const review = knee.review;
    const predicted = knee.predicted_px;
    let points = predicted ? predicted.map((p) => p.slice()) : null;
    let status = "unreviewed";
    if (review) {
      status = review.status;
      if (review.landmarks_px) points = review.landmarks_px.map((p) => p.slice());
    }
    return { points: points, status: status, version: knee.version, predicted: predicted };
  }

  function sidesOf(film) {
    return film.knees.map((k) => k.side);
  }

  async function openFilm(filmId, side, keepView) {
    const { status, data } = await api("GET", "/api/films/" + encodeURIComponent(filmId));
    if (status !== 200) { message("cannot open the film: " + detailText(data, status), true); return; }
    const sameFilm = state.film && state.film.id === filmId;
    state.film = data;
    state.knees = {};
    for (const s of ["R", "L"]) state.knees[s] = kneeState(s);
    const sides = sidesOf(data);
    state.side = side && sides.includes(side) ? side : (sides[0] || null);
    if (!(keepView && sameFilm)) state.centre = null;
    renderList();
    renderFilm();
    renderKnee(true);
  }

  function kneeCentre(side) {
    const knee = state.film.knee[side];
    const pts = state.knees[side].points;
    if (knee.centre_px) return knee.centre_px.slice();
    if (pts) {
      const c = [0, 0];
      for (const p of pts) { c[0] += p[0] / N; c[1] += p[1] / N; }
      return c;
    }
    return [state.film.shape[1] / 2, state.film.shape[0] / 2];
  }

  /* ------------------------------------------------------------------ the whole film */
  function renderFilm() {
    const film = state.film;
    const svg = $("film-svg");
    svg.textContent = "";
    $("film-title").textContent = film.file;
    $("film-status").textContent = film.status === "ok" ? "" : "(" + film.status.replace("_", " ") + ")";
    const reasons = [film.reason].concat(film.warnings || []).filter((t) => t);
    $("film-reason").textContent = reasons.join("; ");
    if (!film.shape || !film.image) { svg.setAttribute("viewBox", "0 0 10 10"); return; }
    const view = G.filmView(film.shape, FILM_SIDE);
    svg.setAttribute("viewBox", G.viewBox(view));
    el("image", { href: "/api/films/" + encodeURIComponent(film.id) + "/film.png?max_side=" + FILM_SIDE,
      x: -0.5, y: -0.5, width: view.width, height: view.height }, svg);
    for (const side of ["R", "L"]) {
      const pts = state.knees[side].points;
      if (!pts || state.knees[side].status === "absent") continue;
      const xs = pts.map((p) => p[0]);
      const ys = pts.map((p) => p[1]);
      const mx = BOX_MARGIN_MM / film.spacing_mm[1];
      const my = BOX_MARGIN_MM / film.spacing_mm[0];
      const a = G.toView(view, Math.min(...xs) - mx, Math.min(...ys) - my);
      const b = G.toView(view, Math.max(...xs) + mx, Math.max(...ys) + my);
      const quality = film.knee[side].quality || "added";
      const box = el("rect", { x: a[0], y: a[1], width: b[0] - a[0], height: b[1] - a[1],
        class: "knee-box " + quality + (side === state.side ? " selected" : "") }, svg);
      box.addEventListener("click", () => { state.side = side; state.centre = null; renderFilm(); renderKnee(true); });
      const label = el("text", { x: a[0], y: a[1] - view.width / 150, class: "label",
        style: "font-size: " + view.width / 35 + "px" }, svg);
      label.textContent = side + " " + state.knees[side].status;
    }
  }

  /* ------------------------------------------------------------------ the knee view */
  let kneeView = null;

  function imageUrl(view) {
    const c = state.centre;
    const params = new URLSearchParams({ cx: c[0], cy: c[1], mm: $("zoom").value, size: KNEE_SIZE,
      low: $("win-low").value, high: $("win-high").value });
    return "/api/films/" + encodeURIComponent(state.film.id) + "/knee.png?" + params.toString();
  }

  function renderKnee(reloadImage) {
    const svg = $("knee-svg");
    const side = state.side;
    const film = state.film;
    const missing = ["R", "L"].filter((s) => !state.knees[s].points);
    $("add-knee").disabled = !film || !film.shape || missing.length === 0;
    if (!film || !side || !film.shape || !film.spacing_mm) {
      svg.textContent = "";
      $("knee-title").textContent = film && film.status !== "ok" ? "no knee to review" : "";
      $("knee-status").textContent = "";
      return;
    }
    const knee = state.knees[side];
    if (!state.centre) state.centre = kneeCentre(side);
    const mm = parseFloat($("zoom").value);
    kneeView = G.kneeView(state.centre[0], state.centre[1], film.spacing_mm, mm, KNEE_SIZE);
    let image = svg.querySelector("image");
    if (reloadImage || !image) {
      svg.textContent = "";
      svg.setAttribute("viewBox", G.viewBox(kneeView));
      image = el("image", { x: -0.5, y: -0.5, width: kneeView.width, height: kneeView.height,
        href: imageUrl(kneeView) }, svg);
    }
    for (const node of Array.from(svg.querySelectorAll("g.overlay"))) node.remove();
    const overlay = el("g", { class: "overlay" }, svg);
    const detail = film.knee[side];
    $("knee-title").textContent = "knee " + side + (detail.quality ? " (" + detail.quality + ")" : " (added)");
    $("knee-status").textContent = knee.status + (knee.version ? ", version " + knee.version : "");
    if (knee.status === "absent" || !knee.points) {
      const t = el("text", { x: 10, y: 30, class: "label" }, overlay);
      t.textContent = knee.status === "absent" ? "marked absent (R resets to the prediction)" : "no landmarks";
      return;
    }
    const view = (p) => G.toView(kneeView, p[0], p[1]);
    if ($("show-truth").checked && detail.truth_px) {
      for (const p of detail.truth_px) {
        if (p[0] == null || p[1] == null) continue;
        const v = view(p);
        el("rect", { x: v[0] - 4, y: v[1] - 4, width: 8, height: 8, class: "truth-mark" }, overlay);
      }
    }
    if ($("show-prediction").checked && knee.predicted) {
      for (const p of knee.predicted) {
        const v = view(p);
        el("path", { d: "M" + (v[0] - 4) + " " + (v[1] - 4) + "l8 8m0 -8l-8 8", class: "pred-mark" }, overlay);
      }
    }
    for (const [bone, indices] of [["tibia", TIBIA], ["femur", FEMUR]]) {
      const line = indices.map((k) => view(knee.points[k]).join(",")).join(" ");
      el("polyline", { points: line, class: "contour " + bone }, overlay);
    }
    if ($("show-uncertainty").checked && detail.uncertainty_mm && knee.predicted) {
      detail.uncertainty_mm.forEach((r, k) => {  // the radius is about the predicted point
        if (r == null) return;
        const v = view(knee.predicted[k]);
        el("circle", { cx: v[0], cy: v[1], r: r / mm, class: "radius" }, overlay);
      });
    }
    knee.points.forEach((p, k) => {
      const v = view(p);
      const bone = k < 9 ? "tibia" : "femur";
      const moved = knee.predicted && (Math.abs(p[0] - knee.predicted[k][0]) > 1e-6 ||
        Math.abs(p[1] - knee.predicted[k][1]) > 1e-6);
      const dot = el("circle", { cx: v[0], cy: v[1], r: 5, class: "landmark " + bone + (moved ? " moved" : ""),
        "data-landmark": k }, overlay);
      dot.addEventListener("pointerdown", (event) => startDrag(event, k));
      const label = el("text", { x: v[0] + 7, y: v[1] - 7, class: "label" }, overlay);
      label.textContent = (k < 9 ? "T" : "F") + k;
    });
  }

  /* ------------------------------------------------------------------ dragging */
  function startDrag(event, k) {
    event.preventDefault();
    const svg = $("knee-svg");
    const knee = state.knees[state.side];
    const before = knee.points.map((p) => p.slice());
    const rows = state.film.shape[0];
    const cols = state.film.shape[1];
    // Listen on the window: the overlay (this dot included) is redrawn while dragging.
    const move = (e) => {
      const uv = G.clientToView(svg, e.clientX, e.clientY);
      const xy = G.toImage(kneeView, uv[0], uv[1]);
      knee.points[k] = [Math.min(Math.max(xy[0], -0.5), cols - 0.5), Math.min(Math.max(xy[1], -0.5), rows - 0.5)];
      renderKnee(false);
    };
    const up = (e) => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      move(e);
      const changed = knee.points[k][0] !== before[k][0] || knee.points[k][1] !== before[k][1];
      if (changed) save(state.side, "corrected", knee.points, before, knee.status);
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  /* ------------------------------------------------------------------ saving */
  function save(side, status, points, beforePoints, beforeStatus, noUndo) {
    const film = state.film;
    const knee = state.knees[side];
    if (!noUndo) {
      state.undo.push({ filmId: film.id, side: side, status: beforeStatus,
        points: beforePoints ? beforePoints.map((p) => p.slice()) : null });
    }
    const body = { base_version: knee.version, status: status,
      landmarks_px: status === "absent" ? null : points };
    const filmId = film.id;
    state.saving = state.saving.then(async () => {
      body.base_version = state.film && state.film.id === filmId ? state.knees[side].version : body.base_version;
      const { status: code, data } = await api("PUT", "/api/films/" + encodeURIComponent(filmId) + "/knees/" + side,
        body);
      if (code === 200) {
        if (state.film && state.film.id === filmId) {
          const k = state.knees[side];
          k.version = data.version;
          k.status = data.review.status;
          if (data.review.landmarks_px) k.points = data.review.landmarks_px;
          state.film.knee[side].review = data.review;
          state.film.knee[side].version = data.version;
        }
        state.progress = data.progress;
        message("saved: knee " + side + " " + data.review.status + " (version " + data.version + ")");
        updateSummary(filmId, side, data.review.status);
      } else if (code === 409) {
        message(detailText(data, code) + " - the knee was reloaded.", true);
        if (state.film && state.film.id === filmId) await openFilm(filmId, side, true);
      } else {
        message("not saved: " + detailText(data, code), true);
        if (state.film && state.film.id === filmId) await openFilm(filmId, side, true);
      }
      if (state.film && state.film.id === filmId) { renderFilm(); renderKnee(false); }
    });
    return state.saving;
  }

  function updateSummary(filmId, side, review) {
    const film = state.films.find((f) => f.id === filmId);
    if (film) {
      const knee = film.knees.find((k) => k.side === side);
      if (knee) knee.review = review;
      else film.knees.push({ side: side, predicted: false, quality: null, max_uncertainty_mm: null, review: review });
    }
    renderList();
  }

  function current() {
    return state.film && state.side ? state.knees[state.side] : null;
  }

  function decide(status) {
    const knee = current();
    if (!knee) return Promise.resolve();
    if (status !== "absent" && !knee.points) return Promise.resolve();
    const before = knee.points ? knee.points.map((p) => p.slice()) : null;
    return save(state.side, status, knee.points, before, knee.status);
  }

  function resetKnee() {
    const knee = current();
    if (!knee || !knee.predicted) return;
    const before = knee.points ? knee.points.map((p) => p.slice()) : null;
    knee.points = knee.predicted.map((p) => p.slice());
    renderKnee(false);
    save(state.side, "accepted", knee.points, before, knee.status);
  }

  async function undo() {
    const last = state.undo.pop();
    if (!last) { message("nothing to undo"); return; }
    if (!state.film || state.film.id !== last.filmId) await openFilm(last.filmId, last.side, false);
    state.side = last.side;
    const knee = state.knees[last.side];
    let points = last.points;
    if (!points) points = knee.predicted ? knee.predicted.map((p) => p.slice()) : knee.points;
    if (last.status === "unreviewed" && !knee.predicted) {
      message("an added knee cannot be un-added; mark it absent instead (X)", true);
      return;
    }
    if (points) knee.points = points.map((p) => p.slice());
    renderKnee(false);
    save(last.side, last.status, knee.points, null, null, true);
  }

  function addKnee() {
    const film = state.film;
    const missing = ["R", "L"].filter((s) => !state.knees[s].points);
    if (!film || !missing.length || !film.template_mm) return;
    const side = missing[0];
    const other = side === "R" ? "L" : "R";
    const cols = film.shape[1];
    const rows = film.shape[0];
    let points;
    if (state.knees[other].points && state.knees[other].status !== "absent") {
      points = state.knees[other].points.map((p) => [cols - 1 - p[0], p[1]]);  // the other knee, mirrored
    } else {
      const cx = side === "R" ? (cols - 1) / 4 : (3 * (cols - 1)) / 4;
      const cy = (rows - 1) / 2;
      const sign = side === "R" ? 1 : -1;  // the template is a right knee; a left knee is its mirror image
      points = film.template_mm.map((p) => [cx + (sign * p[0]) / film.spacing_mm[1], cy + p[1] / film.spacing_mm[0]]);
    }
    points = points.map((p) => [Math.min(Math.max(p[0], 0), cols - 1), Math.min(Math.max(p[1], 0), rows - 1)]);
    state.knees[side].points = points;
    state.side = side;
    state.centre = null;
    renderFilm();
    renderKnee(true);
    save(side, "corrected", points, null, "unreviewed");
  }

  /* ------------------------------------------------------------------ navigation */
  function kneeOrder() {
    const out = [];
    for (const film of visibleFilms()) {
      for (const knee of film.knees) out.push([film.id, knee.side]);
      if (!film.knees.length) out.push([film.id, null]);
    }
    return out;
  }

  async function step(delta) {
    const order = kneeOrder();
    if (!order.length) return;
    let index = -1;
    if (state.film) index = order.findIndex(([id, side]) => id === state.film.id && side === state.side);
    if (index < 0 && state.film) index = order.findIndex(([id]) => id === state.film.id);
    const next = order[Math.min(Math.max(index + delta, 0), order.length - 1)];
    if (state.film && next[0] === state.film.id) {
      state.side = next[1];
      state.centre = null;
      renderFilm();
      renderKnee(true);
    } else {
      await openFilm(next[0], next[1]);
    }
  }

  async function acceptAndNext() {
    await decide("accepted");
    await step(1);
  }

  function bind() {
    $("filter").addEventListener("change", () => { state.filter = $("filter").value; renderList(); });
    $("prev").addEventListener("click", () => step(-1));
    $("next").addEventListener("click", () => step(1));
    $("accept").addEventListener("click", acceptAndNext);
    $("flag").addEventListener("click", () => decide("flagged"));
    $("absent").addEventListener("click", () => decide("absent"));
    $("reset").addEventListener("click", resetKnee);
    $("undo").addEventListener("click", undo);
    $("add-knee").addEventListener("click", addKnee);
    for (const id of ["zoom", "win-low", "win-high"]) $(id).addEventListener("change", () => renderKnee(true));
    for (const id of ["show-uncertainty", "show-truth", "show-prediction"]) {
      $(id).addEventListener("change", () => renderKnee(false));
    }
    $("knee-svg").addEventListener("dblclick", (event) => {
      if (!kneeView) return;
      const uv = G.clientToView($("knee-svg"), event.clientX, event.clientY);
      state.centre = G.toImage(kneeView, uv[0], uv[1]);
      renderKnee(true);
    });
    document.addEventListener("keydown", (event) => {
      if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
      const key = event.key;
      if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") { event.preventDefault(); undo(); return; }
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const zoom = { "1": "0.1", "2": "0.2", "3": "0.3", "4": "0.5" }[key];
      if (zoom) { $("zoom").value = zoom; renderKnee(true); return; }
      switch (key.toLowerCase()) {
        case "j": case "arrowright": step(1); break;
        case "k": case "arrowleft": step(-1); break;
        case "a": acceptAndNext(); break;
        case "f": decide("flagged"); break;
        case "x": decide("absent"); break;
        case "r": resetKnee(); break;
        case "u": undo(); break;
        default: return;
      }
      event.preventDefault();
    });
  }

  bind();
  loadList().then(() => {
    const first = visibleFilms()[0];
    if (first) openFilm(first.id, null);
  });
})();
