/*
 * An old module file still loads: the fixtures of tests/data/modules-v1/ (a card, a CAM and a
 * decoder module written by the build before the sealed state had sections; README.txt there
 * says how and what they hold) are copied to a temporary directory and opened the way
 * `keyhole card ...` opens a module (kh_softmod_open with its key file). Their public facts (GET
 * INFO, CAS STATUS) must be the recorded ones; the three must still pair (keys and certificates
 * survived); and a command that changes the card stores it again, in the current format, and it
 * loads again with every fact kept. Then the sealed state itself, opened with the card's root key:
 * the runtime's fields and the CAS applet's stay the same bytes, only framed in a section, and the
 * loader's rules for sections (docs/internals/module.md) hold on the production path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "keyhole/apdu.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/module.h"
#include "keyhole/softmodule.h"
#include "keyhole/transport.h"
#include "testutil.h"
#include "world.h"

/* Broadcast time of the fixtures' stream (README.txt). */
#define T 1796450775ull
#define CARD_UA 0x101u
#define CAM_UA 0x201u
#define DEC_UA 0x301u

static const char *const files[] = {
	"card.card", "card.key", "card.card.ctr", "cam.card", "cam.key",   "cam.card.ctr",
	"dec.card",  "dec.key",  "dec.card.ctr",  "master.key",
};

struct fx {
	char *dir;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	assert_non_null(f);
	f->dir = kh_test_tmpdir();
	assert_non_null(f->dir);
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char rel[128], *dst = path_in(f->dir, files[i]);
		uint8_t *d = NULL;
		size_t n = 0;
		snprintf(rel, sizeof rel, "tests/data/modules-v1/%s", files[i]);
		assert_int_equal(kh_file_read(kh_test_src(rel), KH_MODULE_BLOB_MAX, &d, &n), KH_OK);
		/* key files must be private to be read; a checkout does not keep the mode */
		assert_int_equal(kh_file_write_atomic(dst, d, n, 0600), KH_OK);
		kh_file_free(d, n);
		free(dst);
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kh_test_rmdir(f->dir);
	free(f);
	return 0;
}

static struct kh_softmod *open_mod(struct fx *f, const char *name, struct kh_transport *t)
{
	struct kh_softmod *sm = NULL;
	char *card = path_in(f->dir, name);
	assert_int_equal(kh_softmod_open(card, NULL, &sm, NULL), KH_OK);
	free(card);
	/* inside the certificates' validity and after the card's clock (T) */
	kh_softmod_set_time(sm, T + 60);
	kh_transport_inproc(t, kh_softmod_module(sm));
	return sm;
}

static uint64_t ctr_file(struct fx *f, const char *name)
{
	char *p = path_in(f->dir, name), buf[32] = {0};
	FILE *fp = fopen(p, "r");
	assert_non_null(fp);
	assert_non_null(fgets(buf, sizeof buf, fp));
	fclose(fp);
	free(p);
	return strtoull(buf, NULL, 10);
}

static void assert_info(struct kh_transport *t, enum kh_role role, uint32_t ua, uint64_t counter)
{
	struct kh_module_info i = info_of(t);
	assert_int_equal(i.role, role);
	assert_int_equal(i.ua, ua);
	assert_int_equal(i.lifecycle, 2); /* personalised */
	assert_int_equal(i.counter, counter);
}

static struct kh_cas_status status_of(struct kh_transport *card)
{
	struct kh_cas_status *st = calloc(1, sizeof *st), s;
	struct kh_host_cas c;
	assert_non_null(st);
	kh_host_cas_init(&c, NULL, NULL, card, 0);
	assert_int_equal(kh_host_cas_status(&c, st), KH_OK);
	s = *st;
	free(st);
	return s;
}

/* Every recorded fact of the card but those an EMM adding credit moves (credit, reload, seq,
 * EMMs applied). */
