/* Chapter 2's explorable figure: drag a student's points, watch RKD-D and RKD-A.
 *
 * Plain JavaScript, no framework, no network, no kernel. Loaded on every page of the
 * book (html_js_files in _config.yml); it does something only where the page has an
 * element with the class "rkd-explorable" (book/02_relational_kd.ipynb).
 *
 * The numbers are those of the package (rkd_tutorial/losses/relational.py), in float64:
 *   psi_D(i, j) = ||x_i - x_j|| / mu, mu = mean of the N(N-1) off-diagonal distances,
 *                 diagonal 0, distances below EPS count as 0;
 *   RKD-D       = mean over all N^2 entries of Huber(psi_D student - psi_D teacher);
 *   psi_A(a, b, c) = <e_ab, e_ac>, e_ab = (x_b - x_a) / ||x_b - x_a||, the zero vector
 *                 when x_b coincides with x_a (closer than EPS);
 *   RKD-A       = mean over all N^3 ordered triplets of Huber(psi_A student - psi_A teacher);
 *   Huber(d)    = d^2 / 2 if |d| < 1, else |d| - 1/2   (smooth L1, delta 1).
 * tests/test_explorable.py runs these functions in node and compares them with the
 * package; tests/test_site.py drags a point in a browser and checks the shown losses.
 *
 * API for tests and the curious (browser console):
 *   window.rkdExplorable.compute(student, teacher) -> {psiD: {student, teacher}, rkdD, rkdA, ...}
 *   window.rkdExplorable.state(i = 0)   -> {teacher, student, rkdD, rkdA, shown: {rkdD, rkdA}}
 *   window.rkdExplorable.setStudent(points, i = 0), .reset(i = 0)
 * The root element also carries data-teacher, data-student (JSON), data-rkd-d, data-rkd-a.
 */
