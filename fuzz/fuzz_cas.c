/*
 * libFuzzer harness: the card's CAS applet (src/module/applet_cas.c) driven through
 * kh_module_process, from a card in service rather than a blank one, so that inputs reach the
 * EMM command list, the signature checks, the rights check and impulse purchases.
 *
 * Setup, once (LLVMFuzzerInitialize): a module in static aligned memory with a constant root
 * key, a fixed clock and a store that checks and counts its calls is personalised as card
 * FZ_CAS_UA in APDUs (PERSO INIT with fz_cas_kp / fz_cas_ku, then PERSO CERTS with certificates
 * this harness signs with a fixed test root, deterministic Ed25519); a unique EMM (seq 1) gives
 * it the operator's ECM and EMM signers (SET SIGNER with certificates issued from the same root,
 * for the fixed keys and serials of fuzz_common.h) and installs the service key, the group and
 * broadcast keys, a right to FZ_CAS_PRODUCT and FZ_CAS_CREDIT of credit; then the harness pairs
 * with the card as initiator (kh_link, seed 000) and proves a CAM on that channel (CAM AUTH with
 * a CAM signing certificate from the same root, as applet_cam.c's prove() does). The module
 * memory and the link are snapshotted, and restored before every input, with the deterministic
 * random source reseeded. Four more signers (two per role, serials above the first two) are
 * certified too, for inputs to give to the card; a forger's key is certified by nobody.
 *
 * Input: chunks, each u8 mode | u16 big-endian length | bytes (a short last chunk is taken as
 * is). mode & 7 says what the bytes are:
 *   0  a whole EMM section, sent as EMM (INS 44)
 *   1  a command TLV list, sealed by the harness as a unique EMM under Kp (version 1)
 *   2  the same as a group EMM under the group key the card holds, signed (version 2)
 *   3  the same as an EMM to all under the broadcast key the card holds, signed
 *   4  a whole ECM section, sent as ECM (INS 40) inside the proven channel
 *   5  a whole ECM section, sent as PURCHASE (INS 42) inside the proven channel
 *   6  an ECM's TLV plaintext, sealed by the harness under the service key and signed, sent as ECM
 *   7  the same, sent as PURCHASE
 * For 4-5, mode bit 7 sends a CAM AUTH inside the channel instead, its body made from the chunk
 * as bits 3-5 say (cam_auth(): the CAM's own proof, a decoder's, labels and UA crossed, a ladder
 * key a card takes none of). For 0-3, mode bit 7 sends the EMM inside the channel instead of in
 * plain. For 1-3 the harness picks a fresh sequence number (one above the card's); mode bit 6
 * reuses the card's last one, which must be refused as a replay. For 6-7, mode bit 6 picks the
 * odd table_id. Bits 3-5 (v):
 * for 1, v = 1..6 puts a SET SIGNER with the certificate of signer v - 1 before the commands and
 * v = 7 leaves one sequence number out (a gap); for 2, 3, 6 and 7 v picks the signer: 0 the one
 * of that role given in setup, 1..6 signer v - 1 (of either role, known to the card or not), 7
 * the forger under the setup signer's serial.
 *
 * A small model follows the card: credit, last reload id, EMM sequence numbers, group and its
 * key, the broadcast key, the service key (id 1, version 1) and the signers the card knows (role,
 * serial, key, in the card's order, with its rotation rule: two per role, a newer serial replaces
 * the older, an older one is ignored), updated from the commands of every EMM the card accepts
 * (opened again with the model's key: an EMM the card accepts must open under it) and from
 * PURCHASE answers. After every command CAS STATUS is read and compared.
 *
 * Invariants: every response is 2..cap bytes, and nothing is answered into a 1-byte buffer; a
 * sealed command always comes back as a sealed answer the link opens; a refusal is the status
 * word alone, except NOT_PURCHASED / CREDIT_LOW (6F23 / 6F24) with an offer TLV that parses and
 * states the card's credit and a price above it exactly for CREDIT_LOW; a refused command
 * stores nothing, leaves kh_module_counter unchanged and CAS STATUS (signers included) identical
 * but for the ECM usage counters; an accepted command stores at most once, with counter + 1.
 * After an accepted EMM the sequence number of its address type has strictly increased to the
 * EMM's (a unique one's to exactly the previous + 1), the EMM counter moved by one, and credit,
 * reload id, group and signers are the model's (credit never wraps, and a reload id never jumps
 * more than 1024 above the last: an ADD CREDIT doing either must not be accepted). An accepted
 * group or all EMM carries only SET KEY, ENTITLE and REVOKE (never a per-card command: ADD
 * CREDIT, AUTH/REQ EXPORT, SET GROUP, SET ALL KEY, ACK USAGE, SET SIGNER) and verifies under the
 * key of an EMM signer the model says the card knows, and not with a trailer byte flipped; a
 * SET SIGNER the card accepts holds a certificate of the test root for one of the harness's
 * signers. An EMM the harness sealed with a fresh sequence number is refused only for its
 * commands (never as unauthentic, replayed, not addressed, a gap, a version or for its
 * signature) when its signer is one the card knows with that key; otherwise it gets exactly
 * UNKNOWN_SIGNER (serial unknown for the role) or SIGNATURE (known serial, other key); one that
 * leaves a number out gets exactly EMM_GAP; one with a reused number is refused as a replay. An
 * ECM answered past the signature check (control words, an offer, a rights verdict) verifies
 * under the key of an ECM signer the card knows, and not with a trailer byte flipped; one the
 * harness signed with a key the card does not know never gets there, and one signed with a key
 * it knows is never refused for its signature, nor as CHAN_UNPROVEN (the channel stays proven
 * whatever CAM AUTH follows). A CAM AUTH the harness made gets exactly the answer the card's
 * rules give, one the card accepts carries the CAM's certificate and signature over this
 * channel, and any CAM AUTH answers its status word alone and changes nothing. An accepted ECM
 * answers control words that parse, for the ECM's crypto period; an accepted PURCHASE answers an
 * offer whose credit is the card's, debited by the price exactly once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "keyhole/apdu.h"
#include "keyhole/cas.h"
#include "keyhole/cert.h"
#include "keyhole/crypto.h"
#include "keyhole/module.h"
#include "keyhole/pair.h"

#include "fuzz_common.h"
#include "fuzz_issue.h"

/* The module's root key (seals its state), the test authority's root and the CAM's signing key. */
static const uint8_t fz_cas_module_root[KH_ROOT_KEY_LEN] = "keyhole fuzz cas module root v1";
static const uint8_t fz_cas_root_sk[32] = "keyhole fuzz cas test root v1..";
static const uint8_t fz_cas_cam_sk[32] = "keyhole fuzz cas cam sign v1...";
#define CAM_UA 0x00005678u
/* A decoder module's signing key and UA: a certified decoder trying to prove itself to the card. */
static const uint8_t fz_cas_dec_sk[32] = "keyhole fuzz cas dec sign v1...";
#define DEC_UA 0x00009abcu
#define CERT_NOT_BEFORE (FZ_CAS_NOW - 86400u * 365)
#define CERT_NOT_AFTER (FZ_CAS_NOW + 86400u * 365)

