/*
 * The decoder's memory M1 (include/keyhole/m1.h; rules in docs/internals/m1.md; seed 001,
 * The protocol design "Seed 001"). The seed's decoder keeps the security module's latest data in a
 * non-volatile memory, encrypted by a local key, and lets the new module's data replace it only
 * once the center has authorised that module to export — so the replaced module's data survives
 * until the center has recovered it.
 *
 * Three rules are enforced here, under an exclusive flock(2) on the directory so that two
 * decoder processes cannot interleave their read-compare-write:
 *   - only a block that parses goes in (kh_usage_peek: the decoder cannot read a block, which is
 *     sealed for the center, but it can check the clear header it will be filed under);
 *   - for the UA M1 already holds, only a newer block_seq (M1 never goes backwards);
 *   - a file M1 cannot open is never overwritten (it may be the only copy of a replaced card's
 *     purchases, sealed under a key file someone since replaced).
 * The fourth rule — only blocks made for M1, i.e. answers to EXPORT P1=1, which the card gives
 * only while the center authorises export — is a matter of where the block comes from, and
 * kh_m1_export is that path.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyhole/apdu.h"
#include "keyhole/buf.h"
#include "keyhole/crypto.h"
#include "keyhole/file.h"
#include "keyhole/host.h"
#include "keyhole/log.h"
#include "keyhole/m1.h"
#include "keyhole/usage.h"

#define M1_FILE_MAX (KH_M1_OVERHEAD + KH_USAGE_MAX)
#define KEY_HEX_LEN (2 * KH_M1_KEY_LEN)

static kh_err join(const char *dir, const char *name, char **out)
{
	if (!dir || !*dir)
		return KH_ERR_INVAL;
	if (asprintf(out, "%s/%s", dir, name) < 0) {
		*out = NULL;
		return KH_ERR_NOMEM;
	}
	return KH_OK;
}

/* ---- the local key ---- */

static kh_err read_key(const char *path, uint8_t key[static KH_M1_KEY_LEN])
{
	uint8_t *data = NULL;
	size_t len = 0;
	kh_err r;

	if ((r = kh_keyfile_read(path, KEY_HEX_LEN + 2, &data, &len)) != KH_OK)
		return r == KH_ERR_TOO_LARGE ? KH_ERR_FORMAT : r;
	r = kh_hex_decode((const char *)data, len, key, KH_M1_KEY_LEN);
	if (r != KH_OK)
		r = KH_ERR_FORMAT;
	kh_file_free(data, len);
	return r;
}

kh_err kh_m1_key(const char *dir, int create, uint8_t key[static KH_M1_KEY_LEN])
{
	uint8_t k[KH_M1_KEY_LEN];
	char hex[KEY_HEX_LEN + 2], *path = NULL;
	kh_err r;

	if ((r = join(dir, KH_M1_KEYFILE, &path)) != KH_OK)
		return r;
	r = read_key(path, k);
	if (r != KH_ERR_NOTFOUND || !create)
		goto out;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		r = errno == ENOENT ? KH_ERR_NOTFOUND : KH_ERR_IO;
		goto out;
	}
	if ((r = kh_random(k, sizeof k)) != KH_OK)
		goto out;
	kh_hex_encode(k, sizeof k, hex);
	hex[KEY_HEX_LEN] = '\n';
	hex[KEY_HEX_LEN + 1] = 0;
	/* Create-only: two decoders starting at once must not end up with two keys. */
	r = kh_file_write_new(path, (const uint8_t *)hex, KEY_HEX_LEN + 1, 0600);
	kh_wipe(hex, sizeof hex);
	if (r == KH_ERR_EXISTS)
		r = read_key(path, k); /* the other one won: use its key */
	else if (r == KH_OK)
		kh_log_info("m1.key_created", "dir=%s", dir);
out:
	if (r == KH_OK)
		memcpy(key, k, sizeof k);
	kh_wipe(k, sizeof k);
	free(path);
	return r;
}

/* ---- the sealed file ---- */

static void header(uint8_t h[static KH_M1_HDR_LEN], uint32_t ua, uint32_t seq)
{
	memcpy(h, KH_M1_MAGIC, 4);
	h[4] = KH_M1_VERSION;
	kh_put_be32(h + 5, ua);
	kh_put_be32(h + 9, seq);
}