static void assert_card_keeps(const struct kh_cas_status *s)
{
	assert_int_equal(s->has_group, 1);
	assert_int_equal(s->group, 5);
	assert_int_equal(s->seq[KH_EMM_GROUP], 0);
	assert_int_equal(s->seq[KH_EMM_ALL], 0);
	assert_int_equal(s->export_ok, 1);
	assert_int_equal(s->npurchases, 1);
	assert_int_equal(s->purchases[0].event, 42);
	assert_int_equal(s->purchases[0].price, 30);
	assert_int_equal(s->purchases[0].time, T);
	assert_int_equal(s->nrights, 2);
	assert_int_equal(s->rights[0].product, 7);
	assert_int_equal(s->rights[0].start, T - 3600);
	assert_int_equal(s->rights[0].end, T + 31536000);
	assert_int_equal(s->rights[1].product, 9);
	assert_int_equal(s->rights[1].start, T + 86400);
	assert_int_equal(s->rights[1].end, T + 172800);
	assert_int_equal(s->nkeys, 3);
	assert_int_equal(s->keys[0].id, 1);
	assert_int_equal(s->keys[0].version, 1);
	assert_int_equal(s->keys[1].id, 1);
	assert_int_equal(s->keys[1].version, 2);
	assert_int_equal(s->keys[2].id, 3);
	assert_int_equal(s->keys[2].version, 1);
	assert_int_equal(s->nsigners, 2);
	assert_int_equal(s->signers[0].role, KH_ROLE_ECM_SIGNER);
	assert_int_equal(s->signers[0].serial, 0xFF000000u);
	assert_int_equal(s->signers[1].role, KH_ROLE_EMM_SIGNER);
	assert_int_equal(s->signers[1].serial, 0xFF000001u);
	assert_int_equal(s->n_ecm, 3);
	assert_int_equal(s->n_cw, 2);
	assert_int_equal(s->n_refused, 1);
}

static void test_card_facts(void **state)
{
	struct kh_transport t;
	struct kh_softmod *sm = open_mod(*state, "card.card", &t);
	struct kh_cas_status s;

	assert_info(&t, KH_ROLE_CARD, CARD_UA, 11);
	s = status_of(&t);
	assert_int_equal(s.credit, 495);
	assert_int_equal(s.last_reload, 2);
	assert_int_equal(s.seq[KH_EMM_UNIQUE], 4);
	assert_int_equal(s.n_emm, 4);
	assert_card_keeps(&s);
	kh_softmod_free(sm);
}

/* The certificates a module answers GET CERT with: its own, for its role and UA. */
static void assert_certs(struct kh_transport *t, enum kh_role role, uint32_t ua)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_cert_info ci;
	size_t dlen;
	uint16_t sw;

	for (uint8_t p1 = 0; p1 < 2; p1++) {
		assert_int_equal(kh_host_apdu(t, KH_INS_GET_CERT, p1, NULL, 0, resp, sizeof resp, &dlen, &sw), KH_OK);
		assert_int_equal(kh_cert_read(resp, dlen, &ci), KH_OK);
		assert_int_equal(ci.role, role);
		assert_int_equal(ci.ua, ua);
		assert_int_equal(ci.key, p1 == 0 ? KH_CERT_KEY_X25519 : KH_CERT_KEY_ED25519);
	}
}

static void test_cam_dec_facts(void **state)
{
	struct kh_transport cam, dec;
	struct kh_softmod *smc = open_mod(*state, "cam.card", &cam);
	struct kh_softmod *smd = open_mod(*state, "dec.card", &dec);

	assert_info(&cam, KH_ROLE_CAM, CAM_UA, 2);
	assert_info(&dec, KH_ROLE_DECODER, DEC_UA, 2);
	assert_certs(&cam, KH_ROLE_CAM, CAM_UA);
	assert_certs(&dec, KH_ROLE_DECODER, DEC_UA);
	/* a CAM has no pay-TV state to show */
	{
		uint8_t resp[KH_APDU_MAX_RESP];
		size_t dlen;
		uint16_t sw;
		assert_int_equal(kh_host_apdu(&cam, KH_INS_CAS_STATUS, 0, NULL, 0, resp, sizeof resp, &dlen, &sw),
				 KH_ERR_APDU_INS);
	}
	kh_softmod_free(smc);
	kh_softmod_free(smd);
}

/* Every key survived: the decoder module pairs with the CAM and proves its certificate, the CAM
 * pairs with the card through that channel and proves its own (checked against the root and
 * the revoked list the card holds), and the card answers inside it. */
