/*
 * libFuzzer harness: the buyer host's BASE.purchase (include/keyhole/escrowclient.h,
 * kh_escrow_pending_parse), the file `keyhole buyer buy` reads back to finish a purchase left
 * under way, and sends on to the escrow and the device. When it parses, it holds a request that
 * reads as one and, if any, an answer to that request's purchase with a modulus of the same size,
 * and writing it again gives the input's exact bytes (one file per state); when it does not, the
 * output is untouched.
 */
#include <string.h>

#include "keyhole/escrowclient.h"

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct kh_escrow_pending p;
	static uint8_t again[KH_ESCROW_PENDING_MAX];
	struct kh_escrow_request q;
	struct kh_escrow_answer a;
	size_t n = 0;

	memset(&p, 0xA5, sizeof p);
	if (kh_escrow_pending_parse(data, size, &p) != KH_OK) {
		for (size_t i = 0; i < sizeof p; i++)
			CHECK(((const uint8_t *)&p)[i] == 0xA5);
		return 0;
	}
	CHECK(p.reqlen >= 1 && p.reqlen <= sizeof p.req && p.anslen <= sizeof p.ans);
	CHECK(kh_escrow_request_parse(p.req, p.reqlen, NULL, &q) == KH_OK);
	if (p.anslen) {
		CHECK(kh_escrow_answer_parse(p.ans, p.anslen, NULL, &a) == KH_OK);
		CHECK(memcmp(a.purchase, q.purchase, sizeof q.purchase) == 0 && a.nlen == q.nlen);
	}
	CHECK(kh_escrow_pending_format(&p, again, sizeof again, &n) == KH_OK);
	CHECK(n == size && memcmp(again, data, size) == 0);
	return 0;
}
