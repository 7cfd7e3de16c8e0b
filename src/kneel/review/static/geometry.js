/* kneel review: the one place where the page changes coordinate frames (see kneel/review/render.py).
 *
 * Original-image pixels (x, y) and view pixels (u, v) both have pixel centres at integer coordinates. A view is the
 * axis-aligned map  u = sx * x + tx,  v = sy * y + ty  of a picture width x height view pixels, drawn in an SVG whose
 * viewBox is "-0.5 -0.5 width height": SVG user coordinates are view pixel coordinates at every zoom on screen.
 * Works in the browser (window.KneelGeometry) and in Node (module.exports) so that tests can check the arithmetic.
 */
(function (root) {
  "use strict";

  /* A knee view: size x size view pixels centred on (cx, cy), mmPerPx millimetres per view pixel;
   * spacing = [row_mm, col_mm] of the image (anisotropic pixels come out square in millimetres). */
  function kneeView(cx, cy, spacing, mmPerPx, size) {
    const sx = spacing[1] / mmPerPx;
    const sy = spacing[0] / mmPerPx;
    const half = (size - 1) / 2;
    return { sx: sx, sy: sy, tx: half - sx * cx, ty: half - sy * cy, width: size, height: size };
  }

  /* The whole film of shape [rows, cols], scaled to at most maxSide view pixels on its longer side. */
  function filmView(shape, maxSide) {
    const rows = shape[0];
    const cols = shape[1];
    const s = Math.min(1, maxSide / Math.max(rows, cols));
    return {
      sx: s, sy: s, tx: (s - 1) / 2, ty: (s - 1) / 2,
      width: Math.max(1, Math.round(cols * s)), height: Math.max(1, Math.round(rows * s)),
    };
  }

  function toView(view, x, y) {
    return [view.sx * x + view.tx, view.sy * y + view.ty];
  }

  function toImage(view, u, v) {
    return [(u - view.tx) / view.sx, (v - view.ty) / view.sy];
  }

  /* The SVG viewBox that makes user coordinates equal view pixel coordinates. */
  function viewBox(view) {
    return "-0.5 -0.5 " + view.width + " " + view.height;
  }

  /* A pointer at (clientX, clientY) on an SVG element -> view pixel coordinates (the SVG's user coordinates). */
  function clientToView(svg, clientX, clientY) {
    const point = svg.createSVGPoint();
    point.x = clientX;
    point.y = clientY;
    const user = point.matrixTransform(svg.getScreenCTM().inverse());
    return [user.x, user.y];
  }

  const api = { kneeView, filmView, toView, toImage, viewBox, clientToView };
  if (typeof module !== "undefined" && module.exports) {
    module.exports = api;
  } else {
    root.KneelGeometry = api;
  }
})(typeof window !== "undefined" ? window : this);
