/*
 * The decoder's memory M1 (seed 001, include/keyhole/m1.h, docs/internals/m1.md): the sealed
 * file round-trips; a changed file or another key is refused, and a refused file is never
 * overwritten; M1 never goes back to an older block of the same card; a new card that the center
 * has not authorised cannot displace the replaced card's block, and once an AUTHORISE EXPORT EMM
 * has reached it, its block does. Cards are the world's (tests/unit/world.c), blocks come from
 * their EXPORT, and what M1 gives back is checked the way the center checks it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/m1.h"
#include "keyhole/usage.h"
#include "testutil.h"
#include "world.h"

struct mw {
	struct world *w;
	char *dir;   /* the M1 directory (not yet made) */
	char *file;  /* dir/m1 */
	uint8_t key[KH_M1_KEY_LEN];
	uint32_t seq1, seq2; /* EMM seqs of c1, c2 */
	uint64_t t0;
};

static int setup(void **state)
{
	struct mw *m = calloc(1, sizeof *m);

	assert_non_null(m);
	assert_int_equal(world_setup((void **)&m->w), 0);
	m->t0 = (uint64_t)time(NULL);
	m->dir = path_in(m->w->dir, "m1dir");
	m->file = path_in(m->dir, KH_M1_FILE);
	assert_int_equal(kh_m1_key(m->dir, 1, m->key), KH_OK);
	*state = m;
	return 0;
}

static int teardown(void **state)
{
	struct mw *m = *state;
	free(m->dir);
	free(m->file);
	world_teardown((void **)&m->w);
	kh_wipe(m, sizeof *m);
	free(m);
	return 0;
}

/* AUTHORISE EXPORT (on) for card c, by a unique EMM under its Kp. */
static void authorise(struct mw *m, struct mod *c, int on)
{
	uint8_t cmds[16], sec[KH_EMM_MAX], resp[KH_APDU_MAX_RESP];
	uint32_t *seq = c == &m->w->c1 ? &m->seq1 : &m->seq2;
	struct kh_wr w;
	size_t n, dlen;
	uint16_t sw;

	kh_wr_init(&w, cmds, sizeof cmds);
	assert_int_equal(kh_emm_put_auth_export(&w, on), KH_OK);
	n = world_emm(m->w->auth, c->ua, ++*seq, cmds, w.len, sec, sizeof sec);
	assert_int_equal(kh_host_apdu(&c->t, KH_INS_EMM, 0, sec, n, resp, sizeof resp, &dlen, &sw), KH_OK);
}

/* One EXPORT P1=1 from card c, which must be allowed; its length. */
static size_t export_m1(struct mod *c, uint8_t *blk)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	size_t n;

	assert_int_equal(send_apdu(&c->t, KH_CLA, KH_INS_EXPORT, 1, 0, NULL, 0, resp, sizeof resp, &n), KH_SW_OK);
	assert_true(n <= KH_USAGE_MAX);
	memcpy(blk, resp, n);
	return n;
}

/* The M1 file's bytes (asserts it exists); free with kh_file_free. */
static uint8_t *file_bytes(struct mw *m, size_t *n)
{
	uint8_t *d = NULL;
	assert_int_equal(kh_file_read(m->file, 1 << 16, &d, n), KH_OK);
	return d;
}

static void assert_file_is(struct mw *m, const uint8_t *want, size_t wn)
{
	size_t n;
	uint8_t *d = file_bytes(m, &n);
	assert_int_equal(n, wn);
	assert_memory_equal(d, want, n);
	kh_file_free(d, n);
}