/* Open a file's bytes; the block goes to blk (at least KH_USAGE_MAX bytes), *info describes it. */
static kh_err unseal(const uint8_t key[static KH_M1_KEY_LEN], const uint8_t *f, size_t n, uint8_t *blk,
		     size_t *blen, struct kh_m1_info *info)
{
	struct kh_usage_hdr h;
	size_t len;
	kh_err r;

	if (n < 5)
		return KH_ERR_TRUNCATED;
	if (memcmp(f, KH_M1_MAGIC, 4) != 0)
		return KH_ERR_FORMAT;
	if (f[4] != KH_M1_VERSION)
		return KH_ERR_VERSION;
	if (n < KH_M1_OVERHEAD + KH_USAGE_MIN_LEN)
		return KH_ERR_TRUNCATED;
	if (n > M1_FILE_MAX)
		return KH_ERR_TOO_LARGE;
	len = n - KH_M1_OVERHEAD;
	if ((r = kh_aead_open(key, f + KH_M1_HDR_LEN, f, KH_M1_HDR_LEN, f + KH_M1_HDR_LEN + KH_NONCE_LEN,
			      len + KH_TAG_LEN, blk)) != KH_OK)
		return r;
	/* Sealed by us, so this holds unless we wrote it wrong: still, never trust a file blindly. A
	 * block of an older layout (a decoder updated since it stored it) is VERSION: the center
	 * refuses it too. */
	if ((r = kh_usage_peek(blk, len, &h)) != KH_OK || h.ua != kh_get_be32(f + 5) ||
	    h.block_seq != kh_get_be32(f + 9)) {
		kh_wipe(blk, len);
		return r == KH_ERR_VERSION ? r : KH_ERR_FORMAT;
	}
	info->ua = h.ua;
	info->block_seq = h.block_seq;
	info->card_time = h.card_time;
	info->len = len;
	*blen = len;
	return KH_OK;
}

/* Read and open the M1 file of dir into blk[KH_USAGE_MAX]. */
static kh_err load(const char *dir, const uint8_t key[static KH_M1_KEY_LEN], uint8_t *blk, size_t *blen,
		   struct kh_m1_info *info)
{
	uint8_t *data = NULL;
	size_t n = 0;
	char *path = NULL;
	kh_err r;

	if ((r = join(dir, KH_M1_FILE, &path)) != KH_OK)
		return r;
	r = kh_file_read(path, M1_FILE_MAX, &data, &n);
	free(path);
	if (r != KH_OK)
		return r;
	r = unseal(key, data, n, blk, blen, info);
	kh_file_free(data, n);
	return r;
}

kh_err kh_m1_load(const char *dir, const uint8_t key[static KH_M1_KEY_LEN], uint8_t *block, size_t cap,
		  size_t *len)
{
	uint8_t blk[KH_USAGE_MAX];
	struct kh_m1_info info;
	size_t n = 0;
	kh_err r;

	if (!block || !len)
		return KH_ERR_INVAL;
	if ((r = load(dir, key, blk, &n, &info)) != KH_OK)
		goto out;
	if (n > cap) {
		r = KH_ERR_BUF;
		goto out;
	}
	memcpy(block, blk, n);
	*len = n;
out:
	kh_wipe(blk, sizeof blk);
	return r;
}

kh_err kh_m1_stat(const char *dir, const uint8_t key[static KH_M1_KEY_LEN], struct kh_m1_info *info)
{
	uint8_t blk[KH_USAGE_MAX];
	struct kh_m1_info i;
	size_t n = 0;
	kh_err r;

	if (!info)
		return KH_ERR_INVAL;
	if ((r = load(dir, key, blk, &n, &i)) == KH_OK)
		*info = i;
	kh_wipe(blk, sizeof blk);
	return r;
}

/* An exclusive lock on the directory itself: no lock file to leave behind. */
static kh_err lock_dir(const char *dir, int *fd)
{
	int f = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (f < 0)
		return errno == ENOENT || errno == ENOTDIR ? KH_ERR_NOTFOUND : KH_ERR_IO;
	while (flock(f, LOCK_EX) != 0) {
		if (errno != EINTR) {
			close(f);
			return KH_ERR_IO;
		}
	}
	*fd = f;
	return KH_OK;
}

