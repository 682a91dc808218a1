/*
 * The relay of one post (seed 004; include/keyhole/keycentersvc.h): in ONE transaction, the
 * sender's row taken, its index checked against its chain (a replay, a duplicate, a key beyond
 * the window), the post opened under that key, the sender's chain moved past it, and then, for
 * an active recipient, the document sealed again under the recipient's next receive key, its
 * chain moved, the delivery queued with its key sealed at rest and the relay logged.
 *
 * Nothing changes unless the post opens: a wrong key, a flipped byte or a cut message leave the
 * sender's chain where it was. Once it opens its index is spent even when the recipient is
 * refused, since the card already moved past that key and AES-GCM under it with the fixed chunk
 * nonces must never seal a second, different message. A full mailbox is refused BEFORE that
 * (KH_ERR_LIMIT, nothing changed): the sender posts the same message again later.
 *
 * On PostgreSQL the rows are taken by writing them (kh_store_kc_card_lock), sender then
 * recipient; the store's SERIALIZABLE transactions turn a conflict or deadlock into the soft error
 * and the whole relay runs again (kh__kc_write), from reading the rows on: each run derives its
 * keys from the chain states it reads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kc_int.h"
#include "keyhole/crypto.h"
#include "keyhole/log.h"

/* Runs of a transaction the store still found busy after its own attempts. */
#define WRITE_ROUNDS 8

int64_t kh__kc_now(const struct kh_keycenter_service *s)
{
	return s->clock ? s->clock(s->clock_ctx) : (int64_t)time(NULL);
}

kh_err kh__kc_write(struct kh_keycenter_service *s, kh_store_tx_fn fn, void *arg)
{
	struct kh_store *st;
	kh_err r;

	if (kh_store_group_batches(s->writer))
		return kh_store_group_run(s->writer, fn, arg);
	if ((r = kh__pool_get(&s->pool, &st)) != KH_OK)
		return r;
	for (int i = 0; i < WRITE_ROUNDS; i++)
		if ((r = kh_store_run_tx(st, fn, arg)) != KH_ERR_DB_BUSY)
			break;
	return r;
}

struct relay_tx {
	const struct kh_keycenter *kc;
	unsigned window;
	const uint8_t *msg;
	size_t n;
	uint8_t hash[32];
	struct kh_kc_header h;
	uint8_t *doc, *out;
	size_t doccap, outcap, doclen;
	int64_t now;
	struct kh_store_kc_card *snd, *rcp;
	struct kh_kc_envelope env;
	struct kh__kc_relayed *o;
};

/* The address a card has now, or its replacement's. */
static kh_err address_of(struct kh_store *st, uint64_t serial, struct kh_store_kc_card *c, char *to, size_t cap)
{
	kh_err r;

	for (int hop = 0; hop < 4 && serial; hop++) {
		if ((r = kh_store_kc_card_get(st, serial, c)) != KH_OK)
			return r;
		if (c->address[0]) {
			snprintf(to, cap, "%s", c->address);
			return KH_OK;
		}
		serial = c->replaced_by;
	}
	to[0] = '\0';
	return KH_OK;
}

/* Index i at or behind the chain: the last post sent again (the same bytes) is a duplicate. */
static kh_err again(struct kh_store *st, struct relay_tx *t, uint64_t last)
{
	struct kh_store_kc_relay x;
	kh_err r;

	if (t->h.index != last || !t->snd->has_post || !kh_ct_eq(t->hash, t->snd->last_post_hash, sizeof t->hash))
		return KH_ERR_REPLAY;
	t->o->duplicate = 1;
	if ((r = kh_store_kc_relay_find(st, t->snd->serial, last, &x)) != KH_OK)
		return r == KH_ERR_NOTFOUND ? KH_ERR_DB : r;
	if (!x.recipient) {
		t->o->refused = 1;
		return KH_OK;
	}
	t->o->recipient = x.recipient;
	t->o->j = x.recv_idx;
	return address_of(st, x.recipient, t->rcp, t->o->to, sizeof t->o->to);
}

/* Open the post under key i of the sender's send chain. */
static kh_err open_post(struct relay_tx *t, struct kh_keyseq *send)
{
	struct kh_kc_header h;
	uint8_t key[32];
	kh_err r;

	if ((r = kh__kc_chain_open(t->kc, t->snd->serial, KH_KEYSEQ_SEND, t->snd->send_pos, t->snd->send_state, send)) !=
	    KH_OK) {
		kh_log_error("keycenter.state", "serial=%llu msg=\"a chain state does not open under this center's key\"",
			     (unsigned long long)t->snd->serial);
		return KH_ERR_STATE_AUTH;
	}
	if ((r = kh_keyseq_key(send, t->h.index, t->window, key)) != KH_OK)
		return r;
	r = kh_kc_msg_open(key, t->msg, t->n, &h, &t->env, t->doc, t->doccap, &t->doclen);
	kh_wipe(key, sizeof key);
	return r;
}