static void test_pair(void **state)
{
	struct kh_transport card, cam, dec;
	struct kh_softmod *sk = open_mod(*state, "card.card", &card);
	struct kh_softmod *sc = open_mod(*state, "cam.card", &cam);
	struct kh_softmod *sd = open_mod(*state, "dec.card", &dec);
	struct kh_host_cas c;

	kh_host_cas_init(&c, &dec, &cam, &card, 0);
	assert_int_equal(kh_host_cas_connect(&c), KH_OK);
	assert_int_equal(c.card_ua, CARD_UA);
	assert_int_equal(c.cam_ua, CAM_UA);
	assert_int_equal(card_echo(&cam, &card), KH_OK);
	kh_host_cas_wipe(&c);
	kh_softmod_free(sk);
	kh_softmod_free(sc);
	kh_softmod_free(sd);
}

/* The card's EMM number seq under its Kp (derived from the fixtures' master key): credit 7 with
 * reload id reload. */
static size_t next_emm(struct fx *f, uint32_t seq, uint32_t reload, uint8_t *out, size_t cap)
{
	uint8_t master[32], kp[32], cmds[64];
	struct kh_emm_hdr h = {0, KH_EMM_UNIQUE, CARD_UA, seq, 0};
	char *p = path_in(f->dir, "master.key");
	uint8_t *hex = NULL;
	size_t n = 0, len = 0;
	struct kh_wr w;

	assert_int_equal(kh_keyfile_read(p, 256, &hex, &n), KH_OK);
	assert_int_equal(kh_hex_decode((const char *)hex, n, master, sizeof master), KH_OK);
	kh_file_free(hex, n);
	free(p);
	assert_int_equal(kh_cas_card_kp(master, CARD_UA, kp), KH_OK);
	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_add_credit(&w, 7, reload), KH_OK);
	assert_int_equal(kh_emm_seal(kp, &h, cmds, w.len, out, cap, &len), KH_OK);
	kh_wipe(master, sizeof master);
	kh_wipe(kp, sizeof kp);
	return len;
}

/* Give the card at t its EMM number seq: credit 7 with reload id reload; the card's answer. */
static kh_err give_emm(struct fx *f, struct kh_transport *t, uint32_t seq, uint32_t reload)
{
	uint8_t emm[KH_EMM_MAX];
	struct kh_host_cas c;
	size_t n = next_emm(f, seq, reload, emm, sizeof emm);

	kh_host_cas_init(&c, NULL, NULL, t, 0);
	return kh_host_cas_emm(&c, emm, n);
}

/* The card, after one EMM: credit 7 (reload 3, seq 5) stored in the current format. */
static void card_after_emm(struct fx *f)
{
	struct kh_transport t;
	struct kh_softmod *sm = open_mod(f, "card.card", &t);

	assert_int_equal(give_emm(f, &t, 5, 3), KH_OK);
	kh_softmod_free(sm);
}

static void test_card_restore(void **state)
{
	struct fx *f = *state;
	struct kh_transport t;
	struct kh_softmod *sm;
	struct kh_cas_status s;

	card_after_emm(f);
	assert_int_equal(ctr_file(f, "card.card.ctr"), 12);

	/* stored by the current build, loaded again: the new credit and every old fact */
	sm = open_mod(f, "card.card", &t);
	assert_info(&t, KH_ROLE_CARD, CARD_UA, 12);
	s = status_of(&t);
	assert_int_equal(s.credit, 495 + 7);
	assert_int_equal(s.last_reload, 3);
	assert_int_equal(s.seq[KH_EMM_UNIQUE], 5);
	assert_int_equal(s.n_emm, 5);
	assert_card_keeps(&s);
	/* its sequence number is used up: another EMM numbered 5 is a replay, and changes nothing */
	assert_int_equal(give_emm(f, &t, 5, 4), KH_ERR_EMM_REPLAY);
	assert_int_equal(kh_module_counter(kh_softmod_module(sm)), 12);
	/* and once more from the new format to the new format */
	assert_int_equal(give_emm(f, &t, 6, 4), KH_OK);
	kh_softmod_free(sm);
	sm = open_mod(f, "card.card", &t);
	assert_info(&t, KH_ROLE_CARD, CARD_UA, 13);
	s = status_of(&t);
	assert_int_equal(s.credit, 495 + 14);
	assert_int_equal(s.seq[KH_EMM_UNIQUE], 6);
	assert_card_keeps(&s);
	kh_softmod_free(sm);
}