kh_err kh_m1_store(const char *dir, const uint8_t key[static KH_M1_KEY_LEN], const uint8_t *block, size_t len)
{
	uint8_t old[KH_USAGE_MAX], f[M1_FILE_MAX];
	struct kh_usage_hdr h;
	struct kh_m1_info cur;
	size_t oldlen = 0, flen = 0;
	char *path = NULL;
	int fd = -1, have = 0;
	kh_err r;

	if (!block)
		return KH_ERR_INVAL;
	if ((r = kh_usage_peek(block, len, &h)) != KH_OK)
		return r;
	if ((r = join(dir, KH_M1_FILE, &path)) != KH_OK)
		return r;
	if ((r = lock_dir(dir, &fd)) != KH_OK)
		goto out;
	r = load(dir, key, old, &oldlen, &cur);
	if (r == KH_OK)
		have = 1;
	else if (r != KH_ERR_NOTFOUND)
		goto out; /* never overwrite what we cannot read */
	if (have && cur.ua == h.ua) {
		if (h.block_seq == cur.block_seq && len == oldlen && kh_ct_eq(old, block, len)) {
			r = KH_OK; /* the same block again: nothing to do */
			goto out;
		}
		if (h.block_seq <= cur.block_seq) {
			kh_log_info("m1.rollback", "ua=%08X seq=%u held=%u", h.ua, h.block_seq, cur.block_seq);
			r = KH_ERR_ROLLBACK;
			goto out;
		}
	}
	header(f, h.ua, h.block_seq);
	if ((r = kh_random(f + KH_M1_HDR_LEN, KH_NONCE_LEN)) != KH_OK)
		goto out;
	if ((r = kh_aead_seal(key, f + KH_M1_HDR_LEN, f, KH_M1_HDR_LEN, block, len,
			      f + KH_M1_HDR_LEN + KH_NONCE_LEN)) != KH_OK)
		goto out;
	flen = KH_M1_OVERHEAD + len;
	if ((r = kh_file_write_atomic(path, f, flen, 0600)) != KH_OK)
		goto out;
	if (have && cur.ua != h.ua)
		kh_log_info("m1.stored", "ua=%08X seq=%u replaces ua=%08X seq=%u", h.ua, h.block_seq, cur.ua,
			    cur.block_seq);
	else
		kh_log_info("m1.stored", "ua=%08X seq=%u", h.ua, h.block_seq);
out:
	if (fd >= 0)
		close(fd); /* releases the lock */
	kh_wipe(old, sizeof old);
	kh_wipe(f, sizeof f);
	free(path);
	return r;
}

kh_err kh_m1_export(struct kh_transport *card, const char *dir, const uint8_t key[static KH_M1_KEY_LEN],
		    uint32_t expect_ua, struct kh_m1_info *info)
{
	uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_usage_hdr h;
	size_t n = 0;
	uint16_t sw = 0;
	kh_err r;

	if (!card)
		return KH_ERR_INVAL;
	if ((r = kh_host_apdu(card, KH_INS_EXPORT, 1, NULL, 0, resp, sizeof resp, &n, &sw)) != KH_OK) {
		if (r == KH_ERR_EXPORT_DENIED)
			kh_log_info("m1.export_denied", "ua=%08X", expect_ua);
		goto out;
	}
	if ((r = kh_usage_peek(resp, n, &h)) != KH_OK)
		goto out;
	if (expect_ua && h.ua != expect_ua) {
		kh_log_warn("m1.wrong_card", "paired=%08X block=%08X", expect_ua, h.ua);
		r = KH_ERR_CARD_CHANGED;
		goto out;
	}
	r = kh_m1_store(dir, key, resp, n);
	if ((r == KH_OK || r == KH_ERR_ROLLBACK) && info) {
		info->ua = h.ua;
		info->block_seq = h.block_seq;
		info->card_time = h.card_time;
		info->len = n;
	}
out:
	kh_wipe(resp, sizeof resp);
	return r;
}
