/*
 * What the files of `keyhole headend` share (cmd_headend.c: the command table, keys and the
 * small parsers; headend_emm.c; headend_scramble.c).
 */
#ifndef KH_CLI_HEADEND_H
#define KH_CLI_HEADEND_H

#include <stddef.h>
#include <stdint.h>

#include "keyhole/err.h"

/* A number (kh_cli_parse_num) up to UINT32_MAX: 0, or -1. */
int kh__cli_u32(const char *s, uint32_t *v);
/* Split "a:b[:c]" (copied into buf, cap bytes) into exactly want fields: 0, or -1. */
int kh__cli_split(const char *s, char *buf, size_t cap, char **f, int want);
/* Report a key file error: "keyhole: FILE line N: message" (or without a line); KH_EXIT_FAIL. */
int kh__cli_keys_fail(const char *path, size_t line, kh_err r);

int kh__cli_headend_emm(int argc, char **argv);
int kh__cli_headend_scramble(int argc, char **argv);
int kh__cli_headend_mux(int argc, char **argv);

#endif
