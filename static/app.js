// Darkroom operator dashboard: a gallery with search, sort, paging and uploads, an image detail
// with metadata, subject area, render URLs, delete/restore and purge, a stack editor built from
// GET /operations and GET /stackoptions with a live preview, usage charts, keys and members, and
// the appliance status. The key lives in sessionStorage only and travels as the Api-Key header.
// All data reaches the page through textContent, never as HTML. Pictures are previews fetched
// with the key from /preview/{org}/… (the render path of the appliance, behind the key) and
// shown through blob: URLs, so the page's policy needs no other origin.
'use strict';

(function () {
  const KEY = 'darkroom.apiKey';
  const BASE = 'darkroom.renderBase';
  const PAGE = 24;
  const THUMB = 320;
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  const state = {
    org: null,
    root: false,
    userId: null,
    memberships: [],
    can: {},
    generation: 0,
    view: null,
    images: [],
    next: null,
    image: null,
    pick: null,
    stacks: null,
    schemas: null,
    stackOptions: null,
    edit: null,
    status: null,
    /** A change waiting for the operator's confirmation after its dry run. */
    confirm: null,
    /** The organization whose render-cache purge was checked and awaits confirmation. */
    purge: null,
    /** A message for the next image shown (the result of the change that led there). */
    carry: '',
  };

  // ---- API ---------------------------------------------------------------------------------

  /** An error answer of the API: `{"error":{"code","message"}}`, or the bare HTTP status. */
  class ApiError extends Error {
    constructor(status, message, invalidKey) {
      super(message);
      this.status = status;
      this.invalidKey = invalidKey;
    }
  }

  function headers(extra) {
    return Object.assign({ 'Api-Key': sessionStorage.getItem(KEY) || '' }, extra || {});
  }

  async function failure(resp) {
    let body = null;
    try {
      body = JSON.parse(await resp.text());
    } catch (_) {
      body = null;
    }
    const err = body && body.error;
    const message = err && err.message ? err.message : resp.statusText || 'request failed';
    return new ApiError(resp.status, message, !!(body && body.invalid_authentication));
  }

  /** Calls the API with the stored key; answers the Response of a 2xx, throws otherwise. */
  async function call(method, path, body) {
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers: headers(body === undefined ? { Accept: 'application/json' } : { 'Content-Type': 'application/json' }),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new Error('The appliance did not answer (' + e.message + ').');
    }
    if (!resp.ok) throw await failure(resp);
    return resp;
  }

  /** Calls the API and returns the parsed JSON answer (null for an empty one). */
  async function api(method, path, body) {
    const resp = await call(method, path, body);
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  function describe(err) {
    if (err instanceof ApiError && err.invalidKey) return 'This key was not accepted: ' + err.message;
    return err instanceof ApiError ? err.status + ': ' + err.message : err.message;
  }

  /** Shows an error in `box` (the page-wide one by default); `null` hides it. */
  function showError(err, box) {
    const node = box || $('error');
    node.textContent = err ? describe(err) : '';
    node.hidden = !err;
  }

  const errorOf = (id) => $(id).querySelector('.error');
  const enc = encodeURIComponent;
  const orgPath = (prefix, suffix) => prefix + enc(state.org) + (suffix || '');

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
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function button(text, onClick, className) {
    const b = el('button', text, className);
    b.type = 'button';
    b.addEventListener('click', () => guarded(onClick));
    return b;
  }

  const plural = (n, word) => count.format(n) + ' ' + word + (n === 1 ? '' : 's');

  function reportText(report, verb) {
    return verb + ' ' + plural(report.renders || 0, 'render') + ' (' + bytes(report.bytes || 0) +
      ') served under ' + plural(report.paths || 0, 'path');
  }

  function fillPaths(list, report) {
    const paths = report.items || [];
    const shown = paths.slice(0, 50).map((p) => el('li', p));
    if (paths.length > shown.length) shown.push(el('li', '… and ' + (paths.length - shown.length) + ' more'));
    list.replaceChildren(...shown);
  }

  async function copy(text, feedback) {
    try {
      await navigator.clipboard.writeText(text);
      feedback.textContent = 'Copied';
    } catch (_) {
      feedback.textContent = 'Select and copy';
    }
    setTimeout(() => (feedback.textContent = feedback.dataset.label || 'Copy'), 1500);
  }

  // ---- rights ------------------------------------------------------------------------------

  /** What a membership's roles allow, as the appliance decides it (model/account.rs). */
  function rights(roles, active) {
    if (!active) return {};
    const has = (...names) => names.some((n) => roles.includes(n));
    return {
      read: has('read', 'write', 'admin'),
      write: has('write', 'admin'),
      upload: has('upload', 'write', 'admin', 'sourceimages:write'),
      admin: has('admin'),
      imagesRead: has('read', 'write', 'admin', 'sourceimages:read', 'sourceimages:write'),
      imagesWrite: has('write', 'admin', 'sourceimages:write'),
    };
  }

  /** Shows only the controls the key may use; a hidden control is not merely disabled. */
  function applyRights() {
    for (const node of document.querySelectorAll('[data-needs]')) {
      node.hidden = !state.can[node.dataset.needs];
    }
    for (const input of document.querySelectorAll('#editor input, #editor select, #editor textarea, #meta-rows input')) {
      if (input.id !== 'preview-image') input.disabled = !state.can[input.closest('#editor') ? 'write' : 'imagesWrite'];
    }
    $('stack-name').disabled = !state.can.write || !(state.edit && state.edit.isNew);
  }

  // ---- session -----------------------------------------------------------------------------

  async function openSession() {
    showError(null);
    const [user, memberships] = await Promise.all([api('GET', '/user'), api('GET', '/user/memberships')]);
    state.root = user.user_id === 'root';
    state.userId = user.user_id;
    $('who').textContent = state.root ? 'Root key' : 'Key of ' + (user.email || 'user ' + user.user_id);
    $('login').hidden = true;
    $('forget').hidden = false;
    $('workspace').hidden = false;
    await refreshAccess(memberships);
    route();
  }

  /** Reads the key's memberships again and follows them: a revoked organization is cleared
   *  from the screen at once, changed roles change the controls. Answers whether the current
   *  organization is still open to the key. `known` is an answer of /user/memberships already
   *  at hand. */
  async function refreshAccess(known) {
    const memberships = (known || (await api('GET', '/user/memberships'))).items || [];
    state.memberships = memberships;
    const select = $('org');
    const previous = state.org;
    select.replaceChildren(
      ...memberships.map((m) => {
        const named = m.display_name && m.display_name !== m.organization;
        const label = (named ? m.display_name + ' (' + m.organization + ')' : m.organization) +
          ' — ' + (m.roles || []).join(', ') + (m.active === false ? ' (inactive)' : '');
        const option = el('option', label);
        option.value = m.organization;
        return option;
      })
    );
    const none = memberships.length === 0;
    $('org-picker').hidden = none;
    $('no-org').hidden = !none;
    document.querySelector('.tabs').hidden = none;
    const kept = memberships.find((m) => m.organization === previous);
    if (previous && !kept) {
      lostAccess(previous);
    }
    if (none) {
      state.org = null;
      state.can = {};
      hideViews();
      applyRights();
      return false;
    }
    const current = kept || memberships[0];
    select.value = current.organization;
    state.org = current.organization;
    state.can = rights(current.roles || [], current.active !== false);
    applyRights();
    return !!kept || !previous;
  }

  /** The key lost an organization while the page showed it: nothing of it stays on screen. */
  function lostAccess(org) {
    state.generation += 1;
    clearOrgData();
    const note = $('stale');
    note.textContent = 'This key no longer has access to ' + org + '; its figures were cleared.';
    note.hidden = false;
  }

  function clearOrgData() {
    revokeThumbs();
    state.images = [];
    state.next = null;
    state.image = null;
    state.stacks = null;
    state.edit = null;
    for (const id of ['grid', 'tiles', 'charts', 'stack-list', 'member-list', 'fields', 'meta-rows',
      'url-list', 'ops', 'stack-options', 'stack-vars', 'purge-paths', 'upload-list']) {
      $(id).replaceChildren();
    }
    for (const id of ['gallery-summary', 'purge-summary', 'purge-done', 'members-note', 'subject-result',
      'danger-done', 'stack-done', 'meta-done']) {
      $(id).textContent = '';
    }
    for (const id of ['gallery-empty', 'stacks-empty', 'more', 'purge-report', 'editor', 'confirm-box']) $(id).hidden = true;
    for (const box of document.querySelectorAll('.error')) showError(null, box);
    $('detail-img').removeAttribute('src');
  }

  function forget() {
    sessionStorage.removeItem(KEY);
    state.org = null;
    state.can = {};
    state.generation += 1;
    clearOrgData();
    $('org').replaceChildren();
    $('who').textContent = '';
    $('stale').hidden = true;
    $('workspace').hidden = true;
    $('org-picker').hidden = true;
    $('forget').hidden = true;
    $('login').hidden = false;
    $('key').value = '';
    $('key').focus();
  }

  // ---- views -------------------------------------------------------------------------------

  function hideViews() {
    for (const v of document.querySelectorAll('.view')) v.hidden = true;
  }

  /** Shows the view named by the location's hash (`#gallery`, `#image/{hash}`, `#stacks`, …). */
  function route() {
    if (!state.org) return;
    const [name, arg] = decodeURIComponent(location.hash.slice(1)).split('/');
    const view = ['gallery', 'image', 'stacks', 'usage', 'members', 'status'].includes(name) ? name : 'gallery';
    hideViews();
    $('view-' + view).hidden = false;
    for (const a of document.querySelectorAll('.tabs a')) {
      const current = a.dataset.view === view || (view === 'image' && a.dataset.view === 'gallery');
      if (current) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    state.view = view;
    const loaders = {
      gallery: () => (state.images.length ? Promise.resolve() : loadGallery(false)),
      image: () => loadImage(arg),
      stacks: () => loadStacks(arg),
      usage: loadUsage,
      members: loadMembers,
      status: loadStatus,
    };
    guarded(loaders[view]);
  }

  /** Runs `work` for the current organization; its result is dropped when the operator moved
   *  on meanwhile, and a refusal (403) re-reads the key's memberships. */
  async function forOrg(box, work) {
    const generation = state.generation;
    showError(null, box);
    try {
      await work(() => generation === state.generation);
    } catch (err) {
      if (generation !== state.generation) return;
      if (err instanceof ApiError && err.invalidKey) {
        forget();
        throw err;
      }
      if (err instanceof ApiError && err.status === 403 && !(await refreshAccess())) return;
      showError(err, box);
    }
  }

  // ---- gallery -----------------------------------------------------------------------------

  const thumbs = new Set();

  function revokeThumbs() {
    for (const url of thumbs) URL.revokeObjectURL(url);
    thumbs.clear();
  }

  /** Fetches previews with the key, a few at a time, newest request first in line. */
  const loader = { queue: [], running: 0 };

  function previewInto(img, path, onDone) {
    loader.queue.push({ img, path, onDone, generation: state.generation });
    pump();
  }

  function pump() {
    while (loader.running < 4 && loader.queue.length) {
      const job = loader.queue.shift();
      if (job.generation !== state.generation) continue;
      loader.running += 1;
      fetch(job.path, { headers: headers(), credentials: 'omit' })
        .then(async (resp) => {
          if (!resp.ok) throw await failure(resp);
          const blob = await resp.blob();
          if (job.generation !== state.generation) return;
          const url = URL.createObjectURL(blob);
          thumbs.add(url);
          job.img.src = url;
          if (job.onDone) job.onDone(null);
        })
        .catch((err) => {
          job.img.closest('.thumb, .stage, .preview')?.classList.add('broken');
          if (job.onDone) job.onDone(err);
        })
        .finally(() => {
          loader.running -= 1;
          pump();
        });
    }
  }

  const previewPath = (ops, hash, format) =>
    orgPath('/preview/', '/dynamic/' + ops + '/' + hash + '.' + (format || 'webp'));

  function galleryQuery() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    const sort = $('q-sort').value === 'user' ? $('q-sort-user').value.trim() : $('q-sort').value;
    if (sort) q.set('sort', sort);
    const name = $('q-name').value.trim();
    if (name) q.set('name', name.endsWith('*') ? name : name + '*');
    const field = $('q-field').value.trim();
    const value = $('q-value').value.trim();
    if (field && value) q.set(field.includes(':') ? field : 'user:str:' + field, value);
    if ($('q-deleted').checked) q.set('deleted', 'true');
    return q;
  }

  async function loadGallery(more) {
    await forOrg(errorOf('gallery'), async (current) => {
      const q = galleryQuery();
      if (more && state.next) q.set('offset', state.next);
      $('more').disabled = true;
      const list = await api('GET', orgPath('/sourceimages/', '?' + q));
      if (!current()) return;
      if (!more) {
        revokeThumbs();
        state.images = [];
        $('grid').replaceChildren();
      }
      const items = list.items || [];
      state.images.push(...items);
      state.next = list.links && list.links.next && list.cursor ? list.cursor : null;
      $('grid').append(...items.map(card));
      const deleted = $('q-deleted').checked;
      $('gallery-summary').textContent = 'Showing ' + count.format(state.images.length) + ' of ' +
        plural(list.total || 0, deleted ? 'deleted image' : 'image') + '.';
      const empty = state.images.length === 0;
      $('gallery-empty').hidden = !empty;
      $('gallery-empty').textContent = deleted
        ? 'No deleted images: deleted images stay restorable here for the retention period.'
        : galleryQuery().toString() !== new URLSearchParams({ limit: String(PAGE), sort: 'created desc' }).toString()
          ? 'No image matches this search. Clear the fields to see every image.'
          : state.can.upload
            ? 'No images yet. Drop files on the upload area above, or choose files.'
            : 'No images yet. A key with the upload or write role can add some.';
      $('more').hidden = !state.next;
      $('more').disabled = false;
    });
  }

  function card(img) {
    const li = el('li', null, 'thumb');
    const link = el('a');
    link.href = '#image/' + img.hash + (img.deleted ? '?deleted' : '');
    const pic = el('img');
    pic.alt = img.name || img.short_hash;
    pic.width = 160;
    pic.height = 160;
    link.append(pic, el('span', img.name || '–', 'name'),
      el('span', img.width + ' × ' + img.height + ' · ' + bytes(img.size), 'hint'));
    li.append(link);
    if (img.deleted) {
      li.classList.add('deleted');
      li.append(el('span', 'Deleted', 'badge'));
      if (state.can.imagesWrite) {
        li.append(button('Restore', () => restore(img.hash, li), 'small'));
      }
    } else {
      previewInto(pic, previewPath('resize-width-' + THUMB + '-height-' + THUMB + '-upscale-false', img.hash));
    }
    return li;
  }

  async function restore(hash, li) {
    await forOrg(errorOf('gallery'), async () => {
      await api('POST', orgPath('/sourceimages/', '/' + hash + '/restore'));
      li.remove();
      state.images = state.images.filter((i) => i.hash !== hash);
      $('gallery-summary').textContent = 'Restored ' + hash.slice(0, 6) + '.';
    });
  }

  // ---- upload ------------------------------------------------------------------------------

  /** The reason a file is refused before it is sent, or null. */
  function precheck(file) {
    if (!file.type.startsWith('image/') && !/\.(jpe?g|png|gif|webp|tiff?|bmp|avif)$/i.test(file.name)) {
      return 'unsupported: not an image file (' + (file.type || 'unknown type') + ')';
    }
    return null;
  }

  function uploadMeta() {
    const raw = $('upload-meta').value.trim();
    if (!raw) return null;
    const value = JSON.parse(raw);
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('User metadata must be a JSON object.');
    return value;
  }

  function uploadFiles(files) {
    let meta;
    try {
      meta = uploadMeta();
    } catch (e) {
      showError(new Error('User metadata: ' + e.message), errorOf('gallery'));
      return;
    }
    const jobs = Array.from(files).map((file) => uploadRow(file));
    let next = 0;
    let done = 0;
    const worker = () => {
      if (next >= jobs.length) return;
      const job = jobs[next++];
      sendFile(job, meta).finally(() => {
        done += 1;
        if (done === jobs.length) loadGallery(false);
        worker();
      });
    };
    // Four at a time: the appliance's default number of uploads in flight per key.
    for (let i = 0; i < 4; i++) worker();
  }

  function uploadRow(file) {
    const li = el('li', null, 'upload');
    const pic = el('img');
    pic.alt = '';
    const url = URL.createObjectURL(file);
    thumbs.add(url);
    pic.src = url;
    pic.addEventListener('error', () => pic.remove());
    const bar = el('progress');
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute('aria-label', 'Upload of ' + file.name);
    const status = el('span', 'waiting', 'status');
    li.append(pic, el('span', file.name, 'name'), bar, status);
    $('upload-list').prepend(li);
    return { file, li, bar, status };
  }

  function sendFile(job, meta) {
    const refused = precheck(job.file);
    if (refused) {
      job.li.classList.add('failed');
      job.status.textContent = refused;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const form = new FormData();
      form.append('filedata', job.file, job.file.name);
      if (meta) form.append('meta_user[0]', JSON.stringify(meta));
      const xhr = new XMLHttpRequest();
      xhr.open('POST', orgPath('/sourceimages/'));
      xhr.setRequestHeader('Api-Key', sessionStorage.getItem(KEY) || '');
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) job.bar.value = Math.round((e.loaded / e.total) * 100);
      });
      job.status.textContent = 'uploading';
      xhr.addEventListener('load', () => {
        if (xhr.status === 429 && (job.retries || 0) < 5) {
          // Another tab or client of this key is uploading too: wait and send again.
          job.retries = (job.retries || 0) + 1;
          job.status.textContent = 'waiting for the appliance';
          const secs = Number(xhr.getResponseHeader('Retry-After')) || 1;
          setTimeout(() => sendFile(job, meta).then(resolve), secs * 1000);
          return;
        }
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (_) {
          body = null;
        }
        if (xhr.status >= 200 && xhr.status < 300) {
          job.bar.value = 100;
          const item = body && body.items && body.items[0];
          job.li.classList.add('done');
          job.status.textContent = 'uploaded' + (item ? ' as ' + item.short_hash : '');
        } else {
          job.li.classList.add('failed');
          const message = body && body.error ? body.error.message : xhr.statusText;
          job.status.textContent = uploadProblem(xhr.status, message);
        }
        resolve();
      });
      xhr.addEventListener('error', () => {
        job.li.classList.add('failed');
        job.status.textContent = 'failed: the appliance did not answer';
        resolve();
      });
      xhr.send(form);
    });
  }

  function uploadProblem(status, message) {
    if (status === 413) return 'too large: ' + message;
    if (status === 415) return 'unsupported: ' + message;
    if (status === 400 || status === 422) return 'broken or refused: ' + message;
    if (status === 507) return 'the appliance is low on disk space: ' + message;
    return 'failed (' + status + '): ' + message;
  }

  // ---- image detail ------------------------------------------------------------------------

  /** Shows one image; `?deleted` after the hash (from the deleted images) asks for a deleted one. */
  async function loadImage(hash) {
    const deletedHint = (hash || '').endsWith('?deleted');
    hash = (hash || '').replace(/\?.*$/, '');
    $('subject-result').textContent = state.carry || '';
    state.carry = '';
    for (const id of ['meta-done', 'danger-done']) $(id).textContent = '';
    $('confirm-box').hidden = true;
    await forOrg(errorOf('view-image'), async (current) => {
      let img;
      try {
        img = await api('GET', orgPath('/sourceimages/', '/' + hash + (deletedHint ? '?deleted=true' : '')));
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404) || deletedHint) throw err;
        img = await api('GET', orgPath('/sourceimages/', '/' + hash + '?deleted=true'));
      }
      if (!current()) return;
      state.image = img;
      state.pick = null;
      $('image-title').textContent = img.name || img.short_hash;
      renderFields(img);
      renderMeta(img.user_metadata || {});
      renderSubject(img);
      $('image-restore').hidden = !img.deleted || !state.can.imagesWrite;
      $('image-delete').hidden = img.deleted || !state.can.imagesWrite;
      $('image-purge').hidden = img.deleted || !state.can.write;
      const pic = $('detail-img');
      pic.removeAttribute('src');
      pic.alt = 'Preview of ' + (img.name || img.short_hash);
      $('stage').classList.remove('broken');
      $('selection').hidden = true;
      if (img.deleted) {
        $('stage-hint').textContent = 'A deleted image has no renders; restore it to see it.';
      } else {
        $('stage-hint').textContent = state.can.imagesWrite
          ? 'Drag a rectangle on the picture to set the subject area.'
          : '';
        previewInto(pic, previewPath('resize-width-1200-height-1200-upscale-false', img.hash));
        showSubject(img);
      }
      await renderUrls(img, current);
    });
  }

  function renderFields(img) {
    const rows = [];
    const order = ['name', 'hash', 'short_hash', 'binary_hash', 'format', 'mimetype', 'size', 'width', 'height',
      'created', 'deleted', 'deleted_date', 'protected', 'locked', 'opaque', 'animated', 'organization', 'link'];
    const keys = order.filter((k) => k in img).concat(Object.keys(img).filter((k) => !order.includes(k) && k !== 'user_metadata'));
    for (const k of keys) {
      let v = img[k];
      if (k === 'size') v = bytes(v) + ' (' + count.format(v) + ' bytes)';
      else if (k === 'created' || k === 'deleted_date') v = when(v);
      const dt = el('dt', k);
      const dd = el('dd');
      if (v !== null && typeof v === 'object') {
        const details = el('details');
        details.append(el('summary', Object.keys(v).join(', ') || '(empty)'), el('pre', JSON.stringify(v, null, 2)));
        dd.append(details);
      } else {
        dd.append(el(/hash/.test(k) ? 'code' : 'span', String(v)));
      }
      rows.push(dt, dd);
    }
    $('fields').replaceChildren(...rows);
  }

  // user metadata ---------------------------------------------------------------------------

  function metaRow(name, value) {
    const tr = el('tr');
    const key = el('input');
    key.value = name;
    key.setAttribute('aria-label', 'Field name');
    key.spellcheck = false;
    const val = el('input');
    val.value = typeof value === 'string' ? value : JSON.stringify(value);
    val.setAttribute('aria-label', 'Value of ' + (name || 'the new field'));
    val.spellcheck = false;
    const cells = [key, val];
    if (state.can.imagesWrite) cells.push(button('Remove', () => tr.remove(), 'small'));
    else cells.push(el('span'));
    for (const c of cells) {
      const td = el('td');
      td.append(c);
      tr.append(td);
    }
    return tr;
  }

  function renderMeta(meta) {
    const rows = Object.entries(meta).map(([k, v]) => metaRow(k, v));
    $('meta-rows').replaceChildren(...rows);
    if (!rows.length) {
      const td = el('td', state.can.imagesWrite ? 'No user metadata. Add a field to describe or find this image.' : 'No user metadata.', 'empty');
      td.colSpan = 3;
      const tr = el('tr');
      tr.append(td);
      $('meta-rows').append(tr);
    }
    applyRights();
  }

  /** A typed value from a text field: JSON when it reads as JSON, else the text itself. */
  function typed(text) {
    const t = text.trim();
    if (/^(-?\d+(\.\d+)?|true|false|null|\[.*\]|\{.*\}|".*")$/s.test(t)) {
      try {
        return JSON.parse(t);
      } catch (_) {
        return text;
      }
    }
    return text;
  }

  async function saveMeta() {
    const img = state.image;
    const meta = {};
    for (const tr of $('meta-rows').querySelectorAll('tr')) {
      const inputs = tr.querySelectorAll('input');
      if (inputs.length < 2 || !inputs[0].value.trim()) continue;
      meta[inputs[0].value.trim()] = typed(inputs[1].value);
    }
    await forOrg(errorOf('meta'), async () => {
      const path = orgPath('/sourceimages/', '/' + img.hash + '/meta/user');
      if (Object.keys(meta).length) await api('PUT', path, meta);
      else await api('DELETE', path);
      $('meta-done').textContent = 'Saved ' + plural(Object.keys(meta).length, 'field') + '.';
      img.user_metadata = meta;
      renderMeta(meta);
    });
  }

  // subject area ----------------------------------------------------------------------------

  function renderSubject(img) {
    const area = img.dynamic_metadata && img.dynamic_metadata.subject_area;
    $('subject-current').textContent = area
      ? 'Current subject area: x ' + area.x + ', y ' + area.y + ', ' + area.width + ' × ' + area.height + ' px.'
      : 'No subject area: crops with anchor "auto" keep the centre.';
    $('subject-picked').textContent = '';
    const now = area ? [area.x, area.y, area.width, area.height] : ['', '', '', ''];
    ['area-x', 'area-y', 'area-w', 'area-h'].forEach((id, i) => ($(id).value = now[i] ?? ''));
    $('subject-save').disabled = true;
    $('subject-clear').hidden = !area;
    $('subject').hidden = img.deleted || !state.can.imagesWrite;
    explainDeletePrevious();
  }

  function explainDeletePrevious() {
    const img = state.image;
    if (!img) return;
    $('delete-previous-hint').textContent = $('delete-previous').checked
      ? 'The subject area is part of the hash: the new hash replaces ' + img.short_hash +
        ', which is deleted (restorable for the retention period) and its renders removed.'
      : 'The subject area is part of the hash: a new hash is created, and ' + img.short_hash +
        ' stays as it is with its renders and URLs.';
  }

  function showSubject(img) {
    const area = img.dynamic_metadata && img.dynamic_metadata.subject_area;
    if (area) drawSelection(area);
  }

  /** Places the selection rectangle over the picture for an area in source pixels. */
  function drawSelection(area) {
    const img = state.image;
    const box = $('selection');
    box.style.left = (area.x / img.width) * 100 + '%';
    box.style.top = (area.y / img.height) * 100 + '%';
    box.style.width = ((area.width || 1) / img.width) * 100 + '%';
    box.style.height = ((area.height || 1) / img.height) * 100 + '%';
    box.hidden = false;
  }

  function stagePoint(event) {
    const rect = $('detail-img').getBoundingClientRect();
    const img = state.image;
    const fx = Math.min(Math.max((event.clientX - rect.left) / rect.width, 0), 1);
    const fy = Math.min(Math.max((event.clientY - rect.top) / rect.height, 0), 1);
    return { x: fx * img.width, y: fy * img.height };
  }

  function wireStage() {
    const stage = $('stage');
    let start = null;
    stage.addEventListener('pointerdown', (event) => {
      if (!state.image || state.image.deleted || !state.can.imagesWrite || !$('detail-img').src) return;
      event.preventDefault();
      stage.setPointerCapture(event.pointerId);
      start = stagePoint(event);
    });
    stage.addEventListener('pointermove', (event) => {
      if (!start) return;
      const p = stagePoint(event);
      state.pick = {
        x: Math.round(Math.min(start.x, p.x)),
        y: Math.round(Math.min(start.y, p.y)),
        width: Math.max(1, Math.round(Math.abs(p.x - start.x))),
        height: Math.max(1, Math.round(Math.abs(p.y - start.y))),
      };
      drawSelection(state.pick);
    });
    const end = () => {
      if (!start) return;
      start = null;
      if (state.pick) picked(true);
    };
    // The same area typed in numbers, for the keyboard.
    for (const id of ['area-x', 'area-y', 'area-w', 'area-h']) {
      $(id).addEventListener('change', () => {
        const img = state.image;
        if (!img) return;
        const n = (i) => Math.max(0, Math.round(Number($(i).value) || 0));
        const x = Math.min(n('area-x'), img.width - 1);
        const y = Math.min(n('area-y'), img.height - 1);
        state.pick = {
          x,
          y,
          width: Math.max(1, Math.min(n('area-w') || 1, img.width - x)),
          height: Math.max(1, Math.min(n('area-h') || 1, img.height - y)),
        };
        drawSelection(state.pick);
        picked(false);
      });
    }
    stage.addEventListener('pointerup', end);
    stage.addEventListener('pointercancel', end);
  }

  /** An area was picked (by mouse when `fromMouse`): say so, mirror it in the number fields. */
  function picked(fromMouse) {
    const a = state.pick;
    $('subject-picked').textContent = 'Picked x ' + a.x + ', y ' + a.y + ', ' + a.width + ' × ' + a.height + ' px.';
    if (fromMouse) {
      $('area-x').value = a.x;
      $('area-y').value = a.y;
      $('area-w').value = a.width;
      $('area-h').value = a.height;
    }
    $('subject-save').disabled = false;
  }

  async function saveSubject(remove) {
    const img = state.image;
    const deletePrevious = $('delete-previous').checked;
    await forOrg(errorOf('view-image'), async () => {
      const path = orgPath('/sourceimages/', '/' + img.hash + '/meta/dynamic/subject_area?deletePrevious=' + deletePrevious);
      const resp = await call(remove ? 'DELETE' : 'PUT', path, remove ? undefined : state.pick);
      if (resp.status === 204) {
        $('subject-result').textContent = 'Nothing changed: the image already has this subject area.';
        return;
      }
      const next = JSON.parse(await resp.text());
      state.carry = (remove ? 'Subject area removed' : 'Subject area set') + ': the new hash is ' + next.hash + '. ' +
        (deletePrevious ? 'The previous hash ' + img.hash + ' was deleted.' : 'The previous hash ' + img.hash + ' stays.');
      state.images = [];
      location.hash = '#image/' + next.hash;
    });
  }

  // render URLs, download, delete, restore, purge --------------------------------------------

  async function renderBase() {
    const saved = sessionStorage.getItem(BASE);
    if (saved) return saved;
    if (!state.status) state.status = await api('GET', '/status');
    const port = String(state.status.render_listener || '').split(':').pop();
    return location.protocol + '//' + location.hostname + (port ? ':' + port : '');
  }

  async function renderUrls(img, current) {
    if (!state.stacks) state.stacks = (await api('GET', orgPath('/stacks/'))).items || [];
    const base = await renderBase();
    if (!current()) return;
    $('render-base').value = base;
    const format = ['png', 'gif', 'webp'].includes(img.format) ? img.format : 'jpg';
    const names = state.stacks.map((s) => s.name);
    const list = $('url-list');
    list.replaceChildren();
    if (img.deleted) {
      list.append(el('li', 'A deleted image has no render URLs.', 'empty'));
      return;
    }
    if (!names.length) {
      list.append(el('li', 'No stacks yet: create one under Stacks to get render URLs.', 'empty'));
    }
    const b = base.replace(/\/+$/, '');
    for (const name of names) {
      const url = b + '/' + state.org + '/' + name + '/' + img.short_hash + '.' + format;
      const li = el('li');
      const copyButton = button('Copy', () => copy(url, copyButton), 'small');
      copyButton.dataset.label = 'Copy';
      copyButton.setAttribute('aria-label', 'Copy the URL of stack ' + name);
      const open = el('a', 'Open', 'button small');
      open.href = url;
      open.target = '_blank';
      open.rel = 'noopener noreferrer';
      open.setAttribute('aria-label', 'Open the URL of stack ' + name);
      li.append(el('span', name, 'stack'), el('code', url), copyButton, open);
      list.append(li);
    }
  }

  async function download() {
    const img = state.image;
    await forOrg(errorOf('danger'), async () => {
      const resp = await call('GET', orgPath('/sourceimages/', '/' + img.hash + '/download'));
      const url = URL.createObjectURL(await resp.blob());
      const a = el('a');
      a.href = url;
      a.download = img.name || img.hash;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
  }

  /** A change shown as its dry run first; `go` runs it once the operator confirms. */
  async function dryRunThen(kind) {
    const img = state.image;
    const path = orgPath('/sourceimages/', '/' + img.hash + (kind === 'purge' ? '/cache' : ''));
    await forOrg(errorOf('danger'), async () => {
      const report = await api('DELETE', path + '?dry_run=true');
      const verb = kind === 'purge' ? 'Purging removes' : 'Deleting removes';
      $('confirm-text').textContent = reportText(report, verb) +
        (kind === 'delete' ? '; the image stays restorable for the retention period.' : '; renders are made again on demand.');
      fillPaths($('confirm-paths'), report);
      $('confirm-go').textContent = kind === 'purge' ? 'Purge the renders' : 'Delete the image';
      state.confirm = { kind, path, hash: img.hash };
      $('confirm-box').hidden = false;
      $('confirm-go').focus();
    });
  }

  async function confirmImage() {
    const c = state.confirm;
    if (!c || !state.image || c.hash !== state.image.hash) return;
    await forOrg(errorOf('danger'), async () => {
      const resp = await call('DELETE', c.path);
      $('confirm-box').hidden = true;
      state.confirm = null;
      if (c.kind === 'purge') {
        const report = JSON.parse(await resp.text());
        $('danger-done').textContent = reportText(report, 'Purged') + '.';
      } else {
        state.images = [];
        state.carry = '';
        await loadImage(c.hash + '?deleted');
        $('danger-done').textContent = 'Deleted. Restore brings it back with its renders made again on demand.';
      }
    });
  }

  async function restoreImage() {
    const img = state.image;
    await forOrg(errorOf('danger'), async () => {
      await api('POST', orgPath('/sourceimages/', '/' + img.hash + '/restore'));
      state.images = [];
      await loadImage(img.hash);
      $('danger-done').textContent = 'Restored.';
    });
  }

  // ---- stacks ------------------------------------------------------------------------------

  async function loadSchemas() {
    if (state.schemas) return;
    const [ops, options] = await Promise.all([api('GET', '/operations'), api('GET', '/stackoptions')]);
    state.schemas = ops;
    state.stackOptions = options.properties || {};
    $('op-add-name').replaceChildren(...Object.keys(ops).map((n) => {
      const o = el('option', n);
      o.value = n;
      return o;
    }));
    $('opt-add-name').replaceChildren(...Object.keys(state.stackOptions).map((n) => {
      const o = el('option', n);
      o.value = n;
      return o;
    }));
  }

  async function loadStacks(name) {
    await forOrg(errorOf('view-stacks'), async (current) => {
      await loadSchemas();
      const list = (await api('GET', orgPath('/stacks/'))).items || [];
      if (!current()) return;
      state.stacks = list;
      $('stack-list').replaceChildren(...list.map((s) => {
        const li = el('li');
        const a = el('a', s.name);
        a.href = '#stacks/' + enc(s.name);
        const ops = (s.stack_operations || []).map((op) => op.name).join(' → ') || 'no operations: the source as it is';
        li.append(a, el('span', ops, 'hint'));
        return li;
      }));
      $('stacks-empty').hidden = list.length > 0;
      $('stacks-empty').textContent = state.can.write
        ? 'No stacks yet. “New stack” builds one; render URLs use its name.'
        : 'No stacks yet. A key with the write role can create them.';
      const chosen = list.find((s) => s.name === name);
      if (chosen) openEditor(chosen);
      // A new stack opened while the list loaded stays open.
      else if (!(state.edit && state.edit.isNew)) $('editor').hidden = true;
    });
  }

  function openEditor(stack) {
    state.edit = {
      isNew: !stack,
      name: stack ? stack.name : '',
      operations: stack ? JSON.parse(JSON.stringify(stack.stack_operations || [])) : [],
      options: stack ? Object.assign({}, stack.stack_options || {}) : {},
      variables: stack ? Object.assign({}, stack.stack_variables || {}) : {},
      expressions: stack ? stack.stack_expressions || [] : [],
    };
    $('stack-name').value = state.edit.name;
    $('stack-expr').value = state.edit.expressions.length ? JSON.stringify(state.edit.expressions) : '';
    $('editor-title').textContent = stack ? 'Stack ' + stack.name : 'New stack';
    $('stack-delete').hidden = !stack;
    $('stack-confirm').hidden = true;
    $('stack-done').textContent = '';
    showError(null, errorOf('editor'));
    $('editor').hidden = false;
    renderEditor();
    fillPreviewImages();
  }

  /** An input for one option, typed by its schema; `set(value)` receives `undefined` when the
   *  field is emptied. */
  function field(id, label, schema, value, set) {
    const wrap = el('div', null, 'field');
    const lab = el('label', label);
    lab.htmlFor = id;
    let input;
    const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
    if (schema.values || type === 'boolean') {
      input = el('select');
      const choices = schema.values || [true, false];
      input.append(el('option', 'default' + (schema.default !== undefined && schema.default !== null ? ' (' + schema.default + ')' : '')));
      input.firstChild.value = '';
      for (const c of choices) {
        const o = el('option', String(c));
        o.value = String(c);
        input.append(o);
      }
      input.value = value === undefined ? '' : String(value);
      input.addEventListener('change', () => {
        const v = input.value;
        set(v === '' ? undefined : type === 'boolean' ? v === 'true' : v);
      });
    } else {
      input = el('input');
      if (type === 'integer' || type === 'number') input.inputMode = 'decimal';
      input.spellcheck = false;
      input.value = value === undefined ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value);
      input.placeholder = schema.default !== undefined && schema.default !== null ? String(schema.default) : '';
      input.addEventListener('change', () => {
        const t = input.value.trim();
        if (t === '') return set(undefined);
        if ((type === 'integer' || type === 'number') && /^-?\d+(\.\d+)?$/.test(t)) return set(Number(t));
        if (type === 'array' || type === 'object') return set(typed(t));
        set(t);
      });
    }
    input.id = id;
    if (schema.description) input.title = schema.description;
    wrap.append(lab, input);
    return wrap;
  }

  function renderEditor() {
    const e = state.edit;
    const ops = e.operations.map((op, i) => {
      const li = el('li', null, 'op');
      const head = el('div', null, 'op-head');
      head.append(el('strong', op.name));
      if (state.can.write) {
        const up = button('↑', () => moveOp(i, -1), 'small');
        up.setAttribute('aria-label', 'Move ' + op.name + ' up');
        up.disabled = i === 0;
        const down = button('↓', () => moveOp(i, 1), 'small');
        down.setAttribute('aria-label', 'Move ' + op.name + ' down');
        down.disabled = i === e.operations.length - 1;
        const remove = button('Remove', () => {
          e.operations.splice(i, 1);
          changed();
        }, 'small');
        remove.setAttribute('aria-label', 'Remove ' + op.name);
        head.append(up, down, remove);
      }
      const schema = (state.schemas[op.name] || {}).properties || {};
      const grid = el('div', null, 'fields-grid');
      op.options = op.options || {};
      for (const [name, s] of Object.entries(schema)) {
        grid.append(field('op-' + i + '-' + name, name, s, op.options[name], (v) => {
          if (v === undefined) delete op.options[name];
          else op.options[name] = v;
          changed(true);
        }));
      }
      li.append(head, grid);
      return li;
    });
    $('ops').replaceChildren(...ops);
    if (!ops.length) $('ops').append(el('li', 'No operations: renders deliver the source as it is.', 'empty'));
    $('stack-options').replaceChildren(...Object.keys(e.options).map((name) => {
      const row = el('div', null, 'kvrow');
      row.append(field('opt-' + name, name, state.stackOptions[name] || {}, e.options[name], (v) => {
        if (v === undefined) delete e.options[name];
        else e.options[name] = v;
        changed(true);
      }));
      if (state.can.write) row.append(button('Remove', () => {
        delete e.options[name];
        changed();
      }, 'small'));
      return row;
    }));
    $('stack-vars').replaceChildren(...Object.entries(e.variables).map(([name, value], i) => {
      const row = el('div', null, 'kvrow');
      const key = el('input');
      key.value = name;
      key.id = 'var-name-' + i;
      key.setAttribute('aria-label', 'Variable name');
      const val = el('input');
      val.value = typeof value === 'string' ? value : JSON.stringify(value);
      val.setAttribute('aria-label', 'Value of variable ' + name);
      const update = () => {
        const next = {};
        for (const [k, v] of Object.entries(e.variables)) {
          if (k === name) {
            if (key.value.trim()) next[key.value.trim()] = typed(val.value);
          } else next[k] = v;
        }
        e.variables = next;
        changed();
      };
      key.addEventListener('change', update);
      val.addEventListener('change', update);
      row.append(key, val);
      if (state.can.write) row.append(button('Remove', () => {
        delete e.variables[name];
        changed();
      }, 'small'));
      return row;
    }));
    $('stack-json').textContent = JSON.stringify(definition(), null, 2);
    applyRights();
  }

  function moveOp(i, by) {
    const ops = state.edit.operations;
    const [op] = ops.splice(i, 1);
    ops.splice(i + by, 0, op);
    changed();
  }

  let previewTimer = null;

  /** The definition changed: redraw (unless only a value changed) and refresh the preview soon. */
  function changed(valueOnly) {
    if (valueOnly) $('stack-json').textContent = JSON.stringify(definition(), null, 2);
    else renderEditor();
    clearTimeout(previewTimer);
    previewTimer = setTimeout(() => guarded(updatePreview), 500);
  }

  function definition() {
    const e = state.edit;
    let expressions = e.expressions;
    const raw = $('stack-expr').value.trim();
    if (raw) {
      try {
        expressions = JSON.parse(raw);
      } catch (_) {
        expressions = e.expressions;
      }
    } else expressions = [];
    const body = { operations: e.operations.map((op) => ({ name: op.name, options: op.options || {} })), options: e.options };
    if (Object.keys(e.variables).length) body.variables = e.variables;
    if (expressions.length) body.expressions = expressions;
    return body;
  }

  async function fillPreviewImages() {
    if (!state.images.length) {
      const list = await api('GET', orgPath('/sourceimages/', '?limit=' + PAGE));
      state.images = list.items || [];
      state.next = list.links && list.links.next ? list.cursor : null;
    }
    const select = $('preview-image');
    const keep = select.value;
    select.replaceChildren(...state.images.filter((i) => !i.deleted).map((img) => {
      const o = el('option', (img.name || img.short_hash) + ' (' + img.short_hash + ')');
      o.value = img.hash;
      return o;
    }));
    if (keep && state.images.some((i) => i.hash === keep)) select.value = keep;
    $('preview-note').textContent = select.options.length
      ? 'The preview renders the operations, options and variables above as a dynamic stack, ' +
        'through the appliance; expressions apply once the stack is saved.'
      : 'Upload an image to preview stacks on it.';
    $('preview-update').disabled = !select.options.length;
    if (select.options.length) await updatePreview();
  }

  /** A URL segment value: the render grammar splits on '-' and '/', so those go through `?v=`. */
  function segmentValue(v) {
    const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
    return /^[A-Za-z0-9_.$#]+$/.test(s) ? s : null;
  }

  function dynamicPath() {
    const body = definition();
    const vars = Object.assign({}, body.variables || {});
    let n = 0;
    const part = (name, options) => {
      let out = name;
      for (const [k, v] of Object.entries(options || {})) {
        let s = segmentValue(v);
        if (s === null) {
          const ref = 'p' + n++;
          vars[ref] = v;
          s = '$' + ref;
        }
        out += '-' + k + '-' + s;
      }
      return out;
    };
    const ops = body.operations.map((op) => part(op.name, op.options)).join('--') || 'noop';
    const opts = Object.keys(body.options || {}).length ? '/' + part('o', body.options) : '';
    const query = Object.keys(vars).length ? '?v=' + enc(JSON.stringify(vars)) : '';
    return { ops: ops + opts, query };
  }

  async function updatePreview() {
    const hash = $('preview-image').value;
    if (!hash || $('editor').hidden) return;
    const { ops, query } = dynamicPath();
    const pic = $('stack-preview');
    const box = errorOf('editor');
    showError(null, box);
    pic.closest('.preview').classList.remove('broken');
    previewInto(pic, orgPath('/preview/', '/dynamic/' + ops + '/' + hash + '.png' + query), (err) => {
      if (err) showError(err, box);
    });
  }

  async function saveStack() {
    const e = state.edit;
    const name = e.isNew ? $('stack-name').value.trim() : e.name;
    if (!name) return showError(new Error('Give the stack a name.'), errorOf('editor'));
    let body;
    try {
      const raw = $('stack-expr').value.trim();
      if (raw) JSON.parse(raw);
      body = definition();
    } catch (err) {
      return showError(new Error('Expressions: ' + err.message), errorOf('editor'));
    }
    const path = orgPath('/stacks/', '/' + enc(name));
    await forOrg(errorOf('editor'), async () => {
      if (e.isNew) {
        await api('PUT', path, body);
        $('stack-done').textContent = 'Created stack ' + name + '.';
        state.stacks = null;
        location.hash = '#stacks/' + enc(name);
        return;
      }
      const report = await api('PUT', path + '?overwrite=true&dry_run=true', body);
      stackConfirm('save', path + '?overwrite=true', body, reportText(report, 'Saving invalidates') +
        '; the new definition renders on demand.', report);
    });
  }

  async function deleteStack() {
    const path = orgPath('/stacks/', '/' + enc(state.edit.name));
    await forOrg(errorOf('editor'), async () => {
      const report = await api('DELETE', path + '?dry_run=true');
      stackConfirm('delete', path, undefined, reportText(report, 'Deleting removes') + '; its URLs will answer 404.', report);
    });
  }

  function stackConfirm(kind, path, body, text, report) {
    state.confirm = { kind, path, body, stack: state.edit.name };
    $('stack-confirm-text').textContent = text;
    fillPaths($('stack-confirm-paths'), report);
    $('stack-confirm-go').textContent = kind === 'save' ? 'Overwrite ' + state.edit.name : 'Delete ' + state.edit.name;
    $('stack-confirm').hidden = false;
    $('stack-confirm-go').focus();
  }

  async function confirmStack() {
    const c = state.confirm;
    if (!c || !state.edit || c.stack !== state.edit.name) return;
    await forOrg(errorOf('editor'), async () => {
      const report = await api(c.kind === 'save' ? 'PUT' : 'DELETE', c.path, c.body);
      $('stack-confirm').hidden = true;
      state.confirm = null;
      state.stacks = null;
      if (c.kind === 'delete') {
        location.hash = '#stacks';
        $('editor').hidden = true;
      } else {
        $('stack-done').textContent = 'Saved ' + c.stack + (report && report.name ? '; new renders use the new definition.' : '.');
      }
    });
  }

  // ---- usage -------------------------------------------------------------------------------

  const day = (d) => d.toISOString().slice(0, 10);

  async function loadUsage() {
    if (!$('to').value) {
      const to = new Date();
      $('to').value = day(to);
      $('from').value = day(new Date(to.getTime() - 29 * 86400000));
    }
    await forOrg(errorOf('usage'), async (current) => {
      const q = new URLSearchParams({ from: $('from').value, to: $('to').value });
      const stats = await api('GET', orgPath('/stats/', '?' + q));
      if (!current()) return;
      renderUsage(stats);
    });
  }

  function renderUsage(stats) {
    const latest = (name) => ((stats[name] || [])[0] || {}).value || 0;
    const traffic = (stats.bytes_downloaded || []).reduce((sum, p) => sum + p.value, 0);
    const tiles = [
      ['Source storage (billed)', bytes(latest('space_in_bytes'))],
      ['Source files (billed)', count.format(latest('number_of_files'))],
      ['Traffic in the range', bytes(traffic)],
      ['Render cache (not billed)', bytes(latest('render_cache_bytes'))],
      ['Stored renders (not billed)', count.format(latest('renders'))],
    ];
    $('tiles').replaceChildren(...tiles.map(([label, value]) => {
      const div = el('div');
      div.append(el('dt', label), el('dd', value));
      return div;
    }));
    const days = (stats.space_in_bytes || []).map((p) => p.timestamp.slice(0, 10)).reverse();
    const series = (name) => {
      const byDay = new Map((stats[name] || []).map((p) => [p.timestamp.slice(0, 10), p.value]));
      return days.map((d) => byDay.get(d) || 0);
    };
    $('charts').replaceChildren(
      chart('Billed source storage', days, series('space_in_bytes'), bytes, 'line'),
      chart('Billed source files', days, series('number_of_files'), (n) => count.format(n), 'line'),
      chart('Traffic (bytes downloaded)', days, series('bytes_downloaded'), bytes, 'bars'),
      chart('Render cache — not billed', days, series('render_cache_bytes'), bytes, 'line', 'cache')
    );
  }

  /** A small SVG chart of one daily series; its label says what a screen reader needs. */
  function chart(title, days, values, format, kind, tone) {
    const fig = el('figure', null, 'chart' + (tone ? ' ' + tone : ''));
    const W = 600;
    const H = 150;
    const pad = { l: 8, r: 8, t: 10, b: 22 };
    const max = Math.max(1, ...values);
    const x = (i) => pad.l + (days.length <= 1 ? 0.5 : i / (days.length - 1)) * (W - pad.l - pad.r);
    const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('role', 'img');
    const last = values[values.length - 1] || 0;
    svg.setAttribute('aria-label', title + ' from ' + (days[0] || '–') + ' to ' + (days[days.length - 1] || '–') +
      ': highest ' + format(Math.max(0, ...values)) + ', last ' + format(last) + '.');
    const add = (name, attrs) => {
      const node = document.createElementNS(SVG, name);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      svg.append(node);
      return node;
    };
    add('line', { x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b, class: 'axis' });
    add('line', { x1: pad.l, x2: W - pad.r, y1: pad.t, y2: pad.t, class: 'grid' });
    if (kind === 'bars') {
      const w = Math.max(1, (W - pad.l - pad.r) / Math.max(1, days.length) - 2);
      values.forEach((v, i) => {
        if (v > 0) add('rect', { x: x(i) - w / 2, y: y(v), width: w, height: H - pad.b - y(v), class: 'bar' });
      });
    } else if (values.length) {
      const pts = values.map((v, i) => x(i).toFixed(1) + ',' + y(v).toFixed(1));
      add('polygon', { points: x(0) + ',' + (H - pad.b) + ' ' + pts.join(' ') + ' ' + x(values.length - 1) + ',' + (H - pad.b), class: 'area' });
      add('polyline', { points: pts.join(' '), class: 'line' });
    }
    const label = (text, tx, anchor) => {
      const t = add('text', { x: tx, y: H - 6, 'text-anchor': anchor });
      t.textContent = text;
    };
    label(days[0] || '', pad.l, 'start');
    label(days[days.length - 1] || '', W - pad.r, 'end');
    const top = add('text', { x: pad.l + 4, y: pad.t + 12, 'text-anchor': 'start' });
    top.textContent = format(max);
    const caption = el('figcaption');
    caption.append(el('strong', title), el('span', ' now ' + format(last), 'hint'));
    fig.append(caption, svg);
    return fig;
  }

  // organization purge -------------------------------------------------------------------------

  function resetPurge() {
    state.purge = null;
    $('purge-report').hidden = true;
    $('purge-paths').replaceChildren();
    $('purge-summary').textContent = '';
  }

  async function checkPurge() {
    const org = state.org;
    resetPurge();
    $('purge-done').textContent = '';
    await forOrg(errorOf('purge'), async (current) => {
      const report = await api('DELETE', orgPath('/organizations/', '/cache?dry_run=true'));
      if (!current()) return;
      if (!report.renders) {
        $('purge-done').textContent = 'Nothing to purge: no stored renders.';
        return;
      }
      state.purge = org;
      $('purge-summary').textContent = reportText(report, 'A purge removes') + '.';
      fillPaths($('purge-paths'), report);
      $('purge-confirm').textContent = 'Purge ' + plural(report.renders, 'render') + ' of ' + org;
      $('purge-report').hidden = false;
      $('purge-confirm').focus();
    });
  }

  async function confirmPurge() {
    if (!state.purge || state.purge !== state.org) return resetPurge();
    await forOrg(errorOf('purge'), async () => {
      const report = await api('DELETE', orgPath('/organizations/', '/cache'));
      resetPurge();
      $('purge-done').textContent = reportText(report, 'Purged') + '.';
      $('purge-check').focus();
      await loadUsage();
    });
  }

  // ---- keys and members --------------------------------------------------------------------

  const ROLES = ['read', 'write', 'upload', 'admin', 'sourceimages:read', 'sourceimages:write',
    'sourceimages:download:protected', 'sourceimages:unlock', 'billing:read'];

  async function loadMembers() {
    if (!$('roles').children.length) {
      $('roles').replaceChildren(...ROLES.map((r, i) => {
        const span = el('span', null, 'check');
        const box = el('input');
        box.type = 'checkbox';
        box.id = 'role-' + i;
        box.value = r;
        box.checked = r === 'read';
        const lab = el('label', r);
        lab.htmlFor = box.id;
        span.append(box, lab);
        return span;
      }));
    }
    $('newkey-shown').hidden = true;
    $('member-list').replaceChildren();
    if (!state.can.admin) {
      $('members-note').textContent = 'Listing members and creating keys needs an admin key of this organization. ' +
        'An operator can create one with: darkroom admin key create ' + state.org + ' --roles admin';
      return;
    }
    await forOrg(errorOf('members'), async (current) => {
      const list = await api('GET', orgPath('/organizations/', '/memberships'));
      if (!current()) return;
      const items = list.items || [];
      $('members-note').textContent = plural(items.length, 'member') + '. Each member is one key; revoking removes its access at once.';
      $('member-list').replaceChildren(...items.map(memberRow));
    });
  }

  function memberRow(m) {
    const li = el('li');
    const me = m.user_id === state.userId;
    li.append(el('strong', (m.roles || []).join(', ')),
      el('span', (m.comment || m.email || 'no comment') + (me ? ' (this key)' : ''), 'who'),
      el('code', m.user_id), el('span', m.active === false ? 'inactive' : 'created ' + when(m.created), 'hint'));
    if (!me) {
      const revoke = button('Revoke', async () => {
        if (revoke.dataset.armed !== 'yes') {
          revoke.dataset.armed = 'yes';
          revoke.textContent = 'Confirm revoke';
          revoke.className = 'small danger';
          return;
        }
        await forOrg(errorOf('members'), async () => {
          await api('DELETE', orgPath('/organizations/', '/memberships/' + enc(m.user_id)));
          li.remove();
        });
      }, 'small');
      revoke.setAttribute('aria-label', 'Revoke the key ' + (m.comment || m.user_id));
      li.append(revoke);
    }
    return li;
  }

  async function createKey() {
    const roles = Array.from($('roles').querySelectorAll('input:checked')).map((b) => b.value);
    const box = errorOf('newkey');
    if (!roles.length) return showError(new Error('Choose at least one role.'), box);
    await forOrg(box, async () => {
      const body = { roles };
      const comment = $('newkey-comment').value.trim();
      if (comment) body.comment = comment;
      const made = await api('POST', orgPath('/organizations/', '/memberships'), body);
      $('newkey-value').textContent = made.api_key;
      $('newkey-shown').hidden = false;
      $('newkey-comment').value = '';
      const list = await api('GET', orgPath('/organizations/', '/memberships'));
      $('member-list').replaceChildren(...(list.items || []).map(memberRow));
    });
  }

  // ---- status ------------------------------------------------------------------------------

  async function loadStatus() {
    await forOrg(errorOf('status'), async () => {
      const s = await api('GET', '/status');
      state.status = s;
      const r = s.render || {};
      const c = s.render_cache || {};
      const e = s.edge || {};
      const tiles = [
        ['Readiness', s.ready ? 'Ready' : 'Not ready: ' + s.ready_message],
        ['Version', s.version],
        ['Render queue', count.format(r.queued || 0) + ' waiting, ' + count.format(r.in_flight || 0) + ' running'],
        ['Render threads / queue', r.threads + ' / ' + r.queue_capacity],
        ['Refused when busy', count.format(r.rejected || 0)],
        ['Stored renders', count.format(c.renders || 0) + ' (' + bytes(c.bytes) + (c.max_bytes ? ' of ' + bytes(c.max_bytes) : '') + ')'],
        ['Edge queue', e.enabled ? count.format(e.pending || 0) + ' pending, ' + count.format(e.failed || 0) + ' failed' : 'no edge configured'],
      ];
      $('status-tiles').replaceChildren(...tiles.map(([label, value]) => {
        const div = el('div');
        div.append(el('dt', label), el('dd', value));
        return div;
      }));
      $('codecs').replaceChildren(...(s.codecs || []).map((line) => el('li', line)));
    });
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
  $('org').addEventListener('change', () => {
    const m = state.memberships.find((x) => x.organization === $('org').value);
    state.org = $('org').value;
    state.can = m ? rights(m.roles || [], m.active !== false) : {};
    state.generation += 1;
    $('stale').hidden = true;
    clearOrgData();
    applyRights();
    if (state.view === 'image') location.hash = '#gallery';
    else route();
  });
  window.addEventListener('hashchange', () => guarded(async () => {
    if (!state.org) return;
    // Every move re-reads the key's memberships: a revoked one clears the screen.
    if (await refreshAccess()) route();
  }));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.org) guarded(async () => {
      if (!(await refreshAccess())) hideViews();
    });
  });
  for (const a of document.querySelectorAll('.tabs a')) {
    a.addEventListener('click', (event) => {
      // The tab of the current view reloads it.
      if (location.hash === a.getAttribute('href')) {
        event.preventDefault();
        if (a.dataset.view === 'gallery') state.images = [];
        guarded(async () => {
          if (await refreshAccess()) route();
        });
      }
    });
  }
  $('search').addEventListener('submit', (event) => {
    event.preventDefault();
    guarded(() => loadGallery(false));
  });
  $('q-sort').addEventListener('change', () => {
    $('q-sort-user-box').hidden = $('q-sort').value !== 'user';
  });
  $('q-deleted').addEventListener('change', () => guarded(() => loadGallery(false)));
  $('more').addEventListener('click', () => guarded(() => loadGallery(true)));
  $('files').addEventListener('change', () => {
    uploadFiles($('files').files);
    $('files').value = '';
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    if (event.dataTransfer && event.dataTransfer.files.length) uploadFiles(event.dataTransfer.files);
  });
  wireStage();
  $('delete-previous').addEventListener('change', explainDeletePrevious);
  $('subject-save').addEventListener('click', () => guarded(() => saveSubject(false)));
  $('subject-clear').addEventListener('click', () => guarded(() => saveSubject(true)));
  $('meta-add').addEventListener('click', () => {
    const empty = $('meta-rows').querySelector('.empty');
    if (empty) empty.closest('tr').remove();
    const row = metaRow('', '');
    $('meta-rows').append(row);
    row.querySelector('input').focus();
  });
  $('meta-save').addEventListener('click', () => guarded(saveMeta));
  $('render-base').addEventListener('change', () => {
    const v = $('render-base').value.trim();
    if (v) sessionStorage.setItem(BASE, v);
    else sessionStorage.removeItem(BASE);
    if (state.image) guarded(() => renderUrls(state.image, () => true));
  });
  $('download').addEventListener('click', () => guarded(download));
  $('image-delete').addEventListener('click', () => guarded(() => dryRunThen('delete')));
  $('image-purge').addEventListener('click', () => guarded(() => dryRunThen('purge')));
  $('image-restore').addEventListener('click', () => guarded(restoreImage));
  $('confirm-go').addEventListener('click', () => guarded(confirmImage));
  $('confirm-cancel').addEventListener('click', () => {
    state.confirm = null;
    $('confirm-box').hidden = true;
  });
  $('stack-new').addEventListener('click', () => guarded(async () => {
    await loadSchemas();
    openEditor(null);
    $('stack-name').focus();
  }));
  $('op-add').addEventListener('click', () => {
    state.edit.operations.push({ name: $('op-add-name').value, options: {} });
    changed();
  });
  $('opt-add').addEventListener('click', () => {
    const name = $('opt-add-name').value;
    if (!(name in state.edit.options)) {
      const s = state.stackOptions[name] || {};
      state.edit.options[name] = s.default !== undefined && s.default !== null ? s.default : '';
    }
    changed();
  });
  $('var-add').addEventListener('click', () => {
    let n = 1;
    while (('var' + n) in state.edit.variables) n += 1;
    state.edit.variables['var' + n] = '';
    changed();
  });
  $('stack-expr').addEventListener('change', () => changed(true));
  $('preview-image').addEventListener('change', () => guarded(updatePreview));
  $('preview-update').addEventListener('click', () => guarded(updatePreview));
  $('stack-save').addEventListener('click', () => guarded(saveStack));
  $('stack-delete').addEventListener('click', () => guarded(deleteStack));
  $('stack-confirm-go').addEventListener('click', () => guarded(confirmStack));
  $('stack-confirm-cancel').addEventListener('click', () => {
    state.confirm = null;
    $('stack-confirm').hidden = true;
  });
  $('range').addEventListener('submit', (event) => {
    event.preventDefault();
    guarded(loadUsage);
  });
  $('purge-check').addEventListener('click', () => guarded(checkPurge));
  $('purge-confirm').addEventListener('click', () => guarded(confirmPurge));
  $('purge-cancel').addEventListener('click', () => {
    resetPurge();
    $('purge-check').focus();
  });
  $('newkey-form').addEventListener('submit', (event) => {
    event.preventDefault();
    guarded(createKey);
  });
  $('newkey-copy').addEventListener('click', () => copy($('newkey-value').textContent, $('newkey-copy')));

  if (sessionStorage.getItem(KEY)) guarded(start);
  else $('key').focus();
})();
