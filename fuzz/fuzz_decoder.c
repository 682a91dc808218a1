/*
 * libFuzzer harness: the decoder module (src/module/applet_dec.c and the initiator side it shares
 * with the CAM, applet_cam.c) and the CAM's side of the decoder's proof (CAM AUTH from a decoder,
 * with its ladder key; applet_pair.c), driven through kh_module_process with the bytes a host
 * carries, from three modules in service.
 *
 * Setup, once: a card, a CAM and a decoder module in static aligned memory (each with a constant
 * root key, the fixed clock FZ_CAS_NOW and a store that checks its counters) are personalised in
 * APDUs with certificates this harness signs with a fixed Ed25519 test root (fuzz_issue.h). A
 * unique EMM gives the card the ECM signer of fuzz_common.h, the service key and a right to
 * FZ_CAS_PRODUCT. The decoder module pairs with the CAM in ladder mode (CARD START with P1 = 1,
 * relayed by the harness), proving its certificate and giving the CAM a fresh ladder key; then the
 * CAM pairs with the card (kh_host_pair_cam_card), naming that decoder to it (a decoder proving
 * itself later ends a card channel opened for another one, so this is the order that holds). One ECM goes down the whole path (decoder
 * module -> CAM -> card, relayed two levels deep as a host does); its sealed answer is loaded
 * (LADDER LOAD). The three modules' memory is snapshotted, and restored before every input with
 * the deterministic random source reseeded (with a seed of its own, not setup's).
 *
 * Input: chunks u8 mode | u16 big-endian length | bytes (a short last chunk is taken as is).
 * mode & 7:
 *   0  the chunk is a command APDU for the decoder module (any instruction: CARD START / RESP /
 *      SEND, LADDER LOAD, DESCRAMBLE, ...). Bit 7: a relay request (9F00) is carried to the CAM
 *      and the CAM's answer given back with CARD RESP, as a host does, until the decoder stops
 *      asking (one level: what the CAM asks for the card is not carried).
 *   1  LADDER LOAD with the chunk as its data.
 *   2  DESCRAMBLE of the chunk's whole 188-byte packets (at most 21). Bit 7: the chunk as it is
 *      (any length). Bit 6: the harness first scrambles the packets (made scramblable: sync byte,
 *      TSC 00, a valid adaptation field) with the control words it knows are loaded, parity from
 *      bit 5, and the answer must be the clear packets again.
 *   3  an ECM the harness seals (service key, ECM signer) from the chunk: byte 0 the algorithm
 *      (1 + b % 3), byte 1 bit 0 the odd table_id, bit 1 a product the card has no right to; the
 *      control words from the bytes after. It goes down the path (decoder module CARD SEND ->
 *      CAM CARD SEND -> card ECM, the answers back by CARD RESP). Bit 6: its answer is then
 *      loaded, as kh_host_cas_load does.
 *   4  LADDER LOAD of a sealed answer the CAM gave in this input or in setup (byte 0 picks
 *      which), encoded as the host encodes it, with the bytes after applied as (position, xor)
 *      pairs.
 *   5  the harness pairs with the CAM as a decoder itself (kh_host_link_pair) and sends CAM AUTH
 *      inside that channel, then an ECM by CARD SEND in it (and the same in plain). The body by
 *      v = mode bits 3-5: 0 the chunk; 1 a decoder certificate of the test root and its signature
 *      over kh_auth_msg(DECODER, binding, CAM UA), the chunk after them; 2 the same with a
 *      ladder key (tag 3) from the chunk's first 32 bytes first; 3 a CAM's certificate and
 *      signature; 4 the decoder's, signed over the CAM label; 5 over another UA; 6 the decoder's
 *      with the whole chunk as the ladder key; 7 a decoder certificate of another root.
 *   6  CAS STATUS to the card and GET INFO to each module, in plain.
 *   7  the decoder module pairs with the CAM again, relayed (CARD START, P1 = 1 unless bit 6).
 *      Bit 7: the CAM pairs with its card again first (kh_host_pair_cam_card).
 *
 * A model follows what the decoder module must hold: its ladder key's epoch (a new one each time
 * its channel to the CAM ends, read from GET INFO's link state, or it pairs again), whether the
 * ladder is on, the control words loaded (the pair, or none), and every pair the CAM sealed, with
 * its epoch and the control words the harness put in its ECM. Invariants:
 * - Every answer of every module is 2..cap bytes; a refusal is the status word alone; no command
 *   of an input makes the decoder module or the CAM store (they keep nothing persistent after
 *   personalisation), and the card stores only with counter + 1.
 * - LADDER LOAD answers the status word alone. It succeeds only for a sealed answer the CAM gave
 *   under the decoder module's current ladder key (same alg, cp and sealed bytes): anything else
 *   the host makes, a pair from an earlier channel, or one altered in any byte is refused. When
 *   the model knows the state, the refusal is exact: LADDER with the ladder off or for a sealed
 *   pair that is not genuine, FORMAT for clear control words, the parser's error otherwise. A
 *   refused load leaves the pair loaded before (checked by DESCRAMBLE).
 * - DESCRAMBLE answers exactly as many bytes as it was given, descrambled with the loaded pair:
 *   byte-identical to kh_scr_descramble_once on the harness's side with the control words the
 *   harness put in the ECM; LADDER when nothing is loaded (after the channel ended, or after
 *   pairing again); APDU_LEN for data that is not whole packets; BUF, nothing else, into a
 *   response buffer one byte short.
 * - An ECM the harness sends while the whole path is intact (decoder linked to the CAM, the CAM
 *   to the card, the CAM's channel the decoder module's) is answered: in ladder mode by a sealed
 *   pair (never a clear control word) for the ECM's alg and cp, in open mode by the ECM's own
 *   control words; NO_RIGHT for a product the card has no right to. With the path broken, no
 *   control word comes back.
 * - CAM AUTH to the CAM: the harness-made bodies get exactly the answer the rules give (TLV walk,
 *   then FORMAT, then the certificate: CERT_ROLE for a CAM's, CERT for another root's, then
 *   AUTH for a signature over anything but the decoder label, this channel's binding and the
 *   CAM's UA), and an accepted fuzzer body holds a decoder certificate of the root and that
 *   signature. After acceptance an ECM on that channel comes back sealed under exactly the
 *   ladder key the body gave (kh_cw_ladder_open with it gives the ECM's control words), or in
 *   clear without one; unproven, it is refused with DECODER_UNPROVEN; in plain, CW_PLAIN.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhole/apdu.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/device.h"
#include "keyhole/host.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"
#include "keyhole/scramble.h"
#include "keyhole/transport.h"

#include "fuzz_common.h"
#include "fuzz_issue.h"

/* The test root, the modules' root keys, the harness's own signing keys (public test values). */
static const uint8_t fz_dec_root_sk[32] = "keyhole fuzz dec test root v1..";
static const uint8_t fz_dec_other_root_sk[32] = "keyhole fuzz dec other root v1.";
static const uint8_t fz_dec_module_root[3][KH_ROOT_KEY_LEN] = {
	"keyhole fuzz dec card root v1..", "keyhole fuzz dec cam root v1...", "keyhole fuzz dec dec root v1...",
};
static const uint8_t fz_dec_h_sk[32] = "keyhole fuzz dec harness dec v1";   /* a decoder the harness plays */
static const uint8_t fz_dec_h_cam_sk[32] = "keyhole fuzz dec harness cam v1"; /* a CAM's key, for CAM AUTH */
static const uint8_t fz_dec_dummy[32] = "keyhole fuzz dec unused key v1.";  /* Kp/Ku of CAM and decoder */
static const char fz_dec_input_seed[] = "keyhole fuzz rng v1, fuzz_decoder inputs";
#define CAM_UA 0x00005678u
#define DEC_UA 0x00009abcu
#define H_UA 0x00004444u   /* the decoder the harness plays in mode 5 */
#define H_CAM_UA 0x00004445u
#define CERT_NOT_BEFORE (FZ_CAS_NOW - 86400u * 365)
#define CERT_NOT_AFTER (FZ_CAS_NOW + 86400u * 365)

