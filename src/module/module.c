/*
 * Module runtime: dispatch through the applet registry (registry.c), the all-or-nothing rule for
 * each command, and the sealed state. Every command runs against a copy of the persistent state
 * taken before it; a command that fails, or whose new state cannot be stored, leaves the module
 * exactly as it was. A command that changed the state is answered only after the store callback
 * has made the new sealed blob durable ("acknowledged means durable").
 *
 * The sealed state holds the runtime's own fields (lifecycle, role, address, keys, certificates)
 * and one versioned section per applet that keeps state; this file reads and writes the sections'
 * framing and leaves their bodies to the applets. It names no applet.
 *
 * This folder includes only src/base/ and itself, never allocates, never does I/O.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "module/module_int.h"

static const char label_state[] = "keyhole module state v1";

/* The runtime's TLV tags in the sealed state (both versions). */
enum {
	T_LIFECYCLE = 1,
	T_ROLE,
	T_UA,
	T_ROOT_PK,
	T_SIGN_SK,
	T_SIGN_PK,
	T_PAIR_SK,
	T_PAIR_PK,
	T_KP,
	T_KU,
	T_SIGN_CERT,
	T_PAIR_CERT,
	T_SECTION = 0x80, /* version 2: u8 applet section id | u8 version | u8 flags | the applet's TLVs */
};

#define HDR_LEN KH_MODULE_BLOB_HDR_LEN

size_t kh_module_size(void)
{
	return sizeof(struct kh_module);
}

uint64_t kh__module_now(const struct kh_module *m)
{
	return m->env.now ? m->env.now(m->env.ctx) : 0;
}

kh_err kh_module_init(void *mem, size_t memlen, const uint8_t root_key[static KH_ROOT_KEY_LEN],
		      const struct kh_module_env *env, struct kh_module **out)
{
	struct kh_module *m = mem;
	kh_err r;

	if (!mem || memlen < sizeof *m || ((uintptr_t)mem & 15) || !env || !env->store)
		return KH_ERR_INVAL;
	kh_wipe(m, sizeof *m);
	if ((r = kh_hkdf(root_key, KH_ROOT_KEY_LEN, NULL, 0, (const uint8_t *)label_state,
			 sizeof label_state - 1, m->state_key, sizeof m->state_key)) != KH_OK) {
		kh_wipe(m, sizeof *m);
		return r;
	}
	m->env = *env;
	m->magic = KH_MODULE_MAGIC;
	*out = m;
	return KH_OK;
}

void kh_module_wipe(struct kh_module *m)
{
	if (m)
		kh_wipe(m, sizeof *m);
}

uint8_t kh_module_role(const struct kh_module *m)
{
	return m->p.role;
}

uint64_t kh_module_counter(const struct kh_module *m)
{
	return m->counter;
}

/* ---- sealed state ---- */

/* An applet's section: its header, then its body as the applet writes it. */
static kh_err save_section(const struct kh_applet_state *st, const struct kh_persist *p,
			   const struct kh_applet_live *l, struct kh_wr *w)
{
	uint8_t *hdr;
	size_t start, n;
	kh_err r;

	if ((r = kh_wr_reserve(w, KH_SECTION_HDR_LEN, &hdr)) != KH_OK)
		return r;
	start = w->len;
	if ((r = st->save(p, l, w)) != KH_OK)
		return r;
	/* an applet past the size registry.c counted on: a bug, never a state to seal */
	if ((n = w->len - start) > st->max_len)
		return w->err = KH_ERR_INTERNAL;
	n += 3;
	hdr[0] = T_SECTION;
	hdr[1] = (uint8_t)(n >> 8);
	hdr[2] = (uint8_t)n;
	hdr[3] = st->id;
	hdr[4] = st->version;
	hdr[5] = st->flags;
	return KH_OK;
}

