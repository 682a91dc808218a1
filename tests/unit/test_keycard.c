/*
 * The key card (src/module/applet_kc.c) and the relay's records (src/base/keycard.c). The test
 * plays the key center itself: it opens the card's sealed seed with the center's enrolment key,
 * builds the same chains, and checks that every key the card gives is the center's, that nothing
 * behind a chain's position is given again, and that a delivery the center did not seal moves
 * nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/hpke.h"
#include "keyhole/identity.h"
#include "keyhole/keycard.h"
#include "keyhole/keycardhost.h"
#include "keyhole/keyseq.h"
#include "keyhole/module.h"
#include "testutil.h"
#include "world.h"

struct kw {
	struct world *w;
	struct mod kc, kc2, buyer;
	struct kh_identity center, other; /* a key center, and a second one of the same operator */
	uint8_t enrolkey[KH_KC_ENROLKEY_LEN], xsk[32], xpk[32];
	struct kh_keyseq send, recv; /* the center's copy of kc's chains */
};

static void center_id(struct kw *x, const char *name, struct kh_identity *id)
{
	char *dir = path_in(x->w->dir, name);
	uint32_t serial;

	assert_int_equal(kh_identity_new(x->w->auth, dir, KH_ROLE_KEYCENTER, &serial), KH_OK);
	assert_int_equal(kh_identity_load(dir, KH_ROLE_KEYCENTER, id), KH_OK);
	free(dir);
}

/* Enrol card m with the center x->center; the center's side builds its chains from the seed. */
static void enrol(struct kw *x, struct mod *m, struct kh_keyseq *send, struct kh_keyseq *recv)
{
	uint8_t sealed[KH_KC_SEALED_SEED_LEN], seed[32], info[KH_KC_ENROL_INFO_LEN];
	uint64_t serial = 0;

	assert_int_equal(kh_keycard_enrol(&m->t, x->center.cert, x->center.cert_len, x->enrolkey, &serial, sealed),
			 KH_OK);
	assert_int_equal(serial, m->ua);
	kh_kc_enrol_info(x->center.serial, serial, info);
	assert_int_equal(kh_hpke_open_base(x->xsk, sealed, info, sizeof info, NULL, 0, sealed + 32,
					   KH_KEYSEQ_LEN + KH_TAG_LEN, seed),
			 KH_OK);
	assert_int_equal(kh_keyseq_init(seed, serial, KH_KEYSEQ_SEND, send), KH_OK);
	assert_int_equal(kh_keyseq_init(seed, serial, KH_KEYSEQ_RECV, recv), KH_OK);
	kh_wipe(seed, sizeof seed);
}

static int setup(void **state)
{
	struct kw *x = calloc(1, sizeof *x);
	assert_non_null(x);
	world_setup((void **)&x->w);
	make_mod(x->w->auth, KH_ROLE_KEYCARD, &x->kc);
	make_mod(x->w->auth, KH_ROLE_KEYCARD, &x->kc2);
	make_mod(x->w->auth, KH_ROLE_BUYER, &x->buyer);
	center_id(x, "kc1", &x->center);
	center_id(x, "kc2", &x->other);
	assert_int_equal(kh_kc_enrol_keypair(x->center.sk, x->xsk, x->xpk), KH_OK);
	assert_int_equal(kh_kc_enrolkey_sign(x->center.sk, x->center.serial, x->xpk, x->enrolkey), KH_OK);
	enrol(x, &x->kc, &x->send, &x->recv);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct kw *x = *state;
	kh_softmod_free(x->kc.sm);
	kh_softmod_free(x->kc2.sm);
	kh_softmod_free(x->buyer.sm);
	kh_wipe(&x->center, sizeof x->center);
	kh_wipe(&x->other, sizeof x->other);
	world_teardown((void **)&x->w);
	free(x);
	return 0;
}

static struct kh_keycard_status status_of(struct mod *m)
{
	struct kh_keycard_status st;
	assert_int_equal(kh_keycard_status(&m->t, &st), KH_OK);
	return st;
}

