/*
 * An old module file still loads: the fixtures of tests/data/modules-v1/ (a card, a CAM and a
 * decoder module written by the build before the sealed state had sections; README.txt there
 * says how and what they hold) are copied to a temporary directory and opened the way
 * `keyhole card ...` opens a module (kh_softmod_open with its key file). Their public facts (GET
 * INFO, CAS STATUS) must be the recorded ones; the three must still pair (keys and certificates
 * survived); and a command that changes the card stores it again, in the current format, and it
 * loads again with every fact kept.
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

/* The card's next EMM under its Kp (derived from the fixtures' master key): credit 7, reload 3. */
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

static void test_card_restore(void **state)
{
	struct fx *f = *state;
	uint8_t emm[KH_EMM_MAX];
	struct kh_transport t;
	struct kh_softmod *sm = open_mod(f, "card.card", &t);
	struct kh_cas_status s;
	struct kh_host_cas c;
	size_t n = next_emm(f, 5, 3, emm, sizeof emm);

	kh_host_cas_init(&c, NULL, NULL, &t, 0);
	assert_int_equal(kh_host_cas_emm(&c, emm, n), KH_OK);
	assert_int_equal(ctr_file(f, "card.card.ctr"), 12);
	/* a replay of it is refused and changes nothing */
	assert_int_equal(kh_host_cas_emm(&c, emm, n), KH_ERR_EMM_REPLAY);
	kh_softmod_free(sm);

	/* stored by the current build, loaded again: the new credit and every old fact */
	sm = open_mod(f, "card.card", &t);
	assert_info(&t, KH_ROLE_CARD, CARD_UA, 12);
	s = status_of(&t);
	assert_int_equal(s.credit, 495 + 7);
	assert_int_equal(s.last_reload, 3);
	assert_int_equal(s.seq[KH_EMM_UNIQUE], 5);
	assert_int_equal(s.n_emm, 5);
	assert_card_keeps(&s);
	/* and once more from the new format to the new format */
	n = next_emm(f, 6, 4, emm, sizeof emm);
	kh_host_cas_init(&c, NULL, NULL, &t, 0);
	assert_int_equal(kh_host_cas_emm(&c, emm, n), KH_OK);
	kh_softmod_free(sm);
	sm = open_mod(f, "card.card", &t);
	assert_info(&t, KH_ROLE_CARD, CARD_UA, 13);
	s = status_of(&t);
	assert_int_equal(s.credit, 495 + 14);
	assert_int_equal(s.seq[KH_EMM_UNIQUE], 6);
	assert_card_keeps(&s);
	kh_softmod_free(sm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_card_facts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cam_dec_facts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_card_restore, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
