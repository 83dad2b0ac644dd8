/* nodeport-harness: the live Spread tab in Locust's web UI, and the start form's fixed fields.
 *
 * Locust's own React app renders the tab bar and, for the "Spread" tab, its per-node table;
 * this script adds the panel above that table while the tab is shown (heatmap, time charts,
 * findings) and removes it when another tab is chosen. Its data comes from
 * ./nodeport/live.json every 2 s (only while the panel is shown), plotly.js from
 * ./nodeport/plotly.min.js (served from the installed plotly package: no network needed),
 * loaded the first time the tab is opened.
 *
 * Every name from the cluster or from replies is set as text (textContent) in the page, and
 * escaped for plotly, which reads a small HTML subset in its labels.
 */
(() => {
  'use strict';
  const script = document.currentScript;
  const BASE = script.src.replace(/\/nodeport\/spread\.js(\?.*)?$/, '');
  const TAB_TITLE = (script.dataset.tab || 'Spread').toLowerCase();
  const FIXED = script.dataset.fixed || '(set at start-up)';
  const POLL_MS = 2000;
  const MAX_LABEL = 32;
  const SEVERITIES = ['critical', 'warning', 'info', 'ok'];
  const PALETTE = [
    '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
    '#bcbd22', '#17becf', '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5', '#c49c94',
    '#f7b6d2', '#c7c7c7', '#dbdb8d', '#9edae5'];
  // ColorBrewer's Blues, light to dark: the run report's heatmap scale (plotly.py's "Blues";
  // plotly.js's own "Blues" runs dark to light).
  const BLUES = [[0, '#f7fbff'], [0.125, '#deebf7'], [0.25, '#c6dbef'], [0.375, '#9ecae1'],
                 [0.5, '#6baed6'], [0.625, '#4292c6'], [0.75, '#2171b5'], [0.875, '#08519c'],
                 [1, '#08306b']];
  const SHOWN = ['critical', 'warning'];  // the other findings fold under "N more"
  const CONFIG = {responsive: true, displaylogo: false,
                  modeBarButtonsToRemove: ['select2d', 'lasso2d', 'autoScale2d']};

  let panel = null;
  let timer = null;
  let plotly = null;
  let busy = false;
  let moreOpen = false;  // the folded findings, as the user left them

  // -- helpers ------------------------------------------------------------------------------

  const esc = (text) => String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;')
    .replace(/>/g, '&gt;');
  const cut = (text) => {
    const value = String(text);
    return value.length <= MAX_LABEL ? value : value.slice(0, MAX_LABEL - 1) + '…';
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function loadPlotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotly) {
      plotly = new Promise((resolve, reject) => {
        const tag = document.createElement('script');
        tag.src = BASE + '/nodeport/plotly.min.js';
        tag.onload = () => resolve(window.Plotly);
        tag.onerror = () => { plotly = null; reject(new Error('plotly.js did not load')); };
        document.head.appendChild(tag);
      });
    }
    return plotly;
  }

  // -- where the panel goes -----------------------------------------------------------------

  function spreadShown() {
    const tab = document.querySelector('[role="tab"][aria-selected="true"]');
    return !!tab && tab.textContent.trim().toLowerCase() === TAB_TITLE;
  }

  function build() {
    const root = el('section', 'np-spread');
    root.setAttribute('aria-label', 'NodePort spread');
    const head = el('div', 'np-head');
    head.append(el('div', 'np-target'), el('div', 'np-meta'));
    const findings = el('div', 'np-findings');
    findings.setAttribute('aria-label', 'Findings');
    const heat = el('div', 'np-card');
    heat.append(el('div', 'np-chart np-heatmap'));
    const pair = el('div', 'np-pair');
    for (const name of ['np-pod-rate', 'np-node-failures']) {
      const card = el('div', 'np-card');
      card.append(el('div', 'np-chart ' + name));
      pair.append(card);
    }
    root.append(head, el('div', 'np-status'), findings, heat, pair,
                el('h3', 'np-caption', 'Per entry node'));
    // Plotly follows the window's size, not its box's: a scrollbar that comes or goes, or
    // the grid reflowing, would leave a chart wider than its card (cut) or narrower.
    const resize = new ResizeObserver((boxes) => {
      for (const box of boxes) {
        const chart = box.target.querySelector('.js-plotly-plot');
        if (chart && window.Plotly && chart.isConnected) window.Plotly.Plots.resize(chart);
      }
    });
    for (const card of root.querySelectorAll('.np-card')) resize.observe(card);
    return root;
  }

  function sync() {
    const container = document.querySelector('main .MuiContainer-root');
    const tabs = container && container.firstElementChild;
    if (tabs && spreadShown()) {
      if (!panel) panel = build();
      if (panel.parentNode !== container || panel.previousElementSibling !== tabs) {
        container.insertBefore(panel, tabs.nextSibling);
      }
      if (!timer && !busy) poll();
    } else if (panel && panel.isConnected) {
      panel.remove();
    }
    fixForm();
  }

  // -- the start form: fields fixed at start-up cannot be edited ------------------------------

  function fixForm() {
    for (const field of document.querySelectorAll('input[name], select[name]')) {
      if (field.dataset.npFixed) continue;
      const name = field.getAttribute('name');
      if (name === 'host') {
        field.readOnly = true;
        field.title = 'Requests go where Entry says: choose Entry below';
      } else if (name.endsWith(FIXED)) {
        // (a disabled field is still posted by Locust's form: the server checks its value)
        field.disabled = true;
        const control = field.closest('.MuiFormControl-root');
        if (control) {
          control.classList.add('np-fixed');
          control.title = 'Fixed when Locust starts: restart Locust to change it';
        }
      } else {
        continue;
      }
      field.dataset.npFixed = '1';
    }
  }

  // -- data ---------------------------------------------------------------------------------

  async function poll() {
    timer = null;
    if (!panel || !panel.isConnected) return;
    busy = true;
    try {
      const reply = await fetch(BASE + '/nodeport/live.json',
                                {credentials: 'same-origin', cache: 'no-store'});
      if (!reply.ok) throw new Error('the live data answered HTTP ' + reply.status);
      const data = await reply.json();
      const Plotly = await loadPlotly();
      if (panel && panel.isConnected) render(Plotly, data);
      status('');
    } catch (err) {
      status('Spread data unavailable: ' + (err && err.message ? err.message : err));
    } finally {
      busy = false;
    }
    if (panel && panel.isConnected && !timer) timer = setTimeout(poll, POLL_MS);
  }

  function status(text) {
    if (!panel) return;
    const line = panel.querySelector('.np-status');
    line.textContent = text;
    line.hidden = !text;
  }

  // -- drawing ------------------------------------------------------------------------------

  function theme() {
    const style = getComputedStyle(panel);
    return {font: style.color || '#222', grid: 'rgba(128,128,128,0.25)',
            family: style.fontFamily || 'system-ui, sans-serif'};
  }

  function layout(title, height, extra) {
    const colors = theme();
    return Object.assign({
      title: {text: esc(title), x: 0, xanchor: 'left', font: {size: 14}},
      height, autosize: true,
      margin: {l: 56, r: 16, t: 40, b: 44},
      paper_bgcolor: 'rgba(0,0,0,0)', plot_bgcolor: 'rgba(0,0,0,0)',
      font: {family: colors.family, size: 12, color: colors.font},
      hoverlabel: {namelength: -1},
      uirevision: 'keep',  // zoom and hidden traces survive the 2 s refresh
    }, extra || {});
  }

  function axis(title, extra) {
    return Object.assign({title: {text: esc(title)}, gridcolor: theme().grid,
                          zerolinecolor: theme().grid, automargin: true}, extra || {});
  }

  function render(Plotly, data) {
    const target = data.target;
    const run = data.run || {};
    panel.querySelector('.np-target').textContent = (target
      ? `${target.service}, nodePort ${target.node_port}: ${target.nodes} nodes, ` +
        `${target.pods} pods (from ${target.source})`
      : 'No target yet') + (run.entry ? ` · entry ${run.entry}, ${run.connection}` : '') +
      (run.run_id ? ` · run ${run.run_id}` : '');
    panel.querySelector('.np-meta').textContent =
      `${data.requests} requests, ${data.failures} failed · updated ` +
      new Date(data.now * 1000).toLocaleTimeString();
    findings(data.findings);
    heatmap(Plotly, data);
    timeCharts(Plotly, data);
  }

  function findings(list) {
    const item = (finding) => {
      const severity = SEVERITIES.includes(finding.severity) ? finding.severity : 'info';
      const line = el('li', 'np-finding np-sev-' + severity);
      line.append(el('span', 'np-badge', severity), el('span', 'np-text', finding.text));
      return line;
    };
    // The critical and warning ones (else the first three); the rest fold under "N more".
    let main = list.filter((f) => SHOWN.includes(f.severity));
    if (!main.length) main = list.slice(0, 3);
    const rest = list.filter((f) => !main.includes(f));
    const shown = el('ul', 'np-list');
    shown.append(...main.map(item));
    const parts = [shown];
    if (main.length && rest.length) {
      const more = el('details', 'np-more');
      more.open = moreOpen;
      more.addEventListener('toggle', () => { moreOpen = more.open; });
      const counts = SEVERITIES.map((s) => [s, rest.filter((f) => f.severity === s).length])
        .filter(([, n]) => n).map(([s, n]) => `${n} ${s}`).join(', ');
      more.append(el('summary', '', `${rest.length} more finding${rest.length > 1 ? 's' : ''}` +
                                   ` (${counts})`));
      const folded = el('ul', 'np-list');
      folded.append(...rest.map(item));
      more.append(folded);
      parts.push(more);
    }
    panel.querySelector('.np-findings').replaceChildren(...parts);
  }

  function heatmap(Plotly, data) {
    const div = panel.querySelector('.np-heatmap');
    const pods = data.pods;
    const entries = data.entries;
    const x = pods.map((p) => esc(p.short));
    const y = uniq(entries.map((e) => esc(cut(e))));
    const none = data.counts.every((row) => row.every((c) => c === 0));
    const small = pods.length * entries.length <= 240 && !none;  // figures while legible
    let top = data.fair_share ? 2 * data.fair_share : 1;
    for (const row of data.shares) for (const s of row) if (s !== null && s > top) top = s;
    const custom = entries.map((entry, i) => pods.map((pod, j) => [
      esc(pod.name), esc(entry), esc(pod.node || 'unknown'),
      ...data.cells[i][j].map(esc)]));
    const trace = {
      type: 'heatmap', x, y, z: data.shares, customdata: custom,
      text: data.cells.map((row) => row.map((c) => `${esc(c[0])}<br>${esc(c[1])}`)),
      texttemplate: small ? '%{text}' : undefined,
      colorscale: BLUES, zmin: 0, zmax: Math.min(1, top), xgap: 1, ygap: 1,
      colorbar: {title: {text: 'row share'}, tickformat: '.0%', thickness: 12},
      hovertemplate: 'entry %{customdata[1]} → pod %{customdata[0]} (on %{customdata[2]})' +
        '<br>%{customdata[3]} successes: %{customdata[4]} of this entry\'s, ' +
        '%{customdata[5]} of all<extra></extra>',
      hoverongaps: false,
    };
    const height = 150 + 34 * Math.max(entries.length, 2);
    Plotly.react(div, [trace], layout(
      'Which pod served the requests entering each node (successes; hover for names)', height, {
        xaxis: axis('pod (end of its name)', {type: 'category', tickangle: 'auto'}),
        yaxis: axis('entry node', {type: 'category', autorange: 'reversed'}),
        margin: {l: 56, r: 16, t: 40, b: 40},
        annotations: none ? [{text: 'no request recorded yet', xref: 'paper', yref: 'paper',
                              x: 0.5, y: 0.5, showarrow: false, font: {size: 13},
                              bgcolor: 'rgba(255,255,255,0.7)'}] : [],
      }), CONFIG);
  }

  function uniq(labels) {
    const seen = new Set();
    return labels.map((label, i) => {
      const value = seen.has(label) ? `${label} #${i + 1}` : label;
      seen.add(value);
      return value;
    });
  }

  function markers(data) {
    const shapes = [];
    const notes = [];
    data.markers.forEach((m, i) => {
      shapes.push({type: 'line', x0: m.x, x1: m.x, yref: 'paper', y0: 0, y1: 1,
                   line: {color: '#b00020', dash: 'dot', width: 1.5}});
      notes.push({x: m.x, yref: 'paper', y: 1 - 0.09 * (i % 3), xanchor: 'left',
                  showarrow: false, text: esc(m.label), font: {size: 11, color: '#b00020'}});
    });
    return {shapes, annotations: notes};
  }

  // A y axis of whole counts per second: ticks on whole numbers while the counts are small.
  function counts(rows) {
    let top = 0;
    for (const row of rows) for (const v of row) if (v > top) top = v;
    return {rangemode: 'tozero', tickformat: ',~f', range: top ? undefined : [0, 1],
            dtick: top <= 6 ? 1 : undefined};
  }

  function timeCharts(Plotly, data) {
    const length = data.pod_rate.length ? data.pod_rate[0].length : 0;
    const minutes = Math.round(data.window_s / 60);
    const time = {x0: data.x0, dx: 1};
    const empty = length ? [] : [{text: 'waiting for the first whole second…',
                                  xref: 'paper', yref: 'paper', x: 0.5, y: 0.5,
                                  showarrow: false}];
    const pods = data.pods.map((pod, i) => ({
      type: 'scatter', mode: 'lines', ...time, y: data.pod_rate[i],
      name: esc(pod.short), line: {width: 1.5, color: PALETTE[i % PALETTE.length]},
      legendrank: i + 1,
      hovertemplate: `%{y:,} req/s<extra>${esc(cut(pod.name))}</extra>`,
    }));
    // whole seconds: a tick every 1, 5, 10, 30 or 60 s as the window grows
    const step = [1, 5, 10, 30, 60].find((s) => length / s <= 12) || 60;
    const xaxis = axis('seconds since the start', {zeroline: false, tick0: 0, dtick: step,
                                                    tickformat: ',d'});
    const legend = {orientation: 'h', x: 0, y: -0.22, yanchor: 'top', font: {size: 11}};
    const marks = markers(data);
    Plotly.react(panel.querySelector('.np-pod-rate'), pods, layout(
      `Requests/s per pod (successes, last ${minutes} min)`, 380, {
        xaxis, yaxis: axis('req/s', counts(data.pod_rate)), legend, hovermode: 'x unified',
        shapes: marks.shapes, annotations: marks.annotations.concat(empty),
      }), CONFIG);

    const failed = data.node_failures.some((row) => row.some((v) => v > 0));
    const nodes = data.entries.map((entry, i) => ({
      type: 'scatter', mode: 'lines', ...time, y: data.node_failures[i],
      name: esc(cut(entry)), line: {width: 1.5, color: PALETTE[i % 10]},
      hovertemplate: `%{y:,} failed/s<extra>${esc(cut(entry))}</extra>`,
    }));
    const quiet = failed || !length ? [] : [{
      text: `no failure in the last ${minutes} min`, xref: 'paper', yref: 'paper',
      x: 0.5, y: 0.6, showarrow: false, font: {size: 13}}];
    Plotly.react(panel.querySelector('.np-node-failures'), nodes, layout(
      `Failures/s per entry node (last ${minutes} min)`, 380, {
        xaxis, yaxis: axis('failed/s', counts(data.node_failures)),
        legend, hovermode: 'x unified', shapes: marks.shapes,
        annotations: marks.annotations.concat(empty, quiet),
      }), CONFIG);
  }

  // -- wiring -------------------------------------------------------------------------------

  function start() {
    const style = document.createElement('link');
    style.rel = 'stylesheet';
    style.href = BASE + '/nodeport/spread.css';
    document.head.appendChild(style);
    // (not for the panel's own changes: plotly redraws often)
    new MutationObserver((records) => {
      if (!panel || records.some((r) => !panel.contains(r.target))) sync();
    }).observe(document.body, {childList: true, subtree: true});
    window.addEventListener('popstate', sync);
    sync();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