/*
 * The operator's signers the harness can sign with: index i has role ECM signer (even) or EMM
 * signer (odd) and serial FZ_CAS_ECM_SIGNER + i; 0 and 1 are fuzz_common.h's, given to the card
 * in setup; 2..5 are further ones (for rotation) the card learns only from an input's SET SIGNER.
 * The forger's key signs with the serial of 0 or 1 but is certified by nobody.
 */
#define NSIGNERS 6
static const uint8_t fz_cas_signer_more[32] = "keyhole fuzz cas signer # v1...";
static const uint8_t fz_cas_forger_sk[32] = "keyhole fuzz cas forger v1.....";

/* applet_cas.c's KH_CAS_RELOAD_WINDOW: a reload id further above the last one is RELOAD_JUMP */
#define FZ_CAS_RELOAD_WINDOW 1024u

#define MEM_SIZE (1u << 17)
#define MAX_CMDS 32
#define MAX_CHUNK 1100

static struct kh_rng_det rng;
static _Alignas(16) uint8_t mem[MEM_SIZE];
static _Alignas(16) uint8_t snap[MEM_SIZE];
static struct kh_module *m;
static struct kh_link lk, lk0;
static uint8_t resp[KH_APDU_MAX_RESP], inner_resp[KH_APDU_MAX_RESP];
static uint8_t cmd[KH_APDU_MAX_CMD], sealed[KH_APDU_MAX_CMD], sec[KH_EMM_MAX];
static int trace;

static struct kh_cas_signer signer[NSIGNERS];
static uint8_t signer_pk[NSIGNERS][32];
static uint8_t signer_der[NSIGNERS][KH_CERT_MAX];
static size_t signer_der_len[NSIGNERS];
static struct kh_cas_signer forger[2]; /* [0] as the ECM signer 0, [1] as the EMM signer 1 */
static uint8_t root_pk[32];
/* The signing certificates of the CAM that proves itself in setup and of a decoder (CAM AUTH). */
static uint8_t cam_der[KH_CERT_MAX], dec_der[KH_CERT_MAX];
static size_t cam_der_len, dec_der_len;

/* What the store callback saw. */
static struct {
	uint64_t calls;
	uint64_t expect; /* the counter the module holds: the next store must be expect + 1 */
} st, st0;

/* What the card must hold, as far as the harness can tell. */
struct model {
	uint32_t credit, last_reload, seq[3], group;
	uint8_t gkey[32], akey[32], skey[32];
	/* the signers the card knows, in its order (the card's rotation rule: two per role) */
	size_t nsigners;
	struct {
		uint8_t role;
		uint32_t serial;
		uint8_t pk[32];
	} signers[4];
};
static struct model md, md0;

static kh_err store(void *ctx, const uint8_t *blob, size_t len, uint64_t counter)
{
	uint64_t hdr = 0;

	(void)ctx;
	CHECK(counter == st.expect + 1);
	CHECK(kh_module_blob_counter(blob, len, &hdr) == KH_OK && hdr == counter);
	st.calls++;
	st.expect = counter;
	return KH_OK;
}

static void die(const char *what)
{
	fprintf(stderr, "fuzz_cas setup: %s\n", what);
	__builtin_trap();
}

/* ---- setup ---- */

/* A leaf certificate as the authority issues it (cert.h), signed by the fixed test root. */
static size_t issue(enum kh_role role, uint32_t ua, int type, const uint8_t pub[static 32], uint8_t *der,
		    size_t cap)
{
	return fz_issue(fz_cas_root_sk, role, ua, type, pub, CERT_NOT_BEFORE, CERT_NOT_AFTER, der, cap);
}

/* One plain APDU in setup; its answer (data) in resp, the length of the data returned. */
static size_t setup_apdu(uint8_t ins, const uint8_t *data, size_t lc, uint16_t want)
{
	struct kh_wr w;
	size_t n;

	kh_wr_init(&w, cmd, sizeof cmd);
	if (kh_apdu_build(&w, KH_CLA, ins, 0, 0, data, lc, 0) != KH_OK)
		die("apdu build");
	n = kh_module_process(m, cmd, w.len, resp, sizeof resp);
	if (n < 2 || fz_sw_of(resp, n) != want) {
		fprintf(stderr, "fuzz_cas setup: INS %02X answered %04X\n", ins, n >= 2 ? fz_sw_of(resp, n) : 0);
		__builtin_trap();
	}
	return n - 2;
}

static void tlv_get32(const uint8_t *p, size_t n, uint8_t tag, uint8_t out[static 32])
{
	struct kh_rd rd;
	struct kh_tlv t;

	kh_rd_init(&rd, p, n);
	while (kh_tlv_next(&rd, &t) == 1)
		if (t.tag == tag && kh_tlv_fixed(&t, out, 32) == KH_OK)
			return;
	die("PERSO INIT answer");
}

static void personalise(void)
{
	static uint8_t buf[KH_APDU_MAX_DATA], sign_der[KH_CERT_MAX], pair_der[KH_CERT_MAX];
	uint8_t sign_pk[32], pair_pk[32];
	size_t n, sign_len, pair_len;
	struct kh_wr w;

	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put_u8(&w, 1, KH_ROLE_CARD);
	kh_tlv_put_u32(&w, 2, FZ_CAS_UA);
	kh_tlv_put(&w, 3, root_pk, 32);
	kh_tlv_put(&w, 4, fz_cas_kp, 32);
	if (kh_tlv_put(&w, 5, fz_cas_ku, 32) != KH_OK)
		die("perso tlv");
	n = setup_apdu(KH_INS_PERSO_INIT, buf, w.len, KH_SW_OK);
	tlv_get32(resp, n, 1, sign_pk);
	tlv_get32(resp, n, 2, pair_pk);
	sign_len = issue(KH_ROLE_CARD, FZ_CAS_UA, EVP_PKEY_ED25519, sign_pk, sign_der, sizeof sign_der);
	pair_len = issue(KH_ROLE_CARD, FZ_CAS_UA, EVP_PKEY_X25519, pair_pk, pair_der, sizeof pair_der);
	kh_wr_init(&w, buf, sizeof buf);
	kh_tlv_put(&w, 1, sign_der, sign_len);
	if (kh_tlv_put(&w, 2, pair_der, pair_len) != KH_OK)
		die("certs tlv");
	setup_apdu(KH_INS_PERSO_CERTS, buf, w.len, KH_SW_OK);
}

static enum kh_role signer_role(int i)
{
	return i & 1 ? KH_ROLE_EMM_SIGNER : KH_ROLE_ECM_SIGNER;
}