/* A delivery to card `serial` at index j, sealed under key (len bytes of document). */
static size_t delivery(const uint8_t key[32], uint64_t serial, uint64_t j, const char *from, const uint8_t *doc,
		       size_t len, uint8_t *out, size_t cap)
{
	struct kh_kc_header h = {KH_KC_DELIVERY, serial, j};
	size_t n = 0;
	assert_int_equal(kh_kc_msg_seal(key, &h, from, doc, len, out, cap, &n), KH_OK);
	assert_int_equal(n, kh_kc_msg_size(strlen(from), len));
	return n;
}

/* The header and chunk 0 of a message, as the card is given them. */
static size_t chunk0_len(const uint8_t *msg, size_t n)
{
	size_t ctlen;
	int last;
	assert_int_equal(kh_kc_chunk_frame(msg + KH_KC_HEADER_LEN, n - KH_KC_HEADER_LEN, &ctlen, &last), KH_OK);
	return KH_KC_CHUNK_HDR_LEN + ctlen;
}

static kh_err card_open(struct mod *m, const uint8_t *msg, size_t n, uint64_t *j, uint8_t key[32])
{
	return kh_keycard_open(&m->t, msg, msg + KH_KC_HEADER_LEN, chunk0_len(msg, n), j, key);
}

/* ---- the records ---- */

static void test_message_roundtrip(void **state)
{
	static const size_t sizes[] = {0, 1, KH_KC_CHUNK - 1, KH_KC_CHUNK, KH_KC_CHUNK + 1, 2 * KH_KC_CHUNK + 5};
	size_t cap = kh_kc_msg_size(KH_KC_ADDR_MAX, 3 * KH_KC_CHUNK);
	uint8_t *doc = malloc(3 * KH_KC_CHUNK), *msg = malloc(cap), *out = malloc(3 * KH_KC_CHUNK), key[32], k2[32];
	struct kh_kc_header h = {KH_KC_POST, 42, 7}, g;
	struct kh_kc_envelope e;
	(void)state;

	assert_non_null(doc);
	assert_non_null(msg);
	assert_non_null(out);
	assert_int_equal(kh_random(doc, 3 * KH_KC_CHUNK), KH_OK);
	assert_int_equal(kh_random(key, sizeof key), KH_OK);
	memcpy(k2, key, sizeof k2);
	k2[31] ^= 1;
	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
		size_t n = 0, dl = 0, len = sizes[s];
		assert_int_equal(kh_kc_msg_seal(key, &h, "bob@center", doc, len, msg, cap, &n), KH_OK);
		assert_int_equal(n, kh_kc_msg_size(10, len));
		assert_int_equal(kh_kc_msg_open(key, msg, n, &g, &e, out, 3 * KH_KC_CHUNK, &dl), KH_OK);
		assert_int_equal(dl, len);
		assert_memory_equal(out, doc, len);
		assert_string_equal(e.addr, "bob@center");
		assert_true(g.dir == KH_KC_POST && g.serial == 42 && g.index == 7);
		/* the wrong key, any byte flipped, any cut, one byte more: refused */
		assert_int_equal(kh_kc_msg_open(k2, msg, n, &g, &e, out, 3 * KH_KC_CHUNK, &dl), KH_ERR_AUTH);
		for (size_t at = 0; at < n; at += (n > 4096 ? 997 : 1)) {
			msg[at] ^= 0x20;
			assert_int_not_equal(kh_kc_msg_open(key, msg, n, &g, &e, out, 3 * KH_KC_CHUNK, &dl), KH_OK);
			msg[at] ^= 0x20;
		}
		for (size_t cut = 0; cut < n; cut += (n > 4096 ? 1009 : 1))
			assert_int_not_equal(kh_kc_msg_open(key, msg, cut, &g, &e, out, 3 * KH_KC_CHUNK, &dl), KH_OK);
		msg[n] = 0;
		assert_int_equal(kh_kc_msg_open(key, msg, n + 1, &g, &e, out, 3 * KH_KC_CHUNK, &dl), KH_ERR_TRAILING);
	}
	/* the last chunk dropped: the one before it is not flagged last */
	{
		size_t n = 0, dl = 0, len = KH_KC_CHUNK + 1;
		assert_int_equal(kh_kc_msg_seal(key, &h, "bob@center", doc, len, msg, cap, &n), KH_OK);
		assert_int_not_equal(kh_kc_msg_open(key, msg, n - (KH_KC_CHUNK_HDR_LEN + 1 + KH_TAG_LEN), &g, &e, out,
						    3 * KH_KC_CHUNK, &dl),
				     KH_OK);
	}
	free(doc);
	free(msg);
	free(out);
}