/* ---- the sealed state itself, opened with the module's root key ---- */

#define HDR 25 /* "KHMS" | u8 version | u64 counter | nonce */

struct plain {
	uint8_t version;
	uint64_t counter;
	uint8_t b[KH_MODULE_BLOB_MAX];
	size_t n;
};

static void state_key(struct fx *f, uint8_t key[32])
{
	static const char label[] = "keyhole module state v1";
	char *p = path_in(f->dir, "card.key");
	uint8_t *hex = NULL, root[32];
	size_t n = 0;

	assert_int_equal(kh_keyfile_read(p, 256, &hex, &n), KH_OK);
	assert_int_equal(kh_hex_decode((const char *)hex, n, root, sizeof root), KH_OK);
	assert_int_equal(kh_hkdf(root, 32, NULL, 0, (const uint8_t *)label, sizeof label - 1, key, 32), KH_OK);
	kh_file_free(hex, n);
	kh_wipe(root, sizeof root);
	free(p);
}

static void read_state(struct fx *f, struct plain *pl)
{
	char *p = path_in(f->dir, "card.card");
	uint8_t key[32], *d = NULL;
	size_t n = 0;

	state_key(f, key);
	assert_int_equal(kh_file_read(p, KH_MODULE_BLOB_MAX, &d, &n), KH_OK);
	assert_true(n >= HDR + KH_TAG_LEN);
	assert_memory_equal(d, "KHMS", 4);
	pl->version = d[4];
	pl->counter = kh_get_be64(d + 5);
	assert_int_equal(kh_aead_open(key, d + 13, d, HDR, d + HDR, n - HDR, pl->b), KH_OK);
	pl->n = n - HDR - KH_TAG_LEN;
	kh_file_free(d, n);
	kh_wipe(key, sizeof key);
	free(p);
}

/* Seal pt as the card's state, with its counter file, as if the card had stored it. */
static void write_state(struct fx *f, uint8_t version, uint64_t counter, const uint8_t *pt, size_t n)
{
	char *p = path_in(f->dir, "card.card"), *c = path_in(f->dir, "card.card.ctr"), num[32];
	uint8_t key[32], *blob = malloc(HDR + n + KH_TAG_LEN);

	assert_non_null(blob);
	state_key(f, key);
	memcpy(blob, "KHMS", 4);
	blob[4] = version;
	kh_put_be64(blob + 5, counter);
	assert_int_equal(kh_random(blob + 13, KH_NONCE_LEN), KH_OK);
	assert_int_equal(kh_aead_seal(key, blob + 13, blob, HDR, pt, n, blob + HDR), KH_OK);
	assert_int_equal(kh_file_write_atomic(p, blob, HDR + n + KH_TAG_LEN, 0600), KH_OK);
	snprintf(num, sizeof num, "%llu\n", (unsigned long long)counter);
	assert_int_equal(kh_file_write_atomic(c, (const uint8_t *)num, strlen(num), 0600), KH_OK);
	kh_wipe(key, sizeof key);
	free(blob);
	free(p);
	free(c);
}

/* Offset of the first TLV of pl whose tag is at least tag0 (pl->n when none). */
static size_t first_tag(const struct plain *pl, uint8_t tag0)
{
	size_t off = 0;
	while (off + 3 <= pl->n && pl->b[off] < tag0)
		off += 3 + ((size_t)pl->b[off + 1] << 8 | pl->b[off + 2]);
	assert_true(off <= pl->n);
	return off;
}

/*
 * The runtime's TLVs are the same bytes in both formats, and the CAS applet's section body is the
 * flat format's tail byte for byte (version 1 of the section), with only what the EMM changed
 * changed: the section's 6-byte header is all a stored card grows by.
 */
