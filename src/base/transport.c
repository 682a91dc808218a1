/*
 * The byte-pipe contract between a host or center and a module (include/keyhole/transport.h):
 * one command APDU in, one response APDU out, whatever carries them. Base owns it so that every
 * zone may talk to a module without knowing how the module is reached; the carriers themselves
 * (in-process, UNIX socket, later PC/SC) are the device zone's (src/device/).
 */
#include <string.h>

#include "keyhole/transport.h"

kh_err kh_transport_xfer(struct kh_transport *t, const uint8_t *cmd, size_t len, uint8_t *resp, size_t cap,
			 size_t *rlen)
{
	if (!t || !t->xfer)
		return KH_ERR_TRANSPORT;
	return t->xfer(t->ctx, cmd, len, resp, cap, rlen);
}

void kh_transport_close(struct kh_transport *t)
{
	if (t && t->close)
		t->close(t->ctx);
	if (t)
		memset(t, 0, sizeof *t);
}
