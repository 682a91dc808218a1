/*
 * DVB SimulCrypt messages (ETSI TS 103 197): the generic TLV message of the ECMG<->SCS and
 * EMMG<->MUX (TCP) interfaces, protocol versions 2 and 3. A strict parser, a builder that refuses
 * what the parser refuses, and a splitter for a TCP byte stream.
 *
 * A message on the wire (all fields big-endian):
 *   protocol_version u8 | message_type u16 | message_length u16 | parameters (message_length bytes)
 * and each parameter:
 *   parameter_type u16 | parameter_length u16 | parameter_value (parameter_length bytes)
 *
 * Nothing here allocates or does I/O. A parsed message points into its input (valid as long as
 * the input is). Refusals are `enum kh_sim_status`; kh_sim_error_status() turns one into the
 * error_status value of the interface's table (TS 103 197 §5.5 ECMG<->SCS, §6.2.6 EMMG<->MUX),
 * which a server puts into its channel_error / stream_error.
 */
#ifndef KEYHOLE_SIMULCRYPT_H
#define KEYHOLE_SIMULCRYPT_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

#define KH_SIM_HEADER_LEN 5u
/* Our limit for one whole message (header included); a longer one is "message too long". */
#define KH_SIM_MAX_MSG 65536u
/* Our limit for the parameters of one message (a parsed message holds them in place). */
#define KH_SIM_MAX_PARAMS 128u

enum kh_sim_iface {
	KH_SIM_ECMG = 1, /* ECMG<->SCS */
	KH_SIM_EMMG = 2, /* EMMG<->MUX */
};

/* Why the parser (or builder, or splitter) refuses a message. */
enum kh_sim_status {
	KH_SIM_OK = 0,
	KH_SIM_INVALID_MESSAGE, /* short header, message_length not the bytes given, a parameter
				   running past the end, a parameter given more often than allowed */
	KH_SIM_BAD_VERSION,	/* protocol_version other than 2 or 3 */
	KH_SIM_UNKNOWN_TYPE,	/* message_type not of this interface */
	KH_SIM_TOO_LONG,	/* more than KH_SIM_MAX_MSG bytes or KH_SIM_MAX_PARAMS parameters */
	KH_SIM_UNKNOWN_PARAM,	/* parameter_type unknown, or not one this message carries */
	KH_SIM_BAD_LENGTH,	/* parameter_length not the one the standard fixes */
	KH_SIM_MISSING_PARAM,	/* a mandatory parameter absent */
};

/* error_status values, ECMG<->SCS (TS 103 197 table "ECMG<->SCS error_status values"). */
enum {
	KH_SIM_ECMG_ERR_INVALID_MESSAGE = 0x0001,
	KH_SIM_ECMG_ERR_UNSUPPORTED_VERSION = 0x0002,
	KH_SIM_ECMG_ERR_UNKNOWN_MESSAGE_TYPE = 0x0003,
	KH_SIM_ECMG_ERR_MESSAGE_TOO_LONG = 0x0004,
	KH_SIM_ECMG_ERR_UNKNOWN_SUPER_CAS_ID = 0x0005,
	KH_SIM_ECMG_ERR_UNKNOWN_CHANNEL_ID = 0x0006,
	KH_SIM_ECMG_ERR_UNKNOWN_STREAM_ID = 0x0007,
	KH_SIM_ECMG_ERR_TOO_MANY_CHANNELS = 0x0008,
	KH_SIM_ECMG_ERR_TOO_MANY_STREAMS_CHANNEL = 0x0009,
	KH_SIM_ECMG_ERR_TOO_MANY_STREAMS = 0x000A,
	KH_SIM_ECMG_ERR_NOT_ENOUGH_CW = 0x000B,
	KH_SIM_ECMG_ERR_OUT_OF_STORAGE = 0x000C,
	KH_SIM_ECMG_ERR_OUT_OF_COMPUTE = 0x000D,
	KH_SIM_ECMG_ERR_UNKNOWN_PARAM_TYPE = 0x000E,
	KH_SIM_ECMG_ERR_INCONSISTENT_LENGTH = 0x000F,
	KH_SIM_ECMG_ERR_MISSING_PARAM = 0x0010,
	KH_SIM_ECMG_ERR_INVALID_VALUE = 0x0011,
	KH_SIM_ECMG_ERR_UNKNOWN_ECM_ID = 0x0012,
	KH_SIM_ECMG_ERR_CHANNEL_ID_IN_USE = 0x0013,
	KH_SIM_ECMG_ERR_STREAM_ID_IN_USE = 0x0014,
	KH_SIM_ECMG_ERR_ECM_ID_IN_USE = 0x0015,
	KH_SIM_ECMG_ERR_UNKNOWN = 0x7000,
	KH_SIM_ECMG_ERR_UNRECOVERABLE = 0x7001,
};