/* The signers' keys and certificates from the test root (issued as the authority does). */
static void make_signers(void)
{
	for (int i = 0; i < NSIGNERS; i++) {
		signer[i].serial = FZ_CAS_ECM_SIGNER + (uint32_t)i;
		if (i < 2) {
			memcpy(signer[i].sk, i ? fz_cas_emm_signer_sk : fz_cas_ecm_signer_sk, 32);
		} else {
			memcpy(signer[i].sk, fz_cas_signer_more, 32);
			signer[i].sk[24] = (uint8_t)('0' + i);
		}
		if (kh_ed25519_public(signer[i].sk, signer_pk[i]) != KH_OK)
			die("signer key");
		signer_der_len[i] = issue(signer_role(i), signer[i].serial, EVP_PKEY_ED25519, signer_pk[i], signer_der[i],
					  sizeof signer_der[i]);
	}
	for (int i = 0; i < 2; i++) {
		forger[i].serial = signer[i].serial;
		memcpy(forger[i].sk, fz_cas_forger_sk, 32);
	}
}

/* The card's rule for a signer certificate it accepted (SET SIGNER): two per role, a newer serial
 * replaces the older of the two, one older than both is ignored. */
static void model_signer(uint8_t role, uint32_t serial, const uint8_t pk[static 32])
{
	size_t same = 0, oldest = 0, i, slot = SIZE_MAX;

	for (i = 0; i < md.nsigners; i++) {
		if (md.signers[i].role != role)
			continue;
		if (md.signers[i].serial == serial) {
			slot = i;
			break;
		}
		if (same++ == 0 || md.signers[i].serial < md.signers[oldest].serial)
			oldest = i;
	}
	if (slot == SIZE_MAX && same >= 2) {
		if (serial < md.signers[oldest].serial)
			return;
		slot = oldest;
	}
	if (slot == SIZE_MAX) {
		CHECK(md.nsigners < sizeof md.signers / sizeof md.signers[0]);
		slot = md.nsigners++;
	}
	md.signers[slot].role = role;
	md.signers[slot].serial = serial;
	memcpy(md.signers[slot].pk, pk, 32);
}

/* The public key of a signer the card knows (in the model), or NULL. */
static const uint8_t *model_signer_pk(uint8_t role, uint32_t serial)
{
	for (size_t i = 0; i < md.nsigners; i++)
		if (md.signers[i].role == role && md.signers[i].serial == serial)
			return md.signers[i].pk;
	return NULL;
}

/* The card's first EMM: keys, a right, credit and the two signers. */
static void provision(void)
{
	uint8_t cmds[KH_EMM_CMDS_MAX];
	struct kh_emm_hdr h = {KH_EMM_TID_UNIQUE, KH_EMM_UNIQUE, FZ_CAS_UA, 1, 0};
	struct kh_wr w;
	size_t n;

	kh_wr_init(&w, cmds, sizeof cmds);
	kh_emm_put_set_signer(&w, signer_der[0], signer_der_len[0]);
	kh_emm_put_set_signer(&w, signer_der[1], signer_der_len[1]);
	kh_emm_put_set_key(&w, FZ_CAS_KEY_ID, FZ_CAS_KEY_VERSION, fz_cas_skey);
	kh_emm_put_set_group(&w, FZ_CAS_GROUP, fz_cas_gkey, 0);
	kh_emm_put_set_all_key(&w, fz_cas_akey);
	kh_emm_put_entitle(&w, FZ_CAS_PRODUCT, FZ_CAS_NOW - 86400u * 30, FZ_CAS_NOW + 86400u * 30);
	if (kh_emm_put_add_credit(&w, FZ_CAS_CREDIT, 1) != KH_OK)
		die("provision tlv");
	if (kh_emm_seal(fz_cas_kp, &h, cmds, w.len, sec, sizeof sec, &n) != KH_OK)
		die("provision seal");
	setup_apdu(KH_INS_EMM, sec, n, KH_SW_OK);
	md.credit = FZ_CAS_CREDIT;
	md.last_reload = 1;
	md.seq[KH_EMM_UNIQUE] = 1;
	md.group = FZ_CAS_GROUP;
	memcpy(md.gkey, fz_cas_gkey, 32);
	memcpy(md.akey, fz_cas_akey, 32);
	memcpy(md.skey, fz_cas_skey, 32);
	model_signer(KH_ROLE_ECM_SIGNER, signer[0].serial, signer_pk[0]);
	model_signer(KH_ROLE_EMM_SIGNER, signer[1].serial, signer_pk[1]);
}

/* Pair as initiator, then prove a CAM on the channel, as applet_cam.c does. */
static void pair_and_prove(void)
{
	static uint8_t body[KH_APDU_MAX_DATA];
	static const uint8_t id[5] = {KH_ROLE_CAM, 0, 0, 0x56, 0x78};
	uint8_t cam_pk[32], dec_pk[32], msg[KH_CAM_AUTH_MSG_LEN], sig[KH_ED25519_SIG_LEN];
	enum kh_link_result res = KH_LINK_SEND;
	struct kh_wr w, bw;
	size_t n;

	kh_link_init(&lk, root_pk, KH_ROLE_CARD, id, sizeof id);
	kh_wr_init(&w, cmd, sizeof cmd);
	if (kh_link_start(&lk, &w) != KH_OK)
		die("link start");
	while (res == KH_LINK_SEND) {
		n = kh_module_process(m, cmd, w.len, resp, sizeof resp);
		kh_wr_init(&w, cmd, sizeof cmd);
		if (kh_link_step(&lk, resp, n, FZ_CAS_NOW, &w, &res) != KH_OK)
			die("link step");
	}
	if (res != KH_LINK_PAIRED || lk.peer.ua != FZ_CAS_UA)
		die("not paired");

	if (kh_ed25519_public(fz_cas_cam_sk, cam_pk) != KH_OK || kh_ed25519_public(fz_cas_dec_sk, dec_pk) != KH_OK)
		die("cam key");
	cam_der_len = issue(KH_ROLE_CAM, CAM_UA, EVP_PKEY_ED25519, cam_pk, cam_der, sizeof cam_der);
	dec_der_len = issue(KH_ROLE_DECODER, DEC_UA, EVP_PKEY_ED25519, dec_pk, dec_der, sizeof dec_der);
	if (kh_auth_msg(KH_ROLE_CAM, lk.ch.binding, lk.peer.ua, msg) != KH_OK ||
	    kh_ed25519_sign(fz_cas_cam_sk, msg, sizeof msg, sig) != KH_OK)
		die("cam sign");
	kh_wr_init(&bw, body, sizeof body);
	kh_tlv_put(&bw, 1, cam_der, cam_der_len);
	if (kh_tlv_put(&bw, 2, sig, sizeof sig) != KH_OK)
		die("cam auth tlv");
	kh_wr_init(&w, cmd, sizeof cmd);
	if (kh_apdu_build(&w, KH_CLA, KH_INS_CAM_AUTH, 0, 0, body, bw.len, 0) != KH_OK)
		die("cam auth apdu");
	n = w.len;
	kh_wr_init(&w, sealed, sizeof sealed);
	if (kh_link_send(&lk, cmd, n, FZ_CAS_NOW, &w) != KH_OK)
		die("cam auth seal");
	n = kh_module_process(m, sealed, w.len, resp, sizeof resp);
	kh_wr_init(&w, inner_resp, sizeof inner_resp);
	if (kh_link_step(&lk, resp, n, FZ_CAS_NOW, &w, &res) != KH_OK || res != KH_LINK_REPLY || w.len != 2 ||
	    fz_sw_of(inner_resp, 2) != KH_SW_OK)
		die("CAM AUTH refused");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const struct kh_module_env env = {store, fz_cas_now, NULL};

	(void)argc, (void)argv;
	trace = getenv("FZ_CAS_TRACE") != NULL;
	if (kh_module_size() > MEM_SIZE)
		die("kh_module_size() > MEM_SIZE");
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	kh_rng_set(kh_rng_det_fn, &rng);
	if (kh_module_init(mem, sizeof mem, fz_cas_module_root, &env, &m) != KH_OK)
		die("module init");
	if (kh_ed25519_public(fz_cas_root_sk, root_pk) != KH_OK)
		die("root key");
	personalise();
	make_signers();
	provision();
	pair_and_prove();
	memcpy(snap, mem, kh_module_size());
	lk0 = lk;
	st0 = st;
	md0 = md;
	return 0;
}