/* A refused header or message gives none of its outputs; what a refused message opened is wiped. */
static void test_refused_untouched(void **state)
{
	struct kh_kc_header h = {KH_KC_DELIVERY, 42, 0}, g, hpat;
	struct kh_kc_envelope e, epat;
	uint8_t key[32], hdr[KH_KC_HEADER_LEN], msg[256], out[64], opat[64];
	size_t n = 0, dl = 77;
	(void)state;

	memset(&hpat, 0xA5, sizeof hpat);
	memset(&epat, 0xA5, sizeof epat);
	memset(opat, 0xA5, sizeof opat);
	/* index 0 */
	kh_kc_header_write(&h, hdr);
	memcpy(&g, &hpat, sizeof g);
	assert_int_equal(kh_kc_header_parse(hdr, sizeof hdr, &g), KH_ERR_FORMAT);
	assert_memory_equal(&g, &hpat, sizeof g);
	/* a message whose header and envelope read well, and whose document chunk does not open */
	h.index = 7;
	assert_int_equal(kh_random(key, sizeof key), KH_OK);
	assert_int_equal(kh_kc_msg_seal(key, &h, "bob@center", (const uint8_t *)"doc", 3, msg, sizeof msg, &n), KH_OK);
	msg[n - 1] ^= 1;
	memcpy(&g, &hpat, sizeof g);
	memcpy(&e, &epat, sizeof e);
	memcpy(out, opat, sizeof out);
	assert_int_equal(kh_kc_msg_open(key, msg, n, &g, &e, out, sizeof out, &dl), KH_ERR_AUTH);
	assert_memory_equal(&g, &hpat, sizeof g);
	assert_memory_equal(&e, &epat, sizeof e);
	assert_int_equal(dl, 77);
	assert_true(out[0] == 0 && out[1] == 0 && out[2] == 0);
	assert_memory_equal(out + 3, opat + 3, sizeof out - 3);
	/* a trailing byte: the same */
	msg[n - 1] ^= 1;
	msg[n] = 0;
	assert_int_equal(kh_kc_msg_open(key, msg, n + 1, &g, &e, out, sizeof out, &dl), KH_ERR_TRAILING);
	assert_memory_equal(&g, &hpat, sizeof g);
	assert_memory_equal(&e, &epat, sizeof e);
	assert_int_equal(dl, 77);
	/* whole: all given */
	assert_int_equal(kh_kc_msg_open(key, msg, n, &g, &e, out, sizeof out, &dl), KH_OK);
	assert_true(g.index == 7 && g.serial == 42 && dl == 3 && memcmp(out, "doc", 3) == 0);
	assert_string_equal(e.addr, "bob@center");
}

static void test_addresses(void **state)
{
	static const char *const good[] = {"a@b", "alice@center", "x.y+z_1-2@kc.example"};
	static const char *const bad[] = {"", "@b", "a@", "a@@b", "ab", "Alice@center", "a b@c", "a@b\n"};
	uint8_t env[KH_KC_ENVELOPE_MAX];
	size_t n;
	char longest[KH_KC_ADDR_MAX + 2];
	(void)state;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_int_equal(kh_kc_envelope_write(good[i], 1, env, &n), KH_OK);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(kh_kc_envelope_write(bad[i], 1, env, &n), KH_ERR_FORMAT);
	memset(longest, 'a', sizeof longest);
	longest[1] = '@';
	longest[KH_KC_ADDR_MAX] = '\0';
	assert_int_equal(kh_kc_envelope_write(longest, 1, env, &n), KH_OK);
	longest[KH_KC_ADDR_MAX] = 'a';
	longest[KH_KC_ADDR_MAX + 1] = '\0';
	assert_int_equal(kh_kc_envelope_write(longest, 1, env, &n), KH_ERR_FORMAT);
}