/* error_status values, EMMG<->MUX (TS 103 197 table "EMMG<->MUX error_status values"). */
enum {
	KH_SIM_EMMG_ERR_INVALID_MESSAGE = 0x0001,
	KH_SIM_EMMG_ERR_UNSUPPORTED_VERSION = 0x0002,
	KH_SIM_EMMG_ERR_UNKNOWN_MESSAGE_TYPE = 0x0003,
	KH_SIM_EMMG_ERR_MESSAGE_TOO_LONG = 0x0004,
	KH_SIM_EMMG_ERR_UNKNOWN_STREAM_ID = 0x0005,
	KH_SIM_EMMG_ERR_UNKNOWN_CHANNEL_ID = 0x0006,
	KH_SIM_EMMG_ERR_TOO_MANY_CHANNELS = 0x0007,
	KH_SIM_EMMG_ERR_TOO_MANY_STREAMS_CHANNEL = 0x0008,
	KH_SIM_EMMG_ERR_TOO_MANY_STREAMS = 0x0009,
	KH_SIM_EMMG_ERR_UNKNOWN_PARAM_TYPE = 0x000A,
	KH_SIM_EMMG_ERR_INCONSISTENT_LENGTH = 0x000B,
	KH_SIM_EMMG_ERR_MISSING_PARAM = 0x000C,
	KH_SIM_EMMG_ERR_INVALID_VALUE = 0x000D,
	KH_SIM_EMMG_ERR_UNKNOWN_CLIENT_ID = 0x000E,
	KH_SIM_EMMG_ERR_EXCEEDED_BANDWIDTH = 0x000F,
	KH_SIM_EMMG_ERR_UNKNOWN_DATA_ID = 0x0010,
	KH_SIM_EMMG_ERR_CHANNEL_ID_IN_USE = 0x0011,
	KH_SIM_EMMG_ERR_STREAM_ID_IN_USE = 0x0012,
	KH_SIM_EMMG_ERR_DATA_ID_IN_USE = 0x0013,
	KH_SIM_EMMG_ERR_CLIENT_ID_IN_USE = 0x0014,
	KH_SIM_EMMG_ERR_UNKNOWN = 0x7000,
	KH_SIM_EMMG_ERR_UNRECOVERABLE = 0x7001,
};

/* message_type values. */
enum {
	KH_SIM_ECMG_CHANNEL_SETUP = 0x0001,
	KH_SIM_ECMG_CHANNEL_TEST = 0x0002,
	KH_SIM_ECMG_CHANNEL_STATUS = 0x0003,
	KH_SIM_ECMG_CHANNEL_CLOSE = 0x0004,
	KH_SIM_ECMG_CHANNEL_ERROR = 0x0005,
	KH_SIM_ECMG_STREAM_SETUP = 0x0101,
	KH_SIM_ECMG_STREAM_TEST = 0x0102,
	KH_SIM_ECMG_STREAM_STATUS = 0x0103,
	KH_SIM_ECMG_STREAM_CLOSE_REQUEST = 0x0104,
	KH_SIM_ECMG_STREAM_CLOSE_RESPONSE = 0x0105,
	KH_SIM_ECMG_STREAM_ERROR = 0x0106,
	KH_SIM_ECMG_CW_PROVISION = 0x0201,
	KH_SIM_ECMG_ECM_RESPONSE = 0x0202,

