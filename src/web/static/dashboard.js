"use strict";
// keel dashboard: one WebSocket feed (/ws/dashboard), reconnecting by itself.

const $ = (id) => document.getElementById(id);
const money = (x) => (x === null || x === undefined) ? "–" : Number(x).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const percent = (x) => (x === null || x === undefined) ? "–" : (100 * Number(x)).toFixed(2) + "%";

let chart = null;
const curve = [[], []];

function setBadge(element, text) {
  element.textContent = text;
  element.className = "badge " + text;
}

function drawChart() {
  const box = $("equity-chart");
  if (chart === null) {
    chart = new uPlot({
      width: box.clientWidth || 800, height: 240,
      series: [{}, { label: "equity", stroke: "#58a6ff", width: 1.5 }],
      axes: [{ stroke: "#7d8a96" }, { stroke: "#7d8a96", size: 70 }],
      legend: { show: false },
    }, curve, box);
    window.addEventListener("resize", () => chart.setSize({ width: box.clientWidth, height: 240 }));
  } else {
    chart.setData(curve);
  }
}

function addPoints(points, replace) {
  if (replace) { curve[0].length = 0; curve[1].length = 0; }
  for (const [ms, equity] of points) {
    const t = ms / 1000;
    if (curve[0].length && t <= curve[0][curve[0].length - 1]) continue;
    curve[0].push(t); curve[1].push(equity);
  }
  if (curve[0].length > 5000) { curve[0].splice(0, curve[0].length - 5000); curve[1].splice(0, curve[1].length - 5000); }
  drawChart();
}

function riskBar(label, used, limit) {
  const share = (limit && limit > 0 && used !== null && used !== undefined) ? Math.min(1, Math.abs(used) / limit) : 0;
  const level = share > 0.9 ? "bad" : share > 0.7 ? "warn" : "";
  const usedText = used === null || used === undefined ? "–" : Number(used).toFixed(4);
  const limitText = limit === null || limit === undefined ? "none" : Number(limit).toFixed(4);
  return `<div>${label}: ${usedText} of ${limitText}</div><div class="bar"><span class="${level}" style="width:${(100 * share).toFixed(1)}%"></span></div>`;
}

function rows(element, items, columns) {
  element.innerHTML = items.map((item) => "<tr>" + columns.map((c) => `<td>${c(item)}</td>`).join("") + "</tr>").join("");
}

function sessionText(session) {
  if (!session) return "";
  if (!session.recovered) return `session ${session.number}`;
  const r = session.reconciliation || {};
  const problems = (r.mismatches || []).length;
  return `session ${session.number}, recovered: ${r.missed_fills || 0} missed fills applied, ` +
    (problems ? `${problems} mismatches` : "venue agrees");
}

function render(message) {
  const s = message.status;
  $("stale").hidden = !message.stale;
  $("stale").textContent = message.stale ? `stale: data ${Math.round(message.snapshot_age_seconds)} s old` : "";
  setBadge($("health"), s.health);
  setBadge($("trading-state"), s.trading_state);
  $("clock").textContent = s.time || "";
  $("session").textContent = sessionText(s.session);
  $("equity").textContent = money(s.equity);
  $("pnl").textContent = money(s.pnl);
  $("pnl").className = "big " + (Number(s.pnl) >= 0 ? "positive" : "negative");
  $("roi").textContent = "ROI " + percent(s.current_roi);
  $("drawdown").textContent = percent(s.drawdown);
  $("exposure").textContent = money(s.gross_exposure);

  const r = message.risk;
  $("risk-bars").innerHTML =
    riskBar("VaR (1 day, USDT)", r.var, r.var_limit) +
    riskBar("gross leverage", r.leverage, r.max_leverage) +
    riskBar("drawdown", r.drawdown, r.max_drawdown);

  const positions = Object.fromEntries(message.positions.map((p) => [p.symbol, p]));
  const symbols = Array.from(new Set([...Object.keys(message.allocations), ...Object.keys(positions)])).sort();
  rows($("exposure-rows"), symbols, [
    (sym) => sym,
    (sym) => positions[sym] ? positions[sym].quantity : "0",
    (sym) => positions[sym] ? money(positions[sym].notional) : "0.00",
    (sym) => (message.allocations[sym] ?? 0).toFixed(3),
  ]);
  rows($("order-rows"), message.open_orders, [(o) => o.client_order_id, (o) => o.symbol, (o) => o.side, (o) => o.quantity, (o) => o.price ?? "market", (o) => o.status]);
  rows($("fill-rows"), message.recent_fills.slice().reverse(), [
    (f) => String(f.time).slice(11, 19), (f) => f.symbol, (f) => f.side, (f) => f.quantity, (f) => f.price,
    (f) => Number(f.commission).toFixed(4),
  ]);

  rows($("strategy-rows"), message.strategies || [], [
    (g) => g.name, (g) => (g.enabled && !g.gate ? "count" : "held"), (g) => g.gate ?? "passed or none",
    (g) => g.next_fire ?? "–",
  ]);

  const b = message.bus;
  $("bus").innerHTML = [
    ["depth", b.depth], ["high-water mark", b.high_water_mark], ["capacity", b.capacity],
    ["dispatched", b.dispatched], ["conflated", b.conflated], ["handler errors", b.handler_errors],
    ["slowest p99 (µs)", b.slowest_p99_us],
  ].map(([k, v]) => `<dt>${k}</dt><dd>${v ?? "–"}</dd>`).join("");

  addPoints(message.equity_curve, message.full_curve);
}

let delay = 250;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/dashboard`);
  socket.onopen = () => { delay = 250; setBadge($("connection"), "connected"); };
  socket.onmessage = (event) => render(JSON.parse(event.data));
  socket.onclose = () => {
    setBadge($("connection"), "disconnected");
    setTimeout(connect, delay);
    delay = Math.min(5000, delay * 2);
  };
}

$("emergency-stop").addEventListener("click", () => { $("stop-error").textContent = ""; $("stop-dialog").showModal(); });
$("stop-cancel").addEventListener("click", () => $("stop-dialog").close());
$("stop-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch("/api/v1/emergency-stop", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": "Bearer " + $("stop-token").value },
    body: JSON.stringify({ reason: $("stop-reason").value, flatten: $("stop-flatten").checked }),
  });
  if (response.ok) {
    $("stop-token").value = "";
    $("stop-dialog").close();
  } else {
    const body = await response.json().catch(() => ({}));
    $("stop-error").textContent = (body.error && body.error.message) || `refused (${response.status})`;
  }
});

connect();
