// Drives the Darkroom dashboard in Debian's Chromium through puppeteer-core, as an operator
// would: log in, upload through the file chooser, page the gallery, pick a subject area with the
// mouse, build a stack and see its preview, purge with a dry run first; and checks the broken
// states it must not fall back into (role-blind controls, stale figures, a key without
// organizations, a misleading message for a wrong key), a phone-width layout, console errors
// and accessibility (axe-core). Started by run.sh, which prepares the organizations and keys.
//
// Environment (set by run.sh):
//   DARKROOM_API         base URL of the API listener
//   DARKROOM_ROOT_KEY    the appliance's auth.root_key
//   DARKROOM_ADMIN_KEY   admin of organization demo;   DARKROOM_READ_KEY  read-only on demo
//   DARKROOM_BIG_KEY     admin of organization big (filled with 100 images here)
//   DARKROOM_EMPTY_KEY   admin of organization empty
//   CHROMIUM             the browser binary
//   DARKROOM_SCREENSHOTS optional folder for screenshots of the main views

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deflateSync } from 'node:zlib'
import { createRequire } from 'node:module'
import puppeteer from 'puppeteer-core'

const require = createRequire(import.meta.url)
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8')

const API = env('DARKROOM_API').replace(/\/+$/, '')
const ROOT = env('DARKROOM_ROOT_KEY')
const ADMIN = env('DARKROOM_ADMIN_KEY')
const READER = env('DARKROOM_READ_KEY')
const BIG = env('DARKROOM_BIG_KEY')
const EMPTY = env('DARKROOM_EMPTY_KEY')
const SHOTS = process.env.DARKROOM_SCREENSHOTS || ''
const DASHBOARD = API + '/dashboard'