static void test_card_bytes(void **state)
{
	struct fx *f = *state;
	struct plain *old = calloc(1, sizeof *old), *cur = calloc(1, sizeof *cur);
	uint8_t *want;
	size_t off, tail, i;

	assert_non_null(old);
	assert_non_null(cur);
	read_state(f, old);
	assert_int_equal(old->version, 1);
	assert_int_equal(old->counter, 11);
	off = first_tag(old, 0x40); /* the CAS applet's first tag in the flat format */
	tail = old->n - off;
	assert_true(off > 0 && tail > 0);

	card_after_emm(f);
	read_state(f, cur);
	assert_int_equal(cur->version, 2);
	assert_int_equal(cur->counter, 12);
	assert_int_equal(cur->n, old->n + 6);
	assert_memory_equal(cur->b, old->b, off);
	/* section header: tag 0x80, length, id 1 (CAS), version 1, flags (V1: it reads the flat tail) */
	assert_int_equal(cur->b[off], 0x80);
	assert_int_equal((size_t)cur->b[off + 1] << 8 | cur->b[off + 2], tail + 3);
	assert_int_equal(cur->b[off + 3], 1);
	assert_int_equal(cur->b[off + 4], 1);
	assert_int_equal(cur->b[off + 5], 0x02);
	/* the old tail with the EMM's changes: credit 502, reload 3, unique seq 5, 5 EMMs applied */
	want = malloc(tail);
	assert_non_null(want);
	memcpy(want, old->b + off, tail);
	for (i = 0; i < tail; i += 3 + ((size_t)want[i + 1] << 8 | want[i + 2])) {
		uint8_t *v = want + i + 3;
		if (want[i] == 0x40)
			kh_put_be32(v, 502);
		else if (want[i] == 0x41)
			kh_put_be32(v, 3);
		else if (want[i] == 0x42)
			kh_put_be32(v, 5);
		else if (want[i] == 0x4A)
			kh_put_be32(v + 12, 5);
	}
	assert_memory_equal(cur->b + off + 6, want, tail);
	free(want);
	free(old);
	free(cur);
}

/* kh_softmod_open of the card as it now is: its error, the card file never changed by it. */
static kh_err open_card(struct fx *f)
{
	char *p = path_in(f->dir, "card.card");
	uint8_t *before = NULL, *after = NULL;
	size_t nb = 0, na = 0;
	struct kh_softmod *sm = NULL;
	kh_err r;

	assert_int_equal(kh_file_read(p, KH_MODULE_BLOB_MAX, &before, &nb), KH_OK);
	r = kh_softmod_open(p, NULL, &sm, NULL);
	kh_softmod_free(sm);
	assert_int_equal(kh_file_read(p, KH_MODULE_BLOB_MAX, &after, &na), KH_OK);
	assert_int_equal(na, nb);
	assert_memory_equal(after, before, nb);
	kh_file_free(before, nb);
	kh_file_free(after, na);
	free(p);
	return r;
}

/* A variant of the current state: pl with extra bytes appended, or a section byte changed. */
static void write_variant(struct fx *f, const struct plain *pl, size_t at, uint8_t byte, const uint8_t *extra,
			  size_t extra_len, uint8_t version)
{
	uint8_t *b = malloc(pl->n + extra_len);
	assert_non_null(b);
	memcpy(b, pl->b, pl->n);
	if (at < pl->n)
		b[at] = byte;
	if (extra_len)
		memcpy(b + pl->n, extra, extra_len);
	write_state(f, version, 20, b, pl->n + extra_len);
	kh_wipe(b, pl->n + extra_len);
	free(b);
}