/* ---- per input ---- */

static struct kh_cas_status cur, next;

/* CAS STATUS, plain, into s. */
static void status(struct kh_cas_status *s)
{
	static const uint8_t get[] = {KH_CLA, KH_INS_CAS_STATUS, 0x00, 0x00};
	uint64_t calls = st.calls, ctr = kh_module_counter(m);
	size_t n;

	n = kh_module_process(m, get, sizeof get, resp, sizeof resp);
	CHECK(n >= 2 && n <= sizeof resp && fz_sw_of(resp, n) == KH_SW_OK);
	CHECK(kh_cas_status_parse(resp, n - 2, s) == KH_OK);
	CHECK(st.calls == calls && kh_module_counter(m) == ctr);
}

/* The same status but for the ECM usage counters (which a refused ECM still moves). */
static int same_but_ecm_counters(const struct kh_cas_status *a, const struct kh_cas_status *b)
{
	size_t i;

	if (a->credit != b->credit || a->has_group != b->has_group || a->group != b->group ||
	    memcmp(a->seq, b->seq, sizeof a->seq) != 0 || a->export_ok != b->export_ok ||
	    a->npurchases != b->npurchases || a->n_cw != b->n_cw || a->n_emm != b->n_emm ||
	    a->last_reload != b->last_reload || a->nrights != b->nrights || a->nkeys != b->nkeys ||
	    a->nsigners != b->nsigners)
		return 0;
	for (i = 0; i < a->nsigners; i++)
		if (a->signers[i].role != b->signers[i].role || a->signers[i].serial != b->signers[i].serial)
			return 0;
	for (i = 0; i < a->nrights; i++)
		if (a->rights[i].product != b->rights[i].product || a->rights[i].start != b->rights[i].start ||
		    a->rights[i].end != b->rights[i].end)
			return 0;
	for (i = 0; i < a->nkeys; i++)
		if (a->keys[i].id != b->keys[i].id || a->keys[i].version != b->keys[i].version)
			return 0;
	for (i = 0; i < a->npurchases && i < KH_CAS_STATUS_MAX_PURCHASES; i++)
		if (a->purchases[i].event != b->purchases[i].event || a->purchases[i].price != b->purchases[i].price ||
		    a->purchases[i].time != b->purchases[i].time)
			return 0;
	return 1;
}

/*
 * Send one command APDU (plain, or sealed into the channel); check the response and put the
 * inner answer's data in *data / *dlen. Returns its status word.
 */
static uint16_t send(uint8_t ins, const uint8_t *body, size_t lc, int in_channel, const uint8_t **data,
		     size_t *dlen)
{
	enum kh_link_result res;
	struct kh_wr w;
	uint8_t *r = resp;
	size_t n, len;

	kh_wr_init(&w, cmd, sizeof cmd);
	CHECK(kh_apdu_build(&w, KH_CLA, ins, 0, 0, body, lc, 0) == KH_OK);
	len = w.len;
	if (!in_channel) {
		CHECK(kh_module_process(m, cmd, len, resp, 1) == 0);
		n = kh_module_process(m, cmd, len, resp, sizeof resp);
		CHECK(n >= 2 && n <= sizeof resp);
	} else {
		kh_wr_init(&w, sealed, sizeof sealed);
		CHECK(kh_link_send(&lk, cmd, len, FZ_CAS_NOW, &w) == KH_OK);
		n = kh_module_process(m, sealed, w.len, resp, sizeof resp);
		CHECK(n >= 2 && n <= sizeof resp);
		/* The answer to a sealed command is always a sealed answer, whatever the inner one. */
		CHECK(fz_sw_of(resp, n) == KH_SW_OK);
		kh_wr_init(&w, inner_resp, sizeof inner_resp);
		CHECK(kh_link_step(&lk, resp, n, FZ_CAS_NOW, &w, &res) == KH_OK && res == KH_LINK_REPLY);
		n = w.len;
		r = inner_resp;
		CHECK(n >= 2 && n <= sizeof inner_resp);
	}
	*data = r;
	*dlen = n - 2;
	return fz_sw_of(r, n);
}

/* Checks every answer obeys; the pay-per-view offer when there is one. */
static void check_answer(uint16_t sw, const uint8_t *d, size_t dlen, int *has_offer, struct kh_ppv_offer *o)
{
	*has_offer = 0;
	CHECK(sw != KH_SW_RELAY);
	if (sw == KH_SW_OK || dlen == 0)
		return;
	/* Data with a refusal: only an offer, only for these two. */
	CHECK(sw == kh_err_to_sw(KH_ERR_NOT_PURCHASED) || sw == kh_err_to_sw(KH_ERR_CREDIT_LOW));
	CHECK(kh_ppv_offer_parse(d, dlen, o) == KH_OK);
	*has_offer = 1;
}

/* CAS STATUS lists exactly the signers of the model, in its order. */
static void check_signers(const struct kh_cas_status *a)
{
	CHECK(a->nsigners == md.nsigners);
	for (size_t i = 0; i < md.nsigners; i++)
		CHECK(a->signers[i].role == md.signers[i].role && a->signers[i].serial == md.signers[i].serial);
}

