/* Pickers (webui/templates/_picker.html): fill a datalist from /lookup as the person types; in a list picker,
   choosing a suggestion adds its key as a new line of the text area. No framework; forms work without it. */
(function () {
  if (window.meterhubPickers) { return; }
  window.meterhubPickers = true;
  function scopeOf(input) {
    var field = input.form && input.dataset.scope ? input.form.elements[input.dataset.scope] : null;
    return field && field.value ? "&property_id=" + encodeURIComponent(field.value) : "";
  }
  function fill(input) {
    var list = document.getElementById(input.getAttribute("list"));
    var url = "/lookup?kind=" + encodeURIComponent(input.dataset.picker) + "&q=" + encodeURIComponent(input.value) + scopeOf(input);
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (rows) {
        list.innerHTML = "";
        rows.forEach(function (row) {
          var option = document.createElement("option");
          option.value = row.key;
          option.label = row.label;
          option.textContent = row.label;
          list.appendChild(option);
        });
        if (input.dataset.appendTo && input.value && chosen(input)) { append(input); }
      });
  }
  function append(input) {
    var area = input.form.elements[input.dataset.appendTo];
    var lines = area.value.split("\n").filter(function (l) { return l.trim(); });
    if (lines.indexOf(input.value) < 0) { lines.push(input.value); }
    area.value = lines.join("\n");
    input.value = "";
  }
  function chosen(input) {
    var list = document.getElementById(input.getAttribute("list"));
    return Array.prototype.some.call(list.options, function (o) { return o.value === input.value; });
  }
  document.addEventListener("input", function (e) {
    var input = e.target;
    if (!input.dataset || !input.dataset.picker) { return; }
    if (input.dataset.appendTo && input.value && chosen(input)) {
      append(input);
      return;
    }
    clearTimeout(input._pickerTimer);
    input._pickerTimer = setTimeout(function () { fill(input); }, 150);
  });
  document.addEventListener("focusin", function (e) {
    if (e.target.dataset && e.target.dataset.picker) { fill(e.target); }
  });
})();