	KH_SIM_EMMG_CHANNEL_SETUP = 0x0011,
	KH_SIM_EMMG_CHANNEL_TEST = 0x0012,
	KH_SIM_EMMG_CHANNEL_STATUS = 0x0013,
	KH_SIM_EMMG_CHANNEL_CLOSE = 0x0014,
	KH_SIM_EMMG_CHANNEL_ERROR = 0x0015,
	KH_SIM_EMMG_STREAM_SETUP = 0x0111,
	KH_SIM_EMMG_STREAM_TEST = 0x0112,
	KH_SIM_EMMG_STREAM_STATUS = 0x0113,
	KH_SIM_EMMG_STREAM_CLOSE_REQUEST = 0x0114,
	KH_SIM_EMMG_STREAM_CLOSE_RESPONSE = 0x0115,
	KH_SIM_EMMG_STREAM_ERROR = 0x0116,
	KH_SIM_EMMG_STREAM_BW_REQUEST = 0x0117,
	KH_SIM_EMMG_STREAM_BW_ALLOCATION = 0x0118,
	KH_SIM_EMMG_DATA_PROVISION = 0x0211,
};

/* parameter_type values, ECMG<->SCS. */
enum {
	KH_SIM_P_SUPER_CAS_ID = 0x0001,		  /* 4 */
	KH_SIM_P_SECTION_TSPKT_FLAG = 0x0002,	  /* 1 */
	KH_SIM_P_DELAY_START = 0x0003,		  /* 2, signed ms */
	KH_SIM_P_DELAY_STOP = 0x0004,		  /* 2, signed ms */
	KH_SIM_P_TRANSITION_DELAY_START = 0x0005, /* 2, signed ms */
	KH_SIM_P_TRANSITION_DELAY_STOP = 0x0006,  /* 2, signed ms */
	KH_SIM_P_ECM_REP_PERIOD = 0x0007,	  /* 2 */
	KH_SIM_P_MAX_STREAMS = 0x0008,		  /* 2 */
	KH_SIM_P_MIN_CP_DURATION = 0x0009,	  /* 2 */
	KH_SIM_P_LEAD_CW = 0x000A,		  /* 1 */
	KH_SIM_P_CW_PER_MSG = 0x000B,		  /* 1 */
	KH_SIM_P_MAX_COMP_TIME = 0x000C,	  /* 2 */
	KH_SIM_P_ACCESS_CRITERIA = 0x000D,	  /* variable */
	KH_SIM_P_ECM_CHANNEL_ID = 0x000E,	  /* 2 */
	KH_SIM_P_ECM_STREAM_ID = 0x000F,	  /* 2 */
	KH_SIM_P_NOMINAL_CP_DURATION = 0x0010,	  /* 2 */
	KH_SIM_P_AC_TRANSFER_MODE = 0x0011,	  /* 1 */
	KH_SIM_P_CP_NUMBER = 0x0012,		  /* 2 */
	KH_SIM_P_CP_DURATION = 0x0013,		  /* 2 */
	KH_SIM_P_CP_CW_COMBINATION = 0x0014,	  /* 2 + CW */
	KH_SIM_P_ECM_DATAGRAM = 0x0015,		  /* variable */
	KH_SIM_P_AC_DELAY_START = 0x0016,	  /* 2, signed ms */
	KH_SIM_P_AC_DELAY_STOP = 0x0017,	  /* 2, signed ms */
	KH_SIM_P_CW_ENCRYPTION = 0x0018,	  /* variable */
	KH_SIM_P_ECM_ID = 0x0019,		  /* 2 */
	KH_SIM_P_ERROR_STATUS = 0x7000,		  /* 2 (both interfaces) */
	KH_SIM_P_ERROR_INFORMATION = 0x7001,	  /* variable (both interfaces) */
};

/* parameter_type values, EMMG<->MUX. */
enum {
	KH_SIM_P_CLIENT_ID = 0x0001,	     /* 4 */
	KH_SIM_P_EMM_SECTION_TSPKT = 0x0002, /* 1 */
	KH_SIM_P_DATA_CHANNEL_ID = 0x0003,   /* 2 */
	KH_SIM_P_DATA_STREAM_ID = 0x0004,    /* 2 */
	KH_SIM_P_DATAGRAM = 0x0005,	     /* variable */
	KH_SIM_P_BANDWIDTH = 0x0006,	     /* 2, kbit/s */
	KH_SIM_P_DATA_TYPE = 0x0007,	     /* 1 */
	KH_SIM_P_DATA_ID = 0x0008,	     /* 2 */
};

struct kh_sim_param {
	uint16_t type;
	uint16_t len;
	const uint8_t *val; /* into the parsed input */
};

struct kh_sim_msg {
	enum kh_sim_iface iface;
	uint8_t version;
	uint16_t type;
	size_t n; /* parameters, in the order of the input */
	struct kh_sim_param p[KH_SIM_MAX_PARAMS];
};