/* The commands of an EMM the card accepted, applied to the model. */
static void model_apply(const struct kh_emm_hdr *h, const uint8_t *cmds, size_t n)
{
	struct kh_cert_info ci;
	struct kh_rd rd;
	struct kh_tlv t;
	int k;

	CHECK(h->seq > md.seq[h->addr_type]);
	/* the card's own EMMs apply strictly in order: never across a gap */
	CHECK(h->addr_type != KH_EMM_UNIQUE || h->seq == md.seq[KH_EMM_UNIQUE] + 1);
	md.seq[h->addr_type] = h->seq;
	kh_rd_init(&rd, cmds, n);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		/* Only known commands; under a group or broadcast key only what is the same for every
		 * card (service keys, rights, the revoked list): never credit, export, acknowledgements,
		 * group, keys or signers, which come only under the card's own Kp. */
		CHECK(t.tag >= KH_EMM_SET_KEY && t.tag <= KH_EMM_REVOKED);
		CHECK(h->addr_type == KH_EMM_UNIQUE || t.tag == KH_EMM_SET_KEY || t.tag == KH_EMM_ENTITLE ||
		      t.tag == KH_EMM_REVOKE || t.tag == KH_EMM_REVOKED);
		/* the operator's revoked list: a version and at most 32 UAs */
		CHECK(t.tag != KH_EMM_REVOKED || (t.len >= 4 && (t.len - 4) % 4 == 0 && (t.len - 4) / 4 <= 32));
		if (t.tag == KH_EMM_ADD_CREDIT) {
			uint32_t amount, reload;
			CHECK(t.len == 8);
			amount = kh_get_be32(t.v);
			reload = kh_get_be32(t.v + 4);
			if (reload > md.last_reload) {
				/* Reload ids never jump further than the window; credit never wraps. */
				CHECK(reload - md.last_reload <= FZ_CAS_RELOAD_WINDOW);
				CHECK(amount <= UINT32_MAX - md.credit);
				md.credit += amount;
				md.last_reload = reload;
			}
		} else if (t.tag == KH_EMM_SET_GROUP) {
			CHECK(t.len == 40);
			/* another group's sequence starts where the operator says it stands; the same
			 * group's never goes back */
			if (md.group != kh_get_be32(t.v) || kh_get_be32(t.v + 36) > md.seq[KH_EMM_GROUP])
				md.seq[KH_EMM_GROUP] = kh_get_be32(t.v + 36);
			md.group = kh_get_be32(t.v);
			memcpy(md.gkey, t.v + 4, 32);
		} else if (t.tag == KH_EMM_SET_ALL_KEY) {
			CHECK(t.len == 32);
			memcpy(md.akey, t.v, 32);
		} else if (t.tag == KH_EMM_SET_KEY) {
			CHECK(t.len == 37);
			if (t.v[0] == FZ_CAS_KEY_ID && kh_get_be32(t.v + 1) == FZ_CAS_KEY_VERSION)
				memcpy(md.skey, t.v + 5, 32);
		} else if (t.tag == KH_EMM_SET_SIGNER) {
			/* The root certified it, and only the harness's signers were ever certified: the
			 * card learns one of their keys, under that signer's role and serial. */
			CHECK(kh_cert_check(t.v, t.len, root_pk, KH_ROLE_NONE, KH_CERT_KEY_ED25519, FZ_CAS_NOW, &ci) ==
			      KH_OK);
			CHECK(ci.role == KH_ROLE_ECM_SIGNER || ci.role == KH_ROLE_EMM_SIGNER);
			CHECK(ci.ua >= FZ_CAS_ECM_SIGNER && ci.ua - FZ_CAS_ECM_SIGNER < NSIGNERS);
			CHECK(ci.role == signer_role((int)(ci.ua - FZ_CAS_ECM_SIGNER)) &&
			      memcmp(ci.pub, signer_pk[ci.ua - FZ_CAS_ECM_SIGNER], 32) == 0);
			model_signer((uint8_t)ci.role, ci.ua, ci.pub);
		}
	}
	CHECK(k == 0);
}

static const uint8_t *key_of(uint8_t type)
{
	return type == KH_EMM_UNIQUE ? fz_cas_kp : type == KH_EMM_GROUP ? md.gkey : md.akey;
}

static int sw_is(uint16_t sw, kh_err e)
{
	return sw == kh_err_to_sw(e);
}

/*
 * A signed section the card accepted: the signer it names is one the card was given, for that
 * role, and the signature verifies under that signer's key and fails with a trailer byte flipped.
 */
static void check_accepted_sig(uint8_t role, uint32_t serial, const uint8_t *s, size_t n)
{
	static uint8_t cp[KH_EMM_MAX];
	const uint8_t *pk = model_signer_pk(role, serial);
	size_t i;

	CHECK(pk != NULL);
	CHECK(n <= sizeof cp && n > KH_CAS_TRAILER_LEN);
	CHECK((role == KH_ROLE_ECM_SIGNER ? kh_ecm_verify(pk, s, n) : kh_emm_verify(pk, s, n)) == KH_OK);
	memcpy(cp, s, n);
	i = n - KH_CAS_TRAILER_LEN + (size_t)s[n - 1] % KH_CAS_TRAILER_LEN;
	cp[i] ^= 0x01;
	CHECK((role == KH_ROLE_ECM_SIGNER ? kh_ecm_verify(pk, cp, n) : kh_emm_verify(pk, cp, n)) == KH_ERR_SIGNATURE);
}

/* What the harness knows of an EMM it sends: nothing (raw), that it may be refused only for its
 * commands, that it is a replay, or the one refusal it must get. */
enum { X_RAW, X_CMDS, X_REPLAY, X_EXACT };

