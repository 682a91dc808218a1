/*
 * Module runtime: the dispatch table, the all-or-nothing rule for each command, and the sealed
 * state. Every command runs against a copy of the persistent state taken
 * before it; a command that fails, or whose new state cannot be stored, leaves the module
 * exactly as it was. A command that changed the state is answered only after the store callback
 * has made the new sealed blob durable ("acknowledged means durable").
 *
 * This folder includes only src/base/ and itself, never allocates, never does I/O.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "module/module_int.h"

#define F_PLAIN 0x01  /* accepted as a plain command */
#define F_SEALED 0x02 /* accepted inside the paired channel */
#define F_INIT 0x04   /* initiators toward a module below: CAM and decoder roles only */
#define F_NOTX 0x08   /* no snapshot: its own transaction (SEALED) or no persistent state */
#define F_DEC 0x10    /* decoder role only */

static const struct {
	uint8_t ins;
	uint8_t flags;
	kh_handler fn;
} dispatch[] = {
	{KH_INS_GET_INFO, F_PLAIN | F_SEALED, kh__h_get_info},
	{KH_INS_GET_CERT, F_PLAIN, kh__h_get_cert},
	{KH_INS_PERSO_INIT, F_PLAIN, kh__h_perso_init},
	{KH_INS_PERSO_CERTS, F_PLAIN, kh__h_perso_certs},
	{KH_INS_PAIR_OPEN, F_PLAIN, kh__h_pair_open},
	{KH_INS_SEALED, F_PLAIN | F_NOTX, kh__h_sealed},
	{KH_INS_ECHO, F_SEALED, kh__h_echo},
	{KH_INS_CAM_AUTH, F_SEALED, kh__h_cam_auth},
	/* The CAM's relay commands work inside the decoder's channel too: that is how control
	 * words reach the decoder without crossing the host in clear. A decoder module runs the
	 * same three toward its CAM. */
	{KH_INS_CARD_START, F_PLAIN | F_SEALED | F_INIT, kh__h_card_start},
	{KH_INS_CARD_RESP, F_PLAIN | F_SEALED | F_INIT, kh__h_card_resp},
	{KH_INS_CARD_SEND, F_PLAIN | F_SEALED | F_INIT, kh__h_card_send},
	{KH_INS_LADDER_LOAD, F_PLAIN | F_DEC | F_NOTX, kh__h_ladder_load},
	{KH_INS_DESCRAMBLE, F_PLAIN | F_DEC | F_NOTX, kh__h_descramble},
	{KH_INS_ECM, F_SEALED, kh__h_ecm},
	{KH_INS_PURCHASE, F_SEALED, kh__h_purchase},
	{KH_INS_EMM, F_PLAIN | F_SEALED, kh__h_emm},
	{KH_INS_CAS_STATUS, F_PLAIN | F_SEALED, kh__h_cas_status},
	{KH_INS_CAS_FLUSH, F_PLAIN | F_SEALED, kh__h_cas_flush},
	{KH_INS_EXPORT, F_PLAIN | F_SEALED, kh__h_export},
	{KH_INS_HELLO, F_PLAIN | F_SEALED, kh__h_hello},
};

static const char label_state[] = "keyhole module state v1";

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
};

#define HDR_LEN (4 + 1 + 8 + KH_NONCE_LEN)

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

uint64_t kh_module_counter(const struct kh_module *m)
{
	return m->counter;
}

/* ---- sealed state ---- */