function env(name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} must be set`)
  return value
}

// ---- fixtures: PNGs built in memory, each with its own pixels ----------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})
function crc32(buf) {
  let c = 0xffffffff
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}
function chunk(type, data) {
  const len = Buffer.alloc(4)
  len.writeUInt32BE(data.length)
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(body))
  return Buffer.concat([len, body, crc])
}
/** An RGB PNG of width × height with a gradient shifted by `seed`. */
function png(width, height, seed) {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8
  ihdr[9] = 2
  const raw = Buffer.alloc((width * 3 + 1) * height)
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1)
    for (let x = 0; x < width; x++) {
      raw[row + 1 + x * 3] = (x * 4 + seed * 37) & 255
      raw[row + 2 + x * 3] = (y * 4 + seed * 11) & 255
      raw[row + 3 + x * 3] = (seed * 53) & 255
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

async function apiCall(method, path, key, body) {
  const resp = await fetch(API + path, {
    method,
    headers: { 'Api-Key': key },
    body: body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
  })
  const text = await resp.text()
  return { status: resp.status, body: text ? JSON.parse(text) : null }
}

async function uploadVia(key, org, name, bytes) {
  const form = new FormData()
  form.append('filedata', new Blob([bytes], { type: 'image/png' }), name)
  const a = await apiCall('POST', `/sourceimages/${org}`, key, form)
  assert.equal(a.status, 200, JSON.stringify(a.body))
  return a.body.items[0]
}

// ---- the browser -------------------------------------------------------------------------------

let browser
let folder
const consoleErrors = []

before(async () => {
  folder = mkdtempSync(join(tmpdir(), 'darkroom-dashboard-'))
  if (SHOTS) mkdirSync(SHOTS, { recursive: true })
  browser = await puppeteer.launch({
    executablePath: env('CHROMIUM'),
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run'],
  })
  // Organization big holds 100 images, uploaded four at a time (a key's limit of uploads in
  // flight).
  for (let i = 0; i < 100; i += 4) {
    await Promise.all(Array.from({ length: 4 }, (_, j) =>
      uploadVia(BIG, 'big', `photo-${String(i + j).padStart(3, '0')}.png`, png(96, 64, i + j + 1))))
  }
})

after(async () => {
  if (browser) await browser.close()
  if (folder) rmSync(folder, { recursive: true, force: true })
})

/** A fresh tab (its own session storage) whose console errors are collected. */
async function tab(options = {}) {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  await page.setViewport({ width: options.width || 1280, height: options.height || 900 })
  if (options.bypassCsp) await page.setBypassCSP(true)
  const errors = []
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text())
  })
  page.on('pageerror', (e) => errors.push(String(e)))
  page.errors = errors
  page.requests = []
  page.on('request', (r) => page.requests.push(r.method() + ' ' + r.url()))
  page.close = async () => context.close()
  return page
}

async function login(page, key) {
  await page.goto(DASHBOARD, { waitUntil: 'domcontentloaded' })
  await page.waitForSelector('#key', { visible: true })
  await page.type('#key', key)
  await page.click('#key-form button[type=submit]')
}

async function visible(page, selector) {
  return page.$eval(selector, (n) => !!(n.offsetWidth || n.offsetHeight || n.getClientRects().length)).catch(() => false)
}

async function thumbsLoaded(page, n) {
  await page.waitForFunction(
    (n) => [...document.querySelectorAll('#grid .thumb img')].filter((i) => i.complete && i.naturalWidth > 0).length >= n,
    { timeout: 30000 }, n)
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, name + '.png'), fullPage: true })
}

async function go(page, hash) {
  await page.evaluate((h) => { location.hash = h }, hash)
}

// ---- the tests ---------------------------------------------------------------------------------

test('log in', async () => {
  const page = await tab()
  await login(page, ADMIN)
  await page.waitForSelector('#workspace', { visible: true })
  assert.equal(await visible(page, '#login'), false)
  assert.match(await page.$eval('#who', (n) => n.textContent), /Key of/)
  assert.equal(await page.$eval('#org', (n) => n.value), 'demo')
  assert.equal(await page.$eval('.tabs a[aria-current=page]', (n) => n.textContent), 'Gallery')
  // An empty organization says what to do next.
  await page.waitForSelector('#gallery-empty', { visible: true })
  assert.match(await page.$eval('#gallery-empty', (n) => n.textContent), /Drop files/)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('upload two files through the file chooser and see their thumbnails load', async () => {
  const page = await tab()
  await login(page, ADMIN)
  await page.waitForSelector('#upload', { visible: true })
  const files = ['red-square.png', 'wide-gradient.png'].map((name, i) => {
    const path = join(folder, name)
    writeFileSync(path, png(i ? 160 : 80, 80, 200 + i))
    return path
  })
  const broken = join(folder, 'broken.png')
  writeFileSync(broken, Buffer.from('\x89PNG\r\n\x1a\nthis is not a picture'))
  const [chooser] = await Promise.all([page.waitForFileChooser(), page.click('label[for=files]')])
  await chooser.accept(files)
  await page.waitForFunction(() => document.querySelectorAll('#upload-list .upload.done').length === 2, { timeout: 30000 })
  await thumbsLoaded(page, 2)
  const names = await page.$$eval('#grid .thumb .name', (ns) => ns.map((n) => n.textContent))
  assert.deepEqual(names.sort(), ['red-square.png', 'wide-gradient.png'])
  const widths = await page.$$eval('#grid .thumb img', (is) => is.map((i) => i.naturalWidth))
  assert.ok(widths.every((w) => w > 0), JSON.stringify(widths))
  // A broken file gets its own clear error, and the others are not affected.
  const [again] = await Promise.all([page.waitForFileChooser(), page.click('label[for=files]')])
  await again.accept([broken])
  await page.waitForSelector('#upload-list .upload.failed')
  assert.match(await page.$eval('#upload-list .upload.failed .status', (n) => n.textContent), /broken|unsupported|refused/)
  consoleErrors.push(...page.errors.filter((e) => !/status of 4\d\d/.test(e)))
  await shot(page, 'gallery')
  await page.close()
})

test('upload by drag and drop, with user metadata', async () => {
  const page = await tab()
  await login(page, ADMIN)
  await page.waitForSelector('#drop', { visible: true })
  await page.click('#upload summary')
  await page.type('#upload-meta', '{"category":"dropped"}')
  const bytes = [...png(64, 64, 150)]
  await page.evaluate((bytes) => {
    const transfer = new DataTransfer()
    transfer.items.add(new File([new Uint8Array(bytes)], 'dropped.png', { type: 'image/png' }))
    const drop = document.querySelector('#drop')
    drop.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true, cancelable: true }))
    drop.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }))
  }, bytes)
  await page.waitForSelector('#upload-list .upload.done')
  const list = await apiCall('GET', '/sourceimages/demo?user:str:category=dropped', ADMIN)
  assert.equal(list.body.total, 1)
  assert.equal(list.body.items[0].name, 'dropped.png')
  // And the search finds it by that field.
  await page.type('#q-field', 'category')
  await page.type('#q-value', 'dropped')
  await page.click('#search button[type=submit]')
  await page.waitForFunction(() => document.querySelector('#gallery-summary').textContent.includes('of 1 image.'))
  await thumbsLoaded(page, 1)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('delete an image after its dry run, and restore it from the deleted images', async () => {
  const img = await uploadVia(ADMIN, 'demo', 'doomed.png', png(50, 50, 99))
  const page = await tab()
  await login(page, ADMIN)
  await thumbsLoaded(page, 1)
  await go(page, '#image/' + img.hash)
  await page.waitForSelector('#image-delete', { visible: true })
  await page.click('#image-delete')
  await page.waitForSelector('#confirm-box', { visible: true })
  assert.match(await page.$eval('#confirm-text', (n) => n.textContent), /Deleting removes \d+ renders?/)
  assert.equal((await apiCall('GET', `/sourceimages/demo/${img.hash}`, ADMIN)).status, 200)
  await page.click('#confirm-go')
  await page.waitForFunction(() => document.querySelector('#danger-done').textContent.startsWith('Deleted'))
  assert.equal((await apiCall('GET', `/sourceimages/demo/${img.hash}`, ADMIN)).status, 404)
  await go(page, '#gallery')
  await page.click('#q-deleted')
  await page.waitForFunction(() => document.querySelector('#gallery-summary').textContent.includes('deleted image'))
  const restore = await page.waitForSelector('#grid .thumb.deleted button')
  await restore.click()
  await page.waitForFunction(() => document.querySelector('#gallery-summary').textContent.startsWith('Restored'))
  assert.equal((await apiCall('GET', `/sourceimages/demo/${img.hash}`, ADMIN)).status, 200)
  consoleErrors.push(...page.errors)
  await page.close()
})

/** A tab that opens the dashboard with `key` already in its session storage, as after a reload:
 *  answers the milliseconds from navigation start to the first thumbnail shown. */
async function openWithKey(page, key) {
  await page.evaluateOnNewDocument((key) => sessionStorage.setItem('darkroom.apiKey', key), key)
  await page.goto(DASHBOARD, { waitUntil: 'domcontentloaded' })
  await thumbsLoaded(page, 1)
  return page.evaluate(() => performance.now())
}

test('page through more than one page of images, and time the first thumbnail', async () => {
  const page = await tab()
  const cold = await openWithKey(page, BIG)
  await page.waitForFunction(() => document.querySelectorAll('#grid .thumb').length === 24)
  assert.match(await page.$eval('#gallery-summary', (n) => n.textContent), /Showing 24 of 100 images/)
  await page.click('#more')
  await page.waitForFunction(() => document.querySelectorAll('#grid .thumb').length === 48)
  await page.click('#more')
  await page.waitForFunction(() => document.querySelectorAll('#grid .thumb').length === 72)
  await page.click('#more')
  await page.waitForFunction(() => document.querySelectorAll('#grid .thumb').length === 96)
  await page.click('#more')
  await page.waitForFunction(() => document.querySelectorAll('#grid .thumb').length === 100)
  assert.equal(await visible(page, '#more'), false)
  const hrefs = await page.$$eval('#grid .thumb a', (as) => as.map((a) => a.getAttribute('href')))
  assert.equal(new Set(hrefs).size, 100)
  // Newest first: the last uploaded batch leads.
  const first = await page.$eval('#grid .thumb .name', (n) => n.textContent)
  assert.match(first, /^photo-09\d\.png$/)
  // Search by name prefix, then sort by name.
  await page.type('#q-name', 'photo-01')
  await page.select('#q-sort', 'name asc')
  await page.click('#search button[type=submit]')
  await page.waitForFunction(() => document.querySelector('#gallery-summary').textContent.includes('of 10 images'))
  assert.equal(await page.$eval('#grid .thumb .name', (n) => n.textContent), 'photo-010.png')
  await thumbsLoaded(page, 10)
  // The same page again: previews are stored renders now.
  const warmPage = await tab()
  const warm = await openWithKey(warmPage, BIG)
  const sizes = await warmPage.evaluate(() => performance.getEntriesByType('resource')
    .filter((r) => r.name.includes('/dashboard/'))
    .map((r) => r.name.split('/').pop() + '=' + r.decodedBodySize))
  const nav = await warmPage.evaluate(() => performance.getEntriesByType('navigation')[0].decodedBodySize)
  // Where the time goes: when each request of the way to the first thumbnail started and ended.
  const steps = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0]
    const first = (part) => performance.getEntriesByType('resource').find((r) => r.name.includes(part))
    return [['html', nav], ['app.js', first('app.js')], ['memberships', first('/user/memberships')],
      ['list', first('/sourceimages/')], ['preview', first('/preview/')]]
      .map(([n, r]) => r ? `${n} ${Math.round(r.startTime)}–${Math.round(r.responseEnd)}` : `${n} ?`).join(', ')
  })
  console.log(`# first thumbnail after load on a 100-image organization: ${Math.round(cold)} ms cold (rendered), ` +
    `${Math.round(warm)} ms warm (stored renders); page weight: index.html=${nav} ${sizes.join(' ')}; cold steps (ms): ${steps}`)
  consoleErrors.push(...page.errors, ...warmPage.errors)
  await warmPage.close()
  await page.close()
})