static void do_emm(const uint8_t *emm, size_t len, int in_channel, int expect, kh_err exact)
{
	static uint8_t cmds[KH_EMM_CMDS_MAX];
	struct kh_ppv_offer o;
	struct kh_emm_hdr h;
	const uint8_t *d;
	size_t dlen, clen;
	uint64_t calls = st.calls, ctr = kh_module_counter(m);
	uint16_t sw;
	int offer;

	sw = send(KH_INS_EMM, emm, len, in_channel, &d, &dlen);
	check_answer(sw, d, dlen, &offer, &o);
	CHECK(!offer);
	status(&next);
	if (trace)
		fprintf(stderr, "  EMM%s %zu bytes -> %04X\n", in_channel ? " (sealed)" : "", len, sw);
	if (sw != KH_SW_OK) {
		if (st.calls != calls) {
			/*
			 * A card's own genuine EMM, next in order, whose commands it cannot take: nothing
			 * applies, but its number is used up (stored once, before the answer), or it would
			 * hold back every later EMM of the card.
			 */
			struct kh_cas_status moved = next;
			CHECK(st.calls == calls + 1 && kh_module_counter(m) == ctr + 1);
			CHECK(kh_emm_peek(emm, len, &h) == KH_OK && h.addr_type == KH_EMM_UNIQUE);
			CHECK(h.seq == md.seq[KH_EMM_UNIQUE] + 1 && next.seq[KH_EMM_UNIQUE] == h.seq);
			CHECK(kh_emm_open(key_of(h.addr_type), emm, len, cmds, sizeof cmds, &clen) == KH_OK);
			kh_wipe(cmds, clen);
			CHECK(!sw_is(sw, KH_ERR_AUTH) && !sw_is(sw, KH_ERR_EMM_REPLAY) && !sw_is(sw, KH_ERR_EMM_GAP) &&
			      !sw_is(sw, KH_ERR_NOT_ADDRESSED) && !sw_is(sw, KH_ERR_VERSION));
			md.seq[KH_EMM_UNIQUE] = h.seq;
			moved.seq[KH_EMM_UNIQUE] = cur.seq[KH_EMM_UNIQUE];
			CHECK(same_but_ecm_counters(&cur, &moved));
			if (expect == X_EXACT)
				CHECK(sw_is(sw, exact));
			CHECK(expect != X_REPLAY);
			return;
		}
		/* Any other refused EMM changes nothing. */
		CHECK(kh_module_counter(m) == ctr);
		CHECK(same_but_ecm_counters(&cur, &next));
		if (expect == X_CMDS)
			CHECK(!sw_is(sw, KH_ERR_AUTH) && !sw_is(sw, KH_ERR_EMM_REPLAY) && !sw_is(sw, KH_ERR_NOT_ADDRESSED) &&
			      !sw_is(sw, KH_ERR_NO_KEY) && !sw_is(sw, KH_ERR_EMM_GAP) && !sw_is(sw, KH_ERR_VERSION) &&
			      !sw_is(sw, KH_ERR_UNKNOWN_SIGNER) && !sw_is(sw, KH_ERR_SIGNATURE));
		if (expect == X_REPLAY)
			CHECK(sw_is(sw, KH_ERR_EMM_REPLAY));
		if (expect == X_EXACT)
			CHECK(sw_is(sw, exact));
		return;
	}
	CHECK(expect == X_RAW || expect == X_CMDS);
	CHECK(dlen == 0);
	/* Accepted: stored once, before the answer. */
	CHECK(st.calls == calls + 1 && kh_module_counter(m) == ctr + 1);
	CHECK(kh_emm_peek(emm, len, &h) == KH_OK);
	/* A group or broadcast EMM: the operator's, signed by an EMM signer the card was given. */
	if (h.addr_type != KH_EMM_UNIQUE)
		check_accepted_sig(KH_ROLE_EMM_SIGNER, h.signer, emm, len);
	CHECK(kh_emm_open(key_of(h.addr_type), emm, len, cmds, sizeof cmds, &clen) == KH_OK);
	model_apply(&h, cmds, clen);
	CHECK(next.seq[h.addr_type] == h.seq && next.seq[h.addr_type] > cur.seq[h.addr_type]);
	for (int i = 0; i < 3; i++)
		CHECK(next.seq[i] == md.seq[i]);
	CHECK(next.n_emm == cur.n_emm + 1);
	CHECK(next.credit == md.credit && next.last_reload == md.last_reload);
	CHECK(next.has_group && next.group == md.group);
	check_signers(&next);
	kh_wipe(cmds, clen);
}

/*
 * An ECM section as ECM or PURCHASE inside the proven channel. signed_ok: 1 when the harness
 * signed it with a key the card knows as that ECM signer, 0 when with one it does not, -1 raw.
 */
static void do_ecm(uint8_t ins, const uint8_t *ecm, size_t len, int signed_ok)
{
	struct kh_ppv_offer o;
	struct kh_cw_answer cw;
	struct kh_ecm_hdr h;
	const uint8_t *d;
	size_t dlen;
	uint64_t calls = st.calls, ctr = kh_module_counter(m);
	uint16_t sw;
	int offer;

	sw = send(ins, ecm, len, 1, &d, &dlen);
	check_answer(sw, d, dlen, &offer, &o);
	if (offer || (ins == KH_INS_PURCHASE && sw == KH_SW_OK)) {
		if (!offer)
			CHECK(kh_ppv_offer_parse(d, dlen, &o) == KH_OK);
		/* The offer states the card's credit (after the purchase, for one). */
		CHECK(sw != kh_err_to_sw(KH_ERR_CREDIT_LOW) || o.price > o.credit);
		CHECK(sw != kh_err_to_sw(KH_ERR_NOT_PURCHASED) || o.price <= o.credit);
	}
	status(&next);
	if (trace)
		fprintf(stderr, "  %s %zu bytes -> %04X%s\n", ins == KH_INS_ECM ? "ECM" : "PURCHASE", len, sw,
			offer ? " (offer)" : "");
	if (ins == KH_INS_ECM)
		CHECK(next.n_ecm == cur.n_ecm + 1);
	/* Answered past the signature check (control words, an offer, a rights verdict): the ECM
	 * carries a known ECM signer's valid signature; one the harness signed with a key the card
	 * does not know never gets there, one with a known key is never refused for its signature. */
	if (sw == KH_SW_OK || offer || sw_is(sw, KH_ERR_NO_RIGHT) || sw_is(sw, KH_ERR_RIGHT_EXPIRED) ||
	    sw_is(sw, KH_ERR_RIGHT_NOT_STARTED) || sw_is(sw, KH_ERR_CARD_FULL)) {
		CHECK(signed_ok != 0);
		CHECK(kh_ecm_peek(ecm, len, &h) == KH_OK);
		check_accepted_sig(KH_ROLE_ECM_SIGNER, h.signer, ecm, len);
	}
	if (signed_ok == 1)
		CHECK(!sw_is(sw, KH_ERR_UNKNOWN_SIGNER) && !sw_is(sw, KH_ERR_SIGNATURE) && !sw_is(sw, KH_ERR_VERSION));
	/* The channel was proven in setup, and no CAM AUTH since (refused or not) unproves it. */
	CHECK(!sw_is(sw, KH_ERR_CHAN_UNPROVEN));
	if (sw != KH_SW_OK) {
		CHECK(st.calls == calls && kh_module_counter(m) == ctr);
		CHECK(same_but_ecm_counters(&cur, &next));
		if (ins == KH_INS_ECM)
			CHECK(next.n_refused == cur.n_refused + 1);
		if (offer)
			CHECK(o.credit == next.credit);
		return;
	}
	CHECK(kh_ecm_peek(ecm, len, &h) == KH_OK);
	if (ins == KH_INS_ECM) {
		/* Control words, for this crypto period; usage counters may be flushed to the store. */
		CHECK(kh_cw_answer_parse(d, dlen, &cw) == KH_OK && cw.cp == h.cp);
		CHECK(next.n_cw == cur.n_cw + 1 && next.n_refused == cur.n_refused);
		CHECK(next.credit == cur.credit && next.npurchases == cur.npurchases);
		CHECK(st.calls <= calls + 1 && kh_module_counter(m) == ctr + (st.calls - calls));
		kh_wipe(&cw, sizeof cw);
		return;
	}
	/* A purchase: debited once, never below zero; or bought before, nothing charged. */
	CHECK(o.credit == next.credit);
	if (next.npurchases == cur.npurchases + 1) {
		CHECK(o.price <= cur.credit && next.credit == cur.credit - o.price);
		CHECK(st.calls == calls + 1 && kh_module_counter(m) == ctr + 1);
		CHECK(next.purchases[cur.npurchases].event == o.event && next.purchases[cur.npurchases].price == o.price);
	} else {
		CHECK(next.npurchases == cur.npurchases && next.credit == cur.credit);
		CHECK(st.calls == calls && kh_module_counter(m) == ctr);
	}
	md.credit = next.credit;
}

