/* meterhub console: the confirmation dialog of dangerous actions (forms with data-confirm, see _ui.html),
   toasts, and the cursor in a refused form's first bad field. Works without this file: the server then answers
   such a POST with its confirmation page. */
(function () {
  "use strict";

  function modal() {
    let el = document.getElementById("mh-confirm-modal");
    if (el) return el;
    el = document.createElement("div");
    el.className = "modal fade";
    el.id = "mh-confirm-modal";
    el.tabIndex = -1;
    el.setAttribute("aria-labelledby", "mh-confirm-modal-title");
    el.setAttribute("aria-hidden", "true");
    const t = document.documentElement.dataset;
    el.innerHTML =
      '<div class="modal-dialog modal-dialog-centered"><div class="modal-content">' +
      '<div class="modal-header text-bg-danger"><h2 class="modal-title h5" id="mh-confirm-modal-title"></h2>' +
      '<button type="button" class="btn-close btn-close-white" data-bs-dismiss="modal"></button></div>' +
      '<div class="modal-body"><dl class="row mb-0"></dl></div>' +
      '<div class="modal-footer"><button type="button" class="btn btn-outline-secondary" data-bs-dismiss="modal"></button>' +
      '<button type="button" class="btn btn-danger mh-confirm-ok"></button></div></div></div>';
    el.querySelector(".btn-close").setAttribute("aria-label", t.cancelLabel || "Cancel");
    el.querySelector("[data-bs-dismiss=modal].btn").textContent = t.cancelLabel || "Cancel";
    document.body.appendChild(el);
    return el;
  }

  function factsOf(form) {
    const box = form.querySelector(".mh-confirm-facts");
    const rows = [];
    if (!box) return { title: "", rows: rows };
    box.querySelectorAll("dt").forEach(function (dt) {
      const dd = dt.nextElementSibling;
      let value = dd ? dd.textContent : "";
      if (dd && dd.dataset.field && form.elements[dd.dataset.field]) {
        const input = form.elements[dd.dataset.field];
        value = input.tagName === "SELECT" ? input.options[input.selectedIndex].text : input.value;
      }
      rows.push([dt.textContent, value]);
    });
    return { title: box.dataset.title, rows: rows };
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!form.hasAttribute("data-confirm") || form.dataset.confirmed === "yes" || !window.bootstrap) return;
    if (!form.checkValidity()) return;
    event.preventDefault();
    const submitter = event.submitter;
    const el = modal();
    const info = factsOf(form);
    el.querySelector(".modal-title").textContent = info.title;
    const dl = el.querySelector("dl");
    dl.textContent = "";
    info.rows.forEach(function (row) {
      const dt = document.createElement("dt");
      dt.className = "col-4 fw-normal text-body-secondary";
      dt.textContent = row[0];
      const dd = document.createElement("dd");
      dd.className = "col-8";
      dd.textContent = row[1] || "—";
      dl.append(dt, dd);
    });
    const ok = el.querySelector(".mh-confirm-ok");
    ok.textContent = (submitter && submitter.textContent.trim()) || info.title;
    const dialog = window.bootstrap.Modal.getOrCreateInstance(el);
    ok.onclick = function () {
      const field = document.createElement("input");
      field.type = "hidden";
      field.name = "confirmed";
      field.value = "yes";
      form.appendChild(field);
      if (submitter && submitter.name) {
        const pressed = document.createElement("input");
        pressed.type = "hidden";
        pressed.name = submitter.name;
        pressed.value = submitter.value;
        form.appendChild(pressed);
      }
      form.dataset.confirmed = "yes";
      dialog.hide();
      form.submit();
    };
    el.addEventListener("shown.bs.modal", function () { ok.focus(); }, { once: true });
    dialog.show();
  });

  document.addEventListener("DOMContentLoaded", function () {
    // a form the server refused: the cursor goes to its first field marked invalid (its message is beside it)
    const bad = document.querySelector("form [aria-invalid=true]");
    if (bad) {
      bad.focus({ preventScroll: true });
      bad.scrollIntoView({ block: "center" });
    }
    if (!window.bootstrap) return;
    document.querySelectorAll(".toast").forEach(function (t) {
      window.bootstrap.Toast.getOrCreateInstance(t, { autohide: !t.classList.contains("text-bg-danger"), delay: 8000 });
    });
  });
})();
