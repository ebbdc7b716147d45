// Camera QR scanning with the browser's BarcodeDetector (no library needed where it exists);
// elsewhere the photo upload field does the same job on the server.
(function () {
  const start = document.getElementById("scan-start");
  const video = document.getElementById("scan-video");
  const field = document.querySelector("[name=qr_payload]");
  if (!start) return;
  if (!("BarcodeDetector" in window) || !navigator.mediaDevices) { start.hidden = true; return; }
  start.addEventListener("click", async function () {
    const detector = new BarcodeDetector({ formats: ["qr_code"] });
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = stream; video.hidden = false; await video.play();
    const tick = async function () {
      const codes = await detector.detect(video).catch(function () { return []; });
      if (codes.length) {
        field.value = codes[0].rawValue;
        stream.getTracks().forEach(function (t) { t.stop(); });
        video.hidden = true;
        return;
      }
      requestAnimationFrame(tick);
    };
    tick();
  });
})();
