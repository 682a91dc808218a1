/*
 * What the buyer device's tests (test_buyer.c, test_buyer_split.c) play around the device
 * (src/module/applet_buy.c, docs/protocols/escrow.md): the seller (a listing on an RSA listing
 * key, content under K, c = RSA-OAEP(listing key, K or a share of it)) and the escrow (the listing
 * key's private operation on the blinded value, done with OpenSSL directly, and its signed
 * answer), and the device's commands in APDUs. Every step is asserted as it goes.
 */
#ifndef KH_TEST_BUYERUTIL_H
#define KH_TEST_BUYERUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "keyhole/apdu.h"
#include "keyhole/escrow.h"
#include "keyhole/transport.h"

#define ESCROW_UA 0xFE000010u                  /* the escrow of the tests' listings */
#define PT_LEN (2 * KH_ESCROW_CHUNK_MAX + 777) /* the content: three chunks, the last short */

/* The answer of the last command sent with cmd() and the helpers below. */
extern uint8_t rbuf[KH_APDU_MAX_RESP];

struct listing_key {
	EVP_PKEY *pk;
	uint8_t spki[KH_RSA_SPKI_MAX];
	size_t spkilen;
	uint8_t n[KH_RSA_MAX_LEN];
	size_t nlen;
};

struct offer {
	uint8_t listing[KH_ESCROW_LISTING_MAX];
	size_t llen;
	uint8_t id[KH_ESCROW_ID_LEN];
	uint8_t c[KH_RSA_MAX_LEN];
	size_t clen;
	uint8_t k[KH_ESCROW_KEY_LEN];
	uint8_t header[KH_ESCROW_HEADER_MAX];
	size_t hlen;
	struct kh_escrow_header h;
	uint8_t ct[3][KH_ESCROW_CHUNK_MAX + KH_TAG_LEN];
};

/* A settled purchase's answer: its notice, and the licence that may follow it. */
struct settled {
	struct kh_escrow_notice notice;
	uint8_t licence[KH_ESCROW_LICENCE_LEN];
	int has_licence;
};

/* A command (CLA 80, P1 = P2 = 0) to the device: its status word, the answer in rbuf. */
uint16_t cmd(struct kh_transport *t, uint8_t ins, const uint8_t *d, size_t n, size_t *dlen);
/* Append the TLV tag | v to b (cap bytes) at offset at: the offset after it. */
size_t tlv(uint8_t *b, size_t cap, size_t at, uint8_t tag, const uint8_t *v, size_t n);

/* A fresh RSA listing key of bits bits (EVP_PKEY_free(k->pk) when done). */
void make_key(struct listing_key *k, int bits);
/* The escrow's private operation: z = x^d mod n (x: k->nlen bytes), as its signing process does it. */
void rsa_private(const struct listing_key *k, const uint8_t *x, uint8_t *z);

/* o from scratch: a listing (fresh id) of escrow at price, on key k, for content "song-1", signed
 * with esk. */
void offer_listing(struct offer *o, const uint8_t esk[static 32], uint32_t escrow, const struct listing_key *k,
		   uint64_t price);
/* The content pt (PT_LEN bytes) sealed under k (a fresh K when NULL): o's K, header and chunks. */
void offer_content(struct offer *o, const uint8_t *pt, const uint8_t *k);
/* o's c = RSA-OAEP(kc's key, m, label = o's listing id). */
void offer_c(struct offer *o, const struct listing_key *kc, const uint8_t *m, size_t mlen);

/* BUY START on o: the status word; on 9000 the request's bytes into req. */
uint16_t buy_start(struct kh_transport *t, const struct offer *o, uint8_t *req, size_t *reqlen);
/*
 * The escrow's answer (signed with esk) to req, which dev_pk (the device's signing key) signed:
 * z = c'^d under k. own: k is the listing's own key, so c' must be in its range; another key's
 * private operation (the escrow's mistake the device must catch) takes c' reduced mod its n.
 * flip: a byte of z flipped after. Its length.
 */
size_t escrow_answer(const uint8_t esk[static 32], const uint8_t dev_pk[static 32], const uint8_t *req,
		     size_t reqlen, const struct listing_key *k, int own, int flip, uint8_t *ans);
/* BUY FINISH with o's listing, c and header, and the answer. */
uint16_t buy_finish(struct kh_transport *t, const struct offer *o, const uint8_t *ans, size_t anslen, size_t *dl);
/* A command whose data is the purchase TLV of pid (BUY NOTICE, BUY CANCEL). */
uint16_t by_purchase(struct kh_transport *t, uint8_t ins, const uint8_t *pid, size_t *dl);
/* The notice in rbuf (dl bytes), checked with the device's signing key dev_pk, and its licence. */
void read_settled(const uint8_t dev_pk[static 32], size_t dl, struct settled *s);
/* Open o's content with the licence and read every chunk: 1 when it reads back as pt (PT_LEN
 * bytes); *open_sw is CONTENT OPEN's status word. */
int read_content(const uint8_t *pt, struct kh_transport *t, const struct offer *o, const uint8_t *licence,
		 uint16_t *open_sw);
/* The device's certified public key (checked under root_pk, role buyer): its pairing X25519 key
 * when pairing, else its Ed25519 signing key. */
void device_key(struct kh_transport *t, const uint8_t root_pk[static 32], int pairing, uint8_t pk[static 32]);

#endif
