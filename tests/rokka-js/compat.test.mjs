// Drives a running Darkroom appliance through the unmodified rokka JavaScript client (npm
// `rokka`, pinned in package.json), so that every request below is byte for byte what rokka.js
// sends to api.rokka.io, quirks included (spec §10.1, §11).
//
// Environment:
//   DARKROOM_API       base URL of the API listener, e.g. http://127.0.0.1:18480
//   DARKROOM_ROOT_KEY  the appliance's `auth.root_key`
//   DARKROOM_RENDER    base URL of the render listener (default http://127.0.0.1:8081)
//
// The root key creates fresh organizations with random names and a member key; everything
// after that runs with the member key, as a customer's client would.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { deflateSync } from 'node:zlib'
import { Rokka } from 'rokka'

const API = requiredEnv('DARKROOM_API').replace(/\/+$/, '')
const ROOT_KEY = requiredEnv('DARKROOM_ROOT_KEY')
const RENDER = (process.env.DARKROOM_RENDER || 'http://127.0.0.1:8081').replace(/\/+$/, '')

const JPEG = readFileSync(new URL('./fixtures/gradient-64x48.jpg', import.meta.url))
const JPEG_NAME = 'gradient-64x48.jpg'
const MISSING_HASH = 'f'.repeat(40)