test('set a subject area by mouse drag', async () => {
  const img = await uploadVia(ADMIN, 'demo', 'subject.png', png(200, 100, 77))
  const page = await tab()
  await login(page, ADMIN)
  await page.waitForSelector('#grid .thumb')
  await go(page, '#image/' + img.hash)
  await page.waitForFunction(() => {
    const i = document.querySelector('#detail-img')
    return i.complete && i.naturalWidth > 0
  })
  assert.match(await page.$eval('#delete-previous-hint', (n) => n.textContent), /stays/)
  const box = await (await page.$('#detail-img')).boundingBox()
  await page.mouse.move(box.x + box.width * 0.25, box.y + box.height * 0.2)
  await page.mouse.down()
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 5 })
  await page.mouse.move(box.x + box.width * 0.75, box.y + box.height * 0.8, { steps: 5 })
  await page.mouse.up()
  assert.match(await page.$eval('#subject-picked', (n) => n.textContent), /Picked x 5\d, y 2\d, 10\d × 6\d px/)
  // The typed fields follow the drag (they are the keyboard's way to the same area).
  assert.match(await page.$eval('#area-x', (n) => n.value), /^5\d$/)
  assert.match(await page.$eval('#area-w', (n) => n.value), /^10\d$/)
  await shot(page, 'image-detail')
  await page.click('#subject-save')
  await page.waitForFunction((old) => location.hash.startsWith('#image/') && !location.hash.includes(old), {}, img.hash)
  await page.waitForFunction(() => /new hash is [0-9a-f]{40}/.test(document.querySelector('#subject-result').textContent))
  const next = (await page.evaluate(() => location.hash)).split('/')[1]
  const rec = await apiCall('GET', `/sourceimages/demo/${next}`, ADMIN)
  const area = rec.body.dynamic_metadata.subject_area
  assert.ok(Math.abs(area.x - 50) <= 3 && Math.abs(area.y - 20) <= 3, JSON.stringify(area))
  assert.ok(Math.abs(area.width - 100) <= 4 && Math.abs(area.height - 60) <= 4, JSON.stringify(area))
  assert.match(await page.$eval('#subject-result', (n) => n.textContent), /previous hash [0-9a-f]{40} stays/)
  assert.equal((await apiCall('GET', `/sourceimages/demo/${img.hash}`, ADMIN)).status, 200)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('build a stack in the editor and see its preview', async () => {
  const page = await tab()
  await login(page, ADMIN)
  await page.waitForSelector('#grid .thumb')
  await go(page, '#stacks')
  await page.waitForSelector('#stack-new', { visible: true })
  await page.click('#stack-new')
  await page.waitForSelector('#editor', { visible: true })
  await page.type('#stack-name', 'small')
  await page.select('#op-add-name', 'resize')
  await page.click('#op-add')
  await page.waitForSelector('#op-0-width')
  await page.type('#op-0-width', '40')
  await page.$eval('#op-0-width', (n) => n.dispatchEvent(new Event('change')))
  await page.select('#op-add-name', 'rotate')
  await page.click('#op-add')
  await page.waitForSelector('#op-1-angle')
  await page.type('#op-1-angle', '90')
  await page.$eval('#op-1-angle', (n) => n.dispatchEvent(new Event('change')))
  await page.click('#preview-update')
  // The preview is the chosen image resized to 40 px wide, then turned: 40 px high.
  await page.waitForFunction(() => {
    const i = document.querySelector('#stack-preview')
    return i.complete && i.naturalHeight === 40
  }, { timeout: 20000 })
  assert.match(await page.$eval('#stack-json', (n) => n.textContent), /"rotate"/)
  await shot(page, 'stack-editor')
  // Reorder: rotate first, then resize to 40 wide.
  await page.click('button[aria-label="Move rotate up"]')
  await page.click('#preview-update')
  await page.waitForFunction(() => {
    const i = document.querySelector('#stack-preview')
    return i.complete && i.naturalWidth === 40
  }, { timeout: 20000 })
  await page.click('#stack-save')
  await page.waitForFunction(() => location.hash === '#stacks/small')
  const saved = await apiCall('GET', '/stacks/demo/small', ADMIN)
  assert.equal(saved.status, 200)
  assert.deepEqual(saved.body.stack_operations.map((o) => o.name), ['rotate', 'resize'])
  assert.equal(saved.body.stack_operations[1].options.width, 40)
  // Overwriting shows its dry run first.
  await page.waitForSelector('#editor', { visible: true })
  await page.waitForSelector('#op-1-width')
  await page.$eval('#op-1-width', (n) => { n.value = '30'; n.dispatchEvent(new Event('change')) })
  await page.click('#stack-save')
  await page.waitForSelector('#stack-confirm', { visible: true })
  assert.match(await page.$eval('#stack-confirm-text', (n) => n.textContent), /Saving invalidates \d+ renders?/)
  await page.click('#stack-confirm-go')
  await page.waitForFunction(() => document.querySelector('#stack-done').textContent.startsWith('Saved'))
  assert.equal((await apiCall('GET', '/stacks/demo/small', ADMIN)).body.stack_operations[1].options.width, 30)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('delete a stack after its dry run', async () => {
  assert.equal((await apiCall('PUT', '/stacks/demo/doomed', ADMIN, { operations: [{ name: 'grayscale', options: {} }] })).status, 201)
  const page = await tab()
  await login(page, ADMIN)
  await page.waitForSelector('#grid .thumb')
  await go(page, '#stacks/doomed')
  await page.waitForSelector('#stack-delete', { visible: true })
  assert.match(await page.$eval('#stack-json', (n) => n.textContent), /"grayscale"/)
  await page.click('#stack-delete')
  await page.waitForSelector('#stack-confirm', { visible: true })
  assert.match(await page.$eval('#stack-confirm-text', (n) => n.textContent), /Deleting removes \d+ renders?.*404/)
  assert.equal((await apiCall('GET', '/stacks/demo/doomed', ADMIN)).status, 200)
  await page.click('#stack-confirm-go')
  await page.waitForFunction(() => location.hash === '#stacks')
  assert.equal((await apiCall('GET', '/stacks/demo/doomed', ADMIN)).status, 404)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('create a key with roles, shown once, and revoke it', async () => {
  const page = await tab()
  await login(page, ADMIN)
  await page.waitForSelector('#grid .thumb')
  await go(page, '#members')
  await page.waitForSelector('#member-list li')
  await page.click('#roles input[value=upload]')
  await page.type('#newkey-comment', 'ci uploader')
  await page.click('#newkey-form button[type=submit]')
  await page.waitForSelector('#newkey-shown', { visible: true })
  const key = await page.$eval('#newkey-value', (n) => n.textContent)
  assert.match(key, /^[0-9a-zA-Z]{64}$/)
  const memberships = (await apiCall('GET', '/user/memberships', key)).body.items
  assert.deepEqual(memberships.map((m) => [m.organization, m.roles.sort()]), [['demo', ['read', 'upload']]])
  const revoke = await page.waitForSelector('button[aria-label="Revoke the key ci uploader"]')
  await revoke.click()
  assert.equal(await revoke.evaluate((b) => b.textContent), 'Confirm revoke')
  assert.equal((await apiCall('GET', '/user/memberships', key)).body.items.length, 1)
  await revoke.click()
  await page.waitForFunction(() => !document.querySelector('button[aria-label="Revoke the key ci uploader"]'))
  assert.equal((await apiCall('GET', '/user/memberships', key)).body.items.length, 0)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('run the purge dry run and confirm it', async () => {
  const page = await tab()
  await login(page, ADMIN)
  await thumbsLoaded(page, 1)
  const before = await apiCall('DELETE', '/organizations/demo/cache?dry_run=true', ADMIN)
  assert.ok(before.body.renders > 0)
  await go(page, '#usage')
  await page.waitForSelector('#charts svg')
  // The render cache is shown and marked as not billed.
  const labels = await page.$$eval('#tiles dt', (ns) => ns.map((n) => n.textContent))
  assert.ok(labels.includes('Render cache (not billed)'), labels.join(' | '))
  assert.ok(labels.includes('Source storage (billed)'), labels.join(' | '))
  await shot(page, 'usage')
  await page.click('#purge-check')
  await page.waitForSelector('#purge-report', { visible: true })
  assert.match(await page.$eval('#purge-summary', (n) => n.textContent), /A purge removes \d+ renders?/)
  assert.equal((await apiCall('DELETE', '/organizations/demo/cache?dry_run=true', ADMIN)).body.renders, before.body.renders)
  await page.click('#purge-confirm')
  await page.waitForFunction(() => document.querySelector('#purge-done').textContent.startsWith('Purged'))
  assert.equal((await apiCall('DELETE', '/organizations/demo/cache?dry_run=true', ADMIN)).body.renders, 0)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('a read-only key gets no write controls', async () => {
  const page = await tab()
  await login(page, READER)
  await thumbsLoaded(page, 1)
  const writeControls = () => page.$$eval('button, label.button, input[type=file]', (ns) => ns
    .filter((n) => n.offsetWidth || n.offsetHeight)
    .map((n) => n.textContent.trim())
    .filter((t) => /upload|choose|delete|purge|save|restore|new stack|create|revoke|remove|add/i.test(t)))
  assert.equal(await visible(page, '#upload'), false)
  assert.deepEqual(await writeControls(), [])
  const hash = await page.$eval('#grid .thumb a', (a) => a.getAttribute('href').split('/')[1])
  await go(page, '#image/' + hash)
  await page.waitForFunction(() => document.querySelector('#fields').children.length > 0)
  assert.deepEqual(await writeControls(), [])
  assert.equal(await visible(page, '#subject'), false)
  assert.ok(await page.$$eval('#meta-rows input', (is) => is.every((i) => i.disabled)))
  for (const view of ['#stacks', '#usage', '#members', '#status']) {
    await go(page, view)
    await page.waitForFunction((v) => !document.querySelector('#view-' + v.slice(1)).hidden, {}, view)
    await new Promise((r) => setTimeout(r, 300))
    assert.deepEqual(await writeControls(), [], view)
  }
  await go(page, '#stacks/small')
  await page.waitForSelector('#editor', { visible: true })
  assert.deepEqual(await writeControls(), [])
  assert.ok(await page.$$eval('#ops input, #ops select', (is) => is.length > 0 && is.every((i) => i.disabled)))
  assert.equal(await visible(page, '#purge'), false)
  consoleErrors.push(...page.errors)
  await page.close()
})

test('fit a phone-width layout with no horizontal overflow', async () => {
  const page = await tab({ width: 390, height: 844 })
  await login(page, ADMIN)
  await thumbsLoaded(page, 1)
  const hash = await page.$eval('#grid .thumb a', (a) => a.getAttribute('href').split('/')[1])
  for (const view of ['#gallery', '#image/' + hash, '#stacks/small', '#usage', '#members', '#status']) {
    await go(page, view)
    await new Promise((r) => setTimeout(r, 600))
    const width = await page.evaluate(() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth))
    assert.ok(width <= 390, `${view} is ${width} px wide`)
    // Nothing is wider than the screen even where overflow is hidden.
    const wide = await page.evaluate(() => [...document.querySelectorAll('main *')]
      .filter((n) => n.offsetParent && n.getBoundingClientRect().right > 391)
      .map((n) => n.tagName + '#' + n.id + '.' + n.className).slice(0, 5))
    assert.deepEqual(wide, [], view)
    if (view === '#gallery') await shot(page, 'phone-gallery')
  }
  consoleErrors.push(...page.errors)
  await page.close()
})

test('a key whose memberships were revoked gets no workspace and sends no empty organization', async () => {
  const made = await apiCall('POST', '/organizations/demo/memberships', ROOT, { roles: ['write'], comment: 'revoked soon' })
  assert.equal(made.status, 201)
  const page = await tab()
  await login(page, made.body.api_key)
  await thumbsLoaded(page, 1)
  await go(page, '#usage')
  await page.waitForSelector('#tiles div')
  // Revoked while the page is open: the next move clears the figures.
  assert.equal((await apiCall('DELETE', `/organizations/demo/memberships/${made.body.user_id}`, ROOT)).status, 204)
  await page.click('.tabs a[data-view=gallery]')
  await page.waitForSelector('#stale', { visible: true })
  assert.match(await page.$eval('#stale', (n) => n.textContent), /no longer has access to demo/)
  await page.waitForSelector('#no-org', { visible: true })
  assert.equal(await page.$$eval('#grid .thumb, #tiles div', (ns) => ns.length), 0)
  assert.equal(await visible(page, '#org-picker'), false)
  assert.equal(await visible(page, '.tabs'), false)
  // And a fresh start with that key: the empty state, no request naming an empty organization.
  const fresh = await tab()
  await login(fresh, made.body.api_key)
  await fresh.waitForSelector('#no-org', { visible: true })
  await new Promise((r) => setTimeout(r, 300))
  const bad = [...page.requests, ...fresh.requests].filter((r) => /\/(stats|organizations|sourceimages|stacks)\/(\/|\?|$)/.test(r))
  assert.deepEqual(bad, [])
  assert.match(await fresh.$eval('#no-org', (n) => n.textContent), /darkroom admin key create/)
  await fresh.close()
  await page.close()
})

test('a wrong but well-formed key is told it is not valid, not that it is malformed', async () => {
  const page = await tab()
  await login(page, 'a'.repeat(32) + 'B'.repeat(32))
  await page.waitForSelector('#error', { visible: true })
  const text = await page.$eval('#error', (n) => n.textContent)
  assert.match(text, /not accepted: This API key is not valid here/)
  assert.doesNotMatch(text, /not supplied/)
  assert.equal(await visible(page, '#login'), true)
  await page.close()
})

test('the page answers at /dashboard/ too', async () => {
  const page = await tab()
  const resp = await page.goto(API + '/dashboard/', { waitUntil: 'domcontentloaded' })
  assert.equal(resp.status(), 200)
  await page.waitForSelector('#key', { visible: true })
  consoleErrors.push(...page.errors)
  await page.close()
})

test('no console errors on any page', async () => {
  const page = await tab()
  await login(page, ADMIN)
  await thumbsLoaded(page, 1)
  const hash = await page.$eval('#grid .thumb a', (a) => a.getAttribute('href').split('/')[1])
  for (const view of ['#image/' + hash, '#stacks', '#stacks/small', '#usage', '#members', '#status', '#gallery']) {
    await go(page, view)
    await new Promise((r) => setTimeout(r, 700))
    if (view === '#members' || view === '#status') await shot(page, view.slice(1))
    if (view.startsWith('#image/')) await shot(page, 'image-detail-with-urls')
  }
  const empty = await tab()
  await login(empty, EMPTY)
  await empty.waitForSelector('#gallery-empty', { visible: true })
  await go(empty, '#stacks')
  await empty.waitForSelector('#stacks-empty', { visible: true })
  assert.match(await empty.$eval('#stacks-empty', (n) => n.textContent), /New stack/)
  assert.deepEqual([...consoleErrors, ...page.errors, ...empty.errors], [])
  await empty.close()
  await page.close()
})

test('no serious accessibility violations (axe-core)', async () => {
  const page = await tab({ bypassCsp: true })
  const check = async (where) => {
    await page.addScriptTag({ content: AXE })
    const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }))
    const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    assert.deepEqual(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')})`), [], where)
  }
  await page.goto(DASHBOARD, { waitUntil: 'domcontentloaded' })
  await page.waitForSelector('#key', { visible: true })
  await check('login')
  await page.type('#key', ADMIN)
  await page.click('#key-form button[type=submit]')
  await thumbsLoaded(page, 1)
  await check('gallery')
  const hash = await page.$eval('#grid .thumb a', (a) => a.getAttribute('href').split('/')[1])
  for (const view of ['#image/' + hash, '#stacks/small', '#usage', '#members', '#status']) {
    await go(page, view)
    await new Promise((r) => setTimeout(r, 700))
    await check(view)
  }
  await page.close()
})