#define MEM_SIZE (1u << 17)
#define MAX_CMDS 24
#define MAX_CHUNK 4200
#define MAX_GEN 32
#define MAX_ROUNDS 8
#define PKT KH_SCR_PACKET_LEN
#define MAX_PKTS 21

enum { CARD, CAM, DEC, NMOD };

static struct kh_rng_det rng;
static _Alignas(16) uint8_t mem[NMOD][MEM_SIZE];
static _Alignas(16) uint8_t snap[NMOD][MEM_SIZE];
static struct kh_module *mod[NMOD];
static struct kh_transport tr[NMOD];
static uint8_t root_pk[32];
static struct kh_cas_signer ecm_sg;
static uint8_t h_der[KH_CERT_MAX], h_cam_der[KH_CERT_MAX], h_other_der[KH_CERT_MAX];
static size_t h_der_len, h_cam_der_len, h_other_der_len;
static int trace;

/* What each module's store callback saw; the CAM and the decoder module may not store per input. */
static struct store_log {
	uint64_t calls, expect;
	int forbid;
} st[NMOD], st0[NMOD];

/* A sealed pair the CAM gave, with the control words of the ECM it answered. */
struct entry {
	uint8_t alg, cw_len, sealed_len;
	uint32_t cp;
	uint8_t even[KH_CAS_CW_MAX], odd[KH_CAS_CW_MAX], sealed[KH_LADDER_SEALED_MAX];
	unsigned epoch;
};

/* What the decoder module must hold, as far as the harness can tell. */
static struct model {
	unsigned epoch; /* of the decoder module's current ladder key */
	int lon;        /* ladder on: 0, 1, -1 unknown */
	int loaded;     /* 0 nothing, 1 the pair ld, -1 unknown */
	struct entry ld;
	int cam_ladder; /* P1 of the decoder module's last completed pairing with the CAM */
	size_t ngen;
	struct entry gen[MAX_GEN];
	uint32_t cp;
} md, md0;

static kh_err store(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	struct store_log *s = ctx;
	uint64_t hdr = 0;

	CHECK(!s->forbid);
	CHECK(counter == s->expect + 1);
	CHECK(kh_module_blob_counter(blob, len, &hdr) == KH_OK && hdr == counter);
	s->calls++;
	s->expect = counter;
	return KH_OK;
}

static void die(const char *what)
{
	fprintf(stderr, "fuzz_decoder setup: %s\n", what);
	__builtin_trap();
}

static int sw_is(uint16_t sw, kh_err e)
{
	return sw == kh_err_to_sw(e);
}

/*
 * One command APDU to module i, the invariants of every answer checked: 2..cap bytes, a refusal
 * is the status word alone, a relay request carries the APDU to relay, the counter moves only by
 * a store. Returns the answer's length (in out).
 */
static size_t process(int i, const uint8_t *cmd, size_t len, uint8_t *out, size_t cap)
{
	uint64_t before = kh_module_counter(mod[i]);
	size_t n;
	uint16_t sw;

	n = kh_module_process(mod[i], cmd, len, out, cap);
	CHECK(n >= 2 && n <= cap);
	sw = fz_sw_of(out, n);
	if (sw != KH_SW_OK && sw != KH_SW_RELAY)
		CHECK(n == 2);
	CHECK(sw != KH_SW_RELAY || n > 2);
	CHECK(kh_module_counter(mod[i]) == st[i].expect && kh_module_counter(mod[i]) - before <= 1);
	return n;
}

/* Build an APDU into cmd (static), then process(). */
static size_t apdu(int i, uint8_t ins, uint8_t p1, const uint8_t *data, size_t lc, uint8_t *out, size_t cap)
{
	static uint8_t cmd[KH_APDU_MAX_CMD];
	struct kh_wr w;

	kh_wr_init(&w, cmd, sizeof cmd);
	CHECK(kh_apdu_build(&w, KH_CLA, ins, p1, 0, data, lc, 0) == KH_OK);
	return process(i, cmd, w.len, out, cap);
}

/* ---- the host's relays ---- */

/*
 * A command to the decoder module; while it asks (9F00), its APDU goes to the CAM and the CAM's
 * answer comes back by CARD RESP. The final answer in out (n bytes returned); *first the status
 * word of the decoder module's first answer.
 */
static size_t dec_relay(const uint8_t *cmd, size_t len, uint8_t *out, size_t cap, uint16_t *first)
{
	static uint8_t camresp[KH_APDU_MAX_RESP];
	size_t n, cn;
	int round = 0;

	n = process(DEC, cmd, len, out, cap);
	*first = fz_sw_of(out, n);
	while (fz_sw_of(out, n) == KH_SW_RELAY && round++ < MAX_ROUNDS) {
		cn = process(CAM, out, n - 2, camresp, sizeof camresp);
		n = apdu(DEC, KH_INS_CARD_RESP, 0, camresp, cn, out, cap);
	}
	return n;
}

/*
 * One inner command for the CAM inside the decoder module's channel (CARD SEND to the decoder
 * module, relayed). The CAM's inner answer (data || SW) into out: returns its length, or 0 when
 * the decoder module refused (the path is broken).
 */