static kh_err serialise(const struct kh_persist *p, const struct kh_cas_usage *u, uint8_t *buf, size_t cap,
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
	kh__cas_serialise(&p->cas, u, &w);
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

static kh_err deserialise(const uint8_t *buf, size_t len, struct kh_persist *p, struct kh_cas_usage *u)
{
	struct kh_rd rd;
	struct kh_tlv t;
	int k;
	kh_err r = KH_OK;

	kh_wipe(p, sizeof *p);
	memset(u, 0, sizeof *u);
	kh_rd_init(&rd, buf, len);
	while (r == KH_OK && (k = kh_tlv_next(&rd, &t)) == 1) {
		switch (t.tag) {
		case T_LIFECYCLE: r = kh_tlv_u8(&t, &p->lifecycle); break;
		case T_ROLE: r = kh_tlv_u8(&t, &p->role); break;
		case T_UA: r = kh_tlv_u32(&t, &p->ua); break;
		case T_ROOT_PK: r = kh_tlv_fixed(&t, p->root_pk, 32); break;
		case T_SIGN_SK: r = kh_tlv_fixed(&t, p->sign_sk, 32); break;
		case T_SIGN_PK: r = kh_tlv_fixed(&t, p->sign_pk, 32); break;
		case T_PAIR_SK: r = kh_tlv_fixed(&t, p->pair_sk, 32); break;
		case T_PAIR_PK: r = kh_tlv_fixed(&t, p->pair_pk, 32); break;
		case T_KP: r = kh_tlv_fixed(&t, p->kp, 32); break;
		case T_KU: r = kh_tlv_fixed(&t, p->ku, 32); break;
		case T_SIGN_CERT: r = cert_field(&t, p->sign_cert, &p->sign_cert_len); break;
		case T_PAIR_CERT: r = cert_field(&t, p->pair_cert, &p->pair_cert_len); break;
		default: r = kh__cas_field(&t, &p->cas, u); break;
		}
	}
	if (r == KH_OK && k < 0)
		r = k;
	if (r == KH_OK && p->lifecycle > KH_LC_PERSONALISED)
		r = KH_ERR_FORMAT;
	if (r != KH_OK)
		kh_wipe(p, sizeof *p);
	return r;
}

kh_err kh_module_blob_counter(const uint8_t *blob, size_t len, uint64_t *counter)
{
	if (len < HDR_LEN + KH_TAG_LEN || kh_get_be32(blob) != KH_MODULE_MAGIC)
		return KH_ERR_FORMAT;
	if (blob[4] != 1)
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

	if ((r = serialise(&m->p, &m->usage, m->plain, sizeof m->plain, &plen)) != KH_OK)
		goto out;
	if (HDR_LEN + plen + KH_TAG_LEN > sizeof m->blob) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	kh_put_be32(m->blob, KH_MODULE_MAGIC);
	m->blob[4] = 1;
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
	m->usage.unsaved = 0;
	m->usage.clock_saved = m->usage.clock;
out:
	kh_wipe(m->plain, sizeof m->plain);
	return r;
}

kh_err kh_module_load(struct kh_module *m, const uint8_t *blob, size_t len, uint64_t min_counter)
{
	struct kh_cas_usage usage;
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
	if ((r = deserialise(m->plain, plen, &m->saved, &usage)) != KH_OK)
		goto out;
	m->p = m->saved;
	m->usage = usage;
	m->usage.clock_saved = usage.clock;
	m->counter = counter;
	kh_chan_wipe(&m->chan);
	kh_link_wipe(&m->link);
out:
	kh_wipe(m->plain, sizeof m->plain);
	kh_wipe(&m->saved, sizeof m->saved);
	return r;
}

/* ---- dispatch ---- */

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
	struct kh_apdu a;
	struct kh_wr w;
	kh_err r;
	size_t i;

	kh_wr_init(&w, resp, cap >= 2 ? cap - 2 : 0);
	m->relay = 0;
	m->dirty = 0;
	m->keep_data = 0;
	m->commit_refusal = 0;
	if ((r = kh_apdu_parse(cmd, len, &a)) != KH_OK)
		return finish(&w, resp, cap, kh_err_to_sw(r), 0);
	if (a.cla != KH_CLA)
		return finish(&w, resp, cap, kh_err_to_sw(KH_ERR_APDU_CLA), 0);
	for (i = 0; i < sizeof dispatch / sizeof dispatch[0]; i++)
		if (dispatch[i].ins == a.ins)
			break;
	if (i == sizeof dispatch / sizeof dispatch[0] ||
	    !(dispatch[i].flags & (m->depth ? F_SEALED : F_PLAIN)) ||
	    ((dispatch[i].flags & F_INIT) && m->p.role != KH_ROLE_CAM && m->p.role != KH_ROLE_DECODER) ||
	    ((dispatch[i].flags & F_DEC) && m->p.role != KH_ROLE_DECODER))
		return finish(&w, resp, cap, kh_err_to_sw(KH_ERR_APDU_INS), 0);

	if (dispatch[i].flags & F_NOTX) {
		r = dispatch[i].fn(m, &a, &w);
		if (r == KH_OK && w.err != KH_OK)
			r = w.err;
	} else {
		m->saved = m->p;
		r = dispatch[i].fn(m, &a, &w);
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