/* Step 4: the sender's chain past i, and the hash of the post that spent it. */
static kh_err spend(struct kh_store *st, struct relay_tx *t, struct kh_keyseq *send)
{
	uint8_t sealed[KH_STORE_KC_SEALED_LEN];
	kh_err r;

	if ((r = kh_keyseq_advance(send, t->h.index + 1, t->window)) != KH_OK ||
	    (r = kh__kc_chain_seal(t->kc, send, sealed)) != KH_OK)
		return r;
	return kh_store_kc_send_set(st, t->snd->serial, send->pos, sealed, t->hash);
}

/* Step 6: the delivery under the recipient's next receive key, queued with that key sealed. */
static kh_err deliver(struct kh_store *st, struct relay_tx *t)
{
	struct kh_store_kc_card *c = t->rcp;
	struct kh_kc_header dh;
	struct kh_store_kc_mail m;
	struct kh_store_kc_relay x;
	struct kh_keyseq recv;
	uint8_t key[32], sealed[KH_STORE_KC_SEALED_LEN];
	size_t outlen = 0;
	kh_err r;

	memset(&m, 0, sizeof m);
	if ((r = kh__kc_chain_open(t->kc, c->serial, KH_KEYSEQ_RECV, c->recv_pos, c->recv_state, &recv)) != KH_OK)
		return KH_ERR_STATE_AUTH;
	dh = (struct kh_kc_header){.dir = KH_KC_DELIVERY, .serial = c->serial, .index = recv.pos};
	m.recipient = c->serial;
	m.idx = recv.pos;
	m.sender = t->snd->serial;
	m.sender_address = t->snd->address;
	m.created = t->now;
	m.has_key = 1;
	if ((r = kh_keyseq_key(&recv, recv.pos, 1, key)) == KH_OK &&
	    (r = kh_kc_msg_seal(key, &dh, t->snd->address, t->doc, t->doclen, t->out, t->outcap, &outlen)) == KH_OK &&
	    (r = kh__kc_mkey_seal(t->kc, c->serial, recv.pos, key, m.key_sealed)) == KH_OK &&
	    (r = kh_keyseq_advance(&recv, recv.pos + 1, 1)) == KH_OK &&
	    (r = kh__kc_chain_seal(t->kc, &recv, sealed)) == KH_OK &&
	    (r = kh_store_kc_recv_set(st, c->serial, recv.pos, sealed)) == KH_OK) {
		m.msg = t->out;
		m.msg_len = outlen;
		m.size = (int64_t)outlen;
		x = (struct kh_store_kc_relay){.sender = t->snd->serial, .send_idx = t->h.index, .recipient = c->serial,
					       .recv_idx = m.idx, .size = (int64_t)t->n, .time = t->now};
		if ((r = kh_store_kc_mail_add(st, &m)) == KH_OK && (r = kh_store_kc_relay_add(st, &x)) == KH_OK) {
			t->o->recipient = c->serial;
			t->o->j = m.idx;
			snprintf(t->o->to, sizeof t->o->to, "%s", c->address);
		}
	}
	kh_wipe(key, sizeof key);
	kh_wipe(&recv, sizeof recv);
	kh_wipe(&m, sizeof m);
	return r;
}

/* The recipient of the envelope: *active 1 when there is one that may receive (its row taken). */
static kh_err recipient(struct kh_store *st, struct relay_tx *t, int *active)
{
	int64_t waiting = 0;
	kh_err r = kh_store_kc_card_by_address(st, t->env.addr, t->rcp);

	*active = 0;
	if (r == KH_ERR_NOTFOUND)
		return KH_OK;
	if (r != KH_OK || t->rcp->state != KH_STORE_KC_ACTIVE)
		return r;
	/* its row, then read again as this transaction holds it (the sender's own, if it is the sender) */
	if ((t->rcp->serial != t->snd->serial && (r = kh_store_kc_card_lock(st, t->rcp->serial)) != KH_OK) ||
	    (r = kh_store_kc_card_get(st, t->rcp->serial, t->rcp)) != KH_OK ||
	    (r = kh_store_kc_mail_count(st, t->rcp->serial, &waiting)) != KH_OK)
		return r;
	if (waiting >= KH_KEYCENTER_MAILBOX_MAX)
		return KH_ERR_LIMIT;
	*active = 1;
	return KH_OK;
}