/* Only m1 and m1.key in the directory: no temporary file left behind. */
static void assert_dir_clean(struct mw *m)
{
	DIR *dh = opendir(m->dir);
	struct dirent *e;

	assert_non_null(dh);
	while ((e = readdir(dh)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (strcmp(e->d_name, KH_M1_FILE) != 0 && strcmp(e->d_name, KH_M1_KEYFILE) != 0)
			fail_msg("stray file in M1 directory: %s", e->d_name);
	}
	closedir(dh);
}

/* The center's view of a block of the world's card c: signature and Ku. */
static void assert_center_opens(struct mw *m, struct mod *c, const uint8_t *blk, size_t n, struct kh_usage *u)
{
	uint8_t resp[KH_APDU_MAX_RESP], kp[32], ku[32];
	struct kh_cert_info ci;
	size_t cn;

	assert_int_equal(send_apdu(&c->t, KH_CLA, KH_INS_GET_CERT, 1, 0, NULL, 0, resp, sizeof resp, &cn), KH_SW_OK);
	assert_int_equal(kh_cert_check(resp, cn, m->w->root_pk, KH_ROLE_CARD, KH_CERT_KEY_ED25519, m->t0, &ci), KH_OK);
	assert_int_equal(kh_authority_card_keys(m->w->auth, c->ua, kp, ku), KH_OK);
	assert_int_equal(kh_usage_open(ku, ci.pub, blk, n, u), KH_OK);
	kh_wipe(kp, sizeof kp);
	kh_wipe(ku, sizeof ku);
}

static void test_key(void **state)
{
	struct mw *m = *state;
	uint8_t k2[KH_M1_KEY_LEN];
	struct stat st;
	char *kp = path_in(m->dir, KH_M1_KEYFILE);

	/* made on first use: directory 0700, key 0600; the same key read back */
	assert_int_equal(stat(m->dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(kp, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(kh_m1_key(m->dir, 0, k2), KH_OK);
	assert_memory_equal(k2, m->key, sizeof k2);
	assert_int_equal(kh_m1_key(m->dir, 1, k2), KH_OK);
	assert_memory_equal(k2, m->key, sizeof k2);
	/* a key others can read is refused; no key is NOTFOUND without create */
	assert_int_equal(chmod(kp, 0644), 0);
	assert_int_equal(kh_m1_key(m->dir, 1, k2), KH_ERR_KEYFILE_PERM);
	assert_int_equal(chmod(kp, 0600), 0);
	{
		char *other = path_in(m->w->dir, "nokey");
		assert_int_equal(kh_m1_key(other, 0, k2), KH_ERR_NOTFOUND);
		free(other);
	}
	/* not hex: FORMAT */
	assert_int_equal(kh_file_write_atomic(kp, (const uint8_t *)"zz\n", 3, 0600), KH_OK);
	assert_int_equal(kh_m1_key(m->dir, 0, k2), KH_ERR_FORMAT);
	free(kp);
}

static void test_round_trip(void **state)
{
	struct mw *m = *state;
	uint8_t blk[KH_USAGE_MAX], out[KH_USAGE_MAX], small[16];
	struct kh_m1_info info;
	struct kh_usage u;
	struct stat st;
	size_t n, on;

	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_ERR_NOTFOUND);
	assert_int_equal(kh_m1_stat(m->dir, m->key, &info), KH_ERR_NOTFOUND);
	authorise(m, &m->w->c1, 1);
	n = export_m1(&m->w->c1, blk);
	assert_int_equal(kh_m1_store(m->dir, m->key, blk, n), KH_OK);
	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_OK);
	assert_int_equal(on, n);
	assert_memory_equal(out, blk, n);
	assert_int_equal(kh_m1_stat(m->dir, m->key, &info), KH_OK);
	assert_int_equal(info.ua, m->w->c1.ua);
	assert_int_equal(info.block_seq, 1);
	assert_int_equal(info.len, n);
	/* what M1 gives back is what the card signed: the center opens it */
	assert_center_opens(m, &m->w->c1, out, on, &u);
	assert_int_equal(u.h.ua, m->w->c1.ua);
	assert_int_equal(u.export_ok, 1);
	/* private, whole, no temporary file; the block is not in clear in the file */
	assert_int_equal(stat(m->file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal((size_t)st.st_size, n + KH_M1_OVERHEAD);
	assert_dir_clean(m);
	{
		size_t fn;
		uint8_t *f = file_bytes(m, &fn);
		assert_memory_equal(f, KH_M1_MAGIC, 4);
		assert_null(memmem(f, fn, blk + KH_USAGE_HDR_LEN, 32));
		kh_file_free(f, fn);
	}
	/* a short buffer: BUF, nothing written */
	on = 7;
	assert_int_equal(kh_m1_load(m->dir, m->key, small, sizeof small, &on), KH_ERR_BUF);
	assert_int_equal(on, 7);
	/* a newer block of the same card replaces it */
	n = export_m1(&m->w->c1, blk);
	assert_int_equal(kh_m1_store(m->dir, m->key, blk, n), KH_OK);
	assert_int_equal(kh_m1_stat(m->dir, m->key, &info), KH_OK);
	assert_int_equal(info.block_seq, 2);
	assert_dir_clean(m);
}

static void test_tampered(void **state)
{
	struct mw *m = *state;
	uint8_t blk[KH_USAGE_MAX], out[KH_USAGE_MAX], other[KH_M1_KEY_LEN], *orig;
	size_t n, on, fn;

	authorise(m, &m->w->c1, 1);
	n = export_m1(&m->w->c1, blk);
	assert_int_equal(kh_m1_store(m->dir, m->key, blk, n), KH_OK);
	orig = file_bytes(m, &fn);
	/* every byte matters: magic FORMAT, version VERSION, the rest AUTH (header is the aad) */
	for (size_t i = 0; i < fn; i++) {
		uint8_t *bad = malloc(fn);
		kh_err want = i < 4 ? KH_ERR_FORMAT : i == 4 ? KH_ERR_VERSION : KH_ERR_AUTH;
		assert_non_null(bad);
		memcpy(bad, orig, fn);
		bad[i] ^= 0x01;
		assert_int_equal(kh_file_write_atomic(m->file, bad, fn, 0600), KH_OK);
		on = 0;
		assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), want);
		assert_int_equal(on, 0);
		if (i % 37 == 5) {
			/* a failed load stops a store: the file is left exactly as it was */
			uint8_t nb[KH_USAGE_MAX];
			size_t nn = export_m1(&m->w->c1, nb);
			assert_int_equal(kh_m1_store(m->dir, m->key, nb, nn), want);
			assert_file_is(m, bad, fn);
		}
		free(bad);
	}
	/* cut short, or grown */
	assert_int_equal(kh_file_write_atomic(m->file, orig, fn - 1, 0600), KH_OK);
	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_ERR_AUTH);
	assert_int_equal(kh_file_write_atomic(m->file, orig, 20, 0600), KH_OK);
	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_ERR_TRUNCATED);
	assert_int_equal(kh_file_write_atomic(m->file, orig, 3, 0600), KH_OK);
	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_ERR_TRUNCATED);
	/* the genuine file under another key (a replaced m1.key): AUTH, and never overwritten */
	assert_int_equal(kh_file_write_atomic(m->file, orig, fn, 0600), KH_OK);
	assert_int_equal(kh_random(other, sizeof other), KH_OK);
	assert_int_equal(kh_m1_load(m->dir, other, out, sizeof out, &on), KH_ERR_AUTH);
	n = export_m1(&m->w->c1, blk);
	assert_int_equal(kh_m1_store(m->dir, other, blk, n), KH_ERR_AUTH);
	assert_file_is(m, orig, fn);
	/* and it still opens under the right key */
	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_OK);
	/* a block of the old layout (version 2) sealed in a sound file: VERSION, and kept */
	{
		uint8_t *old = malloc(fn);
		assert_non_null(old);
		memcpy(old, orig, fn);
		memcpy(out, blk, n);
		out[0] = 2;
		assert_int_equal(kh_random(old + KH_M1_HDR_LEN, 12), KH_OK);
		assert_int_equal(kh_aead_seal(m->key, old + KH_M1_HDR_LEN, old, KH_M1_HDR_LEN, out, n,
					      old + KH_M1_HDR_LEN + 12),
				 KH_OK);
		assert_int_equal(kh_file_write_atomic(m->file, old, KH_M1_OVERHEAD + n, 0600), KH_OK);
		assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_ERR_VERSION);
		assert_int_equal(kh_m1_store(m->dir, m->key, blk, n), KH_ERR_VERSION);
		assert_file_is(m, old, KH_M1_OVERHEAD + n);
		/* a version-2 block is not taken in either */
		memcpy(out, blk, n);
		out[0] = 2;
		assert_int_equal(kh_file_write_atomic(m->file, orig, fn, 0600), KH_OK);
		assert_int_equal(kh_m1_store(m->dir, m->key, out, n), KH_ERR_VERSION);
		assert_file_is(m, orig, fn);
		free(old);
	}
	assert_dir_clean(m);
	kh_file_free(orig, fn);
}