static void test_signed_records(void **state)
{
	struct kw *x = *state;
	uint8_t ack[KH_KC_ACK_LEN + 1], ek[KH_KC_ENROLKEY_LEN], xpk[32];
	uint64_t serial, index;
	uint32_t center;

	assert_int_equal(kh_kc_ack_sign(x->center.sk, x->center.serial, 9, 3, ack), KH_OK);
	assert_int_equal(kh_kc_ack_verify(x->center.pk, ack, KH_KC_ACK_LEN, &center, &serial, &index), KH_OK);
	/* with the public key given (what the center does): the very same bytes (Ed25519 is deterministic) */
	{
		uint8_t ack2[KH_KC_ACK_LEN], wrong[32];
		assert_int_equal(kh_kc_ack_sign_kp(x->center.sk, x->center.pk, x->center.serial, 9, 3, ack2), KH_OK);
		assert_memory_equal(ack, ack2, KH_KC_ACK_LEN);
		/* a public key that is not sk's makes a signature that does not verify */
		memcpy(wrong, x->other.pk, 32);
		assert_int_equal(kh_kc_ack_sign_kp(x->center.sk, wrong, x->center.serial, 9, 3, ack2), KH_OK);
		assert_int_equal(kh_kc_ack_verify(x->center.pk, ack2, KH_KC_ACK_LEN, &center, &serial, &index),
				 KH_ERR_SIGNATURE);
	}
	assert_true(center == x->center.serial && serial == 9 && index == 3);
	assert_int_equal(kh_kc_ack_verify(x->other.pk, ack, KH_KC_ACK_LEN, &center, &serial, &index), KH_ERR_SIGNATURE);
	assert_int_equal(kh_kc_ack_verify(x->center.pk, ack, KH_KC_ACK_LEN - 1, &center, &serial, &index),
			 KH_ERR_TRUNCATED);
	assert_int_equal(kh_kc_ack_verify(x->center.pk, ack, KH_KC_ACK_LEN + 1, &center, &serial, &index),
			 KH_ERR_TRAILING);
	ack[20] ^= 1; /* the index */
	assert_int_equal(kh_kc_ack_verify(x->center.pk, ack, KH_KC_ACK_LEN, &center, &serial, &index), KH_ERR_SIGNATURE);
	ack[4] = 2;
	assert_int_equal(kh_kc_ack_verify(x->center.pk, ack, KH_KC_ACK_LEN, &center, &serial, &index), KH_ERR_VERSION);

	assert_int_equal(kh_kc_enrolkey_verify(x->center.pk, x->enrolkey, KH_KC_ENROLKEY_LEN, &center, xpk), KH_OK);
	assert_memory_equal(xpk, x->xpk, 32);
	memcpy(ek, x->enrolkey, sizeof ek);
	ek[12] ^= 1; /* the key */
	assert_int_equal(kh_kc_enrolkey_verify(x->center.pk, ek, sizeof ek, &center, xpk), KH_ERR_SIGNATURE);
}

/* ---- the card ---- */