(function () {
  "use strict";

  var EPS = 1e-12;   // rkd_tutorial.losses.relational.EPS: closer points coincide

  // ------------------------------------------------------------------ the maths

  function huber(d) {
    var a = Math.abs(d);
    return a < 1 ? 0.5 * d * d : a - 0.5;
  }

  function centred(x) {   // the package centres before the angle loss; same rounding here
    var n = x.length, dim = x[0].length, mean = [], i, k;
    for (k = 0; k < dim; k++) {
      mean[k] = 0;
      for (i = 0; i < n; i++) mean[k] += x[i][k];
      mean[k] /= n;
    }
    return x.map(function (p) { return p.map(function (v, k) { return v - mean[k]; }); });
  }

  function distance(p, q) {
    var s = 0;
    for (var k = 0; k < p.length; k++) s += (p[k] - q[k]) * (p[k] - q[k]);
    return Math.sqrt(s);
  }

  /** psi_D: N x N normalised distances, zero diagonal (rkd_tutorial distance_potential). */
  function distancePotential(x) {
    var n = x.length, d = [], sum = 0, i, j;
    for (i = 0; i < n; i++) {
      d.push([]);
      for (j = 0; j < n; j++) {
        var v = i === j ? 0 : distance(x[i], x[j]);
        if (!(v > EPS)) v = 0;
        d[i].push(v);
        sum += v;
      }
    }
    var mu = Math.max(sum / (n * (n - 1)), EPS);
    return d.map(function (row) { return row.map(function (v) { return v / mu; }); });
  }

  /** Unit vectors e[a][b] from x_a to x_b; the zero vector where they coincide. */
  function unitDifferences(x) {
    var n = x.length;
    return x.map(function (xa) {
      return x.map(function (xb) {
        var v = xb.map(function (c, k) { return c - xa[k]; });
        var norm = Math.sqrt(v.reduce(function (s, c) { return s + c * c; }, 0));
        var inv = norm > EPS ? 1 / Math.max(norm, EPS) : 0;
        return v.map(function (c) { return c * inv; });
      });
    });
  }

  /** psi_A: N x N x N cosines [a][b][c] = <e_ab, e_ac> (rkd_tutorial angle_potential). */
  function anglePotential(x) {
    var e = unitDifferences(centred(x)), n = x.length, psi = [], a, b, c, k;
    for (a = 0; a < n; a++) {
      psi.push([]);
      for (b = 0; b < n; b++) {
        psi[a].push([]);
        for (c = 0; c < n; c++) {
          var s = 0;
          for (k = 0; k < e[a][b].length; k++) s += e[a][b][k] * e[a][c][k];
          psi[a][b].push(s);
        }
      }
    }
    return psi;
  }

  function compute(student, teacher) {
    var n = student.length;
    if (teacher.length !== n || n < 3) throw new Error("rkdExplorable: need N >= 3 points on both sides");
    var ds = distancePotential(student), dt = distancePotential(teacher);
    var as = anglePotential(student), at = anglePotential(teacher);
    var sumD = 0, sumA = 0, i, j, c;
    for (i = 0; i < n; i++) for (j = 0; j < n; j++) sumD += huber(ds[i][j] - dt[i][j]);
    for (i = 0; i < n; i++) for (j = 0; j < n; j++) for (c = 0; c < n; c++) sumA += huber(as[i][j][c] - at[i][j][c]);
    return {
      psiD: { student: ds, teacher: dt },
      psiA: { student: as, teacher: at },
      rkdD: sumD / (n * n),
      rkdA: sumA / (n * n * n)
    };
  }

  // A teacher of six outputs (think of them as projected to the plane), and a student
  // that starts with a different arrangement. Coordinates in [-2, 2].
  var TEACHER = [[-1.3, -0.5], [-0.9, 0.45], [-0.2, 1.05], [0.95, 0.75], [1.25, -0.45], [0.1, -0.95]];
  var STUDENT = [[-1.0, 0.95], [0.9, 1.15], [1.3, -0.2], [0.35, -1.15], [-0.95, -0.8], [-0.15, 0.15]];

  var core = {
    TEACHER: TEACHER, STUDENT: STUDENT, EPS: EPS, huber: huber, distancePotential: distancePotential, anglePotential: anglePotential,
    compute: compute,
    rkdDistanceLoss: function (s, t) { return compute(s, t).rkdD; },
    rkdAngleLoss: function (s, t) { return compute(s, t).rkdA; }
  };

  if (typeof module === "object" && module.exports) {   // node: the maths only
    module.exports = core;
    return;
  }
  if (typeof document === "undefined") return;

  // ------------------------------------------------------------------ the figure

  var SVGNS = "http://www.w3.org/2000/svg";
  var LIMIT = 1.7, SIZE = 220, SCALE = SIZE / (2 * LIMIT + 0.3), STEP = 0.05;
  var COLOURS = { teacher: "#0173b2", student: "#de8f05" };   // rkd_tutorial.viz.PALETTE

  function el(name, attrs, parent, text) {
    var node = name.indexOf("svg:") === 0 ? document.createElementNS(SVGNS, name.slice(4)) : document.createElement(name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function toPx(p) { return [SIZE / 2 + SCALE * p[0], SIZE / 2 - SCALE * p[1]]; }
  function clamp(v) { return Math.max(-LIMIT, Math.min(LIMIT, v)); }
  function fmt(v, digits) { return v.toFixed(digits === undefined ? 2 : digits); }
  /** A loss as shown: 4 significant digits; "0" below 1e-12 (rounding error of a perfect match). */
  function fmtLoss(v) { return v < 1e-12 ? "0" : v.toPrecision(4); }
  function copy(points) { return points.map(function (p) { return p.slice(); }); }

  /** A similar copy of the teacher: rotated by 40 degrees, 0.6 times the size, moved. */
  function similarCopy(points) {
    var c = Math.cos(0.7), s = Math.sin(0.7);
    return points.map(function (p) { return [0.6 * (c * p[0] - s * p[1]) + 0.3, 0.6 * (s * p[0] + c * p[1]) - 0.2]; });
  }

  function panel(parent, who, points, draggable) {
    var box = el("figure", { class: "rkd-panel rkd-panel-" + who }, parent);
    var title = who === "teacher" ? "Teacher (fixed)" : "Student: drag the points";
    el("figcaption", {}, box, title);
    var svg = el("svg:svg", {
      viewBox: "0 0 " + SIZE + " " + SIZE, width: SIZE, height: SIZE, class: "rkd-plane",
      role: "group", "aria-label": who === "teacher" ? "The teacher's six points" :
        "The student's six points; each can be dragged, or focused with Tab and moved with the arrow keys"
    }, box);
    el("svg:rect", { x: 0.5, y: 0.5, width: SIZE - 1, height: SIZE - 1, class: "rkd-frame" }, svg);
    var edges = el("svg:g", { class: "rkd-edges" }, svg);
    var nodes = el("svg:g", { class: "rkd-points" }, svg);
    var handles = points.map(function (p, i) {
      var g = el("svg:g", { class: "rkd-point", "data-index": i }, nodes);
      if (draggable) {
        g.setAttribute("tabindex", "0");
        g.setAttribute("role", "button");
        g.setAttribute("aria-roledescription", "draggable point");
        el("svg:circle", { r: 17, class: "rkd-hit" }, g);
      }
      el("svg:circle", { r: 10, class: "rkd-dot", fill: COLOURS[who] }, g);
      el("svg:text", { class: "rkd-label", "text-anchor": "middle", dy: "0.35em" }, g, String(i + 1));
      return g;
    });
    return { svg: svg, edges: edges, handles: handles };
  }

  function grid(parent, caption, cls) {
    var box = el("figure", { class: "rkd-grid " + cls }, parent);
    el("figcaption", {}, box).innerHTML = caption;
    var table = el("table", { class: "rkd-heat" }, box);
    return table;
  }

  function fillGrid(table, m, colour, focus) {
    var n = m.length, html = "<thead><tr><th scope=\"col\"></th>";
    for (var j = 0; j < n; j++) html += "<th scope=\"col\">" + (j + 1) + "</th>";
    html += "</tr></thead><tbody>";
    for (var i = 0; i < n; i++) {
      html += "<tr><th scope=\"row\">" + (i + 1) + "</th>";
      for (j = 0; j < n; j++) {
        var hot = focus !== null && (i === focus || j === focus) ? " class=\"rkd-focus\"" : "";
        html += "<td" + hot + " style=\"background:" + colour(m[i][j]) + "\">" + fmt(m[i][j]) + "</td>";
      }
      html += "</tr>";
    }
    table.innerHTML = html + "</tbody>";
  }

  function sequential(v) {   // 0 .. 2.5: light to dark blue-grey
    var t = Math.min(1, v / 2.5);
    return "hsl(205, 45%, " + (97 - 47 * t).toFixed(1) + "%)";
  }
  function diverging(v) {    // -1 .. 1 (the Huber loss's quadratic zone), clipped
    var t = Math.max(-1, Math.min(1, v));
    return t >= 0 ? "hsl(25, 85%, " + (97 - 40 * t).toFixed(1) + "%)" : "hsl(205, 70%, " + (97 + 40 * t).toFixed(1) + "%)";
  }

  function Explorable(root) {
    var self = this;
    this.root = root;
    this.teacher = copy(TEACHER);
    this.student = copy(STUDENT);
    this.focus = null;
    root.classList.add("rkd-ready", "tex2jax_ignore", "mathjax_ignore");
    root.innerHTML = "";
    root.setAttribute("role", "figure");
    root.setAttribute("aria-label", "Interactive figure: the distance and angle potentials and the RKD losses of a student you can move, against a fixed teacher");

    var planes = el("div", { class: "rkd-planes" }, root);
    this.teacherPanel = panel(planes, "teacher", this.teacher, false);
    this.studentPanel = panel(planes, "student", this.student, true);

    var side = el("div", { class: "rkd-readout" }, planes);
    var losses = el("dl", { class: "rkd-losses" }, side);
    el("dt", {}, losses, "RKD-D");
    this.lossD = el("dd", { class: "rkd-loss-d" }, losses);
    el("dt", {}, losses, "RKD-A");
    this.lossA = el("dd", { class: "rkd-loss-a" }, losses);
    this.angleNote = el("p", { class: "rkd-angle-note" }, side);
    var buttons = el("div", { class: "rkd-buttons" }, side);
    el("button", { type: "button", class: "rkd-reset" }, buttons, "Reset").addEventListener("click", function () { self.reset(); });
    el("button", { type: "button", class: "rkd-copy" }, buttons, "Similar copy of the teacher")
      .addEventListener("click", function () { self.setStudent(similarCopy(self.teacher)); });
    this.status = el("p", { class: "rkd-status", "aria-live": "polite" }, side);

    var grids = el("div", { class: "rkd-grids" }, root);
    this.gridT = grid(grids, "\u03c8<sub>D</sub>, teacher", "rkd-grid-teacher");
    this.gridS = grid(grids, "\u03c8<sub>D</sub>, student", "rkd-grid-student");
    this.gridDiff = grid(grids, "\u03c8<sub>D</sub>: student \u2212 teacher", "rkd-grid-diff");
    var angles = el("figure", { class: "rkd-angles" }, grids);
    el("figcaption", {}, angles).innerHTML = "\u03c8<sub>A</sub>: student against teacher";
    this.scatter = el("svg:svg", { viewBox: "0 0 150 150", width: 150, height: 150, class: "rkd-scatter", role: "img" }, angles);
    var n = this.teacher.length;
    el("p", { class: "rkd-legend" }, root).innerHTML =
      "Grids: the normalised distances \u03c8<sub>D</sub> of every pair (i, j), and the differences that RKD-D " +
      "passes through the Huber loss (blue: the student's pair is relatively too close, orange: too far; " +
      "full colour at \u00b11, where the loss turns from quadratic to linear). Scatter: the cosine of the angle " +
      "at a between b and c, student against teacher, for the " + (n * (n - 1) * (n - 2)) + " triplets of " +
      "distinct points; RKD-A averages the Huber loss of the differences over all " + n + "\u00b3 = " +
      (n * n * n) + " ordered triplets (those with b = a or c = a are 0 on both sides, those with b = c are 1). " +
      "Drag a point, or focus it with Tab and move it with the arrow keys (Shift: bigger steps).";

    this.drawTeacher();
    this.studentPanel.handles.forEach(function (g, i) { self.bindHandle(g, i); });
    this.update();
  }

  Explorable.prototype.drawTeacher = function () {
    this.placePoints(this.teacherPanel, this.teacher);
  };

  Explorable.prototype.placePoints = function (pan, points) {
    var n = points.length, px = points.map(toPx), html = "";
    for (var i = 0; i < n; i++) for (var j = i + 1; j < n; j++) {
      html += "<line x1=\"" + fmt(px[i][0], 1) + "\" y1=\"" + fmt(px[i][1], 1) + "\" x2=\"" + fmt(px[j][0], 1) + "\" y2=\"" + fmt(px[j][1], 1) + "\"/>";
    }
    pan.edges.innerHTML = html;
    pan.handles.forEach(function (g, i) {
      g.setAttribute("transform", "translate(" + fmt(px[i][0], 2) + " " + fmt(px[i][1], 2) + ")");
    });
  };

  Explorable.prototype.bindHandle = function (g, i) {
    var self = this, svg = this.studentPanel.svg, dragging = false;
    function toData(event) {
      var m = svg.getScreenCTM().inverse();
      var p = new DOMPoint(event.clientX, event.clientY).matrixTransform(m);
      return [clamp((p.x - SIZE / 2) / SCALE), clamp((SIZE / 2 - p.y) / SCALE)];
    }
    g.addEventListener("pointerdown", function (event) {
      dragging = true;
      self.focus = i;
      g.classList.add("rkd-dragging");
      if (g.setPointerCapture) g.setPointerCapture(event.pointerId);
      event.preventDefault();
      g.focus({ preventScroll: true });
      self.update();
    });
    g.addEventListener("pointermove", function (event) {
      if (!dragging) return;
      self.student[i] = toData(event);
      self.update();
    });
    function end(event) {
      if (!dragging) return;
      dragging = false;
      g.classList.remove("rkd-dragging");
      if (g.releasePointerCapture && event.pointerId !== undefined) {
        try { g.releasePointerCapture(event.pointerId); } catch (e) { /* already released */ }
      }
      self.announce();
    }
    g.addEventListener("pointerup", end);
    g.addEventListener("pointercancel", end);
    g.addEventListener("focus", function () { self.focus = i; self.update(); });
    g.addEventListener("blur", function () { if (!dragging) { self.focus = null; self.update(); } });
    g.addEventListener("keydown", function (event) {
      var step = event.shiftKey ? 4 * STEP : STEP, moves = {
        ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step]
      }, mv = moves[event.key];
      if (!mv) return;
      event.preventDefault();
      self.student[i] = [clamp(self.student[i][0] + mv[0]), clamp(self.student[i][1] + mv[1])];
      self.update();
      self.announce();
    });
  };

  Explorable.prototype.update = function () {
    var r = compute(this.student, this.teacher), n = this.student.length, self = this;
    this.result = r;
    this.placePoints(this.studentPanel, this.student);
    this.studentPanel.handles.forEach(function (g, i) {
      var p = self.student[i];
      g.setAttribute("aria-label", "Student point " + (i + 1) + " at x " + fmt(p[0]) + ", y " + fmt(p[1]));
      g.classList.toggle("rkd-focus", self.focus === i);
    });
    var diff = r.psiD.student.map(function (row, i) { return row.map(function (v, j) { return v - r.psiD.teacher[i][j]; }); });
    fillGrid(this.gridT, r.psiD.teacher, sequential, this.focus);
    fillGrid(this.gridS, r.psiD.student, sequential, this.focus);
    fillGrid(this.gridDiff, diff, diverging, this.focus);

    // angle summary: the scatter of cosines for distinct a, b, c
    var pts = "", sumAbs = 0, count = 0, a, b, c, S = 150, pad = 12, w = S - 2 * pad;
    for (a = 0; a < n; a++) for (b = 0; b < n; b++) for (c = 0; c < n; c++) {
      if (a === b || a === c || b === c) continue;
      var ct = r.psiA.teacher[a][b][c], cs = r.psiA.student[a][b][c];
      sumAbs += Math.abs(cs - ct);
      count += 1;
      var hot = this.focus !== null && (a === this.focus || b === this.focus || c === this.focus);
      pts += "<circle r=\"" + (hot ? 2.6 : 2) + "\" class=\"" + (hot ? "rkd-focus" : "") + "\" cx=\"" +
        fmt(pad + (ct + 1) / 2 * w, 1) + "\" cy=\"" + fmt(pad + (1 - cs) / 2 * w, 1) + "\"/>";
    }
    this.scatter.innerHTML =
      "<rect x=\"" + pad + "\" y=\"" + pad + "\" width=\"" + w + "\" height=\"" + w + "\" class=\"rkd-frame\"/>" +
      "<line x1=\"" + pad + "\" y1=\"" + (pad + w) + "\" x2=\"" + (pad + w) + "\" y2=\"" + pad + "\" class=\"rkd-diagonal\"/>" +
      "<text x=\"" + (S / 2) + "\" y=\"" + (S - 1) + "\" text-anchor=\"middle\">cos, teacher</text>" +
      "<text x=\"9\" y=\"" + (S / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 9 " + (S / 2) + ")\">cos, student</text>" + pts;
    this.scatter.setAttribute("aria-label", "Scatter of the student's against the teacher's angle cosines for " + count +
      " triplets; mean absolute difference " + fmt(sumAbs / count, 3));
    this.angleNote.textContent = "Angles: mean |\u0394cos| = " + fmt(sumAbs / count, 3) + " over " + count + " triplets";

    this.shown = { rkdD: fmtLoss(r.rkdD), rkdA: fmtLoss(r.rkdA) };
    this.lossD.textContent = this.shown.rkdD;
    this.lossA.textContent = this.shown.rkdA;
    this.root.setAttribute("data-teacher", JSON.stringify(this.teacher));
    this.root.setAttribute("data-student", JSON.stringify(this.student));
    this.root.setAttribute("data-rkd-d", String(r.rkdD));
    this.root.setAttribute("data-rkd-a", String(r.rkdA));
  };

  Explorable.prototype.announce = function () {
    this.status.textContent = "RKD-D " + this.shown.rkdD + ", RKD-A " + this.shown.rkdA;
  };

  Explorable.prototype.setStudent = function (points) {
    if (!Array.isArray(points) || points.length !== this.teacher.length) {
      throw new Error("rkdExplorable.setStudent: need " + this.teacher.length + " points [x, y]");
    }
    this.student = points.map(function (p) { return [Number(p[0]), Number(p[1])]; });
    this.update();
    this.announce();
  };

  Explorable.prototype.reset = function () {
    this.student = copy(STUDENT);
    this.focus = null;
    this.update();
    this.announce();
  };

  Explorable.prototype.state = function () {
    return { teacher: copy(this.teacher), student: copy(this.student), rkdD: this.result.rkdD,
             rkdA: this.result.rkdA, shown: { rkdD: this.shown.rkdD, rkdA: this.shown.rkdA } };
  };

  var instances = [];
  var api = Object.assign({}, core, {
    instances: instances,
    state: function (i) { return instances[i || 0].state(); },
    setStudent: function (points, i) { instances[i || 0].setStudent(points); return instances[i || 0].state(); },
    reset: function (i) { instances[i || 0].reset(); return instances[i || 0].state(); },
    initialStudent: function () { return copy(STUDENT); },
    initialTeacher: function () { return copy(TEACHER); }
  });
  window.rkdExplorable = api;

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll(".rkd-explorable"), function (root) {
      if (!root.classList.contains("rkd-ready")) instances.push(new Explorable(root));
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
