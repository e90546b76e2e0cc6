/* The big screen (/screen) in the browser: scales the 1920×1080 canvas, restyles the map from the snapshot,
   draws the panels and ticks the clock and the SLA countdowns every second without asking the server.
   Clientside callbacks of layouts/screen.py call window.gridwatch.screen.*; grid/street styles are read by
   dash-leaflet through {variable: "gridwatch.screen.gridStyle"}. */
(function () {
  "use strict";
  var NU = function () { return window.dash_clientside.no_update; };

  // ------------------------------------------------------------------ component helpers (Dash JSON)
  function h(tag, props, children) {
    props = props || {};
    if (children !== undefined) props.children = children;
    return {type: tag.charAt(0).toUpperCase() + tag.slice(1), namespace: "dash_html_components", props: props};
  }
  function leaf(type, props) { return {type: type, namespace: "dash_leaflet", props: props}; }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function cityParts(ms) {  // Asia/Shanghai wall time, whatever the browser's zone
    var d = new Date(ms + 8 * 3600 * 1000);
    return {y: d.getUTCFullYear(), m: d.getUTCMonth() + 1, d: d.getUTCDate(), H: d.getUTCHours(),
            M: d.getUTCMinutes(), S: d.getUTCSeconds(), wd: (d.getUTCDay() + 6) % 7};
  }
  function hms(ms) { var p = cityParts(ms); return pad(p.H) + ":" + pad(p.M) + ":" + pad(p.S); }
  function hm(ms) { var p = cityParts(ms); return pad(p.H) + ":" + pad(p.M); }
  function pct(v) { return v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%"; }
  function num(v) { return v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"); }
  function dur(s) {
    var neg = s < 0; s = Math.abs(Math.floor(s));
    var H = Math.floor(s / 3600), M = Math.floor(s % 3600 / 60), S = s % 60;
    return (neg ? "+" : "") + pad(H) + ":" + pad(M) + ":" + pad(S);
  }

  // ------------------------------------------------------------------ scaling (no scrollbars, any 16:9 or a wall)
  function fit() {
    var c = document.getElementById("scr-canvas");
    if (!c) return;
    var vw = window.innerWidth, vh = window.innerHeight;
    var wall = c.classList.contains("scr-wall");
    var w = 1920, hgt = 1080;
    if (wall) w = Math.max(1920, Math.round(hgt * vw / vh));  // use the wall's width instead of letterboxing
    var k = Math.min(vw / w, vh / hgt);
    c.style.width = w + "px";
    c.style.height = hgt + "px";
    c.style.transform = "translate(" + Math.round((vw - w * k) / 2) + "px," + Math.round((vh - hgt * k) / 2) + "px) scale(" + k + ")";
    c.setAttribute("data-scale", k.toFixed(4));
  }
  window.addEventListener("resize", fit);
  new MutationObserver(function () {
    var c = document.getElementById("scr-canvas");
    if (c && !c.getAttribute("data-scale")) fit();
  }).observe(document.documentElement, {childList: true, subtree: true});

  // ------------------------------------------------------------------ panels
  function kpiTile(label, value, delta, cls, lowerIsBetter, unit) {
    var d = null;
    if (delta !== null && delta !== undefined && !isNaN(delta)) {
      var up = delta > 0, good = lowerIsBetter ? !up : up;
      var tone = lowerIsBetter === null ? "neutral" : (good ? "good" : "bad");
      var txt = unit === "pt" ? Math.abs(delta * 100).toFixed(1) : num(Math.abs(delta));
      d = h("div", {className: "scr-kd " + (delta === 0 ? "" : tone)},
            (delta === 0 ? "＝ 0" : (up ? "▲ " : "▼ ") + txt));
    }
    return h("div", {className: "scr-kpi"}, [
      h("div", {className: "scr-kv " + (cls || "")}, value), h("div", {className: "scr-kl"}, label), d]);
  }
  function alarmTile(active, delta, kinds, t) {  // active now; the change is in alarms opened today vs yesterday
    var d = isNaN(delta) ? "" : (delta > 0 ? "▲ " + delta : (delta < 0 ? "▼ " + (-delta) : "＝ 0"));
    var tone = isNaN(delta) || delta === 0 ? "" : (delta > 0 ? "bad" : "good");
    return h("div", {className: "scr-kpi"}, [h("div", {className: "scr-kv orange"}, num(active)),
      h("div", {className: "scr-kl"}, t.scr_alarms),
      h("div", {className: "scr-kd"}, [h("span", {className: tone}, d), kinds ? h("span", {className: "kinds"}, " · " + kinds) : null])]);
  }
  function bars(rows, cls) {
    if (!rows || !rows.length) return h("div", {className: "scr-wait"}, "—");
    var max = Math.max.apply(null, rows.map(function (r) { return r[1]; })) || 1;
    return h("div", {className: "scr-bars " + (cls || "")}, rows.map(function (r) {
      return h("div", {className: "scr-bar"}, [
        h("span", {className: "scr-bl"}, r[0]),
        h("span", {className: "scr-bt"}, h("i", {style: {width: (100 * r[1] / max).toFixed(1) + "%"}})),
        h("span", {className: "scr-bn"}, num(r[1]))]);
    }));
  }
  function trend(today, yesterday, hourNow, t) {
    var W = 400, H = 150, P = 6;
    var max = Math.max(1, Math.max.apply(null, today.concat(yesterday)));
    function line(vals, upto) {
      var pts = [];
      for (var i = 0; i < vals.length && i <= upto; i++) {
        pts.push((P + i * (W - 2 * P) / 23).toFixed(1) + "," + (H - P - vals[i] * (H - 2 * P) / max).toFixed(1));
      }
      return pts.join(" ");
    }
    var svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ' + W + ' ' + H + '" preserveAspectRatio="none">' +
      '<polyline fill="none" stroke="#5a7fb0" stroke-width="2" stroke-dasharray="6 4" points="' + line(yesterday, 23) + '"/>' +
      '<polyline fill="none" stroke="#4fc3f7" stroke-width="3" points="' + line(today, hourNow) + '"/></svg>';
    return h("div", {className: "scr-trend"}, [
      h("img", {src: "data:image/svg+xml;utf8," + encodeURIComponent(svg), className: "scr-trend-img", alt: ""}),
      h("div", {className: "scr-trend-legend"}, [
        h("span", {className: "t"}, "— " + t.scr_trend_today + " " + num(today.reduce(function (a, b) { return a + b; }, 0))),
        h("span", {className: "y"}, "- - " + t.scr_trend_yesterday + " " + num(yesterday.reduce(function (a, b) { return a + b; }, 0))),
        h("span", {className: "ax"}, "0–24h")])]);
  }
  function place(c, t) {
    if (!c.areas || !c.areas.length) return t.scr_unlocated;
    return c.areas.join(" · ");
  }
  function gradeCls(g) { return "scr-g" + g; }
  // 督办: a red badge, and (withNote) the 批示 beside it, shortened by the server
  function supMark(c, t, withNote) {
    if (!c.sup) return null;
    return h("span", {className: "scr-sup-mark", title: c.note || ""}, [h("b", {className: "scr-sup"}, t.scr_sup),
      withNote && c.note ? h("span", {className: "scr-sup-note"}, c.note) : null]);
  }

  var api = {
    gridStyle: function (feature, context) {
      var h = context.hideout || {}, lv = (h.levels || {})[feature.properties.code] || 1;
      return {color: "#0b1f45", weight: 0.8, fillColor: (h.colors || {})[lv], fillOpacity: lv === 1 ? 0.38 : 0.62};
    },
    streetStyle: function () {
      return {color: "#cfe8ff", weight: 2.4, fill: false, opacity: 0.9};
    },

    onFast: function (fast, cfg) {
      if (!fast) return [NU(), NU(), NU(), NU()];
      var t = cfg.texts, grades = t.scr_grades.split(",");
      var markers = [];
      (fast.alarms || []).forEach(function (a) {
        if (a.lat === null || a.lon === null) return;
        markers.push(leaf("CircleMarker", {center: [a.lat, a.lon], radius: 9, color: "#ff1744", weight: 3,
          fillColor: "#ff5252", fillOpacity: 0.9, className: "scr-alarm", interactive: false,
          id: "alarm-" + a.device}));
      });
      (fast.pulses || []).forEach(function (p) {
        markers.push(leaf("CircleMarker", {center: [p.lat, p.lon], radius: 14, color: (cfg.grade_colors || {})[p.grade] || "#fff",
          weight: 4, fill: false, className: "scr-pulse", interactive: false, id: "pulse-" + p.id}));
      });
      var ticker = (fast.ticker || []).map(function (c) {
        return h("div", {className: "scr-tk", "data-case": String(c.id)}, [
          h("span", {className: "scr-tg " + gradeCls(c.grade)}, "■ " + (grades[c.grade - 1] || c.grade)),
          h("span", {className: "scr-tt"}, hm(c.reported)),
          supMark(c, t, true),
          h("span", {className: "scr-tp"}, place(c, t)),
          h("span", {className: "scr-tx"}, "— " + c.title),
          h("span", {className: "scr-td"}, c.dept ? "→ " + c.dept : "")]);
      });
      if (!ticker.length) ticker = [h("div", {className: "scr-wait"}, t.scr_no_data)];
      var feeds = (fast.feeds || []).map(function (f) {
        var late = !f.ok;
        var label = ((cfg.sources || {})[f.name] || f.name) + (late && f.age_s !== null ? " " + t.scr_feed_late + " " + dur(f.age_s).slice(0, 5) : "");
        return h("span", {className: "scr-feed " + (late ? "late" : "ok")}, [h("i", {}), label]);
      });
      return [{levels: fast.levels, colors: cfg.level_colors}, markers, ticker, feeds];
    },

    onSlow: function (slow, fast, cfg) {
      if (!slow) return [NU(), NU(), NU(), NU(), NU(), NU()];
      var t = cfg.texts, k = slow.kpis, y = slow.kpis_yesterday;
      function d(key) { return (k[key] === null || y[key] === null || k[key] === undefined || y[key] === undefined) ? null : k[key] - y[key]; }
      var overdue = fast ? fast.overdue : k.overdue_open;
      var alarms = fast ? fast.alarms_active : null;
      var kinds = {};
      ((fast && fast.alarms) || []).forEach(function (a) { kinds[a.label] = (kinds[a.label] || 0) + 1; });
      var kindText = Object.keys(kinds).map(function (n) { return n + kinds[n]; }).join(" ");
      var tiles = h("div", {className: "scr-kpis"}, [
        kpiTile(t.scr_cases, num(k.cases_total), d("cases_total"), "", null, "n"),  // more cases: neither good nor bad
        kpiTile(t.scr_resolution, pct(k.resolution_rate), d("resolution_rate"), "", false, "pt"),
        kpiTile(t.scr_on_time, pct(k.on_time_rate), d("on_time_rate"), "", false, "pt"),
        kpiTile(t.scr_onsite, pct(k.onsite_rate), d("onsite_rate"), "", false, "pt"),
        kpiTile(t.scr_overdue, num(overdue), y.overdue_open === null ? null : overdue - y.overdue_open, "red", true, "n"),
        alarmTile(alarms, slow.alarms_today - slow.alarms_yesterday, kindText, t)]);
      var rows = (slow.ranking || []);
      var shown = rows.length > 7 ? rows.slice(0, 5).concat([null], rows.slice(-2)) : rows;
      var table = h("table", {className: "scr-table"}, [
        h("thead", {}, h("tr", {}, [h("th", {}, t.scr_rank), h("th", {}, t.scr_dept), h("th", {}, t.scr_rate),
          h("th", {}, t.scr_overdue_short), h("th", {}, t.scr_change)])),
        h("tbody", {}, shown.map(function (r) {
          if (r === null) return h("tr", {className: "gap"}, [h("td", {colSpan: 5}, "…")]);
          var ch = r.change === null ? "–" : (r.change > 0 ? "▲" + r.change : (r.change < 0 ? "▼" + (-r.change) : "＝"));
          var chCls = r.change > 0 ? "good" : (r.change < 0 ? "bad" : "");
          var low = r.on_time !== null && r.on_time < 0.9;
          return h("tr", {}, [h("td", {}, String(r.rank)), h("td", {}, r.name),
            h("td", {className: low ? "bad" : ""}, pct(r.on_time)), h("td", {className: r.overdue ? "bad" : ""}, num(r.overdue)),
            h("td", {className: chCls}, ch)]);
        }))]);
      var lists = h("div", {className: "scr-lists"}, [
        h("div", {}, [h("span", {className: "red-label"}, t.scr_red + " "), (slow.red || []).join(" · ") || "—"]),
        h("div", {}, [h("span", {className: "black-label"}, t.scr_black + " "), (slow.black || []).join(" · ") || "—"])]);
      var depts = rows.length ? [table, lists] : [h("div", {className: "scr-wait"}, t.scr_no_data)];
      var note = t.scr_min_volume.replace("{n}", slow.min_volume);
      var srcs = (slow.sources || []).map(function (r) { return [(cfg.sources || {})[r[0]] || r[0], r[1]]; });
      return [tiles, bars(slow.categories), bars(srcs, "src"),
              trend(slow.hourly_today || [], slow.hourly_yesterday || [], slow.hour_now, t), depts, note];
    },

    onDrill: function (fast, cfg) {
      if (!fast) return [NU(), NU()];
      var d = fast.drill, t = cfg.texts;
      if (!d) return ["", {display: "none"}];
      return [t.scr_drill + (d.since ? " · " + t.scr_drill_since + " " + hm(d.since) : ""), {display: "block"}];
    },

    onTick: function (n, fast, seen, beat, cfg) {
      var now = Date.now(), t = cfg.texts, p = cityParts(now);
      var wd = t.scr_weekdays.split(",")[p.wd];
      var date = cfg.lang === "zh" ? p.y + "年" + p.m + "月" + p.d + "日 " + wd : p.y + "-" + pad(p.m) + "-" + pad(p.d) + " " + wd;
      // the time of the newest applied data (not the server's clock: a server without a worker still answers)
      var dataAt = fast && fast.data_at;
      var updated = dataAt ? t.scr_updated + " " + hms(dataAt) : t.scr_waiting;
      var sla = NU();
      if (fast) {
        var rows = (fast.sla || []).map(function (c) {
          var left = (c.due - now) / 1000;
          var total = (c.due - c.reported) / 1000;
          var cls = left < 0 ? "over" : (total > 0 && left <= 0.2 * total ? "warn" : "ok");
          return h("tr", {className: cls, "data-case": String(c.id)}, [h("td", {}, [h("span", {className: "scr-tg " + gradeCls(c.grade)}, "■ "),
            supMark(c, t, false), c.title]),
            h("td", {className: c.dept ? "" : "scr-undispatched"}, c.dept || t.scr_undispatched), h("td", {className: "scr-cd " + cls}, dur(left))]);
        });
        sla = rows.length ? h("table", {className: "scr-table scr-sla"}, [
          h("thead", {}, h("tr", {}, [h("th", {}, t.scr_sla_case), h("th", {}, t.scr_sla_dept), h("th", {}, t.scr_sla_left)])),
          h("tbody", {}, rows)]) : h("div", {className: "scr-wait"}, t.scr_no_data);
      }
      var staleMs = seen ? now - seen : null;
      var stale = staleMs !== null && staleMs > cfg.stale_after_ms;
      // two banners: the server is unreachable (数据更新中断), or it answers but nothing is applied (数据停止更新)
      var stopped = !stale && fast && fast.stopped;
      var staleText = stale ? t.scr_stale + " " + hm(beat || seen)
        : (stopped ? t.scr_stopped + (dataAt ? " · " + t.scr_last_data + " " + hm(dataAt) : "") : "");
      var staleStyle = {display: stale || stopped ? "block" : "none"};
      // rotation: district, then each street, ``rotate`` seconds each; or the street asked for
      var viewport = NU(), label = NU();
      var views = [cfg.district].concat(cfg.streets);
      var idx = 0;
      if (cfg.rotate) idx = Math.floor(now / 1000 / cfg.rotate) % views.length;
      else if (cfg.area) idx = 1 + cfg.streets.findIndex(function (s) { return s.code === cfg.area; });
      var view = views[idx] || cfg.district;
      // Whenever the map's box changes size (the canvas sized, a resize), Leaflet is told to measure it again and
      // the view is fitted afresh — twice, one tick apart, as the first measure can come before the layout settles.
      var inval = NU();
      var box = document.getElementById("scr-map");
      var size = box ? box.clientWidth + "x" + box.clientHeight : "";
      if (size !== window.__gwSize) { window.__gwSize = size; window.__gwFit = 0; }
      var step = window.__gwFit || 0;
      if (step < 4) {
        // Leaflet re-measures its box on a window resize (its own handler; the invalidateSize prop alone did not)
        if (step % 2 === 0) { inval = now; window.dispatchEvent(new Event("resize")); }
        else viewport = {bounds: view.bounds};
        window.__gwFit = step + 1;
        window.__gwView = view.code;
        label = view.code === cfg.district.code ? "" : view.name;
      } else if (window.__gwView !== view.code) {
        viewport = {bounds: view.bounds, transition: "flyToBounds"};
        window.__gwView = view.code;
        label = view.code === cfg.district.code ? "" : view.name;
      }
      return [hms(now), date, updated, sla, staleText, staleStyle, viewport, label, inval];
    }
  };
  window.gridwatch = window.gridwatch || {};
  window.gridwatch.screen = api;
})();