static kh_err serialise(const struct kh_persist *p, const struct kh_applet_live *l, uint8_t *buf, size_t cap,
			size_t *len)
{
	struct kh_wr w;
	kh_wr_init(&w, buf, cap);
	kh_tlv_put_u8(&w, T_LIFECYCLE, p->lifecycle);
	kh_tlv_put_u8(&w, T_ROLE, p->role);
	kh_tlv_put_u32(&w, T_UA, p->ua);
	kh_tlv_put(&w, T_ROOT_PK, p->root_pk, 32);
	kh_tlv_put(&w, T_SIGN_SK, p->sign_sk, 32);
	kh_tlv_put(&w, T_SIGN_PK, p->sign_pk, 32);
	kh_tlv_put(&w, T_PAIR_SK, p->pair_sk, 32);
	kh_tlv_put(&w, T_PAIR_PK, p->pair_pk, 32);
	kh_tlv_put(&w, T_KP, p->kp, 32);
	kh_tlv_put(&w, T_KU, p->ku, 32);
	kh_tlv_put(&w, T_SIGN_CERT, p->sign_cert, p->sign_cert_len);
	kh_tlv_put(&w, T_PAIR_CERT, p->pair_cert, p->pair_cert_len);
	for (size_t i = 0; i < kh__napplets && w.err == KH_OK; i++) {
		const struct kh_applet_state *st = kh__applets[i]->state;
		if (st && (st->roles & KH_ROLE_BIT(p->role)))
			save_section(st, p, l, &w);
	}
	*len = w.len;
	return w.err;
}

static kh_err cert_field(const struct kh_tlv *t, uint8_t *dst, uint16_t *len)
{
	if (t->len > KH_CERT_MAX)
		return KH_ERR_TOO_LARGE;
	memcpy(dst, t->v, t->len);
	*len = t->len;
	return KH_OK;
}

/* One of the runtime's own TLVs into p; KH_ERR_TLV_TAG for a tag that is not the runtime's. */
static kh_err runtime_field(const struct kh_tlv *t, struct kh_persist *p)
{
	switch (t->tag) {
	case T_LIFECYCLE: return kh_tlv_u8(t, &p->lifecycle);
	case T_ROLE: return kh_tlv_u8(t, &p->role);
	case T_UA: return kh_tlv_u32(t, &p->ua);
	case T_ROOT_PK: return kh_tlv_fixed(t, p->root_pk, 32);
	case T_SIGN_SK: return kh_tlv_fixed(t, p->sign_sk, 32);
	case T_SIGN_PK: return kh_tlv_fixed(t, p->sign_pk, 32);
	case T_PAIR_SK: return kh_tlv_fixed(t, p->pair_sk, 32);
	case T_PAIR_PK: return kh_tlv_fixed(t, p->pair_pk, 32);
	case T_KP: return kh_tlv_fixed(t, p->kp, 32);
	case T_KU: return kh_tlv_fixed(t, p->ku, 32);
	case T_SIGN_CERT: return cert_field(t, p->sign_cert, &p->sign_cert_len);
	case T_PAIR_CERT: return cert_field(t, p->pair_cert, &p->pair_cert_len);
	default: return KH_ERR_TLV_TAG;
	}
}

/* The index of the applet whose section is id (or, id 0, the one that reads version-1 blobs);
 * kh__napplets when none. */
static size_t section_owner(uint8_t id)
{
	size_t i;
	for (i = 0; i < kh__napplets; i++) {
		const struct kh_applet_state *st = kh__applets[i]->state;
		if (st && (id ? st->id == id : (st->flags & KH_SECTION_V1) != 0))
			break;
	}
	return i;
}

/* A section's body, which the applet must read to its end. */
static kh_err load_section(const struct kh_applet_state *st, uint8_t version, const uint8_t *body, size_t n,
			   struct kh_persist *p, struct kh_applet_live *l)
{
	struct kh_rd rd;
	kh_err r;

	if (version == 0 || version > st->version)
		return KH_ERR_STATE_VERSION;
	kh_rd_init(&rd, body, n);
	if ((r = st->load(p, l, version, &rd)) == KH_OK && rd.n)
		r = KH_ERR_TRAILING;
	return r;
}

/*
 * The TLV state of a blob of the given version into p and l, all or nothing. Version 1 is one
 * flat list: the runtime's tags, then (from the first tag that is not the runtime's) the section
 * of the applet flagged KH_SECTION_V1, at its version 1. Version 2 is the runtime's tags and one
 * T_SECTION per applet; an applet without one starts blank.
 */
static kh_err deserialise(const uint8_t *buf, size_t len, uint8_t version, struct kh_persist *p,
			  struct kh_applet_live *l)
{
	uint64_t loaded = 0; /* bit i: applet i's section was read (registry.c: at most 64 applets) */
	struct kh_rd rd;
	struct kh_tlv t;
	const uint8_t *at;
	size_t i, left;
	int k;
	kh_err r = KH_OK;