static void test_enrol(void **state)
{
	struct kw *x = *state;
	uint8_t sealed[KH_KC_SEALED_SEED_LEN], sealed2[KH_KC_SEALED_SEED_LEN], ek[KH_KC_ENROLKEY_LEN], xsk[32], xpk[32];
	uint64_t serial;
	struct kh_keycard_status st;

	/* a blank key card is not enrolled, and says so */
	st = status_of(&x->kc2);
	assert_int_equal(st.center, 0);
	assert_int_equal(st.serial, x->kc2.ua);
	uint64_t i;
	uint8_t key[32];
	assert_int_equal(kh_keycard_send(&x->kc2.t, &serial, &i, key), KH_ERR_NOT_ENROLLED);
	/* a certificate of another role, or an enrolment key another center signed: refused */
	assert_int_equal(kh_keycard_enrol(&x->kc2.t, x->center.cert, x->center.cert_len - 1, x->enrolkey, &serial, sealed),
			 KH_ERR_CERT);
	assert_int_equal(kh_keycard_enrol(&x->kc2.t, x->other.cert, x->other.cert_len, x->enrolkey, &serial, sealed),
			 KH_ERR_SIGNATURE);
	assert_int_equal(status_of(&x->kc2).center, 0);
	/* a buyer device has no such instruction */
	assert_int_equal(kh_keycard_enrol(&x->buyer.t, x->center.cert, x->center.cert_len, x->enrolkey, &serial, sealed),
			 KH_ERR_APDU_INS);

	/* enrolled once; the same center asking again gets the same sealed seed */
	assert_int_equal(kh_keycard_enrol(&x->kc2.t, x->center.cert, x->center.cert_len, x->enrolkey, &serial, sealed),
			 KH_OK);
	assert_int_equal(kh_keycard_enrol(&x->kc2.t, x->center.cert, x->center.cert_len, x->enrolkey, &serial, sealed2),
			 KH_OK);
	assert_memory_equal(sealed, sealed2, sizeof sealed);
	st = status_of(&x->kc2);
	assert_true(st.center == x->center.serial && st.send == 1 && st.acked == 0 && st.recv == 1);
	/* another center (of the same operator, its own genuine key) cannot take the card over */
	assert_int_equal(kh_kc_enrol_keypair(x->other.sk, xsk, xpk), KH_OK);
	assert_int_equal(kh_kc_enrolkey_sign(x->other.sk, x->other.serial, xpk, ek), KH_OK);
	assert_int_equal(kh_keycard_enrol(&x->kc2.t, x->other.cert, x->other.cert_len, ek, &serial, sealed2),
			 KH_ERR_ENROLLED);
	kh_wipe(xsk, sizeof xsk);
}

static void test_send_keys(void **state)
{
	struct kw *x = *state;
	uint8_t key[32], want[32], ack[KH_KC_ACK_LEN];
	uint64_t serial, i;

	for (uint64_t k = 1; k <= KH_KEYSEQ_WINDOW; k++) {
		assert_int_equal(kh_keycard_send(&x->kc.t, &serial, &i, key), KH_OK);
		assert_int_equal(serial, x->kc.ua);
		assert_int_equal(i, k);
		/* the center's key for the post i: the same */
		assert_int_equal(kh_keyseq_key(&x->send, i, KH_KEYSEQ_WINDOW, want), KH_OK);
		assert_memory_equal(key, want, 32);
	}
	/* W keys out and none acknowledged: the next would be beyond the center's window */
	assert_int_equal(kh_keycard_send(&x->kc.t, &serial, &i, key), KH_ERR_KEY_AHEAD);
	assert_int_equal(status_of(&x->kc).send, KH_KEYSEQ_WINDOW + 1);

	/* acks: another center's, another card's, a post never keyed: refused, nothing moves */
	assert_int_equal(kh_kc_ack_sign(x->other.sk, x->center.serial, x->kc.ua, 10, ack), KH_OK);
	assert_int_equal(kh_keycard_ack(&x->kc.t, ack, sizeof ack), KH_ERR_SIGNATURE);
	assert_int_equal(kh_kc_ack_sign(x->center.sk, x->center.serial, x->kc2.ua, 10, ack), KH_OK);
	assert_int_equal(kh_keycard_ack(&x->kc.t, ack, sizeof ack), KH_ERR_NOT_ADDRESSED);
	assert_int_equal(kh_kc_ack_sign(x->center.sk, x->center.serial, x->kc.ua, KH_KEYSEQ_WINDOW + 1, ack), KH_OK);
	assert_int_equal(kh_keycard_ack(&x->kc.t, ack, sizeof ack), KH_ERR_KEY_AHEAD);
	assert_int_equal(status_of(&x->kc).acked, 0);
	/* the center's ack of post 10: ten more keys */
	assert_int_equal(kh_kc_ack_sign(x->center.sk, x->center.serial, x->kc.ua, 10, ack), KH_OK);
	assert_int_equal(kh_keycard_ack(&x->kc.t, ack, sizeof ack), KH_OK);
	assert_int_equal(status_of(&x->kc).acked, 10);
	/* an older ack moves nothing back */
	assert_int_equal(kh_kc_ack_sign(x->center.sk, x->center.serial, x->kc.ua, 4, ack), KH_OK);
	assert_int_equal(kh_keycard_ack(&x->kc.t, ack, sizeof ack), KH_OK);
	assert_int_equal(status_of(&x->kc).acked, 10);
	assert_int_equal(kh_keyseq_advance(&x->send, KH_KEYSEQ_WINDOW + 1, KH_KEYSEQ_WINDOW), KH_OK);
	for (uint64_t k = 0; k < 10; k++) {
		assert_int_equal(kh_keycard_send(&x->kc.t, &serial, &i, key), KH_OK);
		assert_int_equal(kh_keyseq_key(&x->send, i, KH_KEYSEQ_WINDOW, want), KH_OK);
		assert_memory_equal(key, want, 32);
	}
	assert_int_equal(kh_keycard_send(&x->kc.t, &serial, &i, key), KH_ERR_KEY_AHEAD);
}