static size_t via_dec(const uint8_t *inner, size_t len, uint8_t *out, size_t cap)
{
	static uint8_t cmd[KH_APDU_MAX_CMD], ans[KH_APDU_MAX_RESP];
	struct kh_wr w;
	uint16_t first;
	size_t n;

	kh_wr_init(&w, cmd, sizeof cmd);
	CHECK(kh_apdu_build(&w, KH_CLA, KH_INS_CARD_SEND, 0, 0, inner, len, 0) == KH_OK);
	n = dec_relay(cmd, w.len, ans, sizeof ans, &first);
	if (fz_sw_of(ans, n) != KH_SW_OK)
		return 0;
	/* The CAM's inner answer, opened by the decoder module: at least its status word. */
	CHECK(n - 2 >= 2 && n - 2 <= cap);
	memcpy(out, ans, n - 2);
	return n - 2;
}

/*
 * A command APDU for the card down the whole path: CARD SEND to the CAM inside the decoder
 * module's channel; while the CAM asks, the card's answer goes back by CARD RESP the same way.
 * The CAM's last inner answer into out (its length), 0 when the path broke on the way.
 */
static size_t card_via_path(const uint8_t *card_cmd, size_t len, uint8_t *out, size_t cap)
{
	static uint8_t inner[KH_APDU_MAX_CMD], cardresp[KH_APDU_MAX_RESP];
	struct kh_wr w;
	size_t n, cn;
	int round = 0;

	kh_wr_init(&w, inner, sizeof inner);
	CHECK(kh_apdu_build(&w, KH_CLA, KH_INS_CARD_SEND, 0, 0, card_cmd, len, 0) == KH_OK);
	if (!(n = via_dec(inner, w.len, out, cap)))
		return 0;
	while (fz_sw_of(out, n) == KH_SW_RELAY && round++ < MAX_ROUNDS) {
		cn = process(CARD, out, n - 2, cardresp, sizeof cardresp);
		kh_wr_init(&w, inner, sizeof inner);
		CHECK(kh_apdu_build(&w, KH_CLA, KH_INS_CARD_RESP, 0, 0, cardresp, cn, 0) == KH_OK);
		if (!(n = via_dec(inner, w.len, out, cap)))
			return 0;
	}
	return n;
}

/*
 * The card's answer inside the CAM's inner answer (n bytes): the CAM answers 9000 with the card's
 * whole response (data || SW) as its data. 1 with the card's data and status word out, 0 when
 * the CAM itself refused (its status word alone).
 */
static int card_answer(const uint8_t *ans, size_t n, size_t *dlen, uint16_t *sw)
{
	if (fz_sw_of(ans, n) != KH_SW_OK) {
		CHECK(n == 2);
		return 0;
	}
	CHECK(n >= 4);
	*dlen = n - 4;
	*sw = fz_sw_of(ans, n - 2);
	return 1;
}

/* ---- setup ---- */

/* PERSO INIT, certificates from the test root, PERSO CERTS. */
static void personalise(int i, enum kh_role role, uint32_t ua, const uint8_t kp[static 32], const uint8_t ku[static 32])
{
	static uint8_t buf[KH_APDU_MAX_DATA], resp[KH_APDU_MAX_RESP], sign_der[KH_CERT_MAX], pair_der[KH_CERT_MAX];
	uint8_t sign_pk[32] = {0}, pair_pk[32] = {0};
	size_t n, sign_len, pair_len;
	struct kh_rd rd;
	struct kh_tlv t;
	struct kh_wr w;

	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, 1, (uint8_t)role);
	kh_tlv_put_u32(&w, 2, ua);
	kh_tlv_put(&w, 3, root_pk, 32);
	kh_tlv_put(&w, 4, kp, 32);
	if (kh_tlv_put(&w, 5, ku, 32) != KH_OK)
		die("perso tlv");
	n = apdu(i, KH_INS_PERSO_INIT, 0, buf, w.len, resp, sizeof resp);
	if (fz_sw_of(resp, n) != KH_SW_OK)
		die("PERSO INIT");
	kh_rd_init(&rd, resp, n - 2);
	while (kh_tlv_next(&rd, &t) == 1)
		if (kh_tlv_fixed(&t, t.tag == 1 ? sign_pk : pair_pk, 32) != KH_OK)
			die("PERSO INIT answer");
	sign_len = fz_issue(fz_dec_root_sk, role, ua, EVP_PKEY_ED25519, sign_pk, CERT_NOT_BEFORE, CERT_NOT_AFTER, sign_der,
			    sizeof sign_der);
	pair_len = fz_issue(fz_dec_root_sk, role, ua, EVP_PKEY_X25519, pair_pk, CERT_NOT_BEFORE, CERT_NOT_AFTER, pair_der,
			    sizeof pair_der);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, 1, sign_der, sign_len);
	if (kh_tlv_put(&w, 2, pair_der, pair_len) != KH_OK)
		die("certs tlv");
	n = apdu(i, KH_INS_PERSO_CERTS, 0, buf, w.len, resp, sizeof resp);
	if (fz_sw_of(resp, n) != KH_SW_OK)
		die("PERSO CERTS");
}

/* The card's first EMM: the ECM signer, the service key, a right to FZ_CAS_PRODUCT. */
static void provision(void)
{
	static uint8_t cmds[KH_EMM_CMDS_MAX], sec[KH_EMM_MAX], der[KH_CERT_MAX], resp[KH_APDU_MAX_RESP];
	struct kh_emm_hdr h = {KH_EMM_TID_UNIQUE, KH_EMM_UNIQUE, FZ_CAS_UA, 1, 0};
	uint8_t pk[32];
	struct kh_wr w;
	size_t n = 0, derlen;

	ecm_sg.serial = FZ_CAS_ECM_SIGNER;
	memcpy(ecm_sg.sk, fz_cas_ecm_signer_sk, 32);
	if (kh_ed25519_public(ecm_sg.sk, pk) != KH_OK)
		die("signer key");
	derlen = fz_issue(fz_dec_root_sk, KH_ROLE_ECM_SIGNER, FZ_CAS_ECM_SIGNER, EVP_PKEY_ED25519, pk, CERT_NOT_BEFORE,
			  CERT_NOT_AFTER, der, sizeof der);
	kh_wr_init(&w, cmds, sizeof cmds);
	kh_emm_put_set_signer(&w, der, derlen);
	kh_emm_put_set_key(&w, FZ_CAS_KEY_ID, FZ_CAS_KEY_VERSION, fz_cas_skey);
	if (kh_emm_put_entitle(&w, FZ_CAS_PRODUCT, FZ_CAS_NOW - 86400u * 30, FZ_CAS_NOW + 86400u * 30) != KH_OK ||
	    kh_emm_seal(fz_cas_kp, &h, cmds, w.len, sec, sizeof sec, &n) != KH_OK)
		die("provision");
	n = apdu(CARD, KH_INS_EMM, 0, sec, n, resp, sizeof resp);
	if (fz_sw_of(resp, n) != KH_SW_OK)
		die("provision EMM");
}