	kh_wipe(p, sizeof *p);
	kh_wipe(l, sizeof *l);
	for (i = 0; i < kh__napplets; i++)
		if (kh__applets[i]->state)
			kh__applets[i]->state->reset(p, l);
	kh_rd_init(&rd, buf, len);
	while (r == KH_OK) {
		at = rd.p;
		left = rd.n;
		if ((k = kh_tlv_next(&rd, &t)) != 1) {
			r = k;
			break;
		}
		if ((r = runtime_field(&t, p)) != KH_ERR_TLV_TAG)
			continue;
		if (version == KH_MODULE_BLOB_V1) {
			if ((i = section_owner(0)) < kh__napplets)
				r = load_section(kh__applets[i]->state, 1, at, left, p, l);
			break;
		}
		if (t.tag != T_SECTION)
			break;
		if (t.len < 3) {
			r = KH_ERR_FORMAT;
			break;
		}
		if (t.v[0] == 0 || (i = section_owner(t.v[0])) == kh__napplets) {
			/* an optional section this build does not know is dropped; a mandatory one refused */
			r = (t.v[2] & KH_SECTION_OPTIONAL) ? KH_OK : KH_ERR_STATE_SECTION;
			continue;
		}
		if (loaded & (1ull << i)) {
			r = KH_ERR_FORMAT;
			break;
		}
		loaded |= 1ull << i;
		r = load_section(kh__applets[i]->state, t.v[1], t.v + 3, t.len - 3u, p, l);
	}
	if (r == KH_OK && p->lifecycle > KH_LC_PERSONALISED)
		r = KH_ERR_FORMAT;
	if (r != KH_OK) {
		kh_wipe(p, sizeof *p);
		kh_wipe(l, sizeof *l);
	}
	return r;
}

kh_err kh_module_blob_counter(const uint8_t *blob, size_t len, uint64_t *counter)
{
	if (len < HDR_LEN + KH_TAG_LEN || kh_get_be32(blob) != KH_MODULE_MAGIC)
		return KH_ERR_FORMAT;
	if (blob[4] != KH_MODULE_BLOB_V1 && blob[4] != KH_MODULE_BLOB_V2)
		return KH_ERR_VERSION;
	*counter = kh_get_be64(blob + 5);
	return KH_OK;
}

/* Seal p with the next counter and hand it to the store; the counter moves only when stored. */
static kh_err persist(struct kh_module *m)
{
	size_t plen, blen;
	uint64_t next = m->counter + 1;
	kh_err r;

	if ((r = serialise(&m->p, &m->live, m->plain, sizeof m->plain, &plen)) != KH_OK)
		goto out;
	if (HDR_LEN + plen + KH_TAG_LEN > sizeof m->blob) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	kh_put_be32(m->blob, KH_MODULE_MAGIC);
	m->blob[4] = KH_MODULE_BLOB_V2;
	kh_put_be64(m->blob + 5, next);
	if ((r = kh_random(m->blob + 13, KH_NONCE_LEN)) != KH_OK)
		goto out;
	if ((r = kh_aead_seal(m->state_key, m->blob + 13, m->blob, HDR_LEN, m->plain, plen,
			      m->blob + HDR_LEN)) != KH_OK)
		goto out;
	blen = HDR_LEN + plen + KH_TAG_LEN;
	/*
	 * The counter is used up even when the store fails: the store may have failed after the new
	 * blob reached the disk (a rename done, its directory fsync not), and the next store must
	 * never write a different state under a counter that may already be there.
	 */
	m->counter = next;
	if ((r = m->env.store(m->env.ctx, m->blob, blen, next)) != KH_OK) {
		/* the host's word that another process wrote the state is worth passing on */
		if (r != KH_ERR_MODULE_CHANGED)
			r = KH_ERR_STORE;
		goto out;
	}
	for (size_t i = 0; i < kh__napplets; i++)
		if (kh__applets[i]->state && kh__applets[i]->state->stored)
			kh__applets[i]->state->stored(&m->live);
out:
	kh_wipe(m->plain, sizeof m->plain);
	return r;
}

kh_err kh_module_seal(struct kh_module *m)
{
	if (!m || m->magic != KH_MODULE_MAGIC)
		return KH_ERR_INVAL;
	return persist(m);
}