static void test_no_going_back(void **state)
{
	struct mw *m = *state;
	uint8_t b1[KH_USAGE_MAX], b2[KH_USAGE_MAX], junk[KH_USAGE_MAX], *f2;
	size_t n1, n2, fn;

	authorise(m, &m->w->c1, 1);
	n1 = export_m1(&m->w->c1, b1);
	n2 = export_m1(&m->w->c1, b2);
	assert_int_equal(kh_m1_store(m->dir, m->key, b2, n2), KH_OK);
	f2 = file_bytes(m, &fn);
	/* block 1 of the same card after block 2: refused, M1 unchanged */
	assert_int_equal(kh_m1_store(m->dir, m->key, b1, n1), KH_ERR_ROLLBACK);
	assert_file_is(m, f2, fn);
	/* block 2 again: nothing to do, nothing written (same nonce, same bytes) */
	assert_int_equal(kh_m1_store(m->dir, m->key, b2, n2), KH_OK);
	assert_file_is(m, f2, fn);
	/* another block claiming number 2: refused */
	memcpy(junk, b2, n2);
	junk[n2 - 1] ^= 1;
	assert_int_equal(kh_m1_store(m->dir, m->key, junk, n2), KH_ERR_ROLLBACK);
	assert_file_is(m, f2, fn);
	/* what does not parse never goes in */
	assert_int_equal(kh_m1_store(m->dir, m->key, b2, 20), KH_ERR_TRUNCATED);
	memcpy(junk, b2, n2);
	junk[0] = 9;
	assert_int_equal(kh_m1_store(m->dir, m->key, junk, n2), KH_ERR_VERSION);
	assert_int_equal(kh_m1_store(m->dir, m->key, junk, KH_USAGE_MAX + 1), KH_ERR_TOO_LARGE);
	assert_int_equal(kh_m1_store(m->dir, m->key, NULL, 0), KH_ERR_INVAL);
	assert_file_is(m, f2, fn);
	assert_dir_clean(m);
	kh_file_free(f2, fn);
}

