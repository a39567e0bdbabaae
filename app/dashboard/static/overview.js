// The overview chart: counters per period from the page's data-series, drawn with uPlot.
"use strict";
(function () {
  const element = document.getElementById("chart");
  if (!element || typeof uPlot === "undefined") return;
  const data = JSON.parse(element.dataset.series);
  const colours = {
    requests: "#4e79a7", delivered: "#59a14f", deferred: "#f28e2b",
    bounces: "#e15759", opens: "#76b7b2", clicks: "#b07aa1",
  };
  const names = data.names; // in the page's order, not JSON's sorted keys
  const series = [{}].concat(names.map((name) => ({
    label: name, stroke: colours[name] || "#333", width: 2, points: { show: false },
  })));
  const columns = [data.times].concat(names.map((name) => data.values[name]));
  function size() {
    return { width: Math.max(280, element.clientWidth), height: window.innerWidth < 600 ? 220 : 300 };
  }
  const plot = new uPlot(Object.assign({ series: series, scales: { x: { time: true } } }, size()), columns, element);
  element.classList.add("drawn");
  window.addEventListener("resize", () => plot.setSize(size()));
})();
