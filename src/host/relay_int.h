/*
 * Inside the host zone: the relay loop between a CAM and its card, for any way of reaching the
 * CAM (plain APDUs, or commands sealed in the decoder's own channel to the CAM).
 */
#ifndef KH_HOST_RELAY_INT_H
#define KH_HOST_RELAY_INT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"
#include "keyhole/transport.h"

/* One command to the CAM; data and SW out, a status word other than 9000/9F00 as its error. */
typedef kh_err (*kh__cam_call)(void *ctx, uint8_t ins, const uint8_t *data, size_t len, uint8_t *resp,
			       size_t cap, size_t *dlen, uint16_t *sw);

/* Send ins to the CAM, carry what it asks to the card until it answers; its answer to out. */
KH_WARN_UNUSED kh_err kh__host_relay(kh__cam_call call, void *ctx, struct kh_transport *card, uint8_t ins,
				     const uint8_t *data, size_t len, uint8_t *out, size_t cap, size_t *outlen);

#endif
