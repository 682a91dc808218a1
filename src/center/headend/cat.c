/*
 * The CAT with our CA descriptor (include/keyhole/headend.h, kh_headend_cat_merge): the input's
 * descriptors kept in their order, a CA descriptor of our CA system replaced by ours (naming our
 * EMM PID), the version moved on so receivers take the new table; a CAT of our own when the
 * input has none.
 */
#include "keyhole/headend.h"
#include "keyhole/ts.h"

/* The input's loop without a CA descriptor of ca_system_id, into w. */
static void keep_others(const struct kh_ts_cat *cat, uint16_t ca_system_id, struct kh_wr *w)
{
	struct kh_ts_desc_it it;
	const uint8_t *body;
	uint8_t tag, len;

	kh_ts_desc_it_init(&it, cat->desc, cat->desc_len);
	while (kh_ts_desc_next(&it, &tag, &body, &len) == 1) {
		struct kh_ts_ca_desc ca;
		if (tag == KH_TS_DESC_CA && kh_ts_ca_desc_parse(body, len, &ca) == KH_OK &&
		    ca.ca_system_id == ca_system_id)
			continue; /* ours, maybe naming another PID: replaced */
		(void)kh_wr_u8(w, tag);
		(void)kh_wr_u8(w, len);
		(void)kh_wr_bytes(w, body, len);
	}
}

kh_err kh_headend_cat_merge(const uint8_t *sec, size_t n, uint16_t ca_system_id, uint16_t emm_pid, uint8_t *out,
			    size_t cap, size_t *len)
{
	struct kh_ts_cat cat = {.current = 1};
	uint8_t loop[KH_TS_PSI_MAX];
	struct kh_wr w;
	kh_err r;

	*len = 0;
	if (emm_pid < 0x0010 || emm_pid >= KH_TS_PID_NULL)
		return KH_ERR_INVAL;
	if (sec && n) {
		if (kh_ts_cat_parse(sec, n, &cat) != KH_OK || cat.section_number != 0 || cat.last_section_number != 0)
			return KH_ERR_FORMAT;
		cat.version = (uint8_t)((cat.version + 1u) & 31u);
	}
	kh_wr_init(&w, loop, sizeof loop);
	keep_others(&cat, ca_system_id, &w);
	if ((r = kh_ts_ca_desc_put(&w, ca_system_id, emm_pid, NULL, 0)) != KH_OK || w.err != KH_OK)
		return KH_ERR_TOO_LARGE;
	cat.desc = loop;
	cat.desc_len = w.len;
	r = kh_ts_cat_build(&cat, out, cap, len);
	if (r != KH_OK)
		*len = 0;
	return r;
}
