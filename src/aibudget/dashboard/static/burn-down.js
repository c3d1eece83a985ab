// Draws the practice page's burn-down chart with the vendored uPlot from the JSON the page carries.
// Amounts arrive as whole micro-USD and are shown in USD; the chart only displays, it never adds up.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("burn-down-data").textContent);
  const target = document.getElementById("burn-down");
  const usd = (micros) => micros == null ? "–" : "$" + (micros / 1e6).toFixed(2);
  const days = data.days.map((day) => Date.parse(day + "T12:00:00Z") / 1000);
  const flat = (value) => days.map(() => value);
  const series = [
    {},
    { label: "Spent that day", scale: "spend", stroke: "#b35c00", fill: "rgba(179,92,0,0.45)", value: (u, v) => usd(v),
      paths: uPlot.paths.bars({ size: [0.6, 40] }), points: { show: false } },
    { label: "Included left", stroke: "#0b5cad", width: 2, value: (u, v) => usd(v) },
    { label: "Credit left (now)", stroke: "#1d6b35", dash: [6, 4], value: (u, v) => usd(v) },
    { label: "Open holds (now)", stroke: "#7a3e9d", dash: [2, 3], value: (u, v) => usd(v) },
  ];
  function draw() {
    target.textContent = "";
    const chart = new uPlot({
      width: Math.max(280, target.clientWidth - 2),
      height: 320,
      series: series,
      // budget lines on the left axis; spend per day, far smaller, on its own axis on the right
      axes: [
        {},
        { values: (u, ticks) => ticks.map(usd), size: 70 },
        { scale: "spend", side: 1, grid: { show: false }, values: (u, ticks) => ticks.map(usd), size: 70 },
      ],
      scales: {
        x: { time: true },
        y: { range: (u, min, max) => [0, Math.max(max, 1) * 1.05] },
        spend: { range: (u, min, max) => [0, Math.max(max, 0.01e6) * 1.1] },
      },
    }, [days, data.spent, data.included_left, flat(data.credit), flat(data.held)], target);
    target.dataset.drawn = String(days.length);
    return chart;
  }
  draw();
  let pending = null;
  window.addEventListener("resize", () => { clearTimeout(pending); pending = setTimeout(draw, 150); });
})();
