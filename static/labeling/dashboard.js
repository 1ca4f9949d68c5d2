/* The manager dashboard: fetches /api/v1/projects/<id>/dashboard/ and draws it with Chart.js.
 * Everything shown comes from the JSON; a figure the server cannot compute yet arrives as
 * null with a reason, and is shown as that reason (never as a made-up number). */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const charts = {};
  const STATUS_COLORS = { open: "#bab0ac", full: "#edc948", review: "#e15759", done: "#59a14f", reviewed: "#4e79a7" };
  const SPLIT_NAMES = { train: "Train", evaluation: "Evaluation" };
  const nf = (digits) => new Intl.NumberFormat("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  const money = (v) => (v === null || v === undefined ? "–" : "$" + new Intl.NumberFormat("en-US", {
    minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(v));
  const num = (v, d = 1) => (v === null || v === undefined ? "–" : nf(d).format(v));
  const pct = (v, d = 1) => (v === null || v === undefined ? "–" : nf(d).format(100 * v) + " %");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function setText(id, text) { document.getElementById(id).textContent = text; }

  function duration(hours) {
    if (hours === null || hours === undefined) return "–";
    if (hours < 1) return nf(0).format(hours * 60) + " min";
    if (hours < 48) return nf(1).format(hours) + " h";
    return nf(1).format(hours / 24) + " days";
  }

  function chart(id, cfg) {
    if (charts[id]) charts[id].destroy();
    cfg.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, cfg.options || {});
    charts[id] = new Chart(document.getElementById(id), cfg);
  }

  // --- panels -------------------------------------------------------------------------------

  function renderKpis(d) {
    const c = d.cost, p = d.progress, t = d.throughput;
    setText("kpi-spend", money(c.total));
    setText("kpi-spend-note", `${money(c.annotation_cost)} annotations · ${money(c.review_cost)} reviews`);
    setText("kpi-cpa", money(c.cost_per_annotation));
    setText("kpi-cpa-note", `${nf(0).format(c.annotations)} live annotations, ${num(c.active_hours, 1)} active h`);
    setText("kpi-cpc", money(c.cost_per_consensus_label));
    setText("kpi-cpc-note", c.cost_per_consensus_label === null ? "not yet available: no consensus labels" :
      "total spend incl. overlap and reviews ÷ consensus labels");
    setText("kpi-consensus", `${nf(0).format(p.consensus_done)} / ${nf(0).format(p.consensus_target)}`);
    setText("kpi-consensus-note", p.consensus_target ? pct(p.consensus_done / p.consensus_target) + " of items" : "no items yet");
    setText("kpi-rate", num(t.overall.per_wall_hour_recent, 1));
    setText("kpi-rate-note", `${num(t.overall.per_active_hour, 0)} per active hour (all time)`);
    if (t.eta_hours === null) {
      setText("kpi-eta", "–");
      setText("kpi-eta-note", t.eta_reason);
    } else if (p.remaining_annotations === 0) {
      setText("kpi-eta", "–");
      setText("kpi-eta-note", "no annotation is wanted now");
    } else {
      setText("kpi-eta", duration(t.eta_hours));
      setText("kpi-eta-note", `${nf(0).format(p.remaining_annotations)} annotations left` +
        (t.cost_to_finish === null ? "" : ` · ~${money(t.cost_to_finish)}`));
    }
    setText("dash-generated", `Updated ${new Date(d.generated_at).toLocaleString()} · ${nf(0).format(p.items_total)} items · overlap ${d.project.overlap}`);
  }

  function renderSpend(d) {
    const days = d.cost.by_day;
    chart("chart-spend", {
      type: "bar",
      data: {
        labels: days.map((r) => r.key),
        datasets: [
          { label: "Annotations", data: days.map((r) => r.annotation_cost), backgroundColor: "#4e79a7", stack: "s" },
          { label: "Reviews", data: days.map((r) => r.review_cost), backgroundColor: "#f28e2b", stack: "s" },
        ],
      },
      options: {
        scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "spend ($)" } } },
        plugins: { tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${money(ctx.parsed.y)}` } } },
      },
    });
  }

  function renderProgress(d) {
    const p = d.progress;
    const splits = Object.keys(p.by_split);
    const statuses = Object.keys(p.by_status);
    chart("chart-status", {
      type: "bar",
      data: {
        labels: splits.map((s) => SPLIT_NAMES[s] || s),
        datasets: statuses.map((st) => ({
          label: st, data: splits.map((sp) => p.by_split[sp][st] || 0), backgroundColor: STATUS_COLORS[st] || "#9c755f",
        })),
      },
      options: { indexAxis: "y", scales: { x: { stacked: true, title: { display: true, text: "items" } }, y: { stacked: true } } },
    });
    setText("progress-note", `${nf(0).format(p.items_done)} of ${nf(0).format(p.items_total)} items done; ` +
      `${nf(0).format(p.remaining_annotations)} annotations still wanted on the rest.`);
  }

  function renderThroughput(d) {
    const rows = d.throughput.annotators;
    chart("chart-throughput", {
      type: "bar",
      data: {
        labels: rows.map((r) => r.username),
        datasets: [
          { label: "per active hour (all time)", data: rows.map((r) => r.per_active_hour), backgroundColor: "#4e79a7" },
          { label: "per active hour (24 h)", data: rows.map((r) => r.per_active_hour_recent), backgroundColor: "#76b7b2" },
          { label: "per wall-clock hour (24 h, right axis)", data: rows.map((r) => r.per_wall_hour_recent),
            backgroundColor: "#f28e2b", yAxisID: "wall" },
        ],
      },
      options: {
        scales: {
          y: { beginAtZero: true, title: { display: true, text: "labels / active hour" } },
          wall: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
            title: { display: true, text: "labels / wall-clock hour" } },
        },
      },
    });
  }

  function renderPeople(d) {
    const tbody = document.querySelector("#table-people tbody");
    tbody.replaceChildren();
    const tp = new Map(d.throughput.annotators.map((a) => [String(a.user_id), a]));
    for (const r of d.cost.by_person) {
      const t = tp.get(r.key) || {};
      tbody.append(el("tr", {}, el("td", {}, r.label), el("td", { class: "num" }, nf(0).format(r.annotations)),
        el("td", { class: "num" }, num(r.active_hours, 2)), el("td", { class: "num" }, num(t.per_active_hour, 0)),
        el("td", { class: "num" }, num(t.per_wall_hour_recent, 1)), el("td", { class: "num" }, nf(0).format(r.reviews)),
        el("td", { class: "num" }, money(r.total))));
    }
    const c = d.cost;
    tbody.append(el("tr", { class: "total" }, el("td", {}, "Total"), el("td", { class: "num" }, nf(0).format(c.annotations)),
      el("td", { class: "num" }, num(c.active_hours, 2)), el("td", { class: "num" }, num(d.throughput.overall.per_active_hour, 0)),
      el("td", { class: "num" }, num(d.throughput.overall.per_wall_hour_recent, 1)),
      el("td", { class: "num" }, nf(0).format(c.reviews)), el("td", { class: "num" }, money(c.total))));
  }

  function renderCurve(d, axis, canvasId, projId) {
    const lc = d.learning_curve;
    const proj = lc[axis];
    const xOf = (p) => (axis === "labels" ? p.n_train : p.cost);
    const xTitle = axis === "labels" ? "consensus labels trained on" : "money spent at training ($)";
    const fmtX = (v) => (axis === "labels" ? nf(0).format(v) + " labels" : money(v));
    const points = lc.points.filter((p) => xOf(p) > 0);
    const datasets = [];
    if (proj.available) {
      datasets.push({ label: "band high", data: proj.curve.map((c) => ({ x: c.x, y: c.high })), borderWidth: 0,
        pointRadius: 0, fill: "+1", backgroundColor: "rgba(47,111,223,0.15)" });
      datasets.push({ label: "band low", data: proj.curve.map((c) => ({ x: c.x, y: c.low })), borderWidth: 0, pointRadius: 0, fill: false });
      datasets.push({ label: "fitted curve", data: proj.curve.map((c) => ({ x: c.x, y: c.accuracy })), borderColor: "#2f6fdf",
        borderWidth: 2, pointRadius: 0, fill: false });
    }
    datasets.push({ label: "model versions", type: "scatter", data: points.map((p) => ({ x: xOf(p), y: p.accuracy })),
      backgroundColor: points.map((p) => (p.is_active ? "#e15759" : "#1d2430")), pointRadius: 5 });
    const xs = points.map(xOf).concat(proj.available ? proj.curve.map((c) => c.x) : []);
    const xMax = xs.length ? Math.max(...xs) : 1;
    datasets.push({ label: "target", data: [{ x: 0, y: lc.target_accuracy }, { x: xMax, y: lc.target_accuracy }],
      borderColor: "#59a14f", borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0, fill: false });
    chart(canvasId, {
      type: "line",
      data: { datasets },
      options: {
        parsing: false,
        scales: {
          x: { type: "linear", min: 0, title: { display: true, text: xTitle } },
          y: { title: { display: true, text: "evaluation accuracy" }, suggestedMax: Math.min(1, lc.target_accuracy + 0.01) },
        },
        plugins: { legend: { labels: { filter: (item) => !item.text.startsWith("band") } } },
      },
    });
    const out = document.getElementById(projId);
    out.replaceChildren();
    if (!proj.available) {
      out.append(el("span", { class: "unavailable" }, proj.reason));
    } else if (!proj.reachable) {
      out.append(el("strong", {}, `${pct(lc.target_accuracy)}: not reachable with this model at the current trend`),
        ` (fitted ceiling ${pct(proj.asymptote_accuracy)}).`);
    } else if (proj.still_needed_x === 0) {
      out.append(el("strong", {}, `${pct(lc.target_accuracy)} reached`),
        `: the fitted curve passes it at ~${fmtX(proj.needed_x)}; fitted ceiling ${pct(proj.asymptote_accuracy)}.`);
    } else {
      const band = proj.band_low === null && proj.band_high === null ? " (no band: needs 4+ model versions)" :
        ` (80 % band ${fmtX(proj.band_low)} – ${proj.band_high === null ? "unbounded" : fmtX(proj.band_high)})`;
      out.append(`To reach ${pct(lc.target_accuracy)}: `, el("strong", {}, `~${fmtX(proj.still_needed_x)} more`), band +
        `; fitted ceiling ${pct(proj.asymptote_accuracy)}.`);
    }
  }

  function renderConfusion(d) {
    const cm = d.confusion;
    const box = document.getElementById("confusion");
    box.replaceChildren();
    setText("confusion-sub", cm.model_version ? `model v${cm.model_version} · accuracy ${pct(cm.accuracy)}` +
      (cm.n_eval ? ` · ${nf(0).format(cm.n_eval)} eval items` : "") : "");
    if (!cm.available) { box.append(el("p", { class: "unavailable" }, cm.reason)); return; }
    box.append(el("p", { class: "axis-note" }, "rows: true class · columns: predicted class · colour: share of the row"));
    const table = el("table", { class: "confusion" });
    table.append(el("tr", {}, el("th", {}, ""), ...cm.class_names.map((n) => el("th", { title: n }, n.length > 12 ? n.slice(0, 11) + "…" : n))));
    cm.matrix.forEach((row, i) => {
      const total = row.reduce((a, b) => a + b, 0) || 1;
      table.append(el("tr", {}, el("th", { class: "row" }, cm.class_names[i]), ...row.map((v, j) => {
        const share = v / total;
        const bg = i === j ? `rgba(47,111,223,${0.1 + 0.8 * share})` : `rgba(225,87,89,${share ? 0.1 + 0.9 * share : 0})`;
        return el("td", { class: i === j ? "diag" : "", style: `background:${bg};color:${share > 0.55 ? "#fff" : "inherit"}`,
          title: `${cm.class_names[i]} → ${cm.class_names[j]}: ${v}` }, v);
      })));
    });
    box.append(table);
  }

  function errBox(label, value, reason, note) {
    return el("div", { class: "err-box" }, el("div", { class: "kpi-label" }, label),
      value === null ? el("div", { class: "unavailable" }, reason || "not yet available") : el("div", { class: "kpi-value" }, pct(value)),
      value === null ? "" : el("div", { class: "kpi-note" }, note));
  }

  function renderQuality(d) {
    const q = d.quality;
    document.getElementById("errors-row").replaceChildren(
      errBox("Human-level error", q.human_level_error, q.human_level_reason,
        q.human_level_basis === "gold" ? `best annotator vs gold (≥ ${q.human_level_min_gold} gold answers)`
          : "best annotator, estimated by Dawid–Skene"),
      errBox("Panel (consensus) error", q.panel_error, q.panel_reason,
        q.panel_basis === "gold" ? `consensus vs gold on ${q.panel_n} items` : `estimated by Dawid–Skene on ${q.panel_n} items`),
      errBox("Model error", q.model_error, q.model_reason, "1 − evaluation-set accuracy"));
    const tbody = document.querySelector("#table-quality tbody");
    tbody.replaceChildren();
    if (!q.annotators.length) tbody.append(el("tr", {}, el("td", { colspan: 5, class: "unavailable" }, "not yet available: no annotations")));
    for (const a of q.annotators) {
      tbody.append(el("tr", {}, el("td", {}, a.username),
        el("td", { class: "num" }, a.vs_gold_accuracy === null ? "n/a" : pct(a.vs_gold_accuracy)), el("td", { class: "num" }, a.vs_gold_n),
        el("td", { class: "num" }, a.vs_consensus_accuracy === null ? "n/a" : pct(a.vs_consensus_accuracy)),
        el("td", { class: "num" }, a.vs_consensus_n)));
    }
    const stat = (name, key) => {
      const v = q.agreement && q.agreement[key];
      if (!v || v.value === null) return `${name} n/a`;
      const ci = v.ci_low === null ? "" : ` [${nf(2).format(v.ci_low)}, ${nf(2).format(v.ci_high)}]`;
      return `${name} ${nf(2).format(v.value)}${ci}`;
    };
    const agreement = q.agreement_available
      ? "Agreement (95% bootstrap CI): " + [stat("Fleiss' κ", "fleiss_kappa"), stat("Krippendorff's α", "krippendorff_alpha"),
        stat("mean Cohen's κ", "cohen_kappa_mean"), stat("percent agreement", "percent_agreement")].join(" · ") + ". "
      : "Agreement (kappa, alpha): " + q.agreement_reason + ". ";
    setText("agreement-note", agreement +
      `${nf(0).format(q.gold_items)} gold items, ${nf(0).format(q.consensus_items)} consensus labels.`);
  }

  function renderJobs(jobs) {
    const ul = document.getElementById("jobs");
    ul.replaceChildren();
    if (!jobs.length) { ul.append(el("li", { class: "muted" }, "No import or ML job is running or waiting.")); return; }
    for (const j of jobs) {
      ul.append(el("li", {}, el("span", {}, `${j.kind} #${j.id}`), el("span", { class: `job-status ${j.status}` }, j.status),
        el("span", {}, el("div", { class: "job-bar" }, el("span", { style: `width:${(100 * j.progress).toFixed(1)}%` })),
          el("span", { class: "muted" }, j.message || "")),
        el("span", { class: "num" }, pct(j.progress, 0))));
    }
  }

  // --- loading -------------------------------------------------------------------------------

  function showError(message) {
    const box = document.getElementById("dash-error");
    box.textContent = message;
    box.hidden = !message;
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
    return body;
  }

  async function load(target) {
    try {
      const d = await getJson(`${config.api}?target_accuracy=${encodeURIComponent(target)}`);
      showError("");
      renderKpis(d); renderSpend(d); renderProgress(d); renderThroughput(d); renderPeople(d);
      renderCurve(d, "labels", "chart-curve-labels", "proj-labels");
      renderCurve(d, "money", "chart-curve-money", "proj-money");
      renderConfusion(d); renderQuality(d); renderJobs(d.jobs);
      document.body.dataset.dashboardLoaded = "1";
    } catch (err) {
      showError(`Could not load the dashboard: ${err.message}`);
    }
  }

  async function pollJobs() {
    try { renderJobs((await getJson(config.jobs_api)).jobs); } catch (err) { /* next poll retries */ }
  }

  document.getElementById("target-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const target = document.getElementById("target-input").value;
    const url = new URL(window.location.href);
    url.searchParams.set("target_accuracy", target);
    window.history.replaceState(null, "", url);
    load(target);
  });

  load(config.target_accuracy);
  setInterval(() => { if (!document.hidden) pollJobs(); }, config.poll_ms);
})();