kh_err kh_module_load(struct kh_module *m, const uint8_t *blob, size_t len, uint64_t min_counter)
{
	struct kh_applet_live live;
	uint64_t counter;
	size_t plen;
	kh_err r;

	if (!m || m->magic != KH_MODULE_MAGIC || !blob)
		return KH_ERR_INVAL;
	if ((r = kh_module_blob_counter(blob, len, &counter)) != KH_OK)
		return r;
	if (len > sizeof m->blob)
		return KH_ERR_TOO_LARGE;
	plen = len - HDR_LEN - KH_TAG_LEN;
	if (kh_aead_open(m->state_key, blob + 13, blob, HDR_LEN, blob + HDR_LEN, len - HDR_LEN, m->plain) != KH_OK) {
		r = KH_ERR_STATE_AUTH;
		goto out;
	}
	/* Authentic but older than what was seen: a rolled-back copy. */
	if (counter < min_counter || counter < m->counter) {
		r = KH_ERR_ROLLBACK;
		goto out;
	}
	if ((r = deserialise(m->plain, plen, blob[4], &m->saved, &live)) != KH_OK)
		goto out;
	m->p = m->saved;
	m->live = live;
	m->counter = counter;
	/* a new state, as after a power cycle: no channel, no key of one, nothing in flight */
	for (size_t i = 0; i < kh__napplets; i++)
		if (kh__applets[i]->drop)
			kh__applets[i]->drop(m);
out:
	kh_wipe(m->plain, sizeof m->plain);
	kh_wipe(&m->saved, sizeof m->saved);
	kh_wipe(&live, sizeof live);
	return r;
}

/* ---- dispatch ---- */

/* The registry's entry for an instruction (NULL: no applet handles it). */
static const struct kh_applet_ins *find_ins(uint8_t ins)
{
	for (size_t i = 0; i < kh__napplets; i++)
		for (size_t j = 0; j < kh__applets[i]->nins; j++)
			if (kh__applets[i]->ins[j].ins == ins)
				return &kh__applets[i]->ins[j];
	return NULL;
}

static size_t finish(struct kh_wr *w, uint8_t *resp, size_t cap, uint16_t sw, int keep)
{
	/* On error the answer is the status word alone, unless the handler made data to go with the
	 * refusal (a pay-per-view offer); when the data does not fit, the status word alone too. */
	size_t n = w->len;
	if (sw != KH_SW_OK && sw != KH_SW_RELAY && !keep)
		n = 0;
	if (n + 2 > cap) {
		n = 0;
		sw = kh_err_to_sw(KH_ERR_BUF);
	}
	if (cap < 2)
		return 0;
	if (n == 0)
		kh_wipe(resp, w->len < cap ? w->len : cap);
	resp[n] = (uint8_t)(sw >> 8);
	resp[n + 1] = (uint8_t)sw;
	return n + 2;
}

size_t kh__module_exec(struct kh_module *m, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap)
{
	const struct kh_applet_ins *e;
	struct kh_apdu a;
	struct kh_wr w;
	kh_err r;

	kh_wr_init(&w, resp, cap >= 2 ? cap - 2 : 0);
	m->relay = 0;
	m->dirty = 0;
	m->keep_data = 0;
	m->commit_refusal = 0;
	if ((r = kh_apdu_parse(cmd, len, &a)) != KH_OK)
		return finish(&w, resp, cap, kh_err_to_sw(r), 0);
	if (a.cla != KH_CLA)
		return finish(&w, resp, cap, kh_err_to_sw(KH_ERR_APDU_CLA), 0);
	if (!(e = find_ins(a.ins)) || !(e->flags & (m->depth ? KH_INSF_SEALED : KH_INSF_PLAIN)) ||
	    (e->roles && !(e->roles & KH_ROLE_BIT(m->p.role))))
		return finish(&w, resp, cap, kh_err_to_sw(KH_ERR_APDU_INS), 0);

	if (e->flags & KH_INSF_NOTX) {
		r = e->fn(m, &a, &w);
		if (r == KH_OK && w.err != KH_OK)
			r = w.err;
	} else {
		m->saved = m->p;
		r = e->fn(m, &a, &w);
		if (r == KH_OK && w.err != KH_OK)
			r = w.err;
		if (m->dirty && (r == KH_OK || m->commit_refusal)) {
			/* a refusal that still moves state is stored before it is answered, too */
			kh_err pr = persist(m);
			if (pr != KH_OK) {
				r = pr;
				m->commit_refusal = 0;
			}
		}
		if (r != KH_OK && !m->commit_refusal)
			m->p = m->saved;
		kh_wipe(&m->saved, sizeof m->saved);
		m->dirty = 0;
	}
	return finish(&w, resp, cap, r == KH_OK ? (m->relay ? KH_SW_RELAY : KH_SW_OK) : kh_err_to_sw(r),
		      m->keep_data && w.err == KH_OK);
}

size_t kh_module_process(struct kh_module *m, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap)
{
	if (!m || m->magic != KH_MODULE_MAGIC || !resp || cap < 2)
		return 0;
	m->depth = 0;
	return kh__module_exec(m, cmd, len, resp, cap);
}