/* Seed 001's scenario, the decoder's half: the card is replaced before the decoder connected. */
static void test_card_replaced(void **state)
{
	struct mw *m = *state;
	uint8_t out[KH_USAGE_MAX], *f1;
	struct kh_m1_info info, cur;
	struct kh_usage u;
	size_t on, fn;

	/* card 1, authorised, fills M1 through the decoder's path */
	authorise(m, &m->w->c1, 1);
	assert_int_equal(kh_m1_export(&m->w->c1.t, m->dir, m->key, m->w->c1.ua, &info), KH_OK);
	assert_int_equal(info.ua, m->w->c1.ua);
	f1 = file_bytes(m, &fn);
	/* card 2 goes in: not authorised, so its EXPORT for M1 is refused and M1 keeps card 1 */
	memset(&info, 0xAA, sizeof info);
	assert_int_equal(kh_m1_export(&m->w->c2.t, m->dir, m->key, m->w->c2.ua, &info), KH_ERR_EXPORT_DENIED);
	assert_int_equal(info.ua, 0xAAAAAAAAu);
	assert_file_is(m, f1, fn);
	assert_int_equal(kh_m1_stat(m->dir, m->key, &cur), KH_OK);
	assert_int_equal(cur.ua, m->w->c1.ua);
	/* the block M1 still holds is card 1's, whole, for the center to recover */
	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_OK);
	assert_center_opens(m, &m->w->c1, out, on, &u);
	assert_int_equal(u.h.ua, m->w->c1.ua);
	/* the session is paired with card 2, but card 1 answers: refused, not stored */
	assert_int_equal(kh_m1_export(&m->w->c1.t, m->dir, m->key, m->w->c2.ua, &info), KH_ERR_CARD_CHANGED);
	assert_file_is(m, f1, fn);
	/* the center, having recovered card 1's block, authorises card 2: now its block replaces it */
	authorise(m, &m->w->c2, 1);
	assert_int_equal(kh_m1_export(&m->w->c2.t, m->dir, m->key, m->w->c2.ua, &info), KH_OK);
	assert_int_equal(info.ua, m->w->c2.ua);
	assert_int_equal(kh_m1_stat(m->dir, m->key, &cur), KH_OK);
	assert_int_equal(cur.ua, m->w->c2.ua);
	assert_int_equal(cur.block_seq, info.block_seq);
	assert_int_equal(kh_m1_load(m->dir, m->key, out, sizeof out, &on), KH_OK);
	assert_center_opens(m, &m->w->c2, out, on, &u);
	assert_int_equal(u.export_ok, 1);
	/* and export withdrawn again stops the updates */
	authorise(m, &m->w->c2, 0);
	kh_file_free(f1, fn);
	f1 = file_bytes(m, &fn);
	assert_int_equal(kh_m1_export(&m->w->c2.t, m->dir, m->key, 0, NULL), KH_ERR_EXPORT_DENIED);
	assert_file_is(m, f1, fn);
	assert_dir_clean(m);
	kh_file_free(f1, fn);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_going_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_card_replaced, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