static void test_open(void **state)
{
	struct kw *x = *state;
	static const uint8_t doc[] = "the document";
	uint8_t kj[32], key[32], m1[512], m3[512], m4[512], other[512];
	size_t n1, n3, n4, no;
	uint64_t j;

	/* deliveries 1, 3 and 4 under the card's receive keys, and one under a key of nothing */
	assert_int_equal(kh_keyseq_key(&x->recv, 1, KH_KEYSEQ_WINDOW, kj), KH_OK);
	n1 = delivery(kj, x->kc.ua, 1, "alice@center", doc, sizeof doc, m1, sizeof m1);
	assert_int_equal(kh_keyseq_key(&x->recv, 3, KH_KEYSEQ_WINDOW, kj), KH_OK);
	n3 = delivery(kj, x->kc.ua, 3, "alice@center", doc, sizeof doc, m3, sizeof m3);
	assert_int_equal(kh_keyseq_key(&x->recv, 4, KH_KEYSEQ_WINDOW, kj), KH_OK);
	n4 = delivery(kj, x->kc.ua, 4, "alice@center", doc, sizeof doc, m4, sizeof m4);
	assert_int_equal(kh_random(key, sizeof key), KH_OK);
	no = delivery(key, x->kc.ua, 2, "mallory@center", doc, sizeof doc, other, sizeof other);

	/* not sealed by the center: refused, the chain does not move */
	assert_int_equal(card_open(&x->kc, other, no, &j, key), KH_ERR_AUTH);
	assert_int_equal(status_of(&x->kc).recv, 1);
	/* a flipped chunk 0: the same */
	m4[KH_KC_HEADER_LEN + 9] ^= 1;
	assert_int_equal(card_open(&x->kc, m4, n4, &j, key), KH_ERR_AUTH);
	m4[KH_KC_HEADER_LEN + 9] ^= 1;
	assert_int_equal(status_of(&x->kc).recv, 1);
	/* another card's delivery: not this card's to open */
	{
		struct kh_keyseq s2, r2;
		enrol(x, &x->kc2, &s2, &r2);
		assert_int_equal(card_open(&x->kc2, m1, n1, &j, key), KH_ERR_NOT_ADDRESSED);
		kh_wipe(&s2, sizeof s2);
		kh_wipe(&r2, sizeof r2);
	}

	/* 1 opens: its key, and the chain past it */
	assert_int_equal(card_open(&x->kc, m1, n1, &j, key), KH_OK);
	assert_int_equal(j, 1);
	{
		struct kh_kc_header h;
		struct kh_kc_envelope e;
		uint8_t out[64];
		size_t dl;
		assert_int_equal(kh_kc_msg_open(key, m1, n1, &h, &e, out, sizeof out, &dl), KH_OK);
		assert_memory_equal(out, doc, sizeof doc);
		assert_string_equal(e.addr, "alice@center");
	}
	assert_int_equal(status_of(&x->kc).recv, 2);
	/* asked again (a host that lost the key): the same bytes get it again, other bytes do not */
	assert_int_equal(card_open(&x->kc, m1, n1, &j, kj), KH_OK);
	assert_memory_equal(kj, key, 32);
	assert_int_equal(card_open(&x->kc, other, no, &j, key), KH_ERR_AUTH); /* index 2, not ours */
	/* 3 opens (2 is skipped, and gone); then 1 and 2 are behind */
	assert_int_equal(card_open(&x->kc, m3, n3, &j, key), KH_OK);
	assert_int_equal(j, 3);
	assert_int_equal(status_of(&x->kc).recv, 4);
	assert_int_equal(card_open(&x->kc, m1, n1, &j, key), KH_ERR_KEY_BEHIND);
	assert_int_equal(card_open(&x->kc, other, no, &j, key), KH_ERR_KEY_BEHIND);
	assert_int_equal(card_open(&x->kc, m4, n4, &j, key), KH_OK);
	assert_int_equal(card_open(&x->kc, m3, n3, &j, key), KH_ERR_KEY_BEHIND);

	/* beyond the window: refused before any key is made */
	assert_int_equal(kh_keyseq_key(&x->recv, 5 + KH_KEYSEQ_WINDOW, KH_KEYSEQ_WINDOW_MAX, kj), KH_OK);
	n1 = delivery(kj, x->kc.ua, 5 + KH_KEYSEQ_WINDOW, "alice@center", doc, sizeof doc, m1, sizeof m1);
	assert_int_equal(card_open(&x->kc, m1, n1, &j, key), KH_ERR_KEY_AHEAD);
	assert_int_equal(status_of(&x->kc).recv, 5);
}