/* ---- the model ---- */

static struct kh_module_info info(int i)
{
	struct kh_module_info in;

	CHECK(kh_host_info(&tr[i], &in) == KH_OK);
	return in;
}

/* The whole path is intact: decoder module linked to the CAM, CAM to the card, and the CAM's
 * channel is the one the decoder module proved itself on. */
static int path_ok(void)
{
	struct kh_module_info d = info(DEC), c = info(CAM);

	return d.link_state == KH_LINK_OPEN && d.peer_ua == CAM_UA && c.link_state == KH_LINK_OPEN &&
	       c.peer_ua == FZ_CAS_UA && c.chan_open && c.chan_peer_ua == DEC_UA;
}

/* The decoder module's channel to the CAM ended: its ladder key and loaded pair are gone. */
static void dropped(void)
{
	md.epoch++;
	md.lon = 0;
	md.loaded = 0;
}

/*
 * After a command that may move the decoder module's link: ins/p1 the command, first the status
 * word of its first answer, done whether the last answer was 9000 with the CAM's UA (a pairing
 * completed), before the link state before it.
 */
static void after_dec(uint8_t ins, uint8_t p1, uint16_t first, int done, uint8_t before)
{
	struct kh_module_info d = info(DEC);

	if (ins == KH_INS_CARD_START && first == KH_SW_RELAY) {
		/* accepted: the old channel is dropped, a new pairing begins with the ladder as asked;
		 * until it is proven the decoder may not have drawn its ladder key yet (-1: unknown) */
		dropped();
		md.lon = done || !p1 ? p1 : -1;
		if (done) {
			CHECK(d.link_state == KH_LINK_OPEN && d.peer_ua == CAM_UA);
			md.cam_ladder = p1;
		}
	}
	/* The link ends only by a drop, which takes the ladder key and the loaded pair with it. */
	if (d.link_state == KH_LINK_IDLE && (before != KH_LINK_IDLE || md.lon != 0 || md.loaded != 0))
		dropped();
}

static void record(const struct kh_cw_answer *a, const uint8_t *even, const uint8_t *odd)
{
	struct entry *e;

	if (md.ngen == MAX_GEN)
		memmove(md.gen, md.gen + 1, --md.ngen * sizeof md.gen[0]);
	e = &md.gen[md.ngen++];
	memset(e, 0, sizeof *e);
	e->alg = a->alg;
	e->cp = a->cp;
	e->cw_len = (uint8_t)kh_scr_keylen((enum kh_scr_alg)a->alg);
	memcpy(e->even, even, e->cw_len);
	memcpy(e->odd, odd, e->cw_len);
	e->sealed_len = a->sealed_len;
	memcpy(e->sealed, a->sealed, a->sealed_len);
	e->epoch = md.epoch;
}

/* The genuine pair a parsed answer is (same alg, cp, sealed bytes), of the current epoch or any. */
static const struct entry *genuine(const struct kh_cw_answer *a, int any_epoch)
{
	for (size_t i = 0; i < md.ngen; i++) {
		const struct entry *e = &md.gen[i];
		if ((any_epoch || e->epoch == md.epoch) && e->alg == a->alg && e->cp == a->cp &&
		    e->sealed_len == a->sealed_len && memcmp(e->sealed, a->sealed, a->sealed_len) == 0)
			return e;
	}
	return NULL;
}

/* The TLV a host sends in LADDER LOAD for a sealed pair (kh_host_cas_load's encoding). */
static size_t load_tlv(const struct entry *e, uint8_t *out, size_t cap)
{
	struct kh_wr w;

	kh_wr_init(&w, out, cap);
	kh_tlv_put_u8(&w, KH_CW_T_ALG, e->alg);
	kh_tlv_put_u32(&w, KH_CW_T_CP, e->cp);
	CHECK(kh_tlv_put(&w, KH_CW_T_LADDER, e->sealed, e->sealed_len) == KH_OK);
	return w.len;
}

/* ---- the decoder module's own commands ---- */

/* LADDER LOAD of data: the answer the model calls for; the model follows a success. */
static void ladder_load(const uint8_t *d, size_t n)
{
	static uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_cw_answer a;
	const struct entry *cur = NULL, *any = NULL;
	kh_err pr, want;
	uint16_t sw;
	size_t rn;

	if (n > KH_APDU_MAX_DATA)
		return;
	pr = kh_cw_answer_parse(d, n, &a);
	if (pr == KH_OK && a.sealed_len) {
		cur = genuine(&a, 0);
		any = genuine(&a, 1);
	}
	/* with the ladder on: the parser's verdict, FORMAT for clear CWs, LADDER for a pair that is
	 * not one the CAM sealed under the current key */
	want = pr != KH_OK ? pr : !a.sealed_len ? KH_ERR_FORMAT : cur ? KH_OK : KH_ERR_LADDER;
	rn = apdu(DEC, KH_INS_LADDER_LOAD, 0, d, n, resp, sizeof resp);
	sw = fz_sw_of(resp, rn);
	if (trace)
		fprintf(stderr, "  LADDER LOAD %zu bytes -> %04X (model: on %d, want %04X)\n", n, sw, md.lon,
			kh_err_to_sw(want));
	CHECK(rn == 2);
	if (md.lon == 1)
		CHECK(sw == kh_err_to_sw(want));
	else if (md.lon == 0)
		CHECK(sw_is(sw, KH_ERR_LADDER));
	else
		CHECK(sw == kh_err_to_sw(want) || sw_is(sw, KH_ERR_LADDER));
	if (sw == KH_SW_OK) {
		/* never a pair the CAM did not seal: that would be a forgery */
		CHECK(any != NULL);
		CHECK(cur != NULL);
		md.ld = *cur;
		md.loaded = 1;
	}
	kh_wipe(&a, sizeof a);
}

/* Make 188-byte packets scramblable: sync byte, TSC 00, an adaptation field inside the packet. */
static void normalise(uint8_t *p, size_t k)
{
	for (size_t i = 0; i < k; i++, p += PKT) {
		p[0] = 0x47;
		p[3] &= 0x3F;
		if (!(p[3] & 0x30))
			p[3] |= 0x10;
		if ((p[3] & 0x20) && p[4] > 183)
			p[4] = (uint8_t)(p[4] % 184);
	}
}

