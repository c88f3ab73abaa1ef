// The mask opacity slider (remembered across pages) and a red outline on any picture that failed to load.
(function () {
  var slider = document.getElementById("opacity");
  function apply(value) { document.documentElement.style.setProperty("--mask-opacity", value / 100); }
  if (slider) {
    var kept = localStorage.getItem("segmodels.opacity");
    if (kept !== null) { slider.value = kept; }
    apply(slider.value);
    slider.addEventListener("input", function () { apply(slider.value); localStorage.setItem("segmodels.opacity", slider.value); });
  }
  document.querySelectorAll("img").forEach(function (img) {
    function check() { if (img.complete && img.naturalWidth === 0) { img.classList.add("broken"); } }
    img.addEventListener("error", check); check();
  });
  document.querySelectorAll("[data-epoch]").forEach(function (cell) {
    var seconds = Number(cell.dataset.epoch);
    if (seconds) { cell.textContent = new Date(seconds * 1000).toLocaleString(); }
  });
})();