static void test_sections(void **state)
{
	struct fx *f = *state;
	struct plain *cur = calloc(1, sizeof *cur), *after = calloc(1, sizeof *after);
	static const uint8_t optional[] = {0x80, 0, 5, 0x7F, 1, 0x01, 0xAA, 0xBB};
	static const uint8_t mandatory[] = {0x80, 0, 5, 0x7F, 1, 0x00, 0xAA, 0xBB};
	static const uint8_t short_sec[] = {0x80, 0, 2, 0x7F, 1};
	static const uint8_t loose_credit[] = {0x40, 0, 4, 0, 0, 0, 9};
	const size_t none = (size_t)-1;
	struct kh_transport t;
	struct kh_softmod *sm;
	struct kh_cas_status s;
	size_t off;
	uint8_t *twice;

	assert_non_null(cur);
	assert_non_null(after);
	card_after_emm(f);
	read_state(f, cur);
	off = first_tag(cur, 0x80);
	assert_true(off < cur->n);

	/* a mandatory section this build does not know: refused, clearly, nothing changed */
	write_variant(f, cur, none, 0, mandatory, sizeof mandatory, 2);
	assert_int_equal(open_card(f), KH_ERR_STATE_SECTION);
	/* a known section of a version this build does not read (newer, or 0) */
	write_variant(f, cur, off + 4, 2, NULL, 0, 2);
	assert_int_equal(open_card(f), KH_ERR_STATE_VERSION);
	write_variant(f, cur, off + 4, 0, NULL, 0, 2);
	assert_int_equal(open_card(f), KH_ERR_STATE_VERSION);
	/* the same section twice; a section too short for its header; an applet's tag outside its
	 * section */
	twice = malloc(cur->n - off);
	assert_non_null(twice);
	memcpy(twice, cur->b + off, cur->n - off);
	write_variant(f, cur, none, 0, twice, cur->n - off, 2);
	free(twice);
	assert_int_equal(open_card(f), KH_ERR_FORMAT);
	write_variant(f, cur, none, 0, short_sec, sizeof short_sec, 2);
	assert_int_equal(open_card(f), KH_ERR_FORMAT);
	write_variant(f, cur, none, 0, loose_credit, sizeof loose_credit, 2);
	assert_int_equal(open_card(f), KH_ERR_TLV_TAG);
	/* a revoked list of version 0: no EMM gives one, and a store would drop it (the card would
	 * take back the CAMs it refuses): refused */
	{
		size_t rev = off + 6;
		while (rev < cur->n && cur->b[rev] != 0x4E)
			rev += 3 + ((size_t)cur->b[rev + 1] << 8 | cur->b[rev + 2]);
		assert_true(rev < cur->n && kh_get_be32(cur->b + rev + 3) == 3);
		write_variant(f, cur, rev + 6, 0, NULL, 0, 2);
		assert_int_equal(open_card(f), KH_ERR_FORMAT);
	}
	/* sections under a version-1 header: the flat format has none */
	write_variant(f, cur, none, 0, NULL, 0, 1);
	assert_int_equal(open_card(f), KH_ERR_TLV_TAG);
	/* a blob version this build does not know */
	write_variant(f, cur, none, 0, NULL, 0, 3);
	assert_int_equal(open_card(f), KH_ERR_VERSION);

	/* an optional section this build does not know: loaded without it, dropped at the next store */
	write_variant(f, cur, none, 0, optional, sizeof optional, 2);
	sm = open_mod(f, "card.card", &t);
	s = status_of(&t);
	assert_int_equal(s.credit, 502);
	assert_card_keeps(&s);
	assert_int_equal(give_emm(f, &t, 6, 4), KH_OK);
	kh_softmod_free(sm);
	read_state(f, after);
	assert_int_equal(after->counter, 21);
	assert_int_equal(after->n, cur->n);
	assert_int_equal(first_tag(after, 0x80), off);

	/* a card whose state has no CAS section is a card with no pay-TV state yet */
	{
		struct plain *bare = calloc(1, sizeof *bare);
		assert_non_null(bare);
		memcpy(bare->b, cur->b, off);
		bare->n = off;
		write_variant(f, bare, none, 0, NULL, 0, 2);
		free(bare);
	}
	sm = open_mod(f, "card.card", &t);
	s = status_of(&t);
	assert_int_equal(s.credit, 0);
	assert_int_equal(s.nrights, 0);
	assert_int_equal(s.nkeys, 0);
	assert_int_equal(s.has_group, 0);
	assert_info(&t, KH_ROLE_CARD, CARD_UA, 20);
	kh_softmod_free(sm);
	free(cur);
	free(after);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_card_facts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cam_dec_facts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_card_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_card_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sections, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
