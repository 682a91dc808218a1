/*
 * Keyhole error registry. Every fallible function returns a kh_err: 0 (KH_OK) on success, a
 * negative code otherwise. One X-macro lists every code once with its one-line message, the
 * HTTP status and JSON code a service answers with, and the ISO 7816-4 status word a module
 * answers with; the enum, kh_strerror() and the mappings are generated from it, so a code can
 * never exist in one table and not another. Messages never carry secrets or variable data.
 */
#ifndef KEYHOLE_ERR_H
#define KEYHOLE_ERR_H

#include <stdint.h>

#if defined(__GNUC__)
#define KH_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define KH_WARN_UNUSED
#endif

typedef int kh_err;

#define KH_OK 0

/* XX(NAME, "message", http_status, "json_code", status_word) */
#define KH_ERR_MAP(XX)                                                                           \
	XX(NOMEM, "out of memory", 500, "nomem", 0x6F01)                                         \
	XX(INVAL, "invalid argument", 400, "invalid_argument", 0x6F02)                           \
	XX(USAGE, "usage error", 400, "usage", 0x6F03)                                           \
	XX(IO, "input/output error", 500, "io", 0x6F04)                                          \
	XX(NOTFOUND, "not found", 404, "not_found", 0x6A82)                                      \
	XX(EXISTS, "already exists", 409, "exists", 0x6F05)                                      \
	XX(KEYFILE_PERM, "key file is not private (group or others can access it, or another "   \
			 "user owns it)",                                                        \
	   500, "key_file_mode", 0x6F06)                                                         \
	XX(TRUNCATED, "message truncated", 400, "truncated", 0x6F07)                             \
	XX(TRAILING, "trailing bytes after message", 400, "trailing_bytes", 0x6F08)              \
	XX(VERSION, "unsupported format version", 400, "version", 0x6F09)                        \
	XX(FORMAT, "malformed message", 400, "malformed", 0x6A80)                                \
	XX(TLV_TAG, "unknown TLV tag", 400, "tlv_tag", 0x6F0A)                                   \
	XX(CRC, "section CRC-32 mismatch", 400, "crc", 0x6F1F)                                   \
	XX(TOO_LARGE, "value too large", 413, "too_large", 0x6F0B)                               \
	XX(BUF, "output buffer too small", 500, "buffer", 0x6F0C)                                \
	XX(CRYPTO, "cryptographic library failure", 500, "crypto", 0x6F0D)                       \
	XX(AUTH, "authentication tag mismatch", 403, "auth", 0x6982)                             \
	XX(STATE_AUTH, "sealed module state failed authentication", 500, "state_auth", 0x6F0E)   \
	XX(ROLLBACK, "sealed module state is older than one already seen", 409, "rollback",      \
	   0x6F0F)                                                                               \
	XX(STORE, "module state could not be stored", 500, "store", 0x6581)                     \
	XX(COUNTER_MISSING, "module state counter file is missing", 500, "counter_missing",      \
	   0x6F1C)                                                                               \
	XX(APDU_CLA, "class not supported", 400, "apdu_class", 0x6E00)                           \
	XX(APDU_INS, "instruction not supported", 400, "apdu_instruction", 0x6D00)              \
	XX(APDU_P1P2, "incorrect parameters P1-P2", 400, "apdu_p1p2", 0x6A86)                    \
	XX(APDU_LEN, "wrong APDU length", 400, "apdu_length", 0x6700)                            \
	XX(NOT_PERSONALISED, "module is not personalised", 409, "not_personalised", 0x6985)      \
	XX(PERSONALISED, "module is already personalised", 409, "already_personalised", 0x6986) \
	XX(CERT, "certificate not issued by this operator or malformed", 403, "certificate",     \
	   0x6F10)                                                                               \
	XX(CERT_ROLE, "certificate is for a different role", 403, "certificate_role", 0x6F11)    \
	XX(CERT_EXPIRED, "certificate is not valid at this time", 403, "certificate_expired",    \
	   0x6F1D)                                                                               \
	XX(CERT_KEY, "certificate does not match the module key", 403, "certificate_key",        \
	   0x6F12)                                                                               \
	XX(NOT_PAIRED, "no paired channel", 409, "not_paired", 0x6F13)                           \
	XX(PAIR_STATE, "pairing step out of order", 409, "pair_state", 0x6F14)                   \
	XX(PAIR_OPEN, "pairing request could not be opened", 403, "pair_open", 0x6F15)           \
	XX(PAIR_AUTH, "pairing answer did not prove the session key", 403, "pair_auth", 0x6F16)  \
	XX(CARD_CHANGED, "another card answered the re-key; pair again", 409, "card_changed",    \
	   0x6F1E)                                                                               \
	XX(CHAN_AUTH, "sealed message failed authentication", 403, "channel_auth", 0x6988)       \
	XX(CHAN_REPLAY, "sealed message replayed or out of order", 403, "channel_replay",        \
	   0x6F17)                                                                               \
	XX(CHAN_REKEY, "channel limit reached, pair again", 409, "channel_rekey", 0x6F18)        \
	XX(PEER_ERROR, "peer module refused the command", 502, "peer_error", 0x6F19)            \
	XX(TRANSPORT, "module transport failed", 502, "transport", 0x6F1A)                       \
	XX(INTERNAL, "internal error", 500, "internal", 0x6F1B)                                 \
	XX(NO_RIGHT, "no entitlement for this programme", 403, "no_right", 0x6F20)               \
	XX(RIGHT_EXPIRED, "entitlement expired", 403, "right_expired", 0x6F21)                   \
	XX(RIGHT_NOT_STARTED, "entitlement not yet valid", 403, "right_not_started", 0x6F22)     \
	XX(NOT_PURCHASED, "pay-per-view event not purchased", 402, "not_purchased", 0x6F23)      \
	XX(CREDIT_LOW, "credit too low for this event", 402, "credit_low", 0x6F24)               \
	XX(NO_KEY, "no key for this message (service, group or broadcast key missing)", 403,     \
	   "no_key", 0x6F25)                                                                     \
	XX(EMM_REPLAY, "EMM sequence number not newer than the last accepted", 409,              \
	   "emm_replay", 0x6F26)                                                                 \
	XX(NOT_ADDRESSED, "message not addressed to this card", 400, "not_addressed", 0x6F27)    \
	XX(CHAN_UNPROVEN, "channel holder has not proven itself a CAM", 403, "chan_unproven",    \
	   0x6F28)                                                                               \
	XX(CW_PLAIN, "control words travel only inside the decoder's sealed channel", 403,       \
	   "cw_plain", 0x6F29)                                                                   \
	XX(CARD_FULL, "card storage full", 507, "card_full", 0x6F2A)                             \
	XX(UNAUTHORISED, "missing or wrong credentials", 401, "unauthorised", 0x6F2C)              \
	XX(EXPORT_DENIED, "usage data export to the decoder not authorised for this card", 403,  \
	   "export_denied", 0x6F2B)                                                              \
	XX(DB, "database error", 500, "database", 0x6F30)                                        \
	XX(DB_BUSY, "database busy, try again", 503, "database_busy", 0x6F31)                    \
	XX(DB_CONSTRAINT, "database constraint violated", 409, "database_constraint", 0x6F32)    \
	XX(DB_FOREIGN, "database is not a Keyhole store", 500, "database_foreign", 0x6F33)       \
	XX(NOT_BUILT, "backend not built into this binary", 501, "not_built", 0x6F34)            \
	XX(IDEM_MISMATCH, "idempotency key reused for a different request", 422,                 \
	   "idempotency_mismatch", 0x6F35)                                                       \
	XX(EMM_GAP, "an earlier EMM for this card is missing: apply the gap first", 409,         \
	   "emm_gap", 0x6F36)                                                                    \
	XX(SIGNATURE, "operator signature missing or does not verify", 403, "signature",         \
	   0x6F37)                                                                               \
	XX(UNKNOWN_SIGNER, "message signed by a key this card has not been given", 403,          \
	   "unknown_signer", 0x6F38)                                                             \
	XX(RELOAD_JUMP, "credit reload id jumps too far ahead", 400, "reload_jump", 0x6F39)      \
	XX(REVOKED, "module certificate revoked by the operator", 403, "revoked", 0x6F3A)        \
	XX(EMM_SCOPE, "command accepted only in an EMM sealed under the card's own key", 403,    \
	   "emm_scope", 0x6F3B)                                                                  \
	XX(LIST_STALE, "the card has not yet had the operator's current list of revoked modules",  \
	   409, "list_stale", 0x6F3C)                                                            \
	XX(DECODER_UNPROVEN, "control words go only to a decoder that proved its certificate",   \
	   403, "decoder_unproven", 0x6F3D)                                                      \
	XX(LADDER, "key ladder: no session, or control words that do not open under it", 403,    \
	   "ladder", 0x6F3E)                                                                     \
	XX(LADDER_REQUIRED, "the operator gives this programme's control words only under the key " \
	   "ladder", 403, "ladder_required", 0x6F3F)                                             \
	XX(MODULE_BUSY, "module file in use by another process", 409, "module_busy", 0x6F40)     \
	XX(MODULE_CHANGED, "module file changed by another process; this state was not saved",   \
	   409, "module_changed", 0x6F41)                                                        \
	XX(DB_GONE, "the database file was deleted or replaced while in use: writes are refused "  \
	   "until the center is restarted on its database", 503, "database_gone", 0x6F42)        \
	XX(ADDR_IN_USE, "address already in use (another process listens on this port)", 500,  \
	   "address_in_use", 0x6F43)                                                             \
	XX(STATE_SECTION, "sealed module state has a section this build does not know", 500,     \
	   "state_section", 0x6F44)                                                              \
	XX(STATE_VERSION, "sealed module state has a section of a version this build does not "  \
	   "read", 500, "state_version", 0x6F45)                                                 \
	XX(DIST_SESSION, "no program-distribution session at this step: start again with hello",  \
	   409, "dist_session", 0x6F50)                                                          \
	XX(DIST_SIGNATURE, "distribution server's signature missing or does not verify", 403,     \
	   "dist_signature", 0x6F51)                                                             \
	XX(LICENCE, "licence token damaged or made by another processor", 403, "licence",        \
	   0x6F52)                                                                               \
	XX(LICENCE_PENDING, "licence not activated: the program signature was never presented",   \
	   403, "licence_pending", 0x6F53)                                                       \
	XX(MANIFEST, "package manifest does not match its licence", 403, "manifest", 0x6F54)     \
	XX(CHUNK, "package chunk out of order, after the last, or not the one signed", 403,       \
	   "chunk", 0x6F55)                                                                      \
	XX(DB_UNAVAILABLE, "database unavailable (cannot connect, or the connection was lost): "  \
	   "try again", 503, "database_unavailable", 0x6F46)                                     \
	XX(FUNDS, "the account's balance does not cover the price", 402, "insufficient_funds",   \
	   0x6F56)                                                                               \
	XX(RECEIPT, "receipt refused: not signed by this server, not on its record, or another "  \
	   "user's, processor's or program's", 403, "receipt", 0x6F57)                            \
	XX(LIMIT, "too many under way at once: finish them or wait", 429, "limit", 0x6F58)        \
	XX(BLIND_RANGE, "blinded value outside [2, n-2] for the listing's key", 400,             \
	   "blinded_range", 0x6F47)                                                              \
	XX(PURCHASE_STATE, "the purchase is not in a state that allows this (already settled, "  \
	   "or settled the other way)", 409, "purchase_state", 0x6F48)                           \
	XX(UNBLIND, "the escrow's answer does not open to the seller's key", 403, "unblind",     \
	   0x6F49)                                                                               \
	XX(SECMOD, "the escrow's signing process is unavailable", 503, "signing_unavailable",    \
	   0x6F4A)                                                                               \
	XX(LEDGER, "the ledger does not balance", 500, "ledger", 0x6F4B)                         \
	XX(PURCHASES_FULL, "the device has too many purchases under way: finish or cancel one",  \
	   409, "purchases_full", 0x6F4C)                                                        \
	XX(SHARES, "not enough valid key shares to recover the key", 409, "shares", 0x6F4D)      \
	XX(IDEM_REQUIRED, "this request moves money or makes a key: it needs an Idempotency-Key " \
	   "header", 400, "idempotency_key_required", 0x6F4E)                                      \
	XX(KEY_BEHIND, "that key is behind the chain's position: it is forgotten (a replay?)", 409, \
	   "key_behind", 0x6F4F)                                                                 \
	XX(KEY_AHEAD, "that key is beyond the window ahead of the chain's position", 409,        \
	   "key_ahead", 0x6F59)                                                                  \
	XX(REPLAY, "that message was relayed already (a replay)", 409, "replay", 0x6F5A)        \
	XX(NOT_ACTIVE, "the key card is not activated", 403, "not_activated", 0x6F5B)            \
	XX(BLOCKED, "the key card is blocked", 403, "card_blocked", 0x6F5C)                      \
	XX(RECIPIENT, "no active key card has that address", 404, "unknown_recipient", 0x6F5D)  \
	XX(ACCESS_CODE, "wrong access code", 403, "access_code", 0x6F5E)                         \
	XX(ENROLLED, "the key card is enrolled already", 409, "enrolled", 0x6F5F)                \
	XX(NOT_ENROLLED, "the key card is not enrolled with a key center", 409, "not_enrolled",  \
	   0x6F60)                                                                               \
	XX(PCSC_SERVICE, "the PC/SC service (pcscd) is not running or cannot be reached", 503,  \
	   "pcsc_service", 0x6F61)                                                               \
	XX(READER, "no such smart-card reader (or more than one has that name)", 404, "reader", \
	   0x6F62)                                                                               \
	XX(NO_CARD, "no card in the reader", 409, "no_card", 0x6F63)                             \
	XX(CARD_BUSY, "another program holds the card in that reader", 409, "card_busy", 0x6F64) \

