// Darkroom operator dashboard: asks for an API key, then reads the organization's billing
// figures, newest source images and stacks from the API and offers an organization-wide purge
// with a dry run first. The key lives in sessionStorage only and travels as the Api-Key header.
// All data reaches the page through textContent, never as HTML.
'use strict';

(function () {
  const KEY = 'darkroom.apiKey';
  const $ = (id) => document.getElementById(id);
  const state = { org: null, generation: 0, purgeCandidate: null };

  /** An error answer of the API: `{"error":{"code","message"}}`, or the bare HTTP status. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Calls the API with the stored key and returns the parsed JSON answer. */
  async function api(method, path) {
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers: { 'Api-Key': sessionStorage.getItem(KEY) || '', Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new Error('The appliance did not answer (' + e.message + ').');
    }
    const text = await resp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      const err = body && body.error;
      const message = err && err.message ? err.message : resp.statusText || 'request failed';
      throw new ApiError(resp.status, message);
    }
    return body;
  }

  function describe(err) {
    return err instanceof ApiError ? err.status + ': ' + err.message : err.message;
  }

  /** Shows an error in `box` (the page-wide one by default); `null` hides it. */
  function showError(err, box) {
    const el = box || $('error');
    el.textContent = err ? describe(err) : '';
    el.hidden = !err;
  }

  function sectionError(section) {
    return $(section).querySelector('.error');
  }

  // ---- formatting --------------------------------------------------------------------------

  const count = new Intl.NumberFormat();

  function bytes(n) {
    if (typeof n !== 'number') return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i === 0 ? count.format(n) : n.toFixed(1)) + ' ' + units[i];
  }

  function when(stamp) {
    const d = new Date(stamp);
    return isNaN(d) ? String(stamp || '–') : d.toLocaleString();
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  /** A table row; `classes[i]` styles cell i (numbers align right). */
  function row(cells, classes) {
    const tr = document.createElement('tr');
    cells.forEach((cell, i) => {
      const td = document.createElement('td');
      if (cell instanceof Node) td.append(cell);
      else td.textContent = String(cell);
      if (classes && classes[i]) td.className = classes[i];
      tr.append(td);
    });
    return tr;
  }

  function emptyRow(tbody, columns, text) {
    const td = el('td', text, 'empty');
    td.colSpan = columns;
    const tr = document.createElement('tr');
    tr.append(td);
    tbody.replaceChildren(tr);
  }

  // ---- session -----------------------------------------------------------------------------

  async function openSession() {
    showError(null);
    const [user, memberships] = await Promise.all([
      api('GET', '/user'),
      api('GET', '/user/memberships'),
    ]);
    $('who').textContent =
      user.user_id === 'root' ? 'Root key' : 'Key of ' + (user.email || 'user ' + user.user_id);
    const select = $('org');
    select.replaceChildren();
    for (const m of memberships.items || []) {
      const named = m.display_name && m.display_name !== m.organization;
      const label = (named ? m.display_name + ' (' + m.organization + ')' : m.organization) +
        ' — ' + (m.roles || []).join(', ') + (m.active === false ? ' (inactive)' : '');
      const option = el('option', label);
      option.value = m.organization;
      select.append(option);
    }
    $('login').hidden = true;
    $('forget').hidden = false;
    $('workspace').hidden = false;
    if (select.options.length === 0) {
      showError(new Error('This key belongs to no organization.'));
      return;
    }
    select.focus();
    await loadOrg();
  }

  function forget() {
    sessionStorage.removeItem(KEY);
    state.org = null;
    state.generation += 1;
    resetPurge();
    for (const id of ['images-rows', 'stacks-rows', 'stats-tiles', 'org']) $(id).replaceChildren();
    for (const id of ['who', 'stats-asof', 'images-total']) $(id).textContent = '';
    for (const box of document.querySelectorAll('.error')) showError(null, box);
    $('workspace').hidden = true;
    $('forget').hidden = true;
    $('login').hidden = false;
    $('key').value = '';
    $('key').focus();
  }

  // ---- one organization --------------------------------------------------------------------

  /** Loads one section; it fails on its own, and an answer that arrives after the operator
   *  moved on (another organization, a reload, a forgotten key) is dropped. */
  async function loadSection(section, path, render) {
    const generation = state.generation;
    const box = sectionError(section);
    $(section).setAttribute('aria-busy', 'true');
    try {
      const body = await api('GET', path);
      if (generation === state.generation) {
        showError(null, box);
        render(body);
      }
    } catch (err) {
      if (generation === state.generation) showError(err, box);
    } finally {
      $(section).removeAttribute('aria-busy');
    }
  }

  const orgPath = (prefix, suffix) => prefix + encodeURIComponent(state.org) + (suffix || '');

  async function loadOrg() {
    state.org = $('org').value;
    state.generation += 1;
    resetPurge();
    await Promise.all([
      loadSection('stats', orgPath('/stats/'), renderStats),
      loadSection('images', orgPath('/sourceimages/', '?limit=20'), renderImages),
      loadSection('stacks', orgPath('/stacks/'), renderStacks),
    ]);
  }

  /** Series are newest first; storage figures are carried forward, so [0] is today's. */
  function renderStats(stats) {
    const latest = (name) => ((stats[name] || [])[0] || {}).value;
    const today = new Date().toISOString().slice(0, 10);
    const downloaded = stats.bytes_downloaded || [];
    const downloadedToday = downloaded
      .filter((p) => String(p.timestamp).startsWith(today))
      .reduce((sum, p) => sum + p.value, 0);
    const downloadedTotal = downloaded.reduce((sum, p) => sum + p.value, 0);
    const tiles = [
      ['Source storage (billed)', bytes(latest('space_in_bytes'))],
      ['Source files', count.format(latest('number_of_files') || 0)],
      ['Downloaded today', bytes(downloadedToday)],
      ['Downloaded, last 30 days', bytes(downloadedTotal)],
      ['Render cache', bytes(latest('render_cache_bytes'))],
      ['Stored renders', count.format(latest('renders') || 0)],
    ];
    $('stats-tiles').replaceChildren(
      ...tiles.map(([label, value]) => {
        const div = document.createElement('div');
        div.append(el('dt', label), el('dd', value));
        return div;
      })
    );
    const first = (stats.space_in_bytes || [])[0];
    $('stats-asof').textContent = first ? 'Day of ' + first.timestamp.slice(0, 10) + ' (UTC).' : '';
  }

  function renderImages(list) {
    const items = list.items || [];
    const tbody = $('images-rows');
    $('images-total').textContent =
      'Showing ' + items.length + ' of ' + count.format(list.total || 0) + ' images, newest first.';
    if (items.length === 0) return emptyRow(tbody, 6, 'No source images yet.');
    tbody.replaceChildren(
      ...items.map((img) => {
        const hash = el('code', img.short_hash || img.hash);
        hash.title = img.hash;
        const cells = [img.name || '–', bytes(img.size), img.width + ' × ' + img.height,
          img.format || '–', hash, when(img.created)];
        return row(cells, [null, 'num']);
      })
    );
  }

  function renderStacks(list) {
    const items = list.items || [];
    const tbody = $('stacks-rows');
    if (items.length === 0) return emptyRow(tbody, 3, 'No stacks yet.');
    tbody.replaceChildren(
      ...items.map((stack) => {
        const name = el('span', stack.name);
        if (stack.description) name.title = stack.description;
        const ops = (stack.stack_operations || []).map((op) => op.name).join(' → ');
        return row([name, ops || '(none: the source as it is)', when(stack.created)]);
      })
    );
  }

  // ---- purge -------------------------------------------------------------------------------

  function resetPurge() {
    state.purgeCandidate = null;
    $('purge-report').hidden = true;
    $('purge-paths').replaceChildren();
    $('purge-summary').textContent = '';
    $('purge-done').textContent = '';
    $('purge-check').disabled = false;
    showError(null, sectionError('purge'));
  }

  function purgeSummary(report, done) {
    const what = count.format(report.renders) + ' render' + (report.renders === 1 ? '' : 's') +
      ' (' + bytes(report.bytes) + ') served under ' + count.format(report.paths) + ' path' +
      (report.paths === 1 ? '' : 's');
    return done ? 'Purged ' + what + '.' : 'A purge would remove ' + what + '.';
  }

  async function checkPurge() {
    const org = state.org;
    resetPurge();
    $('purge-check').disabled = true;
    try {
      const report = await api('DELETE', orgPath('/organizations/', '/cache?dry_run=true'));
      if (org !== state.org) return;
      if (!report.renders) {
        $('purge-done').textContent = 'Nothing to purge: no stored renders.';
        return;
      }
      state.purgeCandidate = org;
      $('purge-summary').textContent = purgeSummary(report, false);
      const paths = report.items || [];
      const shown = paths.slice(0, 200).map((p) => el('li', p));
      if (paths.length > shown.length) shown.push(el('li', '… and ' + (paths.length - shown.length) + ' more'));
      $('purge-paths').replaceChildren(...shown);
      $('purge-details').hidden = paths.length === 0;
      $('purge-confirm').textContent = 'Purge ' + count.format(report.renders) + ' renders of ' + org;
      $('purge-report').hidden = false;
      $('purge-confirm').focus();
    } catch (err) {
      showError(err, sectionError('purge'));
    } finally {
      $('purge-check').disabled = false;
    }
  }

  async function confirmPurge() {
    const org = state.purgeCandidate;
    if (!org || org !== state.org) return resetPurge();
    $('purge-confirm').disabled = true;
    try {
      const report = await api('DELETE', orgPath('/organizations/', '/cache'));
      resetPurge();
      $('purge-done').textContent = purgeSummary(report, true);
      $('purge-check').focus();
      // The render cache figures changed; the rest did not.
      await loadSection('stats', orgPath('/stats/'), renderStats);
    } catch (err) {
      showError(err, sectionError('purge'));
    } finally {
      $('purge-confirm').disabled = false;
    }
  }

  // ---- wiring ------------------------------------------------------------------------------

  async function guarded(action) {
    try {
      await action();
    } catch (err) {
      showError(err);
    }
  }

  /** Opens the dashboard with the stored key; a key the API refuses is not kept. */
  async function start() {
    try {
      await openSession();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) forget();
      throw err;
    }
  }

  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('key').value.trim();
    $('key').value = '';
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    guarded(start);
  });
  $('forget').addEventListener('click', forget);
  $('org').addEventListener('change', () => guarded(loadOrg));
  $('reload').addEventListener('click', () => guarded(loadOrg));
  $('purge-check').addEventListener('click', () => guarded(checkPurge));
  $('purge-confirm').addEventListener('click', () => guarded(confirmPurge));
  $('purge-cancel').addEventListener('click', () => {
    resetPurge();
    $('purge-check').focus();
  });

  if (sessionStorage.getItem(KEY)) guarded(start);
  else $('key').focus();
})();
