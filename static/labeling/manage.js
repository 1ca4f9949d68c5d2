/* The manager's project page: upload images to the import API and show the progress.
 *
 * Small uploads answer 201 with the import report; larger ones answer 202 with an import
 * job, polled at its url until it succeeds or fails. Everything shown from the server goes
 * in through textContent, never as HTML. */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("manage-config").textContent);
  const form = document.getElementById("import-form");
  const filesInput = document.getElementById("import-files");
  const zipInput = document.getElementById("import-zip");
  const submitButton = document.getElementById("import-submit");
  const statusBox = document.getElementById("import-status");
  const bar = document.getElementById("import-progress");
  const phase = document.getElementById("import-phase");
  const reportBox = document.getElementById("import-report");

  function csrfToken() {
    return form.querySelector("input[name=csrfmiddlewaretoken]").value;
  }

  function setProgress(percent, text) {
    const p = Math.max(0, Math.min(100, Math.round(percent)));
    bar.firstElementChild.style.width = p + "%";
    bar.setAttribute("aria-valuenow", String(p));
    phase.textContent = text;
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function showReport(report) {
    reportBox.replaceChildren();
    const summary = el("p", "", { id: "import-summary" });
    const dup = report.duplicates.length, rej = report.rejected.length;
    summary.textContent = `Imported ${report.imported} image${report.imported === 1 ? "" : "s"}` +
      `, ${dup} duplicate${dup === 1 ? "" : "s"} skipped, ${rej} refused.`;
    reportBox.append(summary);
    if (dup) {
      const list = el("ul", undefined, { class: "duplicates" });
      for (const d of report.duplicates) list.append(el("li", `${d.file}: already in the project`));
      reportBox.append(el("p", "Duplicates:"), list);
    }
    if (rej) {
      const list = el("ul", undefined, { class: "rejected" });
      for (const r of report.rejected) list.append(el("li", `${r.file}: ${r.reason}`));
      reportBox.append(el("p", "Refused:"), list);
    }
    // New items start open ("Wants annotators"): move the counters without a reload.
    const total = document.getElementById("items-total");
    const open = document.getElementById("items-status-open");
    const done = document.getElementById("items-done");
    if (total) {
      const n = Number(total.textContent) + report.imported;
      total.textContent = String(n);
      if (done) {
        const d = Number(done.dataset.done);
        done.textContent = `${d} (${n ? Math.round((100 * d) / n) : 0}%)`;
      }
    }
    if (open) open.textContent = String(Number(open.textContent) + report.imported);
  }

  function fail(message) {
    setProgress(0, "Import failed: " + message);
    statusBox.dataset.state = "failed";
    submitButton.disabled = false;
  }

  function finish(report) {
    setProgress(100, "Import finished (100%).");
    statusBox.dataset.state = "done";
    showReport(report);
    submitButton.disabled = false;
    form.reset();
  }

  function errorMessage(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      let text = body.message || `HTTP ${xhr.status}`;
      const fields = body.extra && body.extra.fields;
      if (fields) text += " " + Object.entries(fields).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`).join("; ");
      return text;
    } catch (e) {
      return `HTTP ${xhr.status}`;
    }
  }

  async function poll(url) {
    for (;;) {
      let job;
      try {
        const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!res.ok) return fail(`could not read the import job (HTTP ${res.status}).`);
        job = await res.json();
      } catch (e) {
        setProgress(0, "Cannot reach the server — retrying…");
        await new Promise((r) => setTimeout(r, config.pollMs * 3));
        continue;
      }
      if (job.status === "succeeded") return finish(job.report);
      if (job.status === "failed") return fail(job.error || "the job failed.");
      const percent = job.total ? (100 * job.processed) / job.total : 0;
      setProgress(percent, `Importing in the background: ${job.processed} / ${job.total || "?"} files (${job.status}).`);
      await new Promise((r) => setTimeout(r, config.pollMs));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const files = Array.from(filesInput.files);
    const zip = zipInput.files[0];
    if (!files.length && !zip) return fail("choose image files or a zip first.");
    if (files.length && zip) return fail("choose either image files or a zip, not both.");
    const data = new FormData();
    if (zip) data.append("zip", zip);
    else for (const f of files) data.append("files", f);

    statusBox.hidden = false;
    statusBox.dataset.state = "uploading";
    reportBox.replaceChildren();
    submitButton.disabled = true;
    setProgress(0, "Uploading…");

    // XMLHttpRequest rather than fetch: it reports upload progress.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", config.importUrl);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) setProgress((100 * e.loaded) / e.total, `Uploading… ${Math.round((100 * e.loaded) / e.total)}%`);
    });
    xhr.addEventListener("error", () => fail("cannot reach the server."));
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) return finish(JSON.parse(xhr.responseText));
      if (xhr.status === 202) {
        const job = JSON.parse(xhr.responseText);
        statusBox.dataset.state = "polling";
        setProgress(0, "Queued for import…");
        return poll(job.url);
      }
      fail(errorMessage(xhr));
    });
    xhr.send(data);
  });
})();