/*
 * Seal an ECM's TLV plaintext as the headend would, under the service key the card holds, and
 * sign it with sg: version 2, hdr | ct | tag | u32 serial | Ed25519 over the label and all that.
 */
static size_t seal_ecm(const uint8_t *pt, size_t ptlen, uint8_t tid, uint32_t cp, const struct kh_cas_signer *sg,
		       uint8_t *out)
{
	size_t body = KH_ECM_HDR_LEN + ptlen + KH_CAS_TAG_LEN, total = body + KH_CAS_TRAILER_LEN;

	out[0] = tid;
	out[1] = (uint8_t)(0x70 | ((total - 3) >> 8));
	out[2] = (uint8_t)(total - 3);
	out[3] = KH_CAS_VERSION_SIGNED;
	out[4] = FZ_CAS_KEY_ID;
	kh_put_be32(out + 5, FZ_CAS_KEY_VERSION);
	kh_put_be32(out + 9, cp);
	CHECK(kh_random(out + 13, KH_CAS_NONCE_LEN) == KH_OK);
	CHECK(kh_aead_seal(md.skey, out + 13, out, KH_ECM_HDR_LEN, pt, ptlen, out + KH_ECM_HDR_LEN) == KH_OK);
	kh_put_be32(out + body, sg->serial);
	CHECK(fz_sign_section(sg->sk, fz_ecm_sig_label, out, total, out + total - KH_CAS_SIG_LEN));
	return total;
}

/*
 * The signer a harness-sealed section of role (ECM or EMM signer) is signed with, from the
 * mode's bits 3-5: 0 the role's signer given in setup, 1..6 the signer of index v - 1 (of
 * either role: one of the other role is unknown to the card under this one), 7 the forger with
 * the setup signer's serial. *known: whether the card knows that serial under this role with
 * exactly this key.
 */
static const struct kh_cas_signer *pick_signer(uint8_t role, unsigned v, int *known)
{
	static uint8_t forger_pk[32];
	const struct kh_cas_signer *sg;
	const uint8_t *pk, *kpk;
	int base = role == KH_ROLE_EMM_SIGNER;

	if (v == 7) {
		sg = &forger[base];
		CHECK(kh_ed25519_public(fz_cas_forger_sk, forger_pk) == KH_OK);
		pk = forger_pk;
	} else {
		int i = v == 0 ? base : (int)v - 1;
		sg = &signer[i];
		pk = signer_pk[i];
	}
	kpk = model_signer_pk(role, sg->serial);
	*known = kpk != NULL && memcmp(kpk, pk, 32) == 0;
	return sg;
}

/* A command list the harness seals as an EMM of the given type (mode 1/2/3). */
static void sealed_emm(uint8_t mode, const uint8_t *chunk, size_t len)
{
	static uint8_t cmds[KH_EMM_CMDS_MAX];
	uint8_t type = (uint8_t)((mode & 7) - 1);
	unsigned v = (mode >> 3) & 7;
	int fresh = !(mode & 0x40), gap = 0, known = 1, expect;
	const struct kh_cas_signer *sg = NULL;
	struct kh_emm_hdr h;
	struct kh_wr w;
	size_t n;

	kh_wr_init(&w, cmds, sizeof cmds);
	if (type == KH_EMM_UNIQUE && v >= 1 && v <= NSIGNERS) {
		/* the certificate of harness signer v - 1 first: SET SIGNER */
		kh_emm_put_set_signer(&w, signer_der[v - 1], signer_der_len[v - 1]);
	} else if (type == KH_EMM_UNIQUE && v == 7) {
		gap = fresh; /* one sequence number left out */
	} else if (type != KH_EMM_UNIQUE) {
		sg = pick_signer(KH_ROLE_EMM_SIGNER, v, &known);
	}
	kh_wr_bytes(&w, chunk, len);
	if (len == 0 || w.err != KH_OK || w.len > (sg ? KH_EMM_SIGNED_CMDS_MAX : KH_EMM_CMDS_MAX) ||
	    (fresh && md.seq[type] >= UINT32_MAX - 1))
		return;
	h.table_id = 0;
	h.addr_type = type;
	h.addr = type == KH_EMM_UNIQUE ? FZ_CAS_UA : type == KH_EMM_GROUP ? md.group : 0;
	h.seq = md.seq[type] + (fresh ? 1 + (uint32_t)gap : 0);
	h.signer = 0;
	if (sg)
		CHECK(kh_emm_seal_signed(key_of(type), sg, &h, cmds, w.len, sec, sizeof sec, &n) == KH_OK);
	else
		CHECK(kh_emm_seal(key_of(type), &h, cmds, w.len, sec, sizeof sec, &n) == KH_OK);
	/* Replayed: refused as such before anything else. Fresh: refused only for its commands,
	 * unless it skips a number (EMM_GAP) or its signer is not one the card knows with that key
	 * (UNKNOWN_SIGNER, or SIGNATURE for a known serial). */
	expect = !fresh ? X_REPLAY : gap || !known ? X_EXACT : X_CMDS;
	do_emm(sec, n, mode >> 7, expect,
	       gap ? KH_ERR_EMM_GAP : model_signer_pk(KH_ROLE_EMM_SIGNER, sg ? sg->serial : 0) ? KH_ERR_SIGNATURE
											     : KH_ERR_UNKNOWN_SIGNER);
	kh_wipe(cmds, w.len);
}

/*
 * What the card must answer to a CAM AUTH body in which the harness put the certificate and the
 * signature (the first tags 1 and 2): the card walks the TLVs first (a second tag 1, 2 or 4 is
 * FORMAT; tag 3, a ladder key, is no tag of a card's and, like any unknown tag, TLV_TAG; a cut one
 * its error), then wants both with a 64-byte signature and a 4-byte tag 4 if any (FORMAT), and
 * only then judges them: verdict.
 */