static void test_hello(void **state)
{
	struct kw *x = *state;
	uint8_t nonce[KH_KC_NONCE_LEN], sig[KH_ED25519_SIG_LEN], msg[KH_KC_HELLO_MSG_LEN], der[KH_APDU_MAX_RESP];
	struct kh_cert_info ci;
	size_t n = 0;
	uint16_t sw;
	uint64_t serial;

	assert_int_equal(kh_random(nonce, sizeof nonce), KH_OK);
	assert_int_equal(kh_keycard_hello(&x->kc.t, nonce, &serial, sig), KH_OK);
	assert_int_equal(kh_host_apdu(&x->kc.t, KH_INS_GET_CERT, 1, NULL, 0, der, sizeof der, &n, &sw), KH_OK);
	assert_int_equal(kh_cert_check(der, n, x->w->root_pk, KH_ROLE_KEYCARD, KH_CERT_KEY_ED25519, 0, &ci), KH_OK);
	kh_kc_hello_msg(x->center.serial, serial, nonce, msg);
	assert_int_equal(kh_ed25519_verify(ci.pub, msg, sizeof msg, sig), KH_OK);
	kh_kc_hello_msg(x->other.serial, serial, nonce, msg); /* for another center: not this */
	assert_int_equal(kh_ed25519_verify(ci.pub, msg, sizeof msg, sig), KH_ERR_AUTH);
}

/* ---- the card's sealed state ---- */

/*
 * A key card run straight on the module runtime, its root key known here: the state it stores is
 * opened, changed and sealed again as docs/internals/module.md says ("KHMS" | version | counter |
 * nonce, AES-256-GCM under HKDF(root, "", "keyhole module state v1")).
 */
static const uint8_t raw_root[KH_ROOT_KEY_LEN] = "keycard test root key, 31 bytes";
#define RAW_HDR 25
static struct {
	uint8_t blob[KH_MODULE_BLOB_MAX];
	size_t len;
	uint64_t counter;
} raw_kept;

static kh_err raw_store(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	(void)ctx;
	assert_true(len <= sizeof raw_kept.blob);
	memcpy(raw_kept.blob, blob, len);
	raw_kept.len = len;
	raw_kept.counter = counter;
	return KH_OK;
}

static uint64_t raw_now(void *ctx)
{
	(void)ctx;
	return (uint64_t)time(NULL);
}

/* A blank module in memory of its own (*mem, for free). */
static struct kh_module *raw_module(void **mem)
{
	static const struct kh_module_env env = {raw_store, raw_now, NULL};
	size_t size = (kh_module_size() + 15) / 16 * 16;
	struct kh_module *m = NULL;

	*mem = aligned_alloc(16, size);
	assert_non_null(*mem);
	assert_int_equal(kh_module_init(*mem, size, raw_root, &env, &m), KH_OK);
	return m;
}