static kh_err relay_tx(struct kh_store *st, void *arg)
{
	struct relay_tx *t = arg;
	struct kh_keyseq send;
	struct kh_store_kc_relay x;
	uint64_t last;
	int active = 0;
	kh_err r;

	memset(t->o, 0, sizeof *t->o);
	t->o->serial = t->h.serial;
	t->o->index = t->h.index;
	memset(&send, 0, sizeof send);
	if ((r = kh_store_kc_card_lock(st, t->h.serial)) != KH_OK ||
	    (r = kh_store_kc_card_get(st, t->h.serial, t->snd)) != KH_OK)
		return r;
	if (t->snd->state != KH_STORE_KC_ACTIVE)
		return t->snd->state == KH_STORE_KC_BLOCKED ? KH_ERR_BLOCKED : KH_ERR_NOT_ACTIVE;
	last = t->snd->send_pos - 1;
	if (t->h.index <= last)
		return again(st, t, last);
	if (t->h.index - last > t->window)
		return KH_ERR_KEY_AHEAD;
	if ((r = open_post(t, &send)) != KH_OK || (r = recipient(st, t, &active)) != KH_OK ||
	    (r = spend(st, t, &send)) != KH_OK)
		goto out;
	if (active) {
		r = deliver(st, t);
		goto out;
	}
	/* no one to give it to: the index is spent all the same, and logged so */
	x = (struct kh_store_kc_relay){.sender = t->snd->serial, .send_idx = t->h.index, .size = (int64_t)t->n,
				       .time = t->now};
	if ((r = kh_store_kc_relay_add(st, &x)) == KH_OK)
		t->o->refused = 1;
out:
	kh_wipe(&send, sizeof send);
	if (t->doc)
		kh_wipe(t->doc, t->doccap);
	return r;
}

/* The buffers of one relay: the document (the post holds it whole) and the delivery. */
static kh_err buffers(struct relay_tx *t, uint64_t max_document)
{
	t->doccap = t->n < max_document ? t->n : (size_t)max_document;
	t->outcap = (size_t)kh_kc_msg_size(KH_KC_ADDR_MAX, t->doccap);
	if (!(t->doc = malloc(t->doccap ? t->doccap : 1)) || !(t->out = malloc(t->outcap)) ||
	    !(t->snd = calloc(1, sizeof *t->snd)) || !(t->rcp = calloc(1, sizeof *t->rcp)))
		return KH_ERR_NOMEM;
	return KH_OK;
}

kh_err kh__kc_relay(struct kh_keycenter_service *s, const uint8_t *msg, size_t n, struct kh__kc_relayed *out)
{
	struct relay_tx t;
	kh_err r;

	memset(&t, 0, sizeof t);
	t.kc = s->kc;
	t.window = s->window;
	t.msg = msg;
	t.n = n;
	t.now = kh__kc_now(s);
	t.o = out;
	if (!msg || n > kh_keycenter_post_max(s->max_document))
		return !msg ? KH_ERR_TRUNCATED : KH_ERR_TOO_LARGE;
	if ((r = kh_kc_header_parse(msg, n, &t.h)) != KH_OK)
		return r;
	if (t.h.dir != KH_KC_POST)
		return KH_ERR_FORMAT;
	if ((r = kh_sha256(msg, n, t.hash)) != KH_OK || (r = buffers(&t, s->max_document)) != KH_OK ||
	    (r = kh__kc_write(s, relay_tx, &t)) != KH_OK)
		goto out;
	if (!out->duplicate)
		kh_log_info("keycenter.relay", "sender=%llu index=%llu recipient=%llu recv_index=%llu size=%zu",
			    (unsigned long long)t.h.serial, (unsigned long long)t.h.index,
			    (unsigned long long)out->recipient, (unsigned long long)out->j, n);
out:
	if (t.doc)
		kh_wipe(t.doc, t.doccap);
	free(t.doc);
	if (t.out)
		kh_wipe(t.out, t.outcap);
	free(t.out);
	if (t.snd)
		kh_wipe(t.snd, sizeof *t.snd);
	if (t.rcp)
		kh_wipe(t.rcp, sizeof *t.rcp);
	free(t.snd);
	free(t.rcp);
	return r;
}