/*
 * Parses exactly one message of `len` bytes for interface `iface`. Checks, in this order: at
 * least a header; message_length within KH_SIM_MAX_MSG (TOO_LONG); protocol_version 2 or 3;
 * message_length equal to the bytes that follow; the message_type; then each parameter in turn
 * (inside the message, known to this message type, of the right length, not more often than
 * allowed, at most KH_SIM_MAX_PARAMS); finally the mandatory ones. `out` is written only on
 * KH_SIM_OK. `culprit` (may be NULL) receives the parameter_type a refusal is about, else 0.
 */
enum kh_sim_status kh_sim_parse(enum kh_sim_iface iface, const uint8_t *buf, size_t len, struct kh_sim_msg *out,
				uint16_t *culprit);

/* The error_status value the interface's table gives this refusal (0 for KH_SIM_OK). */
uint16_t kh_sim_error_status(enum kh_sim_iface iface, enum kh_sim_status st);
/* A short English name of the refusal, for logs. */
const char *kh_sim_status_str(enum kh_sim_status st);
/* Whether `type` is a message_type of the interface. */
int kh_sim_known_type(enum kh_sim_iface iface, uint16_t type);

/*
 * Splitter for a TCP stream: `*need` gets the size of the next whole message from the first
 * `len` bytes of `buf` (KH_SIM_HEADER_LEN while fewer than a header are there). KH_SIM_TOO_LONG
 * when the header announces more than KH_SIM_MAX_MSG bytes (the stream cannot be resynchronised:
 * answer the error and close). Once `len >= *need`, buf[0 .. *need) is the message to parse.
 */
enum kh_sim_status kh_sim_frame(const uint8_t *buf, size_t len, size_t *need);

/* Typed accessors on a parsed message: the `nth` (from 0) parameter of `type`. KH_ERR_NOTFOUND
 * when absent, KH_ERR_FORMAT when its length is not the accessor's width. */
size_t kh_sim_count(const struct kh_sim_msg *m, uint16_t type);
const struct kh_sim_param *kh_sim_find(const struct kh_sim_msg *m, uint16_t type, size_t nth);
kh_err kh_sim_u8(const struct kh_sim_msg *m, uint16_t type, size_t nth, uint8_t *out);
kh_err kh_sim_u16(const struct kh_sim_msg *m, uint16_t type, size_t nth, uint16_t *out);
kh_err kh_sim_s16(const struct kh_sim_msg *m, uint16_t type, size_t nth, int16_t *out);
kh_err kh_sim_u32(const struct kh_sim_msg *m, uint16_t type, size_t nth, uint32_t *out);
kh_err kh_sim_bytes(const struct kh_sim_msg *m, uint16_t type, size_t nth, const uint8_t **val, size_t *len);

/*
 * Builder into a caller's buffer. Errors are sticky: the first one is kept and returned by
 * kh_sim_finish. KH_ERR_BUF when the buffer is too small, KH_ERR_INVAL when the message would be
 * refused by kh_sim_parse (`why` of kh_sim_finish then says which refusal).
 */
struct kh_sim_builder {
	enum kh_sim_iface iface;
	uint8_t *buf;
	size_t cap;
	size_t len;
	kh_err err;
	enum kh_sim_status why;
};

void kh_sim_start(struct kh_sim_builder *b, enum kh_sim_iface iface, uint8_t version, uint16_t type, uint8_t *buf,
		  size_t cap);
void kh_sim_add(struct kh_sim_builder *b, uint16_t type, const uint8_t *val, size_t len);
void kh_sim_add_u8(struct kh_sim_builder *b, uint16_t type, uint8_t v);
void kh_sim_add_u16(struct kh_sim_builder *b, uint16_t type, uint16_t v);
void kh_sim_add_s16(struct kh_sim_builder *b, uint16_t type, int16_t v);
void kh_sim_add_u32(struct kh_sim_builder *b, uint16_t type, uint32_t v);
/* Fills message_length and checks the whole message as the parser would; *len = its size. */
kh_err kh_sim_finish(struct kh_sim_builder *b, size_t *len, enum kh_sim_status *why);
/* Builds a parsed message again (the same bytes as its input). */
kh_err kh_sim_rebuild(const struct kh_sim_msg *m, uint8_t *buf, size_t cap, size_t *len);

#endif