function requiredEnv(name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} must be set`)
  return value
}

/** A rokka client pointed at the appliance, configured only through rokka.js's own options. */
function client(apiKey) {
  return new Rokka({
    apiHost: API,
    apiKey,
    renderHost: `${RENDER}/{organization}`,
    // Fewer retries than the default ten, so that a 429/503 fails the run in seconds.
    transport: { retries: 2, requestTimeout: 15000 },
  })
}

// ---------------------------------------------------------------------------------------------
// Fixtures: small PNGs built in memory, each call with different pixels (hence its own
// binary hash), so that tests which delete, lock or re-hash an image do not share it.

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})

function crc32(bytes) {
  let c = 0xffffffff
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

function pngChunk(type, data) {
  const typed = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const length = Buffer.alloc(4)
  length.writeUInt32BE(data.length)
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(typed))
  return Buffer.concat([length, typed, crc])
}

let pngCount = 0

/** An opaque 8-bit RGB PNG of `width`×`height` whose pixels differ from every earlier call. */
function uniquePng(width = 12, height = 8) {
  const n = ++pngCount
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header[8] = 8 // bit depth
  header[9] = 2 // colour type RGB
  const stride = width * 3 + 1
  const raw = Buffer.alloc(stride * height)
  for (let y = 0; y < height; y++) {
    raw[y * stride] = 0 // filter: none
    for (let x = 0; x < width; x++) {
      const p = y * stride + 1 + x * 3
      raw[p] = (x * 20 + n * 37) & 0xff
      raw[p + 1] = (y * 30 + n * 11) & 0xff
      raw[p + 2] = n & 0xff
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ])
}

function sha1(bytes) {
  return createHash('sha1').update(bytes).digest('hex')
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Asserts that a rokka call rejects with `status` and a rokka error body. */
async function assertStatus(promise, status) {
  await assert.rejects(promise, err => {
    assert.equal(err.statusCode, status, `expected ${status}, got ${err.statusCode}: ${err.message}`)
    assert.equal(err.body?.error?.code, status, `error body: ${JSON.stringify(err.body)}`)
    assert.equal(typeof err.body.error.message, 'string')
    return true
  })
}

/** Asserts that a rokka call rejects with a 4xx status; returns that status. */
async function assertClientError(promise) {
  let status
  await assert.rejects(promise, err => {
    status = err.statusCode
    assert.ok(status >= 400 && status < 500, `expected a 4xx, got ${status}: ${err.message}`)
    return true
  })
  return status
}

/** The hash at the end of the `Location` header of a hash-changing call (what rokka clients use). */
function locationHash(res) {
  const location = res.response.headers.get('location')
  assert.ok(location, `no Location header (status ${res.statusCode})`)
  const hash = location.split('/').filter(Boolean).pop()
  assert.match(hash, /^[0-9a-f]{40}$/, `Location: ${location}`)
  return hash
}

/** Uploads one file with `sourceimages.create` and returns the single created item. */
async function upload(rokka, org, name, bytes, metadata = null) {
  const res = await rokka.sourceimages.create(org, name, bytes, metadata)
  assert.equal(res.body.total, 1, JSON.stringify(res.body))
  assert.equal(res.body.items.length, 1)
  return res.body.items[0]
}

// ---------------------------------------------------------------------------------------------
// Shared world: three fresh organizations and a new user whose key is admin on the main and
// list organizations and may write to the copy destination.

let worldPromise

function world() {
  worldPromise ??= (async () => {
    const root = client(ROOT_KEY)
    const suffix = randomBytes(5).toString('hex')
    const org = `compat-${suffix}`
    const other = `compat-${suffix}-copy`
    const listing = `compat-${suffix}-list`
    const created = {}
    for (const name of [org, other, listing]) {
      created[name] = await root.organizations.create(name, 'ops@example.com', `Compat ${name}`)
    }
    const membership = await root.memberships.createWithNewUser(org, ['admin'], 'rokka.js compat')
    const userId = membership.body.user_id
    // The copy destination needs write access; the list organization gets its own admin role.
    const otherMembership = await root.memberships.create(other, userId, ['write'])
    await root.memberships.create(listing, userId, 'admin')
    return {
      org,
      other,
      listing,
      created,
      membership,
      otherMembership,
      userId,
      rokka: client(membership.body.api_key),
    }
  })()
  return worldPromise
}

// ---------------------------------------------------------------------------------------------
// Organizations and keys

test('the root key creates organizations and a member key through rokka.js', async () => {
  const w = await world()
  for (const [name, res] of Object.entries(w.created)) {
    assert.equal(res.body.name, name)
    assert.equal(res.body.display_name, `Compat ${name}`)
    assert.equal(res.body.billing_email, 'ops@example.com')
    assert.match(res.body.id, /^[0-9a-f-]{36}$/)
    assert.equal(typeof res.body.created, 'string')
  }
  const m = w.membership.body
  assert.equal(w.membership.statusCode, 201)
  assert.equal(typeof m.api_key, 'string')
  assert.ok(m.api_key.length >= 32, 'api_key looks too short')
  assert.equal(typeof m.user_id, 'string')
  assert.deepEqual(m.roles, ['admin'])
  assert.equal(m.active, true)
  assert.deepEqual(w.otherMembership.body.roles, ['write'])

  const own = await w.rokka.organizations.get(w.org)
  assert.equal(own.body.name, w.org)
  assert.equal(own.body.id, w.created[w.org].body.id)
  assert.equal(m.organization_id, own.body.id)

  const members = await w.rokka.memberships.list(w.org)
  assert.equal(members.body.total, 1)
  assert.equal(members.body.items[0].user_id, w.userId)
  assert.ok(!('api_key' in members.body.items[0]), 'listed memberships must not reveal keys')
  const member = await w.rokka.memberships.get(w.org, w.userId)
  assert.deepEqual(member.body.roles, ['admin'])
})

test('organizations.create answers 200, as in the recorded rokka exchange', async () => {
  // rokka.js's recorded fixture organizations_create.json: PUT /organizations/{name} → 200.
  const w = await world()
  for (const res of Object.values(w.created)) assert.equal(res.statusCode, 200)
})

test('user.getId and user.listApiKeys describe the member key', async () => {
  const w = await world()
  assert.equal(await w.rokka.user.getId(), w.userId)
  const keys = await w.rokka.user.listApiKeys()
  assert.ok(Array.isArray(keys.body), JSON.stringify(keys.body))
  assert.equal(keys.body.length, 1)
  assert.equal(typeof keys.body[0].id, 'string')
  assert.equal(typeof keys.body[0].created, 'string')
  assert.ok(!('api_key' in keys.body[0]), 'listed keys must not reveal the secret')
})

test('user.getNewToken issues a token that a client in token mode uses instead of the key', async () => {
  const w = await world()
  const key = w.membership.body.api_key
  const issuer = client(key)
  const res = await issuer.user.getNewToken(key, { expires_in: 7200 })
  const { token, payload } = res.body
  assert.equal(typeof token, 'string')
  assert.equal(payload.id, w.userId)
  assert.equal(payload.expt, 7200)
  assert.equal(payload.rn, true)
  assert.deepEqual(payload.ips, ['127.0.0.1'])
  assert.ok(issuer.user.getTokenIsValidFor() === -1 || issuer.user.getTokenIsValidFor() > 7000)

  // A browser-style client: no API key at all, only the token callbacks.
  let stored = token
  const browser = new Rokka({
    apiHost: API,
    apiTokenGetCallback: () => stored,
    apiTokenSetCallback: t => {
      stored = t
    },
    transport: { retries: 2, requestTimeout: 15000 },
  })
  const images = await browser.sourceimages.list(w.org, { limit: 1 })
  assert.equal(images.statusCode, 200)
  assert.ok(browser.user.getTokenIsValidFor() > 7000)
  assert.equal(browser.user.isTokenExpiring(), false)
  const created = await browser.sourceimages.create(w.org, 'from-token.png', uniquePng(5, 5))
  assert.equal(created.body.items[0].name, 'from-token.png')
})

test('a client in token mode renews an expiring token by itself', async () => {
  const w = await world()
  const key = w.membership.body.api_key
  // 1800 s is within rokka.js's default refresh window of 3600 s.
  const first = (await client(key).user.getNewToken(key, { expires_in: 1800 })).body.token
  let stored = first
  let renewals = 0
  const browser = new Rokka({
    apiHost: API,
    apiTokenGetCallback: () => stored,
    apiTokenSetCallback: t => {
      stored = t
      renewals += 1
    },
    transport: { retries: 2, requestTimeout: 15000 },
  })
  const res = await browser.sourceimages.list(w.org, { limit: 1 })
  assert.equal(res.statusCode, 200)
  assert.equal(renewals, 1)
  assert.equal(typeof stored, 'string')
  // The renewed token keeps the lifetime of the one it renewed.
  const payload = JSON.parse(Buffer.from(stored.split('.')[1], 'base64url').toString())
  assert.equal(payload.expt, 1800)
  // A renewal may not ask for more than that.
  const longer = new Rokka({ apiHost: API, apiTokenGetCallback: () => stored })
  await assertStatus(longer.user.getNewToken(undefined, { expires_in: 86400 }), 403)
})

test('a read-only key reads its user id but may not manage keys', async () => {
  const w = await world()
  const root = client(ROOT_KEY)
  const reader = await root.memberships.createWithNewUser(w.listing, ['read'])
  const readOnly = client(reader.body.api_key)
  assert.equal(await readOnly.user.getId(), reader.body.user_id)
  await assertStatus(readOnly.user.listApiKeys(), 403)
})

test('an unknown key is refused with 403 and a rokka error body', async () => {
  const w = await world()
  const stranger = client('x'.repeat(64))
  await assertStatus(stranger.sourceimages.list(w.org), 403)
})

// ---------------------------------------------------------------------------------------------
// Upload and read

test('sourceimages.create stores user metadata that rokka.js encodes twice', async () => {
  const { rokka, org } = await world()
  const meta = { title: 'A gradient', 'int:rank': 3, 'array:tags': ['red', 'green'] }
  const img = await upload(rokka, org, JPEG_NAME, JPEG, { meta_user: meta })

  assert.match(img.hash, /^[0-9a-f]{40}$/)
  assert.ok(img.short_hash.length >= 6 && img.hash.startsWith(img.short_hash), img.short_hash)
  assert.equal(img.binary_hash, sha1(JPEG))
  assert.notEqual(img.hash, img.binary_hash)
  assert.equal(img.organization, org)
  assert.equal(img.name, JPEG_NAME)
  assert.equal(img.format, 'jpg')
  assert.equal(img.mimetype, 'image/jpeg')
  assert.equal(img.size, JPEG.length)
  assert.equal(img.width, 64)
  assert.equal(img.height, 48)
  assert.equal(img.link, `/sourceimages/${org}/${img.hash}`)
  assert.equal(img.protected, false)
  assert.equal(img.locked, false)
  assert.equal(typeof img.created, 'string')
  assert.deepEqual(img.user_metadata, meta)

  // Identical bytes are the same image: the hash comes back and the metadata is kept.
  const again = await upload(rokka, org, JPEG_NAME, JPEG)
  assert.equal(again.hash, img.hash)
  assert.deepEqual(again.user_metadata, meta)
})

test('sourceimages.create with a subject area makes a distinct hash for the same bytes', async () => {
  const { rokka, org } = await world()
  const bytes = uniquePng()
  const plain = await upload(rokka, org, 'plain.png', bytes)
  const area = { x: 2, y: 1, width: 4, height: 3 }
  const withArea = await upload(rokka, org, 'area.png', bytes, { meta_dynamic: { subject_area: area } })

  assert.equal(plain.format, 'png')
  assert.equal(plain.mimetype, 'image/png')
  assert.equal(plain.width, 12)
  assert.equal(plain.height, 8)
  assert.equal(withArea.binary_hash, plain.binary_hash)
  assert.notEqual(withArea.hash, plain.hash)
  assert.deepEqual(pick(withArea.dynamic_metadata?.subject_area, area), area)
})

function pick(obj, like) {
  if (!obj) return obj
  return Object.fromEntries(Object.keys(like).map(k => [k, obj[k]]))
}

test('sourceimages.create with options protected makes a protected image', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'protected.png', uniquePng(), { options: { protected: true } })
  assert.equal(img.protected, true)
})

test('sourceimages.get returns one unwrapped image, by full or short hash', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'get.png', uniquePng())
  const res = await rokka.sourceimages.get(org, img.hash)
  assert.equal(res.statusCode, 200)
  assert.equal(res.response.headers.get('content-type'), 'application/json')
  assert.equal(res.body.hash, img.hash)
  assert.equal(res.body.binary_hash, img.binary_hash)
  assert.equal(res.body.name, 'get.png')
  assert.equal(res.body.link, `/sourceimages/${org}/${img.hash}`)

  const short = await rokka.sourceimages.get(org, img.short_hash)
  assert.equal(short.body.hash, img.hash)

  await assertStatus(rokka.sourceimages.get(org, MISSING_HASH), 404)
})

test('sourceimages.list pages with limit and offset and sorts', async () => {
  const { rokka, listing } = await world()
  const ranks = { 'c.png': 1, 'a.png': 3, 'b.png': 2 }
  for (const [name, rank] of Object.entries(ranks)) {
    await upload(rokka, listing, name, uniquePng(), { meta_user: { 'int:rank': rank } })
  }
  const names = res => res.body.items.map(i => i.name)

  const all = await rokka.sourceimages.list(listing)
  assert.equal(all.body.total, 3)
  // The default order is newest first.
  assert.deepEqual(names(all), ['b.png', 'a.png', 'c.png'])

  const first = await rokka.sourceimages.list(listing, { limit: 2, offset: 0, sort: 'name asc' })
  assert.equal(first.body.total, 3)
  assert.deepEqual(names(first), ['a.png', 'b.png'])
  assert.ok(first.body.links?.next?.href, `no next link: ${JSON.stringify(first.body.links)}`)

  const second = await rokka.sourceimages.list(listing, { limit: 2, offset: 2, sort: 'name asc' })
  assert.equal(second.body.total, 3)
  assert.deepEqual(names(second), ['c.png'])
  assert.ok(second.body.links?.prev?.href, `no prev link: ${JSON.stringify(second.body.links)}`)

  // rokka.js joins a sort array with commas.
  const byTwo = await rokka.sourceimages.list(listing, { sort: ['format asc', 'name desc'] })
  assert.deepEqual(names(byTwo), ['c.png', 'b.png', 'a.png'])

  // A user-metadata sort and search; query-string encodes the key as `user%3Aint%3Arank`.
  const byRank = await rokka.sourceimages.list(listing, { sort: 'user:int:rank desc' })
  assert.deepEqual(names(byRank), ['a.png', 'b.png', 'c.png'])
  const found = await rokka.sourceimages.list(listing, { search: { 'user:int:rank': '2' } })
  assert.equal(found.body.total, 1)
  assert.deepEqual(names(found), ['b.png'])

  const countOnly = await rokka.sourceimages.list(listing, { limit: 0 })
  assert.equal(countOnly.body.total, 3)
  assert.deepEqual(countOnly.body.items ?? [], [])
})

test('sourceimages.getWithBinaryHash finds every hash of a locally computed SHA-1', async () => {
  const { rokka, org } = await world()
  const bytes = uniquePng()
  const plain = await upload(rokka, org, 'binary.png', bytes)
  const variant = await upload(rokka, org, 'binary.png', bytes, {
    meta_dynamic: { version: { text: 'v2' } },
  })
  const res = await rokka.sourceimages.getWithBinaryHash(org, sha1(bytes))
  assert.equal(res.body.total, 2)
  assert.deepEqual(res.body.items.map(i => i.hash).sort(), [plain.hash, variant.hash].sort())
  for (const item of res.body.items) assert.equal(item.binary_hash, sha1(bytes))

  const none = await rokka.sourceimages.getWithBinaryHash(org, sha1(Buffer.from('nothing')))
  assert.equal(none.body.total, 0)
  assert.deepEqual(none.body.items, [])
})

// ---------------------------------------------------------------------------------------------
// User metadata and name

test('sourceimages.meta add, set, replace and delete user metadata without changing the hash', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'meta.png', uniquePng())
  const meta = rokka.sourceimages.meta
  const current = async () => (await meta.get(org, img.hash)).body

  const added = await meta.add(org, img.hash, { colour: 'red', 'int:count': 1 })
  assert.equal(added.statusCode, 204)
  assert.deepEqual(await current(), { colour: 'red', 'int:count': 1 })

  // PATCH merges; a null value removes that field.
  await meta.add(org, img.hash, { 'int:count': 2, colour: null })
  assert.deepEqual(await current(), { 'int:count': 2 })

  // rokka.js sends a string value as is, so a string has to be JSON-encoded by the caller
  // (see the next test for a bare string).
  const set = await meta.set(org, img.hash, 'somefield', JSON.stringify('somevalue'))
  assert.equal(set.statusCode, 204)
  assert.deepEqual(await current(), { 'int:count': 2, somefield: 'somevalue' })
  await meta.set(org, img.hash, 'int:size', 7)
  assert.deepEqual(await current(), { 'int:count': 2, somefield: 'somevalue', 'int:size': 7 })

  const replaced = await meta.replace(org, img.hash, { only: 'this' })
  assert.equal(replaced.statusCode, 204)
  assert.deepEqual(await current(), { only: 'this' })

  await meta.add(org, img.hash, { second: 'field' })
  const deletedField = await meta.delete(org, img.hash, 'only')
  assert.equal(deletedField.statusCode, 204)
  assert.deepEqual(await current(), { second: 'field' })

  const deletedAll = await meta.delete(org, img.hash)
  assert.equal(deletedAll.statusCode, 204)
  assert.deepEqual(await current(), {})

  assert.equal((await rokka.sourceimages.get(org, img.hash)).body.hash, img.hash)
})

test('sourceimages.meta.set with a bare string, as in the rokka.js documentation', async t => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'meta-bare.png', uniquePng())
  // rokka.js documents `meta.set(org, hash, 'somefield', 'somevalue')`, which puts the body
  // `somevalue` on the wire: not JSON, while the API documents a JSON-encoded value
  // ('"somevalue"'). A server that answers 400 follows the API documentation; one that stores
  // the raw text as a string serves the client's example too.
  try {
    await rokka.sourceimages.meta.set(org, img.hash, 'somefield', 'somevalue')
  } catch (err) {
    if (err.statusCode === 400) {
      t.skip('rokka.js sends a bare string that is not JSON; the appliance requires JSON (400)')
      return
    }
    throw err
  }
  assert.deepEqual((await rokka.sourceimages.meta.get(org, img.hash)).body, { somefield: 'somevalue' })
})

test('sourceimages.putName renames without changing the hash', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'before.png', uniquePng())
  const res = await rokka.sourceimages.putName(org, img.hash, 'after name.png')
  assert.equal(res.statusCode, 204)
  const got = await rokka.sourceimages.get(org, img.hash)
  assert.equal(got.body.name, 'after name.png')
  assert.equal(got.body.hash, img.hash)
})

// ---------------------------------------------------------------------------------------------
// Hash-changing calls

test('setSubjectArea and removeSubjectArea with deletePrevious move the image to a new hash', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'subject.png', uniquePng())
  const area = { x: 1, y: 2, width: 5, height: 4 }

  const set = await rokka.sourceimages.setSubjectArea(org, img.hash, area, { deletePrevious: true })
  assert.equal(set.statusCode, 201)
  const withArea = locationHash(set)
  assert.notEqual(withArea, img.hash)
  assert.equal(set.body.hash, withArea)
  assert.deepEqual(pick(set.body.dynamic_metadata?.subject_area, area), area)
  await assertStatus(rokka.sourceimages.get(org, img.hash), 404)
  const got = await rokka.sourceimages.get(org, withArea)
  assert.deepEqual(pick(got.body.dynamic_metadata?.subject_area, area), area)

  const removed = await rokka.sourceimages.removeSubjectArea(org, withArea, { deletePrevious: true })
  assert.ok([200, 201].includes(removed.statusCode), `status ${removed.statusCode}`)
  const back = locationHash(removed)
  // Same bytes without dynamic metadata: the original hash again.
  assert.equal(back, img.hash)
  await assertStatus(rokka.sourceimages.get(org, withArea), 404)
  const restored = await rokka.sourceimages.get(org, back)
  assert.equal(restored.body.dynamic_metadata?.subject_area, undefined)
})

test('addDynamicMetaData and deleteDynamicMetaData (deletePrevious in a DELETE body)', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'dynamic.png', uniquePng())

  const added = await rokka.sourceimages.addDynamicMetaData(
    org,
    img.hash,
    'crop_area',
    { x: 0, y: 0, width: 6, height: 4 },
    { deletePrevious: false },
  )
  assert.equal(added.statusCode, 201)
  const cropped = locationHash(added)
  assert.notEqual(cropped, img.hash)
  assert.equal(added.body.dynamic_metadata?.crop_area?.width, 6)
  // deletePrevious=false keeps the old hash.
  assert.equal((await rokka.sourceimages.get(org, img.hash)).body.hash, img.hash)

  // rokka.js sends {"deletePrevious":"true"} as the JSON body of this DELETE, not as a query.
  const deleted = await rokka.sourceimages.deleteDynamicMetaData(org, cropped, 'crop_area', {
    deletePrevious: true,
  })
  assert.ok([200, 201].includes(deleted.statusCode), `status ${deleted.statusCode}`)
  assert.equal(locationHash(deleted), img.hash)
  await assertStatus(rokka.sourceimages.get(org, cropped), 404)
})

test('setProtected changes the hash and back; the protected hash matches a protected upload', async () => {
  const { rokka, org } = await world()
  const bytes = uniquePng()
  const img = await upload(rokka, org, 'protect.png', bytes)

  const on = await rokka.sourceimages.setProtected(org, img.hash, true, { deletePrevious: true })
  assert.equal(on.body.protected, true)
  const protectedHash = locationHash(on)
  assert.notEqual(protectedHash, img.hash)
  const got = await rokka.sourceimages.get(org, protectedHash)
  assert.equal(got.body.protected, true)
  await assertStatus(rokka.sourceimages.get(org, img.hash), 404)

  const off = await rokka.sourceimages.setProtected(org, protectedHash, false, { deletePrevious: true })
  assert.equal(locationHash(off), img.hash)
  assert.equal((await rokka.sourceimages.get(org, img.hash)).body.protected, false)
  await assertStatus(rokka.sourceimages.get(org, protectedHash), 404)

  const uploadedProtected = await upload(rokka, org, 'protect.png', bytes, { options: { protected: true } })
  assert.equal(uploadedProtected.hash, protectedHash)
})

test('setLocked blocks delete and user-metadata changes until unlocked', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'lock.png', uniquePng())

  const locked = await rokka.sourceimages.setLocked(org, img.hash, true)
  assert.equal(locked.body.locked, true)
  assert.equal(locked.body.hash, img.hash)
  await assertClientError(rokka.sourceimages.delete(org, img.hash))
  await assertClientError(rokka.sourceimages.meta.add(org, img.hash, { a: 'b' }))

  const unlocked = await rokka.sourceimages.setLocked(org, img.hash, false)
  assert.equal(unlocked.body.locked, false)
  const del = await rokka.sourceimages.delete(org, img.hash)
  assert.equal(del.statusCode, 204)
})

// ---------------------------------------------------------------------------------------------
// Download, delete, restore, copy

test('sourceimages.download and downloadAsBuffer return the uploaded bytes', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, JPEG_NAME, JPEG)

  const dl = await rokka.sourceimages.download(org, img.hash)
  assert.equal(dl.statusCode, 200)
  assert.equal(dl.response.headers.get('content-type'), 'image/jpeg')
  assert.match(dl.response.headers.get('content-disposition') ?? '', new RegExp(`filename="${JPEG_NAME}"$`))
  // `download` asks for a text fallback, so rokka.js hands back the bytes decoded as UTF-8;
  // compare through the same decoding.
  assert.equal(typeof dl.body, 'string')
  assert.equal(dl.body, JPEG.toString('utf8'))

  const buf = await rokka.sourceimages.downloadAsBuffer(org, img.hash)
  assert.ok(Buffer.isBuffer(buf.body))
  assert.ok(buf.body.equals(JPEG), `got ${buf.body.length} bytes, uploaded ${JPEG.length}`)
})

/** The entries of a ZIP archive, read through its central directory: [{ name, method, bytes }]. */
function unzip(buf) {
  let end = buf.length - 22
  while (end >= 0 && buf.readUInt32LE(end) !== 0x06054b50) end--
  assert.ok(end >= 0, 'no end of central directory record')
  const count = buf.readUInt16LE(end + 10)
  let at = buf.readUInt32LE(end + 16)
  const entries = []
  for (let i = 0; i < count; i++) {
    assert.equal(buf.readUInt32LE(at), 0x02014b50, `central header ${i}`)
    const method = buf.readUInt16LE(at + 10)
    const size = buf.readUInt32LE(at + 20)
    const nameLength = buf.readUInt16LE(at + 28)
    const skip = nameLength + buf.readUInt16LE(at + 30) + buf.readUInt16LE(at + 32)
    const local = buf.readUInt32LE(at + 42)
    const name = buf.subarray(at + 46, at + 46 + nameLength).toString('utf8')
    assert.equal(buf.readUInt32LE(local), 0x04034b50, `local header of ${name}`)
    const data = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28)
    entries.push({ name, method, bytes: buf.subarray(data, data + size) })
    at += 46 + skip
  }
  return entries
}

test('sourceimages.downloadList streams a ZIP of the originals the list selects', async () => {
  const { rokka, org } = await world()
  const tag = randomBytes(4).toString('hex')
  const a = uniquePng()
  const b = uniquePng()
  await upload(rokka, org, 'zip-a.png', a, { meta_user: { zip: tag } })
  await upload(rokka, org, 'zip-b.png', b, { meta_user: { zip: tag } })
  await upload(rokka, org, 'zip-other.png', uniquePng())

  const res = await rokka.sourceimages.downloadList(org, { search: { 'user:str:zip': tag }, sort: 'name asc' })
  assert.equal(res.statusCode, 200)
  assert.equal(res.response.headers.get('content-type'), 'application/zip')
  assert.match(res.response.headers.get('content-disposition') ?? '', new RegExp(`filename="${org}.zip"$`))
  // Not JSON, so rokka.js hands back the body as a stream.
  const chunks = []
  for await (const chunk of res.body) chunks.push(Buffer.from(chunk))
  const entries = unzip(Buffer.concat(chunks))

  assert.deepEqual(entries.map(e => e.name), ['zip-a.png', 'zip-b.png'])
  assert.deepEqual(entries.map(e => e.method), [0, 0], 'stored, not deflated')
  assert.ok(entries[0].bytes.equals(a), 'zip-a.png is the uploaded bytes')
  assert.ok(entries[1].bytes.equals(b), 'zip-b.png is the uploaded bytes')

  await assertStatus(rokka.sourceimages.downloadList(org, { limit: 5000 }), 400)
})

test('sourceimages.delete soft-deletes and restore brings the image back', async () => {
  const { rokka, org } = await world()
  const img = await upload(rokka, org, 'restore.png', uniquePng())

  const del = await rokka.sourceimages.delete(org, img.hash)
  assert.equal(del.statusCode, 204)
  assert.equal(del.body, '')
  await assertStatus(rokka.sourceimages.get(org, img.hash), 404)
  const gone = await rokka.sourceimages.get(org, img.hash, { deleted: true })
  assert.equal(gone.body.deleted, true)
  await assertStatus(rokka.sourceimages.delete(org, MISSING_HASH), 404)

  const restored = await rokka.sourceimages.restore(org, img.hash)
  assert.equal(restored.statusCode, 200)
  assert.equal(restored.body.hash, img.hash)
  const back = await rokka.sourceimages.get(org, img.hash)
  assert.ok(!back.body.deleted)
})

test('sourceimages.copy copies to another organization keeping hash and metadata', async () => {
  const { rokka, org, other } = await world()
  const img = await upload(rokka, org, 'copy.png', uniquePng(), { meta_user: { origin: 'first' } })

  const copied = await rokka.sourceimages.copy(org, img.hash, other)
  assert.equal(copied.statusCode, 201)
  const there = await rokka.sourceimages.get(other, img.hash)
  assert.equal(there.body.hash, img.hash)
  assert.equal(there.body.binary_hash, img.binary_hash)
  assert.equal(there.body.organization, other)
  assert.deepEqual(there.body.user_metadata, { origin: 'first' })

  const overwritten = await rokka.sourceimages.copy(org, img.hash, other, true)
  assert.equal(overwritten.statusCode, 204)
  await assertStatus(rokka.sourceimages.copy(org, img.hash, other, false), 412)
  await assertStatus(rokka.sourceimages.copy(org, MISSING_HASH, other), 404)
})

test('sourceimages.copyAll reports created, existing and missing hashes', async () => {
  const { rokka, org, other } = await world()
  const first = await upload(rokka, org, 'copy-all-1.png', uniquePng())
  const second = await upload(rokka, org, 'copy-all-2.png', uniquePng())
  await rokka.sourceimages.copy(org, first.hash, other)

  const res = await rokka.sourceimages.copyAll(org, [first.hash, second.hash, MISSING_HASH], other, false)
  assert.deepEqual(res.body, {
    created: [second.hash],
    existing: [first.hash],
    notfound: [MISSING_HASH],
  })
  assert.equal((await rokka.sourceimages.get(other, second.hash)).body.hash, second.hash)
})

test('sourceimages.deleteWithBinaryHash deletes every hash of the binary', async () => {
  const { rokka, org } = await world()
  const bytes = uniquePng()
  const plain = await upload(rokka, org, 'bin-delete.png', bytes)
  const variant = await upload(rokka, org, 'bin-delete.png', bytes, {
    meta_dynamic: { version: { text: 'other' } },
  })

  const res = await rokka.sourceimages.deleteWithBinaryHash(org, sha1(bytes))
  assert.equal(res.statusCode, 204)
  await assertStatus(rokka.sourceimages.get(org, plain.hash), 404)
  await assertStatus(rokka.sourceimages.get(org, variant.hash), 404)
  assert.equal((await rokka.sourceimages.getWithBinaryHash(org, sha1(bytes))).body.total, 0)
})

// ---------------------------------------------------------------------------------------------
// Stacks

/** The fields every stack response carries, as in the recorded rokka exchange. */
function assertStackBody(body, org, name) {
  assert.equal(body.name, name)
  assert.equal(body.organization, org)
  assert.equal(typeof body.created, 'string')
  assert.equal(body.link, `/stacks/${org}/${name}`)
  assert.ok(Array.isArray(body.stack_operations), JSON.stringify(body))
  for (const op of body.stack_operations) assert.equal(typeof op.options, 'object', JSON.stringify(op))
  assert.ok(Array.isArray(body.stack_expressions), JSON.stringify(body))
}

test('stacks.create with a config object, overwrite and 409 without it', async () => {
  const { rokka, org } = await world()
  const name = 'config-stack'
  const operations = [
    { name: 'resize', options: { width: 200, height: 150 } },
    rokka.operations.rotate(45),
  ]
  const created = await rokka.stacks.create(org, name, {
    operations,
    options: { 'jpg.quality': 77 },
    variables: { w: 300 },
  })
  assert.equal(created.statusCode, 201)
  assertStackBody(created.body, org, name)
  assert.deepEqual(created.body.stack_operations, [
    { name: 'resize', options: { width: 200, height: 150 } },
    { name: 'rotate', options: { angle: 45 } },
  ])
  assert.deepEqual(created.body.stack_options, { 'jpg.quality': 77 })
  assert.deepEqual(created.body.stack_variables, { w: 300 })
  assert.deepEqual(created.body.stack_expressions, [])

  // Without overwrite (no query, or rokka.js's `overwrite=false`) an existing stack is a conflict.
  await assertStatus(rokka.stacks.create(org, name, { operations }), 409)
  await assertStatus(rokka.stacks.create(org, name, { operations }, { overwrite: false }), 409)

  const replaced = await rokka.stacks.create(
    org,
    name,
    { operations: [{ name: 'resize', options: { width: 100 } }] },
    { overwrite: true },
  )
  assert.equal(replaced.statusCode, 200)
  assertStackBody(replaced.body, org, name)
  assert.deepEqual(replaced.body.stack_operations, [{ name: 'resize', options: { width: 100 } }])

  const got = await rokka.stacks.get(org, name)
  assert.equal(got.statusCode, 200)
  assert.equal(got.response.headers.get('content-type'), 'application/json')
  assertStackBody(got.body, org, name)
  assert.deepEqual(got.body.stack_operations, [{ name: 'resize', options: { width: 100 } }])
  assert.deepEqual(got.body.stack_options ?? {}, {})
  assert.deepEqual(got.body.stack_variables ?? {}, {})
})

test('stacks.create with the legacy (org, name, operations, options, overwrite) signature', async () => {
  const { rokka, org } = await world()
  const name = 'legacy-stack'
  const operations = [rokka.operations.resize(100, 100), { name: 'grayscale' }]
  const created = await rokka.stacks.create(org, name, operations, { 'jpg.quality': 60 })
  assert.equal(created.statusCode, 201)
  assertStackBody(created.body, org, name)
  assert.deepEqual(created.body.stack_operations, [
    { name: 'resize', options: { width: 100, height: 100 } },
    { name: 'grayscale', options: {} },
  ])
  assert.deepEqual(created.body.stack_options, { 'jpg.quality': 60 })

  // overwrite=false sends no query at all.
  await assertStatus(rokka.stacks.create(org, name, operations, { 'jpg.quality': 60 }, false), 409)
  await assertStatus(rokka.stacks.create(org, name, operations, {}), 409)

  const replaced = await rokka.stacks.create(org, name, [{ name: 'rotate', options: { angle: 90 } }], {}, true)
  assert.equal(replaced.statusCode, 200)
  assert.deepEqual(replaced.body.stack_operations, [{ name: 'rotate', options: { angle: 90 } }])
  assert.deepEqual(replaced.body.stack_options, {})
  assert.deepEqual((await rokka.stacks.get(org, name)).body.stack_operations, replaced.body.stack_operations)
})

test('stacks.list pages with limit and offset; stacks.delete removes a stack', async () => {
  // The list organization holds no other stacks.
  const { rokka, listing } = await world()
  const names = ['list-a', 'list-b', 'list-c']
  for (const name of names) {
    await rokka.stacks.create(listing, name, { operations: [{ name: 'resize', options: { width: 10 } }] })
  }
  const listed = res => res.body.items.map(s => s.name)

  const all = await rokka.stacks.list(listing)
  assert.equal(all.statusCode, 200)
  assert.deepEqual(listed(all).sort(), names)
  for (const item of all.body.items) assertStackBody(item, listing, item.name)

  const first = await rokka.stacks.list(listing, 2, 0)
  assert.equal(first.body.items.length, 2, JSON.stringify(first.body))
  const rest = await rokka.stacks.list(listing, 2, 2)
  assert.equal(rest.body.items.length, 1, JSON.stringify(rest.body))
  assert.deepEqual([...listed(first), ...listed(rest)].sort(), names)
  assert.deepEqual((await rokka.stacks.list(listing, 1)).body.items.length, 1)

  const got = await rokka.stacks.get(listing, 'list-b')
  assertStackBody(got.body, listing, 'list-b')
  assert.deepEqual(got.body.stack_operations, [{ name: 'resize', options: { width: 10 } }])

  const deleted = await rokka.stacks.delete(listing, 'list-b')
  assert.equal(deleted.statusCode, 204)
  await assertStatus(rokka.stacks.get(listing, 'list-b'), 404)
  await assertStatus(rokka.stacks.delete(listing, 'list-b'), 404)
  assert.deepEqual(listed(await rokka.stacks.list(listing)).sort(), ['list-a', 'list-c'])
})

test('stacks.create refuses an unknown operation with a 400 that names it', async () => {
  const { rokka, org } = await world()
  const bad = [{ name: 'resize', options: { width: 10 } }, { name: 'explode', options: { force: 3 } }]
  await assert.rejects(rokka.stacks.create(org, 'bad-stack', { operations: bad }), err => {
    assert.equal(err.statusCode, 400, `expected 400, got ${err.statusCode}: ${err.message}`)
    assert.equal(err.body?.error?.code, 400, JSON.stringify(err.body))
    assert.match(err.body.error.message, /explode/)
    return true
  })
  await assertStatus(rokka.stacks.create(org, 'bad-legacy', bad), 400)
  await assertStatus(rokka.stacks.get(org, 'bad-stack'), 404)
})

test('operations.list and stackoptions.get answer without authentication', async () => {
  const anonymous = client(undefined)
  const ops = await anonymous.operations.list()
  assert.equal(ops.statusCode, 200)
  assert.equal(typeof ops.body.resize, 'object', Object.keys(ops.body).join(', '))
  assert.equal(typeof ops.body.resize.properties?.width, 'object', JSON.stringify(ops.body.resize))
  assert.equal(typeof ops.body.rotate?.properties?.angle, 'object')

  const options = await anonymous.stackoptions.get()
  assert.equal(options.statusCode, 200)
  const quality = options.body.properties?.['jpg.quality']
  assert.equal(typeof quality, 'object', JSON.stringify(options.body).slice(0, 300))
  assert.equal(typeof quality.default, 'number')
  assert.equal(typeof options.body.properties.dpr, 'object')
})

// ---------------------------------------------------------------------------------------------
// Render URLs, built by the client's own `render.getUrl` and fetched like a browser would.

const IMMUTABLE = 'public, max-age=31536000, immutable'
const TYPES = { png: 'image/png', jpg: 'image/jpeg' }

/** Width and height from a PNG (IHDR) or JPEG (first SOFn marker) header. */
function dimensions(bytes) {
  if (bytes.length >= 24 && bytes.readUInt32BE(0) === 0x89504e47) {
    return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) }
  }
  if (bytes[0] === 0xff && bytes[1] === 0xd8) {
    let i = 2
    while (i + 9 < bytes.length) {
      if (bytes[i] !== 0xff) break
      const marker = bytes[i + 1]
      if (marker === 0xff) {
        i++
        continue
      }
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return { width: bytes.readUInt16BE(i + 7), height: bytes.readUInt16BE(i + 5) }
      }
      if ((marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) i += 2
      else i += 2 + bytes.readUInt16BE(i + 2)
    }
  }
  throw new Error(`not a PNG or JPEG with a readable header (${bytes.length} bytes)`)
}

async function get(url, headers = {}) {
  const res = await fetch(url, { headers })
  return { res, body: Buffer.from(await res.arrayBuffer()) }
}

/** Fetches a render URL and checks status, headers and image size; returns bytes and ETag. */
async function render(url, format, width, height) {
  const { res, body } = await get(url)
  assert.equal(res.status, 200, `GET ${url} → ${res.status}: ${body.toString('utf8', 0, 300)}`)
  assert.equal(res.headers.get('content-type'), TYPES[format], url)
  assert.equal(res.headers.get('cache-control'), IMMUTABLE, url)
  const etag = res.headers.get('etag')
  assert.ok(etag, `no ETag on ${url}`)
  assert.deepEqual(dimensions(body), { width, height }, url)
  return { body, etag }
}

async function assertRenderStatus(url, status) {
  const { res, body } = await get(url)
  assert.equal(res.status, status, `GET ${url} → ${res.status}: ${body.toString('utf8', 0, 300)}`)
  return res
}

let renderWorldPromise

/** The 64×48 JPEG in the main organization and a stack `thumb` that resizes to width 32. */
function renderWorld() {
  renderWorldPromise ??= (async () => {
    const w = await world()
    const img = await upload(w.rokka, w.org, JPEG_NAME, JPEG)
    await w.rokka.stacks.create(w.org, 'thumb', {
      operations: [{ name: 'resize', options: { width: 32 } }],
    })
    return { ...w, img }
  })()
  return renderWorldPromise
}

test('render.getUrl with a named stack: headers, size, stable bytes and 304', async () => {
  const { rokka, org, img } = await renderWorld()
  const url = rokka.render.getUrl(org, img.hash, 'png', 'thumb')
  assert.equal(url, `${RENDER}/${org}/thumb/${img.hash}.png`)
  const first = await render(url, 'png', 32, 24)
  const second = await render(url, 'png', 32, 24)
  assert.ok(second.body.equals(first.body), 'a second fetch returned different bytes')
  assert.equal(second.etag, first.etag)

  const { res, body } = await get(url, { 'If-None-Match': first.etag })
  assert.equal(res.status, 304)
  assert.equal(body.length, 0)
  assert.equal(res.headers.get('etag'), first.etag)

  const jpg = await render(rokka.render.getUrl(org, img.hash, 'jpg', 'thumb'), 'jpg', 32, 24)
  assert.notEqual(jpg.etag, first.etag)

  await assertRenderStatus(rokka.render.getUrl(org, img.hash, 'png', 'no-such-stack'), 404)
  await assertRenderStatus(rokka.render.getUrl(org, MISSING_HASH, 'png', 'thumb'), 404)
})

test('render.getUrl with a dynamic stack of operation objects', async () => {
  const { rokka, org, img } = await renderWorld()
  const ops = [
    { name: 'resize', options: { width: 20 } },
    { name: 'rotate', options: { angle: 90 } },
  ]
  const url = rokka.render.getUrl(org, img.hash, 'png', ops)
  assert.equal(url, `${RENDER}/${org}/dynamic/resize-width-20--rotate-angle-90/${img.hash}.png`)
  await render(url, 'png', 15, 20)

  // rokka.operations.resize(24) leaves height undefined, which the URL spells `__undefined__`.
  const helper = rokka.render.getUrl(org, img.hash, 'jpg', [rokka.operations.resize(24)])
  assert.match(helper, /\/dynamic\/resize-width-24-height-__undefined__\//)
  await render(helper, 'jpg', 24, 18)

  // No stack at all is `dynamic/noop`: the image converted, at its own size.
  const noop = rokka.render.getUrl(org, img.hash, 'png', null)
  assert.equal(noop, `${RENDER}/${org}/dynamic/noop/${img.hash}.png`)
  await render(noop, 'png', 64, 48)
})

test('render.getUrl with format blur answers the BlurHash of the render as cacheable text', async () => {
  const { rokka, org, img } = await renderWorld()
  const url = rokka.render.getUrl(org, img.hash, 'blur', 'thumb')
  assert.equal(url, `${RENDER}/${org}/thumb/${img.hash}.blur`)

  const first = await get(url)
  assert.equal(first.res.status, 200, `GET ${url} → ${first.res.status}: ${first.body.toString('utf8', 0, 300)}`)
  assert.equal(first.res.headers.get('content-type'), 'text/plain; charset=utf-8')
  assert.equal(first.res.headers.get('cache-control'), IMMUTABLE)
  assert.equal(first.res.headers.get('vary'), null)
  const etag = first.res.headers.get('etag')
  assert.ok(etag, `no ETag on ${url}`)
  // 4×3 components: the size flag 'L', the maximum, 4 characters of DC, 2 for each AC component,
  // all from BlurHash's base-83 alphabet.
  const blurhash = first.body.toString('utf8')
  assert.match(blurhash, /^L[0-9A-Za-z#$%*+,\-.:;=?@[\]^_{|}~]{27}$/)

  const second = await get(url)
  assert.equal(second.body.toString('utf8'), blurhash)
  assert.equal(second.res.headers.get('etag'), etag)
  const { res, body } = await get(url, { 'If-None-Match': etag })
  assert.equal(res.status, 304)
  assert.equal(body.length, 0)

  // The same stack as an image is another render, with another ETag.
  const png = await render(rokka.render.getUrl(org, img.hash, 'png', 'thumb'), 'png', 32, 24)
  assert.notEqual(png.etag, etag)

  // A dynamic stack and an unknown image work as for images.
  const dynamic = rokka.render.getUrl(org, img.hash, 'blur', [{ name: 'resize', options: { width: 20 } }])
  assert.equal(dynamic, `${RENDER}/${org}/dynamic/resize-width-20/${img.hash}.blur`)
  const small = await get(dynamic)
  assert.equal(small.res.status, 200)
  assert.match(small.body.toString('utf8'), /^L.{27}$/)
  await assertRenderStatus(rokka.render.getUrl(org, MISSING_HASH, 'blur', 'thumb'), 404)
})

// ---------------------------------------------------------------------------------------------
// Animated sources: an animated GIF uploaded through rokka.js renders to animated GIF and WebP.

/** An animated GIF of `colours.length` solid frames (RGB triples), with delays in 1/100 s
 *  and a NETSCAPE loop count. The image data is "uncompressed" LZW: a clear code after every
 *  two pixels keeps the codes at 3 bits. */
function animatedGif(width, height, colours, delays, loops) {
  const bytes = [...Buffer.from('GIF89a')]
  const u16 = v => [v & 0xff, v >> 8]
  bytes.push(...u16(width), ...u16(height), 0x80 | 0x01, 0, 0) // 4-colour global table
  for (let i = 0; i < 4; i++) bytes.push(...(colours[i] ?? [0, 0, 0]))
  bytes.push(0x21, 0xff, 11, ...Buffer.from('NETSCAPE2.0'), 3, 1, ...u16(loops), 0)
  colours.forEach((_, index) => {
    bytes.push(0x21, 0xf9, 4, 0x04, ...u16(delays[index]), 0, 0) // keep, delay
    bytes.push(0x2c, ...u16(0), ...u16(0), ...u16(width), ...u16(height), 0)
    const codes = []
    for (let p = 0; p < width * height; p++) {
      if (p % 2 === 0) codes.push(4) // clear
      codes.push(index)
    }
    codes.push(5) // end of information
    const data = []
    let acc = 0
    let bits = 0
    for (const code of codes) {
      acc |= code << bits
      bits += 3
      while (bits >= 8) {
        data.push(acc & 0xff)
        acc >>= 8
        bits -= 8
      }
    }
    if (bits > 0) data.push(acc & 0xff)
    bytes.push(2) // LZW minimum code size
    for (let i = 0; i < data.length; i += 255) {
      const block = data.slice(i, i + 255)
      bytes.push(block.length, ...block)
    }
    bytes.push(0)
  })
  bytes.push(0x3b)
  return Buffer.from(bytes)
}

/** Canvas size, frame count, delays (1/100 s) and loop count of a GIF, from its blocks. */
function gifInfo(gif) {
  const info = { width: gif.readUInt16LE(6), height: gif.readUInt16LE(8), frames: [], delays: [], loops: null }
  let i = 13
  if (gif[10] & 0x80) i += 3 << ((gif[10] & 7) + 1)
  const skipBlocks = at => {
    while (gif[at] !== 0) at += gif[at] + 1
    return at + 1
  }
  while (i < gif.length && gif[i] !== 0x3b) {
    if (gif[i] === 0x21) {
      if (gif[i + 1] === 0xf9) info.delays.push(gif.readUInt16LE(i + 4))
      if (gif[i + 1] === 0xff && gif.toString('latin1', i + 3, i + 14) === 'NETSCAPE2.0') {
        info.loops = gif.readUInt16LE(i + 16)
      }
      i = skipBlocks(i + 2)
    } else if (gif[i] === 0x2c) {
      info.frames.push({ width: gif.readUInt16LE(i + 5), height: gif.readUInt16LE(i + 7) })
      const packed = gif[i + 9]
      i += 10
      if (packed & 0x80) i += 3 << ((packed & 7) + 1)
      i = skipBlocks(i + 1)
    } else {
      throw new Error(`unexpected GIF block 0x${gif[i].toString(16)} at ${i}`)
    }
  }
  return info
}

/** Canvas size, frame count, frame durations (ms) and loop count of an animated WebP. */
function webpInfo(webp) {
  assert.equal(webp.toString('latin1', 0, 4), 'RIFF')
  assert.equal(webp.toString('latin1', 8, 12), 'WEBP')
  const info = { width: 0, height: 0, durations: [], loops: null }
  let i = 12
  while (i + 8 <= webp.length) {
    const tag = webp.toString('latin1', i, i + 4)
    const size = webp.readUInt32LE(i + 4)
    const u24 = at => webp[at] | (webp[at + 1] << 8) | (webp[at + 2] << 16)
    if (tag === 'VP8X') {
      info.width = u24(i + 12) + 1
      info.height = u24(i + 15) + 1
    }
    if (tag === 'ANIM') info.loops = webp.readUInt16LE(i + 12)
    if (tag === 'ANMF') info.durations.push(u24(i + 20))
    i += 8 + size + (size & 1)
  }
  return info
}

test('an animated GIF uploaded with rokka.js renders to animated GIF and WebP through render.getUrl', async () => {
  const { rokka, org } = await renderWorld()
  const red = [220, 20, 20]
  const green = [20, 200, 40]
  const blue = [20, 40, 220]
  const gif = animatedGif(16, 12, [red, green, blue], [10, 20, 30], 2)
  const img = await upload(rokka, org, 'three-frames.gif', gif)
  assert.equal(img.format, 'gif')
  assert.equal(img.animated, true)
  assert.deepEqual([img.width, img.height], [16, 12])

  const ops = [{ name: 'resize', options: { width: 8 } }]
  const gifUrl = rokka.render.getUrl(org, img.hash, 'gif', ops)
  const animated = await get(gifUrl)
  assert.equal(animated.res.status, 200, `GET ${gifUrl} → ${animated.res.status}: ${animated.body.toString('utf8', 0, 300)}`)
  assert.equal(animated.res.headers.get('content-type'), 'image/gif')
  const g = gifInfo(animated.body)
  assert.deepEqual([g.width, g.height], [8, 6])
  assert.deepEqual(g.frames, [{ width: 8, height: 6 }, { width: 8, height: 6 }, { width: 8, height: 6 }])
  assert.deepEqual(g.delays, [10, 20, 30])
  assert.equal(g.loops, 2)

  const webpUrl = rokka.render.getUrl(org, img.hash, 'webp', ops)
  const webp = await get(webpUrl)
  assert.equal(webp.res.status, 200, `GET ${webpUrl} → ${webp.res.status}`)
  assert.equal(webp.res.headers.get('content-type'), 'image/webp')
  const w = webpInfo(webp.body)
  assert.deepEqual([w.width, w.height], [8, 6])
  assert.deepEqual(w.durations, [100, 200, 300])
  // GIF counts repetitions after the first play, WebP plays: two repetitions are three plays.
  assert.equal(w.loops, 3)

  // Other formats get the first frame.
  await render(rokka.render.getUrl(org, img.hash, 'png', ops), 'png', 8, 6)
})


test('render.getUrl with stackoptions: dpr and jpg.quality', async () => {
  const { rokka, org, img } = await renderWorld()
  const dpr = rokka.render.getUrl(org, img.hash, 'png', 'thumb', { stackoptions: { dpr: 2 } })
  assert.equal(dpr, `${RENDER}/${org}/thumb/o-dpr-2/${img.hash}.png`)
  await render(dpr, 'png', 64, 48)

  const plain = await render(rokka.render.getUrl(org, img.hash, 'jpg', 'thumb'), 'jpg', 32, 24)
  const low = rokka.render.getUrl(org, img.hash, 'jpg', 'thumb', { stackoptions: { 'jpg.quality': 50 } })
  assert.equal(low, `${RENDER}/${org}/thumb/o-jpg.quality-50/${img.hash}.jpg`)
  const lowQuality = await render(low, 'jpg', 32, 24)
  assert.ok(!lowQuality.body.equals(plain.body), 'jpg.quality 50 gave the same bytes as the default')
  assert.notEqual(lowQuality.etag, plain.etag)

  // Several options in one segment, and one on a dynamic stack.
  const both = rokka.render.getUrl(org, img.hash, 'jpg', 'thumb', { stackoptions: { dpr: 2, 'jpg.quality': 50 } })
  await render(both, 'jpg', 64, 48)
  const dyn = rokka.render.getUrl(org, img.hash, 'png', [{ name: 'resize', options: { height: 12 } }], {
    stackoptions: { dpr: 3 },
  })
  await render(dyn, 'png', 48, 36)
})

test('render.getUrl with variables in the path and in ?v=', async () => {
  const { rokka, org, img } = await renderWorld()
  await rokka.stacks.create(org, 'vars', {
    operations: [{ name: 'resize', options: { width: '$w' } }],
    variables: { w: 120 },
  })
  await render(rokka.render.getUrl(org, img.hash, 'png', 'vars'), 'png', 120, 90)

  const small = rokka.render.getUrl(org, img.hash, 'png', 'vars', { variables: { w: 40 } })
  assert.equal(small, `${RENDER}/${org}/vars/v-w-40/${img.hash}.png`)
  await render(small, 'png', 40, 30)

  // A value with characters unsafe in a path goes into ?v= as JSON.
  await rokka.stacks.create(org, 'corner', {
    operations: [{ name: 'crop', options: { width: 16, height: 16, anchor: '$a' } }],
    variables: { a: 'left_top', note: 'none' },
  })
  const topLeft = await render(rokka.render.getUrl(org, img.hash, 'png', 'corner'), 'png', 16, 16)
  const queried = rokka.render.getUrl(org, img.hash, 'png', 'corner', { variables: { a: 'right-bottom' } })
  const parsed = new URL(queried)
  assert.equal(parsed.pathname, `/${org}/corner/${img.hash}.png`)
  assert.deepEqual(JSON.parse(parsed.searchParams.get('v')), { a: 'right-bottom' })
  const bottomRight = await render(queried, 'png', 16, 16)
  assert.ok(!bottomRight.body.equals(topLeft.body), '?v= made no difference to the render')

  // A value longer than 20 characters goes into ?v= too, beside the unsafe one.
  const long = rokka.render.getUrl(org, img.hash, 'png', 'corner', {
    variables: { a: 'right-bottom', note: 'longer than twenty characters' },
  })
  assert.deepEqual(JSON.parse(new URL(long).searchParams.get('v')), {
    a: 'right-bottom',
    note: 'longer than twenty characters',
  })
  assert.ok((await render(long, 'png', 16, 16)).body.equals(bottomRight.body))

  // Path and query variables together, with the query left readable (`?v={"a":…}`).
  await rokka.stacks.create(org, 'sized-corner', {
    operations: [
      { name: 'resize', options: { width: '$w' } },
      { name: 'crop', options: { width: 16, height: 16, anchor: '$a' } },
    ],
    variables: { w: 120, a: 'left_top' },
  })
  const mixed = rokka.render.getUrl(org, img.hash, 'png', 'sized-corner', {
    variables: { w: 64, a: 'right-bottom' },
    removeSafeUrlFromQuery: true,
  })
  assert.ok(mixed.endsWith(`/sized-corner/v-w-64/${img.hash}.png?v={"a":"right-bottom"}`), mixed)
  assert.ok((await render(mixed, 'png', 16, 16)).body.equals(bottomRight.body))
})

test('render.getUrl with a filename slug and with a short hash', async () => {
  const { rokka, org, img } = await renderWorld()
  const plain = await render(rokka.render.getUrl(org, img.hash, 'png', 'thumb'), 'png', 32, 24)

  const slugged = rokka.render.getUrl(org, img.hash, 'png', 'thumb', { filename: 'my-gradient' })
  assert.equal(slugged, `${RENDER}/${org}/thumb/${img.hash}/my-gradient.png`)
  const withSlug = await render(slugged, 'png', 32, 24)
  assert.ok(withSlug.body.equals(plain.body), 'the slug changed the rendered bytes')

  const short = rokka.render.getUrl(org, img.short_hash, 'png', 'thumb', { filename: 'short' })
  assert.equal(short, `${RENDER}/${org}/thumb/${img.short_hash}/short.png`)
  const byShort = await render(short, 'png', 32, 24)
  assert.ok(byShort.body.equals(plain.body), 'the short hash rendered different bytes')
})

test('overwriting a stack changes what its render URLs return', async () => {
  const { rokka, org, img } = await renderWorld()
  const name = 'changing'
  await rokka.stacks.create(org, name, { operations: [{ name: 'resize', options: { width: 32 } }] })
  const url = rokka.render.getUrl(org, img.hash, 'png', name, { filename: 'before' })
  const before = await render(url, 'png', 32, 24)

  await rokka.stacks.create(
    org,
    name,
    { operations: [{ name: 'resize', options: { width: 16 } }] },
    { overwrite: true },
  )
  await render(rokka.render.getUrl(org, img.hash, 'png', name, { filename: 'after' }), 'png', 16, 12)
  // Renders are keyed by the resolved definition, so the old URL follows the new stack.
  const again = await render(url, 'png', 16, 12)
  assert.notEqual(again.etag, before.etag)

  await rokka.stacks.delete(org, name)
  await assertRenderStatus(url, 404)
})

test('a protected image renders only with a signed URL', async () => {
  const { rokka, org } = await renderWorld()
  const img = await upload(rokka, org, 'signed.png', uniquePng(64, 48))
  const on = await rokka.sourceimages.setProtected(org, img.hash, true)
  const hash = locationHash(on)
  assert.notEqual(hash, img.hash)

  const orgInfo = await rokka.organizations.get(org)
  const key = orgInfo.body.signing_keys?.[0]?.key
  assert.equal(typeof key, 'string', `no signing_keys[0].key: ${JSON.stringify(orgInfo.body)}`)

  const url = rokka.render.getUrl(org, hash, 'png', 'thumb')
  await assertRenderStatus(url, 403)

  const signed = rokka.render.signUrl(url, key)
  assert.match(new URL(signed).searchParams.get('sig'), /^[0-9a-f]{16}$/)
  await render(signed, 'png', 32, 24)

  const until = new Date(Date.now() + 3600 * 1000)
  const limited = rokka.render.signUrl(url, key, { until })
  assert.ok(new URL(limited).searchParams.get('sigopts'), limited)
  await render(limited, 'png', 32, 24)

  // The server-side helper signs the same URL with the organization's key.
  const served = await rokka.utils.signUrl(org, url, { roundDateUpTo: 300 })
  assert.equal(served.body.original_url, url)
  assert.match(new URL(served.body.signed_url).searchParams.get('sig'), /^[0-9a-f]{16}$/)
  await render(served.body.signed_url, 'png', 32, 24)

  // rokka.js drops the slug before signing, and the signed URL it returns has none either.
  const slugged = rokka.render.signUrl(rokka.render.getUrl(org, hash, 'png', 'thumb', { filename: 'secret' }), key)
  assert.equal(new URL(slugged).pathname, `/${org}/thumb/${hash}.png`)
  await render(slugged, 'png', 32, 24)

  // Variables in ?v= are part of what is signed.
  await rokka.stacks.create(org, 'signed-corner', {
    operations: [{ name: 'crop', options: { width: 16, height: 16, anchor: '$a' } }],
    variables: { a: 'left_top' },
  })
  const withV = rokka.render.getUrl(org, hash, 'png', 'signed-corner', { variables: { a: 'right-bottom' } })
  const signedV = rokka.render.signUrl(withV, key)
  await render(signedV, 'png', 16, 16)
  const tamperedV = new URL(signedV)
  tamperedV.searchParams.set('v', JSON.stringify({ a: 'left-bottom' }))
  await assertRenderStatus(tamperedV.toString(), 403)

  // A wrong signature, a signature moved to another stack, and an expired one are refused.
  const wrong = new URL(signed)
  wrong.searchParams.set('sig', '0000000000000000')
  await assertRenderStatus(wrong.toString(), 403)
  const moved = signed.replace('/thumb/', '/dynamic/noop/')
  await assertRenderStatus(moved, 403)
  const expired = rokka.render.signUrl(url, key, { until: new Date(Date.now() - 3600 * 1000) })
  await assertRenderStatus(expired, 403)
})

test('render.addStackVariables on a path-form render URL', async () => {
  const { rokka, org, img } = await renderWorld()
  await rokka.stacks.create(
    org,
    'vars',
    { operations: [{ name: 'resize', options: { width: '$w' } }], variables: { w: 120 } },
    { overwrite: true },
  )
  const base = rokka.render.getUrl(org, img.hash, 'png', 'vars', { filename: 'named' })
  const url = rokka.render.addStackVariables(base, { w: 48 })
  assert.equal(url, `${RENDER}/${org}/vars/v-w-48/${img.hash}/named.png`)
  await render(url, 'png', 48, 36)

  // Adding to a URL that already has variables merges them; the later call wins.
  const again = rokka.render.addStackVariables(url, { w: 24 })
  assert.equal(again, `${RENDER}/${org}/vars/v-w-24/${img.hash}/named.png`)
  await render(again, 'png', 24, 18)
})

test('render.getUrlFromUrl with a path-form renderHost', async t => {
  const { rokka, org, img } = await renderWorld()
  const source = rokka.render.getUrl(org, img.hash, 'png', 'dynamic/noop', { filename: 'pic' })
  const url = rokka.render.getUrlFromUrl(source, 'thumb')
  const expected = `${RENDER}/${org}/thumb/${img.hash}/pic.png`
  if (url !== expected) {
    // rokka-render takes the organization from the URL's hostname (minus the fixed part of
    // renderHost's host), so with the organization in the path it builds a URL for another one.
    t.skip(`getUrlFromUrl needs the organization in the host name; it built ${url}`)
    return
  }
  await render(url, 'png', 32, 24)
})

test('sourceimages.alias create, get, overwrite, invalidateCache and delete; renders through -_alias_-', async () => {
  const { rokka, org, img } = await renderWorld()
  const other = await upload(rokka, org, 'alias-other.png', uniquePng(16, 8))

  const created = await rokka.sourceimages.alias.create(org, 'hero', { hash: img.hash })
  assert.equal(created.statusCode, 201)
  assert.deepEqual(created.body, { organization: org, alias: 'hero', hash: img.hash })
  const got = await rokka.sourceimages.alias.get(org, 'hero')
  assert.deepEqual(got.body, created.body)
  await assertStatus(rokka.sourceimages.alias.create(org, 'hero', { hash: other.hash }), 409)
  await assertStatus(rokka.sourceimages.alias.create(org, 'bad-name', { hash: img.hash }), 404)

  // An alias URL renders the image as its hash URL does, with a short max-age.
  const url = rokka.render.getUrl(org, '-_hero_-', 'png', 'thumb')
  const byAlias = await get(url)
  assert.equal(byAlias.res.status, 200, url)
  assert.equal(byAlias.res.headers.get('cache-control'), 'public, max-age=60')
  const byHash = await render(rokka.render.getUrl(org, img.hash, 'png', 'thumb'), 'png', 32, 24)
  assert.ok(byAlias.body.equals(byHash.body), 'the alias rendered other bytes than the hash')

  const moved = await rokka.sourceimages.alias.create(org, 'hero', { hash: other.hash }, { overwrite: true })
  assert.equal(moved.statusCode, 200)
  assert.equal(moved.body.hash, other.hash)
  const after = await get(url)
  assert.equal(after.res.status, 200)
  assert.deepEqual(dimensions(after.body), { width: 32, height: 16 })

  const purged = await rokka.sourceimages.alias.invalidateCache(org, 'hero')
  assert.equal(purged.statusCode, 200)
  assert.ok(Array.isArray(purged.body.items))

  const del = await rokka.sourceimages.alias.delete(org, 'hero')
  assert.equal(del.statusCode, 204)
  await assertStatus(rokka.sourceimages.alias.get(org, 'hero'), 404)
  await assertRenderStatus(url, 404)
})

test('sourceimages.create with an SVG stores its intrinsic size; renders draw it at the asked size', async () => {
  const { rokka, org } = await renderWorld()
  const svg = Buffer.from(
    '<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80">' +
      `<rect width="60" height="80" fill="#ff0000"/><!-- ${randomBytes(4).toString('hex')} --></svg>\n`,
  )
  const img = await upload(rokka, org, 'logo.svg', svg)
  assert.equal(img.format, 'svg')
  assert.equal(img.mimetype, 'image/svg+xml')
  assert.equal(img.width, 120)
  assert.equal(img.height, 80)
  assert.equal(img.binary_hash, sha1(svg))

  await render(rokka.render.getUrl(org, img.hash, 'png', null), 'png', 120, 80)
  const big = rokka.render.getUrl(org, img.hash, 'png', [{ name: 'resize', options: { width: 600 } }])
  await render(big, 'png', 600, 400)
  const jpg = rokka.render.getUrl(org, img.hash, 'jpg', [{ name: 'resize', options: { width: 30 } }])
  await render(jpg, 'jpg', 30, 20)

  const bomb = Buffer.from(
    '<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect width="1" height="1"/></svg>',
  )
  await assertClientError(rokka.sourceimages.create(org, 'huge.svg', bomb))
})

test('a font upload and a stack with the text operation, through rokka.js', async () => {
  const { rokka, org, img } = await renderWorld()
  const fontBytes = readFileSync(new URL('../fixtures/fonts/dejavu-sans-latin.ttf', import.meta.url))
  const font = await upload(rokka, org, 'DejaVuSans.ttf', fontBytes)
  assert.equal(font.format, 'ttf')
  assert.equal(font.width, 0)
  assert.equal(font.height, 0)
  const listed = await rokka.sourceimages.list(org, { limit: 1000 })
  assert.ok(listed.body.items.some(i => i.hash === font.hash), 'the font is not listed')
  const downloaded = await rokka.sourceimages.downloadAsBuffer(org, font.hash)
  assert.ok(downloaded.body.equals(fontBytes), `got ${downloaded.body.length} bytes of the font`)
  assert.equal(downloaded.response.headers.get('content-type'), 'font/ttf')

  const operations = await rokka.operations.list()
  assert.deepEqual(operations.body.text.required, ['font', 'text'])

  await rokka.stacks.create(org, 'caption', {
    operations: [
      { name: 'text', options: { font: font.hash, text: 'Grüße', size: 14, color: 'FFFFFF', anchor: 'center_bottom' } },
    ],
  })
  const plain = await render(rokka.render.getUrl(org, img.hash, 'png', null), 'png', 64, 48)
  const captioned = await render(rokka.render.getUrl(org, img.hash, 'png', 'caption'), 'png', 64, 48)
  assert.ok(!captioned.body.equals(plain.body), 'the text stack rendered the image unchanged')

  const dynamic = rokka.render.getUrl(org, img.hash, 'png', [
    { name: 'text', options: { font: font.hash, text: 'Hi', size: 20 } },
  ])
  const hi = await render(dynamic, 'png', 64, 48)
  assert.ok(!hi.body.equals(captioned.body))

  // A font is not an image.
  await assertRenderStatus(rokka.render.getUrl(org, font.hash, 'png', null), 400)
})
