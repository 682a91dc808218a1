/*
 * Making EMMs at the headend (the protocol design "Pay-TV: ECM and EMM"): one EMM section for
 * one card (under its personal key Kp), one group (its group key) or all cards (the broadcast
 * key), each key diversified from the management master in the headend key file, with the next
 * sequence number of that address. The durable path takes the key file's lock and writes the
 * new counter before the EMM leaves, so two runs never issue the same seq. Also the walker of
 * EMM files (whole sections, concatenated) that the scrambler plays out.
 */
#include <string.h>

#include "keyhole/crypto.h"
#include "keyhole/headend.h"

kh_err kh_headend_emm_make(struct kh_headend_keys *k, const struct kh_headend_emm_req *req, uint8_t *out,
			   size_t cap, size_t *len, uint32_t *seq)
{
	uint8_t cmds[KH_EMM_CMDS_MAX], master[32], key[KH_CAS_KEY_LEN], skey[KH_CAS_KEY_LEN];
	struct kh_cas_signer sg = {0};
	const uint8_t *der;
	size_t dlen;
	struct kh_emm_hdr h = {0};
	struct kh_wr w;
	uint32_t old;
	kh_err r;

	if (req->type != KH_EMM_UNIQUE && req->type != KH_EMM_GROUP && req->type != KH_EMM_ALL)
		return KH_ERR_INVAL;
	if ((req->set_group || req->set_all_key || req->set_signers) && req->type != KH_EMM_UNIQUE)
		return KH_ERR_INVAL;
	if (req->cmds_len > sizeof cmds)
		return KH_ERR_TOO_LARGE;
	kh_headend_keys_master(k, master);
	kh_wr_init(&w, cmds, sizeof cmds);
	if (req->cmds_len)
		kh_wr_bytes(&w, req->cmds, req->cmds_len);
	if (req->service_keys) {
		for (size_t i = 0; i < kh_headend_keys_count(k); i++) {
			uint8_t id;
			uint32_t v;
			kh_headend_keys_at(k, i, &id, &v, skey);
			kh_emm_put_set_key(&w, id, v, skey);
		}
	}
	if (req->set_group) {
		if ((r = kh_cas_group_key(master, req->group, key)) != KH_OK)
			goto out;
		/* where the group's sequence stands: its older EMMs are then replays on this card */
		kh_emm_put_set_group(&w, req->group, key, kh_headend_keys_seq(k, KH_EMM_GROUP, req->group));
	}
	if (req->set_all_key) {
		if ((r = kh_cas_all_key(master, key)) != KH_OK)
			goto out;
		kh_emm_put_set_all_key(&w, key);
	}
	if (req->set_signers) {
		static const enum kh_role roles[] = {KH_ROLE_ECM_SIGNER, KH_ROLE_EMM_SIGNER};
		for (size_t i = 0; i < 2; i++) {
			if (!(req->set_signers & (1 << i)))
				continue;
			if ((r = kh_headend_keys_signer(k, roles[i], NULL, &der, &dlen)) != KH_OK)
				goto out;
			kh_emm_put_set_signer(&w, der, dlen);
		}
	}
	/* A group or broadcast EMM is believed for the EMM signer's signature, not for its key. */
	if (req->type != KH_EMM_UNIQUE && (r = kh_headend_keys_signer(k, KH_ROLE_EMM_SIGNER, &sg, NULL, NULL)) != KH_OK)
		goto out;
	if (w.err != KH_OK || (req->type != KH_EMM_UNIQUE && w.len > KH_EMM_SIGNED_CMDS_MAX)) {
		r = w.err == KH_ERR_BUF || w.err == KH_OK ? KH_ERR_TOO_LARGE : w.err;
		goto out;
	}
	if (w.len == 0) {
		r = KH_ERR_INVAL;
		goto out;
	}
	switch (req->type) {
	case KH_EMM_UNIQUE: r = kh_cas_card_kp(master, req->addr, key); break;
	case KH_EMM_GROUP: r = kh_cas_group_key(master, req->addr, key); break;
	default: r = kh_cas_all_key(master, key); break;
	}
	if (r != KH_OK)
		goto out;
	/* Seal with the next seq first, then count it: k changes only when an EMM was made. */
	old = kh_headend_keys_seq(k, req->type, req->addr);
	if (old == UINT32_MAX) {
		r = KH_ERR_TOO_LARGE;
		goto out;
	}
	h.seq = old + 1;
	h.addr_type = (uint8_t)req->type;
	h.addr = req->type == KH_EMM_ALL ? 0 : req->addr;
	r = req->type == KH_EMM_UNIQUE ? kh_emm_seal(key, &h, cmds, w.len, out, cap, len)
				       : kh_emm_seal_signed(key, &sg, &h, cmds, w.len, out, cap, len);
	if (r != KH_OK)
		goto out;
	kh_headend_keys_set_revoked(k, req->revoked_version);
	if ((r = kh_headend_keys_next_seq(k, req->type, h.addr, &old)) != KH_OK) {
		kh_wipe(out, *len);
		goto out;
	}
	if (seq)
		*seq = h.seq;
	r = KH_OK;
out:
	kh_wipe(cmds, sizeof cmds);
	kh_wipe(master, sizeof master);
	kh_wipe(key, sizeof key);
	kh_wipe(skey, sizeof skey);
	kh_wipe(&sg, sizeof sg);
	return r;
}

kh_err kh_headend_emm_issue(const char *path, const struct kh_headend_emm_req *req, uint8_t *out, size_t cap,
			    size_t *len, uint32_t *seq, size_t *line)
{
	struct kh_headend_keys *k = NULL;
	size_t n = 0;
	int fd = -1;
	kh_err r;

	if (line)
		*line = 0;
	if ((r = kh_headend_keys_lock(path, &fd)) != KH_OK)
		return r;
	if ((r = kh_headend_keys_load(path, &k, line)) != KH_OK)
		goto out;
	if ((r = kh_headend_emm_make(k, req, out, cap, &n, seq)) != KH_OK)
		goto out;
	/* The seq is durable before the EMM exists for anyone: a crash after this loses one seq
	 * number, never repeats one. */
	if ((r = kh_headend_keys_save(k, path)) != KH_OK) {
		kh_wipe(out, n);
		goto out;
	}
	*len = n;
out:
	kh_headend_keys_unlock(fd);
	kh_headend_keys_free(k);
	return r;
}

int kh_headend_emm_next(const uint8_t *file, size_t len, size_t *off, const uint8_t **sec, size_t *n)
{
	struct kh_emm_hdr h;
	size_t o = *off, total;
	kh_err r;

	if (o >= len)
		return 0;
	if (len - o < 3)
		return KH_ERR_TRUNCATED;
	total = 3 + ((size_t)(file[o + 1] & 0x0F) << 8 | file[o + 2]);
	if (total > len - o)
		return KH_ERR_TRUNCATED;
	if ((r = kh_emm_peek(file + o, total, &h)) != KH_OK)
		return r;
	*sec = file + o;
	*n = total;
	*off = o + total;
	return 1;
}