static kh_err cam_auth_expect(const uint8_t *body, size_t n, kh_err verdict)
{
	struct kh_tlv t, cert = {0}, sig = {0}, dec = {0};
	struct kh_rd rd;
	int k;

	kh_rd_init(&rd, body, n);
	while ((k = kh_tlv_next(&rd, &t)) == 1) {
		if (t.tag == 1 && !cert.v)
			cert = t;
		else if (t.tag == 2 && !sig.v)
			sig = t;
		else if (t.tag == 4 && !dec.v)
			dec = t; /* the decoder module the CAM serves */
		else
			return t.tag == 1 || t.tag == 2 || t.tag == 4 ? KH_ERR_FORMAT : KH_ERR_TLV_TAG;
	}
	if (k < 0)
		return k;
	if (!cert.v || !sig.v || sig.len != KH_ED25519_SIG_LEN || (dec.v && dec.len != 4))
		return KH_ERR_FORMAT;
	return verdict;
}

/*
 * CAM AUTH inside the proven channel (mode 4/5 with bit 7). v = mode bits 3-5: 0 the chunk is the
 * body; otherwise the harness puts a certificate and a signature first and the chunk after them:
 * 1 the CAM's certificate and its signature over kh_auth_msg(CAM, binding, card UA): accepted
 * unless the chunk breaks the TLV rules; 2 a decoder's certificate and signature over the decoder
 * label (what a decoder module sends its CAM): CERT_ROLE; 3 the CAM's certificate, signature over
 * the decoder label: AUTH; 4 the CAM's, with the chunk as a ladder key (tag 3, a decoder's to its
 * CAM, never a CAM's): TLV_TAG; 5 the
 * CAM's, signature over another UA: AUTH; 6 the CAM's, signature over a binding taken from the
 * chunk (no chunk after it): AUTH; 7 the decoder's certificate and its signature over the CAM
 * label: CERT_ROLE. A chunk may carry tag 4 (the UA of the decoder the CAM serves). REVOKED may
 * come instead of a verdict on the signature (OK or AUTH), when an EMM put the CAM, or the
 * decoder named, on the revoked list. Any answer is the status word alone and changes nothing
 * the card stores or reports, and the channel stays proven.
 */
static void cam_auth(uint8_t mode, const uint8_t *chunk, size_t len)
{
	static uint8_t body[KH_APDU_MAX_DATA];
	uint8_t msg[KH_CAM_AUTH_MSG_LEN], sig[KH_ED25519_SIG_LEN], binding[32];
	unsigned v = (mode >> 3) & 7;
	const uint8_t *der = v == 2 || v == 7 ? dec_der : cam_der, *sk = v == 2 || v == 7 ? fz_cas_dec_sk : fz_cas_cam_sk;
	size_t derlen = v == 2 || v == 7 ? dec_der_len : cam_der_len, dlen;
	uint64_t calls = st.calls, ctr = kh_module_counter(m);
	kh_err want = KH_OK, verdict;
	const uint8_t *d;
	struct kh_wr w;
	uint16_t sw;

	memcpy(binding, lk.ch.binding, sizeof binding);
	if (v == 6) {
		memset(binding, 0, sizeof binding);
		memcpy(binding, chunk, len < sizeof binding ? len : sizeof binding);
	}
	kh_wr_init(&w, body, sizeof body);
	if (v == 0) {
		kh_wr_bytes(&w, chunk, len);
	} else {
		CHECK(kh_auth_msg(v == 2 || v == 3 ? KH_ROLE_DECODER : KH_ROLE_CAM, binding, FZ_CAS_UA + (v == 5), msg) ==
		      KH_OK);
		CHECK(kh_ed25519_sign(sk, msg, sizeof msg, sig) == KH_OK);
		kh_tlv_put(&w, 1, der, derlen);
		kh_tlv_put(&w, 2, sig, sizeof sig);
		if (v == 4)
			kh_tlv_put(&w, 3, chunk, len);
		else if (v != 6)
			kh_wr_bytes(&w, chunk, len);
		verdict = v == 1 ? KH_OK
			  : v == 2 || v == 7 ? KH_ERR_CERT_ROLE
			  : v == 6 && memcmp(binding, lk.ch.binding, sizeof binding) == 0 ? KH_OK
			  : KH_ERR_AUTH;
		want = cam_auth_expect(body, w.len, verdict);
	}
	if (w.err != KH_OK || w.len == 0)
		return;
	sw = send(KH_INS_CAM_AUTH, body, w.len, 1, &d, &dlen);
	if (trace)
		fprintf(stderr, "  CAM AUTH v%u %zu bytes -> %04X\n", v, w.len, sw);
	CHECK(dlen == 0 && sw != KH_SW_RELAY);
	if (v != 0)
		CHECK(sw == kh_err_to_sw(want) ||
		      ((want == KH_OK || want == KH_ERR_AUTH) && sw == kh_err_to_sw(KH_ERR_REVOKED)));
	if (sw == KH_SW_OK)
		CHECK(fz_auth_genuine(body, w.len, root_pk, KH_ROLE_CAM, lk.ch.binding, FZ_CAS_UA));
	status(&next);
	CHECK(st.calls == calls && kh_module_counter(m) == ctr);
	CHECK(same_but_ecm_counters(&cur, &next) && next.n_ecm == cur.n_ecm && next.n_refused == cur.n_refused);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0, ncmds = 0, n;
	uint32_t cp = 1;

	if (size > 16 * MAX_CHUNK)
		return 0;
	memcpy(mem, snap, kh_module_size());
	lk = lk0;
	st = st0;
	md = md0;
	kh_rng_det_init(&rng, (const uint8_t *)fz_seed, sizeof fz_seed - 1);
	status(&cur);
	CHECK(cur.credit == md.credit);
	check_signers(&cur);

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
		next = cur;
		switch (mode & 7) {
		case 0: do_emm(chunk, len, mode >> 7, X_RAW, KH_OK); break;
		case 1:
		case 2:
		case 3: sealed_emm(mode, chunk, len); break;
		case 4:
		case 5:
			if (mode & 0x80)
				cam_auth(mode, chunk, len);
			else
				do_ecm((mode & 7) == 4 ? KH_INS_ECM : KH_INS_PURCHASE, chunk, len, -1);
			break;
		default: {
			int known;
			const struct kh_cas_signer *sg = pick_signer(KH_ROLE_ECM_SIGNER, (mode >> 3) & 7, &known);

			if (len > KH_ECM_MAX - KH_ECM_HDR_LEN - KH_CAS_TAG_LEN - KH_CAS_TRAILER_LEN)
				continue;
			n = seal_ecm(chunk, len, mode & 0x40 ? KH_ECM_TID_ODD : KH_ECM_TID_EVEN, cp++, sg, sec);
			do_ecm((mode & 7) == 6 ? KH_INS_ECM : KH_INS_PURCHASE, sec, n, known);
			break;
		}
		}
		CHECK(next.credit == md.credit);
		cur = next;
	}
	return 0;
}