/* DESCRAMBLE (mode 2). */
static void descramble(uint8_t mode, const uint8_t *chunk, size_t len)
{
	static uint8_t pk[KH_APDU_MAX_DATA], clear[KH_APDU_MAX_DATA], ref[KH_APDU_MAX_DATA], resp[KH_APDU_MAX_RESP];
	size_t lc = mode & 0x80 ? len : (len / PKT < MAX_PKTS ? len / PKT : MAX_PKTS) * PKT, k, rn;
	int whole, roundtrip = 0;
	kh_err want;
	uint16_t sw;

	if (lc > KH_APDU_MAX_DATA)
		return;
	memcpy(pk, chunk, lc);
	whole = lc && lc % PKT == 0;
	k = lc / PKT;
	if (whole && (mode & 0x40) && md.loaded == 1) {
		/* scramble them first with the pair the model says is loaded */
		struct kh_scr *s = NULL;
		normalise(pk, k);
		memcpy(clear, pk, lc);
		CHECK(kh_scr_new((enum kh_scr_alg)md.ld.alg, 0, &s) == KH_OK);
		CHECK(kh_scr_set_key(s, KH_SCR_EVEN, md.ld.even, md.ld.cw_len) == KH_OK);
		CHECK(kh_scr_set_key(s, KH_SCR_ODD, md.ld.odd, md.ld.cw_len) == KH_OK);
		CHECK(kh_scr_scramble(s, pk, k, mode & 0x20 ? KH_SCR_ODD : KH_SCR_EVEN) == KH_OK);
		kh_scr_free(s);
		roundtrip = 1;
	}
	want = !whole ? KH_ERR_APDU_LEN : md.loaded == 0 ? KH_ERR_LADDER : KH_OK;
	/* into a response buffer one byte short: BUF, or the refusal it would get anyway */
	if (lc) {
		rn = apdu(DEC, KH_INS_DESCRAMBLE, 0, pk, lc, resp, lc + 1);
		CHECK(rn == 2);
		if (md.loaded != -1)
			CHECK(fz_sw_of(resp, rn) == kh_err_to_sw(want == KH_OK ? KH_ERR_BUF : want));
	}
	rn = apdu(DEC, KH_INS_DESCRAMBLE, 0, pk, lc, resp, sizeof resp);
	sw = fz_sw_of(resp, rn);
	if (trace)
		fprintf(stderr, "  DESCRAMBLE %zu bytes -> %04X (model: loaded %d)\n", lc, sw, md.loaded);
	if (md.loaded != -1)
		CHECK(sw == kh_err_to_sw(want));
	else
		CHECK(sw == kh_err_to_sw(want) || sw_is(sw, KH_ERR_LADDER));
	if (sw != KH_SW_OK)
		return;
	/* the same number of bytes back, descrambled as the harness does it with the loaded pair */
	CHECK(rn == lc + 2);
	if (md.loaded != 1)
		return;
	memcpy(ref, pk, lc);
	CHECK(kh_scr_descramble_once((enum kh_scr_alg)md.ld.alg, 0, md.ld.even, md.ld.odd, md.ld.cw_len, ref, k, NULL) ==
	      KH_OK);
	CHECK(memcmp(resp, ref, lc) == 0);
	if (roundtrip)
		CHECK(memcmp(resp, clear, lc) == 0);
}

/* ---- the path ---- */

/* An ECM the harness seals (mode 3). */
static size_t make_ecm(const uint8_t *chunk, size_t len, struct kh_ecm *e, uint8_t *out, size_t cap)
{
	size_t n, i;

	memset(e, 0, sizeof *e);
	e->alg = (uint8_t)(1 + (len ? chunk[0] : 0) % 3);
	e->cw_len = (uint8_t)kh_scr_keylen((enum kh_scr_alg)e->alg);
	e->h.table_id = len > 1 && (chunk[1] & 1) ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN;
	e->h.key_id = FZ_CAS_KEY_ID;
	e->h.key_version = FZ_CAS_KEY_VERSION;
	e->h.cp = md.cp++;
	e->access = KH_ECM_PRODUCT;
	e->product = len > 1 && (chunk[1] & 2) ? FZ_CAS_PRODUCT + 1 : FZ_CAS_PRODUCT;
	e->time = FZ_CAS_NOW;
	for (i = 0; i < KH_CAS_CW_MAX; i++) {
		e->cw_even[i] = len > 2 + i ? chunk[2 + i] : (uint8_t)i;
		e->cw_odd[i] = len > 18 + i ? chunk[18 + i] : (uint8_t)(0x80 + i);
	}
	CHECK(kh_ecm_seal(fz_cas_skey, &ecm_sg, e, out, cap, &n) == KH_OK);
	return n;
}

/* An ECM down the path (mode 3); bit 6 loads its answer. */
static void path_ecm(uint8_t mode, const uint8_t *chunk, size_t len)
{
	static uint8_t sec[KH_ECM_MAX], cmd[KH_APDU_MAX_CMD], ans[KH_APDU_MAX_RESP], tlv[128];
	struct kh_cw_answer a;
	struct kh_ecm e;
	struct kh_wr w;
	size_t n, dlen = 0;
	uint16_t sw = 0;
	uint8_t before = info(DEC).link_state;
	int ok = path_ok(), loaded = 0, carded;

	n = make_ecm(chunk, len, &e, sec, sizeof sec);
	kh_wr_init(&w, cmd, sizeof cmd);
	CHECK(kh_apdu_build(&w, KH_CLA, KH_INS_ECM, 0, 0, sec, n, 0) == KH_OK);
	n = card_via_path(cmd, w.len, ans, sizeof ans);
	/* the card answered (through the CAM) */
	carded = n && card_answer(ans, n, &dlen, &sw);
	if (trace)
		fprintf(stderr, "  ECM alg %u cp %u -> %s %04X (path %s, ladder %d)\n", e.alg, e.h.cp,
			!n ? "decoder refused" : carded ? "card" : "CAM refused", carded ? sw : n ? fz_sw_of(ans, n) : 0,
			ok ? "ok" : "broken", md.cam_ladder);
	if (ok) {
		CHECK(carded);
		CHECK(sw == (e.product == FZ_CAS_PRODUCT ? KH_SW_OK : kh_err_to_sw(KH_ERR_NO_RIGHT)));
	}
	if (carded && sw == KH_SW_OK) {
		/* control words came back: only on an intact path */
		CHECK(ok);
		CHECK(kh_cw_answer_parse(ans, dlen, &a) == KH_OK && a.alg == e.alg && a.cp == e.h.cp);
		if (md.cam_ladder) {
			/* sealed for the decoder module: never a clear control word past the CAM */
			CHECK(a.sealed_len != 0 && a.cw_len == 0);
			record(&a, e.cw_even, e.cw_odd);
			loaded = mode & 0x40;
		} else {
			CHECK(a.sealed_len == 0 && a.cw_len == e.cw_len && memcmp(a.even, e.cw_even, a.cw_len) == 0 &&
			      memcmp(a.odd, e.cw_odd, a.cw_len) == 0);
		}
		kh_wipe(&a, sizeof a);
	} else if (carded) {
		CHECK(dlen == 0);
	}
	after_dec(KH_INS_CARD_SEND, 0, 0, 0, before);
	if (loaded) {
		n = load_tlv(&md.gen[md.ngen - 1], tlv, sizeof tlv);
		ladder_load(tlv, n);
		CHECK(md.loaded == 1);
	}
	kh_wipe(&e, sizeof e);
}

