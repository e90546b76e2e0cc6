/* Gridwatch drill-down: map styles for dash-leaflet ({variable: "gridwatch.drill.areaStyle"}) and the table's
   refresh when the view (the URL) changes. */
(function () {
  "use strict";
  var CASE_RAMP = ["#eff6ff", "#bfdbfe", "#60a5fa", "#2563eb", "#1e3a8a"];
  var api = {
    areaStyle: function (feature, context) {
      var h = (context && context.hideout) || {};
      var code = feature.properties.code;
      if (h.leaf) return {color: "#0f172a", weight: 2.5, fillColor: "#60a5fa", fillOpacity: 0.18};
      if (h.mode === "cases") {
        var n = (h.counts || {})[code] || 0, max = h.max || 0;
        var idx = max ? Math.min(CASE_RAMP.length - 1, Math.floor(CASE_RAMP.length * n / (max + 1))) : 0;
        return {color: "#1e293b", weight: 1.2, fillColor: CASE_RAMP[idx], fillOpacity: 0.8};
      }
      var lv = (h.levels || {})[code] || 1;
      return {color: "#1e293b", weight: 1.2, fillColor: (h.colors || {})[lv], fillOpacity: lv === 1 ? 0.35 : 0.6};
    },
    hoverStyle: function () {
      return {weight: 3, color: "#0f172a"};
    },
    refreshGrid: function () {
      if (window.dash_ag_grid && window.dash_ag_grid.getApiAsync) {
        window.dash_ag_grid.getApiAsync("drill-grid").then(function (grid) {
          grid.purgeInfiniteCache();
          grid.paginationGoToFirstPage();
        });
      }
      return Date.now();
    }
  };
  window.gridwatch = window.gridwatch || {};
  window.gridwatch.drill = api;
})();