enum kh__err_index {
#define KH__XX_INDEX(name, msg, http, json, sw) KH__ERRI_##name,
	KH_ERR_MAP(KH__XX_INDEX)
#undef KH__XX_INDEX
	KH__ERR_COUNT
};

enum kh_err_code {
#define KH__XX_CODE(name, msg, http, json, sw) KH_ERR_##name = -(KH__ERRI_##name + 1),
	KH_ERR_MAP(KH__XX_CODE)
#undef KH__XX_CODE
};

/* One-line message for a code; "unknown error" for a value not in the map. Never NULL. */
const char *kh_strerror(kh_err e);
/* Symbolic name ("CHAN_AUTH"), JSON code ("channel_auth") and HTTP status of a code. */
const char *kh_err_name(kh_err e);
const char *kh_err_json(kh_err e);
int kh_err_http(kh_err e);

#define KH_SW_OK 0x9000u
/* "Relay the response data to the peer module": a CAM asks its host to carry bytes to the card. */
#define KH_SW_RELAY 0x9F00u
/* Status word a module answers for a code (KH_OK gives 0x9000). */
uint16_t kh_err_to_sw(kh_err e);
/* Code for a status word: 0x9000 gives KH_OK, an unknown word KH_ERR_PEER_ERROR. */
kh_err kh_err_from_sw(uint16_t sw);

#endif