/* A genuine pair's encoding, altered by (position, xor) pairs (mode 4). */
static void load_mutated(const uint8_t *chunk, size_t len)
{
	uint8_t tlv[128];
	size_t n, i;

	if (!md.ngen || !len)
		return;
	n = load_tlv(&md.gen[chunk[0] % md.ngen], tlv, sizeof tlv);
	for (i = 1; i + 1 < len; i += 2)
		tlv[chunk[i] % n] ^= chunk[i + 1];
	ladder_load(tlv, n);
}

/* The decoder module pairs with the CAM again (mode 7). */
static void repair(uint8_t mode)
{
	static uint8_t cmd[8], resp[KH_APDU_MAX_RESP];
	uint8_t p1 = !(mode & 0x40), before;
	uint16_t first;
	size_t n;
	int done;

	if (mode & 0x80) {
		uint32_t ua = 0;
		kh_err r = kh_host_pair_cam_card(&tr[CAM], &tr[CARD], &ua);
		if (trace)
			fprintf(stderr, "  CAM <-> card again: %s\n", kh_strerror(r));
		CHECK(r == KH_OK && ua == FZ_CAS_UA);
	}
	before = info(DEC).link_state;
	cmd[0] = KH_CLA;
	cmd[1] = KH_INS_CARD_START;
	cmd[2] = p1;
	cmd[3] = 0;
	n = dec_relay(cmd, 4, resp, sizeof resp, &first);
	done = fz_sw_of(resp, n) == KH_SW_OK && n == 6 && kh_get_be32(resp) == CAM_UA;
	if (trace)
		fprintf(stderr, "  decoder <-> CAM again (P1 %u) -> %04X\n", p1, fz_sw_of(resp, n));
	/* the CAM always takes the decoder module: a new channel, proven, with the ladder as asked */
	CHECK(first == KH_SW_RELAY && done);
	after_dec(KH_INS_CARD_START, p1, first, done, before);
	CHECK(md.lon == p1 && md.loaded == 0 && md.cam_ladder == p1);
}

/* A raw APDU to the decoder module (mode 0); bit 7 carries its relay requests to the CAM. */
static void raw(uint8_t mode, const uint8_t *chunk, size_t len)
{
	static uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_apdu a;
	uint8_t before = info(DEC).link_state;
	uint16_t first;
	size_t n;
	int parsed = kh_apdu_parse(chunk, len, &a) == KH_OK && a.cla == KH_CLA;

	if (parsed && a.ins == KH_INS_LADDER_LOAD && !a.p1 && !a.p2 && a.lc) {
		ladder_load(a.data, a.lc);
		return;
	}
	if (mode & 0x80) {
		n = dec_relay(chunk, len, resp, sizeof resp, &first);
	} else {
		n = process(DEC, chunk, len, resp, sizeof resp);
		first = fz_sw_of(resp, n);
	}
	if (trace)
		fprintf(stderr, "  raw %02X %zu bytes -> %04X, first %04X\n", parsed ? a.ins : 0, len, fz_sw_of(resp, n), first);
	if (parsed && a.ins == KH_INS_DESCRAMBLE && !a.p1 && !a.p2) {
		/* exactly as many bytes back, or a refusal the model allows */
		uint16_t sw = fz_sw_of(resp, n);
		CHECK(sw != KH_SW_RELAY);
		if (sw == KH_SW_OK)
			CHECK(md.loaded != 0 && n == a.lc + 2);
		else
			CHECK(!(a.lc && a.lc % PKT == 0 && md.loaded == 1));
		return;
	}
	if (parsed)
		after_dec(a.ins, a.p1, first,
			  a.ins == KH_INS_CARD_START && fz_sw_of(resp, n) == KH_SW_OK && n == 6 && kh_get_be32(resp) == CAM_UA,
			  before);
	else
		after_dec(0, 0, first, 0, before);
}

/* ---- the CAM's side of a decoder's proof (mode 5) ---- */

/*
 * What the CAM must answer to a CAM AUTH body from a decoder: the TLV walk (first tags 1, 2 and
 * 3 kept; a second one is FORMAT, an unknown tag TLV_TAG, a cut one its error), then FORMAT
 * without certificate or a 64-byte signature or with a ladder key other than 32 bytes, then
 * verdict (the certificate's and the signature's). *key: the ladder key given, or NULL.
 */
static kh_err cam_auth_expect(const uint8_t *body, size_t n, kh_err verdict, const uint8_t **key)
{
	struct kh_tlv t, cert = {0}, sig = {0}, lk = {0};
	struct kh_rd rd;
	int k;

	*key = NULL;
	kh_rd_init(&rd, body, n);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag == 1 && !cert.v)
			cert = t;
		else if (t.tag == 2 && !sig.v)
			sig = t;
		else if (t.tag == 3 && !lk.v)
			lk = t;
		else
			return t.tag >= 1 && t.tag <= 3 ? KH_ERR_FORMAT : KH_ERR_TLV_TAG;
	}
	if (k < 0)
		return k;
	if (!cert.v || !sig.v || sig.len != KH_ED25519_SIG_LEN || (lk.v && lk.len != 32))
		return KH_ERR_FORMAT;
	*key = lk.v;
	return verdict;
}

/* One inner command on the harness's own channel to the CAM; its inner answer (n) into out. */
static size_t h_cmd(struct kh_link *hl, uint8_t ins, const uint8_t *data, size_t lc, uint8_t *out, size_t cap)
{
	static uint8_t inner[KH_APDU_MAX_CMD];
	struct kh_wr w;
	size_t n = 0;

	kh_wr_init(&w, inner, sizeof inner);
	CHECK(kh_apdu_build(&w, KH_CLA, ins, 0, 0, data, lc, 0) == KH_OK);
	CHECK(kh_host_link_cmd(hl, &tr[CAM], inner, w.len, FZ_CAS_NOW, out, cap, &n) == KH_OK);
	CHECK(n >= 2 && n <= cap);
	if (fz_sw_of(out, n) != KH_SW_OK && fz_sw_of(out, n) != KH_SW_RELAY)
		CHECK(n == 2);
	return n;
}