/* The plaintext of the state last stored (pt holds KH_MODULE_BLOB_MAX); its length. */
static size_t raw_open(uint8_t *pt, uint8_t key[static 32])
{
	static const char label[] = "keyhole module state v1";

	assert_int_equal(kh_hkdf(raw_root, sizeof raw_root, NULL, 0, (const uint8_t *)label, sizeof label - 1, key, 32),
			 KH_OK);
	assert_true(raw_kept.len >= RAW_HDR + KH_TAG_LEN);
	assert_int_equal(kh_aead_open(key, raw_kept.blob + 13, raw_kept.blob, RAW_HDR, raw_kept.blob + RAW_HDR,
				      raw_kept.len - RAW_HDR, pt),
			 KH_OK);
	return raw_kept.len - RAW_HDR - KH_TAG_LEN;
}

/*
 * The format lets a state hold its sections before the runtime's fields. A key card's state so
 * ordered loads, and the card gives the keys of its own serial: its section was read once with
 * the serial not yet known, and the chains made keys for serial 0 (none the center has).
 */
static void test_state_section_first(void **state)
{
	struct kw *x = *state;
	struct kh_issued *iss = calloc(1, sizeof *iss);
	uint8_t *pt = malloc(KH_MODULE_BLOB_MAX), *re = malloc(KH_MODULE_BLOB_MAX), *blob = malloc(KH_MODULE_BLOB_MAX);
	uint8_t key[32], want[32], skey[32];
	struct kh_keyseq send, recv;
	void *mem, *mem2;
	struct kh_module *m = raw_module(&mem), *m2 = raw_module(&mem2);
	struct mod card = {0};
	struct kh_rd rd;
	struct kh_tlv t;
	struct kh_wr w;
	uint64_t serial, i;
	size_t n;

	assert_true(iss && pt && re && blob);
	kh_transport_inproc(&card.t, m);
	assert_int_equal(kh_authority_personalise(x->w->auth, &card.t, KH_ROLE_KEYCARD, 0, iss), KH_OK);
	card.ua = iss->ua;
	enrol(x, &card, &send, &recv);
	/* the stored state with its sections first, sealed again at the next counter */
	n = raw_open(pt, skey);
	kh_wr_init(&w, re, KH_MODULE_BLOB_MAX);
	for (int sections = 1; sections >= 0; sections--) {
		kh_rd_init(&rd, pt, n);
		while (kh_tlv_next(&rd, &t) == 1)
			if ((t.tag == 0x80) == sections)
				assert_int_equal(kh_tlv_put(&w, t.tag, t.v, t.len), KH_OK);
	}
	assert_int_equal(w.len, n);
	memcpy(blob, raw_kept.blob, RAW_HDR);
	kh_put_be64(blob + 5, raw_kept.counter + 1);
	assert_int_equal(kh_aead_seal(skey, blob + 13, blob, RAW_HDR, re, n, blob + RAW_HDR), KH_OK);
	assert_int_equal(kh_module_load(m2, blob, RAW_HDR + n + KH_TAG_LEN, 0), KH_OK);
	/* the center's key for post 1 */
	kh_transport_inproc(&card.t, m2);
	assert_int_equal(kh_keycard_send(&card.t, &serial, &i, key), KH_OK);
	assert_true(serial == card.ua && i == 1);
	assert_int_equal(kh_keyseq_key(&send, 1, KH_KEYSEQ_WINDOW, want), KH_OK);
	assert_memory_equal(key, want, 32);
	kh_module_wipe(m);
	kh_module_wipe(m2);
	free(mem);
	free(mem2);
	kh_wipe(pt, KH_MODULE_BLOB_MAX);
	kh_wipe(re, KH_MODULE_BLOB_MAX);
	kh_wipe(skey, sizeof skey);
	kh_wipe(&send, sizeof send);
	kh_wipe(&recv, sizeof recv);
	free(pt);
	free(re);
	free(blob);
	free(iss);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_message_roundtrip),
		cmocka_unit_test(test_refused_untouched),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test_setup_teardown(test_signed_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enrol, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_section_first, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