static void h_cam_auth(uint8_t mode, const uint8_t *chunk, size_t len)
{
	static const uint8_t id[5] = {KH_ROLE_DECODER, 0, 0, 0x44, 0x44};
	static uint8_t body[KH_APDU_MAX_DATA], ans[KH_APDU_MAX_RESP], cmd[KH_APDU_MAX_CMD], cardresp[KH_APDU_MAX_RESP];
	static uint8_t sec[KH_ECM_MAX];
	uint8_t msg[KH_CAM_AUTH_MSG_LEN], sig[KH_ED25519_SIG_LEN], key32[32] = {0}, key[32];
	unsigned v = (mode >> 3) & 7;
	const uint8_t *der = v == 3 ? h_cam_der : v == 7 ? h_other_der : h_der;
	size_t derlen = v == 3 ? h_cam_der_len : v == 7 ? h_other_der_len : h_der_len, n, cn;
	const uint8_t *sk = v == 3 ? fz_dec_h_cam_sk : fz_dec_h_sk, *kp = NULL;
	struct kh_cw_answer a;
	struct kh_link hl;
	struct kh_ecm e;
	struct kh_wr w;
	kh_err want = KH_OK, verdict;
	uint16_t sw;
	int round = 0, have_key, proven, card_ok, carded;
	size_t dlen = 0;

	kh_link_init(&hl, root_pk, KH_ROLE_CAM, id, sizeof id);
	CHECK(kh_host_link_pair(&hl, &tr[CAM], FZ_CAS_NOW) == KH_OK && hl.peer.ua == CAM_UA);

	kh_wr_init(&w, body, sizeof body);
	if (v == 0) {
		kh_wr_bytes(&w, chunk, len);
	} else {
		CHECK(kh_auth_msg(v == 3 || v == 4 ? KH_ROLE_CAM : KH_ROLE_DECODER, hl.ch.binding, CAM_UA + (v == 5), msg) ==
		      KH_OK);
		CHECK(kh_ed25519_sign(sk, msg, sizeof msg, sig) == KH_OK);
		kh_tlv_put(&w, 1, der, derlen);
		kh_tlv_put(&w, 2, sig, sizeof sig);
		if (v == 2) {
			memcpy(key32, chunk, len < 32 ? len : 32);
			kh_tlv_put(&w, 3, key32, 32);
			if (len > 32)
				kh_wr_bytes(&w, chunk + 32, len - 32);
		} else if (v == 6) {
			kh_tlv_put(&w, 3, chunk, len);
		} else {
			kh_wr_bytes(&w, chunk, len);
		}
		verdict = v == 3 ? KH_ERR_CERT_ROLE : v == 7 ? KH_ERR_CERT : v == 4 || v == 5 ? KH_ERR_AUTH : KH_OK;
		want = cam_auth_expect(body, w.len, verdict, &kp);
	}
	/* a body the channel cannot carry (the sealed command over KH_APDU_MAX_DATA) is not sent */
	if (w.err != KH_OK || !w.len || 7 + w.len + KH_CHAN_OVERHEAD > KH_APDU_MAX_DATA) {
		kh_link_wipe(&hl);
		return;
	}
	n = h_cmd(&hl, KH_INS_CAM_AUTH, body, w.len, ans, sizeof ans);
	sw = fz_sw_of(ans, n);
	if (trace)
		fprintf(stderr, "  CAM AUTH (harness as decoder) v%u %zu bytes -> %04X\n", v, w.len, sw);
	CHECK(n == 2);
	if (v != 0)
		CHECK(sw == kh_err_to_sw(want));
	if (sw == KH_SW_OK) {
		CHECK(fz_auth_genuine(body, w.len, root_pk, KH_ROLE_DECODER, hl.ch.binding, CAM_UA));
		if (v == 0)
			CHECK(cam_auth_expect(body, w.len, KH_OK, &kp) == KH_OK);
	}
	proven = sw == KH_SW_OK;
	have_key = proven && kp != NULL;
	if (have_key)
		memcpy(key, kp, 32);

	/* An ECM on this channel: refused unproven; sealed under exactly the key given, or clear. */
	n = make_ecm(chunk, len, &e, sec, sizeof sec);
	kh_wr_init(&w, cmd, sizeof cmd);
	CHECK(kh_apdu_build(&w, KH_CLA, KH_INS_ECM, 0, 0, sec, n, 0) == KH_OK);
	/* in plain, never */
	cn = apdu(CAM, KH_INS_CARD_SEND, 0, cmd, w.len, cardresp, sizeof cardresp);
	CHECK(sw_is(fz_sw_of(cardresp, cn), KH_ERR_CW_PLAIN));
	card_ok = info(CAM).link_state == KH_LINK_OPEN && info(CAM).peer_ua == FZ_CAS_UA;
	n = h_cmd(&hl, KH_INS_CARD_SEND, cmd, w.len, ans, sizeof ans);
	if (!proven) {
		CHECK(n == 2 && sw_is(fz_sw_of(ans, n), KH_ERR_DECODER_UNPROVEN));
		goto out;
	}
	while (fz_sw_of(ans, n) == KH_SW_RELAY && round++ < MAX_ROUNDS) {
		cn = process(CARD, ans, n - 2, cardresp, sizeof cardresp);
		n = h_cmd(&hl, KH_INS_CARD_RESP, cardresp, cn, ans, sizeof ans);
	}
	carded = card_answer(ans, n, &dlen, &sw);
	if (trace)
		fprintf(stderr, "  ECM on the harness's channel -> %s %04X (ladder key %d, card linked %d)\n",
			carded ? "card" : "CAM refused", carded ? sw : fz_sw_of(ans, n), have_key, card_ok);
	if (!card_ok) {
		CHECK(!carded || sw != KH_SW_OK);
		goto out;
	}
	CHECK(carded && sw == (e.product == FZ_CAS_PRODUCT ? KH_SW_OK : kh_err_to_sw(KH_ERR_NO_RIGHT)));
	if (sw != KH_SW_OK)
		goto out;
	CHECK(kh_cw_answer_parse(ans, dlen, &a) == KH_OK && a.alg == e.alg && a.cp == e.h.cp);
	if (have_key) {
		CHECK(a.sealed_len != 0 && a.cw_len == 0);
		CHECK(kh_cw_ladder_open(key, &a) == KH_OK);
	} else {
		CHECK(a.sealed_len == 0);
	}
	CHECK(a.cw_len == e.cw_len && memcmp(a.even, e.cw_even, a.cw_len) == 0 && memcmp(a.odd, e.cw_odd, a.cw_len) == 0);
	kh_wipe(&a, sizeof a);
out:
	kh_wipe(&e, sizeof e);
	kh_wipe(key, sizeof key);
	kh_link_wipe(&hl);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static struct kh_module_env env[NMOD];
	static uint8_t resp[KH_APDU_MAX_RESP], sec[KH_ECM_MAX], cmd[KH_APDU_MAX_CMD], tlv[128];
	uint8_t pk[32], cmd4[4] = {KH_CLA, KH_INS_CARD_START, 1, 0};
	struct kh_cw_answer a;
	struct kh_ecm e;
	struct kh_wr w;
	uint32_t ua = 0;
	uint16_t first;
	size_t n;

	(void)argc, (void)argv;
	trace = getenv("FZ_DEC_TRACE") != NULL;
	if (kh_module_size() > MEM_SIZE)
		die("kh_module_size() > MEM_SIZE");
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	if (kh_ed25519_public(fz_dec_root_sk, root_pk) != KH_OK)
		die("root key");
	for (int i = 0; i < NMOD; i++) {
		env[i] = (struct kh_module_env){store, fz_cas_now, &st[i]};
		if (kh_module_init(mem[i], sizeof mem[i], fz_dec_module_root[i], &env[i], &mod[i]) != KH_OK)
			die("module init");
		kh_transport_inproc(&tr[i], mod[i]);
	}
	personalise(CARD, KH_ROLE_CARD, FZ_CAS_UA, fz_cas_kp, fz_cas_ku);
	personalise(CAM, KH_ROLE_CAM, CAM_UA, fz_dec_dummy, fz_dec_dummy);
	personalise(DEC, KH_ROLE_DECODER, DEC_UA, fz_dec_dummy, fz_dec_dummy);
	provision();

	/* the harness's own certificates: a decoder, a CAM, a decoder of another root */
	if (kh_ed25519_public(fz_dec_h_sk, pk) != KH_OK)
		die("harness key");
	h_der_len = fz_issue(fz_dec_root_sk, KH_ROLE_DECODER, H_UA, EVP_PKEY_ED25519, pk, CERT_NOT_BEFORE, CERT_NOT_AFTER,
			     h_der, sizeof h_der);
	h_other_der_len = fz_issue(fz_dec_other_root_sk, KH_ROLE_DECODER, H_UA, EVP_PKEY_ED25519, pk, CERT_NOT_BEFORE,
				   CERT_NOT_AFTER, h_other_der, sizeof h_other_der);
	if (kh_ed25519_public(fz_dec_h_cam_sk, pk) != KH_OK)
		die("harness cam key");
	h_cam_der_len = fz_issue(fz_dec_root_sk, KH_ROLE_CAM, H_CAM_UA, EVP_PKEY_ED25519, pk, CERT_NOT_BEFORE,
				 CERT_NOT_AFTER, h_cam_der, sizeof h_cam_der);

	/* The decoder module pairs with the CAM, in ladder mode, then the CAM with its card, naming
	 * that decoder (a decoder that proves itself later ends a card channel opened for another). */
	n = dec_relay(cmd4, sizeof cmd4, resp, sizeof resp, &first);
	if (fz_sw_of(resp, n) != KH_SW_OK || n != 6 || kh_get_be32(resp) != CAM_UA)
		die("decoder <-> CAM");
	if (kh_host_pair_cam_card(&tr[CAM], &tr[CARD], &ua) != KH_OK || ua != FZ_CAS_UA)
		die("CAM <-> card");
	md.epoch = 1;
	md.lon = 1;
	md.cam_ladder = 1;
	md.cp = 1;
	if (!path_ok())
		die("path");

	/* One ECM down the path; its sealed answer loaded. */
	n = make_ecm((const uint8_t *)"\x01", 1, &e, sec, sizeof sec);
	kh_wr_init(&w, cmd, sizeof cmd);
	if (kh_apdu_build(&w, KH_CLA, KH_INS_ECM, 0, 0, sec, n, 0) != KH_OK)
		die("ecm apdu");
	n = card_via_path(cmd, w.len, resp, sizeof resp);
	if (n < 4 || fz_sw_of(resp, n) != KH_SW_OK || fz_sw_of(resp, n - 2) != KH_SW_OK ||
	    kh_cw_answer_parse(resp, n - 4, &a) != KH_OK || !a.sealed_len)
		die("setup ECM: no sealed answer");
	record(&a, e.cw_even, e.cw_odd);
	n = load_tlv(&md.gen[0], tlv, sizeof tlv);
	n = apdu(DEC, KH_INS_LADDER_LOAD, 0, tlv, n, resp, sizeof resp);
	if (fz_sw_of(resp, n) != KH_SW_OK)
		die("setup LADDER LOAD");
	md.ld = md.gen[0];
	md.loaded = 1;

	for (int i = 0; i < NMOD; i++)
		memcpy(snap[i], mem[i], kh_module_size());
	st[CAM].forbid = st[DEC].forbid = 1;
	memcpy(st0, st, sizeof st);
	md0 = md;
	return 0;
}

/* Mode 6: the card's CAS STATUS and every module's GET INFO, in plain. */
static void look(void)
{
	static const uint8_t get_status[] = {KH_CLA, KH_INS_CAS_STATUS, 0, 0};
	static uint8_t resp[KH_APDU_MAX_RESP];
	struct kh_cas_status cs;
	size_t n;

	n = process(CARD, get_status, sizeof get_status, resp, sizeof resp);
	CHECK(fz_sw_of(resp, n) == KH_SW_OK && kh_cas_status_parse(resp, n - 2, &cs) == KH_OK);
	for (int i = 0; i < NMOD; i++) {
		struct kh_module_info in = info(i);
		CHECK(in.lifecycle == 2); /* personalised */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0, ncmds = 0;

	if (size > 8 * MAX_CHUNK)
		return 0;
	for (int i = 0; i < NMOD; i++)
		memcpy(mem[i], snap[i], kh_module_size());
	memcpy(st, st0, sizeof st);
	md = md0;
	/* A stream of its own, not setup's: the deterministic source gives the same bytes at the
	 * same call index, so a ladder key drawn at the index setup drew its key at would be that
	 * key again, and setup's sealed pair would open under a new channel. */
	kh_rng_det_init(&rng, (const uint8_t *)fz_dec_input_seed, sizeof fz_dec_input_seed - 1);

	while (size - off >= 3 && ncmds < MAX_CMDS) {
		uint8_t mode = data[off];
		size_t len = (size_t)(data[off + 1] << 8 | data[off + 2]);
		const uint8_t *chunk = data + off + 3;

		off += 3;
		if (len > size - off)
			len = size - off;
		off += len;
		ncmds++;
		if (len > MAX_CHUNK)
			len = MAX_CHUNK;
		if (trace)
			fprintf(stderr, "mode %02X, %zu bytes\n", mode, len);
		switch (mode & 7) {
		case 0: raw(mode, chunk, len); break;
		case 1: ladder_load(chunk, len); break;
		case 2: descramble(mode, chunk, len); break;
		case 3: path_ecm(mode, chunk, len); break;
		case 4: load_mutated(chunk, len); break;
		case 5: h_cam_auth(mode, chunk, len); break;
		case 6: look(); break;
		default: repair(mode); break;
		}
	}
	return 0;
}
